"""Sequences through a real server, mixed as services see them: clients on several threads start,
step, end and abandon sequences over HTTP while others expire; every answered step equals a local
`runtime.Stream` of the same inputs, and an expired id is refused by name."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import runtime
from tests.conftest import COMMITTED
from toolkit.serving import Settings

MODEL = runtime.load(COMMITTED)
IDLE = 1.0  # seconds before an idle sequence expires in these tests (a CI core may stall a client briefly)


def _step(client, key, value, start=False, end=False) -> float:
    x = httpclient.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.array([[value]], np.float32))
    out = httpclient.InferRequestedOutput("y")
    result = client.infer("sine", [x], outputs=[out], sequence_id=key, sequence_start=start, sequence_end=end)
    return float(result.as_numpy("y")[0, 0])


def test_mixed_starts_ends_and_expiries_from_many_clients(start_server):
    server = start_server(settings=Settings(sequence_idle_timeout_s=IDLE, max_queue_delay_us=100))
    rng = np.random.default_rng(4)
    clients, per_client, steps = 8, 6, 25
    inputs = rng.uniform(-1, 1, (clients, per_client, steps)).astype(np.float32)

    def work(c: int) -> tuple[dict, list]:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        answers, abandoned = {}, []
        for s in range(per_client):
            key = c * 100 + s + 1 if s % 2 else f"c{c}-s{s}"
            ends = s % 3 != 2  # every third sequence is abandoned mid-way, to expire
            count = steps if ends else steps // 2
            answers[key] = [
                _step(client, key, inputs[c, s, t], start=t == 0, end=ends and t == count - 1) for t in range(count)
            ]
            if not ends:
                abandoned.append(key)
        client.close()
        return answers, abandoned

    deadline = time.monotonic() + 120
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(work, range(clients)))
    assert time.monotonic() < deadline

    for c, (answers, _) in enumerate(results):
        for s, (key, got) in enumerate(answers.items()):
            stream = runtime.Stream(MODEL)
            expected = [float(stream.push(v)[0]) for v in inputs[c, s, : len(got)]]
            assert got == expected, key

    abandoned = [key for _, keys in results for key in keys]
    assert len(abandoned) == clients * 2
    waited = time.monotonic() + 10 * IDLE + 5
    while server.metrics.value("rnn_live_sequences", {"model": "sine"}) and time.monotonic() < waited:
        time.sleep(0.1)
    assert server.metrics.value("rnn_live_sequences", {"model": "sine"}) == 0
    assert server.metrics.value("rnn_sequences_expired_total", {"model": "sine"}) == len(abandoned)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    for key in abandoned[:4]:
        shown = f"{key}" if isinstance(key, int) else f"'{key}'"
        with pytest.raises(InferenceServerException, match=f"no live sequence {shown}: it expired after 1 s idle"):
            _step(client, key, 0.1)
    # an ended sequence is refused too, and a new start of the same id begins from the initial state
    ended = next(iter(results[0][0]))
    with pytest.raises(InferenceServerException, match="it ended"):
        _step(client, ended, 0.1)
    assert _step(client, ended, 0.1, start=True) == float(runtime.Stream(MODEL).push(0.1)[0])
    client.close()


def test_a_sequence_in_use_does_not_expire(start_server):
    server = start_server(settings=Settings(sequence_idle_timeout_s=IDLE))
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    stream = runtime.Stream(MODEL)
    finish = time.monotonic() + 4 * IDLE
    values = np.linspace(-1, 1, 1000, dtype=np.float32)
    t = 0
    while time.monotonic() < finish and t < len(values):  # steps every 0.1 s, for 2 s: always in use
        assert _step(client, "busy", values[t], start=t == 0) == float(stream.push(values[t])[0])
        t += 1
        time.sleep(IDLE / 5)
    assert t > 5 and server.metrics.value("rnn_sequences_expired_total", {"model": "sine"}) in (None, 0.0)
    client.close()

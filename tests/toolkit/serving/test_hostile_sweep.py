"""The idle sweep (issue 23): a model's live sequences are kept least recently used first, so the
sweep that runs every period reads only the expired ones and stops at the first fresh one (it
scanned every live sequence, 0.24 s a period at the default 1,048,576)."""

from __future__ import annotations

import time

import numpy as np
import tritonclient.http as httpclient

from toolkit.serving import Settings
from toolkit.serving.sequences import LiveSequences, Sequence


def test_the_sweep_stops_at_the_first_fresh_sequence():
    """100,000 live sequences, the 11 oldest expired. All after the 12th are marked (behind the order's
    back) as older still: a sweep that read past the first fresh one would return them too."""
    live = LiveSequences()
    base = time.monotonic()
    for key in range(100_000):
        entry = Sequence(key, key)
        live[key] = entry
        entry.last_used = base + key
    for key in range(12, 100_000):  # key 11 stays fresh: the first one the sweep meets
        live[key]._used = base - 1e6  # not through the setter: the order stays
    stale = live.idle(now=base + 10.5 + 60.0, timeout=60.0)
    assert [entry.key for entry in stale] == list(range(11))


def test_a_used_sequence_moves_to_the_end_and_expires_last(start_server):
    server = start_server(settings=Settings(sequence_idle_timeout_s=60.0), grpc_port=None)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")

    def step(key, start=False):
        x = httpclient.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.array([[0.5]], np.float32))
        client.infer("sine", [x], sequence_id=key, sequence_start=start)

    for key in (1, 2, 3):
        step(key, start=True)
    served = server.engine.served["sine"]
    step(1)
    assert list(served.sequences) == [2, 3, 1]
    used = {key: entry.last_used for key, entry in served.sequences.items()}
    assert server.engine.expire_idle(now=used[3] + 60.0 + 1e-6) == 2  # 2 and 3, not 1
    assert list(served.sequences) == [1]
    assert server.engine.expire_idle(now=used[1] + 60.0 + 1e-6) == 1

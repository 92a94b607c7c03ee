"""What the review of sampled generation's serving found, each on the real server (free loopback
ports, tritonclient): a caller that leaves while its request waits for a busy sequence starts
nothing and changes nothing; prompts, stop lists and streams bounded before they cost the loop or
the scheduler; the server's default draw (greedy unless a sampling parameter asks for one)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import time

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from toolkit.serving.generation_settings import GenerationSettings, settings_from

from . import test_generation_server as served
from .test_generation import reference
from .test_generation_server import WAIT_S, generator_of, grpc_inputs, post, request_document, wait_until_free

char_folder, model, server = served.char_folder, served.model, served.server  # its fixtures (a server of this module)

LONG = 100_000  # max_tokens of a generation that runs until its client leaves (the server's max_steps)
SETTLE_S = 0.4  # how long a cancelled request has to start something it should not


def sequence_of(server, key):
    return server.engine.served["char"].sequences[key]


def wait_live(server, count: int) -> int:
    deadline = time.monotonic() + WAIT_S
    while generator_of(server).live != count and time.monotonic() < deadline:
        time.sleep(0.005)
    return generator_of(server).live


def started_count(server) -> float:
    return server.engine.metrics.value("rnn_generations_started_total", {"model": "char"}) or 0.0


def stays_free(server) -> bool:
    """Whether no generation starts within SETTLE_S."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        if generator_of(server).live:
            return False
        time.sleep(0.01)
    return True


def start_sequence(server, key) -> None:
    """Sequence ``key`` at version 1 (a short greedy generation)."""
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        result = client.infer(
            "char-generate",
            grpc_inputs([1, 2]),
            parameters={"strategy": "greedy", "max_tokens": 3},
            sequence_id=key,
            sequence_start=True,
        )
    assert result.get_response().parameters["sequence_version"].int64_param == 1
    assert sequence_of(server, key).version == 1


def busy_stream(server, key):
    """A gRPC stream whose endless generation holds sequence ``key``'s lock; (client, answers)."""
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    client.async_stream_infer("char-generate", grpc_inputs([3]), parameters={"max_tokens": LONG}, sequence_id=key)
    result, error = answers.get(timeout=WAIT_S)
    assert error is None and result.as_numpy("tokens").size >= 1 and generator_of(server).live == 1
    return client


def leave(client) -> None:
    client.stop_stream(cancel_requests=True)
    client.close()


def http_waiter(server, key) -> None:
    """An HTTP infer request of sequence ``key`` whose client leaves while it waits for the lock."""
    import json
    import socket

    document = {
        "inputs": [
            {"name": "token", "datatype": "INT64", "shape": [1, 1], "data": [4]},
            {"name": "category", "datatype": "FP32", "shape": [1, 3], "data": [0.4, -1.0, 0.9]},
        ],
        "parameters": {"max_tokens": LONG, "sequence_id": key},
    }
    body = json.dumps(document).encode()
    head = (
        f"POST /v2/models/char-generate/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=WAIT_S) as connection:
        connection.sendall(head + body)
        time.sleep(0.3)  # it waits for the sequence's lock


@pytest.mark.parametrize("how", ["stream", "unary", "http"])
def test_a_request_cancelled_while_it_waits_for_its_sequence_starts_nothing(server, how):
    key = f"busy-{how}"
    start_sequence(server, key)
    before = started_count(server)
    holder = busy_stream(server, key)
    if how == "stream":
        waiter = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        waiter.start_stream(callback=lambda result, error: None)
        waiter.async_stream_infer("char-generate", grpc_inputs([4]), parameters={"max_tokens": LONG}, sequence_id=key)
        time.sleep(0.3)  # it waits for the sequence's lock
        leave(waiter)
    elif how == "http":
        http_waiter(server, key)
    else:
        with triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as waiter:
            with pytest.raises(InferenceServerException, match="(?i)deadline"):
                waiter.infer(
                    "char-generate",
                    grpc_inputs([4]),
                    parameters={"max_tokens": LONG},
                    sequence_id=key,
                    client_timeout=0.3,
                )
    time.sleep(0.1)
    assert generator_of(server).live == 1  # only the holder's
    leave(holder)  # abandoned: the sequence stays at version 1, its lock is free
    assert wait_until_free(server) == 0
    assert stays_free(server) and started_count(server) == before + 1  # the cancelled request never started
    assert sequence_of(server, key).version == 1
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        result = client.infer(
            "char-generate",
            grpc_inputs([5]),
            parameters={"strategy": "greedy", "max_tokens": 2, "sequence_version": 1},
            sequence_id=key,
        )
    assert result.get_response().parameters["sequence_version"].int64_param == 2


def text_prompt(text: str) -> list:
    inputs = grpc_inputs([0])
    prompt = triton_grpc.InferInput("text_input", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([text.encode()], object))
    return [prompt, inputs[1]]


def test_a_long_text_prompt_is_refused_before_it_is_encoded(server):
    huge = "abc " * 750_000  # 3 MB of known tokens: encoded on the loop, it froze the server for seconds
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        started = time.perf_counter()
        with pytest.raises(InferenceServerException, match="too long") as refused:
            client.infer("char-generate", text_prompt(huge), parameters={"max_tokens": 2})
        took = time.perf_counter() - started
        assert "\n" not in str(refused.value) and "100000" in str(refused.value)
        assert took < 1.5, took  # the length alone refuses it (encoding it took ~4 s on the shared VM)
        result = client.infer("char-generate", text_prompt("abc " * 1500), parameters={"strategy": "greedy"})
    assert result.as_numpy("tokens").shape == (1, 100)  # a 6,000-character prompt, encoded in a thread
    assert generator_of(server).live == 0


def test_vocabulary_encode_stops_at_its_limit(model):
    from runtime import Vocabulary
    from runtime.vocabulary import TooManyTokens

    words = Vocabulary(["ab", "a", "b"])
    assert words.encode("a" * 9, limit=9).tolist() == [1] * 9 == words.encode("a" * 9).tolist()
    with pytest.raises(TooManyTokens, match="more than 5 tokens"):
        words.encode("a" * 9, limit=5)  # 9 characters may be 5 tokens: found out by encoding
    with pytest.raises(TooManyTokens, match="11 characters"):
        words.encode("ab" * 5 + "a", limit=5)  # 11 characters are more than 5 tokens of at most 2
    assert words.encode("ab" * 5, limit=5).tolist() == [0] * 5
    assert model.vocabulary.encode("bad c", limit=5).tolist() == model.vocabulary.encode("bad c").tolist()


def test_stop_lists_are_bounded_sets(server, model):
    cases = [
        ({"stop": list(range(11)) + [3]}, "12 token ids, more than the vocabulary's 11"),
        ({"stop": ",".join(["1"] * 1_000_000)}, "1000000 token ids"),  # refused before it is read
        ({"stop": [11]}, "from 0 to 10"),
        ({"stop_text": ["a"] * 17}, "17 strings, the limit is 16"),
        ({"stop_text": "a" * 257}, "1 to 256 characters"),
    ]
    for parameters, words in cases:
        started = time.perf_counter()
        status, _, answer = post(server, "/v2/models/char-generate/generate", request_document([1], **parameters))
        assert status == 400 and words in answer["error"] and "\n" not in answer["error"], answer
        assert time.perf_counter() - started < 2.0
    checked = settings_from({"stop": "4,4,2", "stop_text": ["ab", "ab", "c"]}, 11, 50, True)
    assert checked.stop == frozenset({2, 4}) and checked.stop_text == ("ab", "c")
    full = settings_from({"stop": list(range(11)), "stop_text": ["x" * 256] * 16}, 11, 50, True)
    assert full.stop == frozenset(range(11)) and full.stop_text == ("x" * 256,)
    settings = GenerationSettings("temperature", seed=5, max_tokens=40)
    drawn = reference(model, [2, 3], settings)[0]
    stop = drawn[6]
    document = request_document([2, 3], seed=5, max_tokens=40, stop=[stop, stop, stop])
    status, _, answer = post(server, "/v2/models/char-generate/generate", document)
    assert status == 200 and answer["tokens"] == drawn[: drawn.index(stop) + 1]


@pytest.mark.parametrize(
    "parameters, settings",
    [
        ({}, GenerationSettings("greedy")),
        ({"seed": 8}, GenerationSettings("temperature", seed=8)),
        ({"temperature": 0.6, "seed": 8}, GenerationSettings("temperature", temperature=0.6, seed=8)),
        ({"top_k": 3, "seed": 8}, GenerationSettings("top_k", top_k=3, seed=8)),
        ({"top_p": 0.7, "seed": 8}, GenerationSettings("top_p", top_p=0.7, seed=8)),
        ({"strategy": "greedy", "seed": 8}, GenerationSettings("greedy", seed=8)),
    ],
)
def test_the_server_is_greedy_unless_a_sampling_parameter_asks_for_a_draw(server, model, parameters, settings):
    assert settings_from(parameters, 11, 100, True) == settings
    status, _, answer = post(server, "/v2/models/char-generate/generate", request_document([4, 1], **parameters))
    assert status == 200 and answer["tokens"] == reference(model, [4, 1], settings)[0]
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        result = client.infer("char-generate", grpc_inputs([4, 1]), parameters=parameters or None)
    assert result.as_numpy("tokens")[0].tolist() == answer["tokens"]


def test_one_grpc_stream_runs_at_most_64_generations_at_once(server, caplog):
    from toolkit.serving.grpc_stream import MAX_STREAM_GENERATIONS

    answers: queue.Queue = queue.Queue()
    greedy = {"strategy": "greedy", "max_tokens": LONG}
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    other = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        client.start_stream(callback=lambda result, error: answers.put(error))
        for index in range(MAX_STREAM_GENERATIONS + 1):
            client.async_stream_infer(
                "char-generate", grpc_inputs([index % 11]), request_id=f"g{index}", parameters=greedy
            )
        deadline, refused = time.monotonic() + WAIT_S, []
        while not refused and time.monotonic() < deadline:
            error = answers.get(timeout=WAIT_S)
            if error is not None:
                refused.append(str(error))
        assert len(refused) == 1 and "64 generations" in refused[0] and "\n" not in refused[0], refused
        assert wait_live(server, MAX_STREAM_GENERATIONS) == MAX_STREAM_GENERATIONS  # the 65th never started
        other.start_stream(callback=lambda result, error: None)  # another stream starts its own
        other.async_stream_infer("char-generate", grpc_inputs([1]), parameters=greedy)
        assert wait_live(server, MAX_STREAM_GENERATIONS + 1) == MAX_STREAM_GENERATIONS + 1
    finally:
        leave(client)
        leave(other)
    assert wait_until_free(server) == 0
    import gc

    gc.collect()
    assert not [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]


def test_a_stream_cancelled_while_it_waits_leaves_no_task_pending(char_folder):
    from toolkit.serving.generate_calls import SAMPLED
    from toolkit.serving.grpc_stream import FINAL, stream_answers

    from .test_generation_engine import decode, engine_of, stream_request, until

    engine = engine_of(char_folder)
    generator = SAMPLED.generator(engine, engine.served["char"])

    async def run():
        requests: asyncio.Queue = asyncio.Queue()
        requests.put_nowait(stream_request([1, 2], max_tokens=3))
        finals = []

        async def incoming():
            while True:
                yield await requests.get()

        async def read():
            async for response in stream_answers(engine, incoming(), None, decode):
                finals.append(response.infer_response.parameters[FINAL].bool_param)

        reader = asyncio.ensure_future(read())
        await until(lambda: finals[-1:] == [True])
        for _ in range(3):
            await asyncio.sleep(0.01)  # the stream waits for its next request (and its generations' responses)
        reader.cancel()  # its client goes away
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        for _ in range(3):
            await asyncio.sleep(0.01)
        return finals, [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]

    try:
        finals, pending = asyncio.run(run())
    finally:
        engine.close()
    assert finals[-1] is True and pending == [] and generator.live == 0


def test_an_unready_sampled_model_answers_503_on_the_generate_routes(start_server, char_folder, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(char_folder, broken)
    onnx = sorted(broken.glob("*.onnx"))[0]
    data = bytearray(onnx.read_bytes())
    data[-8:-4] = bytes(b ^ 0xFF for b in data[-8:-4])  # its sha256 no longer matches: it does not load
    onnx.write_bytes(bytes(data))
    unready = start_server([("broken", broken)])
    for name in ("broken", "broken-generate"):
        for route in ("generate", "generate_stream"):
            status, kind, answer = post(unready, f"/v2/models/{name}/{route}", request_document([1]))
            assert status == 503 and "'broken' is not ready" in answer["error"], (name, route, answer)


def test_the_sampled_infer_route_refuses_an_output_named_twice_and_a_text_input_of_numbers(server):
    from .test_text_infer import raw_infer

    category = {"name": "category", "datatype": "FP32", "shape": [1, 3], "data": [0.4, -1.0, 0.9]}
    token = {"name": "token", "datatype": "INT64", "shape": [1, 1], "data": [2]}
    twice = {"inputs": [token, category], "outputs": [{"name": "tokens"}, {"name": "tokens"}]}
    status, answer = raw_infer(server, twice)
    assert status == 400 and "requested twice" in answer["error"], answer
    numbers = {"inputs": [{"name": "text_input", "datatype": "FP32", "shape": [1], "data": [1.5]}, category]}
    status, answer = raw_infer(server, numbers)
    assert status == 400 and "must be BYTES" in answer["error"] and "datatype FP32" in answer["error"], answer
    answers: queue.Queue = queue.Queue()
    outputs = [triton_grpc.InferRequestedOutput("tokens"), triton_grpc.InferRequestedOutput("tokens")]
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        client.async_stream_infer("char-generate", grpc_inputs([2]), outputs=outputs, parameters={"max_tokens": 2})
        result, error = answers.get(timeout=WAIT_S)
        client.stop_stream()
    assert result is None and "requested twice" in str(error)
    assert generator_of(server).live == 0


@pytest.mark.parametrize("strategy", ["temperature", "top_p"])
def test_a_generation_past_one_uniform_chunk_equals_the_runtimes(server, model, strategy):
    from toolkit.serving.generation import UNIFORM_CHUNK

    steps = UNIFORM_CHUNK + 44  # 300: its sampler's uniforms are drawn in two chunks
    settings = GenerationSettings(strategy, temperature=1.1, top_p=0.9 if strategy == "top_p" else None, seed=23)
    settings = GenerationSettings(**{**settings.__dict__, "max_tokens": steps})
    parameters = {"strategy": strategy, "temperature": 1.1, "seed": 23, "max_tokens": steps}
    if strategy == "top_p":
        parameters["top_p"] = 0.9
    expected = reference(model, [3, 7, 1], settings)[0]
    assert len(expected) == steps
    status, _, answer = post(server, "/v2/models/char-generate/generate", request_document([3, 7, 1], **parameters))
    assert status == 200 and answer["tokens"] == expected
    (responses,) = served.stream_generations(server, [(grpc_inputs([3, 7, 1]), parameters, "c")], False).values()
    assert [t for result, _ in responses for t in result.as_numpy("tokens")[0].tolist()] == expected


def test_a_streamed_generation_keeps_none_of_its_tokens(model):
    from toolkit.serving.generation import Generator

    from .test_generation import CATEGORY

    generator = Generator(model)
    settings = GenerationSettings("temperature", seed=4, max_tokens=400, stop_text=("zzz", "hh!"))

    async def run():
        generation = generator.submit(np.array([1, 2]), {"category": CATEGORY[0]}, settings=settings)
        read = [t async for chunk in generation.chunks() for t in chunk]
        whole = generator.submit(np.array([1, 2]), {"category": CATEGORY[0]}, settings=settings)
        return generation, read, await whole.result()

    try:
        generation, read, whole = asyncio.run(run())
    finally:
        generator.close()
    assert read == whole == reference(model, [1, 2], settings)[0] and generation.tokens == []
    assert len(generation.text) <= 2  # the tail a stop text of 3 characters may still end in

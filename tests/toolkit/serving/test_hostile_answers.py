"""Answers larger than the limits (issue 23, point 4): sized from the request's shapes and the
model's signature for the encoding actually used (JSON, binary tensor data, gRPC's raw contents,
a sampled generation's tokens and text) and refused before the model runs; a request just under
the limit runs and answers. The real server on free loopback ports; tritonclient for gRPC."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

import runtime
from tests.conftest import COMMITTED
from tests.toolkit.serving.test_http_api import binary_body, one_line_error, post_json, raw
from toolkit.serving import Limits, Settings
from toolkit.serving.answer_size import (
    ANSWER_HEAD_BYTES,
    JSON_ESCAPE,
    JSON_VALUE_BYTES,
    OUTPUT_HEAD_BYTES,
    STRING_FRAME,
)
from toolkit.serving.generation_settings import GenerationSettings
from toolkit.serving.http_api import HEADER_LENGTH

from .test_generation import CATEGORY, reference
from .test_generation_server import VOCABULARY

GENERATE = "/v2/models/sine-generate/infer"
MODEL = runtime.load(COMMITTED)
STATE_VALUES = MODEL.signature.state_bytes // 8  # values of the new state, one stream


def computed(server) -> float:
    """Model runs the server has made for stateless and multi-step requests (any model)."""
    samples = [sample for family in server.metrics.registry.collect() for sample in family.samples]
    return sum(sample.value for sample in samples if sample.name == "rnn_compute_seconds_count")


def generate_inputs(x: np.ndarray, steps: int) -> list[tuple[dict, bytes]]:
    return [
        ({"name": "x", "datatype": "FP32", "shape": list(x.shape)}, x.tobytes()),
        ({"name": "steps", "datatype": "INT64", "shape": [1]}, np.array([steps], np.int64).tobytes()),
    ]


def test_160_sequences_of_100000_steps_as_json_are_refused_before_the_model_runs(start_server):
    """The issue's 948-byte request under the default limits: its JSON answer (16 M values, ~20
    bytes each) is refused at once, nothing runs; the same answer as binary tensor data (64,000,000
    bytes, under the 64 MiB limit) runs and answers the runtime's values."""
    server = start_server(grpc_port=None)
    x = np.linspace(-1, 1, 160, dtype=np.float32).reshape(160, 1)
    document = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [160, 1], "data": [0.5] * 160},
            {"name": "steps", "datatype": "INT64", "shape": [1], "data": [100_000]},
        ]
    }
    assert len(json.dumps(document)) < 1000
    before = computed(server)
    started = time.perf_counter()
    status, headers, body = post_json(server, GENERATE, document)
    refused_s = time.perf_counter() - started
    message = one_line_error(status, headers, body, 413, "the answer would be up to [0-9]+ bytes")
    assert "the limit is 67108864 (--max-body-bytes)" in message
    assert "binary_data_output" in message and "fewer steps" in message
    assert int(message.split()[6]) > 160 * 100_000 * 20  # JSON: ~20 bytes a float32 and its comma
    assert computed(server) == before  # the model never ran
    other_version = post_json(server, GENERATE.replace("/infer", "/versions/2/infer"), document)
    one_line_error(*other_version, 404, "no version '2'")  # the engine's refusals come first, as before

    body, headers = binary_body(generate_inputs(x, 100_000), parameters={"binary_data_output": True})
    started = time.perf_counter()
    status, answer_headers, answer = raw(server, "POST", GENERATE, body, headers)
    ran_s = time.perf_counter() - started
    assert status == 200, answer[:300]
    assert computed(server) == before + 1
    head = json.loads(answer[: int(answer_headers[HEADER_LENGTH.lower()])])
    shapes = {o["name"]: o["shape"] for o in head["outputs"]}
    assert shapes["y"] == [100_000, 160, 1] and len(answer) < 64 << 20
    ys, state = MODEL.generate(x, 100_000)
    y = np.frombuffer(answer, np.float32, 16_000_000, int(answer_headers[HEADER_LENGTH.lower()]))
    assert np.array_equal(y, ys.ravel())
    assert refused_s < ran_s / 4, (refused_s, ran_s)  # answered without the run's time


@pytest.fixture(scope="module")
def small_server():
    """The sine folder served with --max-body-bytes 64 KiB (answers near it are quick)."""
    from toolkit.serving import Server

    server = Server(
        [("sine", COMMITTED)],
        http_port=0,
        grpc_port=0,
        settings=Settings(limits=Limits(max_body_bytes=64 << 10)),
        say=lambda message: None,
    ).start()
    yield server
    server.stop()


def most_steps(limit: int, batch: int, value_bytes: int, name: str) -> int:
    """The most steps of ``batch`` sequences of ``name`` whose answer (y and the new state, each
    ``value_bytes`` a value) the server's bound lets under ``limit``."""
    heads = ANSWER_HEAD_BYTES + len(name) + sum(OUTPUT_HEAD_BYTES + len(output) for output in MODEL.output_names)
    fixed = heads + sum(len(output) for output in MODEL.state_outputs) + OUTPUT_HEAD_BYTES
    return (limit - fixed - batch * STATE_VALUES * value_bytes) // (batch * value_bytes)


@pytest.mark.parametrize("binary", [False, True])
def test_an_answer_just_under_the_limit_runs_and_one_step_more_is_refused_first(small_server, binary):
    """NAME-predict of 3 sequences at the most steps whose answer fits (JSON or binary): it runs,
    its answer is under the limit and holds the runtime's values; one step more is a 413 and
    nothing runs."""
    limit = 64 << 10
    steps = most_steps(limit, 3, 4 if binary else JSON_VALUE_BYTES["f"], "sine-predict")
    xs = np.sin(np.linspace(0, 9, steps * 3, dtype=np.float32)).reshape(steps, 3, 1)
    expected, _ = MODEL.predict(xs)
    for count, fits in ((steps, True), (steps + 1, False)):
        sent = np.resize(xs, (count, 3, 1))
        inputs = [({"name": "x", "datatype": "FP32", "shape": list(sent.shape)}, sent.tobytes())]
        body, headers = binary_body(inputs, parameters={"binary_data_output": binary})
        before = computed(small_server)
        status, answer_headers, answer = raw(small_server, "POST", "/v2/models/sine-predict/infer", body, headers)
        if not fits:
            message = one_line_error(status, answer_headers, answer, 413, f"the limit is {limit} ")
            assert ("binary_data_output" in message) is not binary
            assert computed(small_server) == before
            continue
        assert status == 200, answer[:300]
        assert computed(small_server) == before + 1
        assert len(answer) <= limit
        if binary:
            y = np.frombuffer(answer, np.float32, steps * 3, int(answer_headers[HEADER_LENGTH.lower()]))
        else:
            y = np.array(next(o for o in json.loads(answer)["outputs"] if o["name"] == "y")["data"], np.float32)
            assert len(answer) > 0.6 * limit  # the bound is not far above what JSON really takes
        assert np.array_equal(y, expected.ravel())


def test_only_the_wanted_outputs_count(small_server):
    """The steps whose y and state pass the limit as JSON fit when only the state is asked for."""
    steps = most_steps(64 << 10, 1, JSON_VALUE_BYTES["f"], "sine-predict") + 10
    x = np.full((steps, 1, 1), 0.25, np.float32)
    document = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    status, headers, body = post_json(small_server, "/v2/models/sine-predict/infer", document)
    one_line_error(status, headers, body, 413, "the answer would be up to")
    state_output = MODEL.state_outputs[0]
    status, _, body = post_json(
        small_server, "/v2/models/sine-predict/infer", {**document, "outputs": [{"name": state_output}]}
    )
    assert status == 200, body[:300]
    _, state = MODEL.predict(x)
    (got,) = json.loads(body)["outputs"]
    assert got["name"] == state_output and np.array_equal(np.array(got["data"], np.float32), state[0].ravel())


def test_grpc_answers_are_sized_as_raw_contents_and_refused_before_the_model_runs(small_server):
    """Over gRPC (raw contents, 4 bytes a value): generate at the most steps that fit runs and
    answers the runtime's values; one step more is RESOURCE_EXHAUSTED naming the limit, nothing runs."""
    limit = 64 << 10
    steps = most_steps(limit, 2, 4, "sine-generate")
    x = np.array([[0.3], [-0.6]], np.float32)
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{small_server.grpc_port}") as client:
        for count in (steps, steps + 1):
            inputs = [triton_grpc.InferInput("x", [2, 1], "FP32"), triton_grpc.InferInput("steps", [1], "INT64")]
            inputs[0].set_data_from_numpy(x)
            inputs[1].set_data_from_numpy(np.array([count], np.int64))
            before = computed(small_server)
            if count > steps:
                with pytest.raises(InferenceServerException) as refused:
                    client.infer("sine-generate", inputs)
                assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
                assert f"the limit is {limit} (--max-body-bytes: gRPC's message)" in refused.value.message()
                assert "binary_data_output" not in refused.value.message()  # gRPC answers are binary already
                assert computed(small_server) == before
            else:
                result = client.infer("sine-generate", inputs)
                assert computed(small_server) == before + 1
                assert np.array_equal(result.as_numpy("y"), MODEL.generate(x, count)[0])


@pytest.fixture(scope="module")
def char_server(tmp_path_factory):
    """The tests' CharGRU with its vocabulary, served with --max-body-bytes 4 KiB."""
    import torch

    from export import export_module
    from tests.user_modules import CHAR_GRU_SIGNATURE, make_char_gru
    from toolkit.serving import Server

    torch.set_num_threads(1)
    folder = export_module(
        make_char_gru(), tmp_path_factory.mktemp("answers") / "char", vocabulary=VOCABULARY, **CHAR_GRU_SIGNATURE
    )
    settings = Settings(limits=Limits(max_body_bytes=4096))
    server = Server([("char", folder)], http_port=0, grpc_port=None, settings=settings, say=lambda m: None).start()
    yield server
    server.stop()


def started_generations(server) -> float:
    return server.metrics.value("rnn_generations_started_total", {"model": "char"}) or 0.0


def test_a_sampled_generation_whose_answer_could_pass_the_limit_never_starts(char_server):
    """max_tokens x (an id as JSON and the longest token's text, escaped): the most tokens that
    fit generate the runtime's tokens (on /generate and the infer route); one more is a 413 before
    any generation starts, unless the infer route's answer is binary (9 bytes a token)."""
    longest = max(len(token.encode()) for token in VOCABULARY)
    per_token = JSON_VALUE_BYTES["i"] + JSON_ESCAPE * longest
    heads = ANSWER_HEAD_BYTES + len("char-generate") + 2 * OUTPUT_HEAD_BYTES + len("tokens") + len("text_output")
    most = (4096 - heads - STRING_FRAME) // per_token
    model = runtime.load(char_server.engine.served["char"].folder)
    expected = reference(model, [1, 2], GenerationSettings("temperature", temperature=1.0, seed=3, max_tokens=most))[0]
    for max_tokens in (most, most + 1):
        parameters = {"strategy": "temperature", "temperature": 1.0, "seed": 3, "max_tokens": max_tokens}
        generate = {"token": [1, 2], "category": CATEGORY[0].tolist(), "parameters": parameters}
        infer = {
            "inputs": [
                {"name": "token", "datatype": "INT64", "shape": [1, 2], "data": [1, 2]},
                {"name": "category", "datatype": "FP32", "shape": [1, 3], "data": CATEGORY[0].tolist()},
            ],
            "parameters": parameters,
        }
        for path, document in (("generate", generate), ("infer", infer)):
            before = started_generations(char_server)
            status, headers, body = post_json(char_server, f"/v2/models/char-generate/{path}", document)
            if max_tokens > most:
                message = one_line_error(
                    status, headers, body, 413, "the limit is 4096 .*fewer tokens \\(max_tokens\\)"
                )
                assert ("binary_data_output" in message) is (path == "infer")
                assert started_generations(char_server) == before
                continue
            assert status == 200 and len(body) <= 4096, body[:300]
            answer = json.loads(body)
            if path == "infer":
                answer = {o["name"]: o["data"] for o in answer["outputs"]}
            assert answer["tokens"] == expected and started_generations(char_server) == before + 1
    binary = {**infer, "parameters": {**infer["parameters"], "binary_data_output": True}}
    status, _, body = post_json(char_server, "/v2/models/char-generate/infer", binary)
    assert status == 200, body[:300]  # most + 1 tokens as binary: 9 bytes each, well under the limit

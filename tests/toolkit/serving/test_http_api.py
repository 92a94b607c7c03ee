"""The HTTP front against a real server on loopback, talked to with tritonclient.http and raw
http.client: health and metadata, the stateless forms bit-identical to the runtime (binary and
JSON tensors), server-held sequences, every caller's mistake answered with its status and one
line of JSON (a live sequence untouched by each), the body limit, the token, metrics and a model
that failed to load."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import logging
import re
import shutil
import threading
import zlib

import numpy as np
import pytest

from tests.conftest import COMMITTED

triton = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (dev extra) is not installed")

from tritonclient.utils import InferenceServerException  # noqa: E402

import runtime  # noqa: E402
from toolkit.serving import Limits, Settings, http_api  # noqa: E402
from toolkit.serving.http_api import HEADER_LENGTH, encode_infer  # noqa: E402
from toolkit.serving.protocol import EXTENSIONS, SERVER_NAME, InferResponse  # noqa: E402

WAIT_S = 60  # the longest any test waits for one answer
TOKEN = "s3cret"
MODEL = runtime.load(COMMITTED)


def client(server, **options) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(
        f"127.0.0.1:{server.http_port}", connection_timeout=WAIT_S, network_timeout=WAIT_S, **options
    )


def tensor(name: str, array: np.ndarray, binary: bool = True, datatype: str | None = None) -> triton.InferInput:
    datatype = datatype or {np.float32: "FP32", np.float64: "FP64", np.int64: "INT64"}[array.dtype.type]
    infer_input = triton.InferInput(name, list(array.shape), datatype)
    infer_input.set_data_from_numpy(array, binary_data=binary)
    return infer_input


def raw(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, body) of one plain HTTP request."""
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=WAIT_S)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def post_json(server, path: str, document, headers: dict | None = None):
    return raw(
        server, "POST", path, json.dumps(document).encode(), {"Content-Type": "application/json", **(headers or {})}
    )


def one_line_error(status: int, headers: dict, body: bytes, expected_status: int, match: str) -> str:
    """The message of a JSON error answer, checked: its status, one line, no traceback."""
    assert status == expected_status, (status, body)
    assert headers.get("content-type", "").startswith("application/json"), headers
    document = json.loads(body)
    assert list(document) == ["error"], document
    message = document["error"]
    assert isinstance(message, str) and message and "\n" not in message and "Traceback" not in message
    assert re.search(match, message), message
    return message


def x_tensor(value: float = 0.5) -> dict:
    return {"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [value]}


def binary_body(inputs: list[tuple[dict, bytes]], **document) -> tuple[bytes, dict]:
    """A request with binary inputs: (body, headers)."""
    specs = []
    for spec, data in inputs:
        specs.append({**spec, "parameters": {**spec.get("parameters", {}), "binary_data_size": len(data)}})
    head = json.dumps({**document, "inputs": specs}).encode()
    return head + b"".join(data for _, data in inputs), {HEADER_LENGTH: str(len(head))}


# ---- health, metadata, index ---------------------------------------------------------------


def test_health_server_metadata_and_index(sine_server):
    with client(sine_server) as c:
        assert c.is_server_live() and c.is_server_ready()
        metadata = c.get_server_metadata()
        assert metadata == {"name": SERVER_NAME, "version": runtime.__version__, "extensions": list(EXTENSIONS)}
        index = c.get_model_repository_index()
    assert index == [{"name": n, "version": "1", "state": "READY"} for n in ("sine", "sine-predict", "sine-generate")]
    status, _, body = raw(sine_server, "POST", "/v2/repository/index", b'{"ready": true}')
    assert status == 200 and json.loads(body) == index
    for path in ("/v2/health/live", "/v2/health/ready"):
        status, _, body = raw(sine_server, "GET", path)
        assert status == 200 and body == b""


def test_model_metadata_and_readiness_of_the_three_forms(sine_server):
    with client(sine_server) as c:
        for name in ("sine", "sine-predict", "sine-generate"):
            assert c.is_model_ready(name) and c.is_model_ready(name, "1")
            metadata = c.get_model_metadata(name)
            assert metadata == MODEL_METADATA[name] == c.get_model_metadata(name, "1")
        assert not c.is_model_ready("nope") and not c.is_model_ready("sine", "2")
        with pytest.raises(InferenceServerException, match="unknown model 'nope'") as excinfo:
            c.get_model_metadata("nope")
        assert excinfo.value.status() == "404"
    one_line_error(*raw(sine_server, "GET", "/v2/models/nope/ready"), 404, "unknown model 'nope'")
    one_line_error(*raw(sine_server, "GET", "/v2/models/sine/versions/2"), 404, "no version '2'")


MODEL_METADATA = {
    name: {
        "name": name,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": inputs + [{"name": "h", "datatype": "FP32", "shape": [-1, 6]}],
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": y_shape},
            {"name": "h_out", "datatype": "FP32", "shape": [-1, 6]},
        ],
    }
    for name, inputs, y_shape in (
        ("sine", [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}], [-1, 1]),
        ("sine-predict", [{"name": "x", "datatype": "FP32", "shape": [-1, -1, 1]}], [-1, -1, 1]),
        (
            "sine-generate",
            [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}, {"name": "steps", "datatype": "INT64", "shape": [1]}],
            [-1, -1, 1],
        ),
    )
}


# ---- stateless forms -------------------------------------------------------------------------

MODES = {  # (inputs binary, outputs: None = tritonclient's default (all binary), else binary_data)
    "binary": (True, None),
    "json-outputs": (True, False),
    "json-inputs": (False, True),
    "json": (False, False),
}


def infer(c, model: str, arrays: dict[str, np.ndarray], mode: str = "binary", **options):
    inputs_binary, outputs_binary = MODES[mode]
    inputs = [tensor(name, array, inputs_binary) for name, array in arrays.items()]
    outputs = None
    if outputs_binary is not None:
        outputs = [triton.InferRequestedOutput(name, binary_data=outputs_binary) for name in ("y", "h_out")]
    return c.infer(model, inputs, outputs=outputs, **options)


def assert_outputs(result, y: np.ndarray, state: tuple[np.ndarray, ...], binary: bool | None = None) -> None:
    got_y, got_h = result.as_numpy("y"), result.as_numpy("h_out")
    assert got_y.dtype == np.float32 and got_y.shape == y.shape and got_h.shape == state[0].shape
    np.testing.assert_array_equal(got_y, y, strict=True)  # bit for bit
    np.testing.assert_array_equal(got_h, state[0], strict=True)
    if binary is not None:
        for output in result.get_response()["outputs"]:
            assert ("parameters" in output) is binary and ("data" in output) is not binary


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_a_stateless_step_is_bit_identical_to_the_runtime(sine_server, batch, mode):
    rng = np.random.default_rng(batch)
    x = rng.uniform(-1, 1, (batch, 1)).astype(np.float32)
    h = rng.uniform(-1, 1, (batch, 6)).astype(np.float32)
    with client(sine_server) as c:
        result = infer(c, "sine", {"x": x, "h": h}, mode)
        assert_outputs(result, *MODEL.step(x, (h,)), binary=MODES[mode][1] is not False)
        assert_outputs(infer(c, "sine", {"x": x}, mode), *MODEL.step(x))  # no state: the initial one


def test_nested_and_flat_json_data_are_the_same_tensor(sine_server):
    x = np.array([[0.5], [-0.25]], np.float32)
    for data in ([0.5, -0.25], [[0.5], [-0.25]]):
        document = {"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": data}], "id": "nested"}
        status, headers, body = post_json(sine_server, "/v2/models/sine/infer", document)
        assert status == 200 and headers["content-type"] == "application/json"
        answer = json.loads(body)
        assert answer["model_name"] == "sine" and answer["model_version"] == "1" and answer["id"] == "nested"
        y = {o["name"]: o for o in answer["outputs"]}["y"]
        assert y["datatype"] == "FP32" and y["shape"] == [2, 1]
        np.testing.assert_array_equal(np.array(y["data"], np.float32).reshape(2, 1), MODEL.step(x)[0])


def test_requested_outputs_only_and_a_versioned_route(sine_server):
    x = np.array([[0.125]], np.float32)
    with client(sine_server) as c:
        result = c.infer("sine", [tensor("x", x)], model_version="1", outputs=[triton.InferRequestedOutput("y")])
        assert [o["name"] for o in result.get_response()["outputs"]] == ["y"] and result.as_numpy("h_out") is None
        np.testing.assert_array_equal(result.as_numpy("y"), MODEL.step(x)[0])
        assert c.infer("sine", [tensor("x", x)], request_id="abc").get_response()["id"] == "abc"
    # binary_data_output (tritonclient reserves it: it sends it when no output is named) and a per-output choice
    document = {"inputs": [x_tensor(0.125)], "parameters": {"binary_data_output": True}}
    document["outputs"] = [{"name": "y", "parameters": {"binary_data": False}}, {"name": "h_out"}]
    status, headers, body = post_json(sine_server, INFER, document)
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    result = triton.InferResult.from_response_body(body, header_length=int(headers[HEADER_LENGTH.lower()]))
    assert ["data" in o for o in result.get_response()["outputs"]] == [True, False]
    assert_outputs(result, *MODEL.step(x))


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_a_compressed_request_body_is_inflated(sine_server, algorithm):
    x = np.array([[0.75], [0.5]], np.float32)
    with client(sine_server) as c:
        result = c.infer("sine", [tensor("x", x)], request_compression_algorithm=algorithm)
    assert_outputs(result, *MODEL.step(x))


@pytest.mark.parametrize("mode", ["binary", "json"])
def test_predict_and_generate_equal_the_runtime(sine_server, mode):
    rng = np.random.default_rng(7)
    xs = rng.uniform(-1, 1, (50, 3, 1)).astype(np.float32)
    h = rng.uniform(-1, 1, (3, 6)).astype(np.float32)
    x0 = np.array([[0.5], [-0.5]], np.float32)
    with client(sine_server) as c:
        assert_outputs(infer(c, "sine-predict", {"x": xs}, mode), *MODEL.predict(xs))
        assert_outputs(infer(c, "sine-predict", {"x": xs, "h": h}, mode), *MODEL.predict(xs, (h,)))
        steps = np.array([200], np.int64)
        result = infer(c, "sine-generate", {"x": x0, "steps": steps}, mode)
        assert result.as_numpy("y").shape == (200, 2, 1)
        assert_outputs(result, *MODEL.generate(x0, 200))


# ---- sequences -------------------------------------------------------------------------------


def step_sequence(c, key, x: float, **flags):
    return c.infer("sine", [tensor("x", np.array([[x]], np.float32))], sequence_id=key, **flags)


@pytest.mark.parametrize("key", [101, "http-sequence-a"], ids=["int-id", "str-id"])
def test_a_sequence_is_the_runtime_stream(sine_server, key):
    stream = runtime.Stream(MODEL)
    xs = np.sin(np.linspace(0, 3, 20)).astype(np.float32)
    with client(sine_server) as c:
        for t, x in enumerate(xs):
            result = step_sequence(c, key, float(x), sequence_start=t == 0, sequence_end=t == len(xs) - 1)
            y = stream.push(float(x))
            np.testing.assert_array_equal(result.as_numpy("y")[0], y, strict=True)
            np.testing.assert_array_equal(result.as_numpy("h_out")[0], stream.state[0], strict=True)
        with pytest.raises(InferenceServerException) as excinfo:  # ended: a later call is refused
            step_sequence(c, key, 0.5)
    shown = str(key) if isinstance(key, int) else repr(key)
    assert excinfo.value.status() == "400" and shown in excinfo.value.message() and "ended" in excinfo.value.message()


def test_an_unknown_sequence_is_named(sine_server):
    with client(sine_server) as c:
        for key, shown in ((987654, "987654"), ("never-started", "'never-started'")):
            with pytest.raises(InferenceServerException) as excinfo:
                step_sequence(c, key, 0.5)
            assert excinfo.value.status() == "400"
            assert f"no live sequence {shown}" in excinfo.value.message() and "never started" in excinfo.value.message()


def test_a_sequence_goes_on_from_predict_to_step(sine_server):
    xs = np.linspace(-1, 1, 5, dtype=np.float32).reshape(5, 1, 1)
    x = np.array([[0.3]], np.float32)
    with client(sine_server) as c:
        first = c.infer("sine-predict", [tensor("x", xs)], sequence_id="p2s", sequence_start=True)
        second = step_sequence(c, "p2s", 0.3, sequence_end=True)
    ys, state = MODEL.predict(xs)
    assert_outputs(first, ys, state)
    assert_outputs(second, *MODEL.step(x, state))


# ---- the caller's mistakes -------------------------------------------------------------------

INFER = "/v2/models/sine/infer"
NAN = np.array([[np.nan]], np.float32).tobytes()
GOOD_HEAD = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}
)


def case(body, headers=None, path=INFER, method="POST"):
    """A bad request: ``body`` is a document (sent as JSON), bytes, or a function of the live
    sequence's id returning either (to aim the mistake at that sequence)."""
    return body, headers or {}, path, method


def seq(key, **parameters):
    return {"sequence_id": key, **parameters}


BAD_REQUESTS = {
    "malformed JSON": (case(b'{"inputs": [', {"Content-Type": "application/json"}), 400, "malformed"),
    "not a JSON object": (case(b"[1, 2]"), 400, "must be a JSON object"),
    "not UTF-8": (case(b'{"id": "\xff"}'), 400, "malformed"),
    "header length too large": (case(GOOD_HEAD.encode() + b"\0" * 4, {HEADER_LENGTH: "99999"}), 400, "99999 but"),
    "header length too small": (
        case(GOOD_HEAD.encode() + b"\0" * 4, {HEADER_LENGTH: str(len(GOOD_HEAD) - 3)}),
        400,
        "malformed",
    ),
    "header length not a number": (case(GOOD_HEAD.encode() + b"\0" * 4, {HEADER_LENGTH: "12ab"}), 400, "byte count"),
    "header length negative": (case(GOOD_HEAD.encode() + b"\0" * 4, {HEADER_LENGTH: "-5"}), 400, "byte count"),
    "binary part too short": (
        case(GOOD_HEAD.encode() + b"\0" * 3, {HEADER_LENGTH: str(len(GOOD_HEAD))}),
        400,
        "needs bytes 0 to 4",
    ),
    "binary part too long": (
        case(GOOD_HEAD.encode() + b"\0" * 8, {HEADER_LENGTH: str(len(GOOD_HEAD))}),
        400,
        "add up to 4",
    ),
    "binary size without header": (case(GOOD_HEAD.encode()), 400, "no Inference-Header-Content-Length"),
    "binary size not the shape's": (
        case(*binary_body([({"name": "x", "shape": [2, 1], "datatype": "FP32"}, b"\0" * 4)])),
        400,
        "is 8 bytes",
    ),
    "unknown model": (case({"inputs": [x_tensor()]}, path="/v2/models/nope/infer"), 404, "unknown model 'nope'"),
    "unknown version": (case({"inputs": [x_tensor()]}, path="/v2/models/sine/versions/2/infer"), 404, "no version"),
    "unknown route": (case(b"", path="/v2/nothing/here", method="GET"), 404, "no route"),
    "wrong method": (case(b"", method="GET"), 405, "Method Not Allowed"),
    "unknown input": (case(lambda k: {"inputs": [x_tensor(), {**x_tensor(), "name": "z"}]}), 400, "no input 'z'"),
    "unknown output": (
        case(lambda k: {"inputs": [x_tensor()], "outputs": [{"name": "q"}], "parameters": seq(k)}),
        400,
        "no output 'q'",
    ),
    "input twice": (case(lambda k: {"inputs": [x_tensor(), x_tensor()], "parameters": seq(k)}), 400, "given twice"),
    "no inputs": (case(lambda k: {"parameters": seq(k)}), 400, "'inputs' must be a JSON array"),
    "missing x": (case(lambda k: {"inputs": [], "parameters": seq(k)}), 400, "needs input 'x'"),
    "FP64 for x": (
        case(lambda k: {"inputs": [{**x_tensor(), "datatype": "FP64"}], "parameters": seq(k)}),
        400,
        "must be FP32, got FP64",
    ),
    "FP64 binary for x": (
        case(
            lambda k: binary_body([({"name": "x", "shape": [1, 1], "datatype": "FP64"}, b"\0" * 8)], parameters=seq(k))
        ),
        400,
        "must be FP32, got FP64",
    ),
    "BYTES": (  # strings are decoded (text_input of a token model), and refused for an FP32 input
        case(lambda k: {"inputs": [{**x_tensor(), "datatype": "BYTES", "data": ["a"]}]}),
        400,
        "must be FP32, got BYTES",
    ),
    "unknown datatype": (case(lambda k: {"inputs": [{**x_tensor(), "datatype": "FP8"}]}), 400, "unknown datatype"),
    "wrong shape": (
        case(lambda k: {"inputs": [{**x_tensor(), "shape": [1, 2], "data": [1, 2]}], "parameters": seq(k)}),
        400,
        r"must have shape \[-1, 1\]",
    ),
    "bad shape": (case(lambda k: {"inputs": [{**x_tensor(), "shape": [1, -1]}]}), 400, "sizes >= 0"),
    # shapes numpy cannot hold: refused before numpy sees them (they were 500s)
    "33 dimensions": (
        case(lambda k: {"inputs": [{**x_tensor(), "shape": [1] * 33}]}),
        400,
        "33 dimensions in its shape, at most 32",
    ),
    "empty with a huge dimension": (
        case(lambda k: {"inputs": [{**x_tensor(), "shape": [0, 2**70], "data": []}]}),
        400,
        "out of range",
    ),
    "empty with a huge dimension, binary": (
        case(lambda k: binary_body([({"name": "x", "shape": [0, 2**70], "datatype": "FP32"}, b"")])),
        400,
        "out of range",
    ),
    "empty with dimensions under the limit whose product is not": (
        case(lambda k: {"inputs": [{**x_tensor(), "shape": [0] + [1 << 22] * 31, "data": []}]}),
        400,
        "out of range",
    ),
    # over the element limit: refused from the shape, before the data is converted (was 400 "has 1 values")
    "too many elements": (
        case(lambda k: {"inputs": [{**x_tensor(), "shape": [(1 << 22) + 1, 1]}], "parameters": seq(k)}),
        413,
        "has 4194305 elements, the limit is 4194304",
    ),
    "too many elements, binary": (
        case(lambda k: binary_body([({"name": "x", "shape": [(1 << 22) + 1, 1], "datatype": "FP32"}, b"\0" * 4)])),
        413,
        "has 4194305 elements, the limit is 4194304",
    ),
    "batch of 2 in a sequence": (
        case(lambda k: {"inputs": [{**x_tensor(), "shape": [2, 1], "data": [1, 2]}], "parameters": seq(k)}),
        400,
        "batch must be 1",
    ),
    "NaN binary": (
        case(lambda k: binary_body([({"name": "x", "shape": [1, 1], "datatype": "FP32"}, NAN)], parameters=seq(k))),
        400,
        "(?i)nan|finite",
    ),
    "NaN literal": (
        case(lambda k: json.dumps({"inputs": [x_tensor(float("nan"))], "parameters": seq(k)}).encode()),
        400,
        "NaN",
    ),
    "overflowing number": (
        case(lambda k: b'{"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1e400]}]}'),
        400,
        "not a finite number",
    ),
    "out of FP32 range": (case(lambda k: {"inputs": [x_tensor(1e39)], "parameters": seq(k)}), 400, "range of FP32"),
    "null": (case(lambda k: {"inputs": [{**x_tensor(), "data": [None]}], "parameters": seq(k)}), 400, "got null"),
    "string value": (
        case(lambda k: {"inputs": [{**x_tensor(), "data": ["0.5"]}], "parameters": seq(k)}),
        400,
        "got str",
    ),
    "boolean value": (
        case(lambda k: {"inputs": [{**x_tensor(), "data": [True]}], "parameters": seq(k)}),
        400,
        "got bool",
    ),
    "ragged data": (
        case(lambda k: {"inputs": [{**x_tensor(), "shape": [2, 1], "data": [[1], [2, 3]]}], "parameters": seq(k)}),
        400,
        "ragged",
    ),
    "too many values": (
        case(lambda k: {"inputs": [{**x_tensor(), "data": [1, 2]}], "parameters": seq(k)}),
        400,
        "has 2 values",
    ),
    "too few values": (
        case(lambda k: {"inputs": [{**x_tensor(), "data": []}], "parameters": seq(k)}),
        400,
        "has 0 values",
    ),
    "no data": (case(lambda k: {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32"}]}), 400, "no 'data'"),
    "float steps": (
        case(
            {
                "inputs": [x_tensor(), {"name": "steps", "shape": [1], "datatype": "INT64", "data": [2.5]}],
            },
            path="/v2/models/sine-generate/infer",
        ),
        400,
        "INT64: its data must be integers, got float",
    ),
    "INT64 out of range": (
        case(
            {"inputs": [x_tensor(), {"name": "steps", "shape": [1], "datatype": "INT64", "data": [2**70]}]},
            path="/v2/models/sine-generate/infer",
        ),
        400,
        "range of INT64",
    ),
    "sequence_id float": (case(lambda k: {"inputs": [x_tensor()], "parameters": seq(1.5)}), 400, "sequence_id"),
    "sequence_id bool": (case(lambda k: {"inputs": [x_tensor()], "parameters": seq(True)}), 400, "sequence_id"),
    "sequence_id list": (case(lambda k: {"inputs": [x_tensor()], "parameters": seq([k])}), 400, "sequence_id"),
    "sequence_start not a bool": (
        case(lambda k: {"inputs": [x_tensor()], "parameters": seq(k, sequence_start="yes")}),
        400,
        "sequence_start",
    ),
    "state with a sequence": (
        case(
            lambda k: {
                "inputs": [x_tensor(), {"name": "h", "shape": [1, 6], "datatype": "FP32", "data": [0] * 6}],
                "parameters": seq(k),
            }
        ),
        400,
        "held by the server",
    ),
    "parameters not an object": (case(lambda k: {"inputs": [x_tensor()], "parameters": [k]}), 400, "'parameters' must"),
    "id not a string": (case(lambda k: {"inputs": [x_tensor()], "id": 5}), 400, "'id' must be a string"),
    "binary_data not a bool": (
        case(lambda k: {"inputs": [x_tensor()], "outputs": [{"name": "y", "parameters": {"binary_data": 1}}]}),
        400,
        "'binary_data' must be a boolean",
    ),
    "classification": (
        case(lambda k: {"inputs": [x_tensor()], "outputs": [{"name": "y", "parameters": {"classification": 2}}]}),
        400,
        "classification",
    ),
    "shared memory": (
        case(lambda k: {"inputs": [{**x_tensor(), "parameters": {"shared_memory_region": "r"}}]}),
        400,
        "shared memory",
    ),
    "bad gzip": (case(b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"}), 400, "not valid gzip"),
    "truncated gzip": (
        case(gzip.compress(json.dumps({"inputs": [x_tensor()]}).encode())[:-12], {"Content-Encoding": "gzip"}),
        400,
        "truncated",
    ),
    "unknown encoding": (case(b"{}", {"Content-Encoding": "br"}), 415, "not supported"),
}


@pytest.fixture(scope="module")
def live_sequence(sine_server):
    """A sequence kept live across the bad-request tests, and the runtime stream it must equal."""
    key = "survives-bad-requests"
    stream = runtime.Stream(MODEL)
    with client(sine_server) as c:
        step_sequence(c, key, 0.1, sequence_start=True)
    stream.push(0.1)
    return key, stream


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_a_bad_request_answers_one_line_of_json_and_leaves_a_sequence_untouched(sine_server, live_sequence, name):
    (body, headers, path, method), status, match = BAD_REQUESTS[name]
    key, stream = live_sequence
    body = body(key) if callable(body) else body
    if isinstance(body, tuple):
        body, extra = body
        headers = {**headers, **extra}
    if isinstance(body, dict):
        body, headers = json.dumps(body).encode(), {"Content-Type": "application/json", **headers}
    one_line_error(*raw(sine_server, method, path, body, headers), status, match)
    x = float(len(name)) / 100  # a different input per case
    with client(sine_server) as c:
        result = step_sequence(c, key, x)
    np.testing.assert_array_equal(result.as_numpy("y")[0], stream.push(x), strict=True)
    np.testing.assert_array_equal(result.as_numpy("h_out")[0], stream.state[0], strict=True)


def test_a_body_over_the_limit_is_refused_before_it_is_read(start_server):
    server = start_server(settings=Settings(limits=Limits(max_body_bytes=1000)))
    with client(server) as c:
        step_sequence(c, 5, 0.2, sequence_start=True)
    stream = runtime.Stream(MODEL)
    stream.push(0.2)
    small = {"inputs": [{**x_tensor(), "shape": [4, 1], "data": [0.5] * 4}], "parameters": {"sequence_id": 5}}
    big = {**small, "padding": "x" * 5000}
    one_line_error(*post_json(server, INFER, big), 413, "5[0-9]{3} bytes, the limit is 1000")
    chunked = raw(server, "POST", INFER, iter([json.dumps(big).encode()[i : i + 500] for i in range(0, 5200, 500)]))
    one_line_error(*chunked, 413, "more than 1000 bytes")
    bomb = gzip.compress(json.dumps(big).encode())
    assert len(bomb) < 1000
    one_line_error(*raw(server, "POST", INFER, bomb, {"Content-Encoding": "gzip"}), 413, "inflates to more than 1000")
    deflated = zlib.compress(json.dumps({"inputs": [x_tensor(0.3)], "parameters": {"sequence_id": 5}}).encode())
    status, _, body = raw(server, "POST", INFER, deflated, {"Content-Encoding": "deflate"})
    assert status == 200
    y = {o["name"]: o["data"] for o in json.loads(body)["outputs"]}["y"]
    assert np.float32(y[0]) == stream.push(0.3)


def test_an_unexpected_failure_is_a_500_of_one_line_and_logged(start_server, caplog):
    server = start_server()

    async def broken(request, protocol, version=""):
        raise RuntimeError("boom\n  with a second line")

    server.engine.infer = broken
    with caplog.at_level(logging.ERROR, logger="rnn.serve"):
        message = one_line_error(*post_json(server, INFER, {"inputs": [x_tensor()]}), 500, "RuntimeError")
    assert "boom" not in message
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)


def test_the_element_limit_comes_before_the_data_is_converted(start_server, monkeypatch):
    server = start_server(settings=Settings(limits=Limits(max_elements=100)))
    converted = []
    monkeypatch.setattr(http_api, "_json_tensor", lambda *args: converted.append(args) or 1 / 0)
    monkeypatch.setattr(http_api.np, "frombuffer", lambda *args: converted.append(args) or 1 / 0)
    big = {"inputs": [{**x_tensor(), "shape": [101, 1], "data": [0.5] * 101}]}
    one_line_error(*post_json(server, INFER, big), 413, "has 101 elements, the limit is 100")
    body, headers = binary_body([({"name": "x", "shape": [101, 1], "datatype": "FP32"}, b"\0" * 404)])
    one_line_error(*raw(server, "POST", INFER, body, headers), 413, "has 101 elements, the limit is 100")
    assert converted == []


def test_a_large_body_is_decoded_and_a_large_response_encoded_off_the_event_loop(sine_server, monkeypatch):
    """A big JSON request must not stall the event loop (every other request) while it is decoded
    or its JSON answer encoded; a small one stays on the loop (no thread hop on the hot path)."""
    on_loop: dict[str, list[bool]] = {"decode": [], "encode": []}

    def running_loop() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def spy(what, function):
        def spied(*args):
            on_loop[what].append(running_loop())
            assert threading.current_thread() is not threading.main_thread()  # the server's own threads
            return function(*args)

        return spied

    monkeypatch.setattr(http_api, "decode_infer", spy("decode", http_api.decode_infer))
    monkeypatch.setattr(http_api, "encode_infer", spy("encode", http_api.encode_infer))
    # y and h_out: 7 elements a row, past the encode threshold; ~20 bytes a value, past the decode one
    batch = max(http_api.OFFLOAD_JSON_ELEMENTS, http_api.OFFLOAD_BODY_BYTES // 16)
    x = np.random.default_rng(3).standard_normal((batch, 1)).astype(np.float32)
    big = json.dumps({"inputs": [{"name": "x", "shape": [batch, 1], "datatype": "FP32", "data": x.ravel().tolist()}]})
    assert len(big) > http_api.OFFLOAD_BODY_BYTES
    status, _, body = raw(sine_server, "POST", INFER, big.encode(), {"Content-Type": "application/json"})
    assert status == 200, body
    outputs = {o["name"]: o["data"] for o in json.loads(body)["outputs"]}
    y, (h,) = MODEL.step(x)
    np.testing.assert_array_equal(np.float32(outputs["y"]).reshape(y.shape), y)
    assert on_loop == {"decode": [False], "encode": [False]}
    status, _, body = post_json(sine_server, INFER, {"inputs": [x_tensor()]})
    assert status == 200, body
    assert on_loop == {"decode": [False, True], "encode": [False, True]}


def test_a_large_json_response_is_encoded_in_chunks_to_the_same_bytes(monkeypatch):
    rng = np.random.default_rng(5)
    y = rng.standard_normal((37, 3)).astype(np.float32)
    y[[0, 5, 36], [0, 2, 2]] = [np.nan, np.inf, -np.inf]  # JSON null, in different chunks
    outputs = [("y", y), ("h_out", rng.standard_normal((37, 6))), ("k", np.arange(10, dtype=np.int64))]
    response = InferResponse("m", "r1", outputs, {"sequence_id": 3})
    chunks: list[int] = []
    json_values = http_api._json_values

    def counted(array):
        chunks.append(array.size)
        return json_values(array)

    sleeps: list[float] = []
    for binary in ({}, {"h_out": True}):
        whole = encode_infer(response, False, binary)
        chunks.clear()
        sleeps.clear()
        with monkeypatch.context() as patched:
            patched.setattr(http_api, "OFFLOAD_JSON_ELEMENTS", 16)
            patched.setattr(http_api, "JSON_CHUNK_ELEMENTS", 7)
            patched.setattr(http_api, "_json_values", counted)
            patched.setattr(http_api, "_hand_over", lambda: sleeps.append(0))
            assert encode_infer(response, False, binary) == whole
        assert chunks and max(chunks) == 7
        # between two chunks of an output the encoding thread hands the GIL to the event loop
        # (without it the loop waits a whole switch interval per wake-up: liveness p99 128 ms
        # under answers of 260,000 JSON values, docs/hostile-bench.txt)
        json_sizes = [a.size for name, a in outputs if not binary.get(name)]
        assert sleeps == [0] * sum(-(-size // 7) - 1 for size in json_sizes)
    assert json.loads(whole[0][: whole[1]])["outputs"][0]["data"][:2] == [None, float(y[0, 1])]


@pytest.mark.parametrize("values", [[0.5 + i for i in range(5000)], list(range(5000))], ids=["floats", "integers"])
def test_the_yielding_decoder_hands_the_gil_over_every_1024_numbers(monkeypatch, values):
    handed: list[int] = []
    monkeypatch.setattr(http_api, "_hand_over", lambda: handed.append(0))
    assert http_api._YIELDING_DECODER.decode(json.dumps({"data": values})) == {"data": values}
    # next(_NUMBERS_READ) is shared by every thread: 5,000 numbers pass 1,024's multiples 4 or 5 times
    assert len(handed) in (4, 5)


def test_a_request_id_longer_than_256_characters_is_refused_before_it_is_echoed(sine_server):
    x = x_tensor()
    status, _, body = post_json(sine_server, INFER, {"id": "\U0001f600" * 257, "inputs": [x]})
    assert status == 400 and b"longer than 256 characters" in body, body
    status, _, body = post_json(sine_server, INFER, {"id": "\U0001f600" * 256, "inputs": [x]})
    assert status == 200 and json.loads(body)["id"] == "\U0001f600" * 256


def test_a_non_finite_output_is_json_null():
    response = InferResponse("m", "", [("y", np.array([[1.5, np.nan], [np.inf, -2.0]], np.float32))])
    body, json_length = encode_infer(response, False, {})
    assert json_length is None
    assert json.loads(body)["outputs"][0]["data"] == [1.5, None, None, -2.0]


# ---- token, metrics, a model that failed to load -----------------------------------------------

TOKEN_ROUTES = [
    ("GET", "/v2"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/models/sine"),
    ("GET", "/v2/models/sine/ready"),
    ("POST", "/v2/models/sine/infer"),
    ("POST", "/v2/repository/index"),
    ("GET", "/metrics"),
    ("GET", "/v2/no/such/route"),
]


def test_a_token_is_required_by_every_route_but_liveness(start_server):
    server = start_server(token=TOKEN)
    body = json.dumps({"inputs": [x_tensor()]}).encode()
    for method, path in TOKEN_ROUTES:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            status, answer_headers, answer = raw(server, method, path, body if method == "POST" else None, headers)
            one_line_error(status, answer_headers, answer, 401, "Authorization: Bearer")
            assert answer_headers.get("www-authenticate") == "Bearer"
    good = {"Authorization": f"Bearer {TOKEN}"}
    x = np.array([[0.5]], np.float32)
    with client(server) as c:
        assert c.is_server_live() and not c.is_server_ready() and not c.is_model_ready("sine")
        with pytest.raises(InferenceServerException) as excinfo:
            c.infer("sine", [tensor("x", x)])
        assert excinfo.value.status() == "401"
        assert c.is_server_ready(headers=good) and c.is_model_ready("sine", headers=good)
        assert c.get_server_metadata(headers=good)["name"] == SERVER_NAME
        assert_outputs(c.infer("sine", [tensor("x", x)], headers=good), *MODEL.step(x))
    for value in (f"bearer {TOKEN}", f"BEARER   {TOKEN}  ", f"  Bearer {TOKEN}"):  # any case, spaces around
        status, _, text = raw(server, "GET", "/metrics", headers={"authorization": value})
        assert status == 200 and b"rnn_requests_total" in text, value
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        assert raw(server, "GET", "/v2/health/live", headers=headers)[0] == 200


def test_metrics_count_requests_and_batches(sine_server):
    with client(sine_server) as c:
        step_sequence(c, "metrics-seq", 0.5, sequence_start=True, sequence_end=True)
    status, headers, text = raw(sine_server, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert b'rnn_requests_total{model="sine",protocol="http"}' in text and b"rnn_batch_size_bucket" in text


def test_a_model_that_failed_to_load_is_unavailable_and_the_others_serve(start_server, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(COMMITTED, broken)
    data = bytearray((broken / "step.onnx").read_bytes())
    data[-8:-4] = bytes(b ^ 0xFF for b in data[-8:-4])  # a few bytes changed: its sha256 no longer matches
    (broken / "step.onnx").write_bytes(bytes(data))
    server = start_server([("sine", COMMITTED), ("broken", broken)])
    with client(server) as c:
        assert c.is_server_live() and not c.is_server_ready()
        assert c.is_model_ready("sine") and not c.is_model_ready("broken")
        index = {entry["name"]: entry for entry in c.get_model_repository_index()}
        x = np.array([[0.5]], np.float32)
        assert_outputs(c.infer("sine", [tensor("x", x)]), *MODEL.step(x))
    assert index["sine"]["state"] == "READY" and "reason" not in index["sine"]
    assert index["broken"]["state"] == "UNAVAILABLE" and "sha256" in index["broken"]["reason"]
    one_line_error(*raw(server, "GET", "/v2/health/ready"), 503, "'broken'.*sha256")
    one_line_error(*raw(server, "GET", "/v2/models/broken/ready"), 503, "model 'broken' is not ready")
    one_line_error(*raw(server, "GET", "/v2/models/broken"), 503, "model 'broken' is not ready")
    one_line_error(*post_json(server, "/v2/models/broken/infer", {"inputs": [x_tensor()]}), 503, "not ready")
    status, _, body = raw(server, "POST", "/v2/repository/index", b'{"ready": true}')
    assert status == 200 and "broken" not in {entry["name"] for entry in json.loads(body)}

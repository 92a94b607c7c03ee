"""The gRPC front against a real server on loopback, talked to with tritonclient.grpc: health and
metadata, the stateless forms bit-identical to the runtime, server-held sequences over
bidirectional streams (many at once, batched), every caller's mistake with its status code, and
the token."""

from __future__ import annotations

import asyncio
import logging
import queue
import shutil

import numpy as np
import pytest

from tests.conftest import COMMITTED

grpc = pytest.importorskip("grpc", reason="grpcio (serve extra) is not installed")
triton = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (dev extra) is not installed")

import tritonclient.grpc.aio as triton_aio  # noqa: E402
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

import runtime  # noqa: E402

WAIT_S = 60  # the longest any test waits for one answer
SEQUENCES, SEQUENCE_STEPS = 64, 1000  # the many-streams test: sequences at once, steps each
TOKEN = "grpc-test-token"


def url(server) -> str:
    return f"127.0.0.1:{server.grpc_port}"


def tensor(name: str, array: np.ndarray, datatype: str | None = None):
    datatype = datatype or {np.float32: "FP32", np.float64: "FP64", np.int64: "INT64"}[array.dtype.type]
    infer_input = triton.InferInput(name, list(array.shape), datatype)
    infer_input.set_data_from_numpy(array)
    return infer_input


def raw_request(model: str = "sine", x: np.ndarray | None = None, **parameters) -> pb.ModelInferRequest:
    """A ModelInferRequest built by hand (for what tritonclient refuses to send): input x, raw."""
    x = np.zeros((1, 1), np.float32) if x is None else x
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    for key, (kind, value) in parameters.items():
        setattr(request.parameters[key], kind, value)
    return request


def status_of(excinfo) -> str:
    return excinfo.value.status()


@pytest.fixture(scope="module")
def model():
    return runtime.load(COMMITTED)


@pytest.fixture(scope="module")
def client(sine_server):
    with triton.InferenceServerClient(url(sine_server)) as client:
        yield client


@pytest.fixture(scope="module")
def stub(sine_server):
    """The service's raw stub, for requests tritonclient would not build."""
    with grpc.insecure_channel(url(sine_server)) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


class Stream:
    """A tritonclient bidirectional stream whose answers are read in order, each within WAIT_S."""

    def __init__(self, server, headers: dict | None = None) -> None:
        self.client = triton.InferenceServerClient(url(server))
        self.answers: queue.Queue = queue.Queue()
        self.client.start_stream(lambda result, error: self.answers.put((result, error)), headers=headers)

    def send(self, x: np.ndarray, model: str = "sine", **options) -> None:
        self.client.async_stream_infer(model, [tensor("x", x)], **options)

    def answer(self):
        """(result, error) of the next answer."""
        return self.answers.get(timeout=WAIT_S)

    def y(self) -> np.ndarray:
        result, error = self.answer()
        assert error is None, error
        return result.as_numpy("y")

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


@pytest.fixture()
def stream(sine_server):
    opened = Stream(sine_server)
    yield opened
    opened.close()


# ---- health, metadata, index -----------------------------------------------------------------


def test_health_metadata_and_index(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("sine") and client.is_model_ready("sine-predict", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("sine", "2")
    server = client.get_server_metadata(as_json=True)
    assert server["version"] == runtime.__version__ and "sequence" in server["extensions"]
    metadata = client.get_model_metadata("sine")
    assert metadata.name == "sine" and list(metadata.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("x", "FP32", [-1, 1]),
        ("h", "FP32", [-1, 6]),
    ]
    assert [(t.name, list(t.shape)) for t in metadata.outputs] == [("y", [-1, 1]), ("h_out", [-1, 6])]
    generate = client.get_model_metadata("sine-generate")
    assert [(t.name, t.datatype) for t in generate.inputs][:2] == [("x", "FP32"), ("steps", "INT64")]
    config = client.get_model_config("sine").config
    assert config.name == "sine" and config.max_batch_size == 0 and [i.name for i in config.input] == ["x", "h"]
    index = client.get_model_repository_index()
    assert [(m.name, m.state) for m in index.models] == [
        ("sine", "READY"),
        ("sine-predict", "READY"),
        ("sine-generate", "READY"),
    ]
    with pytest.raises(InferenceServerException) as excinfo:
        client.get_model_metadata("nope")
    assert status_of(excinfo) == "StatusCode.NOT_FOUND" and "nope" in excinfo.value.message()


def test_what_the_server_does_not_offer_is_unimplemented(client):
    for call in (client.get_trace_settings, lambda: client.load_model("sine"), client.get_log_settings):
        with pytest.raises(InferenceServerException) as excinfo:
            call()
        assert status_of(excinfo) == "StatusCode.UNIMPLEMENTED" and "does not offer" in excinfo.value.message()


# ---- stateless forms -------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_step_is_bit_identical_to_the_runtime(client, model, batch):
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 1)).astype(np.float32)
    h = rng.standard_normal((batch, 6)).astype(np.float32)
    y, (h_out,) = model.step(x)
    result = client.infer("sine", [tensor("x", x)])
    np.testing.assert_array_equal(result.as_numpy("y"), y)
    np.testing.assert_array_equal(result.as_numpy("h_out"), h_out)
    assert result.get_response().model_version == "1"
    y, (h_out,) = model.step(x, (h,))
    result = client.infer("sine", [tensor("x", x), tensor("h", h)], request_id=f"step-{batch}")
    np.testing.assert_array_equal(result.as_numpy("y"), y)
    np.testing.assert_array_equal(result.as_numpy("h_out"), h_out)
    assert result.get_response().id == f"step-{batch}"


def test_requested_outputs_only(client):
    result = client.infer(
        "sine", [tensor("x", np.ones((2, 1), np.float32))], outputs=[triton.InferRequestedOutput("y")]
    )
    assert [o.name for o in result.get_response().outputs] == ["y"] and result.as_numpy("h_out") is None


def test_typed_contents_decode_as_raw_does(stub, model):
    x = np.float32([[0.25], [-1.5]])
    request = pb.ModelInferRequest(model_name="sine")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 1]).contents.fp32_contents.extend(x.ravel().tolist())
    response = stub.ModelInfer(request, timeout=WAIT_S)
    y, _ = model.step(x)
    assert response.outputs[0].name == "y" and list(response.outputs[0].shape) == [2, 1]
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.float32).reshape(2, 1), y)


def test_predict_and_generate_equal_the_runtime(client, model):
    xs = np.random.default_rng(5).standard_normal((50, 3, 1)).astype(np.float32)
    ys, (h,) = model.predict(xs)
    result = client.infer("sine-predict", [tensor("x", xs)])
    np.testing.assert_array_equal(result.as_numpy("y"), ys)
    np.testing.assert_array_equal(result.as_numpy("h_out"), h)
    x0 = xs[0]
    ys, (h,) = model.generate(x0, 200)
    result = client.infer("sine-generate", [tensor("x", x0), tensor("steps", np.int64([200]))])
    np.testing.assert_array_equal(result.as_numpy("y"), ys)
    np.testing.assert_array_equal(result.as_numpy("h_out"), h)


# ---- sequences over the bidirectional stream -----------------------------------------------------


async def _run_sequences(server, keys: list, xs: np.ndarray) -> list[np.ndarray]:
    """Every sequence on its own stream of one tritonclient.grpc.aio client, all at once, each
    stream's requests sent without waiting for answers; the y of every step of each."""
    client = triton_aio.InferenceServerClient(url(server))

    async def one(key, inputs: np.ndarray) -> np.ndarray:
        last = len(inputs) - 1

        async def requests():
            for step in range(len(inputs)):
                x = tensor("x", inputs[step].reshape(1, 1))
                yield {
                    "model_name": "sine",
                    "inputs": [x],
                    "sequence_id": key,
                    "sequence_start": step == 0,
                    "sequence_end": step == last,
                }

        ys = []
        async for result, error in client.stream_infer(requests(), stream_timeout=WAIT_S):
            assert error is None, f"sequence {key!r}: {error}"
            ys.append(result.as_numpy("y"))
        return np.concatenate(ys)

    try:
        return await asyncio.gather(*(one(key, inputs) for key, inputs in zip(keys, xs)))
    finally:
        await client.close()


def test_many_sequences_at_once_are_batched_and_bit_identical(sine_server, model):
    keys = [10_000 + k if k % 2 else f"grpc-many-{k}" for k in range(SEQUENCES)]  # int and string ids
    xs = np.random.default_rng(7).standard_normal((SEQUENCES, SEQUENCE_STEPS)).astype(np.float32)
    metrics = sine_server.metrics
    labels = {"model": "sine"}
    before = (metrics.value("rnn_batch_size_sum", labels) or 0, metrics.value("rnn_batch_size_count", labels) or 0)
    outputs = asyncio.run(_run_sequences(sine_server, keys, xs))
    for key, inputs, ys in zip(keys, xs, outputs):
        local = runtime.Stream(model)
        expected = np.stack([local.push(x) for x in inputs])
        assert ys.shape == (SEQUENCE_STEPS, 1)
        np.testing.assert_array_equal(ys, expected, err_msg=f"sequence {key!r}")
    steps = metrics.value("rnn_batch_size_sum", labels) - before[0]
    runs = metrics.value("rnn_batch_size_count", labels) - before[1]
    assert steps == SEQUENCES * SEQUENCE_STEPS
    assert steps / runs > 1, f"no batching: {steps:g} steps in {runs:g} runs"


def test_unknown_sequence_is_named_and_the_stream_goes_on(stream, model):
    x = np.float32([[0.5]])
    stream.send(x, sequence_id=424242)
    stream.send(x, sequence_id="grpc-never-started")
    stream.send(x, sequence_id="grpc-goes-on", sequence_start=True)
    stream.send(x, model="nope")
    stream.send(x, sequence_id="grpc-goes-on", sequence_end=True)
    stream.send(x, sequence_id="grpc-goes-on")  # ended by the request before
    errors = [stream.answer()[1] for _ in range(2)]
    assert "424242" in errors[0].message() and "never started" in errors[0].message()
    assert "'grpc-never-started'" in errors[1].message()
    local = runtime.Stream(model)
    np.testing.assert_array_equal(stream.y()[0], local.push(x[0]))
    assert "unknown model 'nope'" in stream.answer()[1].message()
    np.testing.assert_array_equal(stream.y()[0], local.push(x[0]))
    assert "ended" in stream.answer()[1].message()


def test_a_start_of_a_live_sequence_begins_it_again(stream, model):
    xs = np.float32([0.1, 0.2, 0.3])
    for step, x in enumerate(xs):
        stream.send(x.reshape(1, 1), sequence_id=777_001, sequence_start=step == 0)
    stream.send(xs[:1].reshape(1, 1), sequence_id=777_001, sequence_start=True)
    ys = [stream.y()[0] for _ in range(4)]
    local = runtime.Stream(model)
    assert [local.push(x) for x in xs] == ys[:3]
    assert runtime.Stream(model).push(xs[0]) == ys[3]


# ---- the caller's mistakes ---------------------------------------------------------------------


def _bad_calls(client, stub, sequence: dict) -> list[tuple[str, str, object]]:
    """(what, expected status, call) for each mistake, every request in the given sequence."""
    x = np.float32([[0.5]])
    raw_sequence = {key: ("string_param", value) for key, value in sequence.items() if key == "sequence_id"}
    lying = raw_request(**raw_sequence)
    lying.raw_input_contents[0] = b"\0" * 8  # 8 bytes for a (1, 1) FP32 tensor
    huge = raw_request(**raw_sequence)
    del huge.inputs[0].shape[:]
    huge.inputs[0].shape.extend([1 << 30, 1])
    huge.raw_input_contents[0] = b""
    typed = raw_request(**raw_sequence)
    del typed.raw_input_contents[:]
    typed.inputs[0].contents.fp32_contents.extend([1.0, 2.0])  # two values for a (1, 1) tensor

    def infer(*inputs, model="sine", **options):
        return lambda: client.infer(model, list(inputs), **sequence, **options)

    def raw(request):
        return lambda: stub.ModelInfer(request, timeout=WAIT_S)

    calls = [
        ("unknown model", "NOT_FOUND", infer(tensor("x", x), model="nope")),
        ("unknown version", "NOT_FOUND", infer(tensor("x", x), model_version="2")),
        ("unknown input", "INVALID_ARGUMENT", infer(tensor("x", x), tensor("z", x))),
        ("missing input", "INVALID_ARGUMENT", infer(tensor("h", np.zeros((1, 6), np.float32)))),
        ("wrong datatype", "INVALID_ARGUMENT", infer(tensor("x", x.astype(np.float64)))),
        ("wrong shape", "INVALID_ARGUMENT", infer(tensor("x", np.zeros((1, 2), np.float32)))),
        ("NaN", "INVALID_ARGUMENT", infer(tensor("x", np.float32([[np.nan]])))),
        ("unknown output", "INVALID_ARGUMENT", infer(tensor("x", x), outputs=[triton.InferRequestedOutput("q")])),
        ("raw content that lies", "INVALID_ARGUMENT", raw(lying)),
        ("typed content count", "INVALID_ARGUMENT", raw(typed)),
        ("too many elements", "RESOURCE_EXHAUSTED", raw(huge)),
    ]
    if sequence:  # a batch is fine without a sequence
        calls.append(("batch of a sequence", "INVALID_ARGUMENT", infer(tensor("x", np.zeros((2, 1), np.float32)))))
    return calls


def _check_bad_calls(calls) -> None:
    for what, code, call in calls:
        with pytest.raises((InferenceServerException, grpc.RpcError)) as excinfo:
            call()
        error = excinfo.value
        got = error.status() if isinstance(error, InferenceServerException) else str(error.code())
        message = error.message() if isinstance(error, InferenceServerException) else error.details()
        assert got == f"StatusCode.{code}", f"{what}: {got} {message}"
        assert message and "\n" not in message and "Traceback" not in message, f"{what}: {message!r}"


def test_bad_requests_answer_their_status_and_leave_a_sequence_untouched(client, stub, model):
    key = "grpc-guarded"
    xs = np.random.default_rng(11).standard_normal((10, 1, 1)).astype(np.float32)
    ys = [client.infer("sine", [tensor("x", xs[0])], sequence_id=key, sequence_start=True).as_numpy("y")]
    ys += [client.infer("sine", [tensor("x", x)], sequence_id=key).as_numpy("y") for x in xs[1:5]]
    _check_bad_calls(_bad_calls(client, stub, {"sequence_id": key}))
    _check_bad_calls(_bad_calls(client, stub, {}))  # and stateless
    with pytest.raises(InferenceServerException) as excinfo:  # the state is the server's in a sequence
        client.infer("sine", [tensor("x", xs[5]), tensor("h", np.zeros((1, 6), np.float32))], sequence_id=key)
    assert status_of(excinfo) == "StatusCode.INVALID_ARGUMENT" and "held by the server" in excinfo.value.message()
    ys += [client.infer("sine", [tensor("x", x)], sequence_id=key).as_numpy("y") for x in xs[5:]]
    local = runtime.Stream(model)
    np.testing.assert_array_equal(np.concatenate(ys), np.stack([local.push(x[0]) for x in xs]))


@pytest.mark.parametrize(
    "kind, value, message",
    [
        ("double_param", 3.0, "integer or a string"),
        ("bool_param", True, "integer or a string"),
    ],
)
def test_sequence_id_of_a_wrong_type_is_refused(stub, kind, value, message):
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.ModelInfer(raw_request(sequence_id=(kind, value)), timeout=WAIT_S)
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in excinfo.value.details()
    with pytest.raises(grpc.RpcError) as excinfo:
        flag = raw_request(sequence_id=("int64_param", 5), sequence_start=("string_param", "yes"))
        stub.ModelInfer(flag, timeout=WAIT_S)
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sequence_start" in excinfo.value.details()


def test_a_request_id_longer_than_256_characters_is_refused(stub):
    request = raw_request()
    request.id = "\u00e9" * 257
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.ModelInfer(request, timeout=WAIT_S)
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "longer than 256 characters" in excinfo.value.details()
    request.id = "\u00e9" * 256
    assert stub.ModelInfer(request, timeout=WAIT_S).id == request.id


@pytest.mark.parametrize(
    "shape, code, message",
    [
        ([1] * 100, "INVALID_ARGUMENT", "100 dimensions in its shape, at most 32"),
        ([1] * 33, "INVALID_ARGUMENT", "33 dimensions in its shape, at most 32"),
        ([0, 2**62, 2**62], "INVALID_ARGUMENT", "out of range"),
        ([0] + [1 << 22] * 31, "INVALID_ARGUMENT", "out of range"),
        ([1, -1], "INVALID_ARGUMENT", "sizes >= 0"),
        ([2**62, 2**62], "RESOURCE_EXHAUSTED", "the limit is 4194304"),
    ],
)
@pytest.mark.parametrize("contents", ["raw", "typed"])
def test_a_shape_numpy_cannot_hold_is_refused_before_numpy_sees_it(stub, shape, code, message, contents):
    request = raw_request()
    del request.inputs[0].shape[:]
    request.inputs[0].shape.extend(shape)
    del request.raw_input_contents[:]
    if contents == "raw":
        request.raw_input_contents.append(b"")
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.ModelInfer(request, timeout=WAIT_S)
    assert excinfo.value.code() == getattr(grpc.StatusCode, code), excinfo.value.details()
    assert message in excinfo.value.details()


def test_an_unexpected_failure_is_internal_of_one_line_and_logged(start_server, caplog):
    server = start_server()

    async def broken(request, protocol, version=""):
        raise RuntimeError("boom /secret/path\n  with a second line")

    server.engine.infer = broken
    with caplog.at_level(logging.ERROR, logger="rnn.serve"):
        with grpc.insecure_channel(url(server)) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as excinfo:
                stub.ModelInfer(raw_request(), timeout=WAIT_S)
            answers = list(stub.ModelStreamInfer(iter([raw_request()]), timeout=WAIT_S))
    assert excinfo.value.code() == grpc.StatusCode.INTERNAL
    for message in (excinfo.value.details(), answers[0].error_message):
        assert message.startswith("internal server error (RuntimeError)"), message
        assert "boom" not in message and "secret" not in message and "\n" not in message
    assert sum(bool(r.exc_info) and "boom" in str(r.exc_info[1]) for r in caplog.records) == 2


def test_a_bad_request_in_a_stream_answers_its_error_message(sine_server):
    with grpc.insecure_channel(url(sine_server)) as channel:
        requests = [raw_request(sequence_id=("double_param", 1.5)), raw_request()]
        requests[0].id, requests[1].id = "bad", "good"
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers = list(stub.ModelStreamInfer(iter(requests), timeout=WAIT_S))
    assert [a.infer_response.id for a in answers] == ["bad", "good"]
    assert "sequence_id" in answers[0].error_message and not answers[1].error_message


def test_a_model_that_failed_to_load_is_unavailable(start_server, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(COMMITTED, broken)
    (broken / "step.onnx").write_bytes(b"not onnx")
    server = start_server([("sine", COMMITTED), ("broken", broken)])
    with triton.InferenceServerClient(url(server)) as client:
        assert client.is_server_live() and not client.is_server_ready()
        assert client.is_model_ready("sine") and not client.is_model_ready("broken")
        for call in (
            lambda: client.get_model_metadata("broken"),
            lambda: client.infer("broken", [tensor("x", np.zeros((1, 1), np.float32))]),
        ):
            with pytest.raises(InferenceServerException) as excinfo:
                call()
            assert status_of(excinfo) == "StatusCode.UNAVAILABLE" and "broken" in excinfo.value.message()
        states = {m.name: m.state for m in client.get_model_repository_index().models}
        assert states["broken"] == "UNAVAILABLE" and states["sine"] == "READY"


# ---- the token -------------------------------------------------------------------------------


def test_a_token_is_required_by_every_call_but_liveness(start_server):
    server = start_server(token=TOKEN)
    x = tensor("x", np.zeros((1, 1), np.float32))
    good = {"authorization": f"Bearer {TOKEN}"}
    with triton.InferenceServerClient(url(server)) as client:
        assert client.is_server_live()
        for headers, why in ((None, "no token"), ({"authorization": "Bearer wrong"}, "a wrong token")):
            for call in (
                lambda headers=headers: client.is_server_ready(headers=headers),
                lambda headers=headers: client.get_model_metadata("sine", headers=headers),
                lambda headers=headers: client.infer("sine", [x], headers=headers),
            ):
                with pytest.raises(InferenceServerException) as excinfo:
                    call()
                assert status_of(excinfo) == "StatusCode.UNAUTHENTICATED" and why in excinfo.value.message()
        assert client.is_server_ready(headers=good) and client.get_model_metadata("sine", headers=good).name == "sine"
        assert client.infer("sine", [x], headers=good).as_numpy("y").shape == (1, 1)
        for value in (f"bearer {TOKEN}", f"BEARER   {TOKEN}  ", f"  Bearer {TOKEN}"):  # as HTTP: any case, spaces
            assert client.is_server_ready(headers={"authorization": value}), value
        for value in (TOKEN, f"Basic {TOKEN}", f"Bearer{TOKEN}"):
            with pytest.raises(InferenceServerException) as excinfo:
                client.is_server_ready(headers={"authorization": value})
            assert status_of(excinfo) == "StatusCode.UNAUTHENTICATED", value
    refused = Stream(server)  # refused as it opens, before any request (a send after that raises)
    try:
        result, error = refused.answer()
        assert result is None and error.status() == "StatusCode.UNAUTHENTICATED"
    finally:
        refused.client.stop_stream(cancel_requests=True)
        refused.client.close()
    allowed = Stream(server, headers=good)
    try:
        allowed.send(np.zeros((1, 1), np.float32), sequence_id=1, sequence_start=True)
        assert allowed.y().shape == (1, 1)
    finally:
        allowed.close()

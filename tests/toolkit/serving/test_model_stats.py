"""Triton's model configuration and statistics extensions against a real server on loopback,
talked to with tritonclient.http and tritonclient.grpc: HTTP's configuration equals gRPC's, the
statistics count what the server ran (inferences as batch items, runs by batch size, successes and
failures with their time), every served name is listed, unknown names are 404/NOT_FOUND, and the
token guards both routes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.conftest import COMMITTED

triton_http = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (dev extra) is not installed")
triton_grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (dev extra) is not installed")

from google.protobuf import json_format  # noqa: E402
from tritonclient.grpc import model_config_pb2 as config_pb  # noqa: E402
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

import runtime  # noqa: E402

WAIT_S = 60  # the longest any test waits for one answer
TOKEN = "stats-token"
NAMES = ("sine", "sine-predict", "sine-generate")  # what the committed folder is served as
BATCHES = (1, 3, 2, 3, 5)  # batch sizes of the stateless steps the counting test sends
PREDICT_SHAPE = (7, 4, 1)  # (steps, batch, 1): a time-first predict request of batch 4
SEQUENCE_STEPS = 3


def http_client(server, **options) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(
        f"127.0.0.1:{server.http_port}", connection_timeout=WAIT_S, network_timeout=WAIT_S, **options
    )


def grpc_client(server) -> triton_grpc.InferenceServerClient:
    return triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")


def x_input(array: np.ndarray) -> triton_http.InferInput:
    infer_input = triton_http.InferInput("x", list(array.shape), "FP32")
    infer_input.set_data_from_numpy(array)
    return infer_input


def by_name(statistics: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in statistics["model_stats"]}


def grpc_names(client) -> list[str]:
    return [entry.name for entry in client.get_inference_statistics().model_stats]


@pytest.fixture(scope="module")
def server():
    from toolkit.serving import Server, Settings

    started = Server(
        [("sine", COMMITTED)], http_port=0, grpc_port=0, settings=Settings(), say=lambda message: None
    ).start()
    yield started
    started.stop()


def test_http_config_equals_grpc_config_for_every_served_name(server):
    model = runtime.load(COMMITTED)
    http, grpc = http_client(server), grpc_client(server)
    for name in NAMES:
        config = http.get_model_config(name)
        assert config == http.get_model_config(name, model_version="1")
        from_grpc = grpc.get_model_config(name).config
        assert json_format.ParseDict(config, config_pb.ModelConfig()) == from_grpc, name
        assert config["name"] == name and config["max_batch_size"] == 0
        inputs = {entry["name"]: entry for entry in config["input"]}
        assert inputs["x"]["data_type"] == "TYPE_FP32" and not inputs["x"]["optional"]
        assert all(inputs[state]["optional"] for state in model.state_names)
        assert config["parameters"]["layout"] == {"string_value": str(model.layout)}
    predict = http.get_model_config("sine-predict")
    assert predict["input"][0]["dims"] == [-1, -1, model.input_size]  # steps and batch axes: any size
    generate = http.get_model_config("sine-generate")
    assert [entry["name"] for entry in generate["input"]][:2] == ["x", "steps"]


def test_unknown_model_or_version_is_not_found(server):
    http, grpc = http_client(server), grpc_client(server)
    for call in (http.get_model_config, http.get_inference_statistics):
        with pytest.raises(InferenceServerException, match="unknown model 'nope'") as excinfo:
            call("nope")
        assert excinfo.value.status() == "404"
        with pytest.raises(InferenceServerException, match="no version '7'") as excinfo:
            call("sine", model_version="7")
        assert excinfo.value.status() == "404"
    for call in (grpc.get_model_config, grpc.get_inference_statistics):
        with pytest.raises(InferenceServerException, match="unknown model 'nope'") as excinfo:
            call("nope")
        assert excinfo.value.status() == "StatusCode.NOT_FOUND"


def test_every_served_name_is_listed_over_both_protocols(server):
    listed = http_client(server).get_inference_statistics()
    assert sorted(by_name(listed)) == sorted(NAMES)
    assert all(entry["version"] == "1" for entry in listed["model_stats"])
    assert sorted(grpc_names(grpc_client(server))) == sorted(NAMES)


def test_server_metadata_says_both_extensions_are_served(server):
    wanted = {"model_configuration", "statistics"}
    assert wanted <= set(http_client(server).get_server_metadata()["extensions"])
    assert wanted <= set(grpc_client(server).get_server_metadata().extensions)


def _send_requests(server) -> None:
    """The counting test's traffic: stateless steps of BATCHES, one bad request, one predict
    request, SEQUENCE_STEPS steps of a server-held sequence."""
    rng = np.random.default_rng(24)
    http = http_client(server)
    for batch in BATCHES:
        http.infer("sine", [x_input(rng.standard_normal((batch, 1)).astype(np.float32))])
    with pytest.raises(InferenceServerException) as excinfo:  # a shape the model does not take
        http.infer("sine", [x_input(np.zeros((2, 5), np.float32))])
    assert excinfo.value.status() == "400"
    http.infer("sine-predict", [x_input(rng.standard_normal(PREDICT_SHAPE).astype(np.float32))])
    for step in range(SEQUENCE_STEPS):
        x = x_input(rng.standard_normal((1, 1)).astype(np.float32))
        http.infer("sine", [x], sequence_id=2401, sequence_start=step == 0, sequence_end=step == SEQUENCE_STEPS - 1)


def test_statistics_count_what_the_server_ran(start_server):
    server = start_server()
    before_ms = time.time_ns() // 1_000_000
    _send_requests(server)
    after_ms = time.time_ns() // 1_000_000
    statistics = http_client(server).get_inference_statistics()
    step = by_name(statistics)["sine"]
    successes = len(BATCHES) + SEQUENCE_STEPS
    assert step["inference_count"] == sum(BATCHES) + SEQUENCE_STEPS  # batch items, as Triton counts
    assert step["execution_count"] == successes  # every step ran alone: nothing else was in flight
    inference = step["inference_stats"]
    assert inference["success"]["count"] == successes and inference["success"]["ns"] > 0
    assert inference["fail"]["count"] == 1 and inference["fail"]["ns"] > 0
    assert inference["compute_infer"]["count"] == successes
    assert 0 < inference["compute_infer"]["ns"] < inference["success"]["ns"]  # a run is part of its request
    assert inference["compute_input"] == inference["compute_output"] == {"count": 0, "ns": 0}
    assert inference["queue"]["count"] == len(BATCHES) + SEQUENCE_STEPS  # stateless steps queue 0 ns,
    assert inference["queue"]["ns"] > 0  # a sequence step waits for the batcher's tick
    assert before_ms <= step["last_inference"] <= after_ms
    sizes = {entry["batch_size"]: entry["compute_infer"]["count"] for entry in step["batch_stats"]}
    expected = {size: BATCHES.count(size) for size in set(BATCHES)}
    expected[1] += SEQUENCE_STEPS
    assert sizes == expected
    assert all(entry["compute_infer"]["ns"] > 0 for entry in step["batch_stats"])
    predict = by_name(statistics)["sine-predict"]
    assert predict["inference_count"] == PREDICT_SHAPE[1] and predict["execution_count"] == 1
    assert [entry["batch_size"] for entry in predict["batch_stats"]] == [PREDICT_SHAPE[1]]
    generate = by_name(statistics)["sine-generate"]
    assert generate["inference_count"] == generate["execution_count"] == generate["last_inference"] == 0
    grpc = grpc_client(server)  # one source, two fronts: gRPC's message holds HTTP's document
    assert grpc.get_inference_statistics() == json_format.ParseDict(statistics, pb.ModelStatisticsResponse())
    only_step = json_format.ParseDict({"model_stats": [step]}, pb.ModelStatisticsResponse())
    assert grpc.get_inference_statistics("sine") == only_step


def test_the_token_guards_config_and_statistics(start_server):
    server = start_server(token=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    http, grpc = http_client(server), grpc_client(server)
    for call in (http.get_model_config, http.get_inference_statistics):
        for headers in (None, {"Authorization": "Bearer wrong"}):
            with pytest.raises(InferenceServerException) as excinfo:
                call("sine", headers=headers)
            assert excinfo.value.status() == "401"
        assert call("sine", headers=bearer)
    for call in (grpc.get_model_config, grpc.get_inference_statistics):
        with pytest.raises(InferenceServerException) as excinfo:
            call("sine")
        assert excinfo.value.status() == "StatusCode.UNAUTHENTICATED"
        assert call("sine", headers={"authorization": f"Bearer {TOKEN}"}).ByteSize() > 0

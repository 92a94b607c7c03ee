"""`rnn serve --ray` on a local Ray cluster started by this module (and stopped at its end):
sequence affinity, stateless requests, a format 2 token model (named inputs, INT64 token ids, a
(layers, batch, hidden) state, seeded sampled generation), the Ray-native application behind Ray's
HTTP proxy, and the kill test: 64 sequences x 500 steps of the seed's model and of the token
model through tritonclient (HTTP and gRPC) against 2 Stepper replicas, one SIGKILLed at a random
moment, every output equal to an uninterrupted local run."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import time

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="the ray extra is not installed")
import ray  # noqa: E402
import tritonclient.grpc as grpc_client  # noqa: E402
import tritonclient.grpc.aio as grpc_aio  # noqa: E402
import tritonclient.http as http_client  # noqa: E402
import tritonclient.http.aio as http_aio  # noqa: E402
from ray import serve  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

import runtime  # noqa: E402
from tests.conftest import COMMITTED, REPO  # noqa: E402
from toolkit.serving import ray_serve  # noqa: E402
from toolkit.serving.client import SequenceClient  # noqa: E402
from toolkit.serving.protocol import InferRequest, ServeError  # noqa: E402

MODEL = runtime.load(COMMITTED)
KILL_TEST_BUDGET_S = 420  # the whole kill test (about 90 s here), a bound, not a measurement
CHARS = "chars"  # the served name of the token model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_run(xs: np.ndarray) -> np.ndarray:
    """Steps (T, 1, 1) inputs through the runtime from the initial state: the reference."""
    state, ys = None, []
    for x in xs:
        y, state = MODEL.step(x, state)
        ys.append(y)
    return np.concatenate(ys)


def concurrently(server, count: int, drive) -> list[np.ndarray]:
    """``drive(client, i)`` for i in range(count) at once through one HTTP asyncio client (120 s at most)."""

    async def run() -> list[np.ndarray]:
        client = http_aio.InferenceServerClient(f"127.0.0.1:{server.http_port}", conn_limit=count + 4)
        try:
            return await asyncio.wait_for(asyncio.gather(*(drive(client, i) for i in range(count))), 120)
        finally:
            await client.close()

    return asyncio.run(run())


def post_json(server, path: str, document: dict) -> tuple[int, dict]:
    """(status, JSON answer) of a POST of ``document`` to the server's HTTP front."""
    import http.client
    import json

    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    try:
        connection.request("POST", path, json.dumps(document), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def cluster():
    """A local Ray (4 logical CPUs on any machine: the replicas idle most of the time) with
    Serve's HTTP proxy on a free loopback port, for the Ray-native application's test."""
    ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    proxy_port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": proxy_port}, logging_config={"log_level": "WARNING"})
    yield proxy_port
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def chars(tmp_path_factory) -> runtime.Model:
    """The tests' CharGRU: a token (INT64) and a category (FP32, 3) in, logits out, state (2, batch, 7)."""
    import torch

    from export import export_module
    from tests.user_modules import CHAR_GRU_SIGNATURE, make_char_gru

    torch.set_num_threads(1)
    return runtime.load(
        export_module(make_char_gru(), tmp_path_factory.mktemp("ray-chars") / "m", **CHAR_GRU_SIGNATURE)
    )


def char_steps(seed: int, steps: int) -> list[dict[str, np.ndarray]]:
    """One stream's inputs at batch 1: a token id (1,) int64 and a one-hot category (1, 3) float32."""
    rng = np.random.default_rng(seed)
    return [
        {"token": rng.integers(0, 11, 1), "category": np.eye(3, dtype=np.float32)[rng.integers(0, 3, 1)]}
        for _ in range(steps)
    ]


def char_run(model: runtime.Model, steps: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The logits of one stream stepped through the runtime from the initial state: the reference."""
    state, ys = None, []
    for x in steps:
        y, state = model.step(x, state)
        ys.append(y)
    return np.concatenate(ys)


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> runtime.Model:
    """The two-input forecaster, batch-first: a value (fed back) and a day token, states h and c."""
    from export import export_module
    from tests.user_modules import TWO_INPUTS_SIGNATURE, make_two_inputs

    folder = tmp_path_factory.mktemp("ray-two") / "m"
    return runtime.load(export_module(make_two_inputs(), folder, layout="batch_first", **TWO_INPUTS_SIGNATURE))


def tensors(triton, arrays: dict[str, np.ndarray]) -> list:
    """tritonclient InferInputs of ``arrays`` (int64 as INT64, the rest FP32)."""
    made = []
    for name, array in arrays.items():
        made.append(triton.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32"))
        made[-1].set_data_from_numpy(array)
    return made


@pytest.fixture(scope="module")
def ray_server(cluster, chars, two):
    server = ray_serve.RayServer(
        [("sine", COMMITTED), (CHARS, chars.folder), ("two", two.folder)],
        scale=ray_serve.Scale(replicas=2),
        app_name="rnn-test",
        http_port=0,
        grpc_port=0,
        say=lambda message: None,
    ).start()
    yield server
    server.stop()


def test_rendezvous_order_is_stable_and_moves_only_the_keys_of_a_changed_replica():
    keys = [f"sine/i:{i}" for i in range(2000)]
    three = {key: ray_serve.rendezvous_order(key, ["a", "b", "c"])[0] for key in keys}
    assert three == {key: ray_serve.rendezvous_first(key, ["a", "b", "c"]) for key in keys}  # the request path's
    assert three == {key: ray_serve.rendezvous_order(key, ["c", "a", "b"])[0] for key in keys}  # order-free
    assert 500 < sum(first == "a" for first in three.values()) < 830  # about a third each
    two = {key: ray_serve.rendezvous_order(key, ["a", "b"])[0] for key in keys}  # c died
    assert all(two[key] == first for key, first in three.items() if first != "c")
    four = {key: ray_serve.rendezvous_order(key, ["a", "b", "c", "d"])[0] for key in keys}  # d joined
    assert all(four[key] in (first, "d") for key, first in three.items())


def test_plain_tritonclient_sequences_stay_on_their_replica(ray_server):
    """No version, no resent state: a step landing on a replica that does not hold its sequence
    would be refused (400, never started), so 32 concurrent sequences x 40 steps passing shows
    affinity, also while many calls wait for a replica at once (grouped calls, Ray's routing)."""
    sequences, steps = 32, 40
    xs = np.random.default_rng(3).uniform(-1, 1, (sequences, steps, 1, 1)).astype(np.float32)

    async def drive(client, i: int) -> np.ndarray:
        ys = []
        for t in range(steps):
            tensor = http_aio.InferInput("x", [1, 1], "FP32")
            tensor.set_data_from_numpy(xs[i, t])
            result = await client.infer(
                "sine", [tensor], sequence_id=5000 + i, sequence_start=t == 0, sequence_end=t == steps - 1
            )
            ys.append(result.as_numpy("y"))
        return np.concatenate(ys)

    calls_before = ray_server.engine.calls
    outputs = concurrently(ray_server, sequences, drive)
    for i in range(sequences):
        np.testing.assert_array_equal(outputs[i], local_run(xs[i]), err_msg=f"sequence {i}")
    assert ray_server.engine.calls - calls_before < sequences * steps  # requests shared actor calls
    assert len(ray_server.replica_pids(2)) == 2


def test_one_failing_request_does_not_fail_the_others_of_its_call():
    """Stepper.infer_many without Ray: a request that raises unexpectedly is answered alone (a
    500-status ServeError); the sequence step beside it is answered and counted."""
    stepper = ray_serve.Stepper([ray_serve.ship_folder("sine", COMMITTED)], ray_serve.Settings(), "cpu")
    real = stepper.engine.infer

    async def flaky(request, protocol, version):
        if request.model == "sine-predict":
            raise RuntimeError("boom")
        return await real(request, protocol, version)

    stepper.engine.infer = flaky
    x = np.array([[0.5]], np.float32)
    good = InferRequest("sine", {"x": x}, parameters={"sequence_id": 1, "sequence_start": True})
    bad = InferRequest("sine-predict", {"x": x.reshape(1, 1, 1)})
    answers = asyncio.run(stepper.infer_many([(good, "test", ""), (bad, "test", "")]))
    assert isinstance(answers[1], ServeError) and answers[1].status == 500 and "RuntimeError" in str(answers[1])
    np.testing.assert_array_equal(dict(answers[0].outputs)["y"], MODEL.step(x)[0])
    assert answers[0].parameters["sequence_version"] == 1


def test_a_two_input_models_predict_and_generate_run_on_the_replicas(ray_server, two):
    """The batch-first two-input model: NAME-predict from given states (h, c) and NAME-generate's
    closed loop with the day token held, over HTTP and gRPC, equal the runtime's."""
    rng = np.random.default_rng(8)
    xs = {"value": rng.uniform(-1, 1, (3, 9, 1)).astype(np.float32), "day": rng.integers(0, 7, (3, 9))}
    state = {
        "h": rng.uniform(-0.5, 0.5, (3, 6)).astype(np.float32),
        "c": rng.uniform(-0.5, 0.5, (3, 6)).astype(np.float32),
    }
    x0 = {"value": xs["value"][:, 0], "day": xs["day"][:, 0]}
    predicted, _ = two.predict(xs, (state["h"], state["c"]))
    generated, _ = two.generate(x0, 7)
    http = http_client.InferenceServerClient(f"127.0.0.1:{ray_server.http_port}")
    grpc = grpc_client.InferenceServerClient(f"127.0.0.1:{ray_server.grpc_port}")
    for triton, connection in ((http_client, http), (grpc_client, grpc)):
        answer = connection.infer("two-predict", tensors(triton, {**xs, **state})).as_numpy("next_value")
        np.testing.assert_array_equal(answer, predicted)
        steps = {"steps": np.array([7], np.int64)}
        np.testing.assert_array_equal(
            connection.infer("two-generate", tensors(triton, {**x0, **steps})).as_numpy("next_value"), generated
        )


def test_a_front_refuses_to_hold_a_generation_in_a_sequence(chars):
    """The front's engine without Ray: a sampled generation started in the front (the generate
    extension, gRPC streaming) in a sequence is refused in one line (the sequence's state is on its
    replica); a stateless one runs there and gives the runtime's tokens."""
    from toolkit.serving.generate_calls import SAMPLED

    engine = ray_serve.RoutedEngine([(CHARS, chars.folder)], ray_serve.Settings(), runtime.load, None, "unused")
    named = engine.names[f"{CHARS}-generate"]
    inputs = {"token": np.array([[3, 5]], np.int64), "category": np.array([[1, 0, 0]], np.float32)}
    parameters = {"strategy": "greedy", "max_tokens": 6}

    async def start(extra: dict) -> list[int]:
        started = await SAMPLED.start(engine, named, inputs, {**parameters, **extra})
        return list(await started.generation.result())

    with pytest.raises(ServeError, match="^on rnn serve --ray a generation in a sequence goes through the infer"):
        asyncio.run(start({"sequence_id": 4, "sequence_start": True}))
    _, state = chars.predict({"token": np.array([[3]]), "category": np.array([[[1, 0, 0]]], np.float32)})
    expected, _ = chars.generate(
        {"token": [5], "category": inputs["category"]}, 6, state, sampler=runtime.Sampler("greedy")
    )
    assert asyncio.run(start({})) == expected[:, 0].tolist()


def test_stateless_requests_and_the_fused_forms_run_on_the_replicas(ray_server):
    client = grpc_client.InferenceServerClient(f"127.0.0.1:{ray_server.grpc_port}")
    xs = np.random.default_rng(4).uniform(-1, 1, (7, 5, 1)).astype(np.float32)  # T=7, batch 5
    tensor = grpc_client.InferInput("x", list(xs.shape), "FP32")
    tensor.set_data_from_numpy(xs)
    got = client.infer("sine-predict", [tensor]).as_numpy("y")
    np.testing.assert_array_equal(got, MODEL.predict(xs)[0])
    for _ in range(20):  # stateless steps (batch 3), spread over the replicas
        x = np.random.default_rng(5).uniform(-1, 1, (3, 1)).astype(np.float32)
        step = grpc_client.InferInput("x", [3, 1], "FP32")
        step.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("sine", [step]).as_numpy("y"), MODEL.step(x)[0])
    with pytest.raises(InferenceServerException, match="has no input 'nope'"):  # checked in this process
        bad = grpc_client.InferInput("nope", [1, 1], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 1), np.float32))
        client.infer("sine", [bad])


def test_a_token_model_on_the_replicas_metadata_sequences_and_seeded_generation(ray_server, chars):
    """The format 2 token model through the replicas: its metadata (INT64 token, the layered state
    with -1 at its batch axis); 12 concurrent plain tritonclient sequences x 20 steps stay on their
    replica (no version, no resent state) and equal the runtime's steps; sampled NAME-generate with
    a seed (HTTP and gRPC) gives the runtime's tokens: the prompt teacher-forced, then sampled;
    Triton's generate extension, which runs in the front, too, and refuses to in a sequence."""
    client = http_client.InferenceServerClient(f"127.0.0.1:{ray_server.http_port}")
    metadata = client.get_model_metadata(CHARS)
    shapes = {item["name"]: (item["datatype"], item["shape"]) for item in metadata["inputs"]}
    assert shapes == {"token": ("INT64", [-1]), "category": ("FP32", [-1, 3]), "h": ("FP32", [2, -1, 7])}
    sequences, steps = 12, 20
    xs = [char_steps(40 + i, steps) for i in range(sequences)]

    async def drive(connection, i: int) -> np.ndarray:
        ys = []
        for t, x in enumerate(xs[i]):
            result = await connection.infer(
                CHARS, tensors(http_aio, x), sequence_id=f"c{i}", sequence_start=t == 0, sequence_end=t == steps - 1
            )
            ys.append(result.as_numpy("logits"))
        return np.concatenate(ys)

    for i, got in enumerate(concurrently(ray_server, sequences, drive)):
        np.testing.assert_array_equal(got, char_run(chars, xs[i]), err_msg=f"sequence {i}")
    prompt, category = np.array([[4, 2, 7, 1]], np.int64), np.array([[0, 1, 0]], np.float32)
    _, state = chars.predict({"token": prompt[0, :-1, None], "category": np.repeat(category[None], 3, axis=0)})
    sampler = runtime.Sampler("top_k", top_k=4, temperature=0.9, seed=11)
    expected, _ = chars.generate({"token": prompt[0, -1:], "category": category}, 30, state, sampler=sampler)
    parameters = {"strategy": "top_k", "top_k": 4, "temperature": 0.9, "seed": 11, "max_tokens": 30}
    grpc = grpc_client.InferenceServerClient(f"127.0.0.1:{ray_server.grpc_port}")
    for triton, connection in ((http_client, client), (grpc_client, grpc)):
        request = tensors(triton, {"token": prompt, "category": category})
        tokens = connection.infer(f"{CHARS}-generate", request, parameters=parameters).as_numpy("tokens")
        assert tokens.tolist() == expected.T.tolist()
    document = {"token": prompt[0].tolist(), "category": category[0].tolist(), "parameters": parameters}
    status, answer = post_json(ray_server, f"/v2/models/{CHARS}-generate/generate", document)  # in the front
    assert status == 200 and answer["tokens"] == expected[:, 0].tolist(), answer
    document["parameters"] |= {"sequence_id": 3, "sequence_start": True}
    status, answer = post_json(ray_server, f"/v2/models/{CHARS}-generate/generate", document)
    assert status == 400 and answer["error"].startswith("on rnn serve --ray a generation in a sequence goes"), answer


def test_the_ray_native_application_behind_rays_http_proxy(cluster):
    """The application of examples/ray/serve_config.yaml (`serve run` it): HTTP through Ray's
    proxy, autoscaled Steppers between its bounds."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((REPO / "examples" / "ray" / "serve_config.yaml").read_text())
    (application,) = ServeDeploySchema.model_validate(config).applications
    assert application.import_path == "toolkit.serving.ray_serve:app_builder"
    args = {**application.args, "models": application.args["models"].replace("artifacts/", f"{REPO}/artifacts/")}
    serve.run(ray_serve.app_builder(args), name="rnn-native", route_prefix="/")
    try:
        stepper = serve.status().applications["rnn-native"].deployments["Stepper"]
        assert stepper.status == "HEALTHY" and 1 <= sum(stepper.replica_states.values()) <= 2
        client = http_client.InferenceServerClient(f"127.0.0.1:{cluster}")
        assert client.is_model_ready("sine-generate")
        assert [item["name"] for item in client.get_model_metadata("sine")["inputs"]] == ["x", "h"]
        xs = np.random.default_rng(6).uniform(-1, 1, (12, 1, 1)).astype(np.float32)
        got = []
        for t, x in enumerate(xs):
            tensor = http_client.InferInput("x", [1, 1], "FP32")
            tensor.set_data_from_numpy(x)
            got.append(client.infer("sine", [tensor], sequence_id=77, sequence_start=t == 0).as_numpy("y"))
        np.testing.assert_array_equal(np.concatenate(got), local_run(xs))
    finally:
        serve.delete("rnn-native")


def test_rnn_serve_ray_joins_an_existing_cluster(cluster):
    """`rnn serve --ray --address HOST:PORT` (this module's cluster, token authentication on, as
    Ray starts local clusters): its own application beside the others; SIGTERM deletes it only."""
    from tests.toolkit.serving.test_serve_cli import Served, step

    address = ray.get_runtime_context().gcs_address
    before = set(serve.status().applications)
    served = Served("--ray", "--address", address, "--replicas", "1", "--app-name", "joined", f"sine={COMMITTED}")
    try:
        assert any(f"on Ray at {address}" in line for line in served.lines), served.lines
        assert "joined" in serve.status().applications
        client = served.client()
        got = [step(client, 8, float(v), start=t == 0)[0] for t, v in enumerate(np.linspace(-1, 1, 6))]
        expected = local_run(np.linspace(-1, 1, 6, dtype=np.float32).reshape(6, 1, 1))
        assert got == [float(y) for y in expected[:, 0]]
    finally:
        code, rest = served.stop(timeout=120)
    assert code == 0, rest
    assert set(serve.status().applications) == before  # its application deleted, no other touched


def test_a_replica_killed_under_load_loses_no_acknowledged_step(ray_server, chars):
    """The issue's kill test: 64 sequences x 500 steps against the 2 replicas, one SIGKILLed at a
    random moment between 20% and 60% of the steps: half of the seed's model, half of the token
    model (named INT64 and FP32 inputs, a (2, batch, 7) state resent by the client), each half
    over HTTP and gRPC."""
    sequences, steps = 64, 500
    rng = np.random.default_rng(12)
    xs = rng.uniform(-1, 1, (sequences, steps, 1, 1)).astype(np.float32)
    tokens = {i: char_steps(100 + i, steps) for i in range(sequences) if i % 4 >= 2}  # the token model's
    moment = random.Random(os.getpid()).randint(sequences * steps // 5, sequences * steps * 3 // 5)
    pids = ray_server.replica_pids(2)
    assert len(pids) == 2
    victim = sorted(pids)[moment % 2]
    done = 0

    async def run() -> tuple[list[np.ndarray], list[SequenceClient]]:
        nonlocal done
        http = http_aio.InferenceServerClient(f"127.0.0.1:{ray_server.http_port}", conn_limit=40)
        grpc = grpc_aio.InferenceServerClient(f"127.0.0.1:{ray_server.grpc_port}")
        try:
            metadata = {
                (name, kind): await (
                    http.get_model_metadata(name) if kind == "http" else grpc.get_model_metadata(name, as_json=True)
                )
                for name in ("sine", CHARS)
                for kind in ("http", "grpc")
            }

            def sequence(i: int) -> SequenceClient:
                name, kind = ("sine", CHARS)[i % 4 >= 2], ("grpc", "http")[i % 2]
                states = (
                    len(chars.states) if (name, kind) == (CHARS, "grpc") else None
                )  # gRPC metadata has no parameters
                connection, key = (http, 9000 + i) if kind == "http" else (grpc, f"seq-{i}")
                return SequenceClient(connection, name, key, metadata[name, kind], states=states)

            clients = [sequence(i) for i in range(sequences)]

            async def drive(i: int) -> np.ndarray:
                nonlocal done
                ys = []
                for t in range(steps):
                    x = tokens[i][t] if i in tokens else xs[i, t]
                    ys.append(await clients[i].step(x, end=t == steps - 1))
                    done += 1
                return np.concatenate(ys)

            async def kill() -> None:
                while done < moment:
                    await asyncio.sleep(0.005)
                os.kill(victim, signal.SIGKILL)

            outputs = await asyncio.wait_for(
                asyncio.gather(kill(), *(drive(i) for i in range(sequences))), KILL_TEST_BUDGET_S
            )
            return outputs[1:], clients
        finally:
            await http.close()
            await grpc.close()

    started = time.monotonic()
    outputs, clients = asyncio.run(run())
    elapsed = time.monotonic() - started
    for i in range(sequences):
        expected = char_run(chars, tokens[i]) if i in tokens else local_run(xs[i])
        np.testing.assert_array_equal(outputs[i], expected, err_msg=f"sequence {i}")
    recovered = [client.recoveries for client in clients]
    assert sum(recovered) > 0, "the kill should have moved some sequences"
    assert sum(recovered[i] for i in tokens) > 0, "and some of the token model's (half of them ran on each replica)"
    print(
        f"\nkill test: {sequences * steps} steps in {elapsed:.1f} s, killed at step {moment}, {sum(recovered)} resends "
        f"({sum(recovered[i] for i in tokens)} of the token model's sequences)"
    )
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)
    replacement = ray_server.replica_pids(2)  # Serve started another replica in its place
    assert len(replacement) == 2 and victim not in replacement


def test_a_sampled_generation_in_a_sequence_runs_on_its_replica(ray_server, chars):
    """NAME-generate's infer route with a sequence_id, on the replicas: the start generates from the
    prompt, the next request goes on from the state after it (the runtime's tokens: the prompt
    teacher-forced, then sampled); the answers carry tokens and the version, no state (not failed over)."""
    from toolkit.serving.generation_settings import GenerationSettings

    from .test_generation import CATEGORY, reference

    first = GenerationSettings("temperature", temperature=0.8, seed=31, max_tokens=9)
    second = GenerationSettings("greedy", max_tokens=6)
    p1, p2 = [5, 1, 8], [2]
    requests = [
        (p1, {"temperature": 0.8, "seed": 31, "max_tokens": 9}, {"sequence_start": True}),
        (p2, {"max_tokens": 6}, {"sequence_end": True}),
    ]
    client = grpc_client.InferenceServerClient(f"127.0.0.1:{ray_server.grpc_port}")
    answers = []
    for prompt, parameters, flags in requests:
        inputs = tensors(grpc_client, {"token": np.array([prompt], np.int64), "category": CATEGORY})
        result = client.infer(f"{CHARS}-generate", inputs, parameters=parameters, sequence_id="gen-1", **flags)
        response = result.get_response()
        assert [output.name for output in response.outputs] == ["tokens"]
        answers.append((result.as_numpy("tokens")[0].tolist(), response.parameters["sequence_version"].int64_param))
    (one, v1), (two, v2) = answers
    assert one == reference(chars, p1, first)[0] and (v1, v2) == (1, 2)
    assert two == reference(chars, [*p1, *one, *p2], second)[0]

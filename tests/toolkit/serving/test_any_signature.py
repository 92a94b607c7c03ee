"""Every model kind the README shows, served by one real server on loopback and talked to with
tritonclient over HTTP and gRPC: the seed's Elman, the GRU and LSTM cell folders, the two-LSTMCell
forecaster (four states), the two-input wave generator (an FP32 value and an INT64 wave token,
batch-first) and the character generator (an INT64 token, nn.GRU's (layers, batch, hidden) state,
sampled feedback). For each: honest metadata, a stateless step equal to `runtime.Model.step`, a
server-held sequence equal to a `runtime.Stream`, predict equal to `Model.predict`, generate
(identity feedback) equal to `Model.generate`, and a bad datatype, shape or token id answered 400
with one line; a format 2 sequence resumed from --state-dir. Tiny models with fixed seeds, at
batch sizes other than the export example's."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import runtime
from tests.conftest import COMMITTED, REPO

pytest.importorskip("uvicorn", reason="the serve extra is not installed")
http = pytest.importorskip("tritonclient.http", reason="tritonclient (dev extra) is not installed")
grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (dev extra) is not installed")

from tritonclient.utils import InferenceServerException  # noqa: E402

from toolkit.serving import Server, Settings  # noqa: E402
from toolkit.serving.core import CALL_HANDLERS, GENERATE  # noqa: E402

KINDS = ("elman", "gru", "lstm", "forecaster", "waves", "chars")
PROTOCOLS = ("http", "grpc")
BATCH, STEPS = 3, 5  # the export example is batch 1 (the seed's) or 2 (export_module's probe)


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"served_{name}", REPO / "examples" / name / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_folders(root) -> dict:
    """{kind: folder}: the seed's committed Elman; GRU and LSTM trained two epochs (seed 2);
    the README's forecaster (hidden 4), wave generator and character generator at seeded
    initial weights (the server must answer as the runtime does, whatever the weights)."""
    import torch

    from export import export_folder, export_module
    from rnn.config import TrainConfig
    from rnn.train import train_folder

    folders = {"elman": COMMITTED}
    for cell in ("gru", "lstm"):
        folder = root / cell
        train_folder(TrainConfig(cell=cell, epochs=2, seed=2, hidden_size=5), folder)
        folders[cell] = export_folder(folder)
    forecaster = load_example("forecaster")
    torch.manual_seed(0)
    states = [(name, 4) for name in ("h1", "c1", "h2", "c2")]
    folders["forecaster"] = export_module(
        forecaster.Forecaster(hidden=4), root / "forecaster", input_size=1, output_size=1, states=states
    )
    for kind, example in (("waves", "two_inputs"), ("chars", "char_generator")):
        module = load_example(example)
        torch.manual_seed(1)
        folders[kind] = export_module(module.make(), root / kind, **module.SIGNATURE)
    return folders


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return build_folders(tmp_path_factory.mktemp("kinds"))


@pytest.fixture(scope="module")
def models(folders):
    return {kind: runtime.load(folder) for kind, folder in folders.items()}


@pytest.fixture(scope="module")
def server(folders):
    started = Server(list(folders.items()), http_port=0, grpc_port=0, settings=Settings(), say=lambda m: None)
    started.start()
    yield started
    started.stop()


# ---- helpers -------------------------------------------------------------------------------


def step_inputs(model: runtime.Model, batch: int, seed: int, steps: int | None = None) -> dict[str, np.ndarray]:
    """Random inputs of every input of ``model``: token ids across the vocabulary, values in
    (-1, 1); with ``steps`` as sequences in the model's layout."""
    rng = np.random.default_rng(seed)
    lead = (batch,) if steps is None else ((batch, steps) if model.layout == "batch_first" else (steps, batch))
    inputs = {}
    for spec in model.inputs:
        if spec.is_tokens:
            inputs[spec.name] = rng.integers(0, spec.vocabulary, lead, dtype=np.int64)
        else:
            inputs[spec.name] = rng.uniform(-1, 1, (*lead, *spec.sizes)).astype(np.float32)
    return inputs


def random_state(model: runtime.Model, batch: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.uniform(-0.5, 0.5, s.shape_for(batch)).astype(np.float32) for s in model.states)


def as_dict(model: runtime.Model, ys) -> dict[str, np.ndarray]:
    return dict(ys) if isinstance(ys, dict) else {model.output_name: ys}


def client(server, protocol: str):
    if protocol == "http":
        return http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    return grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")


def infer(connection, protocol: str, name: str, inputs: dict[str, np.ndarray], **options) -> dict[str, np.ndarray]:
    """Every output of ``name`` for ``inputs`` (each sent as its numpy dtype's datatype)."""
    module = http if protocol == "http" else grpc
    tensors = []
    for tensor_name, array in inputs.items():
        datatype = {np.float32: "FP32", np.int64: "INT64", np.float64: "FP64", np.int32: "INT32"}[array.dtype.type]
        tensor = module.InferInput(tensor_name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = connection.infer(name, tensors, **options)
    response = result.get_response()
    names = [o["name"] for o in response["outputs"]] if protocol == "http" else [o.name for o in response.outputs]
    return {output: result.as_numpy(output) for output in names}


def state_inputs(model: runtime.Model, state) -> dict[str, np.ndarray]:
    return dict(zip(model.state_names, state))


def assert_answer(model: runtime.Model, answer: dict, ys, state) -> None:
    expected = {**as_dict(model, ys), **dict(zip(model.state_outputs, state))}
    assert set(answer) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(answer[name], value, err_msg=name)


def sampled_generate_plugged(model: runtime.Model) -> bool:
    handler = CALL_HANDLERS.get(GENERATE)
    return handler is not None and handler.serves(model)


# ---- metadata ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metadata_names_every_input_output_and_state_with_its_real_shape(server, models, protocol):
    with client(server, protocol) as connection:
        for kind, model in models.items():
            metadata = connection.get_model_metadata(kind)
            if protocol == "grpc":
                inputs = [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs]
                outputs = [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs]
            else:
                inputs = [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]]
                outputs = [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]]
            wire = lambda spec: [-1 if d == "batch" else d for d in spec.shape]  # noqa: E731
            wanted_inputs = [(t.name, "INT64" if t.is_tokens else "FP32", wire(t)) for t in model.inputs]
            wanted_inputs += [(s.name, "FP32", wire(s)) for s in model.states]
            wanted_outputs = [(t.name, "FP32", wire(t)) for t in model.outputs]
            wanted_outputs += [(o, "FP32", wire(s)) for o, s in zip(model.state_outputs, model.states)]
            assert inputs == wanted_inputs and outputs == wanted_outputs, kind
            generate = kind != "chars" or sampled_generate_plugged(model)
            assert connection.is_model_ready(f"{kind}-predict") and connection.is_model_ready(f"{kind}-generate") == (
                generate
            )
    assert models["chars"].states[0].shape == (2, "batch", 64)  # the batch axis is not axis 0 here


def test_token_vocabularies_layout_and_state_axes_are_parameters_over_both_protocols(server, models):
    with client(server, "http") as connection:
        parameters = connection.get_model_metadata("chars")["parameters"]
        assert "parameters" not in connection.get_model_metadata("elman")  # the classic metadata is as it was
    vocabulary = str(models["chars"].inputs[0].vocabulary)
    assert parameters["vocabulary_size.char"] == parameters["vocabulary_size.logits"] == vocabulary
    assert parameters["batch_axis.h"] == "1" and parameters["layout"] == "time_first"
    with client(server, "grpc") as connection:
        config = connection.get_model_config("waves-predict").config
        assert config.parameters["vocabulary_size.wave"].string_value == "2"
        assert config.parameters["layout"].string_value == "batch_first"
        assert config.parameters["feedback"].string_value == "next_value -> value (identity)"
        assert [(i.name, i.data_type, list(i.dims), i.optional) for i in config.input] == [
            ("value", 11, [-1, -1, 1], False),  # TYPE_FP32, (batch, steps, 1): batch-first
            ("wave", 9, [-1, -1], False),  # TYPE_INT64
            ("h", 11, [-1, 32], True),
            ("c", 11, [-1, 32], True),
        ]


# ---- stateless: step, predict, generate ---------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_stateless_step_is_the_runtimes_step(server, models, kind, protocol):
    model = models[kind]
    x = step_inputs(model, BATCH, seed=1)
    state = random_state(model, BATCH, seed=2)
    with client(server, protocol) as connection:
        assert_answer(model, infer(connection, protocol, kind, x), *model.step(x))  # absent: the initial state
        answer = infer(connection, protocol, kind, {**x, **state_inputs(model, state)})
    assert_answer(model, answer, *model.step(x, state))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
def test_predict_is_the_runtimes_teacher_forced_predict_in_the_models_layout(server, models, kind, protocol):
    model = models[kind]
    xs = step_inputs(model, BATCH, seed=3, steps=STEPS)
    state = random_state(model, BATCH, seed=4)
    with client(server, protocol) as connection:
        answer = infer(connection, protocol, f"{kind}-predict", {**xs, **state_inputs(model, state)})
    assert_answer(model, answer, *model.predict(xs, state))
    leading = answer[model.output_name].shape[:2]
    assert leading == ((BATCH, STEPS) if model.layout == "batch_first" else (STEPS, BATCH))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", [k for k in KINDS if k != "chars"])
def test_generate_is_the_runtimes_closed_loop_with_held_inputs(server, models, kind, protocol):
    model = models[kind]
    x0 = step_inputs(model, BATCH, seed=5)
    steps = np.array([7], np.int64)
    with client(server, protocol) as connection:
        answer = infer(connection, protocol, f"{kind}-generate", {**x0, "steps": steps})
    assert_answer(model, answer, *model.generate(x0, 7))
    if kind == "waves":  # the wave token is held: each row draws its own wave
        assert answer["next_value"].shape == (BATCH, 7, 1)


# ---- sequences -----------------------------------------------------------------------------


def one_stream(model: runtime.Model, x: dict[str, np.ndarray], row: int) -> dict:
    """Row ``row`` of batched inputs as one stream's inputs for `runtime.Stream.push`."""
    return {name: (int(value[row]) if value.dtype == np.int64 else value[row]) for name, value in x.items()}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_sequence_of_steps_is_a_runtime_stream_and_a_start_may_carry_the_state(server, models, kind, protocol):
    model = models[kind]
    start_state = random_state(model, 1, seed=6)
    stream = runtime.Stream(model, start_state)
    key = f"{kind}-{protocol}-steps"
    with client(server, protocol) as connection:
        for t in range(STEPS):
            x = step_inputs(model, 1, seed=10 + t)
            options = {"sequence_id": key, "sequence_start": t == 0, "sequence_end": t == STEPS - 1}
            sent = {**x, **state_inputs(model, start_state)} if t == 0 else x
            answer = infer(connection, protocol, kind, sent, **options)
            expected = as_dict(model, stream.push(one_stream(model, x, 0)))
            for name, value in expected.items():
                np.testing.assert_array_equal(answer[name][0], value, err_msg=f"{name} at step {t}")
            for name, spec, value in zip(model.state_outputs, model.states, stream.state):
                np.testing.assert_array_equal(np.moveaxis(answer[name], spec.batch_axis, 0)[0], value)


@pytest.mark.parametrize("kind", ["forecaster", "waves", "chars"])
def test_predict_and_generate_in_a_sequence_continue_its_state(server, models, kind):
    model = models[kind]
    key = f"{kind}-mixed"
    x = step_inputs(model, 1, seed=20)
    xs = step_inputs(model, 1, seed=21, steps=4)
    with client(server, "http") as connection:
        infer(connection, "http", kind, x, sequence_id=key, sequence_start=True)
        answer = infer(connection, "http", f"{kind}-predict", xs, sequence_id=key)
        _, state = model.step(x)
        ys, state = model.predict(xs, state)
        assert_answer(model, answer, ys, state)
        if kind != "chars":
            answer = infer(
                connection, "http", f"{kind}-generate", {**x, "steps": np.array([3], np.int64)}, sequence_id=key
            )
            assert_answer(model, answer, *model.generate(x, 3, state))
            state = model.generate(x, 3, state)[1]
        answer = infer(connection, "http", kind, x, sequence_id=key, sequence_end=True)
    assert_answer(model, answer, *model.step(x, state))


# ---- mistakes --------------------------------------------------------------------------------


def bad_requests(model: runtime.Model, kind: str) -> list[tuple[dict, str]]:
    """(inputs, words of the one-line error) of requests every front answers 400."""
    x = step_inputs(model, 2, seed=30)
    token = next((t for t in model.inputs if t.is_tokens), None)
    value = next((t for t in model.inputs if not t.is_tokens), None)
    cases = []
    if token is not None:
        cases.append(({**x, token.name: x[token.name].astype(np.float32)}, f"input '{token.name}' must be INT64"))
        out_of_range = x[token.name].copy()
        out_of_range[1] = token.vocabulary
        cases.append(({**x, token.name: out_of_range}, f"token id {token.vocabulary}"))
        cases.append(({**x, token.name: x[token.name][:, None]}, f"input '{token.name}' must have shape [-1]"))
    if value is not None:
        cases.append(({**x, value.name: x[value.name].astype(np.float64)}, f"input '{value.name}' must be FP32"))
        cases.append(({**x, value.name: x[value.name][:1]}, "has batch") if len(model.inputs) > 1 else None)
    state = random_state(model, 2, seed=31)
    spec = model.states[0]
    wrong_batch = np.concatenate([state[0], state[0]], axis=spec.batch_axis)
    cases.append(({**x, **state_inputs(model, (wrong_batch, *state[1:]))}, f"input '{spec.name}' has batch 4"))
    return [case for case in cases if case is not None]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_datatype_shape_or_token_id_is_a_400_of_one_line(server, models, kind, protocol):
    model = models[kind]
    with client(server, protocol) as connection:
        for inputs, words in bad_requests(model, kind):
            with pytest.raises(InferenceServerException) as excinfo:
                infer(connection, protocol, kind, inputs)
            message = excinfo.value.message()
            assert words in message and "\n" not in message, (kind, message)
            assert excinfo.value.status() == ("400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT")


# ---- --state-dir -------------------------------------------------------------------------------


def test_format_2_sequences_are_saved_on_stop_and_resumed_from_the_state_dir(folders, models, tmp_path):
    served = [(kind, folders[kind]) for kind in ("waves", "chars")]
    streams = {kind: runtime.Stream(models[kind]) for kind, _ in served}

    def steps(server, seeds) -> None:
        with client(server, "grpc") as connection:
            for seed in seeds:
                for kind, stream in streams.items():
                    model = models[kind]
                    x = step_inputs(model, 1, seed=seed)
                    answer = infer(connection, "grpc", kind, x, sequence_id=f"kept-{kind}", sequence_start=seed == 40)
                    expected = as_dict(model, stream.push(one_stream(model, x, 0)))
                    for name, value in expected.items():
                        np.testing.assert_array_equal(answer[name][0], value, err_msg=f"{kind} {name} seed {seed}")

    options = dict(http_port=0, grpc_port=0, settings=Settings(), say=lambda m: None, state_dir=tmp_path)
    first = Server(served, **options).start()
    try:
        steps(first, (40, 41, 42))
    finally:
        first.stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chars.sequences.json", "waves.sequences.json"]
    second = Server(served, **options).start()
    try:
        assert all(len(second.engine.served[kind].sequences) == 1 for kind, _ in served)
        steps(second, (43, 44))  # the held states went on where the first server stopped
    finally:
        second.stop()


# ---- SequenceClient: the client-held failover for any signature ---------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", ["waves", "chars"])
def test_sequence_client_resends_a_format_2_state_after_the_server_lost_it(server, models, kind, protocol):
    """Named and token inputs, layered states: the server forgets the sequence (as a replica's
    death does); the client is refused once, resends its acknowledged state and goes on bit for
    bit as a runtime Stream."""
    import asyncio

    from toolkit.serving.client import SequenceClient

    model = models[kind]
    key = f"client-{kind}-{protocol}"
    stream = runtime.Stream(model)
    xs = [step_inputs(model, 1, seed=50 + t) for t in range(6)]

    async def go():
        if protocol == "http":
            import tritonclient.http.aio as aio

            connection = aio.InferenceServerClient(f"127.0.0.1:{server.http_port}")
            metadata, states = await connection.get_model_metadata(kind), None
        else:
            import tritonclient.grpc.aio as aio

            connection = aio.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
            metadata, states = await connection.get_model_metadata(kind, as_json=True), len(model.states)
        try:
            sequence = SequenceClient(connection, kind, key, metadata, backoff_s=0.0, states=states)
            assert sequence.state_inputs == list(model.state_names)
            answers = [await sequence.step(x) for x in xs[:3]]
            server.engine.served[kind].forget(key, "lost (the test dropped it)")
            answers += [await sequence.step(x) for x in xs[3:]]
            assert sequence.recoveries == 1
            return answers
        finally:
            await connection.close()

    for t, (x, answer) in enumerate(zip(xs, asyncio.run(go()))):
        expected = as_dict(model, stream.push(one_stream(model, x, 0)))
        got = answer if isinstance(answer, dict) else {model.output_name: answer}
        for name, value in expected.items():
            np.testing.assert_array_equal(got[name][0], value, err_msg=f"{name} at step {t}")


# ---- plain JSON (curl) ---------------------------------------------------------------------------


def test_plain_json_token_ids_and_a_layered_state_as_curl_sends_them(server, models):
    """The JSON form of the protocol (no binary extension): INT64 token ids as numbers, a
    (layers, batch, hidden) state flat in row-major order; an id out of range is a 400 of one line."""
    import http.client
    import json

    model = models["chars"]
    tokens = np.array([4, 0, 7], np.int64)
    state = random_state(model, 3, seed=60)[0]  # (2, 3, 64)

    def post(document) -> tuple[int, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
        try:
            body = json.dumps(document).encode()
            connection.request("POST", "/v2/models/chars/infer", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    inputs = [
        {"name": "char", "datatype": "INT64", "shape": [3], "data": tokens.tolist()},
        {"name": "h", "datatype": "FP32", "shape": list(state.shape), "data": state.reshape(-1).tolist()},
    ]
    status, answer = post({"inputs": inputs})
    assert status == 200, answer
    outputs = {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in answer["outputs"]}
    logits, (h_out,) = model.step({"char": tokens}, (state,))
    np.testing.assert_array_equal(outputs["logits"], logits)
    np.testing.assert_array_equal(outputs["h_out"], h_out)
    assert answer["outputs"][1]["shape"] == [2, 3, 64]
    vocabulary = int(model.inputs[0].vocabulary)
    inputs[0]["data"] = [4, vocabulary, 7]
    status, answer = post({"inputs": inputs})
    assert status == 400 and list(answer) == ["error"] and "\n" not in answer["error"]
    assert f"token id {vocabulary}" in answer["error"] and "'char'" in answer["error"]


# ---- dynamic batching ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["waves", "chars"])
def test_steps_of_many_format_2_sequences_share_batched_runs_bit_for_bit(folders, models, kind):
    """8 sequences stepping together (named and token inputs, layered states) run as one
    StreamPool.step per tick; each answer is its own runtime Stream's."""
    import asyncio

    from toolkit.serving import Engine
    from toolkit.serving.protocol import InferRequest

    model = models[kind]
    made = Engine([(kind, folders[kind])], Settings(max_queue_delay_us=2000))
    streams = [runtime.Stream(model) for _ in range(8)]
    batches = []

    async def go():
        made.start()
        pool = made.served[kind].pool
        step = pool.step
        pool.step = lambda ids, xs: batches.append(len(ids)) or step(ids, xs)
        for t in range(4):
            xs = [step_inputs(model, 1, seed=100 * t + i) for i in range(8)]
            requests = [
                made.infer(InferRequest(kind, x, parameters={"sequence_id": i + 1, "sequence_start": t == 0}), "test")
                for i, x in enumerate(xs)
            ]
            for i, (x, response) in enumerate(zip(xs, await asyncio.gather(*requests))):
                answer = dict(response.outputs)
                expected = as_dict(model, streams[i].push(one_stream(model, x, 0)))
                for name, value in expected.items():
                    np.testing.assert_array_equal(answer[name][0], value, err_msg=f"{name} of {i} at {t}")
                held = made.served[kind].held_state(made.served[kind].sequences[i + 1])
                for spec, value, row in zip(model.states, held, streams[i].state):
                    np.testing.assert_array_equal(np.moveaxis(value, spec.batch_axis, 0)[0], row)

    try:
        asyncio.run(go())
    finally:
        made.close()
    assert max(batches) == 8 and len(batches) == 4, batches  # 4 ticks of 8 steps, not 32 runs

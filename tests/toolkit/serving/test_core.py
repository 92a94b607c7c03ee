"""The protocol-neutral engine of `rnn serve`: served names, server-held sequences, the dynamic
batcher, limits, saving and restoring sequences. Driven directly on an asyncio loop; the fronts
have their own tests (test_http_api.py, test_grpc_api.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time

import numpy as np
import pytest

import runtime
from runtime.manifest import BATCH_FIRST, read_manifest, write_manifest
from tests.conftest import COMMITTED
from toolkit.serving.answer_size import Encoding, check_answer
from toolkit.serving.core import (
    Engine,
    Limits,
    Settings,
    artifact_folders,
    check_model_name,
    sequence_key,
)
from toolkit.serving.protocol import BadRequest, InferRequest, NotFound, TensorMetadata, TooLarge, Unavailable

MODEL = runtime.load(COMMITTED)


def run(coroutine):
    return asyncio.run(coroutine)


def engine(folders=None, **settings) -> Engine:
    made = Engine(folders or [("sine", COMMITTED)], Settings(**settings))
    return made


async def started(made: Engine) -> Engine:
    made.start()
    return made


def request(model="sine", x=None, outputs=None, **parameters) -> InferRequest:
    x = np.array([[0.25]], np.float32) if x is None else x
    return InferRequest(model, {"x": x}, outputs, parameters=parameters)


def values(response) -> dict[str, np.ndarray]:
    return dict(response.outputs)


# ---- names and metadata --------------------------------------------------------------------


def test_a_folder_offers_step_predict_and_generate_with_honest_metadata():
    made = engine()
    assert list(made.names) == ["sine", "sine-predict", "sine-generate"]
    step = made.lookup("sine").metadata()
    assert step["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "h", "datatype": "FP32", "shape": [-1, 6]},
    ]
    assert step["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "h_out", "datatype": "FP32", "shape": [-1, 6]},
    ]
    predict = made.lookup("sine-predict").metadata()
    assert predict["inputs"][0]["shape"] == [-1, -1, 1] and predict["outputs"][0]["shape"] == [-1, -1, 1]
    generate = made.lookup("sine-generate").metadata()
    assert [i["name"] for i in generate["inputs"]] == ["x", "steps", "h"]
    assert generate["inputs"][1] == {"name": "steps", "datatype": "INT64", "shape": [1]}
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        made.lookup("nope")
    with pytest.raises(NotFound, match="no version '2'"):
        made.lookup("sine", "2")
    assert made.lookup("sine", "1").name == "sine"


def test_every_state_tensor_of_an_lstm_is_an_input_and_an_output(cell_folder):
    cell, _, folder = cell_folder
    made = engine([("cell", folder)])
    model = runtime.load(folder)
    meta = made.lookup("cell").metadata()
    assert [i["name"] for i in meta["inputs"]] == ["x", *model.state_names]
    assert [o["name"] for o in meta["outputs"]] == ["y", *model.state_outputs]
    if cell == "lstm":
        assert len(model.state_names) == 2

    async def go():
        await started(made)
        x = np.array([[0.1], [0.2], [0.3]], np.float32)
        state = tuple(np.full((3, size), 0.05 * (i + 1), np.float32) for i, size in enumerate(model.state_sizes))
        inputs = {"x": x, **dict(zip(model.state_names, state))}
        got = values(await made.infer(InferRequest("cell", inputs), "test"))
        y, new_state = model.step(x, state)
        assert np.array_equal(got["y"], y)
        for name, expected in zip(model.state_outputs, new_state):
            assert np.array_equal(got[name], expected)
        # a sequence of a model with several state tensors: the server holds all of them
        stream = runtime.Stream(model)
        for t, value in enumerate(np.linspace(-1, 1, 20, dtype=np.float32)):
            got = values(
                await made.infer(request("cell", np.array([[value]]), sequence_id="s", sequence_start=t == 0), "t")
            )
            expected = stream.push(value)
            assert np.array_equal(got["y"][0], expected)
            for name, row in zip(model.state_outputs, stream.state):
                assert np.array_equal(got[name][0], row)

    run(go())


def test_model_names_are_checked_and_must_not_collide(tmp_path):
    assert check_model_name("sine_2.v-1") == "sine_2.v-1"
    for bad in ("", "a/b", "a b", ".hidden", "x" * 200, "é"):
        with pytest.raises(runtime.InputValueError):
            check_model_name(bad)
    with pytest.raises(runtime.ArtifactError, match="two served models are named 'a-predict'"):
        Engine([("a", COMMITTED), ("a-predict", COMMITTED)])


def test_a_repository_serves_every_artifact_folder_under_it(tmp_path):
    shutil.copytree(COMMITTED, tmp_path / "one")
    shutil.copytree(COMMITTED, tmp_path / "two")
    (tmp_path / "notes").mkdir()
    assert [name for name, _ in artifact_folders(tmp_path)] == ["one", "two"]
    with pytest.raises(runtime.ArtifactError, match="holds no artifact folder"):
        artifact_folders(tmp_path / "notes")


def test_a_folder_that_fails_to_load_is_not_ready_and_the_others_serve(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(COMMITTED, broken)
    data = bytearray((broken / "step.onnx").read_bytes())
    data[-3] ^= 0xFF
    (broken / "step.onnx").write_bytes(bytes(data))
    made = engine([("sine", COMMITTED), ("broken", broken)])
    assert not made.ready
    assert made.lookup("sine").ready and not made.lookup("broken").ready
    index = {entry["name"]: entry for entry in made.repository_index()}
    assert index["broken"]["state"] == "UNAVAILABLE" and "sha256" in index["broken"]["reason"]
    assert index["sine-generate"]["state"] == "READY"
    with pytest.raises(Unavailable, match="'broken' is not ready"):
        made.lookup("broken").metadata()

    async def go():
        await started(made)
        with pytest.raises(Unavailable, match="not ready"):
            await made.infer(request("broken"), "test")
        got = values(await made.infer(request("sine"), "test"))
        assert np.array_equal(got["y"], MODEL.step(np.array([[0.25]], np.float32))[0])

    run(go())


# ---- stateless requests ----------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3, 64, 300])
def test_stateless_steps_equal_the_runtime_bit_for_bit(batch):
    rng = np.random.default_rng(batch)
    x = rng.uniform(-1, 1, (batch, 1)).astype(np.float32)
    h = rng.uniform(-1, 1, (batch, 6)).astype(np.float32)

    async def go():
        made = await started(engine())
        with_state = values(await made.infer(InferRequest("sine", {"x": x, "h": h}), "test"))
        initial = values(await made.infer(InferRequest("sine", {"x": x}, ["y"]), "test"))
        return with_state, initial

    with_state, initial = run(go())
    y, (h_out,) = MODEL.step(x, (h,))
    assert np.array_equal(with_state["y"], y) and np.array_equal(with_state["h_out"], h_out)
    assert list(initial) == ["y"] and np.array_equal(initial["y"], MODEL.step(x)[0])


def test_predict_and_generate_equal_the_runtime():
    rng = np.random.default_rng(5)
    xs = rng.uniform(-1, 1, (50, 3, 1)).astype(np.float32)
    h = rng.uniform(-1, 1, (3, 6)).astype(np.float32)

    async def go():
        made = await started(engine())
        predicted = values(await made.infer(InferRequest("sine-predict", {"x": xs, "h": h}), "test"))
        x0 = xs[0]
        steps = np.array([200], np.int64)
        generated = values(await made.infer(InferRequest("sine-generate", {"x": x0, "steps": steps}), "test"))
        return predicted, generated

    predicted, generated = run(go())
    ys, (h_t,) = MODEL.predict(xs, (h,))
    assert np.array_equal(predicted["y"], ys) and np.array_equal(predicted["h_out"], h_t)
    gs, (g_t,) = MODEL.generate(xs[0], 200)
    assert np.array_equal(generated["y"], gs) and np.array_equal(generated["h_out"], g_t)


# ---- sequences -----------------------------------------------------------------------------


def test_concurrent_sequences_are_batched_and_bit_identical_to_local_streams():
    count, steps = 64, 100
    rng = np.random.default_rng(11)
    inputs = rng.uniform(-1, 1, (count, steps)).astype(np.float32)

    async def one(made, index):
        key = index + 1 if index % 2 else f"seq-{index}"
        ys = []
        for t in range(steps):
            response = await made.infer(
                request(
                    x=inputs[index, t].reshape(1, 1),
                    outputs=["y"],
                    sequence_id=key,
                    sequence_start=t == 0,
                    sequence_end=t == steps - 1,
                ),
                "test",
            )
            ys.append(values(response)["y"][0, 0])
        return np.array(ys, np.float32)

    async def go():
        made = await started(engine())
        results = await asyncio.gather(*(one(made, i) for i in range(count)))
        return made, results

    made, results = run(go())
    for index, got in enumerate(results):
        stream = runtime.Stream(MODEL)
        expected = np.array([stream.push(v)[0] for v in inputs[index]], np.float32)
        assert np.array_equal(got, expected), f"sequence {index}"
    runs = made.metrics.value("rnn_batch_size_count", {"model": "sine"})
    rows = made.metrics.value("rnn_batch_size_sum", {"model": "sine"})
    assert rows == count * steps and rows / runs > 8  # 64 sequences in step: most runs batch many
    assert made.metrics.value("rnn_live_sequences", {"model": "sine"}) == 0  # every one ended


def test_a_sequence_needs_a_start_and_an_unknown_ended_or_expired_id_is_an_error_naming_it():
    async def go():
        made = await started(engine(sequence_idle_timeout_s=5.0))
        with pytest.raises(BadRequest, match="no live sequence 42: it was never started"):
            await made.infer(request(sequence_id=42), "test")
        await made.infer(request(sequence_id="abc", sequence_start=True), "test")
        await made.infer(request(sequence_id="abc", sequence_end=True), "test")
        with pytest.raises(BadRequest, match="no live sequence 'abc': it ended"):
            await made.infer(request(sequence_id="abc"), "test")
        await made.infer(request(sequence_id=7, sequence_start=True), "test")
        assert made.expire_idle() == 0
        assert made.expire_idle(now=time.monotonic() + 10.0) == 1
        with pytest.raises(BadRequest, match="no live sequence 7: it expired after 5 s idle"):
            await made.infer(request(sequence_id=7), "test")
        assert made.metrics.value("rnn_sequences_expired_total", {"model": "sine"}) == 1
        # ints and strings are different ids, as in Triton
        await made.infer(request(sequence_id=8, sequence_start=True), "test")
        with pytest.raises(BadRequest, match="no live sequence '8'"):
            await made.infer(request(sequence_id="8"), "test")

    run(go())


def test_a_start_of_a_live_id_begins_it_again():
    async def go():
        made = await started(engine())
        first = values(await made.infer(request(sequence_id=3, sequence_start=True), "test"))
        await made.infer(request(sequence_id=3), "test")
        again = values(await made.infer(request(sequence_id=3, sequence_start=True), "test"))
        assert np.array_equal(first["y"], again["y"]) and np.array_equal(first["h_out"], again["h_out"])

    run(go())


def test_multi_step_requests_continue_a_sequence_from_its_state():
    rng = np.random.default_rng(3)
    xs = rng.uniform(-1, 1, (30, 1, 1)).astype(np.float32)

    async def go():
        made = await started(engine())
        await made.infer(request(x=xs[0], sequence_id=9, sequence_start=True), "test")
        predicted = values(
            await made.infer(InferRequest("sine-predict", {"x": xs[1:]}, parameters={"sequence_id": 9}), "t")
        )
        generated = values(
            await made.infer(
                InferRequest("sine-generate", {"x": xs[0], "steps": np.array([40])}, parameters={"sequence_id": 9}), "t"
            )
        )
        last = values(await made.infer(request(x=xs[5], sequence_id=9, sequence_end=True), "test"))
        return predicted, generated, last

    predicted, generated, last = run(go())
    _, state = MODEL.step(xs[0])
    ys, state = MODEL.predict(xs[1:], state)
    assert np.array_equal(predicted["y"], ys) and np.array_equal(predicted["h_out"], state[0])
    gs, state = MODEL.generate(xs[0], 40, state)
    assert np.array_equal(generated["y"], gs)
    y, state = MODEL.step(xs[5], state)
    assert np.array_equal(last["y"], y) and np.array_equal(last["h_out"], state[0])


# ---- bad requests leave every sequence alone -----------------------------------------------------

BAD = [
    (lambda: request(x=np.array([[np.nan]], np.float32)), "non-finite|NaN|finite"),
    (lambda: request(x=np.array([[0.5]], np.float64)), "must be FP32, got FP64"),
    (lambda: request(x=np.zeros((1, 2), np.float32)), r"shape \[-1, 1\]"),
    (lambda: request(x=np.zeros((1, 1, 1), np.float32)), "shape"),
    (lambda: InferRequest("sine", {"x": np.zeros((1, 1), np.float32), "q": np.zeros(1, np.float32)}), "no input 'q'"),
    (lambda: InferRequest("sine", {"h": np.zeros((1, 6), np.float32)}), "needs input 'x'"),
    (lambda: request(outputs=["z"]), "no output 'z'"),
    (lambda: request(outputs=["y", "y"]), "requested twice"),
    (lambda: request(sequence_id=1.5), "sequence_id' must be an integer or a string, got float"),
    (lambda: request(sequence_id=True), "got bool"),
    (lambda: request(sequence_id=[1]), "got list"),
    (lambda: request(sequence_id=-4), "unsigned 64-bit"),
    (lambda: request(sequence_id=2**64), "unsigned 64-bit"),
    (lambda: request(sequence_start="yes"), "'sequence_start' must be a boolean"),
    (lambda: request(sequence_end=True), "need a 'sequence_id'"),
    (lambda: request(sequence_id=555), "no live sequence 555"),
    (
        lambda: InferRequest(
            "sine",
            {"x": np.zeros((1, 1), np.float32), "h": np.zeros((1, 6), np.float32)},
            parameters={"sequence_id": 77},
        ),
        "held by the server",
    ),
    (lambda: request(x=np.zeros((2, 1), np.float32), sequence_id=77), "batch must be 1"),
    (lambda: InferRequest("sine", {"x": np.zeros((2, 1), np.float32), "h": np.zeros((3, 6), np.float32)}), "batch 3"),
    (lambda: InferRequest("sine-generate", {"x": np.zeros((1, 1), np.float32), "steps": np.array([0])}), "1 to"),
    (lambda: InferRequest("sine-generate", {"x": np.zeros((1, 1), np.float32), "steps": np.array([1.0])}), "INT64"),
    (lambda: InferRequest("nope", {}), "unknown model"),
]


def test_every_bad_request_is_one_line_and_leaves_live_sequences_untouched():
    rng = np.random.default_rng(1)
    inputs = rng.uniform(-1, 1, len(BAD) + 1).astype(np.float32)

    async def go():
        made = await started(engine())
        stream = runtime.Stream(MODEL)
        got = values(await made.infer(request(x=inputs[:1].reshape(1, 1), sequence_id=77, sequence_start=True), "t"))
        assert np.array_equal(got["y"][0], stream.push(inputs[0]))
        for index, (make, match) in enumerate(BAD):
            with pytest.raises((BadRequest, NotFound)) as caught:
                await made.infer(make(), "test")
            assert "\n" not in str(caught.value)
            assert caught.match(match), (index, str(caught.value))
            got = values(await made.infer(request(x=inputs[index + 1].reshape(1, 1), sequence_id=77), "test"))
            assert np.array_equal(got["y"][0], stream.push(inputs[index + 1])), f"after bad request {index}"
        failures = made.metrics.value(
            "rnn_request_failures_total", {"model": "sine", "protocol": "test", "status": "400"}
        )
        assert failures == sum(make().model == "sine" for make, _ in BAD)  # counted per served name

    run(go())


def test_limits_on_elements_steps_and_live_sequences():
    async def go():
        made = await started(engine(limits=Limits(max_elements=100, max_steps=50, max_sequences=2)))
        with pytest.raises(TooLarge, match="101 elements, the limit is 100"):
            await made.infer(request(x=np.zeros((101, 1), np.float32)), "test")
        with pytest.raises(TooLarge, match="51 steps, the limit is 50"):
            await made.infer(InferRequest("sine-predict", {"x": np.zeros((51, 1, 1), np.float32)}), "test")
        with pytest.raises(BadRequest, match="1 to 50"):
            await made.infer(
                InferRequest("sine-generate", {"x": np.zeros((1, 1), np.float32), "steps": np.array([51])}), "t"
            )
        await made.infer(request(sequence_id=1, sequence_start=True), "test")
        await made.infer(request(sequence_id=2, sequence_start=True), "test")
        with pytest.raises(Unavailable, match="maximum of 2 live sequences"):
            await made.infer(request(sequence_id=3, sequence_start=True), "test")

    run(go())


def test_sequence_keys():
    assert sequence_key(None) is None and sequence_key(0) is None and sequence_key("") is None
    assert sequence_key(2**64 - 1) == 2**64 - 1 and sequence_key("a") == "a"
    with pytest.raises(BadRequest, match="longer than 256"):
        sequence_key("x" * 257)


# ---- saving and restoring --------------------------------------------------------------------------


def test_saved_sequences_restore_into_a_new_engine_and_continue_exactly():
    rng = np.random.default_rng(8)
    inputs = rng.uniform(-1, 1, (3, 40)).astype(np.float32)
    keys = [5, "five", 2**63]

    async def first_half():
        made = await started(engine())
        for t in range(20):
            for key, row in zip(keys, inputs):
                await made.infer(request(x=row[t].reshape(1, 1), sequence_id=key, sequence_start=t == 0), "test")
        return made.saved_sequences()

    async def second_half(saved):
        made = await started(engine())
        for key, data, version in saved["sine"]:
            made.restore_sequence("sine", key, data, version)
        outputs = {key: [] for key in keys}
        for t in range(20, 40):
            for key, row in zip(keys, inputs):
                asked = request(x=row[t].reshape(1, 1), sequence_id=key, sequence_version=t)  # versions restored
                got = values(await made.infer(asked, "test"))
                outputs[key].append(got["y"][0, 0])
        return outputs

    saved = run(first_half())
    assert sorted(map(str, (key for key, _, _ in saved["sine"]))) == sorted(map(str, keys))
    assert {version for _, _, version in saved["sine"]} == {20}
    outputs = run(second_half(saved))
    for key, row in zip(keys, inputs):
        stream = runtime.Stream(MODEL)
        expected = [stream.push(v)[0] for v in row]
        assert np.array_equal(np.array(outputs[key], np.float32), np.array(expected[20:], np.float32))


def test_a_state_saved_from_another_model_is_refused(cell_folder):
    _, _, folder = cell_folder
    made = engine([("sine", COMMITTED), ("cell", folder)])

    async def go():
        made.start()
        await made.infer(request(sequence_id=1, sequence_start=True), "test")
        ((key, data, _version),) = made.saved_sequences()["sine"]
        with pytest.raises(runtime.ToolkitError, match="different model"):
            made.restore_sequence("cell", key, data)
        with pytest.raises(runtime.ArtifactError, match="no ready model 'zzz'"):
            made.restore_sequence("zzz", key, data)

    run(go())


# ---- nothing of a sequence changes unless its request succeeds (review findings) -------------------


def test_a_sequence_step_can_ask_for_the_state_output_alone():
    async def go():
        made = await started(engine())
        got = values(await made.infer(request(outputs=["h_out"], sequence_id=6, sequence_start=True), "test"))
        assert list(got) == ["h_out"]
        _, (h,) = MODEL.step(np.array([[0.25]], np.float32))
        assert np.array_equal(got["h_out"], h)

    run(go())


def test_a_refused_start_leaves_a_live_sequence_as_it_was_and_opens_no_new_one():
    nan = np.array([[np.nan]], np.float32)

    async def go():
        made = await started(engine())
        stream = runtime.Stream(MODEL)
        for value in (0.1, 0.2, 0.3):
            got = values(
                await made.infer(
                    request(x=np.array([[value]], np.float32), sequence_id=2, sequence_start=value == 0.1), "t"
                )
            )
            assert np.array_equal(got["y"][0], stream.push(value))
        with pytest.raises(BadRequest, match="NaN or infinity$"):  # no hint about options a server does not have
            await made.infer(request(x=nan, sequence_id=2, sequence_start=True), "test")
        got = values(await made.infer(request(x=np.array([[0.4]], np.float32), sequence_id=2), "test"))
        assert np.array_equal(got["y"][0], stream.push(0.4))  # continued, not restarted
        with pytest.raises(BadRequest):
            await made.infer(
                InferRequest(
                    "sine-predict",
                    {"x": np.full((3, 1, 1), np.nan, np.float32)},
                    parameters={"sequence_id": 2, "sequence_start": True},
                ),
                "test",
            )
        got = values(await made.infer(request(x=np.array([[0.5]], np.float32), sequence_id=2), "test"))
        assert np.array_equal(got["y"][0], stream.push(0.5))
        with pytest.raises(BadRequest):
            await made.infer(request(x=nan, sequence_id=3, sequence_start=True), "test")
        with pytest.raises(BadRequest, match="no live sequence 3: it was never started: its start request failed"):
            await made.infer(request(sequence_id=3), "test")
        assert made.metrics.value("rnn_live_sequences", {"model": "sine"}) == 1

    run(go())


def test_an_answer_over_the_size_limit_is_refused_before_anything_runs():
    """The fronts' check (`answer_size.check_answer`, before `Engine.infer`): 1000 steps of y and
    the new state, 4,024 bytes of raw values, refused with a limit of 2048; the sequence goes on."""

    async def go():
        made = await started(engine(limits=Limits(max_body_bytes=2048)))
        stream = runtime.Stream(MODEL)
        got = values(
            await made.infer(request(x=np.array([[0.3]], np.float32), sequence_id=4, sequence_start=True), "t")
        )
        assert np.array_equal(got["y"][0], stream.push(0.3))
        big = InferRequest(
            "sine-generate",
            {"x": np.zeros((1, 1), np.float32), "steps": np.array([1000])},
            parameters={"sequence_id": 4},
        )
        raw_values = 4 * (1000 + MODEL.signature.state_bytes // 8)  # y each step, the new state once
        assert raw_values == 4024
        with pytest.raises(TooLarge, match="the answer would be up to [0-9]+ bytes, the limit is 2048") as refused:
            check_answer(made, big, "", Encoding(2048, binary_default=True))
        assert raw_values < int(str(refused.value).split()[6]) < raw_values + 2048  # the values and their headers
        got = values(await made.infer(request(x=np.array([[0.6]], np.float32), sequence_id=4), "test"))
        assert np.array_equal(got["y"][0], stream.push(0.6))

    run(go())


def test_a_start_that_waits_behind_the_end_of_the_same_id_begins_it_anew():
    async def go():
        made = await started(engine())
        await made.infer(request(sequence_id="z", sequence_start=True), "test")
        ending = request(x=np.array([[0.9]], np.float32), sequence_id="z", sequence_end=True)
        restart = request(x=np.array([[0.7]], np.float32), sequence_id="z", sequence_start=True)
        _, again = await asyncio.gather(made.infer(ending, "test"), made.infer(restart, "test"))
        assert np.array_equal(values(again)["y"][0], runtime.Stream(MODEL).push(0.7))
        assert "z" in made.served["sine"].sequences

    run(go())


def test_a_format_2_folder_is_served_and_sampled_generate_waits_for_its_plug_in(tmp_path, monkeypatch):
    """Named and token inputs, a layered state: the folder is ready with NAME and NAME-predict;
    its sampled NAME-generate is listed only once a handler is plugged in for it (the plug-in
    place of `core`), and then its requests go to that handler."""
    from export import export_module
    from tests.user_modules import CHAR_GRU_SIGNATURE, make_char_gru
    from toolkit.serving import core

    folder = export_module(make_char_gru(), tmp_path / "char", **CHAR_GRU_SIGNATURE)
    monkeypatch.delitem(core.CALL_HANDLERS, core.GENERATE, raising=False)  # as before any plug-in
    made = engine([("sine", COMMITTED), ("char", folder)])
    index = {entry["name"]: entry for entry in made.repository_index()}
    assert index["char"]["state"] == index["char-predict"]["state"] == "READY" and "char-generate" not in index
    model = runtime.load(folder)
    x = {"token": np.array([3, 10], np.int64), "category": np.eye(3, dtype=np.float32)[:2]}

    async def go():
        await started(made)
        answer = values(await made.infer(InferRequest("char", dict(x)), "test"))
        logits, state = model.step(x)
        assert np.array_equal(answer["logits"], logits) and np.array_equal(answer["h_out"], state[0])

    run(go())

    class Plugged:
        def serves(self, model):
            return model.signature.sampled

        def tensors(self, model):
            return (TensorMetadata("token", "INT64", (-1,)),), (TensorMetadata("tokens", "INT64", (-1, -1)),)

        async def run(self, engine, named, request):
            return [("tokens", request.inputs["token"].reshape(1, -1) + 1)], {"plugged": True}

    monkeypatch.setitem(core.CALL_HANDLERS, core.GENERATE, Plugged())
    plugged = engine([("sine", COMMITTED), ("char", folder)])
    assert plugged.lookup("char-generate").handler is not None and plugged.lookup("sine-generate").handler is None
    response = run(plugged.infer(InferRequest("char-generate", {"token": np.array([4], np.int64)}), "test"))
    assert values(response)["tokens"].tolist() == [[5]] and response.parameters == {"plugged": True}


def test_a_batch_first_classic_folder_is_served_in_its_layout(tmp_path):
    """Routed on `model.classic` (any layout): the seed's folder rewritten batch-first is served;
    predict takes and returns (batch, steps, n), its step limit counts its steps axis, generate
    answers (batch, steps, n), a sequence steps as the time-first folder does."""
    folder = tmp_path / "bf"
    shutil.copytree(COMMITTED, folder)
    write_manifest(folder, dataclasses.replace(read_manifest(folder), format_version=2, layout=BATCH_FIRST))
    model = runtime.load(folder)
    assert model.classic and model.layout == BATCH_FIRST
    made = engine([("bf", folder)], limits=Limits(max_steps=8))
    assert made.lookup("bf-generate").ready
    xs = np.sin(np.linspace(0, 3, 2 * 7, dtype=np.float32)).reshape(2, 7, 1)  # (batch 2, steps 7, 1)

    async def go():
        await started(made)
        answer = values(await made.infer(request("bf-predict", xs), "test"))
        want, want_state = model.predict(xs)
        assert answer["y"].shape == (2, 7, 1) and np.array_equal(answer["y"], want)
        assert np.array_equal(answer["h_out"], want_state[0])
        with pytest.raises(TooLarge, match="9 steps, the limit is 8"):
            await made.infer(request("bf-predict", np.zeros((1, 9, 1), np.float32)), "test")
        steps = np.array([5], np.int64)
        generated = InferRequest("bf-generate", {"x": xs[:, 0], "steps": steps})
        answer = values(await made.infer(generated, "test"))
        assert answer["y"].shape == (2, 5, 1) and np.array_equal(answer["y"], model.generate(xs[:, 0], 5)[0])
        first = values(await made.infer(request("bf", xs[:1, 0], sequence_id=1, sequence_start=True), "test"))
        assert np.array_equal(first["y"], MODEL.step(xs[:1, 0])[0])

    run(go())

"""The runtime on format 2 folders: named float and token inputs, several outputs, nn.GRU's
(layers, batch, hidden) state, batch-first sequences and sampled generation, against eager torch."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import runtime
from export import export_module
from runtime import Sampler
from runtime.errors import DtypeError, InputValueError, ShapeError
from runtime.fused import SAMPLING_CELLS_MIN_BATCH, SAMPLING_PARALLEL_MIN_BATCH
from runtime.manifest import BATCH_FIRST, read_manifest, write_manifest

from ..user_modules import CHAR_GRU_SIGNATURE, TWO_INPUTS_SIGNATURE, make_char_gru, make_two_inputs

STEP_ATOL = 1e-5  # one step of ONNX against eager torch (float32 rounding of a few matmuls)
SEQUENCE_ATOL = 1e-4  # whole sequences: rounding grows with the steps
ROOT = Path(__file__).resolve().parents[2]


class GRUForecaster(nn.Module):
    """nn.GRU's own (layers, batch, hidden) state, float features in, two outputs (a forecast fed
    back, and a score): forward(x, h) -> (y, score, h)."""

    def __init__(self, features: int = 3, hidden: int = 5) -> None:
        super().__init__()
        self.gru = nn.GRU(features, hidden, num_layers=2)
        self.out = nn.Linear(hidden, features)
        self.score = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        ys, h_next = self.gru(x.unsqueeze(0), h)
        return self.out(ys[0]), self.score(ys[0]), h_next


GRU_SIGNATURE = {
    "inputs": [("x", 3)],
    "outputs": [("y", 3), ("score", 2)],
    "states": [{"name": "h", "shape": [2, "batch", 5], "initial": 0.05}],
    "feedback": {"output": "y", "input": "x"},
}


class Leaky(nn.Module):
    """The classic signature x (batch, 2) -> y (batch, 2), one (batch, 4) state."""

    def __init__(self) -> None:
        super().__init__()
        self.rec = nn.Linear(6, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        h_next = torch.tanh(self.rec(torch.cat((x, h), 1)))
        return self.out(h_next), h_next


@pytest.fixture(scope="module")
def char(tmp_path_factory):
    module = make_char_gru()
    folder = export_module(module, tmp_path_factory.mktemp("char") / "m", **CHAR_GRU_SIGNATURE)
    return module, runtime.load(folder)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    module = make_two_inputs()
    folder = export_module(module, tmp_path_factory.mktemp("two") / "m", layout=BATCH_FIRST, **TWO_INPUTS_SIGNATURE)
    return module, runtime.load(folder)


@pytest.fixture(scope="module")
def gru(tmp_path_factory):
    torch.manual_seed(3)
    module = GRUForecaster()
    folder = export_module(module, tmp_path_factory.mktemp("gru") / "m", **GRU_SIGNATURE)
    return module, runtime.load(folder)


def eager(module, *arrays):
    with torch.no_grad():
        return [t.numpy() for t in module(*(torch.from_numpy(np.asarray(a)) for a in arrays))]


def char_inputs(rng, batch):
    return {"token": rng.integers(0, 11, batch), "category": rng.uniform(-1, 1, (batch, 3)).astype(np.float32)}


# ---- loading and attributes --------------------------------------------------------------------


def test_a_format_2_folder_loads_as_the_one_model_with_its_signature(char):
    _, model = char
    assert type(model) is runtime.Model and not model.classic
    assert model.input_names == ("token", "category") and model.output_names == ("logits",)
    assert model.state_names == ("h",) and model.states[0].shape == (2, "batch", 7)
    assert model.inputs[0].is_tokens and model.inputs[0].vocabulary == 11
    assert model.layout == "time_first" and (model.feedback.output, model.feedback.input) == ("logits", "token")
    # written by the export: the teacher-forced loop of any step graph, the sampling rollouts
    assert model.forms == ("step", "sequence_loop", "rollout_greedy", "rollout_sample")
    assert [s.shape for s in model.initial_state(4)] == [(2, 4, 7)]
    assert "token" in repr(model)


def test_the_initial_state_puts_the_batch_axis_where_the_manifest_says(gru):
    _, model = gru
    (h,) = model.initial_state(3)
    assert h.shape == (2, 3, 5) and h.flags.c_contiguous and np.all(h == np.float32(0.05))


# ---- step and predict against eager torch --------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3, 17])
def test_step_of_a_token_and_a_float_input_is_eager_torch(char, batch):
    module, model = char
    rng = np.random.default_rng(batch)
    x = char_inputs(rng, batch)
    state = (rng.uniform(-1, 1, (2, batch, 7)).astype(np.float32),)
    logits, new_state = model.step(x, state)
    want_logits, want_h = eager(module, x["token"].astype(np.int64), x["category"], state[0])
    np.testing.assert_allclose(logits, want_logits, atol=STEP_ATOL, rtol=0)
    np.testing.assert_allclose(new_state[0], want_h, atol=STEP_ATOL, rtol=0)
    # any integer dtype is a token; the initial state is the default
    y32, _ = model.step({"token": x["token"].astype(np.int32), "category": x["category"]})
    y64, _ = model.step(x, model.initial_state(batch))
    np.testing.assert_array_equal(y32, y64)


@pytest.mark.parametrize("batch", [1, 4])
def test_several_outputs_come_as_a_dict_and_predict_is_the_eager_loop(gru, batch):
    module, model = gru
    rng = np.random.default_rng(7)
    xs = rng.uniform(-1, 1, (9, batch, 3)).astype(np.float32)
    ys, state = model.predict(xs)
    assert set(ys) == {"y", "score"} and ys["y"].shape == (9, batch, 3) and ys["score"].shape == (9, batch, 2)
    h = model.initial_state(batch)[0]
    for t in range(9):
        y, score, h = eager(module, xs[t], h)
        np.testing.assert_allclose(ys["y"][t], y, atol=SEQUENCE_ATOL, rtol=0)
        np.testing.assert_allclose(ys["score"][t], score, atol=SEQUENCE_ATOL, rtol=0)
    np.testing.assert_allclose(state[0], h, atol=SEQUENCE_ATOL, rtol=0)
    # a bare array for the one input; step agrees with predict's first step
    y0, _ = model.step(xs[0])
    np.testing.assert_array_equal(y0["y"], ys["y"][0])


def test_generate_feeds_the_declared_output_back_and_keeps_the_state(gru):
    module, model = gru
    x0 = np.array([[0.1, -0.2, 0.3], [0.5, 0.0, -0.5], [1.0, 1.0, 1.0]], np.float32)
    ys, state = model.generate(x0, 6)
    x, h = x0, model.initial_state(3)[0]
    for t in range(6):
        y, score, h = eager(module, x, h)
        np.testing.assert_allclose(ys["y"][t], y, atol=SEQUENCE_ATOL, rtol=0)
        np.testing.assert_allclose(ys["score"][t], score, atol=SEQUENCE_ATOL, rtol=0)
        x = y
    chunks = list(model.generate_iter(x0, 6, chunk=4))
    assert [c[0]["y"].shape[0] for c in chunks] == [4, 2]
    np.testing.assert_allclose(np.concatenate([c[0]["y"] for c in chunks]), ys["y"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(chunks[-1][1][0], state[0], atol=1e-6, rtol=0)


# ---- batch-first ---------------------------------------------------------------------------------


def test_batch_first_predict_and_generate_of_two_inputs_are_eager_torch(two):
    module, model = two
    assert model.layout == "batch_first"
    rng = np.random.default_rng(2)
    batch, steps = 3, 7
    values = rng.uniform(-1, 1, (batch, steps, 1)).astype(np.float32)
    days = rng.integers(0, 7, (batch, steps))
    ys, (h, c) = model.predict({"value": values, "day": days})
    assert ys.shape == (batch, steps, 1)
    want_h, want_c = (
        np.repeat(s.reshape(1, -1), batch, 0) for s in (model.signature.initial[0], model.signature.initial[1])
    )
    for t in range(steps):
        y, want_h, want_c = eager(module, values[:, t], days[:, t], want_h, want_c)
        np.testing.assert_allclose(ys[:, t], y, atol=SEQUENCE_ATOL, rtol=0)
    np.testing.assert_allclose(c, want_c, atol=SEQUENCE_ATOL, rtol=0)
    # generate: the value is fed back, the day held; outputs batch-first
    gen, _ = model.generate({"value": values[:, 0], "day": days[:, 0]}, 5)
    assert gen.shape == (batch, 5, 1)
    x, hh, cc = values[:, 0], *model.initial_state(batch)
    for t in range(5):
        x, hh, cc = eager(module, x, days[:, 0], hh, cc)
        np.testing.assert_allclose(gen[:, t], x, atol=SEQUENCE_ATOL, rtol=0)


def test_a_classic_shaped_batch_first_folder_runs_the_classic_model_transposed(tmp_path):
    torch.manual_seed(4)
    module = Leaky()
    folder = export_module(module, tmp_path / "m", inputs=[("x", 2)], outputs=[("y", 2)], states=[("h", 4)])
    time_first = runtime.load(folder)
    batch_first = export_module(
        module, tmp_path / "bf", inputs=[("x", 2)], outputs=[("y", 2)], states=[("h", 4)], layout=BATCH_FIRST
    )
    model = runtime.load(batch_first)
    assert type(time_first) is type(model) is runtime.Model and model.classic and model.layout == "batch_first"
    xs = np.random.default_rng(0).uniform(-1, 1, (3, 8, 2)).astype(np.float32)  # (batch, steps, 2)
    ys, state = model.predict(xs)
    want, want_state = time_first.predict(np.ascontiguousarray(xs.swapaxes(0, 1)))
    np.testing.assert_array_equal(ys, want.swapaxes(0, 1))
    np.testing.assert_array_equal(state[0], want_state[0])
    gen, _ = model.generate(xs[:, 0], 5)
    np.testing.assert_array_equal(gen, time_first.generate(xs[:, 0], 5)[0].swapaxes(0, 1))
    with pytest.raises(ShapeError, match=r"\(batch, steps, 2\).*batch_first"):
        model.predict(np.zeros((3, 8, 3), np.float32))


def test_batch_first_applies_to_a_classic_folders_fused_forms(tmp_path):
    folder = tmp_path / "sine"
    shutil.copytree(ROOT / "artifacts" / "sine-elman", folder)
    classic = runtime.load(folder)
    manifest = read_manifest(folder)
    write_manifest(folder, dataclasses.replace(manifest, format_version=2, layout=BATCH_FIRST))
    model = runtime.load(folder)
    assert model.layout == "batch_first" and "rollout_rnn" in model.forms
    x0 = np.linspace(-1, 1, 5, dtype=np.float32).reshape(5, 1)
    for form in ("step", "rollout_rnn", "rollout_loop"):
        got, _ = model.generate(x0, 12, form=form)
        want, _ = classic.generate(x0, 12, form=form)
        assert got.shape == (5, 12, 1)
        np.testing.assert_array_equal(got, want.swapaxes(0, 1))
    xs = np.sin(np.linspace(0, 3, 5 * 9, dtype=np.float32)).reshape(5, 9, 1)
    for form in ("step", "sequence_rnn", "sequence_loop"):
        got, _ = model.predict(xs, form=form)
        np.testing.assert_array_equal(
            got, classic.predict(np.ascontiguousarray(xs.swapaxes(0, 1)), form=form)[0].swapaxes(0, 1)
        )
    chunks = [ys for ys, _ in model.generate_iter(x0, 12, chunk=5)]
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), model.generate(x0, 12)[0], atol=SEQUENCE_ATOL, rtol=0)


# ---- sampled generation --------------------------------------------------------------------------


def eager_sample(module, sampler, x, steps):
    """Eager torch's logits, drawn from by the sampler with its own uniforms: the reference."""
    batch = len(x["token"])
    u = sampler.uniforms(steps, batch)
    token, h = x["token"].astype(np.int64), np.zeros((2, batch, 7), np.float32)
    tokens = []
    for t in range(steps):
        logits, h = eager(module, token, x["category"], h)
        token = sampler.draw(logits, u[t])
        tokens.append(token)
    return np.stack(tokens), h


@pytest.mark.parametrize("batch", [1, 5])
def test_sampled_generate_is_reproducible_by_seed_and_is_eager_torch_with_the_same_draws(char, batch):
    module, model = char
    x = char_inputs(np.random.default_rng(batch), batch)
    tokens, (h,) = model.generate(x, 30, sampler=Sampler("temperature", temperature=0.8, seed=11))
    assert tokens.dtype == np.int64 and tokens.shape == (30, batch) and h.shape == (2, batch, 7)
    again, _ = model.generate(x, 30, sampler=Sampler("temperature", temperature=0.8, seed=11))
    np.testing.assert_array_equal(tokens, again)
    want, want_h = eager_sample(module, Sampler("temperature", temperature=0.8, seed=11), x, 30)
    np.testing.assert_array_equal(tokens, want)
    np.testing.assert_allclose(h, want_h, atol=SEQUENCE_ATOL, rtol=0)
    greedy, _ = model.generate(x, 10, sampler=Sampler("greedy"), form="step")
    np.testing.assert_array_equal(greedy, eager_sample(module, Sampler("greedy"), x, 10)[0])


def test_sampled_generate_iter_continues_chunk_to_chunk(char):
    _, model = char
    x = char_inputs(np.random.default_rng(0), 3)
    whole, state = model.generate(x, 12, sampler=Sampler("greedy"))
    chunks = list(model.generate_iter(x, 12, chunk=5, sampler=Sampler("greedy")))
    assert [c.shape for c, _ in chunks] == [(5, 3), (5, 3), (2, 3)]
    np.testing.assert_array_equal(np.concatenate([c for c, _ in chunks]), whole)
    np.testing.assert_allclose(chunks[-1][1][0], state[0], atol=1e-6, rtol=0)


# ---- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, error, message",
    [
        (
            lambda x: {**x, "token": np.array([1, 11, 2])},
            InputValueError,
            r"'token' holds token id 11 at index \(1,\).*< 11",
        ),
        (lambda x: {**x, "token": np.array([1, -1, 2])}, InputValueError, r"token id -1"),
        (lambda x: {**x, "token": np.array([1.0, 2.0, 3.0])}, DtypeError, r"'token' must be \(batch\) int64"),
        (lambda x: {**x, "token": np.array([True, False, True])}, DtypeError, r"int64 token ids"),
        (
            lambda x: {**x, "category": np.zeros((3, 4))},
            ShapeError,
            r"'category' must be \(batch, 3\) float32, got \(3, 4\)",
        ),
        (
            lambda x: {**x, "category": np.zeros((2, 3))},
            ShapeError,
            r"'category' must be \(batch, 3\).*'token' \(3\).*\(2, 3\)",
        ),
        (lambda x: {**x, "category": np.full((3, 3), np.nan)}, InputValueError, r"'category' contains NaN"),
        (lambda x: {"token": x["token"]}, InputValueError, r"missing \['category'\]"),
        (lambda x: {**x, "extra": 1}, InputValueError, r"unknown \['extra'\]"),
        (lambda x: x["token"], InputValueError, r"2 inputs \['token', 'category'\]: pass x as a dict"),
    ],
)
def test_input_mistakes_are_typed_and_name_the_input(char, change, error, message):
    _, model = char
    x = char_inputs(np.random.default_rng(0), 3)
    with pytest.raises(error, match=message):
        model.step(change(x))
    model.step(x)  # still works


def test_state_and_call_mistakes_are_typed(char, gru):
    _, model = char
    x = char_inputs(np.random.default_rng(0), 3)
    with pytest.raises(
        ShapeError, match=r"state 'h' must be \(2, batch, 7\) float32, \(2, 3, 7\) at .* got \(3, 2, 7\)"
    ):
        model.step(x, (np.zeros((3, 2, 7), np.float32),))
    with pytest.raises(ShapeError, match=r"state must be 1 array"):
        model.step(x, (np.zeros((2, 3, 7)), np.zeros((2, 3, 7))))
    with pytest.raises(InputValueError, match=r"pass sampler=runtime.Sampler"):
        model.generate(x, 5)
    with pytest.raises(
        InputValueError, match=r"runs in one of the forms \['step', 'rollout_greedy', 'rollout_sample'\]"
    ):
        model.generate(x, 5, sampler=Sampler(seed=0), form="rollout_loop")
    with pytest.raises(InputValueError, match=r"steps must be between 1 and"):
        model.generate(x, 0, sampler=Sampler(seed=0))
    with pytest.raises(InputValueError, match=r"more than the limit"):
        small = runtime.load(model.folder, max_memory_bytes=10_000)
        small.generate(x, 1000, sampler=Sampler(seed=0))
    _, forecaster = gru
    with pytest.raises(InputValueError, match=r"sampler= is for models whose generate samples"):
        forecaster.generate(np.zeros((1, 3)), 5, sampler=Sampler(seed=0))
    runner = model.bind(1)  # every signature binds: the state stays in onnxruntime's buffers
    assert runner.batch_size == 1 and runner.state[0].shape == (2, 1, 7)


def test_a_stream_of_a_token_model_steps_saves_and_restores_as_the_model_does(char):
    _, model = char
    stream = runtime.Stream(model)
    assert type(stream) is runtime.Stream and stream.state[0].shape == (2, 7)
    rng = np.random.default_rng(8)
    inputs = [
        {"token": int(rng.integers(0, 11)), "category": rng.uniform(-1, 1, 3).astype(np.float32)} for _ in range(6)
    ]
    state = None
    for x in inputs[:3]:
        got = stream.push(x)
        want, state = model.step({"token": np.array([x["token"]]), "category": x["category"][None]}, state)
        np.testing.assert_array_equal(got, want[0])
    copy = runtime.Stream.restore(model, stream.save())
    for x in inputs[3:]:
        np.testing.assert_array_equal(copy.push(x), stream.push(x))
    stream.reset()
    np.testing.assert_array_equal(stream.state[0], model.initial_state(1)[0][:, 0])
    with pytest.raises(InputValueError, match="token"):
        stream.push({"token": 11, "category": np.zeros(3, np.float32)})


def test_a_general_model_without_feedback_refuses_generate(tmp_path):
    torch.manual_seed(1)
    folder = export_module(GRUForecaster(), tmp_path / "m", **{**GRU_SIGNATURE, "feedback": None})
    model = runtime.load(folder)
    assert model.feedback is None
    with pytest.raises(InputValueError, match=r"declares no feedback"):
        model.generate(np.zeros((1, 3)), 3)


def test_classic_models_refuse_named_inputs_and_samplers_clearly():
    model = runtime.load(ROOT / "artifacts" / "sine-elman")
    assert model.classic and model.input_names == ("x",) and model.layout == "time_first"
    with pytest.raises(InputValueError, match=r"must give the inputs \['x'\]: missing \['x'\], unknown \['token'\]"):
        model.step({"token": [[0.5]]})
    y, _ = model.step({"x": [[0.5]]})  # its own input, named, is the array
    np.testing.assert_array_equal(y, model.step([[0.5]])[0])
    np.testing.assert_array_equal(model.predict({"x": [0.5, 0.2]})[0], model.predict([0.5, 0.2])[0])
    with pytest.raises(InputValueError, match=r"sampler= is for models"):
        model.generate(0.5, 4, sampler=Sampler(seed=0))


# ---- the fused sampling forms ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def fused_char(tmp_path_factory):
    module = make_char_gru()
    folder = export_module(module, tmp_path_factory.mktemp("fused") / "m", **CHAR_GRU_SIGNATURE)
    return module, runtime.load(folder)  # the export writes the sampling forms (export.sampling)


@pytest.mark.parametrize("batch", [1, 4])
def test_the_fused_sampling_forms_give_the_step_loops_tokens(fused_char, batch):
    _, model = fused_char
    assert {"rollout_greedy", "rollout_sample"} <= set(model.forms)
    x = char_inputs(np.random.default_rng(batch), batch)
    for strategy in ("greedy", "temperature"):
        fused, fused_state = model.generate(x, 40, sampler=Sampler(strategy, temperature=0.9, seed=3))
        loop, loop_state = model.generate(x, 40, sampler=Sampler(strategy, temperature=0.9, seed=3), form="step")
        assert fused.shape == (40, batch) and fused.dtype == np.int64
        np.testing.assert_array_equal(fused, loop)
        np.testing.assert_allclose(fused_state[0], loop_state[0], atol=SEQUENCE_ATOL, rtol=0)
    assert set(model.loaded_forms) == {"step", "rollout_greedy", "rollout_sample"}
    chunks = [t for t, _ in model.generate_iter(x, 40, chunk=15, sampler=Sampler("greedy"))]
    np.testing.assert_array_equal(np.concatenate(chunks), model.generate(x, 40, sampler=Sampler("greedy"))[0])
    with pytest.raises(InputValueError, match=r"does not run a greedy sampler"):
        model.generate(x, 5, sampler=Sampler("greedy"), form="rollout_sample")


@pytest.mark.parametrize("workers", [2, 3])
def test_large_sampling_batches_split_across_workers_give_the_same_tokens_and_states(fused_char, workers):
    whole = runtime.load(fused_char[1].folder, workers=1)  # never split
    split = runtime.load(whole.folder, workers=workers)
    calls = []
    part = split.sampled_runs._run_part
    split.sampled_runs._run_part = lambda *args: calls.append(args[1].shape[0]) or part(*args)
    batch = 2 * SAMPLING_PARALLEL_MIN_BATCH + 3  # parts of unequal sizes
    x = char_inputs(np.random.default_rng(7), batch)
    state = (np.random.default_rng(8).standard_normal((2, batch, 7)) * 0.3).astype(np.float32)
    strategies = [
        {"strategy": "greedy"},
        {"strategy": "temperature", "temperature": 0.9},
        {"strategy": "top_p", "top_p": 0.8},
    ]
    for settings in strategies:
        want, (want_h,) = whole.generate(x, 30, state, sampler=Sampler(**settings, seed=5))
        calls.clear()
        got, (h,) = split.generate(x, 30, state, sampler=Sampler(**settings, seed=5))
        assert sorted(calls) == sorted(np.diff(np.linspace(0, batch, workers + 1).astype(int)).tolist())
        np.testing.assert_array_equal(got, want)  # bit for bit: the rows are independent
        np.testing.assert_array_equal(h, want_h)
    calls.clear()
    split.generate(char_inputs(np.random.default_rng(9), SAMPLING_PARALLEL_MIN_BATCH - 1), 5, sampler=Sampler("greedy"))
    assert len(calls) == 1  # below the threshold: one run


def test_a_split_at_the_smallest_parts_runs_the_whole_batchs_arithmetic(fused_char):
    # Batch 8 on 2 workers: parts of SAMPLING_CELLS_MIN_BATCH rows, the smallest the split makes,
    # so each part runs the Gemm-cell rollout the whole batch runs and gives its bits.
    whole = runtime.load(fused_char[1].folder, workers=1)  # never split
    split = runtime.load(whole.folder, workers=2)
    calls = []
    part = split.sampled_runs._run_part
    split.sampled_runs._run_part = lambda *args: calls.append(args[1].shape[0]) or part(*args)
    batch = 2 * SAMPLING_CELLS_MIN_BATCH
    x = char_inputs(np.random.default_rng(17), batch)
    for settings in ({"strategy": "greedy"}, {"strategy": "temperature", "temperature": 0.9}):
        want, (want_h,) = whole.generate(x, 25, sampler=Sampler(**settings, seed=6))
        got, (h,) = split.generate(x, 25, sampler=Sampler(**settings, seed=6))
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(h, want_h)
    assert calls == [SAMPLING_CELLS_MIN_BATCH] * 4


def test_a_sampling_form_that_breaks_the_contract_is_refused(tmp_path):
    folder = export_module(make_char_gru(), tmp_path / "m", **CHAR_GRU_SIGNATURE)
    manifest = read_manifest(folder)
    token, category = manifest.inputs
    wrong = dataclasses.replace(category, shape=("batch", 4))  # the step model and the form take (batch, 3)
    write_manifest(folder, dataclasses.replace(manifest, inputs=(token, wrong)))
    with pytest.raises(runtime.ArtifactError, match=r"form 'step'.*declares input 'category' as \(batch, 3\) float"):
        runtime.load(folder)


# ---- stream pools ---------------------------------------------------------------------------------


def test_a_pool_of_a_token_model_steps_streams_as_the_model_does(char):
    _, model = char
    pool = runtime.StreamPool(model, capacity=2)
    assert type(pool) is runtime.StreamPool
    ids = [pool.open() for _ in range(5)]  # grows past its capacity
    x = char_inputs(np.random.default_rng(1), 5)
    want, (h,) = model.step(x)
    got = pool.step(ids, x)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(pool.state(ids[3])[0], h[:, 3])
    # a push per stream, from threads, continues each stream's state
    want, (h,) = model.step(x, (h,))
    from concurrent.futures import ThreadPoolExecutor

    def push(row: int):
        return pool.push(ids[row], {"token": int(x["token"][row]), "category": x["category"][row]})

    with ThreadPoolExecutor(5) as workers:
        rows = list(workers.map(push, range(5)))
    np.testing.assert_allclose(np.stack(rows), want, atol=1e-6, rtol=0)
    # a saved state restores into a new stream (the state's batch axis is the pool's business)
    copy = pool.restore(pool.save(ids[2]))
    np.testing.assert_array_equal(pool.state(copy)[0], pool.state(ids[2])[0])
    pool.reset(copy)
    np.testing.assert_array_equal(pool.state(copy)[0], np.zeros((2, 7), np.float32))
    with pytest.raises(InputValueError, match=r"token id 11"):
        pool.push(ids[0], {"token": 11, "category": [0.0, 0.0, 0.0]})
    with pytest.raises(ShapeError, match=r"'category' must be \(batch, 3\)"):
        pool.push(ids[0], {"token": 1, "category": [0.0, 0.0]})


def test_a_pool_of_a_model_with_two_outputs_returns_a_dict_per_stream(gru):
    _, model = gru
    pool = runtime.StreamPool(model)
    a, b = pool.open(), pool.open()
    x = np.array([[0.1, 0.2, 0.3], [-0.3, 0.0, 0.5]], np.float32)
    want, _ = model.step(x)
    y = pool.push(b, x[1])
    assert set(y) == {"y", "score"}
    np.testing.assert_allclose(y["score"], want["score"][1], atol=1e-6, rtol=0)
    both = pool.step([a, b], x)
    np.testing.assert_allclose(both["y"][0], want["y"][0], atol=1e-6, rtol=0)


def test_teacher_forced_tokens_and_batch_first_sampling(char, tmp_path):
    module, model = char
    rng = np.random.default_rng(5)
    tokens = rng.integers(0, 11, (6, 3))  # (steps, batch)
    category = rng.uniform(-1, 1, (6, 3, 3)).astype(np.float32)
    logits, (h,) = model.predict({"token": tokens, "category": category})
    assert logits.shape == (6, 3, 11)
    want_h = np.zeros((2, 3, 7), np.float32)
    for t in range(6):
        want, want_h = eager(module, tokens[t].astype(np.int64), category[t], want_h)
        np.testing.assert_allclose(logits[t], want, atol=SEQUENCE_ATOL, rtol=0)
    with pytest.raises(InputValueError, match=r"token id 12 at index \(2, 1\)"):
        model.predict({"token": np.where(np.arange(18).reshape(6, 3) == 7, 12, tokens), "category": category})
    # the same module, batch-first: sequences (batch, steps, ...), tokens (batch, steps)
    folder = export_module(module, tmp_path / "bf", layout=BATCH_FIRST, **CHAR_GRU_SIGNATURE)
    batch_first = runtime.load(folder)
    got, _ = batch_first.predict({"token": tokens.T, "category": np.ascontiguousarray(category.swapaxes(0, 1))})
    np.testing.assert_array_equal(got, logits.swapaxes(0, 1))
    x = char_inputs(rng, 3)
    sampled, _ = batch_first.generate(x, 9, sampler=Sampler("temperature", seed=2))
    np.testing.assert_array_equal(sampled, model.generate(x, 9, sampler=Sampler("temperature", seed=2))[0].T)
    with pytest.raises(ShapeError, match=r"'token' must be \(batch, steps\) int64"):
        batch_first.predict({"token": tokens[0], "category": category})


def test_bounds_hold_for_general_models(char):
    _, model = char
    bounded = runtime.load(model.folder, max_steps=10)
    x = char_inputs(np.random.default_rng(0), 2)
    with pytest.raises(InputValueError, match=r"steps must be between 1 and 10"):
        bounded.generate(x, 11, sampler=Sampler("greedy"))
    small = runtime.load(model.folder, max_memory_bytes=4096)
    with pytest.raises(InputValueError, match=r"predict of 40 steps x batch 2 would take"):
        small.predict({"token": np.zeros((40, 2), int), "category": np.zeros((40, 2, 3))})
    with pytest.raises(InputValueError, match=r"a step of batch 64 would take"):
        small.step({"token": np.zeros(64, int), "category": np.zeros((64, 3))})
    # generate counts one step's outputs (the logits a sampled step draws from): 2 x (20 in + 44 logits
    # + 6 x 12 tokens and uniforms + 112 state) = 496 bytes
    tight = runtime.load(model.folder, max_memory_bytes=480)
    with pytest.raises(InputValueError, match=r"generate of 6 steps x batch 2 would take"):
        tight.generate(x, 6, sampler=Sampler("greedy"))
    runtime.load(model.folder, max_memory_bytes=496).generate(x, 6, sampler=Sampler("greedy"))


def test_a_chunk_changed_by_the_caller_does_not_change_where_the_next_starts(gru):
    _, model = gru
    x0 = np.full((2, 3), 0.25, np.float32)
    want = [{name: array.copy() for name, array in ys.items()} for ys, _ in model.generate_iter(x0, 12, chunk=4)]
    for index, (ys, _) in enumerate(model.generate_iter(x0, 12, chunk=4)):
        for name, array in ys.items():  # several outputs: a dict
            np.testing.assert_array_equal(array, want[index][name])
            array[...] = 99.0  # the caller's own array now


def test_classic_generate_iter_refuses_a_sampler():
    model = runtime.load(ROOT / "artifacts" / "sine-elman")
    with pytest.raises(InputValueError, match=r"sampler= is for models"):
        next(model.generate_iter(0.5, 4, sampler=Sampler(seed=0)))


def test_a_step_model_that_breaks_a_general_manifest_is_refused_at_load(tmp_path):
    """A general folder built by hand: y is declared (batch, size) but onnxruntime infers x's (batch, 3)."""
    import onnx
    from onnx import TensorProto, helper

    from runtime.manifest import Manifest, StateSpec, TensorSpec, file_entry

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Identity", ["h"], ["h_out"])],
        "step",
        [
            helper.make_tensor_value_info("token", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", 4]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "size"]),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["batch", 4]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    tmp_path.mkdir(exist_ok=True)
    onnx.save(model, tmp_path / "step.onnx")
    manifest = Manifest(
        model={"kind": "hand"},
        inputs=(TensorSpec("token", ("batch",), "int64", "tokens", 5), TensorSpec("x", ("batch", 3))),
        outputs=(TensorSpec("y", ("batch", 2)),),
        state=(StateSpec("h", ("batch", 4), output="h_out", initial=(0.0,) * 4),),
        files=(file_entry(tmp_path, "step.onnx", "step_onnx"),),
        opset=17,
    )
    write_manifest(tmp_path, manifest)
    with pytest.raises(
        runtime.ArtifactError, match=r"declares output 'y' as \(batch, 3\) float, the manifest needs \(batch, 2\)"
    ):
        runtime.load(tmp_path)


@pytest.fixture(scope="module")
def exported_sampling_forms(tmp_path_factory):
    """The char model with the fused sampling forms `export.sampling` builds, listed in its manifest."""

    module = make_char_gru()
    folder = export_module(module, tmp_path_factory.mktemp("sampling") / "m", **CHAR_GRU_SIGNATURE)
    return module, runtime.load(folder)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(
    "settings",
    [
        {"strategy": "greedy"},
        {"strategy": "temperature", "temperature": 0.7},
        {"strategy": "top_k", "top_k": 3},
        {"strategy": "top_p", "top_p": 0.8},
    ],
)
def test_exported_sampling_forms_give_the_step_loops_tokens_for_a_seed(exported_sampling_forms, batch, settings):
    _, model = exported_sampling_forms
    assert {"rollout_greedy", "rollout_sample"} <= set(model.forms)
    x = char_inputs(np.random.default_rng(batch + 10), batch)
    fused, (h,) = model.generate(x, 50, sampler=Sampler(**settings, seed=21))
    loop, (want_h,) = model.generate(x, 50, sampler=Sampler(**settings, seed=21), form="step")
    assert fused.shape == (50, batch)
    np.testing.assert_array_equal(fused, loop)
    np.testing.assert_allclose(h, want_h, atol=SEQUENCE_ATOL, rtol=0)


def test_streams_of_classic_models_still_copy():
    import copy

    from ..conftest import COMMITTED

    classic = runtime.load(COMMITTED)
    stream = runtime.Stream(classic)
    stream.push(0.5)
    assert type(copy.copy(stream)) is runtime.Stream

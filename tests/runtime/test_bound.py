"""BoundStep for every signature: its host buffers (numpy arrays onnxruntime reads and writes) and its
device buffers (OrtValues: the CUDA path's code, run here on the CPU) give the same bits as a plain
step, for the seed's signature, a token model with a layered (layers, batch, hidden) state, and two inputs."""

from __future__ import annotations

import numpy as np
import pytest

import runtime
from export import export_module
from runtime.bound import BoundStep

from ..conftest import COMMITTED
from ..user_modules import CHAR_GRU_SIGNATURE, TWO_INPUTS_SIGNATURE, make_char_gru, make_two_inputs


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("bound")
    export_module(make_char_gru(), root / "char", **CHAR_GRU_SIGNATURE)
    export_module(make_two_inputs(), root / "two", **TWO_INPUTS_SIGNATURE)
    return {"classic": runtime.load(COMMITTED), "char": runtime.load(root / "char"), "two": runtime.load(root / "two")}


def inputs_for(model: runtime.Model, batch: int, rng: np.random.Generator) -> tuple:
    values = []
    for spec in model.inputs:
        if spec.is_tokens:
            values.append(rng.integers(0, spec.vocabulary, batch).astype(np.int64))
        else:
            values.append(rng.uniform(-1, 1, spec.shape_for(batch)).astype(np.float32))
    return tuple(values)


def state_for(model: runtime.Model, batch: int, rng: np.random.Generator) -> tuple:
    return tuple(rng.uniform(-0.5, 0.5, s.shape_for(batch)).astype(np.float32) for s in model.states)


@pytest.mark.parametrize("name", ["classic", "char", "two"])
@pytest.mark.parametrize("device_buffers", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_a_bound_step_is_the_plain_step(models, name, device_buffers, batch):
    model = models[name]
    rng = np.random.default_rng(batch)
    runner = BoundStep(model, batch, device_buffers=device_buffers)
    state = state_for(model, batch, rng)
    for _ in range(3):  # several runs: the ping-pong of the state buffers
        inputs = inputs_for(model, batch, rng)
        want_ys, want_state = model.run_checked(inputs, state)
        got_ys, got_state = runner.step(inputs, state)
        for got, want in zip((*got_ys, *got_state), (*want_ys, *want_state)):
            np.testing.assert_array_equal(got, want)
        state = want_state
    runner.load_state(state)
    inputs = inputs_for(model, batch, rng)
    y = runner.run(inputs[0] if len(inputs) == 1 else inputs)
    want_ys, want_state = model.run_checked(inputs, state)
    np.testing.assert_array_equal(y if len(want_ys) == 1 else y[model.output_names[0]], want_ys[0])
    for got, want in zip(runner.state, want_state):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", ["classic", "char", "two"])
@pytest.mark.parametrize("device_buffers", [False, True])
def test_rows_of_a_pool_are_gathered_and_scattered_at_each_states_batch_axis(models, name, device_buffers):
    model = models[name]
    rng = np.random.default_rng(0)
    capacity = 6
    rows_state = [rng.uniform(-0.5, 0.5, (capacity, *s.sizes)).astype(np.float32) for s in model.states]
    for rows in (4, slice(1, 4), np.array([5, 0, 2])):
        count = 1 if isinstance(rows, int) else len(range(capacity)[rows]) if isinstance(rows, slice) else len(rows)
        before = [a.copy() for a in rows_state]
        inputs = inputs_for(model, count, rng)
        batch_state = tuple(
            np.ascontiguousarray(np.moveaxis(a[[rows] if isinstance(rows, int) else rows], 0, s.batch_axis))
            for a, s in zip(before, model.states)
        )
        want_ys, want_state = model.run_checked(inputs, batch_state)
        got_ys = BoundStep(model, count, device_buffers=device_buffers).step_rows(inputs, rows_state, rows)
        for got, want in zip(got_ys, want_ys):
            np.testing.assert_array_equal(got, want)
        for array, old, new, spec in zip(rows_state, before, want_state, model.states):
            expected = old.copy()
            expected[[rows] if isinstance(rows, int) else rows] = np.moveaxis(new, spec.batch_axis, 0)
            np.testing.assert_array_equal(array, expected)  # only the stepped rows changed

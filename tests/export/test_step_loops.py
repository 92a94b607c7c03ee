"""export.step_loops: sequence_loop and rollout_loop around the step graph of any signature give
the step loop's outputs and states (through onnxruntime with runtime.contract.form_specs' names,
and through the runtime), at batch 1, 3, 64 and steps 0, 1, 20 (and 1000 where cheap)."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import runtime
from export import export_module
from export.onnx_graph import UNROLL
from export.step_loops import step_loops
from runtime.contract import form_specs
from runtime.errors import ExportError
from runtime.manifest import Feedback, StateSpec, TensorSpec

# The loops run the step graph's own kernels, in the step model's order: only the last float32 bits
# may differ (a kernel may pick another code path inside a Loop body); over 1000 steps of a
# contracting model that stays far below the verifier's tolerances.
LOOP_ATOL = 1e-5
OPSET = 17


class Forecaster(nn.Module):
    """Two LSTMCells and a head; ``x`` (batch, 1) fed back, ``u`` (batch, 2) held."""

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.layer1, self.layer2, self.head = nn.LSTMCell(3, hidden), nn.LSTMCell(hidden, hidden), nn.Linear(hidden, 1)

    def forward(self, x, u, h1, c1, h2, c2):
        h1, c1 = self.layer1(torch.cat([x, u], 1), (h1, c1))
        h2, c2 = self.layer2(h1, (h2, c2))
        return torch.tanh(self.head(h2)), h1, c1, h2, c2


FORECASTER = {
    "inputs": [("x", 1), ("u", 2)],
    "outputs": [("y", 1)],
    "states": [("h1", 8), ("c1", 8), ("h2", 8), ("c2", 8)],
    "feedback": {"output": "y", "input": "x"},
}


class Layered(nn.Module):
    """nn.GRU layers with a rank-3 state (layers, batch, hidden), a held token input (mode), a
    (batch, 2, 2) output beside the fed-back one."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.gru, self.out = nn.Embedding(3, 2), nn.GRU(4, 6, num_layers=2), nn.Linear(6, 2)
        self.grid = nn.Linear(6, 4)

    def forward(self, x, mode, h):
        ys, h_next = self.gru(torch.cat([x, self.embed(mode)], 1).unsqueeze(0), h)
        return torch.tanh(self.out(ys[0])), self.grid(ys[0]).reshape(-1, 2, 2), h_next


LAYERED = {
    "inputs": [("x", 2), {"name": "mode", "vocabulary": 3}],
    "outputs": [("y", 2), {"name": "grid", "shape": [2, 2]}],
    "states": [{"name": "h", "shape": [2, "batch", 6], "initial": 0.1}],
    "feedback": {"output": "y", "input": "x"},
}


def folder_of(tmp_path_factory, module_class, signature, layout="time_first"):
    torch.manual_seed(0)
    module = module_class().eval()
    return export_module(module, tmp_path_factory.mktemp("loops") / "model", layout=layout, **signature)


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory):
    return folder_of(tmp_path_factory, Forecaster, FORECASTER)


@pytest.fixture(scope="module")
def layered(tmp_path_factory):
    return folder_of(tmp_path_factory, Layered, LAYERED)


@pytest.fixture(scope="module")
def batch_first(tmp_path_factory):
    return folder_of(tmp_path_factory, Forecaster, FORECASTER, layout="batch_first")


def random_inputs(model, batch, steps, rng):
    """Sequences of every input, in the model's layout."""
    values = {}
    for spec in model.inputs:
        shape = (steps, *spec.shape_for(batch))
        if spec.is_tokens:
            value = rng.integers(0, spec.vocabulary, shape)
        else:
            value = rng.uniform(-1, 1, shape).astype(np.float32)
        values[spec.name] = np.moveaxis(value, 0, 1) if model.layout == "batch_first" else value
    return values


def random_state(model, batch, rng):
    return tuple(rng.uniform(-0.5, 0.5, s.shape_for(batch)).astype(np.float32) for s in model.states)


def assert_close(actual, expected):
    actual = actual if isinstance(actual, dict) else {"": actual}
    expected = expected if isinstance(expected, dict) else {"": expected}
    assert actual.keys() == expected.keys()
    for name in expected:
        assert actual[name].shape == expected[name].shape, name
        np.testing.assert_allclose(actual[name], expected[name], atol=LOOP_ATOL, rtol=0, err_msg=name)


def assert_states_close(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        np.testing.assert_allclose(a, e, atol=LOOP_ATOL, rtol=0)


def test_the_folders_list_the_loops_with_the_form_as_role(forecaster, layered, batch_first):
    for folder in (forecaster, layered, batch_first):
        manifest = runtime.read_manifest(folder)
        assert manifest.format_version == 2
        assert [f.role for f in manifest.files if f.role.endswith("_loop")] == ["sequence_loop", "rollout_loop"]
        assert manifest.producers["sequence_loop.onnx"] == "export.step_loops (a Loop around step.onnx)"


@pytest.mark.parametrize("name", ["forecaster", "layered", "batch_first"])
@pytest.mark.parametrize("batch, steps", [(1, 1), (3, 20), (64, 20), (1, 1000), (3, UNROLL), (16, 2 * UNROLL + 3)])
def test_sequence_loop_gives_the_step_loops_outputs_and_states(request, name, batch, steps):
    model = runtime.load(request.getfixturevalue(name))
    rng = np.random.default_rng(batch * 1000 + steps)
    inputs, state = random_inputs(model, batch, steps, rng), random_state(model, batch, rng)
    expected, expected_state = model.predict(inputs, state, form="step")
    actual, actual_state = model.predict(inputs, state, form="sequence_loop")
    assert_close(actual, expected)
    assert_states_close(actual_state, expected_state)


@pytest.mark.parametrize("name", ["forecaster", "layered", "batch_first"])
@pytest.mark.parametrize("batch, steps", [(1, 2), (3, 20), (64, 20), (1, 1000), (3, UNROLL), (16, 2 * UNROLL + 3)])
def test_rollout_loop_gives_the_closed_step_loops_outputs_and_states(request, name, batch, steps):
    model = runtime.load(request.getfixturevalue(name))
    rng = np.random.default_rng(batch * 1000 + steps + 1)
    firsts = {
        k: v[:, 0] if model.layout == "batch_first" else v[0] for k, v in random_inputs(model, batch, 1, rng).items()
    }
    state = random_state(model, batch, rng)
    expected, expected_state = model.generate(firsts, steps, state, form="step")
    actual, actual_state = model.generate(firsts, steps, state, form="rollout_loop")
    assert_close(actual, expected)
    assert_states_close(actual_state, expected_state)


def session(folder, form):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(folder / f"{form}.onnx"), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("steps", [0, 1, 7, 20])
def test_the_loops_run_directly_in_onnxruntime_with_form_specs_names(layered, steps):
    """The contract as runtime.contract.form_specs states it, the held token input kept every step,
    zero steps giving empty outputs and the states back."""
    model = runtime.load(layered)
    specs = {
        form: form_specs(form, model.inputs, model.outputs, model.states, model.feedback) for form in model.forms[1:]
    }
    for form, (inputs, outputs) in specs.items():
        declared = session(layered, form)
        assert [i.name for i in declared.get_inputs()] == [s[0] for s in inputs]
        assert [o.name for o in declared.get_outputs()] == [s[0] for s in outputs]
    rng = np.random.default_rng(steps)
    batch = 3
    x0 = rng.uniform(-1, 1, (batch, 2)).astype(np.float32)
    mode = rng.integers(0, 3, batch)
    state = random_state(model, batch, rng)
    y, grid, h = session(layered, "rollout_loop").run(
        None, {"x": x0, "mode": mode, "h": state[0], "steps": np.array([steps], np.int64)}
    )
    assert y.shape == (steps, batch, 2) and grid.shape == (steps, batch, 2, 2) and h.shape == (2, batch, 6)
    step = session(layered, "step")
    x, current = x0, state[0]
    for t in range(steps):  # the step loop, the mode held
        y_t, grid_t, current = step.run(None, {"x": x, "mode": mode, "h": current})
        np.testing.assert_allclose(y[t], y_t, atol=LOOP_ATOL, rtol=0)
        np.testing.assert_allclose(grid[t], grid_t, atol=LOOP_ATOL, rtol=0)
        x = y_t
    np.testing.assert_allclose(h, current, atol=LOOP_ATOL, rtol=0)
    xs = rng.uniform(-1, 1, (steps, batch, 2)).astype(np.float32)
    modes = rng.integers(0, 3, (steps, batch))
    ys, grids, h = session(layered, "sequence_loop").run(None, {"x": xs, "mode": modes, "h": state[0]})
    assert ys.shape == (steps, batch, 2) and grids.shape == (steps, batch, 2, 2)
    current = state[0]
    for t in range(steps):
        y_t, grid_t, current = step.run(None, {"x": xs[t], "mode": modes[t], "h": current})
        np.testing.assert_allclose(ys[t], y_t, atol=LOOP_ATOL, rtol=0)
        np.testing.assert_allclose(grids[t], grid_t, atol=LOOP_ATOL, rtol=0)
    np.testing.assert_allclose(h, current, atol=LOOP_ATOL, rtol=0)


def test_the_runtime_picks_the_loops_from_two_steps(forecaster):
    model = runtime.load(forecaster)
    rng = np.random.default_rng(0)
    inputs = random_inputs(model, 1, 30, rng)
    model.predict(inputs)
    first = {k: v[0] for k, v in inputs.items()}
    model.generate(first, 30)
    assert set(model.loaded_forms) == {"step", "sequence_loop", "rollout_loop"}


def test_the_unrolled_body_reads_its_own_copies_of_the_weights_and_no_state_round_trips(forecaster):
    model = onnx.load(str(forecaster / "rollout_loop.onnx"))
    choice = next(n for n in model.graph.node if n.op_type == "If")  # LSTM kernels below 16 rows, cells from 16
    branches = {a.name: a.g for a in choice.attribute}
    for branch, kernels in (("else_branch", 2 * UNROLL), ("then_branch", 0)):
        main = next(n for n in branches[branch].node if n.op_type == "Loop").attribute[0].g
        ops = [n.op_type for n in main.node]
        assert ops.count("LSTM") == kernels
        assert ops.count("Unsqueeze") <= UNROLL + 4  # each step's x into its first LSTM, and the last states
        assert ops.count("Squeeze") <= UNROLL + 4
        assert {t.name for t in main.initializer} and not any(n.op_type == "Constant" for n in main.node)
    cells = next(n for n in branches["then_branch"].node if n.op_type == "Loop").attribute[0].g
    assert [n.op_type for n in cells.node].count("Gemm") == 5 * UNROLL  # two a cell, one the head


def step_model(module, names_in, names_out, examples) -> onnx.ModelProto:
    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in (*names_in, *names_out)}
    torch.onnx.export(
        module,
        examples,
        buffer,
        input_names=names_in,
        output_names=names_out,
        dynamic_axes=axes,
        opset_version=OPSET,
        dynamo=False,
    )
    return onnx.load_from_string(buffer.getvalue())


class Leaky(nn.Module):
    def forward(self, x, h):
        h = 0.5 * h + x
        return h * 2.0, h


def test_a_step_graph_whose_names_clash_with_the_loops_names_is_refused():
    step = step_model(Leaky(), ["x", "ys"], ["y", "ys_out"], (torch.zeros(3, 2), torch.zeros(3, 2)))
    with pytest.raises(ExportError, match="clash"):
        step_loops(
            step,
            inputs=(TensorSpec("x", ("batch", 2)),),
            outputs=(TensorSpec("y", ("batch", 2)),),
            states=(StateSpec("ys", ("batch", 2), output="ys_out"),),
            feedback=Feedback("y", "x"),
            opset=OPSET,
            metadata={},
        )


def test_no_rollout_loop_without_identity_feedback_and_the_opset_is_the_step_models():
    step = step_model(Leaky(), ["x", "h"], ["y", "h_out"], (torch.zeros(3, 2), torch.zeros(3, 2)))
    specs = {
        "inputs": (TensorSpec("x", ("batch", 2)),),
        "outputs": (TensorSpec("y", ("batch", 2)),),
        "states": (StateSpec("h", ("batch", 2), output="h_out"),),
    }
    assert set(step_loops(step, **specs, feedback=None, opset=OPSET, metadata={})) == {"sequence_loop"}
    with pytest.raises(ExportError, match="opset"):
        step_loops(step, **specs, feedback=None, opset=OPSET + 1, metadata={})
    with pytest.raises(ExportError, match="unroll"):
        step_loops(step, **specs, feedback=None, opset=OPSET, metadata={}, unroll=0)


class LeakyTwo(nn.Module):
    def forward(self, x, ys):
        ys = 0.5 * ys + x
        return ys * 2.0, ys


def test_a_module_whose_names_the_loops_take_exports_without_them(tmp_path):
    folder = export_module(LeakyTwo(), tmp_path / "leaky", input_size=2, output_size=2, states=[("ys", 2)])
    model = runtime.load(folder)
    assert model.forms == ("step",)
    ys, _ = model.generate(np.ones((1, 2), np.float32), 3)
    np.testing.assert_allclose(ys[:, 0, 0], [2.0, 5.0, 12.5])

"""export.fused_cells: the GRU and LSTM fused forms against eager PyTorch and the runtime's step
loop, at shapes other than the export example, and what export writes for them."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

import runtime
from export import export_folder
from export.fused_cells import (
    CELL_FORMS,
    CellWeights,
    rollout_loop,
    rollout_native,
    rollout_native_loop,
    sequence_native,
)
from export.verify import ROLLOUT_ATOL, SEQUENCE_ATOL
from rnn.config import TrainConfig
from rnn.eager import generate_eager, predict_eager
from rnn.model import GRUStep, LSTMStep
from rnn.train import train_folder
from runtime.fused import GATED_MAX_WORK, STEP, choose_form

OPSET = 17
CELLS = {"gru": GRUStep, "lstm": LSTMStep}
ROLLOUT_BUILDERS = {
    "gru": (rollout_loop, rollout_native_loop),
    "lstm": (rollout_loop, rollout_native, rollout_native_loop),
}


def _cell(kind: str, input_size: int, hidden_size: int, output_size: int, seed: int = 0):
    torch.manual_seed(seed)
    return CELLS[kind](input_size, hidden_size, output_size).eval()


def _session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _inputs(module, batch: int, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-1, 1, (steps, batch, module.input_size)).astype(np.float32)
    states = [rng.uniform(-1, 1, (batch, module.hidden_size)).astype(np.float32) for _ in module.initial_state()]
    return xs, states


def _close(got: list[np.ndarray], expected: list, atol: float, what: str) -> None:
    for index, (g, e) in enumerate(zip(got, expected)):
        e = e.numpy() if isinstance(e, torch.Tensor) else e
        assert g.shape == e.shape, f"{what} output {index}: {g.shape} vs {e.shape}"
        np.testing.assert_allclose(g, e, atol=atol, rtol=0, err_msg=f"{what} output {index}")


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("sizes", [(1, 3, 1), (2, 16, 3)])
@pytest.mark.parametrize("batch", [1, 3, 64])
@pytest.mark.parametrize("steps", [1, 13, 1000])
def test_sequence_form_matches_eager_torch(kind, sizes, batch, steps):
    module = _cell(kind, *sizes)
    session = _session(sequence_native(CellWeights.from_module(module), OPSET, {}))
    xs, states = _inputs(module, batch, steps, seed=batch + steps)
    names = ("h", "c")[: len(states)]
    got = session.run(None, {"xs": xs, **dict(zip(names, states))})
    ys, new = predict_eager(module, torch.from_numpy(xs), [torch.from_numpy(s) for s in states])
    _close(got, [ys, *new], SEQUENCE_ATOL, f"{kind} sequence_rnn")


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("sizes", [(1, 3, 1), (2, 16, 2)])
@pytest.mark.parametrize("batch", [1, 3, 64])
@pytest.mark.parametrize("steps", [2, 10, 11, 21, 1000])
def test_rollout_forms_match_eager_torch(kind, sizes, batch, steps):
    module = _cell(kind, *sizes)
    weights = CellWeights.from_module(module)
    xs, states = _inputs(module, batch, 1, seed=batch * 7 + steps)
    names = ("h", "c")[: len(states)]
    ys, new = generate_eager(module, torch.from_numpy(xs[0]), steps, [torch.from_numpy(s) for s in states])
    for build in ROLLOUT_BUILDERS[kind]:
        got = _session(build(weights, OPSET, {})).run(
            None, {"x0": xs[0], **dict(zip(names, states)), "steps": np.array([steps], np.int64)}
        )
        _close(got, [ys, *new], ROLLOUT_ATOL, f"{kind} {build.__name__}")


def test_a_gru_does_not_fold_into_its_kernel():
    with pytest.raises(ValueError, match="candidate gate"):
        rollout_native(CellWeights.from_module(_cell("gru", 1, 3, 1)), OPSET, {})


@pytest.fixture(scope="module", params=["gru", "lstm"])
def cell_export(request, tmp_path_factory):
    kind = request.param
    folder = tmp_path_factory.mktemp(kind) / "model"
    train_folder(TrainConfig(cell=kind, epochs=3, seed=5, hidden_size=7), folder)
    export_folder(folder)
    return kind, folder


def test_export_writes_the_kept_forms_and_the_manifest_lists_them(cell_export):
    kind, folder = cell_export
    manifest = json.loads((folder / "manifest.json").read_text())
    entries = {entry["role"]: entry for entry in manifest["files"]}
    for form in CELL_FORMS[kind]:
        entry = entries[form]
        assert entry["name"] == f"{form}.onnx"
        assert entry["sha256"] == hashlib.sha256((folder / entry["name"]).read_bytes()).hexdigest()
        assert manifest["producers"][entry["name"]].startswith("export.fused_cells")
        assert (folder / "test_data" / form / "test_data_set_0" / "output_0.pb").is_file()
    assert runtime.load(folder).forms == ("step", *CELL_FORMS[kind])


@pytest.mark.parametrize("batch", [1, 3, 64])
@pytest.mark.parametrize("steps", [2, 11, 1000])
def test_runtime_fused_forms_agree_with_the_step_loop(cell_export, batch, steps):
    kind, folder = cell_export
    model = runtime.load(folder)
    rng = np.random.default_rng(batch * 1000 + steps)
    xs = rng.uniform(-1, 1, (steps, batch, 1)).astype(np.float32)
    state = tuple(rng.uniform(-1, 1, (batch, 7)).astype(np.float32) for _ in model.state_names)
    reference = model.predict(xs, state, form="step")
    for form in (None, "sequence_rnn"):
        ys, new = model.predict(xs, state, form=form)
        _close([ys, *new], [reference[0], *reference[1]], SEQUENCE_ATOL, f"{kind} predict {form}")
    reference = model.generate(xs[0], steps, state, form="step")
    rollout = next(form for form in CELL_FORMS[kind] if form.startswith("rollout"))
    for form in (None, rollout):
        ys, new = model.generate(xs[0], steps, state, form=form)
        _close([ys, *new], [reference[0], *reference[1]], 2 * ROLLOUT_ATOL, f"{kind} generate {form}")


def test_choice_for_gated_cells_keeps_the_step_loop_where_fused_does_not_pay():
    lstm = ("step", "sequence_rnn", "rollout_rnn")
    gru = ("step", "sequence_rnn", "rollout_loop")
    assert choose_form("generate", 1, 1000, lstm, "lstm", 100) == "rollout_rnn"
    assert choose_form("generate", 64, 1000, lstm, "lstm", 16) == "rollout_rnn"
    assert choose_form("generate", 64, 1000, lstm, "lstm", 100) == STEP
    assert choose_form("predict", 64, 1000, gru, "gru", 16) == "sequence_rnn"
    assert choose_form("generate", 1, 1000, gru, "gru", 100) == "rollout_loop"
    assert choose_form("generate", 64, 1000, gru, "gru", 64) == "rollout_loop"  # 4096: the limit
    assert choose_form("predict", 64, 1000, gru, "gru", 64) == STEP  # the GRU kernel stops paying first
    assert choose_form("generate", 64, 1000, gru, "gru", 100) == STEP
    assert choose_form("generate", 1, 1, gru, "gru", 4) == STEP
    assert GATED_MAX_WORK["lstm", "generate"] < GATED_MAX_WORK["gru", "generate"]
    elman = ("step", "sequence_rnn", "sequence_loop", "rollout_rnn", "rollout_loop")
    assert choose_form("generate", 4096, 1000, elman, "elman", 6) == "rollout_loop"  # unchanged

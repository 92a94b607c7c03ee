"""Parity in layers: eager PyTorch vs TorchScript vs ONNX (through the runtime).

Single steps, then teacher-forced sequences, then closed-loop rollouts, at batch sizes and
lengths other than the export example (batch 2).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import runtime
from export.onnx_export import EXPORT_BATCH
from export.torchscript import load_torchscript
from export.verify import VerificationFailed, compare, divergence_horizon, verify_folder
from export.verify import ROLLOUT_ATOL, SEQUENCE_ATOL, STEP_ATOL
from rnn.eager import generate_eager, predict_eager
from rnn.checkpoint import load_checkpoint
from runtime.manifest import MANIFEST_NAME, file_entry, read_manifest, write_manifest

BATCHES = (1, 3, 64)
STEPS = (1, 20, 1000)


@pytest.fixture(scope="module")
def forms(exported_folder):
    eager = load_checkpoint(exported_folder).model
    scripted = load_torchscript(exported_folder / "step.torchscript.pt")
    return eager, scripted, runtime.load(exported_folder)


def random_inputs(seed, *shape):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.mark.parametrize("batch", BATCHES)
def test_single_step(forms, batch):
    eager, scripted, onnx_model = forms
    assert batch != EXPORT_BATCH
    x, h = random_inputs(batch, batch, 1), random_inputs(batch + 100, batch, 6)
    with torch.no_grad():
        y_eager, h_eager = eager(torch.from_numpy(x), torch.from_numpy(h))
        y_script, h_script = scripted(torch.from_numpy(x), torch.from_numpy(h))
    y_onnx, (h_onnx,) = onnx_model.step(x, h)
    for got_y, got_h in ((y_script.numpy(), h_script.numpy()), (y_onnx, h_onnx)):
        np.testing.assert_allclose(got_y, y_eager.numpy(), atol=STEP_ATOL, rtol=0)
        np.testing.assert_allclose(got_h, h_eager.numpy(), atol=STEP_ATOL, rtol=0)


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("batch", (1, 3))
def test_teacher_forced_sequence(forms, steps, batch):
    eager, scripted, onnx_model = forms
    xs = random_inputs(steps * 7 + batch, steps, batch, 1)
    (h0,) = eager.initial_state(batch)
    expected, (h_expected,) = predict_eager(eager, torch.from_numpy(xs), (h0,))
    scripted_ys, (h_scripted,) = predict_eager(scripted, torch.from_numpy(xs), (h0,))
    onnx_ys, (h_onnx,) = onnx_model.predict(xs)
    assert onnx_ys.shape == (steps, batch, 1)
    for ys, h in ((scripted_ys.numpy(), h_scripted.numpy()), (onnx_ys, h_onnx)):
        np.testing.assert_allclose(ys, expected.numpy(), atol=SEQUENCE_ATOL, rtol=0)
        np.testing.assert_allclose(h, h_expected.numpy(), atol=SEQUENCE_ATOL, rtol=0)


@pytest.mark.parametrize("batch", BATCHES)
def test_closed_loop_rollout(forms, batch):
    eager, scripted, onnx_model = forms
    x0, h0 = random_inputs(batch, batch, 1), random_inputs(batch + 1, batch, 6)
    expected, _ = generate_eager(eager, torch.from_numpy(x0), 200, (torch.from_numpy(h0),))
    scripted_ys, _ = generate_eager(scripted, torch.from_numpy(x0), 200, (torch.from_numpy(h0),))
    onnx_ys, _ = onnx_model.generate(x0, 200, h0)
    np.testing.assert_allclose(scripted_ys.numpy(), expected.numpy(), atol=ROLLOUT_ATOL, rtol=0)
    np.testing.assert_allclose(onnx_ys, expected.numpy(), atol=ROLLOUT_ATOL, rtol=0)


def test_onnx_graph_has_a_symbolic_batch_and_the_contract_names(exported_folder):
    model = onnx.load(str(exported_folder / "step.onnx"))
    assert [i.name for i in model.graph.input] == ["x", "h"]
    assert [o.name for o in model.graph.output] == ["y", "h_out"]
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.opset_import[0].version == 17
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["model_kind"] == "elman" and metadata["hidden_size"] == "6"
    assert metadata["state_names"] == "h" and "toolkit_version" in metadata
    onnx.checker.check_model(model, full_check=True)


def test_verify_folder_passes_and_writes_a_report(exported_copy):
    report = verify_folder(exported_copy)
    assert report.passed
    checks = {(c.form, c.check) for c in report.comparisons}
    for form in ("torchscript", "onnx"):
        for check in ("step b=1", "step b=3", "step b=64", "sequence data T=20", "rollout data T=200", "rollout b=64 T=200"):
            assert (form, check) in checks
    for form in ("sequence_rnn", "sequence_loop"):  # every fused form at batch 1, 3, 64 and 4096
        for check in ("sequence data T=20", "sequence b=3 T=1000", "sequence b=64 T=200", "sequence b=4096 T=200"):
            assert (form, check) in checks
    for form in ("rollout_rnn", "rollout_loop"):
        for check in ("rollout data T=200", "rollout b=3 T=200", "rollout b=64 T=200", "rollout b=4096 T=200"):
            assert (form, check) in checks
    assert not any(c.form.startswith("sequence") and c.check.startswith("rollout") for c in report.comparisons)
    assert set(report.horizons) == {"eager", "torchscript", "onnx", "rollout_rnn", "rollout_loop"}
    written = json.loads((exported_copy / "verify.json").read_text())
    assert written["passed"] is True and len(written["comparisons"]) == len(report.comparisons)
    assert "max abs" in report.table() and "divergence horizon" in report.table()


def plant(folder, scale_w1, file="step.onnx", initializer_name="w1"):
    """Rewrites an ONNX file with one initializer scaled, and re-hashes it so that it loads (a
    silent export bug of the kind verification exists to catch)."""
    path = folder / file
    model = onnx.load(str(path))
    found = False
    for initializer in model.graph.initializer:
        if initializer.name == initializer_name:
            scaled = numpy_helper.to_array(initializer) * scale_w1
            initializer.CopyFrom(numpy_helper.from_array(scaled.astype(np.float32), initializer_name))
            found = True
    assert found, f"{file} has no initializer {initializer_name}"
    onnx.save(model, str(path))
    manifest = read_manifest(folder)
    files = tuple(file_entry(folder, f.name, f.role) if f.name == file else f for f in manifest.files)
    write_manifest(folder, type(manifest)(**{**manifest.__dict__, "files": files}))


def test_a_planted_export_error_fails_verification_with_every_failure_reported(exported_copy):
    plant(exported_copy, 1.01)
    report = verify_folder(exported_copy)
    assert not report.passed
    failed = [c for c in report.comparisons if not c.passed]
    assert failed and all(c.form == "onnx" for c in failed)
    assert {c.check for c in failed} >= {"step b=1", "step b=64", "rollout data T=200"}
    assert all(c.max_abs > c.tolerance and c.max_rel is not None for c in failed)
    assert "FAIL" in report.table() and "exceeds the tolerance" in report.table()
    with pytest.raises(VerificationFailed, match="comparisons failed"):
        verify_folder(exported_copy, raise_on_failure=True)


@pytest.mark.parametrize(
    "file, initializer, form, kind",
    [
        ("sequence_rnn.onnx", "R", "sequence_rnn", "sequence"),
        ("sequence_loop.onnx", "W_xT", "sequence_loop", "sequence"),
        ("rollout_rnn.onnx", "R", "rollout_rnn", "rollout"),
        ("rollout_loop.onnx", "RT", "rollout_loop", "rollout"),
    ],
)
def test_a_planted_error_in_a_fused_form_fails_that_form_only(exported_copy, file, initializer, form, kind):
    plant(exported_copy, 1.002, file, initializer)
    report = verify_folder(exported_copy, write=False)
    failed = [c for c in report.comparisons if not c.passed]
    assert failed and {c.form for c in failed} == {form}
    assert all(c.check.startswith(kind) for c in failed)
    assert any("b=4096" in c.check for c in failed)


@pytest.mark.parametrize("scale, passes", [(1 + 2e-6, True), (1 + 1e-4, False)])
def test_tolerances_pass_rounding_level_differences_and_catch_small_errors(exported_copy, scale, passes):
    # 2e-6 relative in w1 is a few float32 roundings: it must pass, with the error measured.
    # 1e-4 relative is a real (if small) export error: the single-step check must catch it.
    plant(exported_copy, scale)
    report = verify_folder(exported_copy, write=False)
    steps = [c for c in report.comparisons if c.check.startswith("step") and c.form == "onnx"]
    assert max(c.max_abs for c in steps) > 0
    assert report.passed is passes
    assert all(c.passed for c in steps) is passes


def test_compare_checks_names_then_shapes_then_values():
    expected = {"y": np.zeros((2, 1)), "h_out": np.zeros((2, 6))}
    results = compare("f", "c", expected, {"y": np.zeros((3, 1)), "extra": np.zeros(1)}, 1e-5)
    problems = {r.output: r.problem for r in results}
    assert "shape (3, 1)" in problems["y"]
    assert "output missing" in problems["h_out"]
    assert "unexpected output" in problems["extra"]
    assert not any(r.passed for r in results)
    nan = compare("f", "c", {"y": np.zeros(2)}, {"y": np.array([0.0, np.nan])}, 1e-5)
    assert not nan[0].passed and "NaN" in nan[0].problem
    good = compare("f", "c", {"y": np.ones(2)}, {"y": np.ones(2) + 1e-6}, 1e-5)
    assert good[0].passed and good[0].max_abs == pytest.approx(1e-6) and good[0].max_rel == pytest.approx(1e-6)


def test_divergence_horizon():
    truth = np.zeros(10)
    rollout = np.array([0, 0, 5e-4, 2e-3, 0, 0, 0, 0, 0, 0])
    assert divergence_horizon(rollout, truth) == 4
    assert divergence_horizon(truth, truth) is None


def test_manifest_is_written_last(exported_folder):
    # The manifest's own listing must cover every model file; verify.json is a report, not listed.
    names = {f.name for f in read_manifest(exported_folder).files}
    assert names == {"step.onnx", "step.torchscript.pt", "weights.pt", "config.json", "sequence_rnn.onnx",
                     "sequence_loop.onnx", "rollout_rnn.onnx", "rollout_loop.onnx"}
    assert (exported_folder / MANIFEST_NAME).is_file()


def test_trusted_steps():
    from export.verify import trusted_steps

    exact = np.zeros((10, 2, 1))
    drifting = exact + (np.arange(10) * 1e-5).reshape(10, 1, 1)  # float32 leaving float64 linearly
    assert trusted_steps(drifting, exact, 1e-4) is None  # within the tolerance throughout
    assert trusted_steps(drifting, exact, 3.5e-5) == 4  # steps 0-3 trusted
    assert trusted_steps(drifting + 1, exact, 1e-5) == 1  # never fewer than one step


def test_a_model_that_amplifies_rounding_is_verified_where_float32_holds(tmp_path):
    from export import export_folder
    from rnn.config import TrainConfig
    from rnn.train import train_folder

    folder = tmp_path / "wide"
    train_folder(TrainConfig(hidden_size=16, epochs=300, seed=1), folder)  # chaotic: eager leaves float64 by step ~330
    export_folder(folder)
    report = verify_folder(folder, write=False)
    assert report.passed, report.table()
    assert report.limits, "the report names the checks the model's own drift limited"
    limited = report.limits["rollout data T=200"]
    assert limited["steps"] is not None and limited["float32_drift"] > 0
    assert "amplifies rounding" in report.table()
    plant(folder, 1.002, "rollout_loop.onnx", "RT")  # a real error still fails, drift or not
    failed = [c for c in verify_folder(folder, write=False).comparisons if not c.passed]
    assert failed and {c.form for c in failed} == {"rollout_loop"}

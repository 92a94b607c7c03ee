"""export.verify: parity in layers (single steps, teacher-forced sequences, closed-loop rollouts)
of TorchScript, ONNX and every fused form against eager PyTorch, and planted errors it must catch.

The layers themselves are verify_folder's; these tests check that it runs them at batch sizes
and lengths other than the export example (batch 2), and that it fails where it must.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import runtime
from export import VerificationFailed, export_folder
from export.onnx_export import EXPORT_BATCH, export_step_onnx
from export.torchscript import script_step
from export.verify import compare, divergence_horizon, verify_folder
from rnn.checkpoint import load_checkpoint
from rnn.config import TrainConfig
from rnn.model import GRUStep
from rnn.train import train_folder
from runtime.manifest import file_entry, read_manifest, write_manifest

from ..conftest import plant


def test_verify_folder_passes_and_writes_a_report(exported_copy):
    report = verify_folder(exported_copy, trust=True)
    assert report.passed
    assert EXPORT_BATCH not in (1, 3, 64)
    checks = {(c.form, c.check) for c in report.comparisons}
    for form in ("torchscript", "onnx"):  # batch 1, 3, 64; steps 1, 20, 1000
        for check in (
            "step b=1",
            "step b=3",
            "step b=64",
            "sequence b=3 T=1",
            "sequence data T=20",
            "sequence b=3 T=1000",
            "rollout data T=200",
            "rollout b=3 T=200",
            "rollout b=64 T=200",
        ):
            assert (form, check) in checks
    assert {c.output for c in report.comparisons if c.check == "step b=3"} == {"y", "h_out"}
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


def test_a_planted_export_error_fails_verification_with_every_failure_reported(exported_copy):
    plant(exported_copy, 1.01)
    report = verify_folder(exported_copy, trust=True)
    assert not report.passed
    failed = [c for c in report.comparisons if not c.passed]
    assert failed and all(c.form == "onnx" for c in failed)
    assert {c.check for c in failed} >= {"step b=1", "step b=64", "rollout data T=200"}
    assert all(c.max_abs > c.tolerance and c.max_rel is not None for c in failed)
    assert "FAIL" in report.table() and "exceeds the tolerance" in report.table()
    with pytest.raises(VerificationFailed, match="comparisons failed"):
        verify_folder(exported_copy, raise_on_failure=True, trust=True)


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
    report = verify_folder(exported_copy, write=False, trust=True)
    failed = [c for c in report.comparisons if not c.passed]
    assert failed and {c.form for c in failed} == {form}
    assert all(c.check.startswith(kind) for c in failed)
    assert any("b=4096" in c.check for c in failed)


@pytest.mark.parametrize("scale, passes", [(1 + 2e-6, True), (1 + 1e-4, False)])
def test_tolerances_pass_rounding_level_differences_and_catch_small_errors(exported_copy, scale, passes):
    # 2e-6 relative in w1 is a few float32 roundings: it must pass, with the error measured.
    # 1e-4 relative is a real (if small) export error: the single-step check must catch it.
    plant(exported_copy, scale)
    report = verify_folder(exported_copy, write=False, trust=True)
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


def test_trusted_steps():
    from export.verify import trusted_steps

    exact = np.zeros((10, 2, 1))
    drifting = exact + (np.arange(10) * 1e-5).reshape(10, 1, 1)  # float32 leaving float64 linearly
    assert trusted_steps(drifting, exact, 1e-4) is None  # within the tolerance throughout
    assert trusted_steps(drifting, exact, 3.5e-5) == 4  # steps 0-3 trusted
    assert trusted_steps(drifting + 1, exact, 1e-5) == 1  # never fewer than one step


def test_a_model_that_amplifies_rounding_is_verified_where_float32_holds(tmp_path):
    folder = tmp_path / "wide"
    train_folder(TrainConfig(hidden_size=16, epochs=300, seed=1), folder)  # chaotic: eager leaves float64 by step ~330
    export_folder(folder)
    report = verify_folder(folder, write=False, trust=True)
    assert report.passed, report.table()
    assert report.limits, "the report names the checks the model's own drift limited"
    limited = report.limits["rollout data T=200"]
    assert limited["steps"] is not None and limited["float32_drift"] > 0
    assert "amplifies rounding" in report.table()
    plant(folder, 1.002, "rollout_loop.onnx", "RT")  # a real error still fails, drift or not
    failed = [c for c in verify_folder(folder, write=False, trust=True).comparisons if not c.passed]
    assert failed and {c.form for c in failed} == {"rollout_loop"}


class GRUResetBefore(GRUStep):
    """The exporter bug: the reset gate applied before the recurrent projection
    (``W_hn (r * h) + b_hn``, ONNX's linear_before_reset=0), where torch applies it after."""

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gi = x @ self.cell.weight_ih.t() + self.cell.bias_ih
        w_hr, w_hz, w_hn = self.cell.weight_hh.chunk(3, 0)
        b_hr, b_hz, b_hn = self.cell.bias_hh.chunk(3, 0)
        i_r, i_z, i_n = gi.chunk(3, 1)
        r = torch.sigmoid(i_r + h @ w_hr.t() + b_hr)
        z = torch.sigmoid(i_z + h @ w_hz.t() + b_hz)
        n = torch.tanh(i_n + (r * h) @ w_hn.t() + b_hn)
        h_next = (1 - z) * n + z * h
        return self.readout(h_next), h_next


def test_a_planted_linear_before_reset_error_is_caught(tmp_path):
    folder = tmp_path / "gru"
    train_folder(TrainConfig(cell="gru", trainer="bptt", epochs=150, seed=0), folder)
    good = load_checkpoint(folder).model
    with torch.no_grad():
        good.cell.bias_hh[12:] = 0.0  # b_hn = 0: the two formulas then agree whenever h = 0
    torch.save(good.state_dict(), folder / "weights.pt")
    export_folder(folder)
    wrong = GRUResetBefore(1, 6, 1)
    wrong.load_state_dict(good.state_dict())
    # The trap: a one-step check from the zero initial state cannot see the difference ...
    x, zero = torch.full((4, 1), 0.5), torch.zeros(4, 6)
    with torch.no_grad():
        assert (wrong(x, zero)[1] - good(x, zero)[1]).abs().max().item() < 1e-7
    manifest = read_manifest(folder)
    export_step_onnx(
        script_step(wrong),
        folder / "step.onnx",
        list(manifest.inputs),
        list(manifest.outputs),
        list(manifest.state),
        {"model_kind": "gru"},
    )
    files = tuple(file_entry(folder, f.name, f.role) if f.name == "step.onnx" else f for f in manifest.files)
    write_manifest(folder, type(manifest)(**{**manifest.__dict__, "files": files}))
    # ... verification's random states in [-1, 1] and its sequences see it at once.
    report = verify_folder(folder, write=False, trust=True)
    assert not report.passed
    failed = [c for c in report.comparisons if not c.passed]
    assert {c.form for c in failed} == {"onnx"}
    assert any(c.check.startswith("step") for c in failed) and any(c.check.startswith("rollout") for c in failed)
    worst = max(c.max_rel for c in failed)
    assert worst > 1e-3, f"max rel {worst:.3f}"
    print(
        f"\nplanted linear_before_reset error: worst max rel {worst:.3f}, "
        f"{len(failed)} of {len(report.comparisons)} comparisons failed"
    )


def test_an_untrusted_folder_never_loads_its_torchscript(exported_copy, monkeypatch):
    # Issue 10, finding 2: a rewritten step.torchscript.pt ran its code (it overwrote a file outside
    # the folder) during verification. Loading the archive is what runs it: an untrusted folder
    # must never reach torch.jit.load, a trusted one loads the bytes checked against the manifest.
    import torch

    from runtime.manifest import manifest_digest

    loads = []
    real_load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *args, **kwargs: loads.append(args) or real_load(*args, **kwargs))
    report = verify_folder(exported_copy, write=False)
    assert loads == [] and "torchscript" in report.skipped and report.passed
    assert not any(c.form == "torchscript" for c in report.comparisons)
    assert "not checked" in report.table() and "not trusted" in report.table()
    pinned = verify_folder(exported_copy, write=False, digest=manifest_digest(exported_copy))
    assert len(loads) == 1 and any(c.form == "torchscript" for c in pinned.comparisons)
    (exported_copy / "step.torchscript.pt").write_bytes(b"rewritten after export")  # not re-hashed
    with pytest.raises(runtime.IntegrityError):
        verify_folder(exported_copy, write=False, trust=True)
    assert len(loads) == 1

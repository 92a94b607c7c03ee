"""GRU and LSTM cells and the torch.export (dynamo) exporter: export, verify and run like Elman."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import runtime
from export import export_folder, verify_folder
from export.onnx_export import export_step_onnx
from export.torchscript import script_step
from toolkit.cli import cli
from rnn.eager import generate_eager
from rnn.model import GRUStep, LSTMStep
from rnn.checkpoint import load_checkpoint
from rnn.config import TrainConfig
from rnn.train import train, train_folder
from runtime.manifest import file_entry, read_manifest, write_manifest



def test_gru_step_is_torchs_gru_cell():
    torch.manual_seed(0)
    model = GRUStep(2, 5, 3)
    x, h = torch.randn(7, 2), torch.randn(7, 5)
    y, h_next = model(x, h)
    torch.testing.assert_close(h_next, model.cell(x, h), atol=1e-6, rtol=0)
    torch.testing.assert_close(y, model.readout(h_next))


def test_lstm_step_carries_two_states():
    torch.manual_seed(0)
    model = LSTMStep(1, 4, 1)
    assert model.model_config().state_names == ("h", "c") and len(model.initial_state(3)) == 2
    y, h, c = model(torch.randn(3, 1), *model.initial_state(3))
    assert y.shape == (3, 1) and h.shape == c.shape == (3, 4)


@pytest.fixture(scope="module", params=[(cell, exporter) for cell in ("gru", "lstm") for exporter in ("torchscript", "dynamo")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def cell_folder(request, tmp_path_factory):
    cell, exporter = request.param
    folder = tmp_path_factory.mktemp(f"{cell}-{exporter}") / "model"
    train_folder(TrainConfig(cell=cell, epochs=20, seed=2, hidden_size=5), folder)
    export_folder(folder, exporter=exporter)
    return cell, exporter, folder


def test_cells_export_and_verify_like_elman(cell_folder):
    cell, exporter, folder = cell_folder
    manifest = read_manifest(folder)
    names = ("h",) if cell == "gru" else ("h", "c")
    assert tuple(s.name for s in manifest.state) == names
    assert tuple(s.output for s in manifest.state) == tuple(f"{n}_out" for n in names)
    assert manifest.model["kind"] == cell and manifest.model["exporter"] == exporter
    assert ("dynamo" in manifest.producers["step.onnx"]) == (exporter == "dynamo")
    assert manifest.opset == (17 if exporter == "torchscript" else 18)
    report = verify_folder(folder)
    assert report.passed, report.table()
    checks = {c.check for c in report.comparisons if c.form == "onnx"}
    assert {"step b=1", "step b=64", "sequence b=3 T=1000", "rollout b=4096 T=200"} <= checks
    assert {c.output for c in report.comparisons} == {"y", *(f"{n}_out" for n in names)}


def test_cells_run_through_the_runtime_at_any_batch(cell_folder):
    cell, _, folder = cell_folder
    model = runtime.load(folder)
    eager = load_checkpoint(folder).model
    for batch in (1, 3, 64):
        x0 = np.random.default_rng(batch).uniform(-1, 1, (batch, 1)).astype(np.float32)
        ys, state = model.generate(x0, 50)
        assert len(state) == len(eager.model_config().state_names) and all(s.shape == (batch, 5) for s in state)
        expected, _ = generate_eager(eager, torch.from_numpy(x0), 50, eager.initial_state(batch))
        np.testing.assert_allclose(ys, expected.numpy(), atol=1e-4, rtol=0)


def test_the_test_data_of_a_two_state_model(cell_folder):
    from export.test_data import read_test_data

    cell, _, folder = cell_folder
    inputs, outputs = read_test_data(folder / "test_data" / "step" / "test_data_set_0")
    assert list(inputs) == ["x", "h"] + (["c"] if cell == "lstm" else [])
    assert list(outputs) == ["y", "h_out"] + (["c_out"] if cell == "lstm" else [])


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
    export_step_onnx(script_step(wrong), folder / "step.onnx", list(manifest.inputs), list(manifest.outputs),
                     list(manifest.state), {"model_kind": "gru"})
    files = tuple(file_entry(folder, f.name, f.role) if f.name == "step.onnx" else f for f in manifest.files)
    write_manifest(folder, type(manifest)(**{**manifest.__dict__, "files": files}))
    # ... verification's random states in [-1, 1] and its sequences see it at once.
    report = verify_folder(folder, write=False)
    assert not report.passed
    failed = [c for c in report.comparisons if not c.passed]
    assert {c.form for c in failed} == {"onnx"}
    assert any(c.check.startswith("step") for c in failed) and any(c.check.startswith("rollout") for c in failed)
    worst = max(c.max_rel for c in failed)
    assert worst > 1e-3, f"max rel {worst:.3f}"
    print(f"\nplanted linear_before_reset error: worst max rel {worst:.3f}, "
          f"{len(failed)} of {len(report.comparisons)} comparisons failed")


def test_cells_train_with_both_trainers():
    for cell in ("gru", "lstm"):
        reference = train(TrainConfig(cell=cell, epochs=40, seed=1))
        assert reference.loss_history[-1] < reference.loss_history[0]
        bptt = train(TrainConfig(cell=cell, trainer="bptt", epochs=120, seed=1))
        assert bptt.loss_history[-1] < bptt.loss_history[0] / 2


def test_cli_trains_and_runs_an_lstm(tmp_path):
    folder = tmp_path / "lstm"
    runner = CliRunner()
    assert runner.invoke(cli, ["train", "--out", str(folder), "--cell", "lstm", "--epochs", "5"]).exit_code == 0
    assert runner.invoke(cli, ["export", str(folder), "--exporter", "dynamo"]).exit_code == 0
    result = runner.invoke(cli, ["verify", str(folder)])
    assert result.exit_code == 0 and "c_out" in result.output
    generated = runner.invoke(cli, ["generate", str(folder), "--steps", "4", "--json"])
    assert len(json.loads(generated.stdout)["y"]) == 4
    info = runner.invoke(cli, ["info", str(folder)]).output
    assert "h -> h_out" in info and "c -> c_out" in info


def test_the_examples_run_a_two_state_model(tmp_path, cpp_binary, node_example):
    folder = tmp_path / "lstm"
    train_folder(TrainConfig(cell="lstm", epochs=20, seed=2, hidden_size=5), folder)
    export_folder(folder)
    expected = runtime.load(folder).generate(np.float32(np.sin(2.0)), 30)[0].reshape(-1)
    for command in (["node", str(node_example)], [str(cpp_binary)]):
        out = subprocess.run([*command, str(folder), "--steps", "30"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        values = np.array([float(line.split(",")[1]) for line in out.stdout.strip().splitlines()[1:]])
        np.testing.assert_allclose(values, expected, atol=1e-5, rtol=0, err_msg=command[0])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_cells_train_on_a_users_series(tmp_path, cell):
    series = np.cos(np.arange(200) * 0.25)
    np.save(tmp_path / "series.npy", series)
    result = train(TrainConfig(cell=cell, trainer="bptt", epochs=80, data=str(tmp_path / "series.npy")))
    assert result.metrics["teacher_forced_mse"] < np.var(series)

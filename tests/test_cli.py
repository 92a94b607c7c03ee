"""The `rnn` command line: every command, its exit codes, its files, and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import runtime
from toolkit.cli import cli

from .conftest import COMMITTED, REPO

COMMANDS = ["train", "export", "verify", "predict", "generate", "plot", "info", "demo"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def run_rnn(*args, prelude=""):
    """Runs the CLI in a fresh interpreter; ``prelude`` can hide packages first."""
    code = f"{prelude}\nimport sys\nfrom toolkit.cli import main\nsys.argv = ['rnn', *{[str(a) for a in args]!r}]\nmain()"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output
    assert "--help" in result.output


def test_train_export_verify_plot_chain(tmp_path):
    folder = tmp_path / "m"
    result = invoke("train", "--out", folder, "--epochs", 15, "--seed", 4)
    assert result.exit_code == 0, result.output
    assert (folder / "weights.pt").is_file() and (folder / "config.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["train"]["seed"] == 4 and config["train"]["epochs"] == 15
    assert len(config["loss_history"]) == 15 and config["final_loss"] == config["loss_history"][-1]
    assert invoke("export", folder).exit_code == 0
    assert (folder / "step.onnx").is_file() and (folder / "manifest.json").is_file()
    result = invoke("verify", folder)
    assert result.exit_code == 0 and "verification passed" in result.output
    result = invoke("verify", folder, "--json")
    assert json.loads(result.stdout)["passed"] is True
    result = invoke("plot", folder)
    assert result.exit_code == 0
    for name in ("prediction.png", "loss.png", "parity.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_to_another_folder(tmp_path, trained_folder):
    result = invoke("export", trained_folder, "--out", tmp_path / "out")
    assert result.exit_code == 0
    runtime.load(tmp_path / "out")


def test_verify_fails_with_exit_1_and_the_table(exported_copy):
    from .test_parity import plant

    plant(exported_copy, 1.05)
    result = invoke("verify", exported_copy)
    assert result.exit_code == 1
    assert "FAIL" in result.output and "verification FAILED" in result.output


def test_generate_csv_and_json_agree_with_the_runtime():
    result = invoke("generate", COMMITTED, "--steps", 7)
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert lines[0] == "step,y" and len(lines) == 8
    expected, _ = runtime.load(COMMITTED).generate(np.float32(np.sin(2.0)), 7)
    values = np.array([float(line.split(",")[1]) for line in lines[1:]])
    np.testing.assert_allclose(values, expected.reshape(-1), rtol=1e-7)
    document = json.loads(invoke("generate", COMMITTED, "--steps", 7, "--x0", 0.1, "--json").stdout)
    assert len(document["y"]) == 7 and document["x0"] == 0.1 and document["providers"] == ["CPUExecutionProvider"]


def test_generate_with_a_warmup_series(tmp_path):
    series = np.sin(np.linspace(2, 10, 21))
    np.savetxt(tmp_path / "warm.csv", series)
    result = invoke("generate", COMMITTED, "--steps", 3, "--warmup", tmp_path / "warm.csv", "--json")
    model = runtime.load(COMMITTED)
    _, state = model.predict(series[:-1].astype(np.float32))
    expected, _ = model.generate(np.float32(series[-1]), 3, state)
    np.testing.assert_allclose(json.loads(result.stdout)["y"], expected.reshape(-1), rtol=1e-6)


def test_predict_defaults_to_the_training_series_and_takes_a_file(tmp_path):
    result = invoke("predict", COMMITTED)
    lines = result.stdout.strip().splitlines()
    assert result.exit_code == 0 and lines[0] == "t,input,next_t,prediction,target" and len(lines) == 21
    t, x, t_next, _, target = lines[1].split(",")  # the prediction made at t is for the point at next_t
    assert (float(t), float(t_next)) == (2.0, 2.4) and float(target) == pytest.approx(np.sin(2.4), abs=1e-7)
    document = json.loads(invoke("predict", COMMITTED, "--json").stdout)
    assert document["t"][:3] == [2.0, 2.4, 2.8] and document["next_t"][-1] == 10.0  # no 4.800000000000001
    assert document["target"][-1] == pytest.approx(np.sin(10.0))
    np.save(tmp_path / "s.npy", np.linspace(-1, 1, 5))
    document = json.loads(invoke("predict", COMMITTED, "--input", tmp_path / "s.npy", "--json").stdout)
    assert len(document["prediction"]) == 5 and document["target"][-1] is None  # the point after the last is unknown
    assert document["target"][:4] == pytest.approx(list(np.linspace(-1, 1, 5)[1:]))


def test_info_text_and_json(exported_copy):
    result = invoke("info", COMMITTED)
    assert result.exit_code == 0
    assert "integrity  ok" in result.output and "h -> h_out" in result.output
    document = json.loads(invoke("info", COMMITTED, "--json").stdout)
    assert document["integrity"] == "ok" and document["format_version"] == runtime.FORMAT_VERSION
    (exported_copy / "weights.pt").write_bytes(b"changed")
    assert "integrity  FAILED" in invoke("info", exported_copy).output


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "{missing}", "--steps", "5"], "does not exist"),
        (["generate", str(COMMITTED), "--steps", "0"], "0 is not in the range x>=1"),
        (["generate", str(COMMITTED), "--steps", "-4"], "-4 is not in the range x>=1"),
        (["predict", str(COMMITTED), "--input", "{tmp}/nope.csv"], "does not exist"),
        (["predict", str(COMMITTED), "--input", "{tmp}/bad.csv"], "is not a number"),
        (["info", "{tmp}"], "has no manifest.json"),
        (["export", "{tmp}"], "has no config.json"),
        (["verify", "{missing}"], "does not exist"),
        (["train", "--out", "{tmp}/x", "--data", "{tmp}/bad.csv"], "is not a number"),
        (["generate", str(COMMITTED), "--device", "cuda"], "onnxruntime-gpu"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "bad.csv").write_text("1\n2\nthree\n")
    args = [a.format(tmp=tmp_path, missing=tmp_path / "missing") for a in args]
    result = run_rnn(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_bad_option_values_exit_2():
    for args in (["generate", str(COMMITTED), "--steps", "many"], ["train", "--out", "x", "--epochs", "0"],
                 ["train", "--out", "x", "--trainer", "magic"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, args


@pytest.mark.parametrize("command", [["train", "--epochs", "2", "--out"], ["export", str(COMMITTED), "--out"]])
def test_an_output_folder_that_cannot_be_created_is_a_one_line_error(tmp_path, command):
    blocker = tmp_path / "afile"
    blocker.write_text("x")  # a folder cannot be made below a file, not even by root
    result = run_rnn(*command, blocker / "sub" / "m")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "cannot create a folder" in result.stderr and result.stderr.strip().count("\n") == 0


def test_an_output_path_that_is_a_file_is_a_one_line_error(tmp_path):
    target = tmp_path / "afile"
    target.write_text("x")
    result = run_rnn("train", "--out", target, "--epochs", "2")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "is a file" in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


HIDE_TORCH = (
    "import sys\n"
    "for name in ('torch', 'onnx', 'matplotlib'):\n"
    "    sys.modules[name] = None  # import fails, as in an environment without them\n"
)


def test_running_commands_work_without_torch(tmp_path):
    generated = run_rnn("generate", COMMITTED, "--steps", "5", prelude=HIDE_TORCH)
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout == invoke("generate", COMMITTED, "--steps", 5).output
    assert run_rnn("predict", COMMITTED, prelude=HIDE_TORCH).returncode == 0
    assert run_rnn("info", COMMITTED, prelude=HIDE_TORCH).returncode == 0
    refused = run_rnn("train", "--out", tmp_path / "m", prelude=HIDE_TORCH)
    assert refused.returncode == 2 and "needs torch" in refused.stderr and "rnn-toolkit[train]" in refused.stderr and "Traceback" not in refused.stderr


def test_demo_produces_every_file(tmp_path):
    out = tmp_path / "demo"
    result = invoke("demo", "--out", out, "--epochs", 20, "--steps", 30)
    assert result.exit_code == 0, result.output
    for name in ("weights.pt", "config.json", "step.torchscript.pt", "step.onnx", "manifest.json",
                 "verify.json", "prediction.png", "loss.png", "parity.png", "generate.csv"):
        assert (out / name).is_file(), name
        assert str(out / name) in result.output
    assert json.loads((out / "verify.json").read_text())["passed"] is True
    assert len((out / "generate.csv").read_text().splitlines()) == 31


def test_committed_artifacts_are_what_the_default_demo_makes(tmp_path):
    # Numerically, not byte for byte: another CPU's kernels may round the 6,000 SGD updates
    # differently in the last bits; the same machine reproduces them exactly.
    import torch

    result = invoke("demo", "--out", tmp_path / "demo")
    assert result.exit_code == 0
    fresh = torch.load(tmp_path / "demo" / "weights.pt", weights_only=True)
    committed = torch.load(COMMITTED / "weights.pt", weights_only=True)
    assert fresh.keys() == committed.keys()
    for name in fresh:
        torch.testing.assert_close(fresh[name], committed[name], atol=1e-4, rtol=0)
    assert {f.name for f in runtime.read_manifest(tmp_path / "demo").files} == \
        {f.name for f in runtime.read_manifest(COMMITTED).files}
    values = [np.loadtxt(folder / "generate.csv", delimiter=",", skiprows=1) for folder in (tmp_path / "demo", COMMITTED)]
    np.testing.assert_allclose(values[0], values[1], atol=1e-3, rtol=0)
    shutil.rmtree(tmp_path / "demo")

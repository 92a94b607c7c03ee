"""toolkit.cli: the `rnn` command line: every command, its exit codes, its files, stdout vs stderr,
and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import runtime
from toolkit.cli import cli

from ..conftest import COMMITTED, REPO, plant
from ..user_modules import FOUR_STATES, MAKE_TWO_STATE, PythonOnly, make_four_state, make_two_state

COMMANDS = ["train", "export", "verify", "predict", "generate", "plot", "info", "demo"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def run_rnn(*args, prelude=""):
    """Runs the CLI in a fresh interpreter; ``prelude`` can hide packages first."""
    code = (
        f"{prelude}\nimport sys\nfrom toolkit.cli import main\nsys.argv = ['rnn', *{[str(a) for a in args]!r}]\nmain()"
    )
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
    plant(exported_copy, 1.05)
    result = invoke("verify", exported_copy)
    assert result.exit_code == 1
    assert "FAIL" in result.output and "verification FAILED" in result.output


def test_generate_csv_and_json_agree_with_the_runtime():
    result = invoke("generate", COMMITTED, "--steps", 7)
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert lines[0] == "step,y" and len(lines) == 8
    model = runtime.load(COMMITTED)  # the default start: the training series teacher-forced, then its last point
    _, warm = model.predict(np.sin(np.linspace(2, 10, 21))[:-1].reshape(-1, 1, 1).astype(np.float32))
    expected, _ = model.generate(np.float32(np.sin(10.0)), 7, warm)
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
    assert document["integrity"] == "ok" and document["format_version"] == runtime.CLASSIC_FORMAT_VERSION
    (exported_copy / "weights.pt").write_bytes(b"changed")
    assert "integrity  FAILED" in invoke("info", exported_copy).output


def test_info_lists_every_state_tensor_and_says_why_there_is_no_torchscript_file(tmp_path):
    from export import export_module

    four = export_module(make_four_state(), tmp_path / "four", input_size=2, output_size=3, states=FOUR_STATES)
    output = invoke("info", four).output
    assert [line for line in output.splitlines() if line.startswith("state")] == [
        f"state      {name} -> {name}_out (batch, {size}) float32" for name, size in FOUR_STATES
    ]
    assert "hidden_size" not in output  # the first state's size, which says nothing of the other three
    lambdas = export_module(
        PythonOnly(), tmp_path / "py", input_size=1, output_size=1, states=[("h", 4)], exporter="dynamo"
    )
    output = invoke("info", lambdas).output
    assert "torchscript not written: torch.jit.script cannot compile PythonOnly" in output and "integrity  ok" in output
    result = invoke("verify", lambdas, "--factory", "tests.user_modules:PythonOnly", "--trust")
    assert result.exit_code == 0 and "torchscript: the folder has no TorchScript file" in result.output


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
        (["export", str(COMMITTED), "--out", "{tmp}/e", "--opset", "14"], "opset 15 or later"),
        (["predict", str(COMMITTED), "--input", "{tmp}/huge.csv"], "beyond float32's range"),
        (["generate", str(COMMITTED), "--x0", "1e39"], "beyond float32's range"),
        (["bench", str(COMMITTED), "--out", "/proc/rnn-bench", "--no-cold-start"], "cannot"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "bad.csv").write_text("1\n2\nthree\n")
    (tmp_path / "huge.csv").write_text("1e39\n0.5\n")  # finite in float64, infinity in float32
    args = [a.format(tmp=tmp_path, missing=tmp_path / "missing") for a in args]
    result = run_rnn(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_bad_option_values_exit_2():
    for args in (
        ["generate", str(COMMITTED), "--steps", "many"],
        ["train", "--out", "x", "--epochs", "0"],
        ["train", "--out", "x", "--trainer", "magic"],
    ):
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
    assert (
        refused.returncode == 2
        and "needs torch" in refused.stderr
        and "rnn-toolkit[train]" in refused.stderr
        and "Traceback" not in refused.stderr
    )


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


def test_the_cli_exports_and_verifies_a_users_module(tmp_path):
    import torch

    weights = tmp_path / "w.pt"
    trained = make_two_state()
    with torch.no_grad():
        trained.out.bias.fill_(0.5)
    torch.save(trained.state_dict(), weights)
    runner = CliRunner()
    out = tmp_path / "byo"
    result = runner.invoke(
        cli,
        [
            "export-module",
            MAKE_TWO_STATE,
            "--out",
            str(out),
            "--weights",
            str(weights),
            "--state",
            "fast:4",
            "--state",
            "slow:4:0.1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert runtime.read_manifest(out).state[1].initial == (0.1,) * 4
    assert runner.invoke(cli, ["verify", str(out), "--factory", MAKE_TWO_STATE]).exit_code == 0
    loaded = torch.load(out / "weights.pt", weights_only=True)
    assert float(loaded["out.bias"][0]) == 0.5  # the given weights, not the factory's
    bad = runner.invoke(cli, ["export-module", MAKE_TWO_STATE, "--out", str(tmp_path / "b"), "--state", "fast"])
    assert bad.exit_code == 2


def test_plot_and_bench_take_the_factory(tmp_path):
    from export import export_module

    folder = export_module(
        make_two_state(),
        tmp_path / "byo",
        input_size=1,
        output_size=1,
        states=[("fast", 4), ("slow", 4, 0.1)],
        factory=MAKE_TWO_STATE,
    )
    runner = CliRunner()
    refused = runner.invoke(cli, ["plot", str(folder)])
    assert refused.exit_code == 2
    assert runner.invoke(cli, ["plot", str(folder), "--factory", MAKE_TWO_STATE]).exit_code == 0
    assert (folder / "prediction.png").is_file() and (folder / "loss.png").is_file()
    result = runner.invoke(
        cli,
        [
            "bench",
            str(folder),
            "--factory",
            MAKE_TWO_STATE,
            "--batch",
            "2",
            "--steps",
            "5",
            "--rounds",
            "1",
            "--no-cold-start",
            "--no-streams",
            "--json",
            "--trust",
        ],
    )
    assert result.exit_code == 0, result.output
    names = {r["implementation"] for r in json.loads(result.stdout)["rows"]}
    # a user's module gets the fused loops around its step graph (export.step_loops), timed like every form
    assert names == {"eager", "torchscript", "onnx step loop", "sequence_loop", "rollout_loop", "auto"}


def test_a_reader_that_closes_the_pipe_ends_generate_quietly(tmp_path):
    # Enough output (about 2 MB) to fill the pipe, so the writer really meets the closed reader.
    status = tmp_path / "status"
    command = (
        f"{sys.executable} -m toolkit.cli generate {COMMITTED} --steps 100000 | head -1; "
        f"echo ${{PIPESTATUS[0]}} > {status}"
    )
    result = subprocess.run(
        command, shell=True, executable="/bin/bash", cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.stdout == "step,y\n"
    assert result.stderr == "", result.stderr  # no "Broken pipe", no traceback
    assert int(status.read_text()) == 128 + 13  # rnn ended as a process ended by SIGPIPE does


def test_the_dynamo_exporter_below_opset_18_is_a_one_line_error(tmp_path, trained_folder):
    out = tmp_path / "out"
    result = run_rnn("export", trained_folder, "--exporter", "dynamo", "--opset", "17", "--out", out)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr, result.stderr
    assert "opset 18" in result.stderr and "opset 17" in result.stderr
    assert not out.exists(), "refused before anything is written"


def test_nonfinite_inputs_are_refused_unless_allowed():
    refused = run_rnn("generate", COMMITTED, "--x0", "nan", "--steps", "3")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().count("\n") == 0 and "Traceback" not in refused.stderr, refused.stderr
    assert "--allow-nonfinite" in refused.stderr and refused.stdout == ""
    allowed = invoke("generate", COMMITTED, "--x0", "nan", "--steps", 3, "--allow-nonfinite")
    assert allowed.exit_code == 0
    lines = allowed.stdout.strip().splitlines()
    assert lines[0] == "step,y" and len(lines) == 4 and all(line.endswith(",nan") for line in lines[1:])
    document = invoke("generate", COMMITTED, "--x0", "nan", "--steps", 2, "--allow-nonfinite", "--json").stdout
    assert json.loads(document)["y"] == [None, None] and "NaN" not in document  # strict JSON: null


def test_a_missing_data_file_for_training_is_the_users_input_not_a_recorded_one(tmp_path):
    result = run_rnn("train", "--out", tmp_path / "x", "--data", tmp_path / "missing.csv")
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr and "missing.csv" in result.stderr
    assert "recorded" not in result.stderr and "trained on" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and not (tmp_path / "x").exists()


def test_verify_writes_progress_to_stderr_and_the_table_to_stdout(exported_copy):
    result = invoke("verify", exported_copy)
    assert result.exit_code == 0
    assert "verifying" in result.stderr and "verifying" not in result.stdout
    assert "verification passed" in result.stdout and "max abs" in result.stdout
    assert "verification passed" not in result.stderr and "max abs" not in result.stderr
    assert json.loads(invoke("verify", exported_copy, "--json").stdout)["passed"] is True  # stdout is the JSON alone


def test_demo_writes_stages_to_stderr_and_the_table_and_files_to_stdout(tmp_path):
    out = tmp_path / "demo"
    result = invoke("demo", "--epochs", 5, "--out", out)
    assert result.exit_code == 0, result.output
    stages = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert [line[:5] for line in stages] == [f"[{n}/6]" for n in range(1, 7)]  # the bptt trainer's stage too
    assert "[1/6]" not in result.stdout
    assert "verification passed" in result.stdout and "max abs" in result.stdout
    listed = result.stdout
    for entry in runtime.read_manifest(out).files:
        assert str(out / entry.name) in listed, entry.name
    for name in ("sequence_rnn.onnx", "rollout_loop.onnx", "test_data", "manifest.json"):
        assert str(out / name) in listed, name
    assert (out / "test_data").is_dir()


def test_info_prints_the_digest_and_every_loading_command_honours_a_pin(exported_copy):
    from runtime.manifest import manifest_digest

    digest = manifest_digest(exported_copy)
    assert f"digest     {digest}" in invoke("info", exported_copy).stdout
    assert json.loads(invoke("info", exported_copy, "--json").stdout)["manifest_sha256"] == digest
    for command in (["generate", "--steps", "2"], ["predict"], ["info"]):
        assert invoke(command[0], exported_copy, *command[1:], "--digest", digest).exit_code == 0
        refused = run_rnn(command[0], exported_copy, *command[1:], "--digest", "0" * 64)
        assert refused.returncode == 2 and "pinned digest" in refused.stderr, refused.stderr
        assert refused.stderr.strip().count("\n") == 0


def test_verify_loads_torchscript_only_for_a_trusted_folder_and_binds_its_report(exported_copy):
    from runtime.manifest import manifest_digest

    untrusted = invoke("verify", exported_copy)
    assert untrusted.exit_code == 0 and "torchscript: not loaded" in untrusted.stdout
    said = "TorchScript not checked: this folder is not trusted (--digest, --public-key or --trust loads it)"
    assert said in untrusted.stderr.splitlines()  # one line before the table (stderr), not only in it
    assert "torchscript " not in untrusted.stdout.split("not checked:")[0]  # no comparison rows
    report = json.loads((exported_copy / "verify.json").read_text())
    assert report["manifest_sha256"] == manifest_digest(exported_copy) and "torchscript" in report["skipped"]
    pinned = invoke("verify", exported_copy, "--digest", manifest_digest(exported_copy))
    assert pinned.exit_code == 0 and "torchscript    step b=1" in pinned.stdout and said not in pinned.stderr
    assert invoke("verify", exported_copy, "--trust").exit_code == 0
    assert "verified   passed" in invoke("info", exported_copy).stdout
    (exported_copy / "verify.json").write_text(json.dumps({**report, "manifest_sha256": "f" * 64}))
    assert "another manifest" in invoke("info", exported_copy).stdout  # a report of another manifest

"""Bring your own step module: export_module, verification with its factory, and clear failures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import runtime
from export import ExportError, export_module, verify_folder
from toolkit.cli import cli
from rnn.eager import generate_eager
from runtime.errors import ArtifactError, InputValueError

from .user_modules import DataDependent, NotScriptable, TwoStateLeaky, WrongProtocol, make_two_state

FACTORY = "tests.user_modules:make_two_state"


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_users_two_state_module_exports_verifies_and_runs(tmp_path, exporter):
    module = make_two_state()
    folder = export_module(module, tmp_path / "byo", input_size=1, output_size=1,
                           states=[("fast", 4), ("slow", 4, 0.25)], exporter=exporter, factory=FACTORY)
    manifest = runtime.read_manifest(folder)
    assert [s.name for s in manifest.state] == ["fast", "slow"]
    assert manifest.state[1].initial == (0.25,) * 4
    assert manifest.model["kind"] == "custom" and manifest.model["factory"] == FACTORY
    report = verify_folder(folder, factory=make_two_state)
    assert report.passed, report.table()
    model = runtime.load(folder)
    assert model.forms == ("step",)
    ys, (fast, slow) = model.generate(np.float32(0.3), 40)
    initial = (torch.zeros(1, 4), torch.full((1, 4), 0.25))
    expected, _ = generate_eager(module, torch.full((1, 1), 0.3), 40, initial)
    np.testing.assert_allclose(ys, expected.numpy(), atol=1e-4, rtol=0)


def test_verifying_a_custom_folder_needs_the_factory(tmp_path):
    folder = export_module(make_two_state(), tmp_path / "byo", input_size=1, output_size=1,
                           states=[("fast", 4), ("slow", 4)], factory=FACTORY)
    with pytest.raises(ArtifactError, match="pass its factory explicitly"):
        verify_folder(folder)
    assert verify_folder(folder, factory=FACTORY).passed  # by name, as the CLI does


def test_a_module_that_cannot_be_scripted_names_the_construct(tmp_path):
    with pytest.raises(ExportError, match=r"torch.jit.script cannot compile NotScriptable: .*open"):
        export_module(NotScriptable(), tmp_path / "x", input_size=1, output_size=1, states=[("h", 4)])
    assert not (tmp_path / "x").exists()


def test_a_module_torch_export_cannot_trace_is_a_clear_error(tmp_path):
    module = DataDependent()
    export_module(module, tmp_path / "ts", input_size=1, output_size=1, states=[("h", 4)])  # scripts fine
    with pytest.raises(ExportError, match="the dynamo exporter cannot export DataDependent"):
        export_module(module, tmp_path / "dyn", input_size=1, output_size=1, states=[("h", 4)], exporter="dynamo")


@pytest.mark.parametrize(
    "states, message",
    [([], "at least one state"), ([("h", 0)], "positive integer size"), ([("x", 4)], "not 'x'"),
     ([("h", 4), ("h", 4)], "distinct"), ([("h", 2, [0.1])], "initial has 1 values"), ([("1h", 4)], "identifier")],
)
def test_bad_state_specifications(tmp_path, states, message):
    with pytest.raises(InputValueError, match=message):
        export_module(TwoStateLeaky(), tmp_path / "x", input_size=1, output_size=1, states=states)


def test_a_module_that_breaks_the_protocol(tmp_path):
    with pytest.raises(ExportError, match=r"forward must return \(y, h\)"):
        export_module(WrongProtocol(), tmp_path / "x", input_size=1, output_size=1, states=[("h", 4)])
    with pytest.raises(ExportError, match=r"calling the module as forward\(x, fast, slow\) failed: RuntimeError"):
        export_module(make_two_state(), tmp_path / "x", input_size=1, output_size=1, states=[("fast", 5), ("slow", 4)])


def test_the_cli_exports_and_verifies_a_users_module(tmp_path):
    weights = tmp_path / "w.pt"
    trained = make_two_state()
    with torch.no_grad():
        trained.out.bias.fill_(0.5)
    torch.save(trained.state_dict(), weights)
    runner = CliRunner()
    out = tmp_path / "byo"
    result = runner.invoke(cli, ["export-module", FACTORY, "--out", str(out), "--weights", str(weights),
                                 "--state", "fast:4", "--state", "slow:4:0.1"])
    assert result.exit_code == 0, result.output
    assert runtime.read_manifest(out).state[1].initial == (0.1,) * 4
    assert runner.invoke(cli, ["verify", str(out), "--factory", FACTORY]).exit_code == 0
    loaded = torch.load(out / "weights.pt", weights_only=True)
    assert float(loaded["out.bias"][0]) == 0.5  # the given weights, not the factory's
    bad = runner.invoke(cli, ["export-module", FACTORY, "--out", str(tmp_path / "b"), "--state", "fast"])
    assert bad.exit_code == 2


def test_plot_and_bench_take_the_factory(tmp_path):
    folder = export_module(make_two_state(), tmp_path / "byo", input_size=1, output_size=1,
                           states=[("fast", 4), ("slow", 4, 0.1)], factory=FACTORY)
    runner = CliRunner()
    refused = runner.invoke(cli, ["plot", str(folder)])
    assert refused.exit_code == 2
    assert runner.invoke(cli, ["plot", str(folder), "--factory", FACTORY]).exit_code == 0
    assert (folder / "prediction.png").is_file() and (folder / "loss.png").is_file()
    result = runner.invoke(cli, ["bench", str(folder), "--factory", FACTORY, "--batch", "2", "--steps", "5",
                                 "--rounds", "1", "--no-cold-start", "--no-streams", "--json"])
    assert result.exit_code == 0, result.output
    names = {r["implementation"] for r in __import__("json").loads(result.stdout)["rows"]}
    assert names == {"eager", "torchscript", "onnx step loop", "auto"}

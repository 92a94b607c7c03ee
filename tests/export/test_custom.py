"""export.custom: bring your own step module: export_module, verification with its factory, clear failures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import runtime
from export import ExportError, export_module, verify_folder
from rnn.eager import generate_eager
from runtime.errors import ArtifactError, InputValueError

from ..user_modules import MAKE_TWO_STATE as FACTORY
from ..user_modules import DataDependent, NotScriptable, TwoStateLeaky, WrongProtocol, make_two_state


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_users_two_state_module_exports_verifies_and_runs(tmp_path, exporter):
    module = make_two_state()
    folder = export_module(
        module,
        tmp_path / "byo",
        input_size=1,
        output_size=1,
        states=[("fast", 4), ("slow", 4, 0.25)],
        exporter=exporter,
        factory=FACTORY,
    )
    manifest = runtime.read_manifest(folder)
    assert [s.name for s in manifest.state] == ["fast", "slow"]
    assert manifest.state[1].initial == (0.25,) * 4
    assert manifest.model["kind"] == "custom" and manifest.model["factory"] == FACTORY
    report = verify_folder(folder, factory=make_two_state, trust=True)
    assert report.passed, report.table()
    model = runtime.load(folder)
    assert model.forms == ("step",)
    ys, (fast, slow) = model.generate(np.float32(0.3), 40)
    initial = (torch.zeros(1, 4), torch.full((1, 4), 0.25))
    expected, _ = generate_eager(module, torch.full((1, 1), 0.3), 40, initial)
    np.testing.assert_allclose(ys, expected.numpy(), atol=1e-4, rtol=0)


def test_verifying_a_custom_folder_needs_the_factory(tmp_path):
    folder = export_module(
        make_two_state(),
        tmp_path / "byo",
        input_size=1,
        output_size=1,
        states=[("fast", 4), ("slow", 4)],
        factory=FACTORY,
    )
    with pytest.raises(ArtifactError, match="pass its factory explicitly"):
        verify_folder(folder, trust=True)
    assert verify_folder(folder, factory=FACTORY, trust=True).passed  # by name, as the CLI does


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
    [
        ([], "at least one state"),
        ([("h", 0)], "integer size from 1 to 4096"),
        ([("x", 4)], "not 'x'"),
        ([("h", 4), ("h", 4)], "distinct"),
        ([("h", 2, [0.1])], "initial has 1 values"),
        ([("1h", 4)], "identifier"),
    ],
)
def test_bad_state_specifications(tmp_path, states, message):
    with pytest.raises(InputValueError, match=message):
        export_module(TwoStateLeaky(), tmp_path / "x", input_size=1, output_size=1, states=states)


def test_a_module_that_breaks_the_protocol(tmp_path):
    with pytest.raises(ExportError, match=r"forward must return \(y, h\)"):
        export_module(WrongProtocol(), tmp_path / "x", input_size=1, output_size=1, states=[("h", 4)])
    with pytest.raises(ExportError, match=r"calling the module as forward\(x, fast, slow\) failed: RuntimeError"):
        export_module(make_two_state(), tmp_path / "x", input_size=1, output_size=1, states=[("fast", 5), ("slow", 4)])

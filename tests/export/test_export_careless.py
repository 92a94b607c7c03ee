"""The exporter under careless users (issue 23, points 10-12): factories that cannot build a module,
classes of a script run by runpy, files an export writes that nothing could load, and the hint
towards the dynamo exporter where TorchScript cannot compile a module."""

from __future__ import annotations

import dataclasses
import json
import re
import runpy

import numpy as np
import pytest
import torch

import runtime
from export import export_module
from export.factories import build_module, checked_factory
from export.torchscript import UNNAMABLE_FIX, load_torchscript, load_torchscript_checked, save_torchscript, script_step
from runtime.errors import ArtifactError, ExportError, InputValueError
from runtime.manifest import STEP_TORCHSCRIPT_NAME, file_entry, manifest_digest, read_manifest, write_manifest

from ..user_modules import (
    MAKE_FAILING,
    MAKE_NOT_A_MODULE,
    MAKE_SIZED_CELL,
    SIZED_CELL,
    PythonOnly,
    SizedCell,
    make_sized_cell,
    make_two_state,
)

STATES = [("h", 4)]
SCRIPT = """
import torch
from torch import nn

from export import export_module


class ScriptCell(nn.Module):
    def __init__(self):
        super().__init__()
        self.rec = nn.Linear(5, 4)
        self.out = nn.Linear(4, 1)

    def forward(self, x, h):
        h_next = torch.tanh(self.rec(torch.cat((x, h), 1)))
        return self.out(h_next), h_next

"""
EXPORT = """
torch.manual_seed(12)
cell = ScriptCell()
export_module(cell, OUT, input_size=1, output_size=1, states=[("h", 4)], exporter=EXPORTER)
"""


def run_script(tmp_path, out, run_name, exporter="torchscript", export=True):
    """Runs a user's script that defines its module class and exports it, as `python script.py`
    (run_name "__main__") or runpy.run_path does ("<run_path>"); its globals."""
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT + (EXPORT if export else ""))
    return runpy.run_path(str(script), {"OUT": str(out), "EXPORTER": exporter}, run_name=run_name)


def staging_left(parent):
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


# ---- factories called with no arguments ------------------------------------------------------


@pytest.mark.parametrize("factory", [SIZED_CELL, SizedCell])
def test_a_class_that_needs_arguments_is_refused_with_the_fix(factory):
    with pytest.raises(InputValueError) as caught:
        build_module(factory)
    message = str(caught.value)
    assert "is called with no arguments" in message and "class SizedCell needs hidden" in message
    assert "def build(): return SizedCell(hidden=...)" in message and "tests.user_modules:build" in message
    assert "\n" not in message


def test_a_factory_that_raises_or_builds_no_module_is_one_typed_line():
    with pytest.raises(ExportError, match=r"^the factory tests.user_modules:make_failing raised: FileNotFoundError: "):
        build_module(MAKE_FAILING)
    with pytest.raises(
        InputValueError, match=r"make_not_a_module returned OrderedDict, not a torch.nn.Module: .* --weights"
    ):
        build_module(MAKE_NOT_A_MODULE)
    with pytest.raises(InputValueError, match=r"'tests.user_modules' has no callable 'missing'"):
        build_module("tests.user_modules:missing")


def test_the_fixed_factory_builds_the_seeded_module():
    built = build_module(MAKE_SIZED_CELL)
    again = make_sized_cell()
    assert isinstance(built, SizedCell)
    for (name, value), (_, expected) in zip(built.state_dict().items(), again.state_dict().items()):
        assert torch.equal(value, expected), name


def test_checked_factory_is_lazy_and_wraps_once():
    wrapped = checked_factory("tests.user_modules:missing")  # resolved when called, not now
    assert checked_factory(wrapped) is wrapped and checked_factory(None) is None
    with pytest.raises(InputValueError, match="has no callable 'missing'"):
        wrapped()


def test_verify_with_a_factory_that_needs_arguments_is_one_typed_line(tmp_path):
    from export import verify_folder

    folder = tmp_path / "sized"
    export_module(make_sized_cell(), folder, input_size=1, output_size=1, states=STATES, factory=MAKE_SIZED_CELL)
    with pytest.raises(InputValueError, match="class SizedCell needs hidden"):
        verify_folder(folder, factory=SIZED_CELL, write=False)


# ---- a class of a script: load back before the folder is done --------------------------------


def test_a_class_of_a_runpy_script_is_refused_and_no_folder_is_left(tmp_path):
    out = tmp_path / "from_runpy"
    with pytest.raises(ExportError) as caught:
        run_script(tmp_path, out, "<run_path>")
    message = str(caught.value)
    assert message.startswith(f"{STEP_TORCHSCRIPT_NAME} was written but torch.jit.load cannot load it back")
    assert "class ScriptCell is defined in '<run_path>'" in message and "importable module" in message
    assert "\n" not in message
    assert not out.exists() and staging_left(tmp_path) == []


def test_a_refused_export_leaves_the_earlier_folder_as_it_was(tmp_path):
    out = tmp_path / "model"
    export_module(make_two_state(), out, input_size=1, output_size=1, states=[("fast", 4), ("slow", 4)])
    digest = manifest_digest(out)
    with pytest.raises(ExportError, match="cannot load it back"):
        run_script(tmp_path, out, "<run_path>")
    assert manifest_digest(out) == digest and staging_left(tmp_path) == []
    model = runtime.load(out)
    y, _ = model.step(np.full((5, 1), 0.25, np.float32), model.initial_state(5))  # batch 5: not the probe's 3
    expected, *_ = make_two_state()(torch.full((5, 1), 0.25), torch.zeros(5, 4), torch.zeros(5, 4))
    np.testing.assert_allclose(y, expected.detach().numpy(), atol=1e-6)


def test_a_class_of_a_main_script_exports_a_loadable_archive(tmp_path):
    out = tmp_path / "from_main"
    names = run_script(tmp_path, out, "__main__")
    cell = names["cell"]
    assert type(cell).__module__ == "__main__"
    x, h = torch.linspace(-1, 1, 7).reshape(7, 1), torch.linspace(0.5, -0.5, 28).reshape(7, 4)  # batch 7
    expected = [t.detach().numpy() for t in cell(x, h)]
    scripted = load_torchscript(out / STEP_TORCHSCRIPT_NAME)
    for got, want in zip(scripted(x, h), expected):
        np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-6)
    model = runtime.load(out)
    y, (h_next,) = model.step(x.numpy(), (h.numpy(),))
    np.testing.assert_allclose(y, expected[0], atol=1e-5)
    np.testing.assert_allclose(h_next, expected[1], atol=1e-5)


def test_dynamo_export_of_a_runpy_class_skips_the_archive_and_says_why(tmp_path):
    out = tmp_path / "dynamo"
    run_script(tmp_path, out, "<run_path>", exporter="dynamo")
    assert not (out / STEP_TORCHSCRIPT_NAME).exists()
    why = json.loads((out / "manifest.json").read_text())["model"]["torchscript_skipped"]
    assert "'<run_path>'" in why and "importable module" in why and "--exporter dynamo" not in why
    model = runtime.load(out)
    ys, _ = model.predict(np.linspace(-1, 1, 22, dtype=np.float32).reshape(11, 2, 1))  # 11 steps, batch 2
    assert ys.shape == (11, 2, 1) and np.all(np.isfinite(ys)) and np.ptp(ys) > 0


def _truncated(name, keep=0.5):
    """Cuts ``name`` in the finished staging folder to ``keep`` of its bytes and rehashes its
    manifest entry (so the sha256 check passes and only reading the file can tell)."""

    def corrupt(folder):
        path = folder / name
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
        manifest = read_manifest(folder)
        files = tuple(file_entry(folder, e.name, e.role) if e.name == name else e for e in manifest.files)
        write_manifest(folder, dataclasses.replace(manifest, files=files))

    return corrupt


@pytest.mark.parametrize(
    "name",
    ["step.onnx", "sequence_loop.onnx", "rollout_loop.onnx", "weights.pt", "config.json", "test_data/step"],
)
def test_every_written_file_is_loaded_back(tmp_path, monkeypatch, name):
    import export.artifact as artifact

    real = artifact.load_back

    def corrupted_then_loaded_back(folder):
        if name.startswith("test_data"):
            target = next((folder / name).rglob("input_0.pb"))
            target.write_bytes(b"\x0a\xff\xff")  # a length that runs past the end
        else:
            _truncated(name)(folder)
        return real(folder)

    monkeypatch.setattr(artifact, "load_back", corrupted_then_loaded_back)
    out = tmp_path / "model"
    with pytest.raises(ExportError, match=r"was written but cannot be loaded back") as caught:
        export_module(make_two_state(), out, input_size=1, output_size=1, states=[("fast", 4), ("slow", 4)])
    assert name in str(caught.value) and "\n" not in str(caught.value)
    assert not out.exists() and staging_left(tmp_path) == []


def test_an_unloadable_archive_in_a_folder_is_an_artifact_error(tmp_path):
    folder = tmp_path / "model"
    export_module(make_sized_cell(), folder, input_size=1, output_size=1, states=STATES)
    _truncated(STEP_TORCHSCRIPT_NAME)(folder)
    entry = read_manifest(folder).file("step_torchscript")
    with pytest.raises(ArtifactError, match=r"^step.torchscript.pt cannot be loaded by torch.jit.load \(RuntimeError"):
        load_torchscript_checked(folder, entry)


def test_an_archive_of_a_runpy_class_exported_before_the_load_back_names_the_fix(tmp_path):
    folder = tmp_path / "model"
    export_module(make_sized_cell(), folder, input_size=1, output_size=1, states=STATES)
    cell = run_script(tmp_path, None, "<run_path>", export=False)["ScriptCell"]()  # forward(x, h) as SizedCell's
    save_torchscript(script_step(cell), folder)  # what an export wrote before it loaded its files back
    _truncated(STEP_TORCHSCRIPT_NAME, keep=1.0)(folder)
    with pytest.raises(ArtifactError) as caught:
        load_torchscript_checked(folder, read_manifest(folder).file("step_torchscript"))
    message = str(caught.value)
    assert re.search(r"\(at: __torch__\.<run_path>\.(___torch_mangle_\d+\.)?ScriptCell\)", message), message
    assert message.endswith(UNNAMABLE_FIX) and "\n" not in message


# ---- the hint towards the dynamo exporter ------------------------------------------------------


def test_a_scripting_failure_suggests_the_dynamo_exporter(tmp_path):
    torch.manual_seed(9)
    with pytest.raises(ExportError) as caught:
        export_module(PythonOnly(), tmp_path / "x", input_size=1, output_size=1, states=STATES)
    message = str(caught.value)
    assert message.startswith("torch.jit.script cannot compile PythonOnly: ")
    assert message.endswith('try --exporter dynamo (exporter="dynamo" in Python)')
    assert not (tmp_path / "x").exists()

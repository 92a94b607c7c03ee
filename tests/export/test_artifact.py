"""export.artifact: exporting a trained folder: the files, the replacement of folders, what is refused."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

import runtime
from export import ExportError, export_folder, verify_folder
from export.torchscript import load_torchscript
from rnn.checkpoint import load_checkpoint
from runtime.errors import ArtifactError
from runtime.manifest import MANIFEST_NAME, read_manifest

from ..conftest import kill_inside


def test_export_in_place_adds_the_files(tmp_path, trained_folder):
    folder = tmp_path / "m"
    shutil.copytree(trained_folder, folder)
    assert export_folder(folder) == folder
    names = {p.name for p in folder.iterdir()}
    assert {"weights.pt", "config.json", "step.torchscript.pt", "step.onnx", "manifest.json"} <= names
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")], "no staging folder left behind"
    scripted = load_torchscript(folder / "step.torchscript.pt")
    eager = load_checkpoint(folder).model
    x, h = torch.randn(5, 1), torch.randn(5, 6)
    assert torch.equal(scripted(x, h)[1], eager(x, h)[1])


def test_manifest_is_written_last(exported_folder):
    # The manifest's own listing must cover every model file; verify.json is a report, not listed.
    names = {f.name for f in read_manifest(exported_folder).files}
    assert names == {
        "step.onnx",
        "step.torchscript.pt",
        "weights.pt",
        "config.json",
        "sequence_rnn.onnx",
        "sequence_loop.onnx",
        "rollout_rnn.onnx",
        "rollout_loop.onnx",
    }
    assert (exported_folder / MANIFEST_NAME).is_file()


def test_export_to_another_folder_leaves_the_source_alone(tmp_path, trained_folder):
    before = sorted(p.name for p in trained_folder.iterdir())
    out = export_folder(trained_folder, tmp_path / "elsewhere")
    assert sorted(p.name for p in trained_folder.iterdir()) == before
    assert runtime.load(out).state_sizes == (6,)


def test_reexport_replaces_the_folder_and_drops_the_stale_report(tmp_path, trained_folder):
    folder = tmp_path / "m"
    shutil.copytree(trained_folder, folder)
    export_folder(folder)
    verify_folder(folder, trust=True)
    (folder / "notes.txt").write_text("kept")
    inode = folder.stat().st_ino
    export_folder(folder)
    assert folder.stat().st_ino != inode, "the folder is swapped whole, not edited in place"
    assert not (folder / "verify.json").exists(), "a report of the old files must not survive"
    assert (folder / "notes.txt").read_text() == "kept"
    runtime.load(folder)


def test_export_refuses_to_replace_an_unrelated_folder(tmp_path, trained_folder):
    other = tmp_path / "documents"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(ArtifactError, match="not empty"):
        export_folder(trained_folder, other)
    assert (other / "thesis.tex").read_text() == "precious"


def test_export_without_a_trained_model(tmp_path):
    with pytest.raises(ArtifactError, match="has no config.json"):
        export_folder(tmp_path)
    with pytest.raises(ArtifactError, match="does not exist"):
        export_folder(tmp_path / "missing")


def test_a_failure_mid_export_leaves_the_previous_folder_intact(tmp_path, trained_folder, monkeypatch):
    folder = tmp_path / "m"
    shutil.copytree(trained_folder, folder)
    export_folder(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    def broken(*args, **kwargs):
        raise RuntimeError("simulated crash inside the ONNX exporter")

    monkeypatch.setattr("export.artifact.export_step_onnx", broken)
    with pytest.raises(ExportError, match="simulated crash inside the ONNX exporter"):
        export_folder(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]
    runtime.load(folder)


def test_sigkill_mid_export_leaves_the_previous_folder_loadable(tmp_path, trained_folder):
    folder = tmp_path / "m"
    shutil.copytree(trained_folder, folder)
    export_folder(folder)
    kill_inside("export.artifact", "export_step_onnx", f"m.export_folder({str(folder)!r})", tmp_path / "inside")
    model = runtime.load(folder)  # the old folder, hashes and all
    assert model.generate(0.5, 10)[0].shape == (10, 1, 1)
    assert verify_folder(folder, write=False, trust=True).passed
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".")]
    for name in leftovers:  # a killed export may leave its hidden staging folder, never a manifest
        assert not (tmp_path / name / "manifest.json").exists()


def test_cells_export_and_verify_like_elman(cell_folder):
    cell, exporter, folder = cell_folder
    manifest = read_manifest(folder)
    names = ("h",) if cell == "gru" else ("h", "c")
    assert tuple(s.name for s in manifest.state) == names
    assert tuple(s.output for s in manifest.state) == tuple(f"{n}_out" for n in names)
    assert manifest.model["kind"] == cell and manifest.model["exporter"] == exporter
    assert ("dynamo" in manifest.producers["step.onnx"]) == (exporter == "dynamo")
    assert manifest.opset == (17 if exporter == "torchscript" else 18)
    report = verify_folder(folder, trust=True)
    assert report.passed, report.table()
    checks = {c.check for c in report.comparisons if c.form == "onnx"}
    assert {"step b=1", "step b=64", "sequence b=3 T=1000", "rollout b=4096 T=200"} <= checks
    assert {c.output for c in report.comparisons} == {"y", *(f"{n}_out" for n in names)}

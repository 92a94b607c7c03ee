"""The committed `artifacts/sine-elman` is what the current exporter makes of its weights: exporting
its `weights.pt` and `config.json` again, from another directory, gives the committed folder's
bytes and so its manifest digest (pins written down elsewhere hold), and its verify.json is about
that manifest. Remake it so (the folder's exported files and verify.json; the plots and
generate.csv come from `rnn demo` and do not depend on the export's bytes):

    mkdir -p /tmp/src && cp artifacts/sine-elman/{weights.pt,config.json} /tmp/src
    rnn export /tmp/src --out /tmp/out && cp /tmp/out/{step.torchscript.pt,manifest.json} artifacts/sine-elman
    rnn verify artifacts/sine-elman --trust        # rewrites verify.json for the new digest
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runtime.manifest import manifest_digest

from ..conftest import COMMITTED
from .test_reproducible import files_of

EXPORTED_BY = ("step.torchscript.pt", "manifest.json")  # what the exporter writes beside the given weights


@pytest.fixture(scope="module")
def reexported(tmp_path_factory) -> Path:
    """The committed weights and config exported again, in a directory of their own."""
    from export import export_folder

    source = tmp_path_factory.mktemp("elsewhere") / "trained"
    source.mkdir()
    for name in ("weights.pt", "config.json"):
        shutil.copyfile(COMMITTED / name, source / name)
    return Path(export_folder(source, tmp_path_factory.mktemp("again") / "sine-elman"))


def committed_versions() -> dict:
    return json.loads((COMMITTED / "manifest.json").read_text())["versions"]


def test_exporting_the_committed_weights_again_gives_the_committed_folder(reexported):
    versions = json.loads((reexported / "manifest.json").read_text())["versions"]
    if versions != committed_versions():  # another torch/onnx writes other bytes: nothing to compare
        pytest.skip(f"the committed artifact was exported with other versions: {committed_versions()} here {versions}")
    again, committed = files_of(reexported), files_of(COMMITTED)
    assert set(EXPORTED_BY) <= again.keys() and any(name.startswith("test_data/") for name in again)
    assert again.keys() <= committed.keys()  # the demo's plots, csv and verify.json come on top
    assert [name for name in again if again[name] != committed[name]] == []
    assert manifest_digest(reexported) == manifest_digest(COMMITTED)
    listed = {entry["name"] for entry in json.loads(again["manifest.json"])["files"]}
    assert {"step.torchscript.pt", "weights.pt", "step.onnx", "rollout_rnn.onnx"} <= listed


def test_the_committed_verify_report_is_about_the_committed_manifest():
    report = json.loads((COMMITTED / "verify.json").read_text())
    assert report["manifest_sha256"] == manifest_digest(COMMITTED)
    assert report["passed"] is True and report["skipped"] == {}
    forms = {row["form"] for row in report["comparisons"]}
    assert {"torchscript", "onnx", "rollout_rnn", "rollout_loop", "sequence_rnn", "sequence_loop"} <= forms
    assert all(row["passed"] for row in report["comparisons"])
    assert not Path(report["folder"]).is_absolute()  # no path of the machine that verified it

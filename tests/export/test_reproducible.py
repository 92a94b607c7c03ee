"""Reproducible exports: the same fixed-seed model exported from two directories gives the same
bytes in every file, so the same manifest digest (pinning and signing rely on it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from export.torchscript import relative_source_path

from ..conftest import REPO

# A user's step module, written as a file into each directory.
STEP_MODULE = """
import torch
from torch import nn


class Step(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.Linear(4, 3)
        self.head = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        h_next = torch.tanh(self.cell(torch.cat((x, h), 1)))
        return self.head(h_next), h_next
"""

# Run in a fresh process from ``root``: a trained Elman folder exported, and the user's module
# exported with export_module; prints where the sources came from and the manifest digests.
EXPORT_BOTH = """
import json, sys
sys.path[:0] = sys.argv[2:]
import torch
torch.set_num_threads(1)
import rnn.model, stepmod
from export import export_folder, export_module
from rnn.config import TrainConfig
from rnn.train import train_folder
from runtime.manifest import manifest_digest
out = sys.argv[1]
train_folder(TrainConfig(seed=3, epochs=4), out + "/builtin")
export_folder(out + "/builtin")
torch.manual_seed(7)
export_module(stepmod.Step(), out + "/module", input_size=1, output_size=1, states=[("h", 3)])
print(json.dumps({"sources": [rnn.model.__file__, stepmod.__file__], "order": list(set(torch.nn.Linear.__constants__)),
                  "digests": [manifest_digest(out + "/builtin"), manifest_digest(out + "/module")]}))
"""


def export_from(module_dir: Path, package_dir: Path, out: Path, hash_seed: int) -> dict:
    """Exports both models in a fresh process whose string hash seed is ``hash_seed``."""
    (module_dir / "stepmod.py").write_text(STEP_MODULE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": str(hash_seed)}
    command = [sys.executable, "-c", EXPORT_BOTH, str(out), str(module_dir), str(package_dir)]
    done = subprocess.run(command, cwd=module_dir, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_same_model_exported_from_two_directories_is_byte_identical(tmp_path):
    copy, elsewhere = tmp_path / "copy", tmp_path / "elsewhere"
    copy.mkdir()
    elsewhere.mkdir()
    for package in ("rnn", "export", "runtime"):  # a second checkout of the packages
        shutil.copytree(REPO / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    first = export_from(copy, copy, tmp_path / "out-copy", hash_seed=1)
    second = export_from(elsewhere, REPO, tmp_path / "out-checkout", hash_seed=2)
    assert first["order"] != second["order"]  # TorchScript meets Linear's constants in two orders
    assert first["sources"] == [str(copy / "rnn" / "model.py"), str(copy / "stepmod.py")]
    assert second["sources"] == [str(REPO / "rnn" / "model.py"), str(elsewhere / "stepmod.py")]
    for kind in ("builtin", "module"):
        a, b = files_of(tmp_path / "out-copy" / kind), files_of(tmp_path / "out-checkout" / kind)
        assert "step.torchscript.pt" in a and "manifest.json" in a
        assert a.keys() == b.keys(), kind
        assert [name for name in a if a[name] != b[name]] == [], kind
    assert first["digests"] == second["digests"]
    # The archives carry the sources' package paths, not where they lay.
    archive = zipfile.ZipFile(tmp_path / "out-copy" / "builtin" / "step.torchscript.pt")
    debug = archive.read("step.torchscript/code/__torch__/rnn/model.py.debug_pkl")
    assert b"rnn/model.py" in debug and str(copy).encode() not in debug
    step = zipfile.ZipFile(tmp_path / "out-checkout" / "module" / "step.torchscript.pt")
    names = [n for n in step.namelist() if n.endswith(".debug_pkl")]
    assert names and all(str(elsewhere).encode() not in step.read(n) for n in names)
    assert all(b"stepmod.py" in step.read(n) for n in names if "stepmod" in n)


def test_the_loaded_archive_runs_and_names_the_relative_source(tmp_path):
    import torch

    from export.torchscript import load_torchscript, save_torchscript, script_step
    from rnn.model import ElmanRNN

    torch.manual_seed(0)
    model = ElmanRNN(1, 5, 1).eval()
    loaded = load_torchscript(save_torchscript(script_step(model), tmp_path))
    x, h = torch.randn(3, 1), torch.randn(3, 5)
    for got, want in zip(loaded(x, h), model(x, h)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match=r'File "rnn/model.py", line \d+'):
        loaded(x, torch.randn(3, 4))  # a wrong state size: the trace names the source file relatively


@pytest.mark.parametrize(
    ("source", "module", "relative"),
    [
        (PurePosixPath("/srv/a/rnn/model.py"), ("rnn", "model"), "rnn/model.py"),
        (PurePosixPath("/tmp/x/stepmod.py"), ("stepmod",), "stepmod.py"),
        (PurePosixPath("/tmp/x/other.py"), ("__main__",), "other.py"),
        (PureWindowsPath("C:/work/pkg/m.py"), ("pkg", "m"), "pkg/m.py"),
    ],
)
def test_relative_source_path(source, module, relative):
    assert relative_source_path(source, module) == relative

"""The layers contract (pyproject.toml, [tool.importlinter]): nothing imports upward, the runtime is torch-free."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGES = ("toolkit", "export", "rnn", "runtime")
LAYERS = "Layers: toolkit (application) -> export -> rnn (core) -> runtime"
TORCH_FREE = "The runtime is torch-free: numpy and onnxruntime only"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """Runs lint-imports on the packages under ``root`` (its pyproject.toml, its copy of the code)."""
    if not LINT_IMPORTS.is_file():
        pytest.skip("import-linter is not installed (the dev extra)")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_tree_keeps_both_contracts():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{LAYERS} KEPT" in result.stdout and f"{TORCH_FREE} KEPT" in result.stdout
    assert "2 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    verify = tmp_path / "export" / "verify.py"
    verify.write_text(verify.read_text() + "\nimport toolkit.cli  # planted: export must not import the application\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert f"{LAYERS} BROKEN" in result.stdout and f"{TORCH_FREE} KEPT" in result.stdout
    assert "export.verify -> toolkit.cli" in result.stdout

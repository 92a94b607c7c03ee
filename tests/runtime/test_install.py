"""The plain install: a fresh venv with the package and no extras runs the torch-free running commands."""

from __future__ import annotations

import os
import subprocess
import sys

from ..conftest import COMMITTED, REPO


def test_a_torch_free_install_runs_the_running_commands(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python, rnn = venv / "bin" / "python", venv / "bin" / "rnn"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(REPO)], capture_output=True, text=True, timeout=900
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    no_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    for module in ("onnx", "matplotlib"):
        assert subprocess.run([str(python), "-c", f"import {module}"], capture_output=True).returncode != 0
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    light = subprocess.run(
        [str(rnn), "generate", str(COMMITTED), "--steps", "50"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    full = subprocess.run(
        [sys.executable, "-m", "toolkit.cli", "generate", str(COMMITTED), "--steps", "50"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert light.returncode == 0, light.stderr
    assert light.stdout == full.stdout
    for command in (["info", str(COMMITTED)], ["predict", str(COMMITTED)]):
        assert (
            subprocess.run([str(rnn), *command], capture_output=True, timeout=120, cwd=tmp_path, env=env).returncode
            == 0
        )
    refused = subprocess.run(
        [str(rnn), "train", "--out", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert refused.returncode == 2 and "rnn-toolkit[train]" in refused.stderr and "Traceback" not in refused.stderr

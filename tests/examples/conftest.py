"""What the C++, Node.js and browser example tests share: the Python runtime's rollout to compare with."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import runtime

from ..conftest import COMMITTED, REPO, npm_installed

EMBED_ATOL = 1e-5  # C++ and Node.js against the Python runtime over 200 steps (the bound); the
# reference-trainer artifacts amplify rounding (7.9e-6 measured), so they are held to ROLLOUT_ATOL
STEPS = 200


def python_generate(folder=COMMITTED, steps=STEPS):
    ys, _ = runtime.load(folder).generate(np.float32(np.sin(2.0)), steps)
    return ys.reshape(-1).astype(np.float64)


def read_csv(text):
    lines = text.strip().splitlines()
    assert lines[0] == "step,y"
    return np.array([float(line.split(",")[1]) for line in lines[1:]])


@pytest.fixture(scope="session")
def lstm_folder(tmp_path_factory):
    """An LSTM (two state tensors) trained for a few epochs and exported."""
    from export import export_folder
    from rnn.config import TrainConfig
    from rnn.train import train_folder

    folder = tmp_path_factory.mktemp("lstm") / "model"
    train_folder(TrainConfig(cell="lstm", epochs=20, seed=2, hidden_size=5), folder)
    return export_folder(folder)


def run_two_state(command, folder):
    """The example's 30 generated values for ``folder``, checked against the Python runtime."""

    expected = runtime.load(folder).generate(np.float32(np.sin(2.0)), 30)[0].reshape(-1)
    out = subprocess.run([*command, str(folder), "--steps", "30"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    values = np.array([float(line.split(",")[1]) for line in out.stdout.strip().splitlines()[1:]])
    np.testing.assert_allclose(values, expected, atol=1e-5, rtol=0, err_msg=command[0])


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def web_page():
    """examples/web ready to drive: Debian's chromium present (`.ci/run` installs it), the page's
    npm packages installed once."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set CHROMIUM)")
    return npm_installed(REPO / "examples" / "web", "puppeteer-core", "the browser page's tests")

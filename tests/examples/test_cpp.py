"""examples/cpp: the C++ example (libtorch, step.torchscript.pt) against the Python runtime."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from export import export_folder
from export.verify import ROLLOUT_ATOL

from ..conftest import COMMITTED
from .conftest import EMBED_ATOL, STEPS, python_generate, read_csv, run_two_state


@pytest.fixture(scope="module")
def stable_folder(tmp_path_factory):
    """A bptt-trained model: its closed loop damps rounding differences instead of amplifying them."""
    from rnn.config import TrainConfig
    from rnn.train import train_folder

    folder = tmp_path_factory.mktemp("stable") / "model"
    train_folder(TrainConfig(trainer="bptt", epochs=400, seed=1), folder)
    return export_folder(folder)


def test_cpp_example_matches_the_python_runtime(cpp_binary, stable_folder):
    for folder, bound in ((stable_folder, EMBED_ATOL), (COMMITTED, ROLLOUT_ATOL)):
        result = subprocess.run(
            [str(cpp_binary), str(folder), "--steps", str(STEPS)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        values = read_csv(result.stdout)
        assert len(values) == STEPS
        difference = np.max(np.abs(values - python_generate(folder)))
        print(f"\nC++ vs Python runtime, {folder.name}: {difference:.2e}")
        assert difference <= bound, folder


def test_cpp_example_errors(cpp_binary, tmp_path):
    result = subprocess.run([str(cpp_binary), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "error:" in result.stderr
    result = subprocess.run([str(cpp_binary), str(COMMITTED), "--steps", "0"], capture_output=True, text=True)
    assert result.returncode == 2 and "--steps" in result.stderr


def test_cpp_example_runs_a_two_state_model(cpp_binary, lstm_folder):
    run_two_state([str(cpp_binary)], lstm_folder)

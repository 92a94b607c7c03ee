"""examples/cpp: the C++ example (libtorch, step.torchscript.pt) against the Python runtime."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from export import export_folder
from export.verify import ROLLOUT_ATOL

from ..conftest import COMMITTED, REPO
from .conftest import (
    EMBED_ATOL,
    STEPS,
    check_general_errors,
    check_general_example,
    python_generate,
    read_column,
    read_csv,
    run_example,
    run_two_state,
)


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


# ---- format 2 folders (the step model once per step, from step.torchscript.pt) ----------------


def test_cpp_example_runs_format_2_folders_as_the_python_reference(cpp_binary, general_folders, tmp_path):
    check_general_example([str(cpp_binary)], general_folders, tmp_path)


def test_cpp_example_seeded_draws_are_the_node_examples(cpp_binary, general_folders):
    """The same mulberry32 generator as examples/node, so one --seed gives one token sequence."""
    arguments = ["--steps", "40", "--sample", "temperature", "--seed", "5"]
    tokens = read_column(run_example([str(cpp_binary)], general_folders["char"], *arguments), "token")
    assert len(tokens) == 40 and set(tokens.tolist()) <= set(range(11))
    if shutil.which("node") is not None and (REPO / "examples" / "node" / "node_modules" / "onnxruntime-node").is_dir():
        node = [str(shutil.which("node")), str(REPO / "examples" / "node" / "generate.js")]
        same = read_column(run_example(node, general_folders["char"], *arguments, "--form", "step"), "token")
        np.testing.assert_array_equal(tokens, same)


def test_cpp_example_format_2_errors_are_one_line(cpp_binary, general_folders, tmp_path):
    check_general_errors([str(cpp_binary)], general_folders, tmp_path)
    result = run_example([str(cpp_binary)], general_folders["char"], "--form", "rollout_greedy")
    assert result.returncode == 2 and "runs the step model" in result.stderr

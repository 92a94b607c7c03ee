"""examples/node: the Node.js example (onnxruntime-node) against the Python runtime."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from export.verify import ROLLOUT_ATOL

from ..conftest import COMMITTED
from .conftest import EMBED_ATOL, STEPS, python_generate, read_csv, run_two_state


@pytest.mark.parametrize("form", [None, "step", "rollout_loop"])
def test_node_example_matches_the_python_runtime(node_example, form):
    command = ["node", str(node_example), str(COMMITTED), "--steps", str(STEPS)] + (["--form", form] if form else [])
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    values = read_csv(result.stdout)
    assert len(values) == STEPS
    reference = python_generate()
    if form is None:  # the same fused model as the Python runtime's choice at batch 1
        assert np.max(np.abs(values - reference)) <= 1e-6
    assert np.max(np.abs(values - reference)) <= (EMBED_ATOL if form is None else ROLLOUT_ATOL)


def test_node_example_errors(node_example, tmp_path):
    result = subprocess.run(["node", str(node_example), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "manifest.json cannot be read" in result.stderr


def test_node_example_runs_a_two_state_model(node_example, lstm_folder):
    run_two_state(["node", str(node_example)], lstm_folder)

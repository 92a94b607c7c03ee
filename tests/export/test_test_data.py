"""export.test_data: the self-check inputs and outputs (ONNX model zoo layout) of every ONNX model."""

from __future__ import annotations

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from export.test_data import read_test_data

from ..conftest import COMMITTED
from .conftest import session, tolerance


def test_committed_test_data_runs_in_onnxruntime_and_the_reference_evaluator():
    forms = sorted(p.name for p in (COMMITTED / "test_data").iterdir())
    assert forms == ["rollout_loop", "rollout_rnn", "sequence_loop", "sequence_rnn", "step"]
    for form in forms:
        inputs, expected = read_test_data(COMMITTED / "test_data" / form / "test_data_set_0")
        model_path = COMMITTED / ("step.onnx" if form == "step" else f"{form}.onnx")
        got = dict(zip(expected, session(model_path).run(list(expected), inputs)))
        reference = dict(zip(expected, ReferenceEvaluator(onnx.load(str(model_path))).run(list(expected), inputs)))
        for name, want in expected.items():
            np.testing.assert_allclose(got[name], want, atol=tolerance(form), rtol=0, err_msg=f"{form} {name} ort")
            np.testing.assert_allclose(
                reference[name], want, atol=tolerance(form), rtol=0, err_msg=f"{form} {name} ref"
            )


def test_the_test_data_of_a_two_state_model(cell_folder):
    cell, _, folder = cell_folder
    inputs, outputs = read_test_data(folder / "test_data" / "step" / "test_data_set_0")
    assert list(inputs) == ["x", "h"] + (["c"] if cell == "lstm" else [])
    assert list(outputs) == ["y", "h_out"] + (["c_out"] if cell == "lstm" else [])

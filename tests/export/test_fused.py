"""export.fused: the fused loop models (native RNN kernel and ONNX Loop) for any hidden size."""

from __future__ import annotations

import pytest

import runtime
from export import export_folder, verify_folder
from rnn.config import TrainConfig
from rnn.train import train_folder
from runtime.fused import ROLLOUT_FORMS, SEQUENCE_FORMS, STEP


@pytest.mark.parametrize("hidden_size", [1, 3, 11])
def test_fused_forms_are_correct_for_any_hidden_size(tmp_path, hidden_size):
    folder = tmp_path / f"h{hidden_size}"
    train_folder(TrainConfig(hidden_size=hidden_size, epochs=15, seed=4), folder)
    export_folder(folder)
    model = runtime.load(folder)
    assert model.forms == (STEP, *SEQUENCE_FORMS, *ROLLOUT_FORMS) and model.state_sizes == (hidden_size,)
    report = verify_folder(folder, write=False, trust=True)
    assert report.passed, report.table()
    assert {c.form for c in report.comparisons} >= {"sequence_rnn", "sequence_loop", "rollout_rnn", "rollout_loop"}

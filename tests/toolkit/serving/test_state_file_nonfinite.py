"""A state file of --state-dir holding NaN (issue 23 point 8): not resumed, set aside, with a line
naming the sequence and no advice of an option the server lacks (`rnn serve` has no
--allow-nonfinite, and a state file is no place for allow_nonfinite=True)."""

from __future__ import annotations

import base64
import json

import numpy as np

import runtime
from runtime.streams import state_to_bytes
from toolkit.serving.server import STATE_FORMAT

from ...conftest import COMMITTED


def _state_file(state_dir, model, values_by_id) -> None:
    state_dir.mkdir(mode=0o700)
    sequences = []
    for key, value in values_by_id.items():
        state = [np.full(spec.count, value, np.float32) for spec in model.states]
        sequences.append({"id": key, "state": base64.b64encode(state_to_bytes(model, state)).decode(), "version": 0})
    (state_dir / "sine.sequences.json").write_text(json.dumps({"format": STATE_FORMAT, "sequences": sequences}))


def test_a_state_file_holding_nan_is_set_aside_naming_the_sequence(tmp_path, start_server):
    model = runtime.load(COMMITTED)
    state_dir = tmp_path / "state"
    _state_file(state_dir, model, {7: 0.25, "walker-2": np.nan})
    said = []
    server = start_server(state_dir=state_dir, say=said.append)
    refused = [line for line in said if line.startswith("not resumed:")]
    assert len(refused) == 1, said
    assert "sequence 'walker-2' holds NaN or infinity" in refused[0], refused
    assert "allow" not in refused[0] and "\n" not in refused[0]
    assert (state_dir / "sine.sequences.not-resumed.json").is_file()
    assert not server.engine.served["sine"].sequences  # all of a file or none of it


def test_a_finite_state_file_still_resumes(tmp_path, start_server):
    model = runtime.load(COMMITTED)
    state_dir = tmp_path / "state"
    _state_file(state_dir, model, {3: 0.5, 4: -0.75})
    said = []
    server = start_server(state_dir=state_dir, say=said.append)
    assert any(line.startswith("resumed 2 sequence(s)") for line in said), said
    assert sorted(server.engine.served["sine"].sequences) == [3, 4]

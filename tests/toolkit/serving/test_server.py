"""The embeddable server: --state-dir resumes all of a file or none of it, never loses or
overwrites a file it could not resume, and refuses an empty token."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as httpclient

import runtime
from tests.conftest import COMMITTED
from toolkit.serving import Limits, Server, Settings


def _start(client, key):
    x = httpclient.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.array([[0.5]], np.float32))
    client.infer("sine", [x], sequence_id=key, sequence_start=True)


def _saved(tmp_path, start_server, keys):
    state_dir = tmp_path / "state"
    server = start_server(state_dir=state_dir)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    for key in keys:
        _start(client, key)
    server.stop()
    return state_dir, state_dir / "sine.sequences.json"


def test_a_file_with_one_bad_entry_resumes_nothing_and_is_set_aside(tmp_path, start_server):
    state_dir, path = _saved(tmp_path, start_server, [1, 2, 3])
    document = json.loads(path.read_text())
    document["sequences"][1]["state"] = "bm90IGEgc3RhdGU="  # base64 of bytes that are no state
    path.write_text(json.dumps(document))
    said = []
    server = start_server(state_dir=state_dir, say=said.append)
    assert any(line.startswith("not resumed:") for line in said), said
    assert len(server.engine.served["sine"].sequences) == 0
    aside = state_dir / "sine.sequences.not-resumed.json"
    assert json.loads(aside.read_text()) == document and not path.exists()


def test_more_saved_sequences_than_room_resume_none(tmp_path, start_server):
    state_dir, path = _saved(tmp_path, start_server, [1, 2, 3])
    said = []
    server = start_server(state_dir=state_dir, settings=Settings(limits=Limits(max_sequences=2)), say=said.append)
    assert any("3 sequences saved, room for 2" in line for line in said), said
    assert len(server.engine.served["sine"].sequences) == 0
    assert (state_dir / "sine.sequences.not-resumed.json").exists()


def test_a_busy_port_loses_no_saved_sequence(tmp_path, start_server):
    state_dir, path = _saved(tmp_path, start_server, [7])
    blocker = start_server()
    with pytest.raises(runtime.DataError, match="cannot listen"):
        Server(
            [("sine", COMMITTED)], http_port=blocker.http_port, grpc_port=0, state_dir=state_dir, say=lambda line: None
        ).start()
    assert path.exists()  # the start failed before it resumed anything


def test_an_empty_token_is_refused():
    with pytest.raises(runtime.InputValueError, match="the token is empty"):
        Server([("sine", COMMITTED)], token="  ")

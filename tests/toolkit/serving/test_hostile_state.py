"""--state-dir under careless restarts (issue 23): a file that cannot be resumed is set aside and
never overwritten, however many starts in a row cannot resume one; saves are owner-only; the
temporary file of a save killed midway is removed at the next start; --token-file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import tritonclient.http as httpclient

import runtime
from toolkit.serving import Limits, Settings
from toolkit.serving.server import read_token_file


def _save(start_server, state_dir, keys) -> dict:
    server = start_server(state_dir=state_dir)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    for key in keys:
        x = httpclient.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.array([[0.25]], np.float32))
        client.infer("sine", [x], sequence_id=key, sequence_start=True)
    server.stop()
    return json.loads((state_dir / "sine.sequences.json").read_text())


def test_files_not_resumed_are_never_overwritten(tmp_path, start_server):
    """Three starts in a row that cannot resume (room for 1 of 2 saved): three files set aside,
    each holding what was saved before it."""
    state_dir = tmp_path / "state"
    kept = []
    for round_ in range(3):
        keys = [10 * round_ + 1, 10 * round_ + 2]
        kept.append(_save(start_server, state_dir, keys))
        said = []
        start_server(state_dir=state_dir, settings=Settings(limits=Limits(max_sequences=1)), say=said.append)
        assert any(line.startswith("not resumed:") for line in said), said
    names = [
        "sine.sequences.not-resumed.json",
        "sine.sequences.not-resumed-2.json",
        "sine.sequences.not-resumed-3.json",
    ]
    for name, document in zip(names, kept):
        assert json.loads((state_dir / name).read_text()) == document, name


def test_saved_states_are_owner_only(tmp_path, start_server):
    state_dir = tmp_path / "state"
    _save(start_server, state_dir, [1])
    assert stat.S_IMODE((state_dir / "sine.sequences.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700


def test_a_killed_saves_temporary_is_removed_at_the_next_start(tmp_path, start_server):
    state_dir = tmp_path / "state"
    document = _save(start_server, state_dir, [5])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has ended: as a save killed midway leaves it
    left = state_dir / f".sine.sequences.tmp-{pid}-abc123.json"
    left.write_text('{"half of a save')
    live = state_dir / f".sine.sequences.tmp-{os.getppid()}-def456.json"  # a running process's: kept
    live.write_text("{}")
    said = []
    server = start_server(state_dir=state_dir, say=said.append)
    assert not left.exists() and live.exists()
    assert any("left by a save that was killed" in line for line in said), said
    assert len(server.engine.served["sine"].sequences) == 1  # the state file itself resumed
    assert document["sequences"][0]["id"] == 5


def test_a_token_file(tmp_path, start_server):
    path = tmp_path / "token"
    path.write_text("  s3cret-from-a-file \n")
    assert read_token_file(path) == "s3cret-from-a-file"
    server = start_server(token=read_token_file(path), grpc_port=None)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    assert client.is_server_live()
    assert not client.is_server_ready()  # 401 without the token
    authorized = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    assert authorized.is_server_ready(headers={"Authorization": "Bearer s3cret-from-a-file"})
    (tmp_path / "empty").write_text("\n")
    for bad, match in ((tmp_path / "empty", "is empty"), (tmp_path / "missing", "cannot read the token file")):
        with pytest.raises(runtime.InputValueError, match=match):
            read_token_file(bad)

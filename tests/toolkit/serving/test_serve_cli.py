"""`rnn serve` as users start it: a real process on free loopback ports, stopped with SIGTERM; live
sequences written to --state-dir and resumed by the next process; user errors one line, exit 2."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

import runtime
from tests.conftest import COMMITTED

RNN = [sys.executable, "-m", "toolkit.cli"]
START_TIMEOUT = 60.0
MODEL = runtime.load(COMMITTED)


class Served:
    """A `rnn serve` process; ``http``/``grpc`` are its ports, read from what it prints."""

    def __init__(self, *arguments: str, env: dict | None = None) -> None:
        command = [*RNN, "serve", *arguments, "--http-port", "0", "--grpc-port", "0"]
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment)
        self.lines: list[str] = []
        self.http = self.grpc = None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if match := re.match(r"HTTP\s+http://[\d.]+:(\d+)/v2", line):
                self.http = int(match.group(1))
            if match := re.match(r"gRPC\s+[\d.]+:(\d+)", line):
                self.grpc = int(match.group(1))
            if line.startswith("models:"):
                break
        assert self.http and self.grpc, f"the server did not start: {self.lines}"
        self._rest: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self._rest.append(line.rstrip("\n"))

    def client(self) -> httpclient.InferenceServerClient:
        return httpclient.InferenceServerClient(f"127.0.0.1:{self.http}")

    signalled = False

    def terminate(self) -> None:
        self.signalled = True
        self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60.0) -> tuple[int, list[str]]:
        """SIGTERM, then the exit code and everything it printed after starting."""
        if self.process.poll() is None and not self.signalled:  # a second signal would exit without saving
            self.terminate()
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code, self._rest


def step(client, key, value, start=False, end=False, headers=None) -> tuple[float, np.ndarray]:
    x = httpclient.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.array([[value]], np.float32))
    result = client.infer("sine", [x], sequence_id=key, sequence_start=start, sequence_end=end, headers=headers)
    return float(result.as_numpy("y")[0, 0]), result.as_numpy("h_out")[0]


def test_sigterm_saves_live_sequences_and_a_restart_resumes_them_exactly(tmp_path):
    state_dir = tmp_path / "state"
    rng = np.random.default_rng(21)
    keys = [1, 2**40, "user-7"]
    inputs = rng.uniform(-1, 1, (len(keys), 30)).astype(np.float32)
    served = {key: [] for key in keys}

    first = Served(f"sine={COMMITTED}", "--state-dir", str(state_dir))
    client = first.client()
    for t in range(15):
        for key, row in zip(keys, inputs):
            served[key].append(step(client, key, row[t], start=t == 0)[0])
    step(client, 99, 0.5, start=True, end=True)  # ended: not saved
    code, said = first.stop()
    assert code == 0, said
    assert any("saved 3 live sequence(s)" in line for line in said), said
    saved = json.loads((state_dir / "sine.sequences.json").read_text())
    assert saved["step_sha256"] == MODEL.step_sha256
    assert sorted(str(s["id"]) for s in saved["sequences"]) == sorted(map(str, keys))

    second = Served(f"sine={COMMITTED}", "--state-dir", str(state_dir))
    assert any("resumed 3 sequence(s) of model 'sine'" in line for line in second.lines), second.lines
    assert not (state_dir / "sine.sequences.json").exists()  # resumed once, never twice
    assert (state_dir / "sine.sequences.resumed.json").exists()  # until the next save
    client = second.client()
    for t in range(15, 30):
        for key, row in zip(keys, inputs):
            served[key].append(step(client, key, row[t], end=t == 29)[0])
    with pytest.raises(Exception, match="no live sequence 99"):
        step(client, 99, 0.5)
    code, said = second.stop()
    assert code == 0 and any("saved 0 live sequence(s)" in line for line in said), said
    assert not list(state_dir.iterdir())  # the resumed file went with the save that followed it

    for key, row in zip(keys, inputs):  # every sequence equals one uninterrupted local run
        stream = runtime.Stream(MODEL)
        expected = [float(stream.push(v)[0]) for v in row]
        assert served[key] == expected, key


def test_a_format_2_folder_is_served_and_its_sequences_survive_a_restart(tmp_path):
    """A token + category model with nn.GRU's (layers, batch, hidden) state, as users start the
    server: ready, its sequence saved on SIGTERM and resumed by the next process, every answer
    its runtime Stream's."""
    from export import export_module
    from tests.user_modules import CHAR_GRU_SIGNATURE, make_char_gru

    folder = export_module(make_char_gru(), tmp_path / "char", **CHAR_GRU_SIGNATURE)
    model = runtime.load(folder)
    stream = runtime.Stream(model)
    state_dir = tmp_path / "state"

    def step_char(client, t: int) -> None:
        token = httpclient.InferInput("token", [1], "INT64")
        token.set_data_from_numpy(np.array([t % 11], np.int64))
        category = httpclient.InferInput("category", [1, 3], "FP32")
        category.set_data_from_numpy(np.eye(3, dtype=np.float32)[t % 3 : t % 3 + 1])
        result = client.infer("char", [token, category], sequence_id="chat", sequence_start=t == 0)
        expected = stream.push({"token": t % 11, "category": np.eye(3, dtype=np.float32)[t % 3]})
        np.testing.assert_array_equal(result.as_numpy("logits")[0], expected)
        np.testing.assert_array_equal(result.as_numpy("h_out")[:, 0], stream.state[0])

    first = Served(f"char={folder}", "--state-dir", str(state_dir))
    assert not any("not ready" in line for line in first.lines), first.lines
    for t in range(4):
        step_char(first.client(), t)
    code, said = first.stop()
    assert code == 0 and any("saved 1 live sequence(s)" in line for line in said), said
    second = Served(f"char={folder}", "--state-dir", str(state_dir))
    assert any("resumed 1 sequence(s) of model 'char'" in line for line in second.lines), second.lines
    for t in range(4, 8):
        step_char(second.client(), t)
    code, said = second.stop()
    assert code == 0, said


def test_sigterm_drains_a_request_in_progress(tmp_path):
    served = Served(f"sine={COMMITTED}", "--workers=1")
    xs = np.random.default_rng(2).uniform(-1, 1, (50_000, 16, 1)).astype(np.float32)
    body = json.dumps(
        {
            "inputs": [{"name": "x", "shape": list(xs.shape), "datatype": "FP32", "data": xs.ravel().tolist()}],
            "outputs": [{"name": "h_out"}],
        }
    ).encode()
    connection = http.client.HTTPConnection("127.0.0.1", served.http, timeout=60)
    connection.request("POST", "/v2/models/sine-predict/infer", body, {"Content-Type": "application/json"})
    time.sleep(1.0)  # the server has read the request and is running it
    served.terminate()
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == 200, answer
    _, (h,) = MODEL.predict(xs)
    assert np.array_equal(np.array(answer["outputs"][0]["data"], np.float32).reshape(h.shape), h)
    code, said = served.stop()
    assert code == 0, said


def test_a_state_dir_of_another_model_is_kept_and_not_resumed(tmp_path, cell_folder):
    _, _, folder = cell_folder
    state_dir = tmp_path / "state"
    first = Served(f"sine={COMMITTED}", "--state-dir", str(state_dir))
    step(first.client(), 5, 0.1, start=True)
    assert first.stop()[0] == 0
    second = Served(f"sine={folder}", "--state-dir", str(state_dir))  # same name, another model
    assert any("not resumed" in line and "different model" in line for line in second.lines), second.lines
    assert not (state_dir / "sine.sequences.json").exists()
    kept = state_dir / "sine.sequences.not-resumed.json"
    assert json.loads(kept.read_text())["sequences"][0]["id"] == 5  # set aside, never overwritten by a save
    step(second.client(), 6, 0.1, start=True)
    assert second.stop()[0] == 0
    assert json.loads(kept.read_text())["sequences"][0]["id"] == 5
    assert json.loads((state_dir / "sine.sequences.json").read_text())["sequences"][0]["id"] == 6


def _busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ([], "name at least one FOLDER"),
        (["bad/name=" + str(COMMITTED)], "a model name is 1-128 letters"),
        (["a=" + str(COMMITTED), "a=" + str(COMMITTED)], "two served models are named 'a'"),
        (["--repository", "."], "holds no artifact folder"),
        (["--max-queue-delay-us", "-1", str(COMMITTED)], "Invalid value for '--max-queue-delay-us'"),
        (["--replicas", "2", str(COMMITTED)], "--replicas needs --ray"),
        (["--ray", "--state-dir", "x", str(COMMITTED)], "--state-dir does not apply with --ray"),
        (["--ray", "--min-replicas", "3", "--max-replicas", "2", str(COMMITTED)], "is more than --max-replicas"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(arguments, message):
    result = subprocess.run([*RNN, "serve", *arguments], capture_output=True, text=True, timeout=60, cwd=Path.cwd())
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_port_in_use_is_one_line_and_exit_2():
    sock, port = _busy_port()
    try:
        result = subprocess.run(
            [*RNN, "serve", str(COMMITTED), "--http-port", str(port), "--no-grpc"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        sock.close()
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_ray_an_unreachable_cluster_is_one_line_and_exit_2():
    pytest.importorskip("ray.serve", reason="the ray extra is not installed")
    sock, port = _busy_port()
    sock.close()  # nothing listens there now
    result = subprocess.run(
        [*RNN, "serve", "--ray", "--address", f"127.0.0.1:{port}", str(COMMITTED)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "cannot join the Ray cluster" in result.stderr and "Traceback" not in result.stderr


def test_ray_serve_process_answers_sequences_and_stops_on_sigterm(tmp_path, monkeypatch):
    """`rnn serve --ray` as the README starts it: a local Ray cluster of its own, one replica, with
    token authentication on and no warning about it (toolkit.ray_cluster); the fronts' options
    apply (--token-file, --header-timeout); SIGTERM stops the server, deletes the application and
    shuts that cluster down."""
    pytest.importorskip("ray.serve", reason="the ray extra is not installed")
    psutil = pytest.importorskip("psutil")
    (tmp_path / "token").write_text("ray-front-token\n")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # Ray's default: unset
    arguments = ["--ray", "--replicas", "1", "--token-file", str(tmp_path / "token"), "--header-timeout", "0.5"]
    served = Served(*arguments, f"sine={COMMITTED}")
    auth = {"Authorization": "Bearer ray-front-token"}
    try:
        assert any("Stepper replica(s) on Ray" in line for line in served.lines), served.lines
        assert not any("Token authentication" in line for line in served.lines), served.lines
        modes = {}
        for child in psutil.Process(served.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a worker that ended meanwhile
                modes[child.name()] = child.environ().get("RAY_AUTH_MODE")
        assert modes.get("gcs_server") == "token" and modes.get("raylet") == "token", modes  # auth still on
        head = socket.create_connection(("127.0.0.1", served.http), timeout=10)
        head.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\n")  # and no more: 408 after --header-timeout
        assert b"did not arrive within 0.5 s" in head.recv(4096)
        head.close()
        client = served.client()
        assert not client.is_server_ready() and client.is_server_ready(headers=auth)
        values = np.random.default_rng(9).uniform(-1, 1, 15).astype(np.float32)
        got = [step(client, 41, v, start=t == 0, headers=auth)[0] for t, v in enumerate(values)]
        state, expected = None, []
        for v in values:
            y, state = MODEL.step(np.array([[v]], np.float32), state)
            expected.append(float(y[0, 0]))
        assert got == expected
    finally:
        code, rest = served.stop(timeout=120)
    assert code == 0, rest
    assert not any("Traceback" in line for line in rest), rest

"""`rnn serve` refuses to start, in one line and exit code 2, when nothing it was given loads
(unless --serve-unready) and when a port cannot be had or is asked of both fronts; the real CLI
process each time."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

import runtime
from tests.conftest import COMMITTED
from tests.toolkit.serving.test_serve_cli import RNN, Served, _busy_port


def run_serve(*arguments: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*RNN, "serve", *arguments], capture_output=True, text=True, timeout=timeout)


def assert_one_line_exit_2(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def unservable(tmp_path, kind: str) -> str:
    """A folder argument that cannot be served: a typo, a file, a folder never exported, a broken manifest."""
    if kind == "typo":
        return str(tmp_path / "runs" / "nope")
    if kind == "file":
        (tmp_path / "notes.txt").write_text("not a model\n")
        return str(tmp_path / "notes.txt")
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "broken":
        (folder / "manifest.json").write_text("{")
    return str(folder)


@pytest.mark.parametrize("kind", ["typo", "file", "not-exported", "broken"])
def test_nothing_servable_is_one_line_and_exit_2(tmp_path, kind):
    folder = unservable(tmp_path, kind)
    started = time.monotonic()
    result = run_serve(folder, "--http-port", "0", "--grpc-port", "0")
    line = assert_one_line_exit_2(result, "nothing to serve", "--serve-unready")
    assert folder in line or folder.rsplit("/", 1)[-1] in line
    assert time.monotonic() - started < 30  # it never listened waiting for a signal


def test_several_folders_none_servable_names_each(tmp_path):
    typo, file = unservable(tmp_path, "typo"), unservable(tmp_path, "file")
    result = run_serve(f"a={typo}", f"b={file}", "--http-port", "0", "--grpc-port", "0")
    assert_one_line_exit_2(result, "none of the 2 folders loads", typo, file, "serves them anyway")


def test_serve_unready_keeps_serving_a_folder_that_does_not_load(tmp_path):
    served = Served(unservable(tmp_path, "typo"), "--serve-unready")
    try:
        assert any("model 'nope' is not ready" in line for line in served.lines), served.lines
        client = served.client()
        assert client.is_server_live() and not client.is_server_ready()
        assert not client.is_model_ready("nope") and not client.is_model_ready("nope-generate")
    finally:
        code, rest = served.stop()
    assert code == 0, rest


def test_one_folder_that_loads_is_served_beside_one_that_does_not(tmp_path):
    served = Served(f"sine={COMMITTED}", unservable(tmp_path, "file"))
    try:
        assert any("model 'notes.txt' is not ready" in line for line in served.lines), served.lines
        client = served.client()
        assert client.is_model_ready("sine") and not client.is_model_ready("notes.txt")
        x = httpclient.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.array([[0.3]], np.float32))
        y = client.infer("sine", [x]).as_numpy("y")
        np.testing.assert_array_equal(y, runtime.load(COMMITTED).step(np.array([[0.3]], np.float32))[0])
    finally:
        code, rest = served.stop()
    assert code == 0, rest


def test_serve_unready_does_not_apply_with_ray():
    result = run_serve("--ray", "--serve-unready", str(COMMITTED))
    assert_one_line_exit_2(result, "--serve-unready does not apply with --ray")


# ---- ports ---------------------------------------------------------------------------------------


def test_a_busy_grpc_port_names_the_port_and_the_options(tmp_path):
    sock, port = _busy_port()
    try:
        result = run_serve(str(COMMITTED), "--http-port", "0", "--grpc-port", str(port))
    finally:
        sock.close()
    line = assert_one_line_exit_2(result, f"cannot listen on 127.0.0.1:{port} for gRPC", "--grpc-port", "--no-grpc")
    assert "add_port" not in result.stderr and "GRPC_VERBOSITY" not in line  # not gRPC's own log line


def test_a_busy_http_port_names_the_port_and_the_option():
    sock, port = _busy_port()
    try:
        result = run_serve(str(COMMITTED), "--http-port", str(port), "--grpc-port", "0")
    finally:
        sock.close()
    assert_one_line_exit_2(result, f"cannot listen on 127.0.0.1:{port} for HTTP", "--http-port")


def test_a_busy_port_is_refused_before_the_models_load(tmp_path):
    """The port check comes first: a busy port and an unservable folder report the port."""
    sock, port = _busy_port()
    try:
        result = run_serve(unservable(tmp_path, "typo"), "--http-port", str(port), "--no-grpc")
    finally:
        sock.close()
    assert_one_line_exit_2(result, f"127.0.0.1:{port} for HTTP")


@pytest.mark.parametrize("arguments", [["--http-port", "8001"], ["--http-port", "9123", "--grpc-port", "9123"]])
def test_one_port_for_both_fronts_is_refused(arguments):
    port = arguments[1]
    result = run_serve(str(COMMITTED), *arguments)
    assert_one_line_exit_2(result, f"--http-port and --grpc-port are both {port}", "--no-grpc")


def test_no_grpc_frees_the_grpc_port_for_http():
    """With --no-grpc the gRPC port is not taken: HTTP may have its number (a free port given as
    both) and serves."""
    sock, port = _busy_port()
    sock.close()
    process = subprocess.Popen(
        [*RNN, "serve", f"sine={COMMITTED}", "--no-grpc", "--http-port", str(port), "--grpc-port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(line.startswith("models:") for line in lines):
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
        assert any(f"127.0.0.1:{port}/v2" in line for line in lines), lines
        assert not any(line.startswith("gRPC") for line in lines), lines
        assert httpclient.InferenceServerClient(f"127.0.0.1:{port}").is_model_ready("sine")
    finally:
        process.terminate()
        assert process.wait(60) == 0

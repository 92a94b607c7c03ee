"""`rnn web` as users start it: the real CLI process on a free loopback port, --allow-host NAME
(repeatable) reaching the server's Host check; a malformed NAME is one line, exit 2."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys

import pytest

from toolkit.web import ORT_DIST, ORT_FILES

from ..conftest import COMMITTED

RNN = [sys.executable, "-m", "toolkit.cli"]


def get(port: int, path: str, host: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_allow_host_names_reach_the_host_check():
    if not all((ORT_DIST / name).is_file() for name in ORT_FILES):
        pytest.skip("onnxruntime-web is not installed in examples/web (npm ci --ignore-scripts)")
    command = [*RNN, "web", str(COMMITTED), "--port", "0", "--allow-host", "Model.Example", "--allow-host", "b.test"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        url = process.stdout.readline().strip()  # the URL, first
        assert url.startswith("http://127.0.0.1:"), (url, process.poll())
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        for host in ("model.example", f"MODEL.EXAMPLE:{port}", "b.test", "localhost", "127.0.0.1"):
            assert get(port, "/model/manifest.json", host) == 200, host
        for host in ("other.example", "model.example.evil.test", "test"):
            assert get(port, "/model/manifest.json", host) == 403, host
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.parametrize("name", ["http://a.test", "a.test:8080", ""])
def test_allow_host_takes_a_bare_name(name):
    result = subprocess.run(
        [*RNN, "web", str(COMMITTED), "--port", "0", "--allow-host", name], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and result.stderr.startswith("error: --allow-host takes a host name"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr

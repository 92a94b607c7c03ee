"""`rnn web` against hostile and careless requests (issue 23): of the folder only the manifest's
files and the page's self-check files are served, the Host check holds on every address, and
rapid connects are not dropped."""

from __future__ import annotations

import http.client
import shutil
import socket
import time

import pytest

import runtime
from toolkit.web import WebServer

from ..conftest import COMMITTED


@pytest.fixture()
def folder(tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(COMMITTED, copy)
    (copy / "private.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (copy / ".env").write_text("SECRET=1\n")
    return copy


def _serve(folder, **options) -> WebServer:
    try:
        return WebServer(folder, port=0, **options).start()
    except runtime.MissingDependencyError as error:  # the page's files are checked first
        pytest.skip(str(error))


def _get(server: WebServer, path: str, host: str | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host} if host else {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_only_the_manifest_files_and_the_self_check_are_served(folder):
    server = _serve(folder)
    try:
        for name in ("private.pem", ".env", "verify.json", "generate.csv", "loss.png", "test_data/step/other.pb"):
            assert _get(server, "/model/" + name)[0] == 404, name
        for name in ("manifest.json", "step.onnx", "config.json", "test_data/step/test_data_set_0/input_0.pb"):
            status, body = _get(server, "/model/" + name)
            assert status == 200 and body == (folder / name).read_bytes(), name
        assert _get(server, "/app.js")[0] == 200
    finally:
        server.stop()


def test_the_host_check_holds_on_every_interface(folder):
    server = _serve(folder, host="0.0.0.0", allowed_hosts=("models.example",))
    try:
        assert _get(server, "/model/manifest.json", "attacker.example")[0] == 403  # a rebound name
        for host in ("localhost", f"127.0.0.1:{server.port}", "models.example", socket.gethostname(), "[::1]:80"):
            assert _get(server, "/model/manifest.json", host)[0] == 200, host
    finally:
        server.stop()


def test_rapid_connects_are_not_dropped(folder):
    """64 connections opened at once (the old backlog of 5 dropped some: a 1 s SYN retry)."""
    server = _serve(folder)
    try:
        started = time.perf_counter()
        sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(64)]
        elapsed = time.perf_counter() - started
        for sock in sockets:
            sock.close()
        assert elapsed < 0.9, elapsed
    finally:
        server.stop()

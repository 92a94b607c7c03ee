"""A real server on free loopback ports for the serving tests, talked to with tritonclient."""

from __future__ import annotations

import pytest

from tests.conftest import COMMITTED

pytest.importorskip("uvicorn", reason="the serve extra is not installed")
pytest.importorskip("tritonclient", reason="tritonclient (dev extra) is not installed")

from toolkit.serving import Server, Settings  # noqa: E402


@pytest.fixture()
def start_server():
    """``start_server(folders=None, **Server options)`` -> a started Server on free loopback ports
    (HTTP and gRPC), stopped at the end of the test. ``folders`` defaults to the committed sine
    folder served as ``sine``."""
    started = []

    def start(folders=None, **options):
        options.setdefault("http_port", 0)
        options.setdefault("grpc_port", 0)
        options.setdefault("say", lambda message: None)
        server = Server(folders or [("sine", COMMITTED)], **options)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def sine_server():
    """One server of the committed sine folder shared by a module's tests (sequence ids must not
    collide between tests: use ids of your own)."""
    server = Server(
        [("sine", COMMITTED)], http_port=0, grpc_port=0, settings=Settings(), say=lambda message: None
    ).start()
    yield server
    server.stop()

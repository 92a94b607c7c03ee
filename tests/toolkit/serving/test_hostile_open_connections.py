"""A hard cap on the HTTP connections open at once (issue 23, `--max-open-connections`): a
connection beyond it is answered 503 and closed at once; the connections under the cap, liveness
included, answer as before, and a place freed is taken again. The real server on a free loopback
port; every loop bounded in count and time."""

from __future__ import annotations

import resource
import socket
import time
from types import SimpleNamespace

from click.testing import CliRunner

from tests.conftest import COMMITTED
from tests.toolkit.serving.test_http_api import INFER, post_json, raw, x_tensor
from tests.toolkit.serving.test_serve_cli import Served
from toolkit.cli import cli
from toolkit.serving.doors import DESCRIPTOR_RESERVE, descriptor_room
from toolkit.serving.server import Doors

LIVE = "/v2/health/live"
CAP = 50


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.http_port), timeout=10)


def _refused(sock: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing ``sock`` within ``within`` seconds (None: still open)."""
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""  # nothing was sent: an open, silent connection raises
    except BlockingIOError:
        return True
    except OSError:
        return False


def _live_status(server) -> int | None:
    """Liveness's status; None when the server closed the connection before its answer was read."""
    try:
        return raw(server, "GET", LIVE)[0]
    except OSError:
        return None


def test_connections_beyond_the_cap_are_refused_and_a_freed_place_is_taken_again(start_server):
    """Cap 50, 80 silent sockets: the last 30 get a 503 naming the option and are closed at once,
    the first 50 stay open; a normal client is refused too while 50 are open, and once 10 close
    it gets liveness and an inference at once."""
    server = start_server(grpc_port=None, doors=Doors(max_open_connections=CAP, header_timeout_s=30))
    started = time.monotonic()
    held = [_connect(server) for _ in range(CAP)]
    extra = [_connect(server) for _ in range(30)]
    try:
        for sock in extra:
            answer = _refused(sock, 5.0)
            assert answer is not None and answer.startswith(b"HTTP/1.1 503 "), answer
            assert b"--max-open-connections" in answer and b"connection: close" in answer
        assert all(_still_open(sock) for sock in held)
        assert _live_status(server) in (503, None)  # a normal client while the cap is full: refused too
        for sock in held[:10]:
            sock.close()
        deadline = time.monotonic() + 5
        while _live_status(server) != 200:  # the server sees the 10 close on its next turn of the loop
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status, _, body = post_json(server, INFER, {"inputs": [x_tensor()]})
        assert status == 200, body[:200]
        assert all(_still_open(sock) for sock in held[10:])  # the 40 others were never disturbed
    finally:
        for sock in held + extra:
            sock.close()
    assert time.monotonic() - started < 20


def test_a_cap_beyond_the_descriptor_limit_is_lowered_to_fit_and_said(start_server):
    """A cap beyond the hard limit of open files: one warning line at the start naming both and
    what to change, and the cap the limit holds is the one applied (a connection beyond it gets
    the 503, not a failed accept); a cap within the limit is kept and nothing is said."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert descriptor_room(min(soft, hard) - DESCRIPTOR_RESERVE) == (min(soft, hard) - DESCRIPTOR_RESERVE, None)
    huge = 10**9 if hard == resource.RLIM_INFINITY else hard + 1
    cap, warning = descriptor_room(huge)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= soft  # raised toward the hard limit, never lowered
    if hard != resource.RLIM_INFINITY:
        assert cap == hard - DESCRIPTOR_RESERVE and str(hard) in warning and f"at most {cap}" in warning
    said: list[str] = []
    start_server(grpc_port=None, doors=Doors(max_open_connections=huge), say=said.append)
    warnings = [line for line in said if "--max-open-connections" in line]
    assert len(warnings) == (warning is not None), said
    assert all("ulimit -n" in line and str(huge) in line for line in warnings), said


def test_rnn_serve_takes_max_open_connections_and_says_its_default():
    """The real CLI: --max-open-connections 3 holds three silent connections and answers the
    fourth 503; --help says the default `Doors` has."""
    served = Served(f"sine={COMMITTED}", "--max-open-connections", "3")
    server = SimpleNamespace(http_port=served.http)
    held = []
    try:
        held = [_connect(server) for _ in range(3)]
        answer = _refused(_connect(server), 5.0)
        assert answer is not None and answer.startswith(b"HTTP/1.1 503 ") and b"3 HTTP connections open" in answer
        held.pop().close()
        deadline = time.monotonic() + 5
        while _live_status(server) != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        for sock in held:
            sock.close()
        code, rest = served.stop()
    assert code == 0, rest
    text = " ".join(CliRunner().invoke(cli, ["serve", "--help"], terminal_width=200).output.split())
    assert f"Default: {Doors().max_open_connections}." in text

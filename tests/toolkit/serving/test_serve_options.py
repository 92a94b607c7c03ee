"""`rnn serve`'s options for the HTTP front's doors and the token, as users start it: the real CLI
process on free loopback ports, each option seen at work from outside (a token read from
--token-file and kept out of the process list, --header-timeout's 408, --max-inflight-bytes'
503, --idle-timeout closing a kept-alive connection); wrong combinations one line, exit 2."""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from tests.conftest import COMMITTED
from tests.toolkit.serving.test_http_api import INFER, one_line_error, post_json, raw, x_tensor
from tests.toolkit.serving.test_serve_cli import Served
from tests.toolkit.serving.test_serve_startup import assert_one_line_exit_2, run_serve
from toolkit.cli import cli
from toolkit.serving.server import Doors

TOKEN = "s3cret-only-in-the-file"
MIB = 1 << 20


def write_token(tmp_path: Path, text: str = f"# the server's token\n\n  {TOKEN}  \n") -> Path:
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(0o600)
    return path


def head_only(port: int, headers: str) -> socket.socket:
    """A connection that sends a request line and ``headers`` and then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET /v2 HTTP/1.1\r\nHost: x\r\n{headers}".encode())
    return sock


def partial_infer(port: int, declared: int, sent: int) -> socket.socket:
    """An authorized infer request that declares ``declared`` body bytes and sends ``sent`` of them."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (
        f"POST {INFER} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + b" " * sent)
    return sock


def answer(sock: socket.socket) -> tuple[int, dict, bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def seconds_until_closed(connection: http.client.HTTPConnection, limit: float) -> float | None:
    """How long until the server closes ``connection``'s socket (None: still open after ``limit`` s)."""
    sock = connection.sock
    sock.settimeout(limit)
    started = time.monotonic()
    try:
        data = sock.recv(1)
    except TimeoutError:
        return None
    except ConnectionResetError:
        data = b""
    assert data == b"", data
    return time.monotonic() - started


def test_token_file_and_the_http_doors_reach_the_server(tmp_path):
    served = Served(
        f"sine={COMMITTED}",
        "--token-file",
        str(write_token(tmp_path)),
        "--max-body-bytes",
        str(MIB),
        "--max-inflight-bytes",
        str(5 * MIB // 2),
        "--header-timeout",
        "0.5",
        "--idle-timeout",
        "1",
    )
    server = SimpleNamespace(http_port=served.http)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        command_line = Path(f"/proc/{served.process.pid}/cmdline").read_bytes()
        assert b"--token-file" in command_line and TOKEN.encode() not in command_line  # not in ps
        assert raw(server, "GET", "/v2/health/ready")[0] == 401
        comment = {"Authorization": "Bearer # the server's token"}  # a '#' line is not a token
        assert raw(server, "GET", "/v2/health/ready", headers=comment)[0] == 401
        assert raw(server, "GET", "/v2/health/ready", headers=auth)[0] == 200
        status, _, body = post_json(server, INFER, {"inputs": [x_tensor()]}, auth)
        assert status == 200, body

        started = time.monotonic()  # --header-timeout 0.5 (default 10)
        status, _, body = answer(head_only(served.http, "X-Slow: yes\r\n"))
        assert status == 408 and b"did not arrive within 0.5 s" in body, body
        assert time.monotonic() - started < 3.0

        held = [partial_infer(served.http, MIB, 1000) for _ in range(2)]  # --max-inflight-bytes 2.5 MiB
        try:
            time.sleep(0.2)
            status, headers, body = answer(partial_infer(served.http, MIB, 10))
            one_line_error(status, headers, body, 503, "past its budget of 2621440")
            assert headers["retry-after"] == "1"
        finally:
            for sock in held:
                sock.close()

        connection = http.client.HTTPConnection("127.0.0.1", served.http, timeout=10)  # --idle-timeout 1 (default 5)
        connection.request("GET", "/v2/health/ready", headers=auth)
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("connection", "keep-alive") != "close"
        response.read()
        waited = seconds_until_closed(connection, 4.0)
        connection.close()
        assert waited is not None and waited < 3.0, waited
    finally:
        code, rest = served.stop()
    assert code == 0, rest


@pytest.mark.parametrize(
    "arguments, fragments",
    [
        (["--token", "abc", "--token-file", "TOKEN_FILE"], ["--token (or RNN_SERVE_TOKEN) and --token-file"]),
        (["--token-file", "EMPTY_FILE"], ["the token file", "is empty"]),
        (["--token-file", "MISSING_FILE"], ["cannot read the token file"]),
        (["--max-body-bytes", "4096", "--max-inflight-bytes", "2048"], ["--max-inflight-bytes 2048 is less than"]),
        (["--header-timeout", "0"], ["Invalid value for '--header-timeout'"]),
        (["--idle-timeout", "0"], ["Invalid value for '--idle-timeout'"]),
    ],
)
def test_wrong_token_and_door_options_are_one_line_and_exit_2(tmp_path, arguments, fragments):
    files = {
        "TOKEN_FILE": write_token(tmp_path),
        "EMPTY_FILE": write_token(tmp_path, " \n\n"),
        "MISSING_FILE": tmp_path / "none",
    }
    arguments = [str(files.get(a, a)) for a in arguments]
    result = run_serve(*arguments, str(COMMITTED), "--http-port", "0", "--grpc-port", "0")
    if fragments[0].startswith("Invalid value"):  # click's own usage line
        assert result.returncode == 2 and fragments[0] in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        return
    assert_one_line_exit_2(result, *fragments)


def test_token_from_the_environment_and_a_token_file_is_refused(tmp_path):
    result = CliRunner().invoke(
        cli, ["serve", "--token-file", str(write_token(tmp_path)), str(COMMITTED)], env={"RNN_SERVE_TOKEN": "x"}
    )
    assert result.exit_code == 2 and "--token (or RNN_SERVE_TOKEN) and --token-file" in result.output


def test_serve_help_says_the_doors_defaults_and_what_generate_takes():
    text = " ".join(CliRunner().invoke(cli, ["serve", "--help"], terminal_width=200).output.split())
    doors = Doors()
    assert f"(408). Default: {doors.header_timeout_s:g}." in text
    assert f"(keep-alive). Default: {doors.keep_alive_s:g}." in text
    assert "Default: 4 x --max-body-bytes." in text
    assert "visible to every user of this machine (ps)" in text
    assert (
        "NAME-generate: a closed loop (x and steps) where the output feeds back as it is; for a token model whose "
        "next token is sampled, a prompt as token ids or text_input with "
        "strategy/temperature/top_k/top_p/seed/max_tokens/stop parameters, also streamed at "
        "/v2/models/NAME-generate/generate_stream and over gRPC ModelStreamInfer" in text
    )

"""The HTTP front of `rnn serve` against hostile clients (issue 23): idle and slow connections,
endless headers, bodies that never finish, answers larger than the limits, decompression bombs
and bad gzip framing, data nested past numpy's dimensions. The real server on a free loopback
port; every loop bounded in count and time."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import time
import zlib

import numpy as np
import pytest

import runtime
from tests.conftest import COMMITTED
from tests.toolkit.serving.test_http_api import INFER, binary_body, one_line_error, post_json, raw, x_tensor
from toolkit.serving import Limits, Settings
from toolkit.serving.server import Doors

LIVE = "/v2/health/live"


def _connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
    return sock


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (what it sends first is read)."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def _answer(sock: socket.socket) -> tuple[int, dict, bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def _partial_infer(server, declared: int, sent: int) -> socket.socket:
    """An infer request that declares ``declared`` body bytes and sends ``sent`` of them."""
    sock = _connect(server)
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    sock.sendall(head.encode() + b" " * sent)
    return sock


def test_idle_connections_beyond_the_limit_lock_no_one_out(start_server):
    """200 connections that send nothing, with --max-connections 100: requests still answer at
    once (idle connections are not requests) and the idle ones are closed at the header deadline."""
    server = start_server(
        settings=Settings(limits=Limits(max_connections=100)), grpc_port=None, doors=Doors(header_timeout_s=1.5)
    )
    idle = [_connect(server) for _ in range(200)]
    try:
        started = time.perf_counter()
        assert raw(server, "GET", LIVE)[0] == 200
        assert raw(server, "GET", "/v2/health/ready")[0] == 200
        status, _, body = post_json(server, INFER, {"inputs": [x_tensor()]})
        assert status == 200, body
        assert time.perf_counter() - started < 2.0
        assert all(_closed_by_server(sock, 5.0) for sock in idle[:20])  # reaped, not held forever
    finally:
        for sock in idle:
            sock.close()


def test_requests_in_progress_beyond_the_limit_are_503_and_liveness_answers(start_server):
    server = start_server(settings=Settings(limits=Limits(max_connections=2)), grpc_port=None)
    held = [_partial_infer(server, 100, 10) for _ in range(2)]  # two requests in progress
    try:
        time.sleep(0.2)
        status, headers, body = raw(server, "GET", "/v2/health/ready")
        one_line_error(status, headers, body, 503, "2 requests in progress, its limit")
        assert headers["retry-after"] == "1"
        assert raw(server, "GET", LIVE)[0] == 200
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while raw(server, "GET", "/v2/health/ready")[0] != 200:  # the closed ones are no longer counted
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_a_2_mib_header_is_refused_quickly_before_the_token(start_server, token):
    server = start_server(grpc_port=None, token=token)
    sock = _connect(server)
    started = time.perf_counter()
    try:
        sock.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 << 20))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server stopped reading it: what it answered is still there
    status, _, body = _answer(sock)
    sock.close()
    assert status == 431 and b"headers pass 65536 bytes" in body
    assert time.perf_counter() - started < 2.0
    assert raw(server, "GET", LIVE)[0] == 200


def test_headers_that_never_end_time_out(start_server):
    server = start_server(grpc_port=None, doors=Doors(header_timeout_s=0.5))
    sock = _connect(server)
    sock.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\n")  # and no more
    status, _, body = _answer(sock)
    assert status == 408 and b"did not arrive within 0.5 s" in body
    assert _closed_by_server(sock, 2.0)
    sock.close()


def test_a_later_request_whose_headers_never_end_times_out(start_server):
    """On a kept-alive connection, after a whole request answered (its head in one read: no timer),
    a second request's head that stops half-way is still a 408 at the header deadline."""
    server = start_server(grpc_port=None, doors=Doors(header_timeout_s=0.5))
    sock = _connect(server)
    sock.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = _answer(sock)
    assert status == 200 and json.loads(body)["name"]
    started = time.perf_counter()
    sock.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\n")  # and no more
    status, _, body = _answer(sock)
    assert status == 408 and b"did not arrive within 0.5 s" in body
    assert 0.4 < time.perf_counter() - started < 3.0
    assert _closed_by_server(sock, 2.0)
    sock.close()


def test_a_body_sent_after_its_head_is_read_and_answered(start_server):
    """A step whose head and body come in separate reads (the body read under its deadline) is
    answered as one sent whole, the model's own value."""
    server = start_server(grpc_port=None, doors=Doors(body_timeout_s=5.0))
    body = json.dumps({"inputs": [x_tensor(0.25)]}).encode()
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    answers = []
    for split in (False, True):
        sock = _connect(server)
        if split:
            sock.sendall(head.encode())
            time.sleep(0.2)
            sock.sendall(body)
        else:
            sock.sendall(head.encode() + body)
        status, _, answer = _answer(sock)
        sock.close()
        assert status == 200
        answers.append({output["name"]: output["data"] for output in json.loads(answer)["outputs"]})
    assert answers[0] == answers[1]
    y, _ = runtime.load(COMMITTED).step(np.array([[0.25]], np.float32))
    np.testing.assert_allclose(answers[0]["y"], y.ravel(), rtol=1e-6)


def test_a_body_that_stops_arriving_is_408(start_server):
    server = start_server(grpc_port=None, doors=Doors(body_timeout_s=0.5))
    sock = _partial_infer(server, 1000, 10)
    started = time.perf_counter()
    status, headers, body = _answer(sock)
    sock.close()
    one_line_error(status, headers, body, 408, "stopped arriving for 0.5 s")
    assert time.perf_counter() - started < 3.0


def test_bodies_in_flight_share_one_budget(start_server):
    """--max-body-bytes 1 MiB and --max-inflight-bytes 2.5 MiB: two unfinished 1 MiB bodies hold
    most of the budget, a third is a 503 with Retry-After at once (a small request still fits);
    when they go, all of it is free again."""
    mib = 1 << 20
    server = start_server(
        settings=Settings(limits=Limits(max_body_bytes=mib)),
        grpc_port=None,
        doors=Doors(max_inflight_bytes=5 * mib // 2),
    )
    held = [_partial_infer(server, mib, 1000) for _ in range(2)]
    try:
        time.sleep(0.2)
        third = _partial_infer(server, mib, 10)
        status, headers, body = _answer(third)
        third.close()
        one_line_error(status, headers, body, 503, "past its budget of 2621440")
        assert headers["retry-after"] == "1"
        status, _, body = post_json(server, INFER, {"inputs": [x_tensor()]})  # small: fits what is left
        assert status == 200, body
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while server.door.inflight_bytes or server.door.active:  # all of it given back when the requests end
        assert time.monotonic() < deadline, (server.door.inflight_bytes, server.door.active)
        time.sleep(0.05)
    assert raw(server, "GET", "/v2/health/ready")[0] == 200


def test_an_answer_over_the_limit_as_json_is_413_before_it_is_built(start_server):
    """100 steps x 8 sequences of the sine model: 800 float32 values, 3,200 bytes as binary but
    ~19,000 as JSON. With --max-body-bytes 8,000 the JSON answer is refused naming the limit and
    binary outputs; the same answer in binary is served."""
    server = start_server(settings=Settings(limits=Limits(max_body_bytes=8000)), grpc_port=None)
    xs = np.linspace(-1, 1, 800, dtype=np.float32).reshape(100, 8, 1)
    spec = {"name": "x", "datatype": "FP32", "shape": list(xs.shape)}
    for binary_answer in (False, True):
        body, headers = binary_body([(spec, xs.tobytes())], parameters={"binary_data_output": binary_answer})
        status, headers, answer = raw(server, "POST", "/v2/models/sine-predict/infer", body, headers)
        if binary_answer:
            assert status == 200, answer[:200]
            assert len(answer) < 8000
        else:
            message = one_line_error(status, headers, answer, 413, "the answer would be up to")
            assert "limit is 8000" in message and "binary_data_output" in message


def test_a_small_gzip_bomb_is_inflated_off_the_loop(start_server):
    """A ~50 KB gzip body that inflates past the limit: refused (413) while liveness answers
    promptly throughout (before: inflated on the event loop)."""
    limit = 48 << 20
    server = start_server(settings=Settings(limits=Limits(max_body_bytes=limit)), grpc_port=None)
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    zeros = bytes(1 << 20)
    bomb = b"".join([*(packer.compress(zeros) for _ in range(49)), packer.flush()])
    assert len(bomb) < 1 << 16  # under the old off-loop threshold (it counted compressed bytes)
    sock = _connect(server)
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n\r\n"
    sock.sendall(head.encode() + bomb)
    slowest = 0.0
    for _ in range(10):
        started = time.perf_counter()
        assert raw(server, "GET", LIVE)[0] == 200
        slowest = max(slowest, time.perf_counter() - started)
    status, headers, body = _answer(sock)
    sock.close()
    one_line_error(status, headers, body, 413, "inflates to more than")
    assert slowest < 0.15, slowest  # inflating 48 MiB on the loop: 0.3-0.4 s on 2 busy cores


@pytest.mark.parametrize("tail", ["junk", "second member"])
def test_gzip_with_anything_after_its_member_is_400(sine_server, tail):
    document = json.dumps({"inputs": [x_tensor()]}).encode()
    extra = b"junk" if tail == "junk" else gzip.compress(b"{}")
    body = gzip.compress(document) + extra
    status, headers, body = raw(sine_server, "POST", INFER, body, {"Content-Encoding": "gzip"})
    one_line_error(status, headers, body, 400, "after its gzip data")


def test_data_nested_past_32_arrays_is_400(sine_server):
    data: list = [0.5]
    for _ in range(40):
        data = [data]
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 1], "data": data}
    status, headers, body = post_json(sine_server, INFER, {"inputs": [tensor]})
    one_line_error(status, headers, body, 400, "nested deeper than 32 arrays")

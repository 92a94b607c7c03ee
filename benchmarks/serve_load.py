"""What the serving benchmarks (`serve.py`, `token_streaming.py`, `ray_serve.py`) share: server
subprocesses (start, wait until ready, stop), the CPU seconds of a process and of the whole machine,
a raw keep-alive HTTP/1.1 client connection, the machine's description and the packages' versions."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
READY_PATH = "/v2/health/ready"
START_TIMEOUT_S = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of a process, all its threads, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy since boot (all processes, ours or not)."""
    with open("/proc/stat", "rb") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


@dataclass
class ServerProcess:
    name: str
    process: subprocess.Popen
    http_port: int
    grpc_port: int | None = None
    delay_us: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid


def launch(name: str, arguments: list[str], http_port: int, log: Path, script: Path, **extra: Any) -> ServerProcess:
    """Starts ``script`` with ``arguments`` as a server subprocess, its output to ``log``."""
    command = [sys.executable, str(script), *arguments]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    return ServerProcess(name, process, http_port, **extra)


async def wait_ready(server: ServerProcess, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(
                f"server {server.name} exited with {server.process.returncode}:\n{log.read_text()[-3000:]}"
            )
        if not server.http_port:  # gRPC only: ready once a channel connects
            import grpc

            async with grpc.aio.insecure_channel(f"{HOST}:{server.grpc_port}") as channel:
                try:
                    await asyncio.wait_for(channel.channel_ready(), 1.0)
                    return
                except asyncio.TimeoutError:
                    continue
        try:
            connection = await HttpConnection.open(server.http_port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        try:
            status, _ = await connection.request(request_bytes("GET", READY_PATH))
        finally:
            connection.close()
        if status == 200:
            return
        await asyncio.sleep(0.2)
    raise SystemExit(f"server {server.name} was not ready within {START_TIMEOUT_S:g} s:\n{log.read_text()[-3000:]}")


def stop(servers: list[ServerProcess]) -> None:
    for server in servers:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
    for server in servers:
        try:
            server.process.wait(20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def request_bytes(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n"
    if body or method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode("ascii") + body


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time; answers (status, body). Reads
    responses with a Content-Length (both servers send one)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.body_at = -1
        self.length = 0
        self.status = 0

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, HOST, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"the server closed the connection ({exc})"))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if self.body_at < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self.waiter.set_exception(ConnectionError("a response without Content-Length"))
                return
            line_end = head.find(b"\r\n", at + 2)
            self.length = int(head[at + 17 : line_end if line_end >= 0 else len(head)])
            self.body_at = end + 4
        if len(buffer) >= self.body_at + self.length:
            end = self.body_at + self.length
            body = bytes(buffer[self.body_at : end])
            del buffer[:end]
            self.body_at = -1
            waiter, self.waiter = self.waiter, None
            waiter.set_result((self.status, body))

    def request(self, data: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def grpc_modules() -> tuple[Any, Any]:
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    return service_pb2, service_pb2_grpc


# streams a gRPC client puts on one connection: `rnn serve` accepts at most 100 at once on one
# (grpc_api.MAX_STREAMS_PER_CONNECTION) and refuses the rest (RST_STREAM REFUSED_STREAM)
STREAMS_PER_CONNECTION = 64


def open_grpc_channels(port: int, streams: int, at_least: int = 1) -> list[Any]:
    """grpc.aio channels for ``streams`` concurrent streams, each channel its own connection
    (grpc-core shares one connection among channels of the same target unless told otherwise): at
    least ``at_least``, enough that none carries more than STREAMS_PER_CONNECTION, at most one per
    stream."""
    import grpc

    count = max(1, min(max(at_least, -(-streams // STREAMS_PER_CONNECTION)), streams))
    options = [("grpc.use_local_subchannel_pool", 1)]
    return [grpc.aio.insecure_channel(f"{HOST}:{port}", options=options) for _ in range(count)]


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "load_average_before": list(os.getloadavg()),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    import importlib.metadata as metadata

    found = {}
    for name in ("fastapi", "starlette", "pydantic", "uvicorn", "uvloop", "httptools", "grpcio", "onnxruntime"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def integers(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0, got {text!r}")
    return values

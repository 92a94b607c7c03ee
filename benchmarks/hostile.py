"""Issue 23's measurement: `rnn serve` under each hostile client in turn, with a normal client
running at the same time. For every attack a fresh `rnn serve` (a copy of artifacts/sine-elman
served as ``sine``, its default limits, free loopback ports) is started, so that its VmHWM is the
attack's own; then the attack runs in a process of its own while this process runs the normal
client: ``GET /v2/health/live`` and a one-step infer of ``sine`` (its ``y`` checked against the
runtime's), each ``--rate`` times a second on a new connection per request, for ``--seconds``.

The attacks (each bounded in count and time, loopback only):

  a idle-http       4,100 TCP connections that send nothing, each reopened when the server closes
                    it, held 15 s (past the default --header-timeout)
  b endless-header  a header value that never ends, sent as fast as the server reads it
                    (a new connection once the server answers), for the attack's seconds
  c partial-bodies  52 infer requests that declare 60 MiB and send 59 MiB of it, never finishing
  d large-answers   sine-generate for 160 inputs x 100,000 steps (a ~300 MB JSON answer), repeated
  e bombs           ~65 KB gzip and deflate bodies that inflate to 65 MiB, alternately, repeated
  f silent-grpc     4,100 gRPC ModelStreamInfer streams that never send a message
  g nested-json     an infer request whose data is nested 40 arrays deep, repeated
  h loop-answers    (beyond the issue's list) sine-generate answers just under the number of JSON
                    values the HTTP front still encodes on its event loop, repeated

Recorded per attack: the normal client's liveness and infer p50/p99 (successful requests; any
other answer, a timeout or a refused connection is an error), the attack's outcome (status codes),
the server's VmRSS before the attack (baseline) and its peak (VmRSS sampled every 50 ms from the
attack's start to its end, and VmHWM), and whether the server still answers liveness after it.

    python benchmarks/hostile.py [--quick] [--attacks a,c,...] [--seconds 10] [--rate 20] [--out docs/hostile-bench.txt]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import (  # noqa: E402
    HOST,
    HttpConnection,
    cpu_seconds,
    free_port,
    grpc_modules,
    launch,
    machine,
    machine_busy_seconds,
    open_grpc_channels,
    request_bytes,
    stop,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
SINE = ROOT / "artifacts" / "sine-elman"
MODEL = "sine"
LIVE = "/v2/health/live"
INFER = f"/v2/models/{MODEL}/infer"
GENERATE = f"/v2/models/{MODEL}-generate/infer"
X = 0.5  # the normal client's input

REQUEST_TIMEOUT_S = 5.0  # a normal client's request (connect and answer)
ATTACK_IO_TIMEOUT_S = 60.0  # one attacker's connect, write or answer
SETUP_TIMEOUT_S = 120.0  # an attack in place (4,100 connections opened, 52 bodies sent)
OUTCOME_TIMEOUT_S = 90.0  # from the stop signal to the attack's outcome
SAMPLE_S = 0.05  # VmRSS sampling period
POLL_S = 0.02
MIB = 1 << 20
GRPC_BATCH, GRPC_PAUSE_S = 128, 0.05  # silent streams opened at a time, and the pause between
FD_MARGIN = 256  # descriptors kept free beside the attack's connections
LIVE_P99_TARGET_MS = 50.0  # issue 23: liveness p99 under each attack
MEMORY_TARGET_MB = 2048.0  # issue 23: peak memory well under 2 GiB


@dataclass(frozen=True)
class Plan:
    """How big each attack is and how long it lasts."""

    seconds: float = 10.0
    rate: float = 20.0  # normal requests a second, of each kind
    idle_connections: int = 4100
    header_chunk: int = 64 << 10
    partial_bodies: int = 52
    declared_mib: int = 60
    sent_mib: int = 59
    answer_batch: int = 160
    answer_steps: int = 100_000
    bomb_mib: int = 65
    grpc_streams: int = 4100
    nesting: int = 40
    loop_steps: int = 1  # (h) set by on_loop_steps for the server's threshold
    loop_limit: int = 0
    idle_seconds: float = 15.0  # (a) at least: past the default --header-timeout (10 s), its reaping included

    def window_s(self, letter: str) -> float:
        """How long the normal client runs under attack ``letter``."""
        return max(self.seconds, self.idle_seconds) if letter == "a" else self.seconds

    @property
    def longest_s(self) -> float:
        """No attack outlives this, whatever its parent does."""
        return SETUP_TIMEOUT_S + max(self.seconds, self.idle_seconds) + OUTCOME_TIMEOUT_S


FULL = Plan()
QUICK = Plan(
    seconds=2.0,
    idle_seconds=0.0,
    idle_connections=200,
    partial_bodies=6,
    answer_batch=16,
    answer_steps=10_000,
    grpc_streams=200,
)


# ---- the attacks (each in a process of its own) -------------------------------------------------


@dataclass
class Attack:
    """What an attack knows: where, how big, and the parent's signals ("ready" out, stop in)."""

    http_port: int
    grpc_port: int
    plan: Plan
    queue: Any  # multiprocessing.Queue
    stop: Any  # multiprocessing.Event
    started: float = field(default_factory=time.monotonic)

    def ready(self) -> None:
        self.queue.put(("ready", None))

    def stopped(self) -> bool:
        return self.stop.is_set() or time.monotonic() - self.started > self.plan.longest_s

    async def until_stopped(self) -> None:
        while not self.stopped():
            await asyncio.sleep(POLL_S)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection(HOST, self.http_port), ATTACK_IO_TIMEOUT_S)


def tally(statuses: Counter) -> str:
    """``Counter({413: 40, 'reset': 2})`` -> ``40 x 413, 2 x reset``."""
    return ", ".join(f"{count} x {status}" for status, count in statuses.most_common()) or "none"


async def read_status(reader: asyncio.StreamReader, timeout: float = ATTACK_IO_TIMEOUT_S) -> int | str:
    """The status of what the server sends first, or what happened instead."""
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except asyncio.TimeoutError:
        return "no answer"
    except ConnectionError:
        return "reset"
    if line.startswith(b"HTTP/1.1 ") and line[9:12].isdigit():
        return int(line[9:12])
    return "closed" if not line else "other"


async def idle_slot(attack: Attack, writers: list, index: int, closed: Counter, failed: Counter) -> None:
    """One idle connection kept open: each time the server closes it (what it said counted in
    ``closed``), another is opened in its place (a failed connect is counted in ``failed`` and
    tried again a second later), until the attack ends or its task is cancelled."""
    reader, writers[index] = writers[index]
    while not attack.stopped():  # also checked here: wait_for can swallow a cancellation (Python 3.11)
        closed[await read_status(reader, attack.plan.longest_s)] += 1
        writers[index].close()
        while not attack.stopped():
            try:
                reader, writers[index] = await attack.connect()
                break
            except (OSError, asyncio.TimeoutError) as error:
                failed[type(error).__name__] += 1
                await asyncio.sleep(1.0)


async def idle_http(attack: Attack) -> dict:
    """(a) Connections that send nothing, held for the attack's seconds and reopened whenever the
    server closes one: how many it closed meanwhile, and what it said when it did."""
    count, opened, failed, closed = attack.plan.idle_connections, [], Counter(), Counter()
    for start in range(0, count, 256):
        batch = [attack.connect() for _ in range(min(256, count - start))]
        for result in await asyncio.gather(*batch, return_exceptions=True):
            if isinstance(result, BaseException):
                failed[type(result).__name__] += 1
            else:
                opened.append(result)
    slots = [asyncio.create_task(idle_slot(attack, opened, i, closed, failed)) for i in range(len(opened))]
    attack.ready()
    held_from = time.monotonic()
    await attack.until_stopped()
    held_s = time.monotonic() - held_from
    for slot in slots:
        slot.cancel()
    await asyncio.wait(slots, timeout=ATTACK_IO_TIMEOUT_S)
    for writer in opened:
        if isinstance(writer, asyncio.StreamWriter):
            writer.close()
    text = f"{len(opened)} held open{f' ({tally(failed)} failed)' if failed else ''}, reopened when closed"
    text += f"; closed by the server within {held_s:.0f} s: {tally(closed)}"
    return {"text": text, "statuses": dict(closed), "count": len(opened)}


async def endless_header(attack: Attack) -> dict:
    """(b) One connection at a time sends a header value that never ends, as fast as the server
    takes it; once the server answers (or stops reading for 5 s), the next connection starts."""
    head, chunk = b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Endless: ", b"a" * attack.plan.header_chunk
    statuses, sent, longest = Counter(), 0, 0
    attack.ready()
    while not attack.stopped():
        reader, writer = await attack.connect()
        answer = asyncio.create_task(read_status(reader))
        writer.write(head)
        this = 0
        try:
            while not answer.done() and not attack.stopped():
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 5.0)
                this += len(chunk)
        except (ConnectionError, asyncio.TimeoutError):
            pass
        status = await answer if answer.done() or not attack.stopped() else "held to the end"
        answer.cancel()
        statuses[status] += 1
        sent, longest = sent + this, max(longest, this)
        writer.close()
    text = f"{sum(statuses.values())} connections, {sent / MIB:.0f} MiB sent (at most {longest / 1024:.0f} KiB one)"
    return {"text": f"{text}: {tally(statuses)}", "statuses": dict(statuses), "count": sum(statuses.values())}


async def partial_body(attack: Attack, settled: Callable[[], None]) -> int | str:
    """(c) One request declaring ``declared_mib`` and sending ``sent_mib`` of it (or until the
    server answers), then holding until the attack ends: its status, or "held"."""
    plan = attack.plan
    reader, writer = await attack.connect()
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    writer.write(f"{head}Content-Length: {plan.declared_mib * MIB}\r\n\r\n".encode())
    answer = asyncio.create_task(read_status(reader, plan.longest_s))
    megabyte = b" " * MIB
    try:
        for _ in range(plan.sent_mib):
            if answer.done() or attack.stopped():
                break
            writer.write(megabyte)
            await asyncio.wait_for(writer.drain(), ATTACK_IO_TIMEOUT_S)
    except (ConnectionError, asyncio.TimeoutError):
        pass
    settled()
    while not answer.done() and not attack.stopped():
        await asyncio.sleep(POLL_S)
    writer.close()
    return answer.result() if answer.done() else "held"


async def partial_bodies(attack: Attack) -> dict:
    """(c) ``partial_bodies`` such requests at once; in place once each has sent its part or been
    answered."""
    count, done = attack.plan.partial_bodies, []
    bodies = [asyncio.create_task(partial_body(attack, lambda: done.append(1))) for _ in range(count)]
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    while len(done) < count and time.monotonic() < deadline and not all(body.done() for body in bodies):
        await asyncio.sleep(POLL_S)
    attack.ready()
    await attack.until_stopped()
    results = await asyncio.gather(*bodies, return_exceptions=True)
    statuses = Counter(type(r).__name__ if isinstance(r, BaseException) else r for r in results)
    plan = attack.plan
    text = f"{count} x {plan.sent_mib} of {plan.declared_mib} MiB: {tally(statuses)}"
    return {"text": text, "statuses": dict(statuses), "count": count}


async def repeat(attack: Attack, requests: list[bytes]) -> tuple[Counter, list[float], int]:
    """Sends ``requests`` in turn until the attack ends, on a kept-alive connection after a 200 and
    a new one after anything else (a refusal may close it): the statuses, each request's seconds
    (a new connection's connect included), the largest answer's bytes."""
    statuses, seconds, largest, connection = Counter(), [], 0, None
    while not attack.stopped():
        started = time.perf_counter()
        if connection is None:
            connection = await asyncio.wait_for(HttpConnection.open(attack.http_port), ATTACK_IO_TIMEOUT_S)
        try:
            status, body = await asyncio.wait_for(
                connection.request(requests[len(seconds) % len(requests)]), ATTACK_IO_TIMEOUT_S
            )
        except (ConnectionError, asyncio.TimeoutError) as error:
            status, body = type(error).__name__, b""
        if status != 200:
            connection.close()
            connection = None
        seconds.append(time.perf_counter() - started)
        statuses[status] += 1
        largest = max(largest, len(body))
    if connection is not None:
        connection.close()
    return statuses, seconds, largest


def repeated(what: str, statuses: Counter, seconds: list[float], largest: int) -> dict:
    p50 = np.percentile(seconds, 50) * 1e3 if seconds else float("nan")
    text = f"{len(seconds)} x {what} (p50 {p50:.1f} ms, largest answer {largest / 1e3:.1f} kB): {tally(statuses)}"
    return {"text": text, "statuses": dict(statuses), "count": len(seconds)}


async def generate_answers(attack: Attack, count: int, what: str = "") -> dict:
    """sine-generate for ``answer_batch`` inputs x ``count`` steps, one request after another."""
    batch = attack.plan.answer_batch
    x = {"name": "x", "shape": [batch, 1], "datatype": "FP32", "data": [X] * batch}
    steps = {"name": "steps", "shape": [1], "datatype": "INT64", "data": [count]}
    body = json.dumps({"inputs": [x, steps]}).encode()
    attack.ready()
    result = await repeat(attack, [request_bytes("POST", GENERATE, body)])
    return repeated(f"{batch} x {count:,} steps{what} ({len(body)} B)", *result)


async def large_answers(attack: Attack) -> dict:
    """(d) answers past the limits: 160 x 100,000 steps, ~300 MB as JSON."""
    return await generate_answers(attack, attack.plan.answer_steps)


async def loop_answers(attack: Attack) -> dict:
    """(h, beyond the issue's list) the largest answers the HTTP front still encodes as JSON on its
    event loop (under http_api.OFFLOAD_JSON_ELEMENTS values): allowed, and each one holds the loop."""
    plan = attack.plan
    return await generate_answers(attack, plan.loop_steps, f", <= {plan.loop_limit:,} values")


def bomb(encoding: str, inflated_mib: int) -> bytes:
    """Zeros that inflate to ``inflated_mib`` MiB, as gzip or as deflate (zlib framing)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS + (16 if encoding == "gzip" else 0))
    zeros = bytes(MIB)
    return b"".join([*(packer.compress(zeros) for _ in range(inflated_mib)), packer.flush()])


def encoded_request(path: str, body: bytes, encoding: str) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Encoding: {encoding}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


async def bombs(attack: Attack) -> dict:
    """(e) gzip and deflate bombs in turn."""
    made = {encoding: bomb(encoding, attack.plan.bomb_mib) for encoding in ("gzip", "deflate")}
    attack.ready()
    result = await repeat(attack, [encoded_request(INFER, body, encoding) for encoding, body in made.items()])
    sizes = "/".join(f"{len(body) / 1e3:.0f}" for body in made.values())
    return repeated(f"gzip/deflate bombs ({sizes} kB -> {attack.plan.bomb_mib} MiB)", *result)


async def nested_json(attack: Attack) -> dict:
    """(g) an infer request whose data is nested ``nesting`` arrays deep, one after another."""
    data: Any = [X]
    for _ in range(attack.plan.nesting):
        data = [data]
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": data}]}).encode()
    attack.ready()
    result = await repeat(attack, [request_bytes("POST", INFER, body)])
    return repeated(f"data nested {attack.plan.nesting} deep", *result)


async def silent_grpc(attack: Attack) -> dict:
    """(f) ModelStreamInfer streams that never send a message, held for the attack's seconds: how
    many the server ended meanwhile, with which code."""
    _, service = grpc_modules()
    count = attack.plan.grpc_streams
    channels = open_grpc_channels(attack.grpc_port, count)
    await asyncio.wait_for(asyncio.gather(*(channel.channel_ready() for channel in channels)), ATTACK_IO_TIMEOUT_S)
    stubs = [service.GRPCInferenceServiceStub(channel) for channel in channels]
    never = asyncio.Event()

    async def nothing():
        await never.wait()
        return
        yield  # an async generator that yields nothing

    calls = []
    for index in range(count):  # paced: grpc.aio cancels some of thousands of calls made in one turn
        calls.append(stubs[index % len(stubs)].ModelStreamInfer(nothing()))
        if index % GRPC_BATCH == GRPC_BATCH - 1:
            await asyncio.sleep(GRPC_PAUSE_S)
    await asyncio.sleep(1.0)  # the last calls are started on their connections
    attack.ready()
    held_from = time.monotonic()
    await attack.until_stopped()
    held_s = time.monotonic() - held_from
    ended = Counter([str((await call.code()).name) for call in calls if call.done()])
    for call in calls:
        call.cancel()
    await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)
    text = f"{count} streams on {len(channels)} connections; ended within {held_s:.0f} s: "
    return {"text": text + (tally(ended) if ended else "none"), "statuses": dict(ended), "count": count}


ATTACKS: dict[str, tuple[str, Callable]] = {
    "a": ("idle-http", idle_http),
    "b": ("endless-header", endless_header),
    "c": ("partial-bodies", partial_bodies),
    "d": ("large-answers", large_answers),
    "e": ("bombs", bombs),
    "f": ("silent-grpc", silent_grpc),
    "g": ("nested-json", nested_json),
    "h": ("loop-answers", loop_answers),
}


def run_attack(letter: str, http_port: int, grpc_port: int, plan: Plan, queue: Any, stop_event: Any) -> None:
    """The attack process: runs the attack, puts ("ready", None) once it is in place and
    ("outcome", dict) at its end (("failed", text) if it broke)."""
    attack = Attack(http_port, grpc_port, plan, queue, stop_event)
    try:
        queue.put(("outcome", asyncio.run(ATTACKS[letter][1](attack))))
    except Exception as error:  # the parent reports it in the table
        queue.put(("failed", f"the attack failed: {type(error).__name__}: {error}"))


# ---- the normal client and the server's memory (this process) -----------------------------------


@dataclass
class Normal:
    """The normal client's latencies (seconds) by kind, and its errors; the cores the server and
    the whole machine kept busy meanwhile."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {"live": [], "infer": []})
    errors: Counter = field(default_factory=Counter)
    server_cores: float = 0.0
    machine_cores: float = 0.0

    def percentiles(self, kind: str) -> str:
        values = np.asarray(self.latencies[kind]) * 1e3
        if not values.size:
            return "-/-"
        p50, p99 = np.percentile(values, [50, 99])
        return f"{p50:.1f}/{p99:.1f}"

    def missed(self, kind: str) -> str:
        """By how much ``kind``'s p99 missed its target, and how many requests were slower."""
        values = np.asarray(self.latencies[kind]) * 1e3
        if not values.size:
            return "(no request answered)"
        over = int((values >= LIVE_P99_TARGET_MS).sum())
        p99 = self.p99_ms(kind)
        tail = f"{over} of {values.size} over {LIVE_P99_TARGET_MS:g} ms, the slowest {values.max():.0f} ms"
        return f"{p99:.1f} ms (+{p99 - LIVE_P99_TARGET_MS:.1f}; {tail})"

    def p99_ms(self, kind: str) -> float:
        values = self.latencies[kind]
        return float(np.percentile(values, 99) * 1e3) if values else float("inf")


async def normal_request(normal: Normal, port: int, kind: str, data: bytes, expected_y: float) -> None:
    started = time.perf_counter()
    try:
        connection = await asyncio.wait_for(HttpConnection.open(port), REQUEST_TIMEOUT_S)
        try:
            status, body = await asyncio.wait_for(connection.request(data), REQUEST_TIMEOUT_S)
        finally:
            connection.close()
    except (OSError, ConnectionError, asyncio.TimeoutError) as error:
        normal.errors[f"{kind} {type(error).__name__}"] += 1
        return
    elapsed = time.perf_counter() - started
    if status != 200:
        normal.errors[f"{kind} {status}"] += 1
    elif kind == "infer" and not answers_y(body, expected_y):
        normal.errors["infer wrong y"] += 1
    else:
        normal.latencies[kind].append(elapsed)


def answers_y(body: bytes, expected_y: float) -> bool:
    outputs = {output["name"]: output["data"] for output in json.loads(body)["outputs"]}
    return abs(outputs["y"][0] - expected_y) <= 1e-6 * max(1.0, abs(expected_y))


async def normal_client(port: int, seconds: float, rate: float, expected_y: float) -> Normal:
    """A liveness check and a one-step infer every 1/rate s each (open loop: a slow answer does not
    delay the next request), a new connection per request."""
    normal = Normal()
    infer = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [X]}]}).encode()
    requests = {"live": request_bytes("GET", LIVE), "infer": request_bytes("POST", INFER, infer)}
    started, sent = time.perf_counter(), []
    for index in range(max(1, int(seconds * rate))):
        await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
        for kind, data in requests.items():
            sent.append(asyncio.create_task(normal_request(normal, port, kind, data, expected_y)))
    await asyncio.gather(*sent)
    return normal


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in kB (empty once it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {line.split(":")[0]: int(line.split()[1]) for line in lines if line.startswith(("VmRSS:", "VmHWM:"))}


class MemoryWatch(threading.Thread):
    """Samples a process's VmRSS every SAMPLE_S until stopped: the highest seen, and VmHWM."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.samples, self.hwm_kb = pid, 0, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            found = memory_kb(self.pid)
            self.peak_kb, self.samples = max(self.peak_kb, found.get("VmRSS", 0)), self.samples + 1
            self.hwm_kb = max(self.hwm_kb, found.get("VmHWM", 0))
            if self.done.wait(SAMPLE_S):
                return

    def finish(self) -> None:
        self.done.set()
        self.join()


# ---- one attack against a fresh server ---------------------------------------------------------


@dataclass
class Row:
    """One attack's line of the table."""

    letter: str
    outcome: str
    normal: Normal
    base_kb: int
    peak_kb: int
    hwm_kb: int
    server_up: bool

    @property
    def name(self) -> str:
        return ATTACKS[self.letter][0]

    def cells(self) -> list[str]:
        errors = sum(self.normal.errors.values())
        listed = f" ({tally(self.normal.errors)})" if errors else ""
        memory = f"{self.base_kb / 1024:.0f}/{self.peak_kb / 1024:.0f} (HWM {self.hwm_kb / 1024:.0f})"
        live, infer = self.normal.percentiles("live"), self.normal.percentiles("infer")
        up = "up" if self.server_up else "DOWN"
        cpu = f"{self.normal.server_cores:.2f}/{self.normal.machine_cores:.2f}"
        return [f"{self.letter} {self.name}", self.outcome, live, infer, f"{errors}{listed}", memory, cpu, up]


HEADINGS = (
    "attack|outcome|live p50/p99 ms|infer p50/p99 ms|client errors|RSS base/peak MB|cores server/all|server"
).split("|")


def rnn_command() -> Path:
    """The `rnn` entry point installed beside this interpreter (what a user runs), a Python script."""
    beside = Path(sys.executable).with_name("rnn")
    found = beside if beside.exists() else shutil.which("rnn")
    if found is None:
        raise SystemExit("no `rnn` command beside this Python or on PATH: install the project (make install)")
    return Path(found)


def expected_y(folder: Path) -> float:
    """The runtime's y for the normal client's step (what every infer answer must carry)."""
    sys.path.insert(0, str(ROOT))
    import runtime

    y, _ = runtime.load(folder).step(np.array([[X]], np.float32))
    return float(y.ravel()[0])


def on_loop_steps(folder: Path, plan: Plan) -> Plan:
    """``plan`` with (h)'s steps: a sine-generate answer for ``answer_batch`` inputs as close under
    the HTTP front's OFFLOAD_JSON_ELEMENTS as whole steps go (outputs each step, the new state once)."""
    import runtime
    from toolkit.serving.http_api import OFFLOAD_JSON_ELEMENTS

    signature, batch = runtime.load(folder).signature, plan.answer_batch
    per_step, states = signature.output_bytes // 4, signature.state_bytes // 8  # float32 values a row
    steps = (OFFLOAD_JSON_ELEMENTS - batch * states) // (batch * per_step)
    return replace(plan, loop_steps=max(1, steps), loop_limit=OFFLOAD_JSON_ELEMENTS)


async def still_live(port: int) -> bool:
    normal = Normal()
    await normal_request(normal, port, "live", request_bytes("GET", LIVE), 0.0)
    return bool(normal.latencies["live"])


def attack_with_client(letter: str, ports: tuple[int, int], pid: int, plan: Plan, y: float) -> tuple[str, Normal]:
    """Starts the attack's process, runs the normal client for the attack's seconds once it is in
    place (the CPU of server ``pid`` and of the machine measured meanwhile), stops it: (its
    outcome, the normal client's record)."""
    http_port, grpc_port = ports
    context = multiprocessing.get_context("spawn")
    queue, stop_event = context.Queue(), context.Event()
    process = context.Process(target=run_attack, args=(letter, http_port, grpc_port, plan, queue, stop_event))
    process.start()
    normal = Normal()
    try:
        kind, value = queue.get(timeout=SETUP_TIMEOUT_S)
        if kind == "ready":
            server_s, machine_s, started = cpu_seconds(pid), machine_busy_seconds(), time.perf_counter()
            normal = asyncio.run(normal_client(http_port, plan.window_s(letter), plan.rate, y))
            elapsed = time.perf_counter() - started
            normal.server_cores = (cpu_seconds(pid) - server_s) / elapsed
            normal.machine_cores = (machine_busy_seconds() - machine_s) / elapsed
            stop_event.set()
            kind, value = queue.get(timeout=OUTCOME_TIMEOUT_S)
    except Exception as error:  # queue.Empty: the attack said nothing in time
        kind, value = "failed", f"the attack did not report in time ({type(error).__name__})"
    finally:
        stop_event.set()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
    return (value["text"] if kind == "outcome" else value), normal


def measure(letter: str, plan: Plan, folder: Path, workdir: Path, y: float) -> Row:
    """A fresh `rnn serve` with its default limits, warmed by the normal client; then the attack
    and the normal client together while the server's memory is sampled."""
    http_port = free_port()
    grpc_port = free_port()
    while grpc_port == http_port:
        grpc_port = free_port()
    log = workdir / f"serve-{ATTACKS[letter][0]}.log"
    ports = ["--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    arguments = ["serve", f"{MODEL}={folder}", "--host", HOST, *ports]
    server = launch(letter, arguments, http_port, log, rnn_command(), grpc_port=grpc_port)
    try:
        asyncio.run(wait_ready(server, log))
        asyncio.run(normal_client(http_port, 0.5, plan.rate, y))  # every path of the normal client once
        base_kb = memory_kb(server.pid).get("VmRSS", 0)
        watch = MemoryWatch(server.pid)
        watch.start()
        try:
            outcome, normal = attack_with_client(letter, (http_port, grpc_port), server.pid, plan, y)
        finally:
            watch.finish()
        up = server.process.poll() is None and asyncio.run(still_live(http_port))
        if server.process.poll() is not None:
            outcome += f"; the server exited with {server.process.returncode}: {log.read_text()[-300:]!r}"
    finally:
        stop([server])
    return Row(letter, outcome, normal, base_kb, watch.peak_kb, watch.hwm_kb, up)


# ---- the run: descriptors, the table, the verdicts ---------------------------------------------


def raise_open_files(plan: Plan, letters: list[str]) -> tuple[Plan, str]:
    """RLIMIT_NOFILE raised to its hard limit (the servers started from here inherit it); with
    too few for the idle connections, fewer connections, said in the returned line."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = plan.idle_connections + FD_MARGIN if "a" in letters else soft
    target = max(soft, wanted) if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    line = f"RLIMIT_NOFILE {target} (was {soft}, hard {'unlimited' if hard == resource.RLIM_INFINITY else hard})"
    if target < wanted:
        plan = replace(plan, idle_connections=max(1, target - FD_MARGIN))
        line += f"; TOO LOW for the idle connections: {plan.idle_connections} opened instead"
    return plan, line


def table(rows: list[Row]) -> list[str]:
    lines = [HEADINGS, *(row.cells() for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(HEADINGS))]
    text = [" | ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    return [text[0], "-+-".join("-" * width for width in widths), *text[1:]]


def verdicts(rows: list[Row]) -> list[str]:
    """Issue 23's targets, each with the attacks that missed it and by how much."""
    missed = [
        f"{row.name} {row.normal.missed('live')}" for row in rows if row.normal.p99_ms("live") >= LIVE_P99_TARGET_MS
    ]
    peak = max(rows, key=lambda row: max(row.peak_kb, row.hwm_kb))
    peak_mb = max(peak.peak_kb, peak.hwm_kb) / 1024
    live = f"met under all {len(rows)}" if not missed else "MISSED under " + ", ".join(missed)
    memory = "met" if peak_mb < MEMORY_TARGET_MB else "MISSED"
    errors = sum(sum(row.normal.errors.values()) for row in rows)
    down = [row.name for row in rows if not row.server_up]
    return [
        f"target liveness p99 < {LIVE_P99_TARGET_MS:g} ms while each attack runs: {live}",
        f"target peak RSS < {MEMORY_TARGET_MB:g} MB: {memory} (highest {peak_mb:.0f} MB, {peak.name})",
        f"normal client errors: {errors}; server answering liveness after every attack: "
        + ("yes" if not down else "NO after " + ", ".join(down)),
    ]


def code_line() -> str:
    """The commit the server ran from, and whether its serving code differed from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "toolkit", "runtime"], cwd=ROOT, capture_output=True
        )
    except OSError:
        return "code: not a git checkout"
    changed = "with uncommitted changes under toolkit/ or runtime/" if dirty.stdout.strip() else "clean"
    return f"code: {head.stdout.strip() or 'unknown'} ({changed})"


def header(plan: Plan, files_line: str, started: dict[str, Any]) -> list[str]:
    load = "/".join(f"{value:.2f}" for value in started["load_average_before"])
    return [
        "rnn serve under hostile clients (issue 23): one attack at a time, each against a fresh server",
        f"server: rnn serve {MODEL}=<a copy of artifacts/sine-elman>, default limits, 127.0.0.1; RSS of its process "
        f"sampled every {SAMPLE_S * 1e3:.0f} ms from the attack's start to its end, baseline before it (MB = MiB)",
        f"normal client: GET {LIVE} and a 1-step infer of {MODEL} (y checked), {plan.rate:g}/s each, a new "
        f"connection per request, for {plan.seconds:g} s while each attack is in place "
        f"({plan.window_s('a'):g} s under idle-http: the server's header timeout reaps them meanwhile)",
        f"machine: {started['cpu']}, {started['cores']} cores, load average {load} at start; "
        f"Python {started['python']}; {files_line}",
        time.strftime("run at %Y-%m-%d %H:%M UTC; ", time.gmtime()) + code_line(),
        "",
    ]


def letters_of(text: str) -> list[str]:
    names = {name: letter for letter, (name, _) in ATTACKS.items()}
    letters = [names.get(part.strip(), part.strip()) for part in text.split(",") if part.strip()]
    unknown = [letter for letter in letters if letter not in ATTACKS]
    if unknown or not letters:
        known = ", ".join(f"{letter} ({name})" for letter, (name, _) in ATTACKS.items())
        raise argparse.ArgumentTypeError(f"unknown attack {', '.join(unknown) or text!r}; known: {known}")
    return letters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attacks", type=letters_of, default=list(ATTACKS), help="letters or names (default all)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small counts, 2 s an attack")
    parser.add_argument("--seconds", type=float, help="seconds the normal client runs under each attack")
    parser.add_argument("--rate", type=float, help="normal requests a second, of each kind (default 20)")
    parser.add_argument(
        "--answer-steps", type=int, help="steps of each large-answers request (default 100,000; --quick 10,000)"
    )
    parser.add_argument("--out", type=Path, help="also write the table to this file (e.g. docs/hostile-bench.txt)")
    parser.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if (args.seconds is not None and not 0 < args.seconds <= 600) or (
        args.rate is not None and not 0 < args.rate <= 500
    ):
        parser.error("--seconds must be in (0, 600] and --rate in (0, 500]")
    if args.answer_steps is not None and not 1 <= args.answer_steps <= 10_000_000:
        parser.error("--answer-steps must be 1 to 10,000,000")
    plan = replace(
        plan,
        seconds=args.seconds or plan.seconds,
        rate=args.rate or plan.rate,
        answer_steps=args.answer_steps or plan.answer_steps,
    )
    plan, files_line = raise_open_files(plan, args.attacks)
    started = machine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hostile-bench-") as work:
        folder = Path(work) / "sine-elman"
        shutil.copytree(SINE, folder)
        y = expected_y(folder)
        plan = on_loop_steps(folder, plan) if "h" in args.attacks else plan
        for letter in args.attacks:
            print(f"{letter} {ATTACKS[letter][0]} ...", file=sys.stderr, flush=True)
            rows.append(measure(letter, plan, folder, Path(work), y))
    end_load = "/".join(f"{value:.2f}" for value in os.getloadavg())
    lines = [*header(plan, files_line, started), *table(rows), "", *verdicts(rows), f"load average at end: {end_load}"]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a" if args.append else "w") as sink:
            sink.write(("\n" if args.append and args.out.exists() and args.out.stat().st_size else "") + text)
    sys.exit(0 if all(row.server_up for row in rows) else 1)


if __name__ == "__main__":
    main()

"""Measures `rnn serve` against a hand-written FastAPI server: sequence steps per second and p50/p99
latency with 1, 16 and 256 concurrent closed-loop sequences, over HTTP (the same KServe v2 JSON
requests, the same load generator for both) and over gRPC streaming (one ModelStreamInfer stream
per sequence). Prints a table of ratios measured in one run; writes serve.txt, serve.json, serve.png.
``--model sine`` (the default) serves the seed's Elman (FP32 x); ``--model char`` the worked character
GRU, a token model (INT64 token ids, a (2, batch, 64) state; `Workload` says what each sends).

A reference cell, "grpc-floor" (at the highest concurrency; --no-floor skips it), drives the same gRPC
load against a bare grpc.aio server (``--serve-floor``: our server's options and event loop, the
service's generated servicer) whose ModelStreamInfer answers every request with one prebuilt response
of our answers' shape and does nothing else: the server CPU per step of the protocol stack itself,
what is left for decoding, the engine and the model being the rest of ours. It is not ours: no ratios.

The servers run in subprocesses of this script (``--serve-baseline`` / ``--serve-ours``); the
load comes from this process (asyncio on uvloop: raw HTTP/1.1 keep-alive connections, one per
sequence; grpc.aio with the service's generated stubs). Client and servers share the machine's
cores, so the CPU time of each process is recorded (from /proc/PID/stat) with every cell.

    python benchmarks/serve.py [--model sine|char] [--seconds 5] [--concurrency 1,16,256] [--delay 0,200,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import (  # noqa: E402  (ray_serve.py imports machine and machine_busy_seconds from here)
    HOST,
    HttpConnection,
    ServerProcess,
    cpu_seconds,
    free_port,
    grpc_modules,
    integers,
    launch,
    machine,
    machine_busy_seconds,
    open_grpc_channels,
    request_bytes,
    stop,
    versions,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()
METRICS_PATH = "/metrics"

BASELINE, OURS_HTTP, OURS_GRPC = "baseline-http", "ours-http", "ours-grpc"
FLOOR = "grpc-floor"  # reference: a bare grpc.aio server answering with a fixed response, no model
TRANSPORTS = (BASELINE, OURS_HTTP, OURS_GRPC)
GRPC_TRANSPORTS = (OURS_GRPC, FLOOR)

OTHER_LOAD_WARNING = 0.2  # cores busy outside client and servers that make the table say it was disturbed
SPOT_STEPS = 200  # steps of the correctness spot check's sequence
START, END = ',"sequence_start":true', ',"sequence_end":true'


# ---- what is served: the seed's sine model, or the worked character GRU (a token model) ----------


@dataclass(frozen=True)
class Workload:
    """A served model and one step's request: its input (name, datatype, shape at batch 1, the values
    cycled one per step), the output the spot check compares, one step's outputs (the floor's
    answer) and the throughput targets over the baseline at the highest concurrency."""

    model: str
    folder: Path
    input: str
    datatype: str
    shape: tuple[int, ...]
    values: np.ndarray
    output: str
    outputs: tuple[tuple[str, tuple[int, ...]], ...]
    target_ratio: dict[str, float]

    def text(self, value: Any) -> str:
        """A value as JSON (repr of a float32 as a Python float round-trips exactly)."""
        return repr(float(value)) if self.datatype == "FP32" else str(int(value))

    def raw(self, value: Any) -> bytes:
        return struct.pack("<f", value) if self.datatype == "FP32" else struct.pack("<q", int(value))

    def random_values(self, count: int) -> np.ndarray:
        rng = np.random.default_rng(0)
        if self.datatype == "FP32":
            return rng.uniform(-1, 1, count).astype(np.float32)
        return rng.integers(0, self.outputs[0][1][-1], count).astype(np.int64)


CHAR_VOCABULARY = 41  # examples/char_generator's alphabet
WORKLOADS = {
    "sine": Workload(
        "sine",
        ROOT / "artifacts" / "sine-elman",
        "x",
        "FP32",
        (1, 1),
        np.sin(np.linspace(2.0, 10.0, 64, dtype=np.float64)).astype(np.float32),
        "y",
        (("y", (1, 1)), ("h_out", (1, 6))),
        {OURS_GRPC: 3.0, OURS_HTTP: 1.5},
    ),
    "char": Workload(  # exported by benchmarks/token_streaming.py's export_char_gru (seed-0 weights)
        "char",
        ROOT / "out" / "bench-tokens" / "char-gru",
        "char",
        "INT64",
        (1,),
        np.random.default_rng(1).integers(0, CHAR_VOCABULARY, 64).astype(np.int64),
        "logits",
        (("logits", (1, CHAR_VOCABULARY)), ("h_out", (2, 1, 64))),
        {OURS_GRPC: 2.0, OURS_HTTP: 2.0},
    ),
}


def use(name: str) -> None:
    """Points the module's request globals at workload ``name`` (main() calls it first, in the
    load generator and in each server subprocess alike)."""
    global W, MODEL, FOLDER, INFER_PATH, INPUTS, X_TEXT, X_BYTES, BODY, TARGET_RATIO
    W = WORKLOADS[name]
    MODEL, FOLDER, INFER_PATH, INPUTS = W.model, W.folder, f"/v2/models/{W.model}/infer", W.values
    X_TEXT, X_BYTES = [W.text(x) for x in INPUTS], [W.raw(x) for x in INPUTS]
    shape = ",".join(str(n) for n in W.shape)
    tensor = f'{{"name":"{W.input}","shape":[{shape}],"datatype":"{W.datatype}","data":[%s]}}'
    BODY = '{"inputs":[' + tensor + '],"parameters":{"sequence_id":%d%s}}'
    TARGET_RATIO = W.target_ratio


use("sine")


# ---- servers (subprocesses) -------------------------------------------------------------------


def serve_baseline(port: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serve_baseline import serve

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(2048)
    serve(FOLDER, sock, model=W.model)


def serve_ours(http_port: int, grpc_port: int, delay_us: int, use_uvloop: bool) -> None:
    sys.path.insert(0, str(ROOT))
    from toolkit.serving import Server, Settings

    if use_uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    settings = Settings(max_queue_delay_us=delay_us)
    Server([(MODEL, FOLDER)], host=HOST, http_port=http_port, grpc_port=grpc_port, settings=settings).run()


# ---- HTTP client: raw HTTP/1.1 keep-alive, one connection per sequence ------------------------


def infer_bytes(x_text: str, sequence_id: int, flags: str = "") -> bytes:
    body = (BODY % (x_text, sequence_id, flags)).encode("ascii")
    return (
        b"POST " + INFER_PATH.encode() + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


# ---- one cell: N closed-loop sequences for a while ----------------------------------------------


@dataclass
class Run:
    """What the workers of one cell share: whether to go on, and what they measured."""

    active: bool = True
    latencies: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)


async def http_sequence(run: Run, port: int, sequence_id: int, offset: int) -> None:
    connection = await HttpConnection.open(port)
    try:
        flags, step = START, offset
        latencies, ends, clock = run.latencies, run.ends, time.perf_counter
        while run.active:
            data = infer_bytes(X_TEXT[step % len(X_TEXT)], sequence_id, flags)
            started = clock()
            status, body = await connection.request(data)
            finished = clock()
            if status != 200:
                raise RuntimeError(f"HTTP {status} for sequence {sequence_id}: {body[:300]!r}")
            latencies.append(finished - started)
            ends.append(finished)
            flags, step = "", step + 1
        status, body = await connection.request(infer_bytes(X_TEXT[0], sequence_id, END))
        if status != 200:
            raise RuntimeError(f"HTTP {status} ending sequence {sequence_id}: {body[:300]!r}")
    finally:
        connection.close()


def grpc_request(service_pb2: Any, sequence_id: int, x: bytes, start: bool = False, end: bool = False) -> Any:
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = W.input, W.datatype
    tensor.shape.extend(W.shape)
    request.raw_input_contents.append(x)
    request.parameters["sequence_id"].int64_param = sequence_id
    if start:
        request.parameters["sequence_start"].bool_param = True
    if end:
        request.parameters["sequence_end"].bool_param = True
    return request


async def grpc_sequence(run: Run, stub: Any, service_pb2: Any, sequence_id: int, offset: int) -> None:
    """One bidirectional ModelStreamInfer stream: write one step, read its answer, repeat."""
    call = stub.ModelStreamInfer()
    # two prebuilt requests (the first with sequence_start); only the x bytes change per step
    request = grpc_request(service_pb2, sequence_id, X_BYTES[0], start=True)
    step = offset
    latencies, ends, clock = run.latencies, run.ends, time.perf_counter
    while run.active:
        request.raw_input_contents[0] = X_BYTES[step % len(X_BYTES)]
        started = clock()
        await call.write(request)
        response = await call.read()
        finished = clock()
        if response.error_message:
            raise RuntimeError(f"gRPC error for sequence {sequence_id}: {response.error_message}")
        latencies.append(finished - started)
        ends.append(finished)
        if step == offset:
            request = grpc_request(service_pb2, sequence_id, X_BYTES[0])
        step += 1
    await call.write(grpc_request(service_pb2, sequence_id, X_BYTES[0], end=True))
    response = await call.read()
    if response.error_message:
        raise RuntimeError(f"gRPC error ending sequence {sequence_id}: {response.error_message}")
    await call.done_writing()


async def fetch_metrics(port: int) -> dict[str, float]:
    """The batch, queue and compute sums and counts of model 'sine' from our /metrics text."""
    connection = await HttpConnection.open(port)
    try:
        status, body = await connection.request(request_bytes("GET", METRICS_PATH))
    finally:
        connection.close()
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    label = re.escape(f'{{model="{MODEL}"}}')
    wanted = re.compile(r"^(rnn_(?:batch_size|queue_seconds|compute_seconds)_(?:sum|count))" + label + r" (\S+)$")
    values = {}
    for line in body.decode().splitlines():
        match = wanted.match(line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


@dataclass
class Cell:
    """One (transport, concurrency, delay) measurement, summed over its rounds."""

    transport: str
    concurrency: int
    delay_us: int | None
    seconds: float = 0.0
    steps: int = 0
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    idle_servers_cpu_s: float = 0.0
    machine_busy_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        latency = np.asarray(self.latencies) * 1e3
        p50, p90, p99 = np.percentile(latency, [50, 90, 99]) if latency.size else (np.nan,) * 3
        batches = self.metrics.get("rnn_batch_size_count", 0.0)
        summary = {
            "transport": self.transport,
            "concurrency": self.concurrency,
            "delay_us": self.delay_us,
            "seconds": round(self.seconds, 3),
            "steps": self.steps,
            "steps_per_s": self.steps / self.seconds if self.seconds else 0.0,
            "p50_ms": float(p50),
            "p90_ms": float(p90),
            "p99_ms": float(p99),
            "max_ms": float(latency.max()) if latency.size else float("nan"),
            "client_cores": self.client_cpu_s / self.seconds if self.seconds else 0.0,
            "server_cores": self.server_cpu_s / self.seconds if self.seconds else 0.0,
            "idle_servers_cores": self.idle_servers_cpu_s / self.seconds if self.seconds else 0.0,
            "machine_busy_cores": self.machine_busy_s / self.seconds if self.seconds else 0.0,
            "other_processes_cores": (
                (self.machine_busy_s - self.client_cpu_s - self.server_cpu_s - self.idle_servers_cpu_s) / self.seconds
                if self.seconds
                else 0.0
            ),
            "client_cpu_us_per_step": 1e6 * self.client_cpu_s / self.steps if self.steps else None,
            "server_cpu_us_per_step": 1e6 * self.server_cpu_s / self.steps if self.steps else None,
            "mean_batch_size": None,
        }
        if batches:
            m = self.metrics
            summary["mean_batch_size"] = m["rnn_batch_size_sum"] / batches
            summary["batches_per_s"] = batches / self.seconds
            summary["compute_us_per_batch"] = 1e6 * m.get("rnn_compute_seconds_sum", 0.0) / batches
            summary["compute_share_of_server_cpu"] = m.get("rnn_compute_seconds_sum", 0.0) / self.server_cpu_s
            waits = m.get("rnn_queue_seconds_count", 0.0)
            summary["mean_queue_wait_us"] = 1e6 * m.get("rnn_queue_seconds_sum", 0.0) / waits if waits else None
        return summary


async def measure(
    cell: Cell,
    server: ServerProcess,
    others: list[ServerProcess],
    seconds: float,
    warmup: float,
    first_id: int,
    grpc_channels: int = 1,
) -> None:
    """Runs ``cell.concurrency`` sequences against ``server``: ``warmup`` seconds, then ``seconds``
    measured (the steps that complete in that window), then each sequence ends with sequence_end."""
    run = Run()
    offsets = [(index * 7) % len(INPUTS) for index in range(cell.concurrency)]
    channels = []
    if cell.transport in GRPC_TRANSPORTS:
        service_pb2, service_pb2_grpc = grpc_modules()
        channels = open_grpc_channels(server.grpc_port, cell.concurrency, grpc_channels)
        count = len(channels)
        stubs = [service_pb2_grpc.GRPCInferenceServiceStub(channel) for channel in channels]
        workers = [
            grpc_sequence(run, stubs[index % count], service_pb2, first_id + index, offset)
            for index, offset in enumerate(offsets)
        ]
    else:
        workers = [
            http_sequence(run, server.http_port, first_id + index, offset) for index, offset in enumerate(offsets)
        ]
    tasks = [asyncio.ensure_future(worker) for worker in workers]
    try:
        await asyncio.sleep(warmup)
        ours = server.delay_us is not None
        before = await fetch_metrics(server.http_port) if ours else {}
        client0, server0 = cpu_seconds(), cpu_seconds(server.pid)
        idle0 = sum(cpu_seconds(other.pid) for other in others)
        busy0 = machine_busy_seconds()
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        finished = time.perf_counter()
        client1, server1 = cpu_seconds(), cpu_seconds(server.pid)
        idle1 = sum(cpu_seconds(other.pid) for other in others)
        busy1 = machine_busy_seconds()
        after = await fetch_metrics(server.http_port) if ours else {}
        run.active = False
        failed = [task for task in tasks if task.done() and task.exception() is not None]
        if failed:
            raise failed[0].exception()
        await asyncio.gather(*tasks)
    finally:
        run.active = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()
    ends = np.asarray(run.ends)
    inside = (ends >= started) & (ends < finished)
    cell.seconds += finished - started
    cell.steps += int(inside.sum())
    cell.latencies.extend(np.asarray(run.latencies)[inside].tolist())
    cell.client_cpu_s += client1 - client0
    cell.server_cpu_s += server1 - server0
    cell.idle_servers_cpu_s += idle1 - idle0
    cell.machine_busy_s += busy1 - busy0
    for name, value in after.items():
        cell.metrics[name] = cell.metrics.get(name, 0.0) + value - before.get(name, 0.0)


# ---- correctness spot check ----------------------------------------------------------------------


async def http_outputs(port: int, sequence_id: int, xs: list[str]) -> np.ndarray:
    connection = await HttpConnection.open(port)
    ys = []
    try:
        for index, x in enumerate(xs):
            flags = START if index == 0 else END if index == len(xs) - 1 else ""
            status, body = await connection.request(infer_bytes(x, sequence_id, flags))
            if status != 200:
                raise RuntimeError(f"spot check: HTTP {status}: {body[:300]!r}")
            outputs = {output["name"]: output for output in json.loads(body)["outputs"]}
            ys.append(np.asarray(outputs[W.output]["data"], np.float64).astype(np.float32).reshape(-1))
    finally:
        connection.close()
    return np.asarray(ys, np.float32)


async def grpc_outputs(port: int, sequence_id: int, xs: list[bytes]) -> np.ndarray:
    import grpc

    service_pb2, service_pb2_grpc = grpc_modules()
    ys = []
    async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
        call = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer()
        for index, x in enumerate(xs):
            await call.write(grpc_request(service_pb2, sequence_id, x, start=index == 0, end=index == len(xs) - 1))
            response = await call.read()
            if response.error_message:
                raise RuntimeError(f"spot check: gRPC error: {response.error_message}")
            answer = response.infer_response
            names = [output.name for output in answer.outputs]
            at = names.index(W.output)
            if answer.raw_output_contents:
                y = np.frombuffer(answer.raw_output_contents[at], "<f4")
            else:
                y = np.asarray(answer.outputs[at].contents.fp32_contents, np.float32)
            ys.append(y.reshape(-1))
        await call.done_writing()
    return np.asarray(ys, np.float32)


async def spot_check(baseline: ServerProcess, ours: ServerProcess) -> dict[str, Any]:
    """One sequence of SPOT_STEPS steps through each transport against a local runtime.Stream (the
    spot-checked output's every value)."""
    sys.path.insert(0, str(ROOT))
    import runtime

    xs = W.random_values(SPOT_STEPS)
    stream = runtime.Stream(runtime.load(FOLDER))
    expected = np.asarray([np.asarray(stream.push(x), np.float32).reshape(-1) for x in xs], np.float32)
    texts, raw = [W.text(x) for x in xs], [W.raw(x) for x in xs]
    served = {
        BASELINE: await http_outputs(baseline.http_port, 1 << 40, texts),
        OURS_HTTP: await http_outputs(ours.http_port, 1 << 40, texts),
        OURS_GRPC: await grpc_outputs(ours.grpc_port, (1 << 40) + 1, raw),
    }
    report = {}
    for transport, ys in served.items():
        report[transport] = {
            "bit_identical": bool(np.array_equal(ys.view(np.uint32), expected.view(np.uint32))),
            "max_abs_error": float(np.max(np.abs(ys.astype(np.float64) - expected))),
        }
    return {"steps": SPOT_STEPS, "transports": report}


# ---- the whole run ---------------------------------------------------------------------------------


def plan_cells(concurrencies: list[int], delays: list[int], floor: bool) -> list[tuple[int, list[Any]]]:
    """Each concurrency's (transport, delay) cells: the baseline, ours at the first delay (at every
    delay at the highest concurrency), and the floor at the highest."""
    top = max(concurrencies)
    plan = []
    for concurrency in concurrencies:
        kinds: list[tuple[str, int | None]] = [(BASELINE, None)]
        for delay in delays if concurrency == top else delays[:1]:
            kinds += [(OURS_HTTP, delay), (OURS_GRPC, delay)]
        if floor and concurrency == top:
            kinds.append((FLOOR, None))
        plan.append((concurrency, kinds))
    return plan


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"machine": machine(), "versions": versions()}
    concurrencies, delays = args.concurrency, args.delay
    top = max(concurrencies)
    floor = not args.no_floor
    servers: list[ServerProcess] = []
    try:
        port = free_port()
        log = out / "server-baseline.log"
        model = ["--model", args.model]
        servers.append(launch("baseline", ["--serve-baseline", str(port), *model], port, log, SCRIPT))
        for delay in delays:
            http_port, grpc_port = free_port(), free_port()
            arguments = ["--serve-ours", str(http_port), str(grpc_port), "--delay", str(delay), *model]
            arguments += ["--ours-uvloop"] if args.ours_uvloop else []
            log = out / f"server-ours-{delay}us.log"
            servers.append(
                launch(f"ours-{delay}us", arguments, http_port, log, SCRIPT, grpc_port=grpc_port, delay_us=delay)
            )
        if floor:
            grpc_port = free_port()
            log = out / f"server-{FLOOR}.log"
            servers.append(
                launch(FLOOR, ["--serve-floor", str(grpc_port), *model], 0, log, SCRIPT, grpc_port=grpc_port)
            )
        for server in servers:
            await wait_ready(server, out / f"server-{server.name}.log")
        baseline = servers[0]
        ours = {server.delay_us: server for server in servers[1:] if server.delay_us is not None}
        floor_server = servers[-1] if floor else None
        print(f"servers: {', '.join(f'{s.name} (pid {s.pid})' for s in servers)}", file=sys.stderr)
        info["spot_check"] = await spot_check(baseline, ours[delays[0]])
        wrong = [t for t in (OURS_HTTP, OURS_GRPC) if not info["spot_check"]["transports"][t]["bit_identical"]]
        if wrong:
            raise SystemExit(f"our server's outputs differ from runtime.Stream over {', '.join(wrong)}: {info}")

        cells: dict[tuple[str, int, int | None], Cell] = {}
        next_id = 1
        for concurrency, kinds in plan_cells(concurrencies, delays, floor):
            for round_index in range(args.rounds):
                shift = round_index % len(kinds)
                for transport, delay in kinds[shift:] + kinds[:shift]:  # alternate the order per round
                    key = (transport, concurrency, delay)
                    cell = cells.setdefault(key, Cell(transport, concurrency, delay))
                    server = {BASELINE: baseline, FLOOR: floor_server}.get(transport) or ours[delay]
                    others = [s for s in servers if s is not server]
                    await measure(
                        cell, server, others, args.seconds / args.rounds, args.warmup, next_id, args.grpc_channels
                    )
                    next_id += concurrency
                    summary = cell.summary()
                    print(
                        f"  {transport:<14} c={concurrency:<4} delay={'-' if delay is None else delay:<5} "
                        f"round {round_index + 1}: {summary['steps_per_s']:9.0f} steps/s so far",
                        file=sys.stderr,
                    )
    finally:
        stop(servers)
    info["cells"] = [cell.summary() for cell in cells.values()]
    info["settings"] = {
        "model": f"{MODEL} ({FOLDER.relative_to(ROOT)}; input {W.input} {W.datatype} {list(W.shape)})",
        "seconds": args.seconds,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "concurrency": concurrencies,
        "delay_us": delays,
        "ours_uvloop": args.ours_uvloop,
        "grpc_channels": args.grpc_channels,
        "grpc_floor": floor,
        "client": "asyncio on uvloop; HTTP: raw HTTP/1.1 keep-alive, one connection per sequence; "
        "gRPC: grpc.aio, service_pb2_grpc stub, one ModelStreamInfer stream per sequence on one channel",
    }
    info.update(ratios(info["cells"], delays, top))
    info["grpc_floor"] = floor_summary(info) if floor else None
    return info


def floor_summary(info: dict[str, Any]) -> dict[str, Any]:
    """The gRPC stack's floor against ours (best delay) and what the gRPC target leaves per step."""
    top = info["targets"][0]["concurrency"]
    at_top = {(c["transport"], c["delay_us"]): c for c in info["cells"] if c["concurrency"] == top}
    floor, ours = at_top[(FLOOR, None)], at_top[(OURS_GRPC, info["best_delay_us"])]
    base = at_top[(BASELINE, None)]["server_cpu_us_per_step"]
    return {
        "concurrency": top,
        "server_cpu_us_per_step": floor["server_cpu_us_per_step"],
        "ours_server_cpu_us_per_step": ours["server_cpu_us_per_step"],
        "ours_delay_us": info["best_delay_us"],
        # at the target throughput ratio, server CPU per step (the bottleneck on a shared machine) must be
        # no more than the baseline's / ratio
        "target_server_cpu_us_per_step": base / TARGET_RATIO[OURS_GRPC] if base else None,
    }


def ratios(cells: list[dict[str, Any]], delays: list[int], top: int) -> dict[str, Any]:
    """Ours against the baseline at the same concurrency; the best delay at the top concurrency
    (highest gRPC throughput among those whose p99 is no worse than the baseline's, else highest)."""
    baseline = {c["concurrency"]: c for c in cells if c["transport"] == BASELINE}
    for cell in cells:
        base = baseline.get(cell["concurrency"])
        if cell["transport"] not in (BASELINE, FLOOR) and base and base["steps_per_s"]:
            cell["throughput_ratio"] = cell["steps_per_s"] / base["steps_per_s"]
            cell["p99_ratio"] = cell["p99_ms"] / base["p99_ms"]
            if cell["server_cpu_us_per_step"] and base["server_cpu_us_per_step"]:
                # server CPU per step, baseline / ours: how much more work per core (less disturbed by other load)
                cell["server_cpu_ratio"] = base["server_cpu_us_per_step"] / cell["server_cpu_us_per_step"]
    at_top = {(c["transport"], c["delay_us"]): c for c in cells if c["concurrency"] == top}

    def score(delay: int) -> tuple[bool, float]:
        grpc = at_top[(OURS_GRPC, delay)]
        return grpc.get("p99_ratio", 9.0) <= 1.0, grpc["steps_per_s"]

    best = max(delays, key=score)
    targets = []
    for transport in (OURS_GRPC, OURS_HTTP):
        cell = at_top[(transport, best)]
        batch = cell.get("mean_batch_size") or 0.0
        targets.append(
            {
                "transport": transport,
                "concurrency": top,
                "delay_us": best,
                "throughput_ratio": cell.get("throughput_ratio"),
                "throughput_target": TARGET_RATIO[transport],
                "p99_ratio": cell.get("p99_ratio"),
                "mean_batch_size": batch,
                "met": bool(
                    (cell.get("throughput_ratio") or 0.0) >= TARGET_RATIO[transport]
                    and (cell.get("p99_ratio") or 9.0) <= 1.0
                    and batch > 1.0
                ),
            }
        )
    return {"best_delay_us": best, "targets": targets}


# ---- output ---------------------------------------------------------------------------------------


def table(info: dict[str, Any]) -> str:
    m = info["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores shared by the load generator and the server "
        f"(load average before: {', '.join(f'{v:.2f}' for v in m['load_average_before'])})",
        f"model: {info['settings'].get('model', MODEL)}",
        f"{info['settings']['seconds']:g} s measured per cell in {info['settings']['rounds']} alternating rounds, "
        f"{info['settings']['warmup']:g} s warm-up per round; ratios: ours / baseline at the same concurrency; "
        "client/server/other: cores busy (CPU s per s) in the load generator, the server, everything else; "
        "x cpu: the baseline's server CPU per step / ours",
        "",
        f"{'transport':<14} {'conc':>5} {'delay':>6} {'steps/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'batch':>6} "
        f"{'x thru':>7} {'x p99':>6} {'client':>6} {'server':>6} {'other':>6} {'srv us/step':>11} {'x cpu':>6}",
    ]
    for cell in info["cells"]:
        batch = f"{cell['mean_batch_size']:.1f}" if cell.get("mean_batch_size") else "-"
        ratio = f"{cell['throughput_ratio']:.2f}" if "throughput_ratio" in cell else "-"
        p99 = f"{cell['p99_ratio']:.2f}" if "p99_ratio" in cell else "-"
        cpu = f"{cell['server_cpu_ratio']:.2f}" if "server_cpu_ratio" in cell else "-"
        other = max(0.0, cell["other_processes_cores"])  # can dip below 0: tick-sampled accounting
        delay = "-" if cell["delay_us"] is None else str(cell["delay_us"])
        lines.append(
            f"{cell['transport']:<14} {cell['concurrency']:>5} {delay:>6} {cell['steps_per_s']:>9.0f} "
            f"{cell['p50_ms']:>8.2f} {cell['p99_ms']:>8.2f} {batch:>6} {ratio:>7} {p99:>6} "
            f"{cell['client_cores']:>6.2f} {cell['server_cores']:>6.2f} {other:>6.2f} "
            f"{cell['server_cpu_us_per_step']:>11.1f} {cpu:>6}"
        )
    lines.append("")
    spot = info["spot_check"]["transports"]
    lines.append(
        f"spot check ({info['spot_check']['steps']} steps of one sequence against runtime.Stream): "
        + ", ".join(
            f"{t} " + ("bit-identical" if r["bit_identical"] else f"max abs error {r['max_abs_error']:.2g}")
            for t, r in spot.items()
        )
    )
    busiest = max(cell["other_processes_cores"] for cell in info["cells"])
    if busiest > OTHER_LOAD_WARNING:
        lines.append(
            f"WARNING: other processes kept up to {busiest:.2f} cores busy during a cell; its throughput is disturbed "
            "(compare x cpu, or run again on a quiet machine)"
        )
    floor = info.get("grpc_floor")
    if floor:
        target = floor["target_server_cpu_us_per_step"]
        lines.append(
            f"gRPC stack floor ({FLOOR}: bare grpc.aio, same options and loop, fixed response, no model; not ours): "
            f"{floor['server_cpu_us_per_step']:.1f} us of server CPU per step at {floor['concurrency']} sequences "
            f"(ours-grpc, delay {floor['ours_delay_us']}: {floor['ours_server_cpu_us_per_step']:.1f}); "
            f"{TARGET_RATIO[OURS_GRPC]:g}x the baseline needs <= " + (f"{target:.1f}" if target else "?") + " us/step"
        )
    lines.append(f"best max_queue_delay_us at {info['targets'][0]['concurrency']} sequences: {info['best_delay_us']}")
    for target in info["targets"]:
        lines.append(
            f"target {target['transport']} at {target['concurrency']}: throughput {target['throughput_ratio']:.2f}x "
            f"(>= {target['throughput_target']:g}x), p99 {target['p99_ratio']:.2f}x (<= 1), mean batch "
            f"{target['mean_batch_size']:.1f} (> 1): {'met' if target['met'] else 'MISSED'}"
        )
    return "\n".join(lines)


def chart(info: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = info["best_delay_us"]
    primary = info["settings"]["delay_us"][0]
    concurrencies = info["settings"]["concurrency"]
    top = max(concurrencies)
    series = {}
    for transport in TRANSPORTS:
        values = []
        for concurrency in concurrencies:
            delay = None if transport == BASELINE else best if concurrency == top else primary
            match = [
                c
                for c in info["cells"]
                if c["transport"] == transport and c["concurrency"] == concurrency and c["delay_us"] == delay
            ]
            values.append(match[0]["steps_per_s"] if match else 0.0)
        series[transport] = values
    figure, axes = plt.subplots(figsize=(7, 4))
    width = 0.27
    positions = np.arange(len(concurrencies))
    for index, (transport, values) in enumerate(series.items()):
        bars = axes.bar(positions + (index - 1) * width, values, width, label=transport)
        axes.bar_label(bars, fmt="%.0f", fontsize=7)
    axes.set_xticks(positions, [str(c) for c in concurrencies])
    axes.set_xlabel("concurrent sequences (closed loop, one step per request)")
    axes.set_ylabel("sequence steps per second")
    axes.set_title(
        f"rnn serve vs FastAPI baseline ({info['machine']['cores']} cores shared with the client; "
        f"delay {primary} us, {best} us at {top})",
        fontsize=9,
    )
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per round of a cell (default 1)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per cell (default 2)")
    parser.add_argument(
        "--concurrency", type=integers, default=[1, 16, 256], help="concurrent sequences (default 1,16,256)"
    )
    parser.add_argument(
        "--delay",
        type=integers,
        default=[0, 200, 1000],
        help="our max_queue_delay_us values; the first at every concurrency, all at the highest (default 0,200,1000)",
    )
    parser.add_argument(
        "--ours-uvloop", action="store_true", help="run our server's event loop on uvloop (default: as Server.run does)"
    )
    parser.add_argument(
        "--grpc-channels",
        type=int,
        default=1,
        help="gRPC channels (connections) the sequences share at least (default 1; one more per 64 sequences)",
    )
    parser.add_argument(
        "--no-floor", action="store_true", help=f"skip the {FLOOR} reference cell (bare grpc.aio, no model)"
    )
    parser.add_argument(
        "--model",
        choices=sorted(WORKLOADS),
        default="sine",
        help="sine: the seed's Elman (artifacts/sine-elman); char: the worked character GRU, token ids in "
        "(exported with seed-0 weights by token_streaming.export_char_gru when missing)",
    )
    parser.add_argument("--out", default="out/bench-serve", help="folder for serve.json and serve.png")
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-ours", type=int, nargs=2, metavar=("HTTP_PORT", "GRPC_PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    use(args.model)
    if args.serve_floor is not None:
        from serve_floor import serve_floor

        serve_floor(args.serve_floor, MODEL, W.outputs)
        return
    if args.serve_baseline is not None:
        serve_baseline(args.serve_baseline)
        return
    if args.serve_ours is not None:
        serve_ours(*args.serve_ours, args.delay[0], args.ours_uvloop)
        return
    if 0 in args.concurrency:
        parser.error("--concurrency values must be >= 1")
    if args.seconds <= 0 or args.warmup < 0 or args.rounds < 1 or args.grpc_channels < 1:
        parser.error("--seconds must be > 0, --warmup >= 0, --rounds and --grpc-channels >= 1")
    if not (FOLDER / "manifest.json").exists() and args.model == "char":
        from token_streaming import export_char_gru

        export_char_gru(FOLDER.parent)
    import uvloop

    info = uvloop.run(benchmark(args))
    out = Path(args.out)
    (out / "serve.json").write_text(json.dumps(info, indent=1, default=float) + "\n")
    chart(info, out / "serve.png")
    text = table(info)
    (out / "serve.txt").write_text(text + "\n")
    print(text)
    print(f"\nwrote {out / 'serve.json'}, serve.txt and serve.png")


if __name__ == "__main__":
    main()

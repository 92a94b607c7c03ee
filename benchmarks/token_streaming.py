"""Measures sampled token streaming of `rnn serve` against a hand-written FastAPI server: N
concurrent generations of the worked character GRU (`examples/char_generator`, exported at its real
size with fixed-seed weights; training does not change the speed), each a prompt and then
``--tokens`` sampled characters (temperature 0.8, a seed per generation), over HTTP server-sent
events (`POST /v2/models/NAME-generate/generate_stream`, Triton's generate extension) and over
gRPC (`ModelStreamInfer`, several responses per request: Triton's decoupled mode). The baseline
(`benchmarks/serve_baseline.py`, `create_token_app`) is what users write today: a FastAPI
`StreamingResponse` over a generator that runs `session.run` of the step model and samples in
numpy per token, on the same uvicorn; it takes the same request and sends the same events.

Per cell (transport x concurrency): tokens/s over the cell's wall time, time to first token (the
request written -> the first token's event read) p50/p99, the gap between consecutive tokens of a
generation p50/p99 (tokens that arrive in one event count a gap of 0 after the first), and the CPU
of the client, the server and every other process. Cells alternate ours/baseline over
``--rounds`` rounds; each cell reports its best round (highest tokens/s), with the range. A spot
check first compares ours (both transports) with `runtime.Model.generate` for the same seed.

The servers run in subprocesses of this script; the load comes from this process (asyncio on
uvloop: raw HTTP/1.1 keep-alive connections, one per concurrent generation; grpc.aio with the
service's generated stubs, the messages tritonclient sends, one stream per concurrent generation).

    python benchmarks/token_streaming.py [--concurrency 1,16,64] [--tokens 200] [--rounds 3]
    python benchmarks/token_streaming.py --quick      # 2 generations x 5 tokens, one round: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
sys.path.insert(0, str(BENCHMARKS))
sys.path.insert(0, str(ROOT))

from serve_load import (  # noqa: E402
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
    stop,
    versions,
    wait_ready,
)

MODEL = "char"
TOKEN_INPUT, TOKENS_OUTPUT = "char", "tokens"  # the model's token input; what NAME-generate answers
GENERATE = f"{MODEL}-generate"
STREAM_PATH = f"/v2/models/{GENERATE}/generate_stream"
PROMPT = "Alice was "
TEMPERATURE = 0.8
BASELINE, OURS_SSE, OURS_GRPC = "baseline-sse", "ours-sse", "ours-grpc"
TRANSPORTS = (BASELINE, OURS_SSE, OURS_GRPC)
TARGET_THROUGHPUT = 5.0  # ours / baseline tokens/s at the highest concurrency
TARGET_TTFT_MS = {1: 10.0, 64: 50.0}  # time to first token p50 at 1 and at 64 concurrent generations
OTHER_LOAD_WARNING = 0.2  # cores busy outside client and servers that make the table say so
CELL_TIMEOUT_S = 300.0  # one round of one cell; a server that stalls fails the run instead of hanging it
SPOT_SEEDS = (11, 12)


# ---- the model and the servers ------------------------------------------------------------------


def export_char_gru(out: Path) -> tuple[Path, list[str]]:
    """The worked example's CharGRU at its real size (embedding 16, 2 x GRU 64, the example text's
    vocabulary), weights from torch.manual_seed(0), untrained; the vocabulary written beside it for
    the baseline (and into the manifest where export_module takes one)."""
    sys.path.insert(0, str(ROOT / "examples" / "char_generator"))
    import char_generator as example
    import torch

    from export import export_module

    torch.set_num_threads(1)
    torch.manual_seed(0)
    module = example.make()
    extra = {}
    if "vocabulary" in inspect.signature(export_module).parameters:
        extra["vocabulary"] = list(example.ALPHABET)
    folder = export_module(module, out / "char-gru", **example.SIGNATURE, **extra)
    (out / "vocabulary.json").write_text(json.dumps(example.ALPHABET))
    return folder, list(example.ALPHABET)


def prompt_ids(vocabulary: list[str]) -> np.ndarray:
    return np.asarray([vocabulary.index(character) for character in PROMPT], np.int64)


def serve_baseline(port: int, folder: str, threaded: bool) -> None:
    from serve_baseline import serve

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(2048)
    vocabulary = json.loads((Path(folder).parent / "vocabulary.json").read_text())
    serve(folder, sock, vocabulary=vocabulary, threaded=threaded)


def serve_ours(
    http_port: int, grpc_port: int, folder: str, delay_us: int, profile: str | None, profile_loop: bool = False
) -> None:
    """`rnn serve`'s Server in this process; with ``profile`` its threads sampled (`StackSampler`,
    each thread's CPU time too) and, with ``profile_loop``, its event loop's thread under cProfile
    (which slows that thread's Python code several times over), the report written to that file
    when SIGTERM stops it."""
    from toolkit.serving import Server, Settings

    server = Server(
        [(MODEL, folder)],
        host=HOST,
        http_port=http_port,
        grpc_port=grpc_port,
        settings=Settings(max_queue_delay_us=delay_us),
    )
    if not profile:
        server.run()
        return
    import cProfile
    import io
    import pstats

    from thread_profile import StackSampler

    sampler, loop_profile = StackSampler().start(), cProfile.Profile()
    if profile_loop:
        loop_profile.enable()  # the event loop's thread: the fronts (uvloop's and grpc's C code call back into Python)
    try:
        server.run()
    finally:
        report = sampler.stop().report()
        if profile_loop:
            loop_profile.disable()
            text = io.StringIO()
            pstats.Stats(loop_profile, stream=text).sort_stats("tottime").print_stats(40)
            report += "\ncProfile of the event loop's thread:\n" + text.getvalue()
        Path(profile).write_text(report)


# ---- the request and the events -----------------------------------------------------------------


def generate_body(seed: int, tokens: int, strategy: str = "temperature") -> bytes:
    """The generate extension's request (both servers take it), the prompt as text."""
    parameters: dict[str, Any] = {"strategy": strategy, "seed": seed, "max_tokens": tokens}
    if strategy != "greedy":
        parameters["temperature"] = TEMPERATURE
    return json.dumps({"text_input": PROMPT, "parameters": parameters}).encode()


def stream_request(body: bytes) -> bytes:
    return (
        f"POST {STREAM_PATH} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def event_tokens(event: dict[str, Any]) -> list[int]:
    """The token ids one event carries (both servers send them as ``tokens``, the text as
    ``text_output``)."""
    if "error" in event:
        raise RuntimeError(f"the server sent an error event: {event['error']}")
    return event.get("tokens", [])


@dataclass
class Generation:
    """One generation as the client saw it: when its request went out, when each event came with
    how many tokens, and the tokens."""

    started: float = 0.0
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)

    def add(self, tokens: list[int], now: float) -> None:
        if tokens:
            self.arrivals.append((now, len(tokens)))
            self.ids.extend(tokens)

    @property
    def tokens(self) -> int:
        return sum(count for _, count in self.arrivals)

    def ttft(self) -> float:
        return self.arrivals[0][0] - self.started

    def gaps(self) -> list[float]:
        """Seconds between consecutive tokens: an event's first token after the previous event, 0 for
        the others in the same event."""
        found: list[float] = []
        previous = None
        for now, count in self.arrivals:
            if previous is not None:
                found.append(now - previous)
            found.extend([0.0] * (count - 1))
            previous = now
        return found


class SseConnection(HttpConnection):
    """One keep-alive HTTP/1.1 connection, one streamed request at a time: a chunked (or
    Content-Length) response whose body is server-sent events, each ``data: {json}`` line handed to
    the current `Generation` as it arrives (opening, closing and a lost connection as HttpConnection)."""

    def __init__(self) -> None:
        super().__init__()
        self.events = bytearray()
        self.generation: Generation | None = None
        self.chunked = False
        self.length = -1  # Content-Length left, or -1 while the head is being read

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buffer += data
        try:
            self._parse(now)
        except Exception as error:  # a malformed answer fails the generation, not the event loop
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(error)

    def _parse(self, now: float) -> None:
        buffer = self.buffer
        if self.length < 0 and not self.chunked:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            del buffer[: end + 4]
            self.status = int(head[9:12])
            self.chunked = b"transfer-encoding: chunked" in head
            at = head.find(b"\r\ncontent-length:")
            if not self.chunked:
                if at < 0:
                    raise ConnectionError("a response neither chunked nor with a Content-Length")
                self.length = int(head[at + 17 :].split(b"\r\n", 1)[0])
        if self.chunked:
            while True:
                line_end = buffer.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(bytes(buffer[:line_end]).split(b";", 1)[0], 16)
                if len(buffer) < line_end + 2 + size + 2:
                    return
                chunk = bytes(buffer[line_end + 2 : line_end + 2 + size])
                del buffer[: line_end + 2 + size + 2]
                if size == 0:
                    self._finish(now)
                    return
                self._events(chunk, now)
        elif len(buffer) >= self.length:
            body = bytes(buffer[: self.length])
            del buffer[: self.length]
            self._events(body, now)
            self._finish(now)

    def _events(self, data: bytes, now: float) -> None:
        if self.status != 200:
            self.events += data
            return
        events = self.events
        events += data.replace(b"\r\n", b"\n")
        while True:
            end = events.find(b"\n\n")
            if end < 0:
                return
            block = bytes(events[:end])
            del events[: end + 2]
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    self.generation.add(event_tokens(json.loads(line[5:])), now)

    def _finish(self, now: float) -> None:
        status, body = self.status, bytes(self.events)
        self.events.clear()
        self.status, self.chunked, self.length = 0, False, -1
        waiter, self.waiter = self.waiter, None
        if status != 200:
            waiter.set_exception(RuntimeError(f"HTTP {status}: {body[:300]!r}"))
        else:
            waiter.set_result(now)

    async def generate(self, seed: int, tokens: int, generation: Generation, strategy: str = "temperature") -> None:
        await self.send(generate_body(seed, tokens, strategy=strategy), generation)

    async def send(self, body: bytes, generation: Generation) -> None:
        self.generation = generation
        self.waiter = asyncio.get_running_loop().create_future()
        generation.started = time.perf_counter()
        self.transport.write(stream_request(body))
        await self.waiter


# ---- gRPC: one ModelStreamInfer stream per concurrent generation --------------------------------


def grpc_generate_request(
    service_pb2: Any, prompt: np.ndarray, seed: int, tokens: int, strategy: str = "temperature"
) -> Any:
    """A NAME-generate request as tritonclient's async_stream_infer sends it: the prompt's ids as the
    token input (INT64 [1, T]), the sampling settings as request parameters."""
    request = service_pb2.ModelInferRequest(model_name=GENERATE)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = TOKEN_INPUT, "INT64"
    tensor.shape.extend([1, len(prompt)])
    request.raw_input_contents.append(np.asarray(prompt, "<i8").tobytes())
    request.parameters["strategy"].string_param = strategy
    if strategy != "greedy":
        request.parameters["temperature"].double_param = TEMPERATURE
    request.parameters["seed"].int64_param = seed
    request.parameters["max_tokens"].int64_param = tokens
    return request


def response_tokens(response: Any) -> tuple[list[int], bool]:
    """The token ids of one decoupled response and whether it is the final one."""
    if response.error_message:
        raise RuntimeError(f"gRPC error: {response.error_message}")
    answer = response.infer_response
    final = "triton_final_response" in answer.parameters and answer.parameters["triton_final_response"].bool_param
    names = [output.name for output in answer.outputs]
    if TOKENS_OUTPUT not in names:
        return [], final
    at = names.index(TOKENS_OUTPUT)
    if answer.raw_output_contents:
        return np.frombuffer(answer.raw_output_contents[at], "<i8").tolist(), final
    return list(answer.outputs[at].contents.int64_contents), final


class GrpcStream:
    """One bidirectional ModelStreamInfer stream on a shared channel, one generation at a time."""

    def __init__(self, stub: Any, service_pb2: Any, prompt: np.ndarray) -> None:
        self.call = stub.ModelStreamInfer()
        self.service_pb2, self.prompt = service_pb2, prompt

    async def generate(self, seed: int, tokens: int, generation: Generation, strategy: str = "temperature") -> None:
        request = grpc_generate_request(self.service_pb2, self.prompt, seed, tokens, strategy)
        generation.started = time.perf_counter()
        await self.call.write(request)
        while True:
            response = await self.call.read()
            now = time.perf_counter()
            if response is None:  # grpc.aio's EOF
                raise ConnectionError("the server ended the stream before the final response")
            ids, final = response_tokens(response)
            generation.add(ids, now)
            if final:
                return

    async def close(self) -> None:
        await self.call.done_writing()


# ---- one cell: N concurrent generations, each worker one after another ---------------------------


@dataclass
class Round:
    """One round of one cell: its generations and what the processes spent meanwhile."""

    seconds: float
    generations: list[Generation]
    client_cpu_s: float
    server_cpu_s: float
    others_cpu_s: float
    machine_busy_s: float

    @property
    def tokens(self) -> int:
        return sum(generation.tokens for generation in self.generations)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


async def open_workers(
    transport: str, server: ServerProcess, count: int, prompt: np.ndarray
) -> tuple[list[Any], list[Any]]:
    """``count`` connections (HTTP) or streams (gRPC: on one connection, one more per 64 streams),
    and the channels to close."""
    if transport != OURS_GRPC:
        return [await SseConnection.open(server.http_port) for _ in range(count)], []
    service_pb2, service_pb2_grpc = grpc_modules()
    channels = open_grpc_channels(server.grpc_port, count)
    stubs = [service_pb2_grpc.GRPCInferenceServiceStub(channel) for channel in channels]
    return [GrpcStream(stubs[index % len(stubs)], service_pb2, prompt) for index in range(count)], channels


async def close_workers(workers: list[Any], channels: list[Any]) -> None:
    for worker in workers:
        if isinstance(worker, GrpcStream):
            await worker.close()
        else:
            worker.close()
    for channel in channels:
        await channel.close()


async def run_generations(workers: list[Any], total: int, tokens: int, first_seed: int) -> list[Generation]:
    """``total`` generations of ``tokens`` tokens over the workers, each worker one at a time."""
    generations = [Generation() for _ in range(total)]

    async def worker(index: int, client: Any) -> None:
        for at in range(index, total, len(workers)):
            await client.generate(first_seed + at, tokens, generations[at])

    await asyncio.wait_for(asyncio.gather(*(worker(i, c) for i, c in enumerate(workers))), CELL_TIMEOUT_S)
    short = [g.tokens for g in generations if g.tokens != tokens]
    if short:
        raise RuntimeError(f"{len(short)} generations ended with other than {tokens} tokens: {short[:5]}")
    return generations


async def measure(
    transport: str, server: ServerProcess, others: list[ServerProcess], concurrency: int, args: argparse.Namespace
) -> Round:
    """A warm-up generation per worker (a few tokens), then ``concurrency`` x ``args.waves``
    generations (at least ``args.min_generations``) timed as one."""
    workers, channels = await open_workers(transport, server, concurrency, args.prompt_ids)
    try:
        if args.warmup_tokens:
            await run_generations(workers, concurrency, args.warmup_tokens, 1 << 20)
        total = max(concurrency * args.waves, args.min_generations)
        client0, server0 = cpu_seconds(), cpu_seconds(server.pid)
        others0, busy0 = sum(cpu_seconds(o.pid) for o in others), machine_busy_seconds()
        started = time.perf_counter()
        generations = await run_generations(workers, total, args.tokens, 1)
        seconds = time.perf_counter() - started
        client1, server1 = cpu_seconds(), cpu_seconds(server.pid)
        others1, busy1 = sum(cpu_seconds(o.pid) for o in others), machine_busy_seconds()
    finally:
        await close_workers(workers, channels)
    return Round(seconds, generations, client1 - client0, server1 - server0, others1 - others0, busy1 - busy0)


def summary(transport: str, concurrency: int, rounds: list[Round]) -> dict[str, Any]:
    """The cell's best round (highest tokens/s) in figures, with the range over the rounds."""
    best = max(rounds, key=lambda r: r.tokens_per_s)
    ttft = np.asarray([g.ttft() for g in best.generations]) * 1e3
    gaps = np.asarray([gap for g in best.generations for gap in g.gaps()]) * 1e3
    seconds = best.seconds
    return {
        "transport": transport,
        "concurrency": concurrency,
        "generations": len(best.generations),
        "tokens": best.tokens,
        "seconds": round(seconds, 4),
        "tokens_per_s": best.tokens_per_s,
        "tokens_per_s_rounds": [r.tokens_per_s for r in rounds],
        "ttft_p50_ms": float(np.percentile(ttft, 50)),
        "ttft_p99_ms": float(np.percentile(ttft, 99)),
        # the first generation of each client starts at once (a burst of `concurrency` requests); the
        # later ones start whenever a client's previous generation ends (staggered)
        "ttft_burst_p50_ms": float(np.percentile(ttft[:concurrency], 50)),
        "ttft_staggered_p50_ms": float(np.percentile(ttft[concurrency:], 50)) if len(ttft) > concurrency else None,
        "itl_p50_ms": float(np.percentile(gaps, 50)) if gaps.size else float("nan"),
        "itl_p99_ms": float(np.percentile(gaps, 99)) if gaps.size else float("nan"),
        "events_per_generation": float(np.mean([len(g.arrivals) for g in best.generations])),
        "client_cores": best.client_cpu_s / seconds,
        "server_cores": best.server_cpu_s / seconds,
        "other_processes_cores": max(
            0.0, (best.machine_busy_s - best.client_cpu_s - best.server_cpu_s - best.others_cpu_s) / seconds
        ),
        "server_cpu_us_per_token": 1e6 * best.server_cpu_s / best.tokens if best.tokens else None,
    }


# ---- correctness spot check ------------------------------------------------------------------------


async def spot_check(folder: Path, vocabulary: list[str], servers: dict[str, ServerProcess], tokens: int) -> dict:
    """Ours over both transports against `runtime.Model.generate` (the prompt but its last
    character through predict, then generate from the last one) for the same seeds; the baseline
    greedy against the runtime greedy (its numpy draw is its own)."""
    import runtime

    model = runtime.load(folder)
    prompt = prompt_ids(vocabulary)
    state = model.predict({TOKEN_INPUT: prompt[:-1].reshape(-1, 1)})[1] if len(prompt) > 1 else None

    def expected(sampler: Any) -> list[int]:
        ids, _ = model.generate({TOKEN_INPUT: prompt[-1:]}, tokens, state, sampler=sampler)
        return ids[:, 0].tolist()

    report = {}
    for transport, server in servers.items():
        strategy = "greedy" if transport == BASELINE else "temperature"
        seeds = SPOT_SEEDS[:1] if strategy == "greedy" else SPOT_SEEDS
        workers, channels = await open_workers(transport, server, 1, prompt)
        same = True
        try:
            for seed in seeds:
                generation = Generation()
                await workers[0].generate(seed, tokens, generation, strategy)
                settings = {} if strategy == "greedy" else {"temperature": TEMPERATURE}
                sampler = runtime.Sampler(strategy, seed=seed, **settings)
                same = same and generation.ids == expected(sampler)
        finally:
            await close_workers(workers, channels)
        report[transport] = {"strategy": strategy, "seeds": list(seeds), "same_tokens": bool(same)}
    return {"tokens": tokens, "transports": report}


# ---- the whole run ---------------------------------------------------------------------------------


async def start_servers(args: argparse.Namespace, folder: Path, out: Path) -> dict[str, ServerProcess]:
    """The baseline and (unless only the baseline is measured) ours, ready."""
    servers: dict[str, ServerProcess] = {}
    script = Path(__file__).resolve()
    if BASELINE in args.transports:
        port = free_port()
        arguments = ["--serve-baseline", str(port), str(folder)]
        arguments += ["--baseline-threaded"] if args.baseline_threaded else []
        servers[BASELINE] = launch("baseline", arguments, port, out / "server-baseline.log", script=script)
    if OURS_SSE in args.transports or OURS_GRPC in args.transports:
        http_port, grpc_port = free_port(), free_port()
        arguments = ["--serve-ours", str(http_port), str(grpc_port), str(folder), "--delay", str(args.delay)]
        arguments += ["--profile", str(Path(args.profile).resolve())] if args.profile else []
        arguments += ["--profile-loop"] if args.profile_loop else []
        ours = launch("ours", arguments, http_port, out / "server-ours.log", script=script, grpc_port=grpc_port)
        servers.update({t: ours for t in (OURS_SSE, OURS_GRPC) if t in args.transports})
    for name, server in servers.items():
        await wait_ready(server, out / f"server-{'baseline' if name == BASELINE else 'ours'}.log")
    return servers


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"machine": machine(), "versions": versions()}
    folder, vocabulary = export_char_gru(out)
    args.prompt_ids = prompt_ids(vocabulary)
    servers = await start_servers(args, folder, out)
    processes = list({id(s): s for s in servers.values()}.values())
    rounds: dict[tuple[str, int], list[Round]] = {}
    try:
        print(f"servers: {', '.join(f'{s.name} (pid {s.pid})' for s in processes)}", file=sys.stderr)
        info["spot_check"] = await spot_check(folder, vocabulary, servers, args.spot_tokens)
        wrong = [t for t, r in info["spot_check"]["transports"].items() if not r["same_tokens"]]
        if wrong:
            print(f"WARNING: tokens differ from the runtime's over {', '.join(wrong)}", file=sys.stderr)
        for concurrency in args.concurrency:
            for index in range(args.rounds):
                shift = index % len(args.transports)
                for transport in args.transports[shift:] + args.transports[:shift]:  # alternate the order
                    server = servers[transport]
                    others = [s for s in processes if s is not server]
                    found = await measure(transport, server, others, concurrency, args)
                    rounds.setdefault((transport, concurrency), []).append(found)
                    print(
                        f"  {transport:<13} c={concurrency:<3} round {index + 1}: {found.tokens_per_s:9.0f} tokens/s",
                        file=sys.stderr,
                    )
    finally:
        stop(processes)
    info["cells"] = [summary(t, c, found) for (t, c), found in rounds.items()]
    info["settings"] = {
        "model": "examples/char_generator CharGRU (embedding 16, GRU 2 x 64, vocabulary 41), seed-0 weights",
        "prompt": PROMPT,
        "tokens": args.tokens,
        "temperature": TEMPERATURE,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "waves": args.waves,
        "min_generations": args.min_generations,
        "max_queue_delay_us": args.delay,
        "baseline": "FastAPI StreamingResponse, "
        + (
            "a plain generator in Starlette's thread pool"
            if args.baseline_threaded
            else "an async generator on the loop"
        )
        + ", session.run of the step model and a numpy draw (softmax, Generator.choice) per token",
        "client": "asyncio on uvloop; SSE: raw HTTP/1.1 keep-alive, one connection per concurrent generation; "
        "gRPC: grpc.aio, service_pb2_grpc stub, one ModelStreamInfer stream per concurrent generation, one channel",
    }
    info["targets"] = targets(info["cells"], args.concurrency)
    return info


def targets(cells: list[dict[str, Any]], concurrencies: list[int]) -> list[dict[str, Any]]:
    """Ratios to the baseline at the same concurrency (set on the cells) and the issue's targets."""
    base = {c["concurrency"]: c for c in cells if c["transport"] == BASELINE}
    for cell in cells:
        other = base.get(cell["concurrency"])
        if cell["transport"] != BASELINE and other and other["tokens_per_s"]:
            cell["throughput_ratio"] = cell["tokens_per_s"] / other["tokens_per_s"]
            cell["ttft_p50_ratio"] = cell["ttft_p50_ms"] / other["ttft_p50_ms"]
    found = []
    top = max(concurrencies)
    for cell in cells:
        if cell["transport"] == BASELINE:
            continue
        if cell["concurrency"] == top and "throughput_ratio" in cell:
            ratio = cell["throughput_ratio"]
            found.append(
                {
                    "transport": cell["transport"],
                    "what": f"tokens/s at {top} >= {TARGET_THROUGHPUT:g}x the baseline",
                    "value": f"{ratio:.2f}x",
                    "met": ratio >= TARGET_THROUGHPUT,
                }
            )
        limit = TARGET_TTFT_MS.get(cell["concurrency"])
        if limit is not None:
            found.append(
                {
                    "transport": cell["transport"],
                    "what": f"TTFT p50 at {cell['concurrency']} <= {limit:g} ms",
                    "value": f"{cell['ttft_p50_ms']:.2f} ms",
                    "met": cell["ttft_p50_ms"] <= limit,
                }
            )
    return found


# ---- output ---------------------------------------------------------------------------------------


def table(info: dict[str, Any]) -> str:
    m, s = info["machine"], info["settings"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores shared by the load generator and the servers "
        f"(load average before: {', '.join(f'{v:.2f}' for v in m['load_average_before'])})",
        f"model: {s['model']}; prompt {s['prompt']!r} then {s['tokens']} sampled tokens (temperature "
        f"{s['temperature']:g}, a seed per generation); ours: max_queue_delay_us {s['max_queue_delay_us']}",
        f"baseline: {s['baseline']}",
        f"each cell: its best of {s['rounds']} rounds (tokens/s; the order of ours/baseline alternates per round), "
        f"a round = concurrency x {s['waves']} generations (at least {s['min_generations']}), each concurrent "
        "client one generation after another; ttft: request written -> first token read; itl: gap between "
        "consecutive tokens of a generation; x: ours / baseline at the same concurrency; client/server/other: "
        "cores busy (CPU s per s)",
        "",
        f"{'transport':<13} {'conc':>4} {'gens':>5} {'tokens/s':>9} {'(range)':>15} {'ttft p50':>8} {'ttft p99':>8} "
        f"{'itl p50':>7} {'itl p99':>7} {'ev/gen':>6} {'x tok/s':>7} {'client':>6} {'server':>6} {'other':>6} "
        f"{'srv us/tok':>10}",
    ]
    for c in info["cells"]:
        spread = f"{min(c['tokens_per_s_rounds']):.0f}-{max(c['tokens_per_s_rounds']):.0f}"
        ratio = f"{c['throughput_ratio']:.2f}" if "throughput_ratio" in c else "-"
        lines.append(
            f"{c['transport']:<13} {c['concurrency']:>4} {c['generations']:>5} {c['tokens_per_s']:>9.0f} "
            f"{spread:>15} {c['ttft_p50_ms']:>8.2f} {c['ttft_p99_ms']:>8.2f} {c['itl_p50_ms']:>7.2f} "
            f"{c['itl_p99_ms']:>7.2f} {c['events_per_generation']:>6.0f} {ratio:>7} {c['client_cores']:>6.2f} "
            f"{c['server_cores']:>6.2f} {c['other_processes_cores']:>6.2f} {c['server_cpu_us_per_token']:>10.1f}"
        )
    lines.append("(ttft and itl in ms)")
    for c in info["cells"]:
        if c["concurrency"] == max(s["concurrency"]) and c["ttft_staggered_p50_ms"] is not None:
            lines.append(
                f"ttft p50 of {c['transport']} at {c['concurrency']}: {c['ttft_burst_p50_ms']:.2f} ms for the first "
                f"generations (all {c['concurrency']} requests sent at once), {c['ttft_staggered_p50_ms']:.2f} ms "
                "for the later ones (each sent when its client's previous generation ended)"
            )
    spot = info["spot_check"]
    lines.append(
        f"spot check ({spot['tokens']} tokens against runtime.Model.generate, same seed): "
        + ", ".join(
            f"{t} ({r['strategy']}) {'same tokens' if r['same_tokens'] else 'DIFFERENT tokens'}"
            for t, r in spot["transports"].items()
        )
    )
    busiest = max((c["other_processes_cores"] for c in info["cells"]), default=0.0)
    if busiest > OTHER_LOAD_WARNING:
        lines.append(f"WARNING: other processes kept up to {busiest:.2f} cores busy during a cell (a loaded machine)")
    for target in info["targets"]:
        lines.append(
            f"target {target['transport']}: {target['what']}: {target['value']}: {'met' if target['met'] else 'MISSED'}"
        )
    return "\n".join(lines)


def main() -> None:
    global PROMPT  # --prompt sets it for the whole run
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=integers, default=[1, 16, 64], help="concurrent generations")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per generation (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per cell; the best is reported (default 3)")
    parser.add_argument("--waves", type=int, default=2, help="generations per concurrent client per round (default 2)")
    parser.add_argument("--min-generations", type=int, default=16, help="generations per round at least (default 16)")
    parser.add_argument("--warmup-tokens", type=int, default=10, help="tokens of each client's warm-up generation")
    parser.add_argument("--spot-tokens", type=int, default=50, help="tokens of each spot check generation")
    parser.add_argument("--prompt", default=PROMPT, help=f"the prompt of every generation (default {PROMPT!r})")
    parser.add_argument("--delay", type=int, default=0, help="our server's max_queue_delay_us (default 0)")
    parser.add_argument(
        "--transports", default=",".join(TRANSPORTS), help=f"which of {','.join(TRANSPORTS)} (default all)"
    )
    parser.add_argument(
        "--baseline-threaded",
        action="store_true",
        help="the baseline's generator in Starlette's thread pool (default: an async generator on the event loop)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 generations x 5 tokens, one round")
    parser.add_argument(
        "--profile", help="sample our server's thread stacks and CPU times and write the report to this file"
    )
    parser.add_argument(
        "--profile-loop", action="store_true", help="with --profile: cProfile of the server's event-loop thread too"
    )
    parser.add_argument("--out", default="out/bench-tokens", help="folder for the model, logs and results")
    parser.add_argument("--table", help="also write the table to this file (e.g. docs/issue22-token-streaming.txt)")
    parser.add_argument("--serve-baseline", nargs=2, metavar=("PORT", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-ours", nargs=3, metavar=("HTTP", "GRPC", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(int(args.serve_baseline[0]), args.serve_baseline[1], args.baseline_threaded)
        return
    if args.serve_ours:
        http_port, grpc_port, folder = args.serve_ours
        serve_ours(int(http_port), int(grpc_port), folder, args.delay, args.profile, args.profile_loop)
        return
    PROMPT = args.prompt
    args.transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if not args.transports or set(args.transports) - set(TRANSPORTS):
        parser.error(f"--transports takes some of {','.join(TRANSPORTS)}")
    if args.quick:
        args.concurrency, args.tokens, args.rounds, args.waves = [2], 5, 1, 1
        args.min_generations, args.warmup_tokens, args.spot_tokens = 2, 0, 5
    if 0 in args.concurrency or args.tokens < 1 or args.rounds < 1 or args.waves < 1:
        parser.error("--concurrency, --tokens, --rounds and --waves must be >= 1")
    import uvloop

    info = uvloop.run(benchmark(args))
    out = Path(args.out)
    (out / "token_streaming.json").write_text(json.dumps(info, indent=1, default=float) + "\n")
    text = table(info)
    (out / "token_streaming.txt").write_text(text + "\n")
    if args.table:
        Path(args.table).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

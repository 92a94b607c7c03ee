"""Scaling `rnn serve --ray` from 1 to 2 Stepper replicas on this machine, measured in one run,
beside the one-process `rnn serve` as a reference.

Each server is the real command (`python -m toolkit.cli serve ...`) in a subprocess, started,
measured and stopped in turn (a local Ray cluster of its own for the --ray ones). The load comes
from this process: N concurrent closed-loop sequences, one step per request, each a
`SequenceClient` (the client that carries the acknowledged state, sequence_version on every
request) over tritonclient's asyncio client. Every cell: steps/s, p50/p99 latency, the machine's
busy cores (all processes: client, server, Ray's own), and the ratio to the 1-replica cell.
A correctness spot check compares one sequence of each server with a local runtime run.

    python benchmarks/ray_serve.py [--seconds 15] [--sequences 64] [--protocol grpc|http] [--out DIR]
    python benchmarks/ray_serve.py --model FOLDER   # any exported folder, e.g. a token model

With ``--model`` the folder is served as ``model`` and each step's inputs are drawn from its
signature (token ids below the vocabulary, values in (-1, 1)), one stream a sequence.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import machine, machine_busy_seconds  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "artifacts" / "sine-elman"
START_TIMEOUT_S = 120.0
WARM_UP_S = 3.0
CONFIGS = {  # name -> extra `rnn serve` arguments
    "rnn serve (one process)": [],
    "rnn serve --ray, 1 replica": ["--ray", "--replicas", "1"],
    "rnn serve --ray, 2 replicas": ["--ray", "--replicas", "2"],
}


def step_inputs(folder: Path, steps: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``steps`` steps of one stream's inputs drawn from the folder's signature, at batch 1."""
    import runtime

    rng = np.random.default_rng(seed)
    model = runtime.load(folder)
    return [
        {
            spec.name: rng.integers(0, spec.vocabulary, 1)
            if spec.is_tokens
            else rng.uniform(-1, 1, (1, *spec.sizes)).astype(np.float32)
            for spec in model.inputs
        }
        for _ in range(steps)
    ]


class Served:
    def __init__(self, extra: list[str], log: Path, name: str, folder: Path) -> None:
        command = [sys.executable, "-m", "toolkit.cli", "serve", f"{name}={folder}", "--http-port", "0"]
        command += ["--grpc-port", "0", *extra]
        self.log = log.open("w")
        self.process = subprocess.Popen(
            command, stderr=subprocess.PIPE, stdout=self.log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        self.http = self.grpc = None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            self.log.write(line)
            if match := re.match(r"HTTP\s+http://[\d.]+:(\d+)/v2", line):
                self.http = int(match.group(1))
            if match := re.match(r"gRPC\s+[\d.]+:(\d+)", line):
                self.grpc = int(match.group(1))
            if line.startswith("models:"):
                break
        if not (self.http and self.grpc):
            self.stop()
            raise SystemExit(f"the server did not start; see {log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(120)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


async def clients(protocol: str, served: Served, sequences: int, name: str, folder: Path) -> tuple[Any, list[Any]]:
    import runtime
    from toolkit.serving.client import SequenceClient

    states = None
    if protocol == "grpc":
        import tritonclient.grpc.aio as triton

        client = triton.InferenceServerClient(f"127.0.0.1:{served.grpc}")
        metadata = await client.get_model_metadata(name, as_json=True)
        states = len(runtime.load(folder).states)  # gRPC metadata has no parameters naming them
    else:
        import tritonclient.http.aio as triton

        client = triton.InferenceServerClient(f"127.0.0.1:{served.http}", conn_limit=sequences + 4)
        metadata = await client.get_model_metadata(name)
    return client, [SequenceClient(client, name, 100 + i, metadata, states=states) for i in range(sequences)]


async def measure(protocol: str, served: Served, sequences: int, seconds: float, name: str, folder: Path) -> dict:
    client, sessions = await clients(protocol, served, sequences, name, folder)
    if folder == FOLDER:
        xs = list(np.sin(np.linspace(2.0, 10.0, 64)).astype(np.float32).reshape(-1, 1, 1))
    else:
        xs = step_inputs(folder, 64, seed=1)
    latencies: list[float] = []
    counting = False
    stop_at = time.monotonic() + WARM_UP_S + seconds

    async def drive(session: Any, offset: int) -> None:
        t = offset
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            await session.step(xs[t % len(xs)])
            if counting:
                latencies.append(time.perf_counter() - started)
            t += 1

    async def window() -> tuple[float, float]:
        nonlocal counting
        await asyncio.sleep(WARM_UP_S)
        counting, busy, began = True, machine_busy_seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        counting = False
        return time.monotonic() - began, machine_busy_seconds() - busy

    try:
        (elapsed, busy), *_ = await asyncio.gather(window(), *(drive(s, i) for i, s in enumerate(sessions)))
        spot = await spot_check(sessions[0], folder)
    finally:
        await client.close()
    ms = np.array(latencies) * 1e3
    return {
        "steps_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "busy_cores": busy / elapsed,
        "resends": sum(s.recoveries for s in sessions),
        "spot_check_equal": spot,
    }


async def spot_check(session: Any, folder: Path) -> bool:
    """A new sequence of 100 steps against the runtime, from the initial state."""
    import runtime

    model = runtime.load(folder)
    session.state, session.version, session.sequence_id = None, 0, "spot-check"
    xs = step_inputs(folder, 100, seed=0)
    state, equal = None, True
    for x in xs:
        expected, state = model.step(x, state)
        got = await session.step(x)
        pairs = [(got[k], v) for k, v in expected.items()] if isinstance(expected, dict) else [(got, expected)]
        equal &= all(np.array_equal(a, b) for a, b in pairs)
    return equal


def table(info: dict[str, Any]) -> str:
    lines = [
        f"rnn serve --ray scaling: {info['sequences']} sequences of {info['model']} over {info['protocol']}, "
        f"{info['seconds']:g} s per cell, one run",
        f"machine: {info['machine']['cpu']}, {info['machine']['cores']} cores; load before "
        f"{info['machine']['load_average_before'][0]:.2f}",
        "",
        "| server | steps/s | x 1 replica | p50 ms | p99 ms | busy cores | resends | spot check |",
        "|---|---|---|---|---|---|---|---|",
    ]
    one = info["cells"]["rnn serve --ray, 1 replica"]["steps_per_s"]
    for name, cell in info["cells"].items():
        lines.append(
            f"| {name} | {cell['steps_per_s']:,.0f} | {cell['steps_per_s'] / one:.2f} | {cell['p50_ms']:.1f} | "
            f"{cell['p99_ms']:.1f} | {cell['busy_cores']:.2f} | {cell['resends']} | "
            f"{'equal' if cell['spot_check_equal'] else 'DIFFERENT'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--out", default="out/ray-serve-bench")
    parser.add_argument("--model", type=Path, default=None, help="an exported folder (default: the seed's sine)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name, folder = ("sine", FOLDER) if args.model is None else ("model", args.model.resolve())
    info: dict[str, Any] = {
        "model": str(folder),
        "machine": machine(),
        "sequences": args.sequences,
        "protocol": args.protocol,
        "seconds": args.seconds,
        "cells": {},
    }
    for config, extra in CONFIGS.items():
        print(f"{config}: starting", file=sys.stderr, flush=True)
        served = Served(extra, out / f"{re.sub(r'[^a-z0-9]+', '-', config.lower()).strip('-')}.log", name, folder)
        try:
            cell = asyncio.run(measure(args.protocol, served, args.sequences, args.seconds, name, folder))
            info["cells"][config] = cell
        finally:
            served.stop()
        print(f"{config}: {info['cells'][config]['steps_per_s']:,.0f} steps/s", file=sys.stderr, flush=True)
    text = table(info)
    (out / "ray-serve.txt").write_text(text)
    (out / "ray-serve.json").write_text(json.dumps(info, indent=1) + "\n")
    print(text)
    if not all(cell["spot_check_equal"] for cell in info["cells"].values()):
        raise SystemExit("a server's outputs differ from the runtime's")


if __name__ == "__main__":
    main()

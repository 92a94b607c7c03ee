"""Benchmarks every way of running a model folder's loop against eager PyTorch, in one run.

Implementations: eager PyTorch (the step module in a Python loop), TorchScript (the scripted
step in a Python loop), the onnxruntime step model (one run per step), every fused form the
folder ships, the runtime's automatic choice, and a numpy loop. Each configuration (kind,
batch, steps) times all implementations in interleaved rounds and keeps each one's best time,
so that the ratios come from the same minutes of the same machine.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import runtime
from runtime.fused import ROLLOUT_FORMS, SEQUENCE_FORMS, STEP

from rnn.checkpoint import load_checkpoint
from rnn.eager import generate_eager, predict_eager

BATCHES = (1, 64, 4096)
STEPS = (20, 1000)
KINDS = ("generate", "predict")
ROUNDS = 5
COLD_START_RUNS = 3
COLD_START_STEPS = 20
PER_STREAM = "session.run per stream"
STREAM_COUNTS = (1, 64, 4096)
PUSH_THREADS = 8


@dataclass
class BenchRow:
    kind: str
    batch: int
    steps: int
    implementation: str
    seconds: float  # best of the rounds, for the whole call

    @property
    def us_per_step(self) -> float:
        return self.seconds / self.steps * 1e6

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds


@dataclass
class StreamRow:
    streams: int
    implementation: str
    seconds: float  # best time for one tick: every stream one step

    @property
    def stream_steps_per_second(self) -> float:
        return self.streams / self.seconds


@dataclass
class BenchReport:
    folder: str
    machine: str
    rows: list[BenchRow] = field(default_factory=list)
    cold_start: dict[str, float | bool] = field(default_factory=dict)
    streams: list[StreamRow] = field(default_factory=list)

    def stream_ratio(self, row: StreamRow) -> float:
        """How many times more stream-steps per second than one session.run per stream."""
        base = next(r for r in self.streams if r.streams == row.streams and r.implementation == PER_STREAM)
        return base.seconds / row.seconds

    def ratio(self, row: BenchRow) -> float:
        """How many times faster than eager PyTorch in the same configuration."""
        eager = next(r for r in self.rows if (r.kind, r.batch, r.steps, r.implementation) ==
                     (row.kind, row.batch, row.steps, "eager"))
        return eager.seconds / row.seconds

    def to_dict(self) -> dict:
        rows = [{**asdict(r), "us_per_step": r.us_per_step, "steps_per_second": r.steps_per_second,
                 "ratio_vs_eager": self.ratio(r)} for r in self.rows]
        streams = [{**asdict(r), "stream_steps_per_second": r.stream_steps_per_second,
                    "ratio_vs_per_stream_run": self.stream_ratio(r)} for r in self.streams]
        return {"folder": self.folder, "machine": self.machine, "rows": rows, "cold_start": self.cold_start,
                "streams": streams}

    def table(self) -> str:
        lines = [f"machine: {self.machine}", "",
                 f"{'kind':<9} {'batch':>5} {'steps':>5}  {'implementation':<15} {'us/step':>10} {'steps/s':>11} {'vs eager':>9}"]
        previous = None
        for row in self.rows:
            key = (row.kind, row.batch, row.steps)
            if previous is not None and key != previous:
                lines.append("")
            previous = key
            lines.append(f"{row.kind:<9} {row.batch:>5} {row.steps:>5}  {row.implementation:<15} "
                         f"{row.us_per_step:>10.2f} {row.steps_per_second:>11.0f} {self.ratio(row):>8.1f}x")
        if self.streams:
            lines += ["", f"{'streams':>7}  {'implementation':<32} {'stream-steps/s':>15} {'vs per-stream run':>18}"]
            for row in self.streams:
                lines.append(f"{row.streams:>7}  {row.implementation:<32} {row.stream_steps_per_second:>15.0f} "
                             f"{self.stream_ratio(row):>17.1f}x")
        if self.cold_start:
            c = self.cold_start
            lines += ["", f"cold start (fresh process: import runtime, load, generate {COLD_START_STEPS} steps): "
                          f"{c['in_process_s']:.3f} s in the process, {c['process_wall_s']:.3f} s with interpreter start-up; "
                          f"torch imported: {c['torch_imported']}"]
        return "\n".join(lines)


def _numpy_step_loop(w1: np.ndarray, w2: np.ndarray, n_in: int):
    """A careful numpy Elman loop: buffers allocated once, matmul and tanh written in place."""

    def run(first: np.ndarray, state: np.ndarray, steps: int, teacher_forced: bool) -> np.ndarray:
        batch = state.shape[0]
        xh = np.empty((batch, w1.shape[0]), np.float32)
        xh[:, n_in:] = state
        h = np.empty((batch, w1.shape[1]), np.float32)
        ys = np.empty((steps, batch, w2.shape[1]), np.float32)
        if not teacher_forced:
            xh[:, :n_in] = first
        for t in range(steps):
            if teacher_forced:
                xh[:, :n_in] = first[t]
            np.matmul(xh, w1, out=h)
            np.tanh(h, out=h)
            np.matmul(h, w2, out=ys[t])
            xh[:, n_in:] = h
            if not teacher_forced:
                xh[:, :n_in] = ys[t]
        return ys

    return run


def _implementations(folder: Path, kind: str, model: runtime.Model, factory=None) -> dict[str, Callable]:
    """name -> function(first, state, steps) for one kind of call."""
    eager = load_checkpoint(folder, factory).model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated, still ours
        scripted = torch.jit.load(str(folder / "step.torchscript.pt"))
    t = torch.from_numpy

    def tensors(state):
        return tuple(t(s) for s in state)

    if kind == "generate":
        impls = {
            "eager": lambda x, h, n: generate_eager(eager, t(x), n, tensors(h)),
            "torchscript": lambda x, h, n: generate_eager(scripted, t(x), n, tensors(h)),
        }
        forms = (STEP, *ROLLOUT_FORMS)
        call = model.generate
    else:
        impls = {
            "eager": lambda xs, h, n: predict_eager(eager, t(xs), tensors(h)),
            "torchscript": lambda xs, h, n: predict_eager(scripted, t(xs), tensors(h)),
        }
        forms = (STEP, *SEQUENCE_FORMS)
        call = model.predict
    for form in forms:
        if form in model.forms:
            name = "onnx step loop" if form == STEP else form
            if kind == "generate":
                impls[name] = lambda x, h, n, form=form: call(x, n, h, form=form)
            else:
                impls[name] = lambda xs, h, n, form=form: call(xs, h, form=form)
    if kind == "generate":
        impls["auto"] = lambda x, h, n: call(x, n, h)
    else:
        impls["auto"] = lambda xs, h, n: call(xs, h)
    if getattr(eager, "kind", None) == "elman":  # the numpy baseline is the Elman step written out
        numpy_loop = _numpy_step_loop(eager.w1.detach().numpy().copy(), eager.w2.detach().numpy().copy(),
                                      eager.input_size)
        impls["numpy loop"] = lambda first, h, n: numpy_loop(first, h[0], n, kind == "predict")
    return impls


def run_bench(
    folder: str | os.PathLike,
    batches=BATCHES,
    steps=STEPS,
    kinds=KINDS,
    rounds: int = ROUNDS,
    cold_start: bool = True,
    progress: Callable[[str], None] | None = None,
    stream_counts=STREAM_COUNTS,
    factory=None,
) -> BenchReport:
    folder = Path(folder)
    model = runtime.load(folder)
    report = BenchReport(str(folder), _machine())
    rng = np.random.default_rng(0)
    for kind in kinds:
        impls = _implementations(folder, kind, model, factory)
        for batch in batches:
            for n in steps:
                if progress:
                    progress(f"{kind} batch {batch} steps {n}")
                h = tuple(rng.uniform(-1, 1, (batch, size)).astype(np.float32) for size in model.state_sizes)
                first = rng.uniform(-1, 1, (batch, model.input_size) if kind == "generate"
                                    else (n, batch, model.input_size)).astype(np.float32)
                best = {name: float("inf") for name in impls}
                for function in impls.values():
                    function(first, h, n)  # warm-up: sessions, allocations, caches
                for _ in range(rounds):
                    for name, function in impls.items():
                        start = time.perf_counter()
                        function(first, h, n)
                        best[name] = min(best[name], time.perf_counter() - start)
                report.rows.extend(BenchRow(kind, batch, n, name, seconds) for name, seconds in best.items())
    if stream_counts:
        if progress:
            progress(f"streams {', '.join(map(str, stream_counts))}")
        report.streams = bench_streams(model, stream_counts, rounds=min(rounds, 3))
    if cold_start:
        report.cold_start = measure_cold_start(folder)
    return report


def bench_streams(model: runtime.Model, counts=STREAM_COUNTS, rounds: int = 3) -> list[StreamRow]:
    """One tick (every stream one step) three ways: one step-model run per stream, the pool's
    batched ``step(ids, xs)``, and single ``push`` calls from 8 threads gathered by the pool."""
    from concurrent.futures import ThreadPoolExecutor

    rows = []
    rng = np.random.default_rng(1)
    for count in counts:
        pool = runtime.StreamPool(model, capacity=count)
        ids = np.array([pool.open() for _ in range(count)])
        xs = rng.uniform(-1, 1, (count, model.input_size)).astype(np.float32)
        states = [model.initial_state(1) for _ in range(count)]

        def per_stream() -> None:
            for i in range(count):
                _, states[i] = model._run(xs[i : i + 1], states[i])

        shares = [ids[k::PUSH_THREADS] for k in range(PUSH_THREADS)]
        with ThreadPoolExecutor(PUSH_THREADS) as threads:
            def pushes() -> None:
                list(threads.map(lambda share: [pool.push(int(i), xs[i]) for i in share], shares))

            implementations = {PER_STREAM: per_stream, "pool.step(ids, xs), batched": lambda: pool.step(ids, xs),
                               f"pool.push from {PUSH_THREADS} threads": pushes}
            best = {name: float("inf") for name in implementations}
            for function in implementations.values():
                function()
            for _ in range(rounds):
                for name, function in implementations.items():
                    start = time.perf_counter()
                    function()
                    best[name] = min(best[name], time.perf_counter() - start)
        rows.extend(StreamRow(count, name, seconds) for name, seconds in best.items())
    return rows


def measure_cold_start(folder: Path, runs: int = COLD_START_RUNS) -> dict[str, float | bool]:
    """Best of ``runs`` fresh processes: import runtime, load, generate 20 steps."""
    code = (
        "import time\nstart = time.perf_counter()\nimport sys, numpy as np, runtime\n"
        f"model = runtime.load({str(folder)!r})\n"
        f"model.generate(np.float32(0.5), {COLD_START_STEPS})\n"
        "print(time.perf_counter() - start, 'torch' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[1]
    inside, wall, torch_imported = [], [], False
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
        wall.append(time.perf_counter() - start)
        seconds, imported = result.stdout.split()
        inside.append(float(seconds))
        torch_imported = torch_imported or imported == "True"
    return {"in_process_s": min(inside), "process_wall_s": min(wall), "torch_imported": torch_imported}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}")


def plot_bench(report: BenchReport, path: str | os.PathLike) -> Path:
    """Bars of the speed-up over eager PyTorch: one row per kind, one panel per (batch, steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(r.kind for r in report.rows))
    sizes = list(dict.fromkeys((r.batch, r.steps) for r in report.rows))
    names = [n for n in dict.fromkeys(r.implementation for r in report.rows) if n != "eager"]
    colours = {name: f"C{i}" for i, name in enumerate(names)}
    figure, axes = plt.subplots(len(kinds), len(sizes), figsize=(2.3 * len(sizes) + 1, 3.2 * len(kinds) + 0.8),
                                sharey=True, squeeze=False)
    for row, kind in enumerate(kinds):
        for column, (batch, steps) in enumerate(sizes):
            axis = axes[row][column]
            rows = {r.implementation: r for r in report.rows if (r.kind, r.batch, r.steps) == (kind, batch, steps)}
            present = [n for n in names if n in rows]
            values = [report.ratio(rows[n]) for n in present]
            bars = axis.bar(range(len(present)), values, color=[colours[n] for n in present])
            for bar, value in zip(bars, values):
                axis.text(bar.get_x() + bar.get_width() / 2, value * 1.08, f"{value:.1f}", ha="center", fontsize=6)
            axis.axhline(1.0, color="k", lw=0.8)
            axis.set_yscale("log")
            axis.set_xticks([])
            axis.set_title(f"{kind}  B={batch}  T={steps}", fontsize=8)
        axes[row][0].set_ylabel("x faster than eager PyTorch")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[n]) for n in names]
    figure.legend(handles, names, loc="lower center", ncol=min(len(names), 8), fontsize=8)
    figure.suptitle(report.machine, fontsize=8)
    figure.tight_layout(rect=(0, 0.06, 1, 0.97))
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def write_json(report: BenchReport, path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")

"""Benchmarks every way of running a model folder's loop against eager PyTorch, in one run.

Implementations: eager PyTorch (the step module in a Python loop), TorchScript (the scripted
step in a Python loop), the onnxruntime step model (one run per step), every fused form the
folder ships, the runtime's automatic choice, and a numpy loop. Each configuration (kind,
batch, steps) times all implementations in interleaved rounds and keeps each one's best time,
so that the ratios come from the same minutes of the same machine. Two more tables: one tick
of many streams (`bench_streams`) and one call of batch 1, one step (`bench_one_call`, which
serves every signature). `toolkit.bench_any` times a folder of any other signature with the same
report (`BenchReport`, its ratios against ``baseline``), plot and JSON.

Torch runs on however many intra-op threads the caller set (the CLI sets 1); this module does
not change it.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

import runtime
from export.test_data import random_tensor
from export.torchscript import load_torchscript_checked
from rnn.checkpoint import load_checkpoint
from rnn.eager import NumpyStep
from rnn.folders import atomic_path, write_text_atomically
from runtime.errors import ArtifactError
from runtime.fused import ROLLOUT_FORMS, SAMPLING_FORMS, SEQUENCE_FORMS, STEP
from runtime.manifest import ROLE_STEP_TORCHSCRIPT

from .settings import BENCH_BATCHES, BENCH_KINDS, BENCH_ROUNDS, BENCH_STEPS, BENCH_STREAM_COUNTS

BATCHES, STEPS, KINDS, ROUNDS = BENCH_BATCHES, BENCH_STEPS, BENCH_KINDS, BENCH_ROUNDS
COLD_START_RUNS = 3
COLD_START_STEPS = 20
PER_STREAM = "session.run per stream"
STREAM_COUNTS = BENCH_STREAM_COUNTS
PUSH_THREADS = 8
UNTIMED_TORCHSCRIPT = (  # said through progress ("timing ...") before the first row
    "without TorchScript: this folder is not trusted "
    "(--digest, --public-key or --trust loads it; loading runs its code)"
)
ONE_CALL_CALLS = 2000  # calls per round of the one-call table: one call is a few microseconds

# The one-call table (batch 1, one step), in this order; EAGER_STEP is its baseline.
EAGER_STEP = "eager step (torch.no_grad)"
RAW_RUN = "session.run (step.onnx)"
ONE_CALL = (
    EAGER_STEP,
    RAW_RUN,
    "model.step",
    "Stream.push",
    "StreamPool.step (1 stream)",
    "model.generate(x0, 1)",
    "model.predict (1 step)",
)
# The bars of every panel of bench.png, in this order (a missing one leaves its slot empty).
IMPLEMENTATIONS = (
    "torchscript",
    "onnx step loop",
    *ROLLOUT_FORMS,
    *SAMPLING_FORMS,
    *SEQUENCE_FORMS,
    "auto",
    "numpy loop",
)


def best_times(functions: dict[str, Callable[[], Any]], rounds: int, calls: int = 1) -> dict[str, float]:
    """Seconds per call of each function, best of ``rounds`` rounds of ``calls`` calls.

    Each function is called once to warm up (sessions, allocations, caches), then the rounds
    interleave the functions, so that every ratio comes from the same minutes of the same machine.
    """
    for function in functions.values():
        function()
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            for _ in itertools.repeat(None, calls):
                function()
            best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return best


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
class OneCallRow:
    implementation: str
    seconds: float  # best of the rounds, per call (batch 1, one step)

    @property
    def us_per_call(self) -> float:
        return self.seconds * 1e6


@dataclass
class BenchReport:
    folder: str
    machine: str
    rows: list[BenchRow] = field(default_factory=list)
    cold_start: dict[str, float | bool] = field(default_factory=dict)
    streams: list[StreamRow] = field(default_factory=list)
    one_call: list[OneCallRow] = field(default_factory=list)
    baseline: str = "eager"  # the implementation each row's ratio is taken against
    one_call_baseline: str = EAGER_STEP  # the one-call table's
    notes: list[str] = field(default_factory=list)  # lines said before the tables (what was left out)
    general: bool = False  # a run of `toolkit.bench_any`: bench.json says its baseline and notes

    def stream_ratio(self, row: StreamRow) -> float:
        """How many times more stream-steps per second than one session.run per stream."""
        base = next(r for r in self.streams if r.streams == row.streams and r.implementation == PER_STREAM)
        return base.seconds / row.seconds

    def ratio(self, row: BenchRow) -> float:
        """How many times faster than eager PyTorch in the same configuration."""
        eager = next(
            r
            for r in self.rows
            if (r.kind, r.batch, r.steps, r.implementation) == (row.kind, row.batch, row.steps, self.baseline)
        )
        return eager.seconds / row.seconds

    def one_call_ratio(self, row: OneCallRow) -> float:
        """How many times faster than one eager PyTorch step (above 1: faster)."""
        eager = next(r for r in self.one_call if r.implementation == self.one_call_baseline)
        return eager.seconds / row.seconds

    @property
    def ratio_key(self) -> str:
        """bench.json's name of a row's ratio: ratio_vs_eager, or against the baseline that stands for it."""
        return "ratio_vs_" + self.baseline.replace(" ", "_")

    @property
    def one_call_label(self) -> str:
        return "eager step" if self.one_call_baseline == EAGER_STEP else self.one_call_baseline

    def to_dict(self) -> dict:
        rows = [
            {
                **asdict(r),
                "us_per_step": r.us_per_step,
                "steps_per_second": r.steps_per_second,
                self.ratio_key: self.ratio(r),
            }
            for r in self.rows
        ]
        streams = [
            {
                **asdict(r),
                "stream_steps_per_second": r.stream_steps_per_second,
                "ratio_vs_per_stream_run": self.stream_ratio(r),
            }
            for r in self.streams
        ]
        one_call = [
            {
                **asdict(r),
                "us_per_call": r.us_per_call,
                "ratio_vs_" + self.one_call_label.replace(" ", "_"): self.one_call_ratio(r),
            }
            for r in self.one_call
        ]
        document = {
            "folder": self.folder,
            "machine": self.machine,
            "rows": rows,
            "cold_start": self.cold_start,
            "streams": streams,
            "one_call": one_call,
        }
        if self.general:  # a classic run's document stays as it was
            document.update(baseline=self.baseline, notes=self.notes)
        return document

    def table(self) -> str:
        lines = [f"machine: {self.machine}", *self.notes]
        kind_width = max([9, *(len(r.kind) for r in self.rows)])
        ratio_head = f"vs {self.baseline}"
        ratio_width = max(9, len(ratio_head))
        if self.rows:
            lines += [
                "",
                f"{'kind':<{kind_width}} {'batch':>5} {'steps':>5}  {'implementation':<15} {'us/step':>10} "
                f"{'steps/s':>11} {ratio_head:>{ratio_width}}",
            ]
        previous = None
        for row in self.rows:
            key = (row.kind, row.batch, row.steps)
            if previous is not None and key != previous:
                lines.append("")
            previous = key
            lines.append(
                f"{row.kind:<{kind_width}} {row.batch:>5} {row.steps:>5}  {row.implementation:<15} "
                f"{row.us_per_step:>10.2f} {row.steps_per_second:>11.0f} {self.ratio(row):>{ratio_width - 1}.1f}x"
            )
        if self.one_call:
            head = f"vs {self.one_call_label}"
            lines += ["", f"one call, batch 1, one step: {'implementation':<28} {'us/call':>8} {head:>14}"]
            for row in self.one_call:
                lines.append(
                    f"{'':<29}{row.implementation:<28} {row.us_per_call:>8.2f} {self.one_call_ratio(row):>13.2f}x"
                )
        if self.streams:
            lines += ["", f"{'streams':>7}  {'implementation':<32} {'stream-steps/s':>15} {'vs per-stream run':>18}"]
            for row in self.streams:
                lines.append(
                    f"{row.streams:>7}  {row.implementation:<32} {row.stream_steps_per_second:>15.0f} "
                    f"{self.stream_ratio(row):>17.1f}x"
                )
        if self.cold_start:
            c = self.cold_start
            lines += [
                "",
                f"cold start (fresh process: import runtime, load, generate {COLD_START_STEPS} steps): "
                f"{c['in_process_s']:.3f} s in the process, {c['process_wall_s']:.3f} s with interpreter "
                f"start-up; torch imported: {c['torch_imported']}",
            ]
        return "\n".join(lines)


def numpy_step_loop(w1: np.ndarray, w2: np.ndarray, n_in: int):
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


def _scripted_step(model: runtime.Model, trusted: bool) -> torch.jit.ScriptModule | None:
    """The folder's TorchScript step, found through the manifest and loaded from the bytes checked
    against it; None if it lists none or the folder is not trusted (loading runs its code)."""
    entry = model.manifest.file(ROLE_STEP_TORCHSCRIPT)
    return None if entry is None or not trusted else load_torchscript_checked(model.folder, entry)


def _implementations(
    kind: str, model: runtime.Model, eager: torch.nn.Module, scripted: torch.jit.ScriptModule | None
) -> dict[str, Callable]:
    """name -> function(first, state, steps) for one kind of call."""
    torch_steps = {"eager": NumpyStep(eager)}
    if scripted is not None:
        torch_steps["torchscript"] = NumpyStep(scripted)
    if kind == "generate":
        impls = {name: (lambda x, h, n, s=step: s.generate(x, n, h)) for name, step in torch_steps.items()}
        forms = (STEP, *ROLLOUT_FORMS)
        call = model.generate
    else:
        impls = {name: (lambda xs, h, n, s=step: s.predict(xs, h)) for name, step in torch_steps.items()}
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
        numpy_loop = numpy_step_loop(
            eager.w1.detach().numpy().copy(), eager.w2.detach().numpy().copy(), eager.input_size
        )
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
    one_call: bool = True,
    digest: str | None = None,
    trust: bool = False,
) -> BenchReport:
    """Every table of `rnn bench` for ``folder``: kinds x batches x steps, one call (unless
    ``one_call`` is false), stream ticks for ``stream_counts`` (none if empty), cold start.
    TorchScript is timed only in a trusted folder (pinned by ``digest``, or ``trust``), as
    `export.verify_folder` checks it: loading it runs the code inside."""
    folder = Path(folder)
    model = runtime.load(folder, digest=digest)
    report = BenchReport(str(folder), _machine())
    eager = load_checkpoint(folder, factory).model
    scripted = _scripted_step(model, trusted=trust or digest is not None)
    if scripted is None and model.manifest.file(ROLE_STEP_TORCHSCRIPT) is not None and progress:
        progress(UNTIMED_TORCHSCRIPT)  # before any row: the table simply has no torchscript rows
    rng = np.random.default_rng(0)
    for kind in kinds:
        impls = _implementations(kind, model, eager, scripted)
        for batch in batches:
            for n in steps:
                if progress:
                    progress(f"{kind} batch {batch} steps {n}")
                h = tuple(rng.uniform(-1, 1, (batch, size)).astype(np.float32) for size in model.state_sizes)
                first = rng.uniform(
                    -1, 1, (batch, model.input_size) if kind == "generate" else (n, batch, model.input_size)
                ).astype(np.float32)
                best = best_times({name: partial(function, first, h, n) for name, function in impls.items()}, rounds)
                report.rows.extend(BenchRow(kind, batch, n, name, seconds) for name, seconds in best.items())
    if one_call:
        if progress:
            progress("one call, batch 1, one step")
        report.one_call = bench_one_call(model, eager, rounds)
    if stream_counts:
        if progress:
            progress(f"streams {', '.join(map(str, stream_counts))}")
        report.streams = bench_streams(model, stream_counts, rounds=min(rounds, 3))
    if cold_start:
        report.cold_start = measure_cold_start(folder, digest=digest)
    return report


def bench_one_call(
    model: runtime.Model,
    eager: torch.nn.Module | None,
    rounds: int = ROUNDS,
    calls: int = ONE_CALL_CALLS,
    sampler: runtime.Sampler | None = None,
) -> list[OneCallRow]:
    """One step of one stream, every way a caller can make it, against one eager PyTorch step
    (without ``eager``, against ``model.step``), for a model of any signature.

    The eager step is the fairest eager: the module called on tensors, under a ``torch.no_grad``
    entered once outside the timing loop. The runtime's calls take and return numpy arrays. A
    model with no closed loop has no generate row; a sampled one generates with ``sampler``.
    """
    rng = np.random.default_rng(2)
    x = {spec.name: random_tensor(spec, 1, rng) for spec in model.inputs}  # (1, *sizes) or (1,) ids
    state = tuple(random_tensor(spec, 1, rng) for spec in model.states)
    tensors = [torch.from_numpy(x[name]) for name in model.input_names] + [torch.from_numpy(s) for s in state]
    session = model.step_session
    output_names = [output.name for output in session.get_outputs()]
    feed = {**x, **dict(zip(model.state_names, state))}
    stream = runtime.Stream(model, state)
    one = _one_stream(model, x)  # what a caller pushes: a scalar, an id, (sizes,), or a dict of them
    pool = runtime.StreamPool(model, capacity=1)
    ids = np.array([pool.open(state)])
    given = x[model.input_name] if len(model.inputs) == 1 else x
    sequences = {name: value[np.newaxis] for name, value in x.items()}  # one step, either layout
    sequences = sequences[model.input_name] if len(model.inputs) == 1 else sequences
    functions = dict(
        zip(
            ONE_CALL,
            (
                None if eager is None else (lambda: eager(*tensors)),
                lambda: session.run(output_names, feed),
                lambda: model.step(given, state),
                lambda: stream.push(one),
                lambda: pool.step(ids, given),
                lambda: model.generate(given, 1, state, sampler=sampler),
                lambda: model.predict(sequences, state),
            ),
        )
    )
    if eager is None:
        del functions[EAGER_STEP]
    if model.feedback is None:  # no closed loop: nothing is fed back
        del functions["model.generate(x0, 1)"]
    with torch.no_grad():
        best = best_times(functions, rounds, calls)
    return [OneCallRow(name, seconds) for name, seconds in best.items()]


def _one_stream(model: runtime.Model, x: dict[str, np.ndarray]) -> Any:
    """One stream's inputs as a caller pushes them: a float for one value, an int for a token id."""

    def value(spec) -> Any:
        row = x[spec.name][0]
        if spec.is_tokens:
            return int(row)
        return float(row[0]) if spec.count == 1 and len(model.inputs) == 1 else row

    if len(model.inputs) == 1:
        return value(model.inputs[0])
    return {spec.name: value(spec) for spec in model.inputs}


def bench_streams(model: runtime.Model, counts=STREAM_COUNTS, rounds: int = 3) -> list[StreamRow]:
    """One tick (every stream one step) three ways: one step-model session.run per stream, the
    pool's batched ``step(ids, xs)``, and single ``push`` calls from 8 threads gathered by the pool."""
    from concurrent.futures import ThreadPoolExecutor

    rows = []
    rng = np.random.default_rng(1)
    with ThreadPoolExecutor(PUSH_THREADS) as threads:
        for count in counts:
            best = best_times(_stream_ticks(model, count, rng, threads), rounds)
            rows.extend(StreamRow(count, name, seconds) for name, seconds in best.items())
    return rows


def _stream_ticks(model: runtime.Model, count: int, rng: np.random.Generator, threads) -> dict[str, Callable]:
    """name -> function that runs one tick of ``count`` streams."""
    session = model.step_session
    output_names = [output.name for output in session.get_outputs()]
    input_names = [i.name for i in session.get_inputs()]
    pool = runtime.StreamPool(model, capacity=count)
    ids = np.array([pool.open() for _ in range(count)])
    xs = rng.uniform(-1, 1, (count, model.input_size)).astype(np.float32)
    states = [model.initial_state(1) for _ in range(count)]
    shares = [ids[k::PUSH_THREADS] for k in range(PUSH_THREADS)]

    def per_stream() -> None:
        for i in range(count):
            _, *states[i] = session.run(output_names, dict(zip(input_names, (xs[i : i + 1], *states[i]))))

    def pushes() -> None:
        list(threads.map(lambda share: [pool.push(int(i), xs[i]) for i in share], shares))

    return {
        PER_STREAM: per_stream,
        "pool.step(ids, xs), batched": lambda: pool.step(ids, xs),
        f"pool.push from {PUSH_THREADS} threads": pushes,
    }


def measure_cold_start(folder: Path, runs: int = COLD_START_RUNS, digest: str | None = None) -> dict[str, float | bool]:
    """Best of ``runs`` fresh processes: import runtime, load ``folder`` (pinned to ``digest``),
    generate 20 steps (one step for a model whose outputs are not inputs)."""
    code = (
        "import time\nstart = time.perf_counter()\nimport sys, numpy as np, runtime\n"
        f"model = runtime.load({str(Path(folder).resolve())!r}, digest={digest!r})\n"
        "x = np.zeros((1, model.input_size), np.float32)\n"
        f"model.generate(x, {COLD_START_STEPS}) if model.input_size == model.output_size else model.step(x)\n"
        "print(time.perf_counter() - start, 'torch' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[1]
    inside, wall, torch_imported = [], [], False
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1][:300]
            raise ArtifactError(f"the cold-start process failed: {last}")
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

    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}"
    )


def _slots(names: list[str]) -> list[str]:
    """``names`` in the fixed order of IMPLEMENTATIONS (others after them, as first seen)."""
    known = [n for n in IMPLEMENTATIONS if n in names]
    return known + [n for n in dict.fromkeys(names) if n not in IMPLEMENTATIONS]


def _bars(axis, labels: list[str], values: list[float | None], colours: list[str], digits: int) -> None:
    """Bars in fixed slots (None leaves a slot empty), value on top, names as rotated ticks."""
    for slot, (value, colour) in enumerate(zip(values, colours)):
        if value is None:
            continue
        axis.bar(slot, value, color=colour)
        axis.text(slot, value * 1.08, f"{value:.{digits}f}", ha="center", fontsize=6)
    axis.axhline(1.0, color="k", lw=0.8)
    axis.margins(y=0.15)  # room for the value labels
    axis.set_xticks(range(len(labels)))
    axis.set_xticklabels(labels, rotation=40, ha="right", fontsize=7)
    axis.set_xlim(-0.6, len(labels) - 0.4)


def plot_bench(report: BenchReport, path: str | os.PathLike) -> Path:
    """Bars of the speed-up over eager PyTorch: one row per kind, one panel per (batch, steps), the
    same implementations in the same slots in every panel; a last row for the one-call table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    kinds = list(dict.fromkeys(r.kind for r in report.rows))
    sizes = list(dict.fromkeys((r.batch, r.steps) for r in report.rows))
    base = report.baseline
    everything = _slots([r.implementation for r in report.rows if r.implementation != base])
    colours = {name: f"C{i % 10}" for i, name in enumerate(everything)}
    rows = len(kinds) + bool(report.one_call)
    columns = max(len(sizes), 1)
    figure = plt.figure(figsize=(2.6 * columns + 1, 3.6 * max(rows, 1) + 0.6))
    grid = figure.add_gridspec(max(rows, 1), columns)
    for row, kind in enumerate(kinds):
        names = _slots([r.implementation for r in report.rows if r.kind == kind and r.implementation != base])
        first = None
        for column, (batch, steps) in enumerate(sizes):
            axis = figure.add_subplot(grid[row, column], sharey=first)
            first = first or axis
            found = {r.implementation: r for r in report.rows if (r.kind, r.batch, r.steps) == (kind, batch, steps)}
            values = [report.ratio(found[n]) if n in found else None for n in names]
            axis.set_yscale("log")
            _bars(axis, names, values, [colours[n] for n in names], 1)
            against = "eager PyTorch" if base == "eager" else f"the {base}"
            axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            minor = FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}"[0] in "25" else "")  # 2, 5, 20...
            axis.yaxis.set_minor_formatter(minor)
            axis.tick_params(axis="y", which="both", labelsize=7)
            axis.set_title(f"{kind}  B={batch}  T={steps}", fontsize=8)
            if column == 0:
                axis.set_ylabel(f"x faster than {against}", fontsize=8)
    if report.one_call:
        axis = figure.add_subplot(grid[rows - 1, :])
        one_base = report.one_call_baseline
        names = [r.implementation for r in report.one_call if r.implementation != one_base]
        values = [report.one_call_ratio(r) for r in report.one_call if r.implementation != one_base]
        _bars(axis, names, values, [f"C{i % 10}" for i in range(len(names))], 2)
        axis.set_ylim(bottom=0)
        eager = next(r for r in report.one_call if r.implementation == one_base)
        label = report.one_call_label
        axis.set_title(f"one call, batch 1, one step ({label} = 1: {eager.us_per_call:.1f} us)", fontsize=8)
        axis.set_ylabel(f"x faster than {'an eager step' if one_base == EAGER_STEP else label}", fontsize=8)
    figure.suptitle(report.machine, fontsize=8)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)
    return Path(path)


def write_json(report: BenchReport, path: str | os.PathLike) -> None:
    """The report as JSON (`BenchReport.to_dict`), written atomically (`rnn.folders.write_text_atomically`)."""
    write_text_atomically(path, json.dumps(report.to_dict(), indent=2) + "\n")

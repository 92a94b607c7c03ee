"""Benchmark of issue 21's fused loops for any signature: a custom two-LSTMCell forecaster.

Model: the README's worked example (examples/forecaster/): two ``nn.LSTMCell(24)`` and a
``Linear(24, 1)`` head, ``torch.manual_seed(0)`` weights, exported by ``export.export_module``
(the classic ``x -> y`` signature with four states, and the same module as a format 2 two-input
model, a held second input ``u``). 1000 steps at
batch 1 (and 64 with ``--batches``):

- eager torch (1 intra-op thread): the module one step per call, a Python loop (generate feeds
  ``y`` back as the next ``x``; predict reads the given inputs)
- runtime step loop: ``generate(..., form="step")`` / ``predict(..., form="step")``
- runtime fused: ``generate(..., form="rollout_loop")`` / ``predict(..., form="sequence_loop")``
  (`export.step_loops`: the step graph in an unrolled ONNX Loop), and the same ONNX model run by a
  bare ``onnxruntime`` session (what the runtime's call costs on top)

Best of interleaved rounds after a warm-up, onnxruntime on one intra-op thread; ratios against
eager from the same run. Every implementation's outputs are compared with eager's (max abs).
Target (issue 21): fused >= 10x eager at batch 1, generate and predict.

Usage: ``.venv/bin/python benchmarks/forecaster.py [--rounds 7] [--batches 1] [--out FILE]``
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

import runtime
from export import export_module
from runtime.contract import form_specs

HIDDEN = 24
STEPS = 1000
TARGET = 10.0
STATES = ("h1", "c1", "h2", "c2")


class Forecaster(nn.Module):
    """examples/forecaster's module: ``forward(x, h1, c1, h2, c2) -> (y, h1, c1, h2, c2)``."""

    def __init__(self, extra: int = 0) -> None:
        super().__init__()
        self.layer1 = nn.LSTMCell(1 + extra, HIDDEN)
        self.layer2 = nn.LSTMCell(HIDDEN, HIDDEN)
        self.head = nn.Linear(HIDDEN, 1)

    def forward(self, x, h1, c1, h2, c2):
        h1, c1 = self.layer1(x, (h1, c1))
        h2, c2 = self.layer2(h1, (h2, c2))
        return self.head(h2), h1, c1, h2, c2


class HeldInputForecaster(Forecaster):
    """The same with a second input ``u`` (batch, extra) held for the whole rollout."""

    def forward(self, x, u, h1, c1, h2, c2):  # type: ignore[override]
        h1, c1 = self.layer1(torch.cat([x, u], 1), (h1, c1))
        h2, c2 = self.layer2(h1, (h2, c2))
        return self.head(h2), h1, c1, h2, c2


def make(extra: int) -> Forecaster:
    torch.manual_seed(0)
    return (HeldInputForecaster(extra) if extra else Forecaster()).eval()


def export(module: Forecaster, folder: Path, extra: int) -> Path:
    states = [(name, HIDDEN) for name in STATES]
    if not extra:
        return export_module(module, folder, input_size=1, output_size=1, states=states)
    return export_module(
        module, folder, inputs=[("x", 1), ("u", extra)], outputs=[("y", 1)], states=states,
        feedback={"output": "y", "input": "x"},
    )  # fmt: skip


@torch.no_grad()
def eager_generate(module: Forecaster, x0: np.ndarray, held: list[np.ndarray], state) -> np.ndarray:
    x, held_t, current = torch.from_numpy(x0), [torch.from_numpy(h) for h in held], [torch.from_numpy(s) for s in state]
    ys = torch.empty(STEPS, *x.shape)
    for t in range(STEPS):
        x, *current = module(x, *held_t, *current)
        ys[t] = x
    return ys.numpy()


@torch.no_grad()
def eager_predict(module: Forecaster, xs: np.ndarray, held: list[np.ndarray], state) -> np.ndarray:
    xs_t, held_t, current = (
        torch.from_numpy(xs),
        [torch.from_numpy(h) for h in held],
        [torch.from_numpy(s) for s in state],
    )
    ys = torch.empty(xs.shape)
    for t in range(STEPS):
        ys[t], *current = module(xs_t[t], *held_t, *current)
    return ys.numpy()


def bare_session(model: runtime.Model, form: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    path = model.folder / model.form_file(form)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cases(model: runtime.Model, module: Forecaster, batch: int, extra: int) -> dict:
    """{(call, implementation): a function returning the outputs (steps, batch, 1)}."""
    rng = np.random.default_rng(batch)
    state = tuple((rng.standard_normal((batch, HIDDEN)) * 0.1).astype(np.float32) for _ in STATES)
    xs = rng.uniform(-1, 1, (STEPS, batch, 1)).astype(np.float32)
    held = [rng.uniform(-1, 1, (batch, extra)).astype(np.float32)] if extra else []
    first = xs[0] if not extra else {"x": xs[0], "u": held[0]}
    sequences = xs if not extra else {"x": xs, "u": np.broadcast_to(held[0], (STEPS, *held[0].shape)).copy()}
    sessions = {form: bare_session(model, form) for form in ("rollout_loop", "sequence_loop")}
    names = {
        f: [s[0] for s in form_specs(f, model.inputs, model.outputs, model.states, model.feedback)[0]] for f in sessions
    }
    roll_feeds = dict(zip(names["rollout_loop"], [xs[0], *held, *state, np.array([STEPS], np.int64)]))
    seq_values = [xs, *(sequences["u"] for _ in held)]
    seq_feeds = dict(zip(names["sequence_loop"], [*seq_values, *state]))

    def pick(result):
        return result if isinstance(result, np.ndarray) else result["y"]

    return {
        ("generate", "eager torch (1 thread)"): lambda: eager_generate(module, xs[0], held, state),
        ("generate", "runtime step loop"): lambda: pick(model.generate(first, STEPS, state, form="step")[0]),
        ("generate", "runtime rollout_loop"): lambda: pick(model.generate(first, STEPS, state, form="rollout_loop")[0]),
        ("generate", "bare onnxruntime rollout_loop"): lambda: sessions["rollout_loop"].run(None, roll_feeds)[0],
        ("predict", "eager torch (1 thread)"): lambda: eager_predict(module, xs, held, state),
        ("predict", "runtime step loop"): lambda: pick(model.predict(sequences, state, form="step")[0]),
        ("predict", "runtime sequence_loop"): lambda: pick(model.predict(sequences, state, form="sequence_loop")[0]),
        ("predict", "bare onnxruntime sequence_loop"): lambda: sessions["sequence_loop"].run(None, seq_feeds)[0],
    }


def measure(impls: dict, rounds: int) -> tuple[dict, dict]:
    results = {key: fn() for key, fn in impls.items()}  # warm-up, and the outputs each gives
    best = {key: float("inf") for key in impls}
    for _ in range(rounds):
        for key, fn in impls.items():
            begin = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - begin)
    return best, results


def table_rows(label: str, batch: int, best: dict, results: dict) -> list[str]:
    rows = []
    for call in ("generate", "predict"):
        base_key = (call, "eager torch (1 thread)")
        for key, seconds in best.items():
            if key[0] != call:
                continue
            ratio = best[base_key] / seconds
            error = float(np.abs(np.asarray(results[key]).reshape(-1) - results[base_key].reshape(-1)).max())
            fused = key[1].endswith("_loop")
            mark = f">= {TARGET:g}x {'met' if ratio >= TARGET else 'missed'}" if fused and batch == 1 else "-"
            rows.append(
                f"| {label} | {call} | {batch} | {key[1]} | {seconds * 1e3:.2f} | {ratio:.2f}x | {error:.1e} | {mark} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", default="1")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scratch = tempfile.TemporaryDirectory(prefix="forecaster-bench-")
    lines = [
        f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} (1 thread), onnxruntime "
        f"{ort.__version__} (1 thread), onnx {onnx.__version__}, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f} at the start; {STEPS} steps, hidden {HIDDEN}",
        "| model | call | batch | implementation | ms | x eager | max abs vs eager | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    start = time.perf_counter()
    for label, extra in (("x -> y (format 1)", 0), ("x, u -> y (format 2)", 2)):
        module = make(extra)
        model = runtime.load(export(module, Path(scratch.name) / f"forecaster{extra}", extra), threads=1)
        for batch in (int(b) for b in args.batches.split(",")):
            best, results = measure(cases(model, module, batch, extra), args.rounds)
            lines += table_rows(label, batch, best, results)
            print("\n".join(lines[-len(best) :]), flush=True)
    lines.append(
        f"(timing {time.perf_counter() - start:.0f} s, best of {args.rounds} interleaved rounds; "
        f"load average {os.getloadavg()[0]:.2f} at the end)"
    )
    print(lines[-1])
    scratch.cleanup()
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

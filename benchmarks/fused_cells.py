"""Benchmarks fused GRU/LSTM loop candidates against the runtime's step loop and eager PyTorch, in one run.

For the built-in ``gru`` and ``lstm`` cells (hidden 16 and 100), batch 1 and 64, 100 and 1000
steps: ``generate`` (closed loop) and ``predict`` (teacher-forced), each implementation timed in
interleaved rounds, best time kept, so the ratios come from the same minutes of one machine.

- eager: the torch step module in a Python loop (`rnn.eager`), torch on 1 thread
- step loop: ``runtime.load(folder).predict/generate(form="step")``, one onnxruntime run per step
- the candidates of `export.fused_cells`, each a raw ``session.run`` of one model (session options
  as the runtime's: 1 intra-op thread, no constant folding)
- runtime auto: ``runtime.load(folder).predict/generate`` with the form `choose_form` picks

Usage: ``.venv/bin/python benchmarks/fused_cells.py [--rounds 5] [--hidden-sizes 16,100]
[--batches 1,64] [--steps 100,1000]``; prints a table of us per step (whole batch) and times
faster than the step loop.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import runtime  # noqa: E402
from export import export_folder  # noqa: E402
from export.fused_cells import (  # noqa: E402
    CellWeights,
    rollout_loop,
    rollout_native,
    rollout_native_loop,
    sequence_native,
)
from rnn.checkpoint import load_checkpoint  # noqa: E402
from rnn.config import TrainConfig  # noqa: E402
from rnn.eager import generate_eager, predict_eager  # noqa: E402
from rnn.train import train_folder  # noqa: E402
from runtime.fused import choose_form  # noqa: E402
from runtime.sessions import create_session  # noqa: E402  (the runtime's own session factory)

KINDS = ("gru", "lstm")
HIDDEN_SIZES = (16, 100)
BATCHES = (1, 64)
STEPS = (100, 1000)
OPSET = 17
GENERATE_CANDIDATES = {
    "rollout_loop (Loop, folded, 10/iter)": rollout_loop,
    "rollout_rnn (native LSTM, folded)": rollout_native,
    "native kernel in a Loop (1/iter)": rollout_native_loop,
}
PREDICT_CANDIDATES = {"sequence_rnn (native GRU/LSTM)": sequence_native}


def _session(model) -> ort.InferenceSession:
    """Made as the runtime makes its sessions (one thread, no constant folding)."""
    return create_session(model.SerializeToString(), {}, "a candidate", "cpu", 1)


def _best(calls: dict, rounds: int) -> dict[str, float]:
    for call in calls.values():  # warm up: sessions of fused forms are made on first use
        call()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _calls(module, model, generate: dict, predict: dict, batch: int, steps: int) -> dict[str, dict]:
    """{"generate": {implementation: call}, "predict": {...}} for one configuration."""
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, (steps, batch, module.input_size)).astype(np.float32)
    state = [np.zeros((batch, model.state_sizes[0]), np.float32) for _ in model.state_names]
    feed_state = dict(zip(model.state_names, state))
    torch_xs, torch_state = torch.from_numpy(xs), [torch.from_numpy(s) for s in state]
    count = np.array([steps], np.int64)
    auto = {
        call: choose_form(call, batch, steps, model.forms, module.kind, model.state_sizes[0])
        for call in ("generate", "predict")
    }
    return {
        "generate": {
            "eager": partial(generate_eager, module, torch_xs[0], steps, torch_state),
            "step loop": partial(model.generate, xs[0], steps, state, form="step"),
            **{name: partial(s.run, None, {"x0": xs[0], **feed_state, "steps": count}) for name, s in generate.items()},
            f"runtime auto ({auto['generate']})": partial(model.generate, xs[0], steps, state),
        },
        "predict": {
            "eager": partial(predict_eager, module, torch_xs, torch_state),
            "step loop": partial(model.predict, xs, state, form="step"),
            **{name: partial(s.run, None, {"xs": xs, **feed_state}) for name, s in predict.items()},
            f"runtime auto ({auto['predict']})": partial(model.predict, xs, state),
        },
    }


def _folder(kind: str, hidden: int, root: Path) -> Path:
    folder = root / f"{kind}{hidden}"
    train_folder(TrainConfig(cell=kind, hidden_size=hidden, epochs=1, seed=0), folder)
    export_folder(folder)
    return folder


def bench(rounds: int, hidden_sizes=HIDDEN_SIZES, batches=BATCHES, steps_list=STEPS) -> list[tuple]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            for hidden in hidden_sizes:
                folder = _folder(kind, hidden, Path(tmp))
                module = load_checkpoint(folder).model.eval()
                model = runtime.load(folder)
                weights = CellWeights.from_module(module)
                generate = {
                    name: _session(build(weights, OPSET, {}))
                    for name, build in GENERATE_CANDIDATES.items()
                    if kind == "lstm" or build is not rollout_native
                }
                predict = {name: _session(build(weights, OPSET, {})) for name, build in PREDICT_CANDIDATES.items()}
                for batch in batches:
                    for steps in steps_list:
                        for call, calls in _calls(module, model, generate, predict, batch, steps).items():
                            best = _best(calls, rounds)
                            for name, seconds in best.items():
                                us = seconds / steps * 1e6
                                rows.append((kind, hidden, batch, steps, call, name, us, best["step loop"] / seconds))
                            print(f"  {kind} H={hidden} B={batch} T={steps} {call} done", file=sys.stderr)
    return rows


def table(rows: list[tuple]) -> str:
    lines = [
        "| cell | H | B | T | call | implementation | us/step | x step loop |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, hidden, batch, steps, call, name, us, ratio in rows:
        mark = "**" if ratio >= 1.5 and name not in ("eager", "step loop") else ""  # a clear win
        lines.append(
            f"| {kind} | {hidden} | {batch} | {steps} | {call} | {name} | {us:.2f} | {mark}{ratio:.2f}x{mark} |"
        )
    return "\n".join(lines)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each keeps its best time")
    parser.add_argument("--hidden-sizes", type=_ints, default=HIDDEN_SIZES, help="comma-separated")
    parser.add_argument("--batches", type=_ints, default=BATCHES, help="comma-separated")
    parser.add_argument("--steps", type=_ints, default=STEPS, help="comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = bench(args.rounds, args.hidden_sizes, args.batches, args.steps)
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__} (1 thread), "
        f"onnxruntime {ort.__version__}, {args.rounds} rounds"
    )
    print(table(rows))


if __name__ == "__main__":
    main()

"""One call at batch 1, for several signatures: the runtime's ``model.step`` and ``Stream.push``
against a raw ``session.run`` of the same step model and against an eager PyTorch step.

Models: the seed's Elman cell (artifacts/sine-elman), a two-LSTMCell forecaster (the README's worked
example, the classic signature with four states), a character GRU (a token and a category in,
logits out, nn.GRU's (layers, batch, hidden) state) and a two-input forecaster (a value fed back, a
weekday token held, two states). Each call is timed in interleaved rounds, best round kept:

- raw: ``session.run`` of the step model's session with a prebuilt feed (no checks at all);
- step: ``model.step(x, state)`` (inputs and state checked, the bound runner, outputs checked);
- push: ``Stream.push(x)`` (one stream's inputs checked, the state kept in bound buffers);
- eager: the module's forward under ``torch.no_grad`` (one intra-op thread).

The targets (issue 21): step <= 1.3x raw, push faster than eager, for every signature.

Usage: ``.venv/bin/python benchmarks/one_call.py [--rounds 7]`` (needs the ``train`` extra).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import runtime  # noqa: E402
from benchmarks.call_overhead import best_us  # noqa: E402
from examples.forecaster.forecaster import HIDDEN, Forecaster  # noqa: E402
from export import export_module  # noqa: E402
from rnn.checkpoint import load_checkpoint  # noqa: E402
from tests.user_modules import (  # noqa: E402
    CHAR_GRU_SIGNATURE,
    TWO_INPUTS_SIGNATURE,
    make_char_gru,
    make_two_inputs,
)

CALL_BUDGET = 0.1  # seconds of calls per round and implementation


def cases(root: Path) -> list[tuple[str, Path, torch.nn.Module, dict, dict]]:
    """(name, folder, eager module, one step's inputs at batch 1 by name, one stream's inputs)."""
    torch.manual_seed(0)
    forecaster = Forecaster().eval()
    states = [(name, HIDDEN) for name in ("h1", "c1", "h2", "c2")]
    export_module(forecaster, root / "forecaster", states=states, input_size=1, output_size=1)
    char = make_char_gru().eval()
    export_module(char, root / "char", **CHAR_GRU_SIGNATURE)
    two = make_two_inputs().eval()
    export_module(two, root / "two", **TWO_INPUTS_SIGNATURE)
    elman = load_checkpoint(ROOT / "artifacts" / "sine-elman").model.eval()
    one = np.array([[0.5]], np.float32)
    category = np.array([[1.0, 0.0, 0.0]], np.float32)
    return [
        ("elman (seed)", ROOT / "artifacts" / "sine-elman", elman, {"x": one}, {"x": 0.5}),
        ("forecaster (2 LSTMCell)", root / "forecaster", forecaster, {"x": one}, {"x": 0.5}),
        (
            "char GRU (token+category)",
            root / "char",
            char,
            {"token": np.array([3]), "category": category},
            {"token": 3, "category": category[0]},
        ),
        ("two inputs (value+day)", root / "two", two, {"value": one, "day": np.array([2])}, {"value": 0.5, "day": 2}),
    ]


def measure(name: str, folder: Path, module: torch.nn.Module, x: dict, one: dict, rounds: int) -> list[str]:
    model = runtime.load(folder)
    state = model.initial_state(1)
    session = model.step_session
    feed = {**x, **dict(zip(model.state_names, state))}
    fetch = [*model.output_names, *model.state_outputs]
    stream = runtime.Stream(model)
    given = x if len(x) > 1 else next(iter(x.values()))
    push_input = one if len(one) > 1 else next(iter(one.values()))
    eager_inputs = [torch.from_numpy(value) for value in x.values()]
    eager_state = [torch.from_numpy(s.copy()) for s in state]

    def eager() -> None:
        with torch.no_grad():
            module(*eager_inputs, *eager_state)

    times = best_us(
        {
            "raw": lambda: session.run(fetch, feed),
            "step": lambda: model.step(given, state),
            "push": lambda: stream.push(push_input),
            "eager": eager,
        },
        rounds,
        budget=CALL_BUDGET,
        min_repeats=50,
    )
    return [
        f"| {name} | {times['raw']:.1f} | {times['step']:.1f} | {times['step'] / times['raw']:.2f}x | "
        f"{times['push']:.1f} | {times['eager']:.1f} | {times['eager'] / times['push']:.2f}x |"
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(
        f"# one call at batch 1 ({platform.processor() or platform.machine()}, {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__})"
    )
    print("| model | raw session.run us | model.step us | step / raw | Stream.push us | eager step us | eager / push |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases(Path(tmp)):
            for line in measure(*case, args.rounds):
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-call overhead of the runtime's fused calls against a raw ``session.run`` of the same model.

For each folder, ``generate`` and ``predict`` at batch 1 and 64 and T = 10, 100, 1000: the form
`choose_form` picks, run (a) as a raw ``onnxruntime.InferenceSession.run`` of that form's session
with a prebuilt feed (no checks), (b) as ``runtime.load(folder).generate(x0, T)`` /
``.predict(xs)`` (input checks, memory bound, form choice, run_timeout guard, output checks).
Both are timed in interleaved rounds, best round kept; the table gives us per call, the
overhead (runtime - raw) and the ratio runtime / raw. A call that picks the step loop is skipped
(there is no single raw run to compare with).

Usage: ``.venv/bin/python benchmarks/call_overhead.py [--rounds 7] [--lstm] [FOLDER ...]``
(default folder: artifacts/sine-elman; ``--lstm`` also exports a 1-epoch LSTM (hidden 16) to a
temporary folder, which needs the ``train`` extra).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import runtime  # noqa: E402
from runtime.fused import STEP, choose_form  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (1, 64)
STEPS = (10, 100, 1000)
CALL_BUDGET = 0.15  # seconds of calls per round and implementation


def _lstm_folder(root: Path) -> Path:
    from export import export_folder
    from rnn.config import TrainConfig
    from rnn.train import train_folder

    folder = root / "lstm16"
    train_folder(TrainConfig(cell="lstm", hidden_size=16, epochs=1, seed=0), folder)
    export_folder(folder)
    return folder


def best_us(calls: dict, rounds: int, budget: float = CALL_BUDGET, min_repeats: int = 20) -> dict[str, float]:
    """us per call of each callable, best of ``rounds`` interleaved rounds of about ``budget`` seconds."""
    for call in calls.values():
        call()
    start = time.perf_counter()
    next(iter(calls.values()))()
    repeats = max(min_repeats, int(budget / max(time.perf_counter() - start, 1e-7)))
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(repeats):
                call()
            best[name] = min(best[name], (time.perf_counter() - start) / repeats * 1e6)
    return best


def bench(folders: list[Path], rounds: int) -> list[tuple]:
    rows = []
    rng = np.random.default_rng(0)
    for folder in folders:
        model = runtime.load(folder)
        for kind in ("generate", "predict"):
            for batch in BATCHES:
                for steps in STEPS:
                    form = choose_form(
                        kind, batch, steps, model.forms, str(model.manifest.model.get("kind", "")),
                        max(model.state_sizes, default=0),
                    )  # fmt: skip
                    if form == STEP:
                        continue
                    _, _, inputs, outputs = model.fused(form)  # the form's session and its io names
                    state = model.initial_state(batch)
                    if kind == "generate":
                        first = rng.uniform(-1, 1, (batch, model.input_size)).astype(np.float32)
                        feed = dict(zip(inputs, (first, *state)))
                        feed["steps"] = np.array([steps], dtype=np.int64)

                        def call(model=model, first=first, steps=steps):
                            return model.generate(first, steps)
                    else:
                        first = rng.uniform(-1, 1, (steps, batch, model.input_size)).astype(np.float32)
                        feed = dict(zip(inputs, (first, *state)))

                        def call(model=model, first=first):
                            return model.predict(first)

                    call()  # creates the form's session
                    session = model.session(form)  # the runtime's own session: same options

                    def raw(session=session, outputs=outputs, feed=feed):
                        return session.run(outputs, feed)

                    # the same bits either way
                    assert all(np.array_equal(a, b) for a, b in zip(raw(), (call()[0], *call()[1])))
                    best = best_us({"raw": raw, "runtime": call}, rounds)
                    rows.append((folder.name, kind, batch, steps, form, best["raw"], best["runtime"]))
    return rows


def table(rows: list[tuple]) -> str:
    lines = [
        f"{'folder':<12} {'call':<9} {'B':>3} {'T':>5} {'form':<14} {'raw us':>9} {'runtime us':>11} "
        f"{'overhead us':>12} {'ratio':>6}"
    ]
    for folder, kind, batch, steps, form, raw, call in rows:
        lines.append(
            f"{folder:<12} {kind:<9} {batch:>3} {steps:>5} {form:<14} {raw:>9.1f} {call:>11.1f} "
            f"{call - raw:>12.1f} {call / raw:>6.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, default=[ROOT / "artifacts" / "sine-elman"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--lstm", action="store_true", help="also a temporary 1-epoch LSTM folder (train extra)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folders = list(args.folders) + ([_lstm_folder(Path(scratch))] if args.lstm else [])
        rows = bench(folders, args.rounds)
    print(f"{platform.processor() or platform.machine()}, {platform.python_version()}, rounds={args.rounds}")
    print(table(rows))


if __name__ == "__main__":
    main()

"""A worked example: a two-layer LSTM forecaster as people write it (two LSTMCells and a linear
head, one state tensor per layer and kind), trained on a noisy sine until its closed loop holds,
exported with the toolkit, verified against eager PyTorch on its own data, and run closed-loop
by the torch-free runtime: its forecast and its error against the true sine.

    python examples/forecaster/forecaster.py --out out/forecaster [--epochs 200] [--horizon 100]

The module is the user's; the toolkit needs only its step signature, forward(x, *states) ->
(y, *states), and the state names and sizes (h1, c1, h2, c2 here).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

HIDDEN = 24
POINTS = 400  # the noisy sine: 8 periods, ~50 points a period
WARMUP = 20  # teacher-forced steps that open each training window
KNOWN = 200  # the forecast: the states warmed up on the first KNOWN points, then the closed loop


class Forecaster(nn.Module):
    """Two stacked LSTM cells and a linear readout: one step of a one-value series."""

    def __init__(self, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.layer1 = nn.LSTMCell(1, hidden)
        self.layer2 = nn.LSTMCell(hidden, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x, h1, c1, h2, c2):  # x (batch, 1), every state (batch, hidden)
        h1, c1 = self.layer1(x, (h1, c1))
        h2, c2 = self.layer2(h1, (h2, c2))
        return self.head(h2), h1, c1, h2, c2


def make() -> Forecaster:
    """The factory verification rebuilds the module with (weights come from the folder)."""
    return Forecaster()


def times(points: int = POINTS) -> np.ndarray:
    """The time of each point of `series` (float64)."""
    return np.linspace(0, 16 * math.pi, points)


def series(points: int = POINTS, seed: int = 0) -> np.ndarray:
    """A noisy sine, float32 (points,)."""
    noise = np.random.default_rng(seed).normal(0, 0.02, points)
    return (np.sin(times(points)) + noise).astype(np.float32)


def train(module: Forecaster, data: np.ndarray, epochs: int, free_run: int = 60, seed: int = 0) -> list[float]:
    """Trains the closed loop, as the toolkit's bptt trainer does: each window opens with
    ``WARMUP`` teacher-forced steps, then the module runs on its own outputs and the loss is
    the distance to the data there (a curriculum from 5 to ``free_run`` steps over the epochs),
    with Adam, cosine decay and gradient clipping. A model trained only one step ahead fits the
    data and drifts off it once its outputs are fed back. Returns the loss of each epoch."""
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(module.parameters(), lr=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs, eta_min=0.0005)
    length = WARMUP + free_run + 1
    windows = torch.from_numpy(np.stack([data[i : i + length] for i in range(0, len(data) - length + 1, 4)]))
    losses = []
    for epoch in range(epochs):
        free = round(5 + (free_run - 5) * epoch / max(epochs - 1, 1)) if free_run > 5 else free_run
        states = [torch.zeros(len(windows), HIDDEN) for _ in range(4)]
        warm = []
        for t in range(WARMUP):
            y, *states = module(windows[:, t : t + 1], *states)
            warm.append(y[:, 0])
        x, run = windows[:, WARMUP : WARMUP + 1], []
        for _ in range(free):
            x, *states = module(x, *states)
            run.append(x[:, 0])
        loss = ((torch.stack(warm, 1) - windows[:, 1 : WARMUP + 1]) ** 2).mean()
        loss = loss + ((torch.stack(run, 1) - windows[:, WARMUP + 1 : WARMUP + 1 + free]) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return losses


def forecast(model, data: np.ndarray, horizon: int) -> np.ndarray:
    """The runtime ``model``'s forecast of the ``horizon`` points after ``data[:KNOWN]``: its four
    states warmed up teacher-forced on ``data[:KNOWN - 1]``, then the closed loop from the
    last known point (each output fed back). float32 (horizon,)."""
    _, state = model.predict(data[: KNOWN - 1].reshape(-1, 1, 1))
    future, _ = model.generate(data[KNOWN - 1 : KNOWN].reshape(1, 1), horizon, state)
    return future.reshape(-1)


def truth(horizon: int) -> np.ndarray:
    """The noise-free sine at the forecast's times."""
    t = times()
    return np.sin(t[KNOWN - 1] + (t[1] - t[0]) * np.arange(1, horizon + 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/forecaster"))
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--free-run", type=int, default=60, help="closed-loop steps of the last training windows")
    parser.add_argument("--horizon", type=int, default=100, help="steps to forecast")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    import runtime
    from export import export_module, verify_folder

    data = series()
    torch.manual_seed(0)  # the initial weights: a rerun gives the same folder
    module = make()
    losses = train(module, data, args.epochs, args.free_run)
    print(f"trained: loss {losses[0]:.4f} -> {losses[-1]:.4f}", file=sys.stderr)
    states = [(name, HIDDEN) for name in ("h1", "c1", "h2", "c2")]
    folder = export_module(module, args.out, input_size=1, output_size=1, states=states)
    report = verify_folder(folder, factory=make, inputs=data[:KNOWN], trust=True)  # its own data too
    print(f"verified: {'passed' if report.passed else 'FAILED'} ({folder / 'verify.json'})", file=sys.stderr)

    model = runtime.load(folder)  # numpy + onnxruntime only from here
    future, true = forecast(model, data, args.horizon), truth(args.horizon)
    error = np.abs(future - true)
    print(
        f"forecast: {args.horizon} steps closed loop after {KNOWN} known points; against the true sine "
        f"max error {error.max():.3f}, RMS {np.sqrt(np.mean(error**2)):.3f}",
        file=sys.stderr,
    )
    print("step,y,truth")
    for t, (y, want) in enumerate(zip(future, true), start=1):
        print(f"{t},{y:.6f},{want:.6f}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""A worked example: a two-layer LSTM forecaster as people write it (two LSTMCells and a linear
head, one state tensor per layer and kind), trained on a noisy sine, exported with the toolkit,
verified against eager PyTorch on its own data, and run closed-loop by the torch-free runtime.

    python examples/forecaster/forecaster.py --out out/forecaster [--epochs 60]

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


def series(points: int = 400, seed: int = 0) -> np.ndarray:
    """A noisy sine, float32 (points,)."""
    t = np.linspace(0, 16 * math.pi, points)
    noise = np.random.default_rng(seed).normal(0, 0.02, points)
    return (np.sin(t) + noise).astype(np.float32)


def train(module: Forecaster, data: np.ndarray, epochs: int, seed: int = 0) -> list[float]:
    """Teacher-forced next-value training over windows of 40 steps; the losses per epoch."""
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(module.parameters(), lr=0.01)
    windows = torch.from_numpy(np.stack([data[i : i + 41] for i in range(0, len(data) - 41, 8)]))  # (n, 41)
    losses = []
    for _ in range(epochs):
        states = [torch.zeros(len(windows), HIDDEN) for _ in range(4)]
        loss = torch.zeros(())
        for t in range(40):
            y, *states = module(windows[:, t : t + 1], *states)
            loss = loss + ((y[:, 0] - windows[:, t + 1]) ** 2).mean()
        optimiser.zero_grad()
        (loss / 40).backward()
        optimiser.step()
        losses.append(float(loss.detach()) / 40)
    return losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/forecaster"))
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    import runtime
    from export import export_module, verify_folder

    data = series()
    torch.manual_seed(0)  # the initial weights: a rerun gives the same folder
    module = make()
    losses = train(module, data, args.epochs)
    print(f"trained: loss {losses[0]:.4f} -> {losses[-1]:.4f}", file=sys.stderr)
    states = [(name, HIDDEN) for name in ("h1", "c1", "h2", "c2")]
    folder = export_module(module, args.out, input_size=1, output_size=1, states=states)
    report = verify_folder(folder, factory=make, inputs=data[:200], trust=True)  # its own data too
    print(f"verified: {'passed' if report.passed else 'FAILED'} ({folder / 'verify.json'})", file=sys.stderr)

    model = runtime.load(folder)  # numpy + onnxruntime only from here
    _, state = model.predict(data[:200].reshape(200, 1, 1))  # warm the four states up on the data
    future, _ = model.generate(data[199:200].reshape(1, 1), 100, state)  # then 100 steps closed loop
    print("step,y")
    for t, y in enumerate(future.reshape(-1), start=1):
        print(f"{t},{y:.6f}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())

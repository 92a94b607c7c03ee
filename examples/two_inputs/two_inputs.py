"""A worked example: a model with two inputs, a value and a token. One LSTM cell learns two
waveforms (a sine and a triangle wave of the same period); the token `wave` says which to draw.
Generation feeds the predicted value back as the next `value` and holds `wave` for every step,
so one exported model draws either wave. Sequences are batch-first, as the training code has
them (batch, steps).

    python examples/two_inputs/two_inputs.py --out out/two_inputs [--epochs 150]

The module is the user's; the toolkit needs its step signature, forward(value, wave, h, c) ->
(next_value, h, c), described as inputs/outputs/states, and which output feeds which input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

HIDDEN = 32
WAVES = ("sine", "triangle")
PERIOD = 25  # steps per period


class TwoInputWave(nn.Module):
    """One step of a conditioned generator: the wave's id is embedded and added to the cell's input."""

    def __init__(self) -> None:
        super().__init__()
        self.wave = nn.Embedding(len(WAVES), 8)
        self.cell = nn.LSTMCell(1 + 8, HIDDEN)
        self.head = nn.Linear(HIDDEN, 1)

    def forward(self, value, wave, h, c):  # value (batch, 1), wave (batch,) int64, h and c (batch, hidden)
        h, c = self.cell(torch.cat([value, self.wave(wave)], dim=1), (h, c))
        return self.head(h), h, c


def make() -> TwoInputWave:
    """The factory verification rebuilds the module with (weights come from the folder)."""
    return TwoInputWave()


def waves(points: int, phase: float = 0.0) -> np.ndarray:
    """(2, points) float32: the sine and the triangle wave of period PERIOD, from ``phase``."""
    t = (np.arange(points) + phase) / PERIOD
    sine = np.sin(2 * np.pi * t)
    triangle = 2 * np.abs(2 * (t - np.floor(t + 0.5))) - 1
    return np.stack([sine, triangle]).astype(np.float32)


def batch(rng: np.random.Generator, size: int = 32, steps: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """Random phases of both waves: values (batch, steps + 1) and wave ids (batch,), batch-first."""
    phases = rng.uniform(0, PERIOD, size // 2)
    values = np.concatenate([waves(steps + 1, p)[None] for p in phases]).reshape(-1, steps + 1)
    ids = np.tile(np.arange(len(WAVES)), len(phases))
    return torch.from_numpy(values), torch.from_numpy(ids.astype(np.int64))


def train(module: TwoInputWave, epochs: int, seed: int = 0) -> list[float]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.Adam(module.parameters(), lr=0.01)
    losses = []
    for _ in range(epochs):
        values, ids = batch(rng)
        h = c = torch.zeros(len(ids), HIDDEN)
        loss = torch.zeros(())
        for t in range(values.shape[1] - 1):
            y, h, c = module(values[:, t : t + 1], ids, h, c)
            loss = loss + ((y[:, 0] - values[:, t + 1]) ** 2).mean()
        optimiser.zero_grad()
        (loss / (values.shape[1] - 1)).backward()
        optimiser.step()
        losses.append(float(loss.detach()) / (values.shape[1] - 1))
    return losses


SIGNATURE = {
    "inputs": [("value", 1), {"name": "wave", "vocabulary": len(WAVES)}],
    "outputs": [("next_value", 1)],
    "states": [("h", HIDDEN), ("c", HIDDEN)],
    "feedback": {"output": "next_value", "input": "value"},  # `wave` is held
    "layout": "batch_first",  # sequences are (batch, steps, ...) for this model's users
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/two_inputs"))
    parser.add_argument("--epochs", type=int, default=150)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    import runtime
    from export import export_module, verify_folder

    torch.manual_seed(0)
    module = make()
    losses = train(module, args.epochs)
    print(f"trained: loss {losses[0]:.4f} -> {losses[-1]:.4f}", file=sys.stderr)
    folder = export_module(module, args.out, **SIGNATURE)
    warmup = waves(50)  # (2, 50): one stream per wave, batch-first
    data = {"value": warmup[:, :, None], "wave": np.tile(np.arange(len(WAVES)), (50, 1)).T}
    report = verify_folder(folder, factory=make, inputs=data, trust=True)  # its own data too
    print(f"verified: {'passed' if report.passed else 'FAILED'} ({folder / 'verify.json'})", file=sys.stderr)

    model = runtime.load(folder)  # numpy + onnxruntime only from here
    _, state = model.predict({"value": data["value"][:, :-1], "wave": data["wave"][:, :-1]})
    start = {"value": data["value"][:, -1], "wave": np.arange(len(WAVES))}
    future, _ = model.generate(start, 75, state)  # (batch, steps, 1): both waves, three periods
    print("step," + ",".join(WAVES))
    for t in range(future.shape[1]):
        print(f"{t + 1}," + ",".join(f"{future[b, t, 0]:.6f}" for b in range(len(WAVES))))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())

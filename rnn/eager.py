"""Eager PyTorch loops over a step module (teacher-forced and closed-loop), and a numpy front.

These are the reference every exported form is compared with (`export.verify`), the outputs of
the self-check data (`export.test_data`) and the baseline of `rnn bench`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

StepFunction = Callable[..., Sequence[torch.Tensor]]  # step(x, *state) -> (y, *state)


def predict_eager(step: StepFunction, xs: torch.Tensor, state: Sequence[torch.Tensor]):
    """Teacher-forced loop: ``xs`` (steps, batch, n_in) -> outputs (steps, batch, n_out), final state."""
    state = tuple(state)
    ys = []
    with torch.no_grad():
        for x in xs:
            y, *state = step(x, *state)
            ys.append(y)
    return torch.stack(ys), tuple(state)


def generate_eager(step: StepFunction, x0: torch.Tensor, steps: int, state: Sequence[torch.Tensor]):
    """Closed loop: each output is the next input. Returns (steps, batch, n_out), final state."""
    state = tuple(state)
    x = x0
    ys = []
    with torch.no_grad():
        for _ in range(steps):
            x, *state = step(x, *state)
            ys.append(x)
    return torch.stack(ys), tuple(state)


class NumpyStep:
    """A torch step callable (eager or TorchScript) behind numpy arrays: numpy in, numpy out.

    ``dtype`` is the precision the step runs in (float64 for the reference of the divergence
    horizon); outputs come back in that precision.
    """

    def __init__(self, step: StepFunction, dtype: torch.dtype = torch.float32) -> None:
        self.step = step
        self.dtype = dtype

    def _tensor(self, array) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), dtype=self.dtype)

    def _state(self, state) -> tuple[torch.Tensor, ...]:
        return tuple(self._tensor(s) for s in state)

    @staticmethod
    def _numpy(y: torch.Tensor, state) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        return y.detach().numpy(), tuple(s.detach().numpy() for s in state)

    def step_once(self, x, state) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """One step: (y (batch, n_out), new state)."""
        with torch.no_grad():
            y, *new_state = self.step(self._tensor(x), *self._state(state))
        return self._numpy(y, new_state)

    def predict(self, xs, state) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Teacher-forced over ``xs`` (steps, batch, n_in)."""
        return self._numpy(*predict_eager(self.step, self._tensor(xs), self._state(state)))

    def generate(self, x0, steps: int, state) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Closed loop from ``x0`` (batch, n_in) for ``steps`` steps."""
        return self._numpy(*generate_eager(self.step, self._tensor(x0), steps, self._state(state)))


@dataclass(frozen=True)
class SeriesRun:
    """A model over a one-column series: teacher-forced predictions, then a closed-loop rollout
    continuing from the series' last point (float64 numpy, one value per step)."""

    predictions: np.ndarray  # (len(series) - 1,): the prediction for each next point
    rollout: np.ndarray  # (rollout_steps,): the steps past the series


def run_series(
    step: StepFunction, initial: Sequence[torch.Tensor], series: np.ndarray, rollout_steps: int
) -> SeriesRun:
    """Feeds ``series[:-1]`` teacher-forced from ``initial``, then runs ``rollout_steps`` steps
    on the model's own outputs from ``series[-1]``: what the training metrics and the
    prediction plot show."""
    xs = torch.tensor(series[:-1], dtype=torch.float32).reshape(-1, 1, 1)
    predictions, state = predict_eager(step, xs, initial)
    x0 = torch.tensor([[series[-1]]], dtype=torch.float32)
    rollout, _ = generate_eager(step, x0, rollout_steps, state)
    return SeriesRun(predictions.reshape(-1).double().numpy(), rollout.reshape(-1).double().numpy())

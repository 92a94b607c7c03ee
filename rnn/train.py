"""Trains the built-in step modules (Elman, GRU, LSTM): the tutorial's trainer and a BPTT trainer."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from runtime.errors import InputValueError

from .checkpoint import save_checkpoint
from .config import TRAIN_DATA_NAME, TRAINER_DEFAULTS, Config, TrainConfig, training_series
from .data import pairs
from .eager import run_series
from .folders import prepare_output, replacing_folder
from .model import build_model

# The closed-loop figure of a trained model (metrics, prediction plot): steps past the data.
EVAL_ROLLOUT_STEPS = 100

Progress = Callable[[int, float], None]  # called with (epoch, total loss of that epoch)


@dataclass
class TrainResult:
    model: torch.nn.Module
    config: TrainConfig
    loss_history: list[float]  # total loss of each epoch (reference) or iteration (bptt)
    metrics: dict[str, float] = field(default_factory=dict)
    series: np.ndarray | None = None  # the user's series it was trained on (None: the sine)

    def checkpoint_config(self) -> Config:
        """What config.json records of this run."""
        return Config(self.config.model_config(), self.config, tuple(self.loss_history), dict(self.metrics))


def train(config: TrainConfig, progress: Progress | None = None) -> TrainResult:
    """Trains with ``config.trainer`` on ``config.data`` (default: the reference sine)."""
    config = config.resolved()
    series = training_series(config, recorded=False)
    if config.trainer == "reference":
        model, history = train_reference(config, series.values, progress)
    else:
        model, history = train_bptt(
            config, series.values, progress, sine_times=series.times if series.is_sine else None
        )
    model.eval()
    metrics = evaluate(model, series.times, series.values, series.is_sine)
    return TrainResult(model, config, history, metrics, None if series.is_sine else series.values)


def train_folder(config: TrainConfig, out: str | os.PathLike, progress: Progress | None = None) -> TrainResult:
    """Trains and writes ``weights.pt`` and ``config.json`` as a new folder ``out``.

    A user's series (``config.data``) is copied into the folder as ``TRAIN_DATA_NAME`` and
    config.json records that name: a folder reads its training data only from inside itself
    (`rnn.config.training_series`), so it stays usable wherever it is moved.

    An existing ``out`` is replaced whole (atomically) if it is empty or an earlier trained or
    artifact folder; any other folder is refused.
    """
    out = Path(out)
    prepare_output(out)  # fail before training, not after
    result = train(config, progress)
    record = result.checkpoint_config()
    with replacing_folder(out) as staging:
        if result.series is not None:
            np.save(staging / TRAIN_DATA_NAME, result.series, allow_pickle=False)
            record = replace(record, train=replace(record.train, data=TRAIN_DATA_NAME))
        save_checkpoint(result.model, record, staging)
    return result


def stable_counterpart(config: TrainConfig) -> TrainConfig:
    """The ``bptt`` run beside a ``reference`` run (what `rnn demo` draws next to the seed's
    picture): the same cell, sizes, seed and data, bptt's own learning rate, and its iterations
    scaled with the epochs as the two defaults are (300 epochs -> 1500 iterations)."""
    config = config.resolved()
    scale = TRAINER_DEFAULTS["bptt"]["epochs"] / TRAINER_DEFAULTS["reference"]["epochs"]
    return replace(config, trainer="bptt", lr=None, epochs=max(1, round(config.epochs * scale))).resolved()


def _new_model(config: TrainConfig) -> torch.nn.Module:
    torch.manual_seed(config.seed)
    return build_model(config.model_config())


def train_reference(config: TrainConfig, series: np.ndarray, progress: Progress | None = None):
    """The tutorial's trainer: one data point at a time, plain SGD, context detached each step.

    For the Elman cell this is the tutorial exactly (w1 then w2 updated after every point); the
    GRU and LSTM cells get the same procedure over all their parameters.
    """
    model = _new_model(config)
    inputs, targets = pairs(series)
    x = torch.tensor(inputs, dtype=torch.float32).reshape(-1, 1)  # (seq_length, 1)
    y = torch.tensor(targets, dtype=torch.float32).reshape(-1, 1)
    history = []
    for epoch in range(config.epochs):
        total_loss = 0.0
        context = model.initial_state(1)
        for j in range(x.shape[0]):
            pred, *context = model(x[j : j + 1], *context)
            loss = (pred - y[j : j + 1]).pow(2).sum() / 2
            total_loss += loss.item()
            loss.backward()
            with torch.no_grad():
                for weight in model.parameters():
                    weight -= config.lr * weight.grad
                    weight.grad.zero_()
            context = [c.detach() for c in context]
        _check_finite(total_loss, epoch, config)
        history.append(total_loss)
        if progress is not None:
            progress(epoch, total_loss)
    return model, history


def _check_finite(loss: float, epoch: int, config: TrainConfig) -> None:
    """Training that diverged stops with a typed error instead of saving NaN weights."""
    if not math.isfinite(loss):
        raise InputValueError(
            f"training diverged: the loss became {loss} in epoch {epoch + 1} with learning rate {config.lr:g}; "
            "use a smaller --lr"
        )


# The BPTT trainer learns from many windows of a long sine of the same time step, each made
# of a teacher-forced warm-up followed by a free-running (closed-loop) stretch.
BPTT_BATCH = 32
BPTT_WARMUP = 20
BPTT_FREE_RUN = (10, 100)  # closed-loop steps, growing linearly over training (a curriculum)
BPTT_CLIP = 1.0


def train_bptt(
    config: TrainConfig,
    series: np.ndarray,
    progress: Progress | None = None,
    sine_times: np.ndarray | None = None,
):
    """Adam and backpropagation through whole windows, with closed-loop loss.

    Each iteration draws ``BPTT_BATCH`` windows of a sine with the reference's time step at
    random phases (when ``sine_times`` says the series is the sine), feeds the first
    ``BPTT_WARMUP`` points teacher-forced, then lets the model run on its own outputs and
    penalises the distance to the true continuation. The reference series itself is always the
    first window's warm-up, and its teacher-forced error counts again on its own, so the
    one-step fit to the data is not traded for the rollout. For a user's series, windows are
    drawn from the series itself.
    """
    model = _new_model(config)
    generator = np.random.default_rng(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr / 20)
    sample = _window_sampler(series, sine_times, generator)
    history = []
    for epoch in range(config.epochs):
        fraction = epoch / max(config.epochs - 1, 1)
        free_run = int(round(BPTT_FREE_RUN[0] + fraction * (BPTT_FREE_RUN[1] - BPTT_FREE_RUN[0])))
        windows = sample(BPTT_WARMUP + free_run + 1)  # (length, batch)
        xs = torch.tensor(windows, dtype=torch.float32).unsqueeze(-1)  # (length, batch, 1)
        state = model.initial_state(xs.shape[1])
        warm_preds = []
        for t in range(BPTT_WARMUP):
            y, *state = model(xs[t], *state)
            warm_preds.append(y)
        warm_errors = (torch.stack(warm_preds) - xs[1 : BPTT_WARMUP + 1]).pow(2)  # (warmup, batch, 1)
        warm_loss = warm_errors.mean() + warm_errors[:, 0].mean()  # column 0 is the reference series
        x = xs[BPTT_WARMUP]
        free_preds = []
        for _ in range(free_run):
            x, *state = model(x, *state)
            free_preds.append(x)
        free_loss = (torch.stack(free_preds) - xs[BPTT_WARMUP + 1 :]).pow(2).mean()
        loss = warm_loss + free_loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), BPTT_CLIP)
        optimizer.step()
        schedule.step()
        _check_finite(loss.item(), epoch, config)
        history.append(loss.item())
        if progress is not None:
            progress(epoch, loss.item())
    return model, history


def _window_sampler(
    series: np.ndarray, times: np.ndarray | None, generator: np.random.Generator
) -> Callable[[int], np.ndarray]:
    """Returns ``sample(length) -> (length, BPTT_BATCH)`` windows to train on."""
    if times is not None:
        dt = times[1] - times[0]

        def sample_sine(length: int) -> np.ndarray:
            starts = np.concatenate([[times[0]], generator.uniform(0, 2 * np.pi, BPTT_BATCH - 1)])
            return np.sin(starts[None, :] + dt * np.arange(length)[:, None])

        return sample_sine

    def sample_series(length: int) -> np.ndarray:
        length = min(length, len(series))
        starts = generator.integers(0, len(series) - length + 1, BPTT_BATCH)
        return np.stack([series[s : s + length] for s in starts], axis=1)

    return sample_series


def evaluate(model: torch.nn.Module, times: np.ndarray, series: np.ndarray, is_sine: bool) -> dict[str, float]:
    """Teacher-forced MSE on the series, and for a sine series the closed-loop error past it.

    ``rollout_max_error``: after a teacher-forced warm-up over the series, the model starts
    from the series' last point and runs ``EVAL_ROLLOUT_STEPS`` steps on its own outputs; the
    figure is the largest distance to sin(t) at those times.
    """
    run = run_series(model, model.initial_state(1), series, EVAL_ROLLOUT_STEPS)
    _, targets = pairs(series)
    metrics = {"teacher_forced_mse": float(np.mean((run.predictions - targets) ** 2))}
    if is_sine:
        dt = times[1] - times[0]
        truth = np.sin(times[-1] + dt * np.arange(1, EVAL_ROLLOUT_STEPS + 1))
        metrics["rollout_max_error"] = float(np.max(np.abs(run.rollout - truth)))
    return metrics

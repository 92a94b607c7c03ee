"""Trains the Elman step module: the reference trainer, a better BPTT trainer, and checkpoints."""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from runtime.errors import ArtifactError, InputValueError

from .config import CONFIG_NAME, WEIGHTS_NAME, read_config, training_series
from .folders import prepare_output, replacing_folder
from .data import pairs
from .model import CELLS, build_model, generate_eager, predict_eager

TRAINERS = ("reference", "bptt")
ROLLOUT_STEPS = 100  # the closed-loop figure: steps past the data, compared with sin(t)

# Defaults of each trainer; a CLI option left at None takes these.
DEFAULTS: dict[str, dict[str, Any]] = {
    "reference": {"epochs": 300, "lr": 0.1},
    "bptt": {"epochs": 1500, "lr": 0.01},
}

Progress = Callable[[int, float], None]  # called with (epoch, total loss of that epoch)


@dataclass
class TrainConfig:
    """Everything that decides a training run; saved in config.json."""

    trainer: str = "reference"
    cell: str = "elman"
    seed: int = 0
    epochs: int | None = None
    lr: float | None = None
    input_size: int = 1
    hidden_size: int = 6
    output_size: int = 1
    seq_length: int = 20
    data: str | None = None  # a user's series file; None is the reference sine

    def resolved(self) -> TrainConfig:
        """A copy with the trainer's defaults filled in and every value checked."""
        if self.trainer not in TRAINERS:
            raise InputValueError(f"trainer must be one of {list(TRAINERS)}, got {self.trainer!r}")
        if self.cell not in CELLS:
            raise InputValueError(f"cell must be one of {list(CELLS)}, got {self.cell!r}")
        defaults = DEFAULTS[self.trainer]
        config = replace(
            self,
            epochs=defaults["epochs"] if self.epochs is None else self.epochs,
            lr=defaults["lr"] if self.lr is None else self.lr,
        )
        if config.epochs < 1:
            raise InputValueError(f"epochs must be >= 1, got {config.epochs}")
        if not (config.lr > 0 and math.isfinite(config.lr)):
            raise InputValueError(f"lr must be a positive number, got {config.lr}")
        if config.hidden_size < 1:
            raise InputValueError(f"hidden_size must be >= 1, got {config.hidden_size}")
        if config.seq_length < 1:
            raise InputValueError(f"seq_length must be >= 1, got {config.seq_length}")
        return config


@dataclass
class TrainResult:
    model: torch.nn.Module
    config: TrainConfig
    loss_history: list[float]  # total loss of each epoch (reference) or iteration (bptt)
    metrics: dict[str, float] = field(default_factory=dict)


def train(config: TrainConfig, progress: Progress | None = None) -> TrainResult:
    """Trains with ``config.trainer`` on ``config.data`` (default: the reference sine)."""
    config = config.resolved()
    times, series, is_sine = training_series({"train": asdict(config)})
    if config.trainer == "reference":
        model, history = train_reference(config, series, progress)
    else:
        model, history = train_bptt(config, series, progress, sine_times=times if is_sine else None)
    model.eval()
    return TrainResult(model, config, history, evaluate(model, times, series, is_sine))


def train_folder(config: TrainConfig, out: str | os.PathLike, progress: Progress | None = None) -> TrainResult:
    """Trains and writes ``weights.pt`` and ``config.json`` as a new folder ``out``.

    An existing ``out`` is replaced whole (atomically) if it is empty or an earlier trained or
    artifact folder; any other folder is refused.
    """
    out = Path(out)
    prepare_output(out)  # fail before training, not after
    result = train(config, progress)
    with replacing_folder(out) as staging:
        save_checkpoint(result, staging)
    return result


def _new_model(config: TrainConfig) -> torch.nn.Module:
    torch.manual_seed(config.seed)
    return build_model(config.cell, config.input_size, config.hidden_size, config.output_size)


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
        history.append(total_loss)
        if progress is not None:
            progress(epoch, total_loss)
    return model, history


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
    random phases (when ``sine_times`` says the series is the sine), feeds the first ``BPTT_WARMUP`` points teacher-forced, then lets the model
    run on its own outputs and penalises the distance to the true continuation. The
    reference series itself is always the first window's warm-up, and its teacher-forced error
    counts again on its own, so the one-step fit to the data is not traded for the rollout. For a user's series, windows are drawn from the series itself.
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
    from the series' last point and runs ``ROLLOUT_STEPS`` steps on its own outputs; the
    figure is the largest distance to sin(t) at those times.
    """
    inputs, targets = pairs(series)
    xs = torch.tensor(inputs, dtype=torch.float32).reshape(-1, 1, 1)
    preds, state = predict_eager(model, xs, model.initial_state(1))
    preds = preds.reshape(-1).double().numpy()
    metrics = {"teacher_forced_mse": float(np.mean((preds - targets) ** 2))}
    if is_sine:
        dt = times[1] - times[0]
        x0 = torch.tensor([[series[-1]]], dtype=torch.float32)
        rollout, _ = generate_eager(model, x0, ROLLOUT_STEPS, state)
        truth = np.sin(times[-1] + dt * np.arange(1, ROLLOUT_STEPS + 1))
        metrics["rollout_max_error"] = float(np.max(np.abs(rollout.reshape(-1).double().numpy() - truth)))
    return metrics


def save_checkpoint(result: TrainResult, folder: str | os.PathLike) -> list[Path]:
    """Writes ``weights.pt`` (a state_dict) and ``config.json`` into an existing folder."""
    folder = Path(folder)
    weights = folder / WEIGHTS_NAME
    torch.save(result.model.state_dict(), weights)
    config = folder / CONFIG_NAME
    document = {
        "model": {"kind": result.model.kind, **result.model.sizes()},
        "train": asdict(result.config),
        "final_loss": result.loss_history[-1],
        "loss_history": result.loss_history,
        "metrics": result.metrics,
    }
    config.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return [weights, config]


def load_checkpoint(folder: str | os.PathLike, factory: Any = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuilds the model from ``weights.pt`` (weights_only) and ``config.json``.

    A built-in cell is rebuilt from its kind. A user's module (kind "custom") is built by
    ``factory`` (a callable, or "package.module:function"), which the caller must pass: the
    factory named in config.json is never imported on its own, so loading a folder runs no code.
    """
    document = read_config(folder)
    sizes = document["model"]
    if sizes["kind"] == "custom":
        if factory is None:
            raise ArtifactError(
                f"{str(folder)!r} holds a user's step module (factory {sizes.get('factory')!r} in config.json); "
                "pass its factory explicitly (rnn verify --factory package.module:function)"
            )
        model = resolve_factory(factory)()
    else:
        model = build_model(sizes["kind"], sizes["input_size"], sizes["hidden_size"], sizes["output_size"])
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise ArtifactError(f"{str(folder)!r} has no {WEIGHTS_NAME}")
    try:
        model.load_state_dict(load_weights(path))
    except (RuntimeError, TypeError, AttributeError) as error:
        raise ArtifactError(f"{path} does not fit the model in config.json: {str(error)[:300]}") from None
    model.eval()
    return model, document


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict from ``path`` with ``torch.load(weights_only=True)``: a file built to run code is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ArtifactError(f"{path} cannot be loaded as weights ({type(error).__name__}): {str(error)[:200]}") from None


def resolve_factory(factory: Any):
    """A callable from a callable or from "package.module:function" (imported from the current folder too)."""
    if callable(factory):
        return factory
    if not isinstance(factory, str) or factory.count(":") != 1:
        raise InputValueError(f"a factory is written package.module:function, got {factory!r}")
    module_name, function_name = factory.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputValueError(f"cannot import {module_name!r} for the factory {factory!r}: {error}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise InputValueError(f"{module_name!r} has no callable {function_name!r}")
    return function

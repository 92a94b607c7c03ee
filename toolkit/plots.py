"""Draws the pictures of a trained folder: prediction.png, loss.png and parity.png (headless).

Every picture is written atomically (`rnn.folders.atomic_path`): a failed or interrupted draw
leaves the previous picture as it was, and no temporary file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rnn.checkpoint import load_checkpoint  # noqa: E402
from rnn.config import Config, Series, training_series  # noqa: E402
from rnn.data import pairs  # noqa: E402
from rnn.eager import run_series  # noqa: E402
from rnn.folders import atomic_path  # noqa: E402
from rnn.model import initial_state  # noqa: E402
from rnn.train import EVAL_ROLLOUT_STEPS  # noqa: E402
from runtime.errors import ArtifactError  # noqa: E402
from runtime.manifest import VERIFY_NAME  # noqa: E402

from .info import read_verify_report  # noqa: E402

PREDICTION_NAME = "prediction.png"
LOSS_NAME = "loss.png"
PARITY_NAME = "parity.png"
# loss.png's axes of each trainer: what one point is (x), what its value is (y).
LOSS_AXES = {
    "reference": ("epoch", "loss: sum over the epoch of (pred - target)^2 / 2"),
    "bptt": ("iteration", "loss: warm-up MSE + closed-loop MSE"),
}
MAX_PARITY_ROWS = 300  # checks drawn in parity.png (verify writes under 100); more is not a report of ours


def plot_folder(
    folder: str | os.PathLike,
    rollout_steps: int = EVAL_ROLLOUT_STEPS,
    factory=None,
    out: str | os.PathLike | None = None,
) -> list[Path]:
    """Writes prediction.png (for one-input, one-output models) and loss.png, and parity.png where
    verify.json exists, into ``out`` (default: ``folder``). A folder of a user's module needs
    its ``factory``. Returns the paths written.

    Everything is read and checked before anything is drawn: an unreadable config.json or
    verify.json (`toolkit.info.read_verify_report`, `parity_rows`) is an ArtifactError and
    leaves every picture as it was."""
    folder = Path(folder)
    out = folder if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = load_checkpoint(folder, factory)
    config = checkpoint.config
    series = training_series(config.train, folder) if drawable_prediction(config) else None
    report = read_verify_report(folder)
    rows = parity_rows(report) if report is not None else None
    paths = []
    if series is not None:
        paths.append(plot_prediction(checkpoint.model, config, out / PREDICTION_NAME, rollout_steps, series))
    paths.append(plot_loss(config, out / LOSS_NAME))
    if report is not None:
        paths.append(plot_parity(report, out / PARITY_NAME, rows))
    return paths


def drawable_prediction(config: Config) -> bool:
    """prediction.png draws a one-column series: models of one input and one output only."""
    return config.model.signature is None and config.model.input_size == 1 and config.model.output_size == 1


def plot_prediction(
    model, config: Config, path, rollout_steps: int = EVAL_ROLLOUT_STEPS, series: Series | None = None
) -> Path:
    """The reference's picture: actual points at t[:-1], one-step predictions at t[1:]; then the
    closed-loop rollout continued past the data (each output fed back), against sin(t).
    ``series``: the training series (`rnn.config.training_series`); None for the sine only (a
    config with a data file needs its folder to read it)."""
    if series is None:
        series = training_series(config.train)
    figure, axis = plt.subplots(figsize=(11, 4.8))
    draw_prediction(axis, model, config, series, rollout_steps)
    axis.set_title(prediction_title(config), fontsize=10)
    # Below the axes: inside, any corner covers part of the rollout (its first trough sits bottom left).
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8, ncol=4, frameon=False)
    figure.tight_layout()
    _save(figure, path)
    return Path(path)


def plot_side_by_side(
    seed: tuple[Any, Config], stable: tuple[Any, Config], path, rollout_steps: int = EVAL_ROLLOUT_STEPS
) -> Path:
    """`rnn demo`'s headline picture of the sine: on the left the tutorial's own picture of the
    ``seed`` (model, config) (actual points and one-step predictions, teacher-forced, as the
    reference trainer fits them), on the right the ``stable`` trainer's (model, config) fit and
    its closed loop continued ``rollout_steps`` steps past the data, against sin(t). Each
    title names its trainer and its errors (the seed's closed-loop error too, not drawn)."""
    series = training_series(seed[1].train)
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [1, 2.4]}, sharey=True)
    draw_prediction(left, *seed, series, rollout_steps=0)
    left.set_title(prediction_title(seed[1], "the tutorial's picture, one step ahead", rollout_drawn=False), fontsize=9)
    run = draw_prediction(right, *stable, training_series(stable[1].train), rollout_steps)
    right.set_title(prediction_title(stable[1], "the stable trainer, its closed loop past the data"), fontsize=9)
    right.set_ylabel("")
    low, high = float(run.rollout.min()), float(run.rollout.max())
    left.set_ylim(min(-1.3, low - 0.1), max(1.3, high + 0.1))
    for axis in (left, right):
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8, ncol=2, frameon=False)
    figure.tight_layout()
    _save(figure, path)
    return Path(path)


def draw_prediction(axis, model, config: Config, series: Series, rollout_steps: int):
    """Draws ``model``'s one-step predictions of ``series`` (teacher-forced) and, for
    ``rollout_steps`` > 0, its closed loop past the data onto ``axis``; returns the run
    (`rnn.eager.run_series`)."""
    times, values = series.times, series.values
    inputs, _ = pairs(values)
    run = run_series(model, initial_state(config.model), values, max(rollout_steps, 1))  # 0: none drawn
    dt = times[1] - times[0]
    future = times[-1] + dt * np.arange(1, rollout_steps + 1)
    if series.is_sine:
        fine = np.linspace(times[0], future[-1] if rollout_steps else times[-1], 2000)
        axis.plot(fine, np.sin(fine), color="0.8", lw=1, zorder=0, label="sin(t)")
    axis.scatter(times[:-1], inputs, s=90, label="Actual")
    axis.scatter(times[1:], run.predictions, label="Predicted (one step, teacher-forced)")
    if rollout_steps:
        axis.plot(
            future,
            run.rollout,
            ".-",
            color="C3",
            ms=4,
            lw=0.8,
            label=f"Closed-loop rollout ({rollout_steps} steps past the data)",
        )
        axis.axvline(times[-1], color="0.5", ls=":", lw=1)
    axis.set_xlabel("t" if series.is_sine else "index")
    axis.set_ylabel("sin(t)" if series.is_sine else "value")
    if series.is_sine and rollout_steps:
        low, high = float(run.rollout.min()), float(run.rollout.max())
        axis.set_ylim(min(-1.6, low - 0.1), max(1.6, high + 0.1))
    return run


def prediction_title(config: Config, note: str = "", rollout_drawn: bool = True) -> str:
    """The cell, trainer, seed and recorded errors of ``config``; a closed-loop error not drawn
    is called so."""
    kind = {"elman": "Elman RNN", "gru": "GRU", "lstm": "LSTM", "custom": "your module"}.get(
        config.model.kind, config.model.kind
    )
    train = config.train
    title = f"{kind}, {train.trainer} trainer, seed {train.seed}" if train else kind
    if note:
        title += f": {note}"
    metrics = config.metrics
    if "teacher_forced_mse" in metrics:
        title += f"\nteacher-forced MSE {metrics['teacher_forced_mse']:.2e}"
    if "rollout_max_error" in metrics:
        where = "" if rollout_drawn else " (not drawn)"
        title += f", closed-loop max error {metrics['rollout_max_error']:.3f}{where}"
    return title


def plot_loss(config: Config, path) -> Path:
    history = np.asarray(config.loss_history, dtype=np.float64)  # empty for a user's module
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.semilogy(np.arange(1, len(history) + 1), history)
    trainer = config.train.trainer if config.train else "?"
    axis.set_xlabel(LOSS_AXES.get(trainer, ("step", "loss"))[0])
    axis.set_ylabel(LOSS_AXES.get(trainer, ("step", "loss"))[1])
    axis.set_title(f"Training loss, {trainer} trainer (final {history[-1]:.3g})" if history.size else "no loss history")
    axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    _save(figure, path)
    return Path(path)


def parity_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The comparisons of a verify report that parity.png draws (those with a ``max_abs``),
    checked: ArtifactError unless each is an object with text ``check``, ``output`` and ``form``
    and finite, non-negative ``max_abs`` and ``tolerance``, and there are at most
    ``MAX_PARITY_ROWS`` distinct checks."""
    comparisons = report.get("comparisons", [])
    if not isinstance(comparisons, list) or not all(isinstance(c, dict) for c in comparisons):
        raise ArtifactError(f"{VERIFY_NAME}: 'comparisons' must be a list of objects; run rnn verify again")
    rows = [c for c in comparisons if c.get("max_abs") is not None]
    for row in rows:
        texts = all(isinstance(row.get(key), str) for key in ("check", "output", "form"))
        if not texts or not all(_non_negative(row.get(key)) for key in ("max_abs", "tolerance")):
            raise ArtifactError(
                f"{VERIFY_NAME}: a comparison lacks text check/output/form or a finite max_abs and tolerance; "
                "run rnn verify again"
            )
    if len({(row["check"], row["output"]) for row in rows}) > MAX_PARITY_ROWS:
        raise ArtifactError(f"{VERIFY_NAME} holds more than {MAX_PARITY_ROWS} checks to draw")
    return rows


def _non_negative(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value)) and value >= 0
    except OverflowError:
        return False


def _save(figure, path) -> None:
    """Writes ``figure`` to ``path`` atomically, and closes it either way."""
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=110)
    finally:
        plt.close(figure)


def plot_parity(report: dict, path, rows: list[dict[str, Any]] | None = None) -> Path:
    """Max abs error of each form and check against eager PyTorch, with the tolerances.
    ``rows``: `parity_rows` of ``report``, if already checked."""
    rows = parity_rows(report) if rows is None else rows
    checks = list(dict.fromkeys(f"{c['check']} / {c['output']}" for c in rows))
    forms = list(dict.fromkeys(c["form"] for c in rows))
    figure, axis = plt.subplots(figsize=(10, 0.35 * len(checks) + 1.8))
    height = 0.8 / max(len(forms), 1)
    floor = 1e-9  # exact agreement is drawn at this floor of the log axis
    for index, form in enumerate(forms):
        values = {f"{c['check']} / {c['output']}": c for c in rows if c["form"] == form}
        y = np.arange(len(checks)) + index * height
        errors = [max(values[k]["max_abs"], floor) if k in values else np.nan for k in checks]
        axis.barh(y, errors, height=height, label=form)
    for position, key in enumerate(checks):
        tolerance = next(c["tolerance"] for c in rows if f"{c['check']} / {c['output']}" == key)
        axis.plot([tolerance, tolerance], [position - 0.1, position + 0.9], color="k", lw=1.5)
    axis.set_xscale("log")
    axis.set_xlim(floor / 2, 1e-2)
    axis.set_yticks(np.arange(len(checks)) + 0.4 - height / 2)
    axis.set_yticklabels(checks, fontsize=7)
    axis.invert_yaxis()
    axis.set_xlabel(f"max abs error vs eager PyTorch (black: tolerance; {floor:g} = identical)")
    axis.set_title(f"Parity: {'passed' if report.get('passed') else 'FAILED'}")
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    _save(figure, path)
    return Path(path)

"""What the running commands share: the default start point and the CSV they write. Torch-free."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rnn.config import Config, training_series


def start_value(config: Config) -> float:
    """The default first input of a closed loop: the first point of the training series."""
    return float(training_series(config.train).values[0])


def generate_csv_lines(ys: np.ndarray) -> list[str]:
    """``step,y`` and one line per generated step (one stream, one output)."""
    return ["step,y", *(f"{index},{value:.8g}" for index, value in enumerate(np.asarray(ys).reshape(-1), start=1))]


def write_generate_csv(path: str | os.PathLike, ys: np.ndarray) -> Path:
    Path(path).write_text("\n".join(generate_csv_lines(ys)) + "\n", encoding="utf-8")
    return Path(path)

"""Training series: the reference sine wave, or a user's one-column CSV or .npy file. Numpy only."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from runtime.errors import DataError

# The reference series: SEQ_LENGTH + 1 points of sin(t) for t in [T_START, T_STOP].
SEQ_LENGTH = 20
T_START = 2.0
T_STOP = 10.0


def sine_times(seq_length: int = SEQ_LENGTH, start: float = T_START, stop: float = T_STOP) -> np.ndarray:
    """``linspace(start, stop, seq_length + 1)``: the reference's time points."""
    return np.linspace(start, stop, seq_length + 1)


def sine_series(seq_length: int = SEQ_LENGTH) -> np.ndarray:
    """``sin(t)`` at the reference's ``seq_length + 1`` time points (float64)."""
    return np.sin(sine_times(seq_length))


def pairs(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``series[:-1]`` and targets ``series[1:]``: the target is the next point."""
    return series[:-1], series[1:]


def load_series(path: str | os.PathLike) -> np.ndarray:
    """Reads a one-column series from ``.csv`` (an optional header line) or ``.npy`` (1-D or (N, 1)).

    Raises DataError for anything else: other suffixes, several columns, text that is not a
    number, NaN or infinity, fewer than 2 points.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise DataError(f"{path} is not a readable .npy array of numbers: {error}") from None
    elif suffix == ".csv":
        array = _read_csv(path)
    else:
        raise DataError(f"data file {path} must be .csv or .npy, got {suffix or 'no suffix'!r}")
    if array.dtype.kind not in "fiu":
        raise DataError(f"{path} must hold real numbers, got dtype {array.dtype}")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DataError(f"{path} must be one column of numbers, got shape {array.shape}")
    if array.size < 2:
        raise DataError(f"{path} must hold at least 2 points (an input and its next value), got {array.size}")
    if not np.isfinite(array).all():
        raise DataError(f"{path} contains NaN or infinity at index {int(np.argmin(np.isfinite(array)))}")
    return array.astype(np.float64)


def _read_csv(path: Path) -> np.ndarray:
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text") from None
    lines = [line for line in lines if line]
    values = []
    for number, line in enumerate(lines, start=1):
        if "," in line or ";" in line or "\t" in line:
            raise DataError(f"{path} line {number}: expected one column, got {line!r:.60}")
        try:
            values.append(float(line))
        except ValueError:
            if number == 1 and values == []:
                continue  # a header line
            raise DataError(f"{path} line {number}: {line!r:.60} is not a number") from None
    return np.asarray(values, dtype=np.float64)

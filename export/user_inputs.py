"""Turns the input series a user hands verification into one (steps, batch, input_size) float32 array."""

from __future__ import annotations

import hashlib
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnn.data import load_inputs
from runtime.errors import ShapeError
from runtime.inputs import as_float32

INPUTS_NAME = "inputs"  # how errors name the argument


@dataclass(frozen=True)
class UserInputs:
    """The user's data as verification runs it, and what verify.json records of it."""

    values: np.ndarray  # (steps, batch, input_size) float32, C-contiguous
    source: str  # the file's path as given, or "array"
    file_sha256: str | None  # sha256 of the file's bytes; None for an array

    @property
    def steps(self) -> int:
        return self.values.shape[0]

    @property
    def batch_size(self) -> int:
        return self.values.shape[1]

    def to_dict(self) -> dict[str, Any]:
        """verify.json's ``user_data``: the source, the shape run, and sha256 of the float32 values
        (C order) verification ran on; a file's own sha256 beside them."""
        return {
            "source": self.source,
            "file_sha256": self.file_sha256,
            "shape": list(self.values.shape),
            "dtype": "float32",
            "sha256": hashlib.sha256(self.values.tobytes()).hexdigest(),
        }


def expected_shapes(input_size: int, file: bool = False) -> str:
    one = " or a list of equal-length 1-D series" if input_size == 1 and not file else ""
    series = "(steps,), " if input_size == 1 else ""
    return f"{series}(steps, {input_size}) or (steps, batch, {input_size}) real numbers{one}"


def user_inputs(inputs: Any, input_size: int) -> UserInputs:
    """``inputs`` as verification runs it, or a typed error naming the shapes it takes.

    Takes a ``.csv``/``.npy`` path (read by `rnn.data.load_inputs`: a csv column is an input
    feature, a row a step), or an array of real numbers: (steps, batch, input_size), one series
    (steps, input_size), for input_size 1 also (steps,) or a list of equal-length 1-D series (one
    batch row each). ShapeError for any other shape or an empty axis, DtypeError for values that
    are not real numbers, InputValueError for NaN, infinity or values float32 cannot hold.
    """
    source, file_sha256, name = "array", None, INPUTS_NAME
    if isinstance(inputs, (str, os.PathLike)):
        read = load_inputs(inputs)
        source, file_sha256, inputs = str(Path(inputs)), read.sha256, read.values
        name = f"data file {source}"  # the file's columns are its input features
    expected = expected_shapes(input_size, file=file_sha256 is not None)
    if isinstance(inputs, (list, tuple)):
        inputs = _stack_series(inputs, input_size, expected)
    if isinstance(inputs, (numbers.Number, np.generic)) or (isinstance(inputs, np.ndarray) and inputs.ndim == 0):
        raise ShapeError(f"{name} must be {expected}, got a single number: shape ()")
    values = as_float32(inputs, name, expected, allow_nonfinite=False)
    if values.ndim == 1 and input_size == 1:
        values = values.reshape(-1, 1, 1)
    elif values.ndim == 2 and values.shape[1] == input_size:
        values = values.reshape(values.shape[0], 1, input_size)
    if values.ndim != 3 or values.shape[2] != input_size or 0 in values.shape:
        raise ShapeError(f"{name} must be {expected}, got shape {tuple(np.shape(inputs))}")
    return UserInputs(np.ascontiguousarray(values), source, file_sha256)


def _stack_series(series: list | tuple, input_size: int, expected: str) -> np.ndarray:
    """A list of 1-D series of one length, as a (steps, batch, 1) array: one batch row each."""
    if input_size != 1:
        raise ShapeError(f"{INPUTS_NAME} must be {expected}: a list of series is for input_size 1")
    arrays = [
        as_float32(s, f"{INPUTS_NAME}[{i}]", "a 1-D series of", allow_nonfinite=False) for i, s in enumerate(series)
    ]
    if not arrays:
        raise ShapeError(f"{INPUTS_NAME} must be {expected}, got an empty list")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 1:
        raise ShapeError(f"{INPUTS_NAME} must be {expected}, got series of shapes {sorted(shapes)}")
    return np.stack(arrays, axis=1)[:, :, None]

"""Reads the data a user hands verification into time-first arrays by input name, and what verify.json records of it."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import runtime
from rnn.data import load_named_arrays
from runtime.errors import DataError, ShapeError
from runtime.manifest import BATCH_FIRST, TensorSpec

from .user_inputs import user_inputs

NAMED_ARRAYS_SUFFIX = ".npz"  # a file of arrays named after the inputs


@dataclass(frozen=True)
class UserData:
    """The user's data as verification runs it: (steps, batch, *sizes) arrays by input name, and its description."""

    values: dict[str, np.ndarray]
    described: dict[str, Any]  # verify.json's user_data

    @property
    def steps(self) -> int:
        return next(iter(self.values.values())).shape[0]

    @property
    def batch_size(self) -> int:
        return next(iter(self.values.values())).shape[1]


def series_inputs(model: runtime.Model) -> bool:
    """Whether the model takes its data as one series of real numbers (a .csv or .npy file, (steps,),
    (steps, n), (steps, batch, n) or a list of series: `export.user_inputs`): one float input of
    one axis, time-first."""
    return (
        len(model.inputs) == 1
        and not model.inputs[0].is_tokens
        and len(model.inputs[0].sizes) == 1
        and model.layout != BATCH_FIRST
    )


def read_user_data(inputs: Any, model: runtime.Model) -> UserData:
    """``inputs`` as verification runs it, or a typed error (ShapeError, DtypeError, InputValueError,
    DataError) before any check runs: a dict by input name or an ``.npz`` file for any model, and
    for a model of one series input also the forms `export.user_inputs` takes."""
    named = isinstance(inputs, dict) or (
        isinstance(inputs, (str, os.PathLike)) and str(inputs).endswith(NAMED_ARRAYS_SUFFIX)
    )
    if series_inputs(model) and not named:
        data = user_inputs(inputs, model.inputs[0].count)
        return UserData({model.input_names[0]: data.values}, data.to_dict())
    return named_user_data(inputs, model)


def named_user_data(inputs: Any, model: runtime.Model) -> UserData:
    """``inputs``: {input name: array} or the path of an ``.npz`` file of arrays named after the
    inputs, each (steps, batch, *sizes) ((batch, steps, *sizes) for a batch-first model) or
    (steps, *sizes) for one stream; token ids integers below the vocabulary."""
    source, file_sha256 = "arrays", None
    if isinstance(inputs, (str, Path)) or hasattr(inputs, "__fspath__"):
        source = str(Path(inputs))
        inputs, file_sha256 = load_named_arrays(inputs)
    names = list(model.input_names)
    if not isinstance(inputs, dict):
        raise ShapeError(f"data for a model with inputs {names} must be a dict of arrays by input name or an .npz file")
    if sorted(inputs) != sorted(names):
        raise ShapeError(f"data must hold exactly the inputs {names}, got {sorted(inputs)}")
    batch_first = model.layout == BATCH_FIRST
    values: dict[str, np.ndarray] = {}
    for spec in model.inputs:
        array = np.asarray(inputs[spec.name])
        if array.ndim == len(spec.sizes) + 1:  # one stream
            array = array[:, None] if not batch_first else array[None]
        if array.ndim != len(spec.sizes) + 2 or tuple(array.shape[2:]) != spec.sizes or 0 in array.shape:
            layout = "(batch, steps" if batch_first else "(steps, batch"
            raise ShapeError(
                f"data {spec.name!r} must be {layout}{''.join(f', {d}' for d in spec.sizes)}), got shape {array.shape}"
            )
        if batch_first:
            array = np.swapaxes(array, 0, 1)
        values[spec.name] = checked_values(spec, array)
    shapes = {v.shape[:2] for v in values.values()}
    if len(shapes) != 1:
        raise ShapeError(f"data arrays must share their steps and batch axes, got {sorted(shapes)}")
    digest = hashlib.sha256(b"".join(values[n].tobytes() for n in names)).hexdigest()
    return UserData(
        values,
        {
            "source": source,
            "file_sha256": file_sha256,
            "shape": list(next(iter(shapes))),
            "inputs": {n: {"shape": list(values[n].shape), "dtype": str(values[n].dtype)} for n in names},
            "sha256": digest,
        },
    )


def checked_values(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """``array`` as the input ``spec`` takes it: int64 ids below the vocabulary, or finite float32 values."""
    if spec.is_tokens:
        if array.dtype.kind not in "iu" and not (array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0)):
            raise DataError(f"data {spec.name!r} must hold integer token ids, got {array.dtype}")
        ids = array.astype(np.int64)
        bad = np.argwhere((ids < 0) | (ids >= int(spec.vocabulary)))
        if bad.size:
            where = tuple(int(i) for i in bad[0])
            raise DataError(
                f"data {spec.name!r} holds id {int(ids[where])} at {where}: ids must be 0 .. {int(spec.vocabulary) - 1}"
            )
        return np.ascontiguousarray(ids)
    if array.dtype.kind not in "iuf":
        raise DataError(f"data {spec.name!r} must hold real numbers, got {array.dtype}")
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise DataError(f"data {spec.name!r} holds NaN or infinity (or values float32 cannot hold)")
    return np.ascontiguousarray(values)

"""`rnn predict` for a model of any signature: teacher-forced outputs over a series or named sequences, as CSV or JSON.

An .npz of one array per input name gives ``step,stream,<output columns>`` rows for any model. A
one-column series (a .csv/.npy file, or the training series by default for the seed's signature)
feeds a model of one input of one value and gives ``t,input,next_t,prediction[,target]`` rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import InputValueError
from runtime.manifest import BATCH_FIRST

from .console import json_text, number
from .on_ray import Bulk, run_bulk
from .run_inputs import NAMED_SUFFIX, nonfinite_hint, one_value_input, read_sequences, series_sequences
from .running import output_columns
from .trust import Loading, load_model


@dataclass(frozen=True)
class PredictOptions:
    """Everything `rnn predict` takes: the inputs file (None: the training series), the loading,
    the output format and the bulk run (whose dataset is the same --input)."""

    input_path: Path | None = None
    loading: Loading = field(default_factory=Loading)
    as_json: bool = False
    bulk: Bulk = field(default_factory=Bulk)


@dataclass(frozen=True)
class Series:
    """One stream's series for a model of one input of one value: the times of its points, its
    values (the targets), and the inputs fed (every point, or every point but the last)."""

    times: np.ndarray
    values: np.ndarray
    inputs: np.ndarray


def predict_text(folder: Path, options: PredictOptions, say: Callable[[str], None]) -> Iterator[str]:
    """`rnn predict`: its stdout text piece by piece (CSV rows or one JSON document); with --ray
    (or --out, --address) the bulk run, ``say``ing its summary. NaN or infinity in the inputs is
    refused without advice: `rnn predict` has no --allow-nonfinite."""
    with nonfinite_hint(""):
        yield from _predict_text(folder, options, say)


def _predict_text(folder: Path, options: PredictOptions, say: Callable[[str], None]) -> Iterator[str]:
    bulk = options.bulk
    if bulk.ray or bulk.out is not None or bulk.address is not None:
        say(run_bulk(folder, "predict", None, options.loading, options.as_json, bulk))
        return
    model = load_model(folder, options.loading)  # a series file never holds NaN (load_series)
    path = options.input_path
    if path is not None and path.suffix.lower() == NAMED_SUFFIX:
        sequences = read_sequences(path, model.inputs, model.layout)
        yield from (sequences_json if options.as_json else sequences_csv)(model, sequences)
        return
    series = read_series(model, folder, path)
    yield from (series_json if options.as_json else series_csv)(model, series)


def read_series(model: Any, folder: Path, path: Path | None) -> Series:
    """The series --input names, or the training series config.json records (the seed's signature)."""
    spec = one_value_input(model)
    if spec is None or (path is None and not model.classic):
        raise InputValueError(
            f"this model's inputs are {[t.name for t in model.inputs]}: give --input FILE{NAMED_SUFFIX} "
            "(an array per input name)"
        )
    if path is not None:
        from rnn.data import load_series

        values = load_series(path)
        return Series(np.arange(len(values) + 1, dtype=np.float64), values, values)
    from rnn.config import read_config, training_series

    training = training_series(read_config(folder).train, folder)
    return Series(training.times, training.values, training.values[:-1])


def _series_outputs(model: Any, series: Series) -> tuple[np.ndarray, list[str], list[float | None] | None]:
    """(predictions (steps, columns), their column names, the targets or None): a target column
    only for a model of one output of one value (its prediction is the series' next point)."""
    spec = model.inputs[0]
    ys, _ = model.predict(series_sequences(series.inputs, spec.name, model.layout))
    named = ys if isinstance(ys, dict) else {model.outputs[0].name: ys}
    axis = 0 if model.layout == BATCH_FIRST else 1
    parts = [np.take(np.asarray(named[t.name]), 0, axis=axis).reshape(len(series.inputs), -1) for t in model.outputs]
    rows = np.concatenate(parts, axis=1).astype(float)  # (steps, columns)
    if len(model.outputs) == 1:
        columns = ["prediction"] if rows.shape[1] == 1 else [f"prediction_{i}" for i in range(rows.shape[1])]
    else:
        columns = output_columns(model.outputs)
    if rows.shape[1] != 1:
        return rows, columns, None
    steps = len(series.inputs)
    return rows, columns, [float(v) for v in series.values[1:]] + [None] * (steps - len(series.values) + 1)


def series_csv(model: Any, series: Series) -> Iterator[str]:
    """``t,input,next_t,prediction[,target]``: the prediction made at t is for the point at next_t."""
    rows, columns, targets = _series_outputs(model, series)
    yield ",".join(["t", "input", "next_t", *columns, *(["target"] if targets is not None else [])])
    times = series.times
    for i, (t, x, t_next, row) in enumerate(zip(times, series.inputs, times[1:], rows)):
        values = [f"{t:.6g}", f"{x:.8g}", f"{t_next:.6g}", *(f"{y:.8g}" for y in row)]
        if targets is not None:
            values.append("" if targets[i] is None else f"{targets[i]:.8g}")
        yield ",".join(values)


def series_json(model: Any, series: Series) -> Iterator[str]:
    """The series table as one JSON document of columns (``target`` null after the last point)."""
    rows, _, targets = _series_outputs(model, series)
    steps = len(series.inputs)
    document = {
        "t": [number(t) for t in series.times[:steps]],
        "input": series.inputs.tolist(),
        "next_t": [number(t) for t in series.times[1 : steps + 1]],
        "prediction": rows[:, 0].tolist() if targets is not None else rows.tolist(),
    }
    yield json_text({**document, "target": targets} if targets is not None else document)


def sequences_csv(model: Any, sequences: dict[str, np.ndarray]) -> Iterator[str]:
    """Teacher-forced outputs of every stream: ``step,stream`` and a column per output value."""
    ys, _ = model.predict(sequences)
    named = ys if isinstance(ys, dict) else {model.outputs[0].name: ys}
    if model.layout == BATCH_FIRST:
        named = {k: np.swapaxes(v, 0, 1) for k, v in named.items()}
    steps, batch = next(iter(named.values())).shape[:2]
    yield "step,stream," + ",".join(output_columns(model.outputs))
    flat = [named[t.name].reshape(steps, batch, -1) for t in model.outputs]
    for t in range(steps):
        yield "\n".join(
            f"{t + 1},{b}," + ",".join(f"{v:.8g}" for part in flat for v in part[t, b]) for b in range(batch)
        )


def sequences_json(model: Any, sequences: dict[str, np.ndarray]) -> Iterator[str]:
    """Teacher-forced outputs of every stream by output name, in the model's layout."""
    ys, _ = model.predict(sequences)
    named = ys if isinstance(ys, dict) else {model.outputs[0].name: ys}
    yield json_text({"layout": model.layout, **{k: np.asarray(v).tolist() for k, v in named.items()}})

"""What a running command (generate, predict) reads as a model's inputs: start values, series and sequences.

Every model is described by its signature (``model.inputs``, ``layout``, ``feedback``): the readers
here give the runtime a dict by input name, with a batch axis of one stream where a file holds one.
The seed's conveniences are cases of the same readers: a one-column .csv/.npy series is the
sequence of a model of one input of one value, ``--x0 0.5`` (or ``--start 0.5``) its first value, and
the training series in config.json its default where the model has the seed's signature.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import DataError, InputValueError
from runtime.inputs import NONFINITE_HINT, retell_nonfinite
from runtime.manifest import BATCH_FIRST, SAMPLE, TensorSpec

NAMED_SUFFIX = ".npz"  # a file of one array per input name; any other suffix is one series


@contextlib.contextmanager
def nonfinite_hint(hint: str) -> Iterator[None]:
    """`retell_nonfinite` for the runtime's InputValueErrors raised in the block."""
    try:
        yield
    except InputValueError as error:
        if f"; {NONFINITE_HINT}" not in str(error):
            raise
        raise InputValueError(retell_nonfinite(str(error), hint)) from None


def one_value_input(model: Any) -> TensorSpec | None:
    """The model's only input where it has one input of one float value a stream (the seed's
    signature and any other of that input): the input a series or a bare number feeds."""
    if len(model.inputs) == 1 and model.inputs[0].count == 1 and not model.inputs[0].is_tokens:
        return model.inputs[0]
    return None


def parse_start(values: tuple[str, ...], inputs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """``NAME=V1,V2,...`` per input (one stream): a token input takes one id, a float input its
    values in C order; a model of one input also takes ``V1,V2,...`` without the name.
    InputValueError naming the input for anything else."""
    specs = {t.name: t for t in inputs}
    start: dict[str, np.ndarray] = {}
    for text in values:
        name, sep, raw = text.partition("=")
        if not sep and len(inputs) == 1:
            name, raw = inputs[0].name, text
        elif not sep or name not in specs:
            raise InputValueError(f"--start must be NAME=VALUES with NAME one of {list(specs)}, got {text!r:.80}")
        start[name] = _start_values(specs[name], raw)
    return start


def _start_values(spec: TensorSpec, raw: str) -> np.ndarray:
    """One stream's first value of input ``spec`` from its text ``raw``."""
    name = spec.name
    try:
        numbers = [int(v) if spec.is_tokens else float(v) for v in raw.split(",")]
    except ValueError:
        kind = "an integer token id" if spec.is_tokens else "numbers separated by commas"
        raise InputValueError(f"--start {name}= must be {kind}, got {raw!r:.80}") from None
    if len(numbers) != spec.count:
        raise InputValueError(f"--start {name}= needs {spec.count} value(s) ({spec.describe()}), got {len(numbers)}")
    if spec.is_tokens and not all(0 <= n < int(spec.vocabulary) for n in numbers):
        raise InputValueError(
            f"--start {name}= must be a token id from 0 to {int(spec.vocabulary) - 1}, got {raw!r:.40}"
        )
    dtype = np.int64 if spec.is_tokens else np.float64  # float64: the runtime refuses what float32 cannot hold
    return np.asarray(numbers, dtype=dtype).reshape(spec.shape_for(1))


def read_inputs_file(path: str | os.PathLike, model: Any, option: str) -> dict[str, np.ndarray]:
    """A file of inputs for ``model``: an .npz of one array per input name (any model), or a
    one-column .csv/.npy series (a model of one input of one value). Sequences with their batch
    axis, as the runtime takes them; DataError or InputValueError naming ``option`` otherwise."""
    if Path(path).suffix.lower() == NAMED_SUFFIX:
        return read_sequences(path, model.inputs, model.layout)
    spec = one_value_input(model)
    if spec is None:
        raise InputValueError(
            f"{option}: this model's inputs {list(model.input_names)} are not one series of one value: "
            f"give {option} FILE{NAMED_SUFFIX} (an array per input name)"
        )
    from rnn.data import load_series

    return series_sequences(load_series(path), spec.name, model.layout)


def series_sequences(series: np.ndarray, name: str, layout: str) -> dict[str, np.ndarray]:
    """One stream's series (steps,) as the sequence of input ``name``: (steps, 1, 1), or (1, steps, 1)
    for a batch-first model."""
    column = np.asarray(series).reshape(-1, 1, 1)
    return {name: np.swapaxes(column, 0, 1) if layout == BATCH_FIRST else column}


def read_sequences(path: str | os.PathLike, inputs: tuple[TensorSpec, ...], layout: str) -> dict[str, np.ndarray]:
    """An .npz of one array per input name, each (steps, *sizes) for one stream, or (steps,
    batch, *sizes) ((batch, steps, *sizes) for a batch-first model): as the runtime takes them."""
    from rnn.data import load_named_arrays

    arrays, _ = load_named_arrays(path)
    names = [t.name for t in inputs]
    if sorted(arrays) != sorted(names):
        raise DataError(f"{path} must hold exactly the arrays {names}, got {sorted(arrays)}")
    result = {}
    for spec in inputs:
        array = arrays[spec.name]
        if array.ndim == len(spec.sizes) + 1:  # one stream: add its batch axis
            array = array[None] if layout == BATCH_FIRST else array[:, None]
        steps = array.shape[1 if layout == BATCH_FIRST else 0] if array.ndim >= 2 else 0
        if array.ndim != len(spec.sizes) + 2 or steps == 0:
            sizes = "".join(f", {d}" for d in spec.sizes)
            streams = f"(batch, steps{sizes})" if layout == BATCH_FIRST else f"(steps, batch{sizes})"
            raise DataError(
                f"{path}: array {spec.name!r} must be (steps{sizes}) for one stream or {streams}, at least one step; "
                f"got shape {arrays[spec.name].shape}"
            )
        result[spec.name] = array
    return result


def split_last_step(
    sequences: dict[str, np.ndarray], layout: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(every step but the last, the last step): a warm-up's teacher-forced part and where generation starts."""
    axis = 1 if layout == BATCH_FIRST else 0
    head = {k: np.take(v, range(v.shape[axis] - 1), axis=axis) for k, v in sequences.items()}
    tail = {k: np.take(v, v.shape[axis] - 1, axis=axis) for k, v in sequences.items()}
    return head, tail


def sampled(model: Any) -> bool:
    """Whether the model's closed loop draws its next token from logits (a sampler's options apply)."""
    return model.feedback is not None and model.feedback.via == SAMPLE


def make_sampler(model: Any, sample: str | None, temperature: float | None, top_k: int | None, top_p, seed):
    """The runtime Sampler the options ask for (None for a model whose loop feeds values back): greedy
    unless an option asks for a draw (`runtime.sampling.draw_strategy`)."""
    import runtime

    if not sampled(model):
        if any(v is not None for v in (sample, temperature, top_k, top_p, seed)):
            raise InputValueError(
                "--sample, --temperature, --top-k, --top-p and --seed are for models that sample their next token"
            )
        return None
    strategy = runtime.sampling.draw_strategy(sample, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    temperature = 1.0 if temperature is None else temperature
    return runtime.Sampler(
        strategy, temperature=temperature, top_k=top_k, top_p=top_p, seed=0 if seed is None else seed
    )

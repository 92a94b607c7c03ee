"""What `rnn generate` and `rnn predict` do for a format 2 folder (named inputs, token ids,
sampled feedback): parse NAME=VALUES start values and .npz sequences, run the runtime, print CSV."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from runtime.errors import DataError, InputValueError
from runtime.manifest import BATCH_FIRST, SAMPLE, TensorSpec

CSV_CHUNK = 10_000  # steps a chunk of the streamed CSV


def parse_start(values: tuple[str, ...], inputs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """``NAME=V1,V2,...`` per input (one stream): a token input takes one id, a float input its
    values in C order. InputValueError naming the input for anything else."""
    specs = {t.name: t for t in inputs}
    start: dict[str, np.ndarray] = {}
    for text in values:
        name, sep, raw = text.partition("=")
        if not sep or name not in specs:
            raise InputValueError(f"--start must be NAME=VALUES with NAME one of {list(specs)}, got {text!r:.80}")
        spec = specs[name]
        try:
            numbers = [int(v) if spec.is_tokens else float(v) for v in raw.split(",")]
        except ValueError:
            kind = "an integer token id" if spec.is_tokens else "numbers separated by commas"
            raise InputValueError(f"--start {name}= must be {kind}, got {raw!r:.80}") from None
        if len(numbers) != spec.count:
            raise InputValueError(
                f"--start {name}= needs {spec.count} value(s) ({spec.describe()}), got {len(numbers)}"
            )
        dtype = np.int64 if spec.is_tokens else np.float64
        if spec.is_tokens and not all(0 <= n < int(spec.vocabulary) for n in numbers):
            raise InputValueError(
                f"--start {name}= must be a token id from 0 to {int(spec.vocabulary) - 1}, got {raw!r:.40}"
            )
        start[name] = np.asarray(numbers, dtype=dtype).reshape(spec.shape_for(1))
    return start


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


def last_step(sequences: dict[str, np.ndarray], layout: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(every step but the last, the last step): a warm-up's teacher-forced part and where generation starts."""
    axis = 1 if layout == BATCH_FIRST else 0
    head = {k: np.take(v, range(v.shape[axis] - 1), axis=axis) for k, v in sequences.items()}
    tail = {k: np.take(v, v.shape[axis] - 1, axis=axis) for k, v in sequences.items()}
    return head, tail


def make_sampler(model: Any, sample: str | None, temperature: float, top_k: int | None, top_p: float | None, seed: int):
    """The runtime Sampler the options ask for (None for a model whose loop feeds values back)."""
    import runtime

    feedback = model.feedback
    if feedback is None or feedback.via != SAMPLE:
        if any(v is not None for v in (sample, temperature, top_k, top_p, seed)):
            raise InputValueError(
                "--sample, --temperature, --top-k, --top-p and --seed are for models that sample their next token"
            )
        return None
    strategy = sample or ("top_k" if top_k is not None else "top_p" if top_p is not None else "temperature")
    temperature = 1.0 if temperature is None else temperature
    return runtime.Sampler(
        strategy, temperature=temperature, top_k=top_k, top_p=top_p, seed=0 if seed is None else seed
    )


def generate_csv(model: Any, start: dict, steps: int, state: Any, sampler: Any) -> Iterator[str]:
    """The closed loop of one stream as CSV, streamed chunk by chunk: ``step,<token input>`` for a
    sampled model, else ``step`` and a column per value of each output."""
    chunks = model.generate_iter(start, steps, state, chunk=CSV_CHUNK, sampler=sampler)
    first, _ = next(chunks)  # refused inputs raise before the header
    batch_first = model.layout == BATCH_FIRST
    sampled = sampler is not None
    if sampled:
        yield f"step,{model.feedback.input}"
    else:
        yield "step," + ",".join(_columns(model.outputs))
    done = 0
    for ys in _chain(first, chunks):
        rows = _rows(ys, model.outputs, batch_first, sampled)
        lines = [f"{done + i + 1}," + ",".join(row) for i, row in enumerate(rows)]
        done += len(rows)
        yield "\n".join(lines)


def predict_csv(model: Any, sequences: dict[str, np.ndarray]) -> Iterator[str]:
    """Teacher-forced outputs of every stream: ``step,stream`` and a column per output value."""
    ys, _ = model.predict(sequences)
    named = ys if isinstance(ys, dict) else {model.outputs[0].name: ys}
    if model.layout == BATCH_FIRST:
        named = {k: np.swapaxes(v, 0, 1) for k, v in named.items()}
    steps, batch = next(iter(named.values())).shape[:2]
    yield "step,stream," + ",".join(_columns(model.outputs))
    flat = [named[t.name].reshape(steps, batch, -1) for t in model.outputs]
    for t in range(steps):
        yield "\n".join(
            f"{t + 1},{b}," + ",".join(f"{v:.8g}" for part in flat for v in part[t, b]) for b in range(batch)
        )


def _columns(outputs: tuple[TensorSpec, ...]) -> list[str]:
    return [t.name if t.count == 1 else f"{t.name}_{i}" for t in outputs for i in range(t.count)]


def _chain(first: Any, chunks: Iterator) -> Iterator[Any]:
    yield first
    for ys, _ in chunks:
        yield ys


def _rows(ys: Any, outputs: tuple[TensorSpec, ...], batch_first: bool, sampled: bool) -> list[list[str]]:
    """One stream's rows of a chunk: its token ids, or every output's values flattened."""
    if sampled:
        tokens = np.asarray(ys)
        tokens = tokens[0] if batch_first else tokens[:, 0]
        return [[str(int(v))] for v in tokens]
    named = ys if isinstance(ys, dict) else {outputs[0].name: ys}
    parts = [np.asarray(named[t.name]) for t in outputs]
    parts = [(p[0] if batch_first else p[:, 0]).reshape(p.shape[1 if batch_first else 0], -1) for p in parts]
    return [[f"{v:.8g}" for part in parts for v in part[t]] for t in range(len(parts[0]))]

"""What the torch-free commands share: the default start point, the generated CSV, and verify.json
read without trusting it."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rnn.config import Config, training_series
from rnn.data import open_regular
from rnn.folders import atomic_path
from runtime.errors import ArtifactError
from runtime.jsonfile import parse_json
from runtime.manifest import VERIFY_NAME

CSV_CHUNK = 100_000  # steps generated at a time: memory stays flat for any --steps
CSV_LINES_PER_WRITE = 1000  # lines written at a time: a reader that closes the pipe is noticed soon
JSON_MAX_STEPS = 10**6  # `generate --json` builds one document in memory; CSV streams any length
MAX_VERIFY_BYTES = 16 << 20  # verify.json: tens of KB


def start_value(config: Config, folder: str | os.PathLike) -> float:
    """The default first input of a closed loop: the first point of the training series that
    the config.json in ``folder`` records (`rnn.config.training_series`)."""
    return float(training_series(config.train, folder).values[0])


def csv_header(output_size: int) -> str:
    """``step,y`` for one output; ``step,y_0,y_1,...`` for several."""
    return "step,y" if output_size == 1 else "step," + ",".join(f"y_{i}" for i in range(output_size))


def csv_rows(ys: np.ndarray, first_step: int = 1) -> str:
    """One line per generated step (one stream): its number and its outputs, newline-joined."""
    rows = np.asarray(ys).reshape(len(ys), -1)  # (steps, output_size)
    if rows.shape[1] == 1:  # the common case, kept fast
        return "\n".join(f"{step},{value:.8g}" for step, value in enumerate(rows[:, 0].tolist(), start=first_step))
    return "\n".join(
        f"{step},{','.join(f'{value:.8g}' for value in row)}"
        for step, row in enumerate(rows.tolist(), start=first_step)
    )


def generate_csv_chunks(model, x0: Any, steps: int, state=None, chunk: int | None = None) -> Iterator[str]:
    """The closed loop as CSV text, header first, in pieces of at most ``CSV_LINES_PER_WRITE``
    lines, generated ``chunk`` (default ``CSV_CHUNK``) steps at a time with
    ``model.generate_iter``: any number of steps in bounded memory. Refused inputs raise before
    anything is yielded (the first chunk is run before the header)."""
    chunks = model.generate_iter(x0, steps, state, chunk=CSV_CHUNK if chunk is None else chunk)
    first, _ = next(chunks)
    yield csv_header(model.output_size)
    done = 0
    for ys in itertools.chain([first], (ys for ys, _ in chunks)):
        for start in range(0, len(ys), CSV_LINES_PER_WRITE):
            piece = ys[start : start + CSV_LINES_PER_WRITE]
            yield csv_rows(piece, done + 1)
            done += len(piece)


def generate_csv_lines(ys: np.ndarray) -> list[str]:
    """``step,y`` and one line per generated step (one stream, one output)."""
    rows = np.asarray(ys).reshape(len(ys), -1)
    return [csv_header(rows.shape[1]), *csv_rows(rows).splitlines()]


def write_generate_csv(path: str | os.PathLike, ys: np.ndarray) -> Path:
    """generate.csv, written atomically (`rnn.folders.atomic_path`)."""
    with atomic_path(path) as temporary:
        temporary.write_text("\n".join(generate_csv_lines(ys)) + "\n", encoding="utf-8")
    return Path(path)


def read_verify_report(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The verification report ``verify.json`` in ``folder``; None where there is none.

    ArtifactError if it is there but unreadable: not a regular file, too large, not UTF-8, not
    JSON (deep nesting and huge numbers included), not an object, or without a boolean
    ``passed``. Its contents are never quoted in the error.
    """
    path = Path(folder) / VERIFY_NAME
    if not path.exists() and not path.is_symlink():
        return None
    with open_regular(path, ArtifactError, VERIFY_NAME) as handle:
        raw = handle.read(MAX_VERIFY_BYTES + 1)
    if len(raw) > MAX_VERIFY_BYTES:
        raise ArtifactError(f"{VERIFY_NAME} is larger than {MAX_VERIFY_BYTES} bytes")
    document = parse_json(raw, VERIFY_NAME, ArtifactError, finite_only=False)  # a failed check reports Infinity
    if not isinstance(document, dict):
        raise ArtifactError(f"{VERIFY_NAME} must be a JSON object, got {type(document).__name__}")
    if not isinstance(document.get("passed"), bool):
        raise ArtifactError(f"{VERIFY_NAME} has no boolean 'passed'")
    return document

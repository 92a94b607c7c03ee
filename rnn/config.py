"""Reads a trained folder's config.json and its training series without importing torch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import ArtifactError

from .data import load_series, sine_series, sine_times

WEIGHTS_NAME = "weights.pt"
CONFIG_NAME = "config.json"
MODEL_KINDS = ("elman", "gru", "lstm", "custom")


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a trained folder; ArtifactError if missing or invalid."""
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not folder.is_dir():
        raise ArtifactError(f"folder {str(folder)!r} does not exist")
    if not path.is_file():
        raise ArtifactError(f"{str(folder)!r} has no {CONFIG_NAME}: train into it first with 'rnn train --out'")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        sizes = document["model"]
        kind = sizes.get("kind")
        sizes_ok = all(isinstance(sizes[k], int) and sizes[k] >= 1 for k in ("input_size", "hidden_size", "output_size"))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ArtifactError(f"{path} is not a valid config ({type(error).__name__}: {error})") from None
    if kind not in MODEL_KINDS:
        raise ArtifactError(f"{path}: model kind {kind!r} is not supported (expected one of {list(MODEL_KINDS)})")
    if not sizes_ok:
        raise ArtifactError(f"{path}: model input_size, hidden_size and output_size must be positive integers")
    if kind == "custom":
        states = sizes.get("states")
        if not isinstance(states, list) or not states or not all(
            isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("initial"), list)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in s["initial"]) and s["initial"]
            for s in states
        ):
            raise ArtifactError(f"{path}: a custom model needs 'states': [{{'name': ..., 'initial': [numbers]}}, ...]")
    return document


def training_series(document: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, bool]:
    """(times, series, is_sine) the config was trained on: its data file, else the sine.

    A user's file is read again from the recorded path; where it has moved, an ArtifactError
    says so. Times of a user's series are its indices.
    """
    train = document.get("train", {})
    data = train.get("data")
    if data:
        if not Path(data).is_file():
            raise ArtifactError(f"the training data {data!r} recorded in config.json is no longer there")
        series = load_series(data)
        return np.arange(len(series), dtype=np.float64), series, False
    seq_length = int(train.get("seq_length", 20))
    return sine_times(seq_length), sine_series(seq_length), True

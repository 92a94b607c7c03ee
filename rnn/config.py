"""The one typed definition of a trained folder's config.json, and its training series. Numpy only.

``config.json`` holds a `ModelConfig` (what the step module is: kind, sizes, state tensors), the
`TrainConfig` it was trained with (absent for a user's module exported with ``export-module``),
and the training record (loss history, metrics). It is written by `rnn.checkpoint` and
`export.custom`, read here, and nowhere parsed by hand.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import ArtifactError, InputValueError
from runtime.manifest import CONFIG_NAME

from .data import SEQ_LENGTH, load_series, sine_series, sine_times

# The built-in cells and their state tensors, in forward's order (rnn.model builds them).
CELL_STATES: dict[str, tuple[str, ...]] = {"elman": ("h",), "gru": ("h",), "lstm": ("h", "c")}
CELL_KINDS = tuple(CELL_STATES)
CUSTOM = "custom"  # a user's step module, exported with export_module
MODEL_KINDS = (*CELL_KINDS, CUSTOM)

HIDDEN_SIZE = 6  # the reference model's context neurons
TRAINERS = ("reference", "bptt")  # the tutorial's per-point SGD; Adam through whole windows (rnn.train)
# Defaults of each trainer; a TrainConfig field left at None takes these.
TRAINER_DEFAULTS: dict[str, dict[str, Any]] = {
    "reference": {"epochs": 300, "lr": 0.1},
    "bptt": {"epochs": 1500, "lr": 0.01},
}


@dataclass(frozen=True)
class StateConfig:
    """One state tensor of a step module: its name and its initial row (same for every stream)."""

    name: str
    initial: tuple[float, ...]

    @property
    def size(self) -> int:
        return len(self.initial)


@dataclass(frozen=True)
class ModelConfig:
    """What a step module is: ``forward(x[B, input_size], *state) -> (y[B, output_size], *state)``."""

    kind: str
    input_size: int
    output_size: int
    states: tuple[StateConfig, ...]
    factory: str | None = None  # a user's module: "package.module:function" that builds it
    class_name: str | None = None  # a user's module: its class, for people reading the folder

    @classmethod
    def cell(cls, kind: str, input_size: int = 1, hidden_size: int = HIDDEN_SIZE, output_size: int = 1) -> ModelConfig:
        """A built-in cell: every state tensor ``hidden_size`` zeros, as the reference starts."""
        if kind not in CELL_STATES:
            raise InputValueError(f"cell must be one of {list(CELL_KINDS)}, got {kind!r}")
        states = tuple(StateConfig(name, (0.0,) * hidden_size) for name in CELL_STATES[kind])
        return cls(kind, input_size, output_size, states)

    @property
    def hidden_size(self) -> int:
        """The size of the first state tensor (the hidden state of every built-in cell)."""
        return self.states[0].size

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.states)

    @property
    def state_sizes(self) -> tuple[int, ...]:
        return tuple(s.size for s in self.states)

    @property
    def initial(self) -> tuple[tuple[float, ...], ...]:
        return tuple(s.initial for s in self.states)

    def sizes(self) -> dict[str, int]:
        return {"input_size": self.input_size, "hidden_size": self.hidden_size, "output_size": self.output_size}

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"kind": self.kind, **self.sizes()}
        if self.kind == CUSTOM:  # a built-in cell's states follow from its kind and hidden size
            document["factory"] = self.factory
            document["class"] = self.class_name
            document["states"] = [{"name": s.name, "size": s.size, "initial": list(s.initial)} for s in self.states]
        return document

    @classmethod
    def from_dict(cls, data: Any, where: str = "model") -> ModelConfig:
        if not isinstance(data, dict):
            raise ArtifactError(f"{where} must be an object, got {type(data).__name__}")
        kind = data.get("kind")
        if kind not in MODEL_KINDS:
            raise ArtifactError(f"{where}: model kind {kind!r} is not supported (expected one of {list(MODEL_KINDS)})")
        sizes = {key: data.get(key) for key in ("input_size", "hidden_size", "output_size")}
        if not all(_positive_int(v) for v in sizes.values()):
            raise ArtifactError(f"{where}: input_size, hidden_size and output_size must be positive integers")
        if kind != CUSTOM:
            return cls.cell(kind, sizes["input_size"], sizes["hidden_size"], sizes["output_size"])
        states = data.get("states")
        if not isinstance(states, list) or not states or not all(_state_ok(s) for s in states):
            raise ArtifactError(f"{where}: a custom model needs 'states': [{{'name': ..., 'initial': [numbers]}}, ...]")
        factory = data.get("factory")
        return cls(
            CUSTOM,
            sizes["input_size"],
            sizes["output_size"],
            tuple(StateConfig(s["name"], tuple(float(v) for v in s["initial"])) for s in states),
            factory=factory if isinstance(factory, str) else None,
            class_name=data.get("class") if isinstance(data.get("class"), str) else None,
        )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _state_ok(state: Any) -> bool:
    return (
        isinstance(state, dict)
        and isinstance(state.get("name"), str)
        and isinstance(state.get("initial"), list)
        and bool(state["initial"])
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in state["initial"])
    )


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved in config.json."""

    trainer: str = "reference"
    cell: str = "elman"
    seed: int = 0
    epochs: int | None = None  # None: the trainer's default (TRAINER_DEFAULTS)
    lr: float | None = None
    input_size: int = 1
    hidden_size: int = HIDDEN_SIZE
    output_size: int = 1
    seq_length: int = SEQ_LENGTH
    data: str | None = None  # a user's series file; None is the reference sine

    def resolved(self) -> TrainConfig:
        """A copy with the trainer's defaults filled in and every value checked."""
        if self.trainer not in TRAINERS:
            raise InputValueError(f"trainer must be one of {list(TRAINERS)}, got {self.trainer!r}")
        if self.cell not in CELL_KINDS:
            raise InputValueError(f"cell must be one of {list(CELL_KINDS)}, got {self.cell!r}")
        defaults = TRAINER_DEFAULTS[self.trainer]
        config = replace(
            self,
            epochs=defaults["epochs"] if self.epochs is None else self.epochs,
            lr=defaults["lr"] if self.lr is None else self.lr,
        )
        if config.epochs < 1:
            raise InputValueError(f"epochs must be >= 1, got {config.epochs}")
        if not (config.lr > 0 and math.isfinite(config.lr)):
            raise InputValueError(f"lr must be a positive number, got {config.lr}")
        for name in ("input_size", "hidden_size", "output_size", "seq_length"):
            if getattr(config, name) < 1:
                raise InputValueError(f"{name} must be >= 1, got {getattr(config, name)}")
        return config

    def model_config(self) -> ModelConfig:
        return ModelConfig.cell(self.cell, self.input_size, self.hidden_size, self.output_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "train") -> TrainConfig:
        if not isinstance(data, dict):
            raise ArtifactError(f"{where} must be an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        for key in ("trainer", "cell", "data"):
            if values.get(key) is not None and not isinstance(values[key], str):
                raise ArtifactError(f"{where}.{key} must be text, got {type(values[key]).__name__}")
        for key in ("seed", "epochs", "input_size", "hidden_size", "output_size", "seq_length"):
            value = values.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ArtifactError(f"{where}.{key} must be an integer, got {value!r:.40}")
        if values.get("lr") is not None and not isinstance(values["lr"], (int, float)):
            raise ArtifactError(f"{where}.lr must be a number, got {values['lr']!r:.40}")
        return cls(**values)


@dataclass(frozen=True)
class Config:
    """A trained folder's config.json: the model, how it was trained, and the training record."""

    model: ModelConfig
    train: TrainConfig | None = None  # None for a user's module exported with export_module
    loss_history: tuple[float, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def final_loss(self) -> float | None:
        return self.loss_history[-1] if self.loss_history else None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"model": self.model.to_dict()}
        if self.train is not None:
            document.update(
                train=self.train.to_dict(),
                final_loss=self.final_loss,
                loss_history=list(self.loss_history),
                metrics=dict(self.metrics),
            )
        return document

    @classmethod
    def from_dict(cls, data: Any, where: str = CONFIG_NAME) -> Config:
        if not isinstance(data, dict):
            raise ArtifactError(f"{where} must be a JSON object, got {type(data).__name__}")
        if "model" not in data:
            raise ArtifactError(f"{where} is missing the field 'model'")
        model = ModelConfig.from_dict(data["model"], f"{where}: model")
        train = TrainConfig.from_dict(data["train"], f"{where}: train") if data.get("train") is not None else None
        history = data.get("loss_history", [])
        metrics = data.get("metrics", {})
        if not isinstance(history, list) or not all(isinstance(v, (int, float)) for v in history):
            raise ArtifactError(f"{where}: loss_history must be a list of numbers")
        if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) for v in metrics.values()):
            raise ArtifactError(f"{where}: metrics must map names to numbers")
        return cls(model, train, tuple(float(v) for v in history), {str(k): float(v) for k, v in metrics.items()})

    def write(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def read_config(folder: str | os.PathLike) -> Config:
    """The ``config.json`` of a trained folder; ArtifactError if missing or invalid."""
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not folder.is_dir():
        raise ArtifactError(f"folder {str(folder)!r} does not exist")
    if not path.is_file():
        raise ArtifactError(f"{str(folder)!r} has no {CONFIG_NAME}: train into it first with 'rnn train --out'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path} is not valid JSON ({type(error).__name__}: {error})") from None
    return Config.from_dict(data, str(path))


@dataclass(frozen=True)
class Series:
    """A training series: its time points (indices for a user's series) and values (float64)."""

    times: np.ndarray
    values: np.ndarray
    is_sine: bool


def training_series(train: TrainConfig | None, *, recorded: bool = True) -> Series:
    """The series ``train`` names: the user's data file, else the reference sine.

    ``recorded``: the data file is the one a trained folder's config.json records (a missing
    file is then an ArtifactError saying so); otherwise it is the user's new input (DataError).
    """
    if train is not None and train.data:
        if recorded and not Path(train.data).is_file():
            raise ArtifactError(f"the training data {train.data!r} this model was trained on is no longer there")
        values = load_series(train.data)
        return Series(np.arange(len(values), dtype=np.float64), values, False)
    seq_length = train.seq_length if train is not None else SEQ_LENGTH
    return Series(sine_times(seq_length), sine_series(seq_length), True)

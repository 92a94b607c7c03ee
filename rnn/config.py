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
from runtime.jsonfile import parse_json
from runtime.manifest import BATCH_AXIS, CONFIG_NAME, Signature, StateSpec, TensorSpec

from .data import SEQ_LENGTH, load_series, open_regular, sine_series, sine_times

# The built-in cells and their state tensors, in forward's order (rnn.model builds them).
CELL_STATES: dict[str, tuple[str, ...]] = {"elman": ("h",), "gru": ("h",), "lstm": ("h", "c")}
CELL_KINDS = tuple(CELL_STATES)
CUSTOM = "custom"  # a user's step module, exported with export_module
MODEL_KINDS = (*CELL_KINDS, CUSTOM)

HIDDEN_SIZE = 6  # the reference model's context neurons
# Bounds on what a config (the CLI's options, or a config.json being read) may ask for, checked
# before anything is allocated. MAX_SIZE: the largest input, hidden or output size (a cell's
# weights grow with its square: 4096 is 16.8M weights per matrix, 270 MB for an LSTM).
MAX_SIZE = 4096
MAX_SEQ_LENGTH = 10**6  # points of the sine series
MAX_SEED = 2**32 - 1  # torch.manual_seed and numpy's generators both take 0 .. 2**32 - 1
MAX_CONFIG_BYTES = 64 << 20  # config.json: a few KB, or MBs for a long loss history
TRAIN_DATA_NAME = "train_data.npy"  # a user's series, copied into the trained folder by rnn.train
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
    # A user's module beyond the classic signature (several or token inputs, logits, states of
    # any rank, batch-first, sampled feedback): its tensors as the manifest will list them; the
    # sizes above are then its first input's, first output's and first state's values a stream.
    signature: Signature | None = None

    @classmethod
    def from_signature(
        cls, signature: Signature, factory: str | None = None, class_name: str | None = None
    ) -> ModelConfig:
        """A user's module described by a format 2 signature."""
        states = tuple(StateConfig(s.name, s.initial) for s in signature.state)
        return cls(
            CUSTOM,
            signature.inputs[0].count,
            signature.outputs[0].count,
            states,
            factory=factory,
            class_name=class_name,
            signature=signature,
        )

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
            if self.signature is not None:
                document["signature"] = self.signature.to_dict()
        return document

    @classmethod
    def from_dict(cls, data: Any, where: str = "model") -> ModelConfig:
        if not isinstance(data, dict):
            raise ArtifactError(f"{where} must be an object, got {type(data).__name__}")
        kind = data.get("kind")
        if kind not in MODEL_KINDS:
            raise ArtifactError(f"{where}: model kind {kind!r} is not supported (expected one of {list(MODEL_KINDS)})")
        if kind == CUSTOM and data.get("signature") is not None:
            factory, class_name = data.get("factory"), data.get("class")
            return cls.from_signature(
                Signature.from_dict(data["signature"], f"{where}.signature"),
                factory=factory if isinstance(factory, str) else None,
                class_name=class_name if isinstance(class_name, str) else None,
            )
        sizes = {key: data.get(key) for key in ("input_size", "hidden_size", "output_size")}
        if not all(_positive_int(v) for v in sizes.values()):
            raise ArtifactError(f"{where}: input_size, hidden_size and output_size must be positive integers")
        if any(v > MAX_SIZE for v in sizes.values()):
            raise ArtifactError(f"{where}: input_size, hidden_size and output_size must be at most {MAX_SIZE}")
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
            tuple(StateConfig(s["name"], tuple(_finite(v) for v in s["initial"])) for s in states),
            factory=factory if isinstance(factory, str) else None,
            class_name=data.get("class") if isinstance(data.get("class"), str) else None,
        )


def step_specs(model: ModelConfig) -> tuple[list[TensorSpec], list[TensorSpec], list[StateSpec]]:
    """The step model's contract (inputs, outputs, states): the module's signature where it has
    one, else input ``x``, output ``y`` and each state tensor NAME -> NAME_out."""
    if model.signature is not None:
        return list(model.signature.inputs), list(model.signature.outputs), list(model.signature.state)
    x = TensorSpec("x", (BATCH_AXIS, model.input_size))
    y = TensorSpec("y", (BATCH_AXIS, model.output_size))
    states = [StateSpec(s.name, (BATCH_AXIS, s.size), output=f"{s.name}_out", initial=s.initial) for s in model.states]
    return [x], [y], states


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _state_ok(state: Any) -> bool:
    return (
        isinstance(state, dict)
        and isinstance(state.get("name"), str)
        and isinstance(state.get("initial"), list)
        and 1 <= len(state["initial"]) <= MAX_SIZE
        and all(_finite(v) is not None for v in state["initial"])
    )


def _float(value: Any) -> float | None:
    """A JSON number as a float (NaN and infinity included); None for anything else, or for an
    integer too large for a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _finite(value: Any) -> float | None:
    """A JSON number as a finite float; None for anything else."""
    number = _float(value)
    return number if number is not None and math.isfinite(number) else None


def _shown(value: Any) -> str:
    """A value for a one-line error: its repr, cut short (a 4,000-digit integer is not shown)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**40:
        return f"an integer of {value.bit_length()} bits"
    return f"{value!r:.40}"


# The integer settings of a TrainConfig and their largest values (None: no bound); each is at
# least 1, the seed at least 0.
_INT_RANGES: dict[str, int | None] = {
    "seed": MAX_SEED,
    "epochs": None,
    "input_size": MAX_SIZE,
    "hidden_size": MAX_SIZE,
    "output_size": MAX_SIZE,
    "seq_length": MAX_SEQ_LENGTH,
}


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
        lr = _finite(config.lr)
        if lr is None or lr <= 0:
            raise InputValueError(f"lr must be a positive number, got {_shown(config.lr)}")
        for name, high in _INT_RANGES.items():
            low = 0 if name == "seed" else 1
            if getattr(config, name) < low:
                raise InputValueError(f"{name} must be >= {low}, got {getattr(config, name)}")
            if high is not None and getattr(config, name) > high:
                raise InputValueError(f"{name} must be at most {high}, got {getattr(config, name)}")
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
        for key in ("seed", "epochs", *_INT_RANGES):
            value = values.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ArtifactError(f"{where}.{key} must be an integer, got {_shown(value)}")
        for key, high in _INT_RANGES.items():
            value, low = values.get(key), 0 if key == "seed" else 1
            if value is not None and (value < low or (high is not None and value > high)):
                expected = f">= {low}" if high is None else f"between {low} and {high}"
                raise ArtifactError(f"{where}.{key} must be {expected}, got {_shown(value)}")
        if values.get("lr") is not None:
            lr = _finite(values["lr"])
            if lr is None or lr <= 0:
                raise ArtifactError(f"{where}.lr must be a positive number, got {_shown(values['lr'])}")
            values["lr"] = lr
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
        if not isinstance(history, list) or not all(_float(v) is not None for v in history):
            raise ArtifactError(f"{where}: loss_history must be a list of numbers")
        if not isinstance(metrics, dict) or not all(_float(v) is not None for v in metrics.values()):
            raise ArtifactError(f"{where}: metrics must map names to numbers")
        return cls(model, train, tuple(float(v) for v in history), {str(k): float(v) for k, v in metrics.items()})

    def write(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def read_config(folder: str | os.PathLike) -> Config:
    """The ``config.json`` of a trained folder; ArtifactError if missing, not a regular file,
    larger than ``MAX_CONFIG_BYTES``, not UTF-8 JSON (deep nesting and 5,000-digit numbers
    included) or invalid. Its contents are never quoted in the error."""
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not folder.is_dir():
        raise ArtifactError(f"folder {str(folder)!r} does not exist")
    if not path.exists():
        raise ArtifactError(f"{str(folder)!r} has no {CONFIG_NAME}: train into it first with 'rnn train --out'")
    with open_regular(path, ArtifactError, CONFIG_NAME) as handle:
        raw = handle.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ArtifactError(f"{path} is larger than the {MAX_CONFIG_BYTES} bytes a {CONFIG_NAME} may have")
    data = parse_json(raw, str(path), ArtifactError, finite_only=False)  # non-finite values: from_dict says which
    return Config.from_dict(data, str(path))


@dataclass(frozen=True)
class Series:
    """A training series: its time points (indices for a user's series) and values (float64)."""

    times: np.ndarray
    values: np.ndarray
    is_sine: bool


def training_series(
    train: TrainConfig | None, folder: str | os.PathLike | None = None, *, recorded: bool = True
) -> Series:
    """The series ``train`` names: the user's data file, else the reference sine.

    ``recorded`` (the default): ``train`` is what the config.json in ``folder`` records. Its
    data path (relative to ``folder``, as `rnn.train.train_folder` records it, or absolute) is
    read only if it resolves, symlinks followed, to a file inside ``folder``: a path that leaves
    the folder is refused with an ArtifactError before anything is read (a folder is not trusted
    to name files elsewhere; pass such a series on the command line instead), and so is any data
    path when ``folder`` is None. A missing file is an ArtifactError saying so.
    ``recorded=False``: the path is the user's own input, read where it is (DataError).
    """
    if train is not None and train.data:
        path = recorded_data_path(train.data, folder) if recorded else Path(train.data)
        values = load_series(path)
        return Series(np.arange(len(values), dtype=np.float64), values, False)
    seq_length = train.seq_length if train is not None else SEQ_LENGTH
    return Series(sine_times(seq_length), sine_series(seq_length), True)


def recorded_data_path(data: str, folder: str | os.PathLike | None) -> Path:
    """The file a config.json in ``folder`` records as its training ``data``, resolved; refused
    (ArtifactError, nothing read) unless it lies inside ``folder``."""
    if folder is None:
        raise ArtifactError(
            f"{CONFIG_NAME} records the training data {data!r:.200}, but not in which folder; it is not read"
        )
    root = Path(folder).resolve()
    try:
        path = (root / data).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        raise ArtifactError(f"the training data {data!r:.200} in {CONFIG_NAME} cannot be resolved") from None
    if not path.is_relative_to(root):
        raise ArtifactError(
            f"{CONFIG_NAME} in {str(folder)!r} records training data {data!r:.200} outside that folder; "
            "it is not read (give a series on the command line instead, e.g. predict --input or generate --x0)"
        )
    if not path.exists():
        raise ArtifactError(f"the training data {data!r:.200} this model was trained on is no longer there")
    return path

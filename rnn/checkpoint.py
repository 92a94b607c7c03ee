"""Saves and loads a trained folder: weights.pt (a state_dict, loaded weights_only) and config.json."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from runtime.errors import ArtifactError, InputValueError
from runtime.manifest import WEIGHTS_NAME

from .config import CUSTOM, Config, read_config
from .factory import resolve_factory
from .model import build_model
from .randomness import preserved_global_rng


@dataclass(frozen=True)
class Checkpoint:
    """A step module rebuilt from a folder, in eval mode, with the folder's config."""

    model: torch.nn.Module
    config: Config


def save_checkpoint(model: torch.nn.Module, config: Config, folder: str | os.PathLike) -> list[Path]:
    """Writes ``weights.pt`` (the module's state_dict) and ``config.json`` into an existing folder."""
    weights = Path(folder) / WEIGHTS_NAME
    torch.save(model.state_dict(), weights)
    return [weights, config.write(folder)]


def load_checkpoint(folder: str | os.PathLike, factory: Any = None) -> Checkpoint:
    """Rebuilds the model from ``weights.pt`` (weights_only) and ``config.json``.

    A built-in cell is rebuilt from its kind. A user's module (kind "custom") is built by
    ``factory`` (a callable, or "package.module:function"), which the caller must pass: the
    factory named in config.json is never imported on its own, so loading a folder runs no code.
    """
    config = read_config(folder)
    if config.model.kind == CUSTOM and factory is None:
        raise ArtifactError(
            f"{str(folder)!r} holds a user's step module ({_named_factory(config.model)}); "
            "pass its factory explicitly (rnn verify --factory package.module:function)"
        )
    with preserved_global_rng():  # its fresh parameters are overwritten: the caller's generators stay as they were
        model = resolve_factory(factory)() if config.model.kind == CUSTOM else build_model(config.model)
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise ArtifactError(f"{str(folder)!r} has no {WEIGHTS_NAME}")
    try:
        model.load_state_dict(load_weights(path))
    except (RuntimeError, TypeError, AttributeError) as error:
        raise ArtifactError(f"{path} does not fit the model in config.json: {str(error)[:300]}") from None
    model.eval()
    return Checkpoint(model, config)


def _named_factory(model: Any) -> str:
    """What config.json says builds a user's module: its factory, else its class (export_module without factory=)."""
    if model.factory is not None:
        return f"factory {model.factory!r} in config.json"
    return (f"class {model.class_name!r}; " if model.class_name else "") + "config.json names no factory"


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict from ``path`` with ``torch.load(weights_only=True)``: a file built to run code is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ArtifactError(
            f"{path} cannot be loaded as weights ({type(error).__name__}): {str(error)[:200]}"
        ) from None


def load_module_weights(module: torch.nn.Module, path: str | os.PathLike) -> None:
    """Loads the state_dict at ``path`` into ``module``; InputValueError if it does not fit."""
    try:
        module.load_state_dict(load_weights(path))
    except (RuntimeError, TypeError) as error:
        raise InputValueError(f"{path} does not fit the module: {str(error).splitlines()[0]}") from None

"""Exports a user's step module: any ``torch.nn.Module`` with ``forward(x, *state) -> (y, *state)``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rnn.checkpoint import save_checkpoint
from rnn.config import CUSTOM, MAX_SIZE, Config, ModelConfig, StateConfig
from rnn.folders import replacing_folder
from runtime.errors import ExportError, InputValueError

from .artifact import write_artifacts
from .errors import failing_as
from .onnx_export import resolve_opset

PROBE_BATCH = 3
PROBE_SEED = 0


def custom_config(
    input_size: int,
    output_size: int,
    states: Sequence[Any],
    *,
    factory: str | None = None,
    class_name: str | None = None,
) -> ModelConfig:
    """A ModelConfig from ``states`` given as (name, size), (name, size, initial) or dicts of those."""
    parsed = []
    for spec in states:
        if isinstance(spec, dict):
            spec = (spec.get("name"), spec.get("size"), spec.get("initial", 0.0))
        name, size, initial = (*spec, 0.0) if len(spec) == 2 else spec
        if not isinstance(name, str) or not name.isidentifier():
            raise InputValueError(f"a state name must be an identifier, got {name!r}")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_SIZE:
            raise InputValueError(f"state {name!r} needs an integer size from 1 to {MAX_SIZE}, got {size!r}")
        row = [float(initial)] * size if isinstance(initial, (int, float)) else [float(v) for v in initial]
        if len(row) != size:
            raise InputValueError(f"state {name!r}: initial has {len(row)} values, the size is {size}")
        parsed.append(StateConfig(name, tuple(row)))
    for label, size in (("input_size", input_size), ("output_size", output_size)):
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_SIZE:
            raise InputValueError(f"{label} must be an integer from 1 to {MAX_SIZE}, got {size!r}")
    names = [s.name for s in parsed]
    if not names:
        raise InputValueError("a step module needs at least one state tensor")
    if len(set(names)) != len(names) or {"x", "y"} & set(names):
        raise InputValueError(f"state names must be distinct and not 'x' or 'y', got {names}")
    return ModelConfig(CUSTOM, input_size, output_size, tuple(parsed), factory=factory, class_name=class_name)


def check_protocol(module: torch.nn.Module, config: ModelConfig) -> None:
    """Runs the module once on seeded random inputs (the caller's global RNG untouched): it must
    return (y, *state) with the right shapes and dtype."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    x = torch.randn(PROBE_BATCH, config.input_size, generator=generator)
    state = [torch.randn(PROBE_BATCH, size, generator=generator) for size in config.state_sizes]
    with failing_as(f"calling the module as forward(x, {', '.join(config.state_names)}) failed"), torch.no_grad():
        result = module(x, *state)
    expected = [(PROBE_BATCH, config.output_size), *((PROBE_BATCH, size) for size in config.state_sizes)]
    if not isinstance(result, (tuple, list)) or len(result) != len(expected):
        count = len(result) if isinstance(result, (tuple, list)) else 1
        raise ExportError(
            f"forward must return (y, {', '.join(config.state_names)}): {len(expected)} tensors, got {count}"
        )
    for name, tensor, shape in zip(("y", *config.state_names), result, expected):
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape or tensor.dtype != torch.float32:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ExportError(f"forward's {name} must be a float32 tensor of shape (batch, {shape[1]}), got {got}")


def export_module(
    module: torch.nn.Module,
    out: str | os.PathLike,
    *,
    input_size: int,
    output_size: int,
    states: Sequence[Any],
    exporter: str = "torchscript",
    opset: int | None = None,
    ort_format: bool = False,
    factory: str | None = None,
) -> Path:
    """Exports a user's step module into the artifact folder ``out`` (replaced whole).

    ``states`` lists the state tensors in forward's order: (name, size) or (name, size,
    initial), initial a number or ``size`` numbers (default 0). ``factory``
    ("package.module:function") is recorded so that `verify_folder` can rebuild the module.
    Raises ExportError naming the construct when the module cannot be scripted or exported.
    """
    model = custom_config(
        input_size,
        output_size,
        states,
        factory=factory,
        class_name=f"{type(module).__module__}.{type(module).__qualname__}",
    )
    opset = resolve_opset(exporter, opset)
    module = module.eval()
    check_protocol(module, model)
    config = Config(model)
    with replacing_folder(out) as staging:
        save_checkpoint(module, config, staging)
        write_artifacts(staging, module, config, opset=opset, ort_format=ort_format, exporter=exporter)
    return Path(out)

"""Exports a user's step module: any ``torch.nn.Module`` with ``forward(x, *state) -> (y, *state)``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from rnn.checkpoint import save_checkpoint
from rnn.config import CUSTOM, MAX_SIZE, Config, ModelConfig, StateConfig
from rnn.folders import replacing_folder
from rnn.randomness import preserved_global_rng
from runtime.errors import ExportError, InputValueError

from .artifact import step_specs, write_artifacts
from .errors import failing_as
from .onnx_export import resolve_opset
from .probe import PROBE_SEED, TORCH_DTYPES, probe_tensor

PROBE_BATCH = 3


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
    """Runs the module once on seeded probe inputs of the declared dtypes, uniform over INPUT_RANGE
    (`export.probe`; the caller's global RNG untouched): it must return (y, *state) with the right
    shapes and dtypes. A module whose parameters are not float32 is refused first, by name."""
    check_float32(module)
    x, y, states = step_specs(config)
    generator = torch.Generator().manual_seed(PROBE_SEED)
    inputs = [probe_tensor(spec, PROBE_BATCH, generator) for spec in (x, *states)]
    with failing_as(f"calling the module as forward(x, {', '.join(config.state_names)}) failed"), torch.no_grad():
        result = module(*inputs)
    expected = [y, *states]
    if not isinstance(result, (tuple, list)) or len(result) != len(expected):
        count = len(result) if isinstance(result, (tuple, list)) else 1
        raise ExportError(
            f"forward must return (y, {', '.join(config.state_names)}): {len(expected)} tensors, got {count}"
        )
    for name, tensor, spec in zip(("y", *config.state_names), result, expected):
        shape = (PROBE_BATCH, *spec.shape[1:])
        wanted = (shape, TORCH_DTYPES[spec.dtype])
        if isinstance(tensor, torch.Tensor) and (tuple(tensor.shape), tensor.dtype) == wanted:
            continue
        got = (
            f"{tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"
            if isinstance(tensor, torch.Tensor)
            else type(tensor).__name__
        )
        raise ExportError(f"forward's {name} must be a {spec.dtype} tensor of shape (batch, {shape[1]}), got {got}")


def check_float32(module: torch.nn.Module) -> None:
    """ExportError naming the first floating parameter or buffer that is not float32, and what to do:
    the exported models compute in float32 and verification compares them with the module as it is."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    for name, tensor in tensors:
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            dtype = str(tensor.dtype).removeprefix("torch.")
            raise ExportError(
                f"the module's {name!r} is {dtype}; the exported models compute in float32: "
                f"export module.float() (a float32 copy: copy.deepcopy(module).float())"
            )


@contextlib.contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[None]:
    """The module (every submodule) in eval mode inside the block, each back in its own mode after."""
    modes = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training


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

    The module is exported in eval mode and left in the mode it came in; the caller's global
    random generators are left as they were (torch's is seeded with PROBE_SEED meanwhile).
    With the dynamo exporter a module TorchScript cannot compile still exports: the folder then
    has no TorchScript file, and its manifest says why (``model.torchscript_skipped``).
    """
    model = custom_config(
        input_size,
        output_size,
        states,
        factory=factory,
        class_name=f"{type(module).__module__}.{type(module).__qualname__}",
    )
    opset = resolve_opset(exporter, opset)
    config = Config(model)
    with preserved_global_rng(PROBE_SEED), evaluating(module):
        check_protocol(module, model)
        with replacing_folder(out) as staging:
            save_checkpoint(module, config, staging)
            write_artifacts(staging, module, config, opset=opset, ort_format=ort_format, exporter=exporter)
    return Path(out)

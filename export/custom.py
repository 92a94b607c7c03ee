"""Exports a user's step module: any ``torch.nn.Module`` with ``forward(x, *state) -> (y, *state)``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from rnn.config import CONFIG_NAME, WEIGHTS_NAME
from rnn.folders import prepare_output, replacing_folder
from rnn.model import StepInfo
from runtime.errors import InputValueError, ToolkitError

from .onnx_export import OPSET

PROBE_BATCH = 3


class ExportError(ToolkitError):
    """A module cannot be scripted or exported; the message names the construct that failed."""


def describe_failure(error: BaseException) -> str:
    """One line from a TorchScript or exporter error: its first line and the source it points at."""
    lines = [line.rstrip() for line in str(error).splitlines() if line.strip()]
    head = next((line.strip() for line in lines if not line.strip().startswith(("File ", "Traceback"))), type(error).__name__)
    code = ""
    for index, line in enumerate(lines):
        if "<--- HERE" in line and index > 0:
            code = lines[index - 1].strip()
            break
    return f"{head[:300]}" + (f" (at: {code[:160]})" if code else "")


def state_info(input_size: int, output_size: int, states: Sequence[Any]) -> StepInfo:
    """A StepInfo from ``states`` given as (name, size), (name, size, initial) or dicts of those."""
    names, rows = [], []
    for spec in states:
        if isinstance(spec, dict):
            spec = (spec.get("name"), spec.get("size"), spec.get("initial", 0.0))
        name, size, initial = (*spec, 0.0) if len(spec) == 2 else spec
        if not isinstance(name, str) or not name.isidentifier():
            raise InputValueError(f"a state name must be an identifier, got {name!r}")
        if not isinstance(size, int) or size < 1:
            raise InputValueError(f"state {name!r} needs a positive integer size, got {size!r}")
        row = [float(initial)] * size if isinstance(initial, (int, float)) else [float(v) for v in initial]
        if len(row) != size:
            raise InputValueError(f"state {name!r}: initial has {len(row)} values, the size is {size}")
        names.append(name)
        rows.append(tuple(row))
    if not names:
        raise InputValueError("a step module needs at least one state tensor")
    if len(set(names)) != len(names) or {"x", "y"} & set(names):
        raise InputValueError(f"state names must be distinct and not 'x' or 'y', got {names}")
    return StepInfo("custom", input_size, output_size, tuple(names), tuple(rows))


def check_protocol(module: torch.nn.Module, info: StepInfo) -> None:
    """Runs the module once on random inputs: it must return (y, *state) with the right shapes."""
    x = torch.randn(PROBE_BATCH, info.input_size)
    state = [torch.randn(PROBE_BATCH, size) for size in info.state_sizes]
    try:
        with torch.no_grad():
            result = module(x, *state)
    except Exception as error:  # the user's code: any failure is reported, never hidden
        raise ExportError(f"calling the module as forward(x, {', '.join(info.state_names)}) failed: "
                          f"{type(error).__name__}: {describe_failure(error)}") from None
    expected = [(PROBE_BATCH, info.output_size), *((PROBE_BATCH, size) for size in info.state_sizes)]
    if not isinstance(result, (tuple, list)) or len(result) != len(expected):
        count = len(result) if isinstance(result, (tuple, list)) else 1
        raise ExportError(f"forward must return (y, {', '.join(info.state_names)}): {len(expected)} tensors, got {count}")
    for name, tensor, shape in zip(("y", *info.state_names), result, expected):
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
    opset: int = OPSET,
    ort_format: bool = False,
    factory: str | None = None,
) -> Path:
    """Exports a user's step module into the artifact folder ``out`` (replaced whole).

    ``states`` lists the state tensors in forward's order: (name, size) or (name, size,
    initial), initial a number or ``size`` numbers (default 0). ``factory``
    ("package.module:function") is recorded so that `verify_folder` can rebuild the module.
    Raises ExportError naming the construct when the module cannot be scripted or exported.
    """
    from .artifact import write_artifacts  # export.artifact imports this module's neighbours

    info = state_info(input_size, output_size, states)
    module = module.eval()
    check_protocol(module, info)
    target = Path(out)
    prepare_output(target)
    document = {
        "model": {
            "kind": "custom",
            "factory": factory,
            "class": f"{type(module).__module__}.{type(module).__qualname__}",
            **info.sizes(),
            "states": [{"name": n, "size": len(r), "initial": list(r)} for n, r in zip(info.state_names, info.initial)],
        },
    }
    with replacing_folder(target) as staging:
        torch.save(module.state_dict(), staging / WEIGHTS_NAME)
        (staging / CONFIG_NAME).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        write_artifacts(staging, module, info, document, opset, ort_format, exporter)
    return target

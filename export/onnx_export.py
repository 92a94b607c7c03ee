"""Exports a step module's step.onnx (TorchScript-based or torch.export-based exporter) and checks it."""

from __future__ import annotations

import logging
import os
import warnings

import onnx
import torch

from runtime import __version__
from runtime.errors import ExportError, InputValueError
from runtime.manifest import BATCH_AXIS, StateSpec, TensorSpec

OPSET = 17  # pinned: every onnxruntime since 1.14 runs it; raise it only with a reason
MIN_OPSET = 15  # the fused loop models slice shapes with Shape(start, end), new in opset 15
EXPORT_BATCH = 2  # the example batch the graph is traced with; tests run other batches

EXPORTERS = ("torchscript", "dynamo")
DYNAMO_MIN_OPSET = 18  # the torch.export-based exporter writes opset 18 and up
DEFAULT_OPSETS = {"torchscript": OPSET, "dynamo": DYNAMO_MIN_OPSET}
# The TorchScript exporter's warning on every recurrent layer (GRU, LSTM, RNN) at a batch other than 1.
RNN_WARNING = r"Exporting a model to ONNX with a batch_size other than 1, with a variable length with"


def resolve_opset(exporter: str, opset: int | None) -> int:
    """The opset to export at: the exporter's default for None; a typed error for one it cannot write."""
    if exporter not in EXPORTERS:
        raise InputValueError(f"exporter must be one of {list(EXPORTERS)}, got {exporter!r}")
    if opset is None:
        return DEFAULT_OPSETS[exporter]
    if opset < MIN_OPSET:
        raise InputValueError(f"the exported models need opset {MIN_OPSET} or later, got opset {opset}")
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise InputValueError(
            f"the dynamo exporter writes opset {DYNAMO_MIN_OPSET} or later, got opset {opset}; "
            f"leave the opset out or use the torchscript exporter for opset {opset}"
        )
    return opset


def stamp_model(model: onnx.ModelProto, metadata: dict[str, str], **extra: str) -> None:
    """Adds ``metadata``, the toolkit's version and ``extra`` to ``metadata_props``; names the producer."""
    for key, value in {**metadata, "toolkit_version": __version__, **extra}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    model.producer_name = "rnn-toolkit"
    model.producer_version = __version__


def export_step_onnx(
    module: torch.nn.Module,
    path: str | os.PathLike,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    state: list[StateSpec],
    metadata: dict[str, str],
    opset: int | None = None,
    exporter: str = "torchscript",
) -> onnx.ModelProto:
    """Writes ``step.onnx`` with inputs ``(*inputs, *state)`` and outputs ``(*outputs, *state outputs)``.

    ``exporter`` "torchscript" exports ``module`` (a scripted module) with the TorchScript-based
    exporter; "dynamo" exports ``module`` (an eager module) through ``torch.export`` (``opset``
    from `resolve_opset`). Every first axis is the dynamic ``batch`` axis. The saved model passes the full
    checker and strict shape inference, and carries ``metadata`` in its ``metadata_props``.
    """
    input_names = [t.name for t in inputs] + [s.name for s in state]
    output_names = [t.name for t in outputs] + [s.output for s in state]
    examples = tuple(example_tensor(t) for t in (*inputs, *state))
    axes = {t.name: t.batch_axis for t in (*inputs, *state)}
    axes.update({t.name: t.batch_axis for t in outputs})
    axes.update({s.output: s.batch_axis for s in state})
    opset = resolve_opset(exporter, opset)
    if exporter == "dynamo":
        _export_dynamo(module, examples, path, input_names, output_names, opset, axes)
    else:
        _export_torchscript(module, examples, path, input_names, output_names, opset, axes)
    model = onnx.load(str(path))
    stamp_model(model, metadata, exporter=exporter)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    _check_io(inferred, input_names, output_names, axes)
    onnx.save(model, str(path))
    return model


def example_tensor(spec: TensorSpec) -> torch.Tensor:
    """The zeros the graph is traced with: ``spec``'s shape at EXPORT_BATCH, int64 ids 0 for tokens."""
    dtype = torch.int64 if spec.dtype == "int64" else torch.float32
    return torch.zeros(spec.shape_for(EXPORT_BATCH), dtype=dtype)


def _export_dynamo(module, examples, path, input_names, output_names, opset, axes) -> None:
    batch = torch.export.Dim(BATCH_AXIS)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it logs a line per torchvision op it skips
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                examples,
                str(path),
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=tuple({axes[name]: batch} for name in input_names),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    finally:
        quiet.setLevel(level)
    model = onnx.load(str(path))
    for value in (*model.graph.input, *model.graph.output):  # name the batch axis as the contract says
        value.type.tensor_type.shape.dim[axes[value.name]].dim_param = BATCH_AXIS
    onnx.save(model, str(path))


def _export_torchscript(scripted, examples, path, input_names, output_names, opset, axes) -> None:
    dynamic_axes = {name: {axes[name]: BATCH_AXIS} for name in input_names + output_names}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export; the design keeps
        # it as the default (NOTES.md), so its deprecation warnings are expected here.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        # Said of every nn.GRU/nn.LSTM/nn.RNN exported at a batch other than 1 (RNN_WARNING); it is
        # harmless here: the step protocol makes every initial state an input, as it asks.
        warnings.filterwarnings("ignore", message=RNN_WARNING, category=UserWarning)
        torch.onnx.export(
            scripted,
            examples,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )


def _check_io(model: onnx.ModelProto, input_names: list[str], output_names: list[str], axes: dict[str, int]) -> None:
    """The graph's inputs and outputs must be exactly the names asked for, batch axis symbolic."""
    got_inputs = [i.name for i in model.graph.input]
    got_outputs = [o.name for o in model.graph.output]
    if got_inputs != input_names or got_outputs != output_names:
        raise ExportError(
            f"the exported graph has inputs {got_inputs} and outputs {got_outputs}, "
            f"expected {input_names} and {output_names}"
        )
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        axis = axes[value.name]
        if len(dims) <= axis or dims[axis].dim_param != BATCH_AXIS:
            raise ExportError(f"the exported tensor {value.name!r} has no free {BATCH_AXIS!r} axis at axis {axis}")

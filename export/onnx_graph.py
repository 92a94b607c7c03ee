"""ONNX graph building helpers shared by the builders of the fused forms (constants, value infos, the model)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .onnx_export import stamp_model

IR_VERSION = 8  # what opset 17 needs and what the step model gets from torch: older runtimes
#                (onnxruntime-node, mobile builds) refuse newer IR versions than they know
UNROLL = 10  # steps per Loop iteration of every fused form: amortises the per-iteration overhead (NOTES.md,
#              benchmarks/sampling.py)
FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def const(name: str, value) -> onnx.TensorProto:
    """An initializer holding ``value`` as it is (numpy's dtype)."""
    return numpy_helper.from_array(np.asarray(value), name)


def ints(name: str, *values: int) -> onnx.TensorProto:
    """An int64 (len(values),) initializer."""
    return const(name, np.array(values, dtype=np.int64))


def value(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def typed(info: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    """``info`` (its type and shape) under another name."""
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(info)
    copy.name = name
    return copy


def finish_model(
    graph: onnx.GraphProto,
    opset: int,
    form: str,
    metadata: dict[str, str],
    imports: list[onnx.OperatorSetIdProto] | None = None,
    functions: list[onnx.FunctionProto] | None = None,
) -> onnx.ModelProto:
    """``graph`` as a checked model of ``form``: the default domain at ``opset`` (plus ``imports`` of
    other domains and local ``functions``, a step model's), IR_VERSION pinned, metadata stamped."""
    opsets = [helper.make_opsetid("", opset), *(o for o in imports or () if o.domain not in ("", "ai.onnx"))]
    model = helper.make_model(graph, opset_imports=opsets, functions=functions or [])
    model.ir_version = IR_VERSION
    stamp_model(model, metadata, form=form)
    onnx.checker.check_model(model, full_check=True)
    return model


def classic_io(input_size: int, hidden_size: int, output_size: int, rollout: bool):
    """The classic signature's fused forms' (inputs, outputs) value infos, state ``h`` (batch, hidden):
    sequence ``(xs, h) -> (ys, h_out)``, rollout ``(x0, h, steps) -> (ys, h_out)``."""
    first = value("x0", FLOAT, ["batch", input_size]) if rollout else value("xs", FLOAT, ["steps", "batch", input_size])
    inputs = [first, value("h", FLOAT, ["batch", hidden_size])]
    if rollout:
        inputs.append(value("steps", INT64, [1]))
    outputs = [value("ys", FLOAT, ["steps", "batch", output_size]), value("h_out", FLOAT, ["batch", hidden_size])]
    return inputs, outputs

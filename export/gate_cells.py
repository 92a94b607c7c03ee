"""Rewrites a step graph's one-step LSTM kernels as Gemm and element-wise ops (faster in a fused loop from 16 rows).

onnxruntime's ``LSTM`` kernel costs more than two ``Gemm`` and nine element-wise ops from about 16
rows up: measured on benchmarks/forecaster.py's model (two LSTMCell(24), rollout_loop, 1000 steps, one
core of the 2-core EPYC) 0.84x at batch 1, 0.91x at 4, 1.06x at 16, 1.15x at 64, 1.31x at 256;
`export.step_loops` runs the cells from LOOP_CELLS_MIN_BATCH rows (an ``If`` on the batch size).
The arithmetic is the kernel's (ONNX gate order i, o, f, c; ``c' = f * c + i * tanh(g)``,
``h' = o * tanh(c')``) with the two biases added into one, rounded in another order: outputs agree
with the kernel's to a few float32 ulps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .step_graph import StepGraph

_P = "cells/"  # prefix of every name this module adds
LOOP_CELLS_MIN_BATCH = 16  # from this batch size the fused loops compute LSTM nodes as cells (measured above)
_STANDARD = ("", "ai.onnx")


def _attribute(node: onnx.NodeProto, name: str, default=None):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)


def _plain(node: onnx.NodeProto) -> bool:
    """A forward LSTM with the default activations, no clip, no coupled input/forget gate, layout 0."""
    activations = [a.decode() if isinstance(a, bytes) else a for a in _attribute(node, "activations", [])]
    return (
        _attribute(node, "direction", b"forward") in (b"forward", "forward")
        and activations in ([], ["Sigmoid", "Tanh", "Tanh"])
        and _attribute(node, "clip") is None
        and _attribute(node, "input_forget", 0) == 0
        and _attribute(node, "layout", 0) == 0
    )


def lstm_weights(node: onnx.NodeProto, constants: dict, dims: dict) -> tuple[np.ndarray, ...] | None:
    """(W^T (I, 4H), R^T (H, 4H), bias (4H,)) of an ``LSTM`` node `lstm_cells` can rewrite: one step
    (the sequence axis of X static 1) from given initial states, constant float32 weights, no
    sequence lengths or peepholes; else None."""
    if node.domain not in _STANDARD or node.op_type != "LSTM" or not _plain(node):
        return None
    x, w, r, b, lengths, initial_h, initial_c, peepholes = (list(node.input) + [""] * 8)[:8]
    if lengths or peepholes or not initial_h or not initial_c or (dims.get(x) or [None])[0] != 1:
        return None
    if w not in constants or r not in constants or (b and b not in constants):
        return None
    hidden = _attribute(node, "hidden_size")
    W, R = constants[w], constants[r]
    if not isinstance(hidden, int) or W.dtype != np.float32 or W.ndim != 3 or W.shape[:2] != (1, 4 * hidden):
        return None
    if R.shape != (1, 4 * hidden, hidden) or R.dtype != np.float32:
        return None
    B = constants[b].reshape(-1) if b else np.zeros(8 * hidden, np.float32)
    if B.shape != (8 * hidden,):
        return None
    bias = (B[: 4 * hidden] + B[4 * hidden :]).astype(np.float32)
    return np.ascontiguousarray(W[0].T), np.ascontiguousarray(R[0].T), bias


def _cell_nodes(node: onnx.NodeProto, q: str, hidden: int) -> list[onnx.NodeProto]:
    """The cell of ``node`` on (batch, n) values, weights ``{q}Wt``/``{q}Rt``/``{q}bias``, into the
    node's own outputs (Y (1, 1, batch, H), Y_h and Y_c (1, batch, H))."""
    n = helper.make_node
    x, _, _, _, _, initial_h, initial_c = (list(node.input) + [""] * 7)[:7]
    nodes = [
        n("Squeeze", [x, f"{_P}axes0"], [f"{q}x"]),
        n("Squeeze", [initial_h, f"{_P}axes0"], [f"{q}h"]),
        n("Squeeze", [initial_c, f"{_P}axes0"], [f"{q}c"]),
        n("Gemm", [f"{q}x", f"{q}Wt", f"{q}bias"], [f"{q}gx"]),
        n("Gemm", [f"{q}h", f"{q}Rt", f"{q}gx"], [f"{q}g"]),  # (batch, 4H): gates i, o, f, c
        n("Split", [f"{q}g", f"{q}split"], [f"{q}g3", f"{q}gc"], axis=1),
        n("Sigmoid", [f"{q}g3"], [f"{q}s3"]),
        n("Tanh", [f"{q}gc"], [f"{q}cc"]),
        n("Split", [f"{q}s3", f"{q}thirds"], [f"{q}i", f"{q}o", f"{q}f"], axis=1),
        n("Mul", [f"{q}f", f"{q}c"], [f"{q}fc"]),
        n("Mul", [f"{q}i", f"{q}cc"], [f"{q}ic"]),
        n("Add", [f"{q}fc", f"{q}ic"], [f"{q}c_new"]),
        n("Tanh", [f"{q}c_new"], [f"{q}tc"]),
        n("Mul", [f"{q}o", f"{q}tc"], [f"{q}h_new"]),
    ]
    y, y_h, y_c = (list(node.output) + ["", "", ""])[:3]
    if y:
        nodes.append(n("Unsqueeze", [f"{q}h_new", f"{_P}axes01"], [y]))
    if y_h:
        nodes.append(n("Unsqueeze", [f"{q}h_new", f"{_P}axes0"], [y_h]))
    if y_c:
        nodes.append(n("Unsqueeze", [f"{q}c_new", f"{_P}axes0"], [y_c]))
    return nodes


def lstm_cells(step: StepGraph) -> StepGraph | None:
    """The step with each one-step ``LSTM`` node (`lstm_weights`) computed as a cell of Gemm and
    element-wise ops, or None when it has none. The ``Squeeze``/``Unsqueeze`` around each cell
    cancel against the step's own (`export.step_graph.bypass_squeezes_of_unsqueezes`)."""
    body: list[onnx.NodeProto] = []
    weights: list[onnx.TensorProto] = []
    for index, node in enumerate(step.body):
        found = lstm_weights(node, step.constants, step.dims)
        if found is None:
            body.append(node)
            continue
        hidden = _attribute(node, "hidden_size")
        q = f"{_P}lstm{index}/"
        weights += [numpy_helper.from_array(value, f"{q}{name}") for name, value in zip(("Wt", "Rt", "bias"), found)]
        weights += [
            numpy_helper.from_array(np.array([3 * hidden, hidden], np.int64), f"{q}split"),
            numpy_helper.from_array(np.array([hidden] * 3, np.int64), f"{q}thirds"),
        ]
        body += _cell_nodes(node, q, hidden)
    if not weights:
        return None
    weights += [
        numpy_helper.from_array(np.array([0], np.int64), f"{_P}axes0"),
        numpy_helper.from_array(np.array([0, 1], np.int64), f"{_P}axes01"),
    ]
    constants = {**step.constants, **{t.name: numpy_helper.to_array(t) for t in weights}}
    return dataclasses.replace(step, body=body, initializers=[*step.initializers, *weights], constants=constants)

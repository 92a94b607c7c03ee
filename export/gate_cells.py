"""Rewrites a step graph's one-step GRU/LSTM kernels as Gemm and element-wise ops (faster in fused loops).

`gru_cells`: the sampling rollouts' GRU layers, from `runtime.fused.SAMPLING_CELLS_MIN_BATCH` rows
(measured there). `lstm_cells`: onnxruntime's ``LSTM`` kernel costs more than two ``Gemm`` and nine
element-wise ops from about 16 rows up: measured on benchmarks/forecaster.py's model (two
LSTMCell(24), rollout_loop, 1000 steps, one core of the 2-core EPYC) 0.84x at batch 1, 0.91x at 4,
1.06x at 16, 1.15x at 64, 1.31x at 256; `export.step_loops` runs the cells from
LOOP_CELLS_MIN_BATCH rows (an ``If`` on the batch size). The arithmetic is the kernels' (ONNX gate
order i, o, f, c for the LSTM, ``c' = f * c + i * tanh(g)``, ``h' = o * tanh(c')``; z, r, h for the
GRU, ``h = n + z * (h_prev - n)``) with the biases added in another order: outputs agree with the
kernels' to a few float32 ulps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .onnx_graph import ints
from .step_graph import StepGraph

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


def _cell_nodes(node: onnx.NodeProto, q: str, hidden: int, prefix: str) -> list[onnx.NodeProto]:
    """The cell of ``node`` on (batch, n) values, weights ``{q}Wt``/``{q}Rt``/``{q}bias``, into the
    node's own outputs (Y (1, 1, batch, H), Y_h and Y_c (1, batch, H))."""
    n = helper.make_node
    x, _, _, _, _, initial_h, initial_c = (list(node.input) + [""] * 7)[:7]
    nodes = [
        n("Squeeze", [x, f"{prefix}lstm_axes0"], [f"{q}x"]),
        n("Squeeze", [initial_h, f"{prefix}lstm_axes0"], [f"{q}h"]),
        n("Squeeze", [initial_c, f"{prefix}lstm_axes0"], [f"{q}c"]),
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
        nodes.append(n("Unsqueeze", [f"{q}h_new", f"{prefix}lstm_axes01"], [y]))
    if y_h:
        nodes.append(n("Unsqueeze", [f"{q}h_new", f"{prefix}lstm_axes0"], [y_h]))
    if y_c:
        nodes.append(n("Unsqueeze", [f"{q}c_new", f"{prefix}lstm_axes0"], [y_c]))
    return nodes


def lstm_cells(step: StepGraph, prefix: str) -> StepGraph | None:
    """The step with each one-step ``LSTM`` node (`lstm_weights`) computed as a cell of Gemm and
    element-wise ops, or None when it has none; every name it adds starts with ``prefix``. The
    ``Squeeze``/``Unsqueeze`` around each cell cancel against the step's own
    (`export.step_graph.bypass_squeezes_of_unsqueezes`)."""
    body: list[onnx.NodeProto] = []
    weights: list[onnx.TensorProto] = []
    for index, node in enumerate(step.body):
        found = lstm_weights(node, step.constants, step.dims)
        if found is None:
            body.append(node)
            continue
        hidden = _attribute(node, "hidden_size")
        q = f"{prefix}lstm{index}/"
        weights += [numpy_helper.from_array(value, f"{q}{name}") for name, value in zip(("Wt", "Rt", "bias"), found)]
        weights += [
            numpy_helper.from_array(np.array([3 * hidden, hidden], np.int64), f"{q}split"),
            numpy_helper.from_array(np.array([hidden] * 3, np.int64), f"{q}thirds"),
        ]
        body += _cell_nodes(node, q, hidden, prefix)
    if not weights:
        return None
    weights += [
        numpy_helper.from_array(np.array([0], np.int64), f"{prefix}lstm_axes0"),
        numpy_helper.from_array(np.array([0, 1], np.int64), f"{prefix}lstm_axes01"),
    ]
    constants = {**step.constants, **{t.name: numpy_helper.to_array(t) for t in weights}}
    return dataclasses.replace(step, body=body, initializers=[*step.initializers, *weights], constants=constants)


def gru_weights(node: onnx.NodeProto, constants: dict, dims: dict) -> tuple[np.ndarray, ...] | None:
    """(W (3H, I), R (3H, H), Wb (3H,), Rb (3H,)) of a ``GRU`` node `gru_cells` can rewrite: one
    forward step of torch's GRU (linear_before_reset 1, default activations, no clip, layout 0)
    from a given initial state, with constant weights; else None."""
    if node.domain not in ("", "ai.onnx") or node.op_type != "GRU":
        return None
    activations = [a.decode() if isinstance(a, bytes) else a for a in _attribute(node, "activations", [])]
    plain = (
        _attribute(node, "linear_before_reset", 0) == 1
        and _attribute(node, "direction", b"forward") in (b"forward", "forward")
        and activations in ([], ["Sigmoid", "Tanh"])
        and _attribute(node, "clip") is None
        and _attribute(node, "layout", 0) == 0
    )
    inputs = list(node.input) + [""] * (6 - len(node.input))
    x, w, r, b, lengths, initial = inputs[:6]
    if not plain or lengths or not initial or (dims.get(x) or [None])[0] != 1:
        return None
    if w not in constants or r not in constants or (b and b not in constants):
        return None
    hidden = _attribute(node, "hidden_size")
    if not isinstance(hidden, int) or hidden < 1:
        return None
    W, R = constants[w], constants[r]
    if W.ndim != 3 or R.ndim != 3 or W.shape[0] != 1 or W.shape[1] != 3 * hidden or R.shape != (1, 3 * hidden, hidden):
        return None
    B = constants[b].reshape(-1) if b else np.zeros(6 * hidden, np.float32)
    if B.shape != (6 * hidden,) or W.dtype != np.float32:
        return None
    return W[0], R[0], B[: 3 * hidden], B[3 * hidden :]


def gru_cells(step: StepGraph, prefix: str) -> StepGraph | None:
    """The step with each one-step ``GRU`` node (`_cell_weights`) computed as two ``Gemm`` and the
    gates' element-wise ops, or None when it has none. onnxruntime's GRU kernel costs more than
    that from a few rows up: measured (benchmarks/sampling.py's model, one core of the 2-core
    EPYC) 1.1x at batch 8, 1.2x at 16-32, 1.3x at 64, even at 4, 0.85x at batch 1; the rollouts
    run this form from SAMPLING_CELLS_MIN_BATCH rows. Same arithmetic as the kernel (ONNX gate
    order z, r, h; ``h = n + z * (h_prev - n)``), rounded in another order: tokens agree with the
    kernel's but at float32 ties."""
    n = helper.make_node
    body: list[onnx.NodeProto] = []
    weights: list[onnx.TensorProto] = []
    squeezed: dict[str, str] = {}  # a rewritten cell's Y_h -> its (batch, H) state
    for index, node in enumerate(step.body):
        found = gru_weights(node, step.constants, step.dims)
        if found is None:
            body.append(node)
            continue
        hidden = _attribute(node, "hidden_size")
        q = f"{prefix}cell{index}/"
        for name, value in zip(("W", "R", "Wb", "Rb"), found):
            weights.append(numpy_helper.from_array(np.ascontiguousarray(value), f"{q}{name}"))
        x, h = node.input[0], node.input[5]
        for source, name in ((x, f"{q}x"), (h, f"{q}h")):
            if source not in squeezed:  # else: the (batch, H) state of the cell that made it
                body.append(n("Squeeze", [source, f"{prefix}axes0"], [name]))
        x, h = squeezed.get(x, f"{q}x"), squeezed.get(h, f"{q}h")
        body += [
            n("Gemm", [x, f"{q}W", f"{q}Wb"], [f"{q}gi"], transB=1),
            n("Gemm", [h, f"{q}R", f"{q}Rb"], [f"{q}gh"], transB=1),
            n("Split", [f"{q}gi", f"{q}split"], [f"{q}gi_zr", f"{q}gi_h"], axis=1),
            n("Split", [f"{q}gh", f"{q}split"], [f"{q}gh_zr", f"{q}gh_h"], axis=1),
            n("Add", [f"{q}gi_zr", f"{q}gh_zr"], [f"{q}zr_in"]),
            n("Sigmoid", [f"{q}zr_in"], [f"{q}zr"]),
            n("Split", [f"{q}zr", f"{q}halves"], [f"{q}z", f"{q}r"], axis=1),
            n("Mul", [f"{q}r", f"{q}gh_h"], [f"{q}rh"]),
            n("Add", [f"{q}gi_h", f"{q}rh"], [f"{q}n_in"]),
            n("Tanh", [f"{q}n_in"], [f"{q}n"]),
            n("Sub", [h, f"{q}n"], [f"{q}d"]),
            n("Mul", [f"{q}z", f"{q}d"], [f"{q}zd"]),
            n("Add", [f"{q}n", f"{q}zd"], [f"{q}h_new"]),
        ]
        weights += [ints(f"{q}split", 2 * hidden, hidden), ints(f"{q}halves", hidden, hidden)]
        y, y_h = (list(node.output) + ["", ""])[:2]
        if y:
            body.append(n("Unsqueeze", [f"{q}h_new", f"{prefix}axes01"], [y]))
        if y_h:
            body.append(n("Unsqueeze", [f"{q}h_new", f"{prefix}axes0"], [y_h]))
            squeezed[y_h] = f"{q}h_new"
    if not weights:
        return None
    weights += [ints(f"{prefix}axes0", 0), ints(f"{prefix}axes01", 0, 1)]
    constants = {**step.constants, **{t.name: numpy_helper.to_array(t) for t in weights}}
    return dataclasses.replace(step, body=body, initializers=[*step.initializers, *weights], constants=constants)

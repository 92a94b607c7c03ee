"""Builds ONNX models that run a whole GRU or LSTM loop (with its linear readout) in one onnxruntime run.

The built-in ``gru`` and ``lstm`` cells (`rnn.model.GRUStep`, `rnn.model.LSTMStep`: torch's
``GRUCell``/``LSTMCell`` and ``y = h @ W_out^T + b_out``). Forms, with the contracts of
`runtime.fused` (the same as the Elman forms of `export.fused`):

- ``sequence_rnn``: teacher-forced, onnxruntime's native ``GRU``/``LSTM`` kernel, readout as one
  MatMul after it. torch's gate order is converted: GRU r,z,n -> ONNX z,r,h (with
  ``linear_before_reset=1``, torch's definition), LSTM i,f,g,o -> ONNX i,o,f,c.
- ``rollout_loop``: closed loop as a ``Loop`` over blocks of ``UNROLL`` steps. The readout is
  linear and is the next input, so it is folded into the recurrent matrix after the first
  step (``x_t = h_{t-1} @ W_out^T + b_out``): one MatMul per step gives every gate; the hidden
  states are scanned out and read out after the loop.
- ``rollout_rnn`` (LSTM only: every LSTM gate is linear in x and h, so the fold gives a native
  ``LSTM`` with no input; a GRU's candidate gate multiplies only the recurrent part by r, so a
  GRU cannot fold into its kernel).
- ``rollout_native_loop``: a ``Loop`` whose body is the native kernel for one step and the
  readout, fed back (a benchmark candidate, never faster than the forms above: not exported).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from runtime.fused import ROLLOUT_LOOP, ROLLOUT_RNN, SEQUENCE_FORMS, SEQUENCE_RNN
from runtime.manifest import form_file_name

from .onnx_graph import FLOAT, UNROLL, classic_io, const, finish_model, ints, value

GATES = {"gru": 3, "lstm": 4}
# Where ONNX's gate blocks come from in torch's order: GRU z,r,h <- r,z,n; LSTM i,o,f,c <- i,f,g,o.
ONNX_GATE_ORDER = {"gru": (1, 0, 2), "lstm": (0, 3, 1, 2)}


@dataclass(frozen=True)
class CellWeights:
    """A GRU or LSTM cell and its readout, as float32 numpy arrays in torch's layout and gate order.

    ``w_ih`` (G*H, n_in), ``w_hh`` (G*H, H), ``b_ih``/``b_hh`` (G*H,), ``w_out`` (n_out, H),
    ``b_out`` (n_out,); G = 3 (GRU: r, z, n) or 4 (LSTM: i, f, g, o).
    """

    kind: str
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray
    w_out: np.ndarray
    b_out: np.ndarray

    @classmethod
    def from_module(cls, module) -> CellWeights:
        """From a `rnn.model.GRUStep` or `rnn.model.LSTMStep` (duck-typed: ``cell`` and ``readout``)."""

        def array(tensor) -> np.ndarray:
            return tensor.detach().cpu().numpy().astype(np.float32)

        cell, readout = module.cell, module.readout
        return cls(
            module.kind,
            array(cell.weight_ih),
            array(cell.weight_hh),
            array(cell.bias_ih),
            array(cell.bias_hh),
            array(readout.weight),
            array(readout.bias),
        )

    @property
    def hidden_size(self) -> int:
        return int(self.w_hh.shape[1])

    @property
    def input_size(self) -> int:
        return int(self.w_ih.shape[1])

    @property
    def output_size(self) -> int:
        return int(self.w_out.shape[0])

    @property
    def state_count(self) -> int:
        return 2 if self.kind == "lstm" else 1

    def blocks(self, array: np.ndarray) -> list[np.ndarray]:
        """``array``'s gate blocks (along axis 0), in torch's order."""
        return np.split(array, GATES[self.kind], axis=0)

    def onnx_order(self, array: np.ndarray) -> np.ndarray:
        blocks = self.blocks(array)
        return np.concatenate([blocks[i] for i in ONNX_GATE_ORDER[self.kind]], axis=0)

    def folded_input(self) -> tuple[np.ndarray, np.ndarray]:
        """The input projection with the readout fed back: ``x @ W_ih^T + b_ih`` for
        ``x = h @ W_out^T + b_out`` is ``h @ A^T + a``; returns (A (G*H, H), a (G*H,)), float64 then rounded."""
        w_ih, w_out = self.w_ih.astype(np.float64), self.w_out.astype(np.float64)
        folded = w_ih @ w_out
        bias = w_ih @ self.b_out.astype(np.float64) + self.b_ih.astype(np.float64)
        return folded.astype(np.float32), bias.astype(np.float32)


def _names(weights: CellWeights) -> tuple[list[str], list[str]]:
    """The state inputs and outputs of the graphs: (h[, c]) and (h_out[, c_out])."""
    states = ["h", "c"][: weights.state_count]
    return states, [f"{s}_out" for s in states]


def _cell_io(weights: CellWeights, rollout: bool):
    inputs, outputs = classic_io(weights.input_size, weights.hidden_size, weights.output_size, rollout)
    if weights.state_count == 2:  # h then c, as the step model has them
        inputs.insert(2, value("c", FLOAT, ["batch", weights.hidden_size]))
        outputs.append(value("c_out", FLOAT, ["batch", weights.hidden_size]))
    return inputs, outputs


def _native_node(weights: CellWeights, x: str, prefix: str, out: list[str], w: str, r: str, b: str):
    """The native kernel over ``x`` (T, B, n) from initial states ``{prefix}h0`` (, ``{prefix}c0``)."""
    hidden = weights.hidden_size
    if weights.kind == "gru":
        return helper.make_node("GRU", [x, w, r, b, "", f"{prefix}h0"], out, hidden_size=hidden, linear_before_reset=1)
    return helper.make_node("LSTM", [x, w, r, b, "", f"{prefix}h0", f"{prefix}c0"], out, hidden_size=hidden)


def _native_weights(weights: CellWeights, w_ih: np.ndarray, b_ih: np.ndarray, suffix: str = ""):
    """W (1, G*H, n), R (1, G*H, H), B (1, 2*G*H) in ONNX's gate order."""
    return [
        const(f"W{suffix}", weights.onnx_order(w_ih)[None].copy()),
        const(f"R{suffix}", weights.onnx_order(weights.w_hh)[None].copy()),
        const(f"B{suffix}", np.concatenate([weights.onnx_order(b_ih), weights.onnx_order(weights.b_hh)])[None].copy()),
    ]


def _readout(nodes: list, hs: str, ys: str) -> None:
    nodes.append(helper.make_node("MatMul", [hs, "w_outT"], [f"{ys}_raw"]))
    nodes.append(helper.make_node("Add", [f"{ys}_raw", "b_out"], [ys]))


def _readout_initializers(weights: CellWeights) -> list[onnx.TensorProto]:
    return [const("w_outT", weights.w_out.T.copy()), const("b_out", weights.b_out)]


def sequence_native(weights: CellWeights, opset: int, metadata: dict[str, str]) -> onnx.ModelProto:
    states, state_outs = _names(weights)
    nodes = [helper.make_node("Unsqueeze", [s, "axis0"], [f"{s}0"]) for s in states]  # (1, B, H)
    kernel_out = ["Y", *(f"Y_{s}" for s in states)]
    nodes.append(_native_node(weights, "xs", "", kernel_out, "W", "R", "B"))  # Y (T, 1, B, H)
    nodes.append(helper.make_node("Squeeze", ["Y", "axis1"], ["hs"]))  # (T, B, H)
    _readout(nodes, "hs", "ys")
    nodes += [helper.make_node("Squeeze", [f"Y_{s}", "axis0"], [o]) for s, o in zip(states, state_outs)]
    initializers = [
        *_native_weights(weights, weights.w_ih, weights.b_ih),
        *_readout_initializers(weights),
        ints("axis0", 0),
        ints("axis1", 1),
    ]
    inputs, outputs = _cell_io(weights, rollout=False)
    graph = helper.make_graph(nodes, SEQUENCE_RNN, inputs, outputs, initializers)
    return finish_model(graph, opset, SEQUENCE_RNN, metadata)


def _gate_matrices(weights: CellWeights, input_matrix: np.ndarray, input_bias: np.ndarray):
    """(M_x, M_h, bias) such that ``pre = u @ M_x + h @ M_h + bias`` holds every gate's
    pre-activation in the layout the explicit cell nodes read: GRU [r z | x_n | h_n] (4H), LSTM
    [i f o | g] (4H). ``input_matrix`` (G*H, n) and ``input_bias`` project the input ``u``."""
    hidden = weights.hidden_size
    xb, hb = weights.blocks(input_matrix), weights.blocks(weights.w_hh)
    bx, bh = weights.blocks(input_bias), weights.blocks(weights.b_hh)
    n = input_matrix.shape[1]
    if weights.kind == "gru":
        m_x = np.concatenate([xb[0], xb[1], xb[2], np.zeros((hidden, n), np.float32)], axis=0)
        m_h = np.concatenate([hb[0], hb[1], np.zeros((hidden, hidden), np.float32), hb[2]], axis=0)
        bias = np.concatenate([bx[0] + bh[0], bx[1] + bh[1], bx[2], bh[2]])
    else:
        m_x = np.concatenate([xb[0], xb[1], xb[3], xb[2]], axis=0)
        m_h = np.concatenate([hb[0], hb[1], hb[3], hb[2]], axis=0)
        bias = np.concatenate([bx[0] + bh[0], bx[1] + bh[1], bx[3] + bh[3], bx[2] + bh[2]])
    return m_x.T.copy(), m_h.T.copy(), bias.astype(np.float32)


def _cell_nodes(kind: str, pre: str, h: str, c: str | None, p: str, h_next: str, c_next: str | None) -> list:
    """The gates from pre-activations ``pre`` (B, 4H) (layout of `_gate_matrices`) -> h_next (, c_next)."""
    if kind == "gru":
        return [
            helper.make_node("Split", [pre, "split_gru"], [f"{p}rz_pre", f"{p}xn", f"{p}hn"], axis=1),
            helper.make_node("Sigmoid", [f"{p}rz_pre"], [f"{p}rz"]),
            helper.make_node("Split", [f"{p}rz", "split_two"], [f"{p}r", f"{p}z"], axis=1),
            helper.make_node("Mul", [f"{p}r", f"{p}hn"], [f"{p}rhn"]),
            helper.make_node("Add", [f"{p}xn", f"{p}rhn"], [f"{p}n_pre"]),
            helper.make_node("Tanh", [f"{p}n_pre"], [f"{p}n"]),
            helper.make_node("Sub", [h, f"{p}n"], [f"{p}hmn"]),
            helper.make_node("Mul", [f"{p}z", f"{p}hmn"], [f"{p}zhmn"]),
            helper.make_node("Add", [f"{p}n", f"{p}zhmn"], [h_next]),  # (1 - z) n + z h
        ]
    return [
        helper.make_node("Split", [pre, "split_lstm"], [f"{p}ifo_pre", f"{p}g_pre"], axis=1),
        helper.make_node("Sigmoid", [f"{p}ifo_pre"], [f"{p}ifo"]),
        helper.make_node("Split", [f"{p}ifo", "split_three"], [f"{p}i", f"{p}f", f"{p}o"], axis=1),
        helper.make_node("Tanh", [f"{p}g_pre"], [f"{p}g"]),
        helper.make_node("Mul", [f"{p}f", c], [f"{p}fc"]),
        helper.make_node("Mul", [f"{p}i", f"{p}g"], [f"{p}ig"]),
        helper.make_node("Add", [f"{p}fc", f"{p}ig"], [c_next]),
        helper.make_node("Tanh", [c_next], [f"{p}tc"]),
        helper.make_node("Mul", [f"{p}o", f"{p}tc"], [h_next]),
    ]


def _split_initializers(kind: str, hidden: int) -> list[onnx.TensorProto]:
    """The Split sizes `_cell_nodes` of ``kind`` reads."""
    if kind == "gru":
        return [ints("split_gru", 2 * hidden, hidden, hidden), ints("split_two", hidden, hidden)]
    return [ints("split_lstm", 3 * hidden, hidden), ints("split_three", hidden, hidden, hidden)]


def _rollout_body(weights: CellWeights, name: str, steps: int) -> onnx.GraphProto:
    """``steps`` closed-loop steps on the state(s) (B, H) with the folded matrix; emits the
    hidden states side by side (B, steps * H)."""
    p = f"{name}_"
    lstm = weights.kind == "lstm"
    hidden = weights.hidden_size
    nodes, hs = [], []
    h, c = f"{p}h_in", (f"{p}c_in" if lstm else None)
    for i in range(steps):
        last = i == steps - 1
        h_next = f"{p}h_out" if last else f"{p}h{i}"
        c_next = (f"{p}c_out" if last else f"{p}c{i}") if lstm else None
        nodes.append(helper.make_node("MatMul", [h, "M_fold"], [f"{p}mm{i}"]))
        nodes.append(helper.make_node("Add", [f"{p}mm{i}", "bias_fold"], [f"{p}pre{i}"]))
        nodes += _cell_nodes(weights.kind, f"{p}pre{i}", h, c, f"{p}s{i}_", h_next, c_next)
        hs.append(h_next)
        h, c = h_next, c_next
    if len(hs) > 1:
        nodes.append(helper.make_node("Concat", hs, [f"{p}block"], axis=1))
    else:
        nodes.append(helper.make_node("Identity", hs, [f"{p}block"]))
    nodes.append(helper.make_node("Identity", [f"{p}cond_in"], [f"{p}cond_out"]))
    state_in = [value(f"{p}h_in", FLOAT, ["batch", hidden])]
    state_out = [value(f"{p}h_out", FLOAT, ["batch", hidden])]
    if lstm:
        state_in.append(value(f"{p}c_in", FLOAT, ["batch", hidden]))
        state_out.append(value(f"{p}c_out", FLOAT, ["batch", hidden]))
    inputs = [value(f"{p}i", TensorProto.INT64, []), value(f"{p}cond_in", TensorProto.BOOL, []), *state_in]
    outputs = [
        value(f"{p}cond_out", TensorProto.BOOL, []),
        *state_out,
        value(f"{p}block", FLOAT, ["batch", steps * hidden]),
    ]
    return helper.make_graph(nodes, name, inputs, outputs)


def _first_step(weights: CellWeights) -> tuple[list, list[onnx.TensorProto], list[str]]:
    """Step 1 of a rollout from ``x0`` and the given state(s), unfolded: nodes, initializers, (h1[, c1])."""
    m_x, m_h, bias = _gate_matrices(weights, weights.w_ih, weights.b_ih)
    lstm = weights.kind == "lstm"
    nodes = [
        helper.make_node("Concat", ["x0", "h"], ["xh"], axis=1),
        helper.make_node("MatMul", ["xh", "M_first"], ["first_mm"]),
        helper.make_node("Add", ["first_mm", "bias_first"], ["first_pre"]),
        *_cell_nodes(weights.kind, "first_pre", "h", "c" if lstm else None, "first_", "h1", "c1" if lstm else None),
    ]
    initializers = [const("M_first", np.concatenate([m_x, m_h], axis=0)), const("bias_first", bias)]
    return nodes, initializers, ["h1", "c1"] if lstm else ["h1"]


def rollout_loop(weights: CellWeights, opset: int, metadata: dict[str, str]) -> onnx.ModelProto:
    hidden = weights.hidden_size
    states, state_outs = _names(weights)
    nodes, initializers, firsts = _first_step(weights)
    folded, folded_bias = weights.folded_input()
    m_x, m_h, bias = _gate_matrices(weights, folded, folded_bias)
    m_h_fold = m_x + m_h  # the input part (now a function of h) and the recurrent part
    mids, lasts = [f"{s}_mid" for s in states], [f"{s}_last" for s in states]
    nodes += [
        helper.make_node("Shape", ["x0"], ["batch"], start=0, end=1),
        helper.make_node("Sub", ["steps", "one"], ["rest"]),
        helper.make_node("Div", ["rest", "unroll"], ["iterations_1d"]),
        helper.make_node("Mod", ["rest", "unroll"], ["tail_1d"]),
        helper.make_node("Squeeze", ["iterations_1d", "zero"], ["iterations"]),
        helper.make_node("Squeeze", ["tail_1d", "zero"], ["tail_steps"]),
        helper.make_node(
            "Loop", ["iterations", "true", *firsts], [*mids, "blocks"], body=_rollout_body(weights, "main", UNROLL)
        ),
        helper.make_node(
            "Loop", ["tail_steps", "true", *mids], [*lasts, "tail"], body=_rollout_body(weights, "tail", 1)
        ),
        # blocks (iterations, B, k*H) -> (iterations * k, B, H); tail (r, B, H)
        helper.make_node("Concat", ["minus_one", "batch", "unroll", "hidden"], ["block_shape"], axis=0),
        helper.make_node("Reshape", ["blocks", "block_shape"], ["blocks_4d"]),  # (iterations, B, k, H)
        helper.make_node("Transpose", ["blocks_4d"], ["blocks_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Concat", ["minus_one", "batch", "hidden"], ["seq_shape"], axis=0),
        helper.make_node("Reshape", ["blocks_t", "seq_shape"], ["hs_main"]),
        helper.make_node("Unsqueeze", ["h1", "zero"], ["h1_seq"]),
        helper.make_node("Concat", ["h1_seq", "hs_main", "tail"], ["hs"], axis=0),  # (T, B, H)
        *(helper.make_node("Identity", [last], [out]) for last, out in zip(lasts, state_outs)),
    ]
    _readout(nodes, "hs", "ys")
    initializers += [
        const("M_fold", m_h_fold),
        const("bias_fold", bias),
        *_readout_initializers(weights),
        *_split_initializers(weights.kind, hidden),
        ints("unroll", UNROLL),
        ints("one", 1),
        ints("zero", 0),
        ints("minus_one", -1),
        ints("hidden", hidden),
        const("true", np.array(True)),
    ]
    inputs, outputs = _cell_io(weights, rollout=True)
    graph = helper.make_graph(nodes, ROLLOUT_LOOP, inputs, outputs, initializers)
    return finish_model(graph, opset, ROLLOUT_LOOP, metadata)


def rollout_native(weights: CellWeights, opset: int, metadata: dict[str, str]) -> onnx.ModelProto:
    """LSTM only: step 1 with the kernel and the real input, then ``steps - 1`` steps of the
    folded kernel (input projection folded into R and the bias) on an empty input."""
    if weights.kind != "lstm":
        raise ValueError("a GRU's closed loop does not fold into its native kernel (the candidate gate)")
    hidden = weights.hidden_size
    states, state_outs = _names(weights)
    folded, folded_bias = weights.folded_input()
    r_folded = weights.onnx_order(weights.w_hh.astype(np.float64) + folded.astype(np.float64)).astype(np.float32)
    b_folded = np.concatenate([weights.onnx_order(folded_bias), weights.onnx_order(weights.b_hh)])
    nodes = [helper.make_node("Unsqueeze", [s, "axis0"], [f"{s}0"]) for s in states]
    nodes += [
        helper.make_node("Unsqueeze", ["x0", "axis0"], ["x0_seq"]),
        _native_node(weights, "x0_seq", "", ["Y1", "r_h0", "r_c0"], "W", "R", "B"),
        helper.make_node("Sub", ["steps", "one"], ["rest"]),
        helper.make_node("Shape", ["x0"], ["batch"], start=0, end=1),
        helper.make_node("Concat", ["rest", "batch", "one"], ["zeros_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape", ["zeros_shape"], ["no_input"], value=helper.make_tensor("zero", FLOAT, [1], [0.0])
        ),  # (T-1, B, 1)
        _native_node(weights, "no_input", "r_", ["Y_rest", "Y_h", "Y_c"], "W_none", "R_fold", "B_fold"),
        helper.make_node("Concat", ["Y1", "Y_rest"], ["Y"], axis=0),  # (T, 1, B, H)
        helper.make_node("Squeeze", ["Y", "axis1"], ["hs"]),
        *(helper.make_node("Squeeze", [f"Y_{s}", "axis0"], [o]) for s, o in zip(states, state_outs)),
    ]
    _readout(nodes, "hs", "ys")
    initializers = [
        *_native_weights(weights, weights.w_ih, weights.b_ih),
        const("W_none", np.zeros((1, 4 * hidden, 1), np.float32)),
        const("R_fold", r_folded[None].copy()),
        const("B_fold", b_folded[None].copy()),
        *_readout_initializers(weights),
        ints("one", 1),
        ints("axis0", 0),
        ints("axis1", 1),
    ]
    inputs, outputs = _cell_io(weights, rollout=True)
    graph = helper.make_graph(nodes, ROLLOUT_RNN, inputs, outputs, initializers)
    return finish_model(graph, opset, ROLLOUT_RNN, metadata)


def rollout_native_loop(weights: CellWeights, opset: int, metadata: dict[str, str]) -> onnx.ModelProto:
    """Benchmark candidate: a Loop of ``steps`` iterations, each the native kernel for one step
    on the fed-back output, then the readout."""
    hidden = weights.hidden_size
    states, state_outs = _names(weights)
    body_states = ["b_h", "b_c"][: weights.state_count]
    body_nodes = [
        helper.make_node("Unsqueeze", ["b_x", "axis0"], ["b_x_seq"]),
        *(helper.make_node("Unsqueeze", [s, "axis0"], [f"b_{s[2:]}0"]) for s in body_states),
        _native_node(weights, "b_x_seq", "b_", ["b_Y", *(f"b_{s[2:]}_n" for s in body_states)], "W", "R", "B"),
        *(helper.make_node("Squeeze", [f"b_{s[2:]}_n", "axis0"], [f"{s}_next"]) for s in body_states),
        helper.make_node("MatMul", ["b_h_next", "w_outT"], ["b_y_raw"]),
        helper.make_node("Add", ["b_y_raw", "b_out"], ["b_y"]),
        helper.make_node("Identity", ["b_y"], ["b_y_scan"]),
        helper.make_node("Identity", ["b_cond_in"], ["b_cond_out"]),
    ]
    vec = ["batch", hidden]
    body = helper.make_graph(
        body_nodes,
        "native_step",
        [
            value("b_i", TensorProto.INT64, []),
            value("b_cond_in", TensorProto.BOOL, []),
            value("b_x", FLOAT, ["batch", weights.input_size]),
            *(value(s, FLOAT, vec) for s in body_states),
        ],
        [
            value("b_cond_out", TensorProto.BOOL, []),
            value("b_y", FLOAT, ["batch", weights.output_size]),
            *(value(f"{s}_next", FLOAT, vec) for s in body_states),
            value("b_y_scan", FLOAT, ["batch", weights.output_size]),
        ],
    )
    nodes = [
        helper.make_node("Squeeze", ["steps", "zero"], ["count"]),
        helper.make_node("Loop", ["count", "true", "x0", *states], ["x_last", *state_outs, "ys"], body=body),
    ]
    initializers = [
        *_native_weights(weights, weights.w_ih, weights.b_ih),
        *_readout_initializers(weights),
        ints("axis0", 0),
        ints("zero", 0),
        const("true", np.array(True)),
    ]
    inputs, outputs = _cell_io(weights, rollout=True)
    graph = helper.make_graph(nodes, "rollout_native_loop", inputs, outputs, initializers)
    return finish_model(graph, opset, ROLLOUT_LOOP, metadata)


# The forms `rnn export` writes per cell, from benchmarks/fused_cells.py (docs/fused-cells-bench.txt):
# each beat the step loop by 1.5x or more at batch 1 (GRU 2.2-38x, LSTM 4.3-26x) and batch 64 with
# hidden 16; the others measured (LSTM rollout_loop, the native kernel inside a Loop) never beat
# these. Above `runtime.fused.GATED_MAX_WORK` the runtime keeps the step loop.
CELL_FORMS = {
    "gru": {SEQUENCE_RNN: sequence_native, ROLLOUT_LOOP: rollout_loop},
    "lstm": {SEQUENCE_RNN: sequence_native, ROLLOUT_RNN: rollout_native},
}


def write_cell_fused(
    weights: CellWeights, folder: str | os.PathLike, opset: int, metadata: dict[str, str]
) -> dict[str, str]:
    """Writes the cell's kept forms (`CELL_FORMS`) as ``FORM.onnx`` into ``folder``; returns
    {form: file name}. Closed-loop forms only where the output can be the next input."""
    written = {}
    for form, build in CELL_FORMS[weights.kind].items():
        if form in SEQUENCE_FORMS or weights.input_size == weights.output_size:
            name = form_file_name(form)
            onnx.save(build(weights, opset, metadata), os.path.join(folder, name))
            written[form] = name
    return written

"""Builds ONNX models that run a whole Elman loop in one onnxruntime run, from trained weights.

Four forms, each for any input, hidden and output size (closed loops need input = output size):

- ``sequence_rnn``: teacher-forced, onnxruntime's native ``RNN`` kernel (fastest at small batch).
- ``sequence_loop``: teacher-forced, a ``Loop`` over blocks of ``UNROLL`` steps with the
  state laid out (hidden, batch) (large batch).
- ``rollout_rnn``: closed loop. The readout ``y = h @ w2`` is linear and is the next input, so
  after the first step the loop is ``h_t = tanh(h_{t-1} @ (w1_h + w2 @ w1_x))``, which the
  native ``RNN`` kernel runs with no per-step overhead (small batch).
- ``rollout_loop``: closed loop as a ``Loop`` over blocks of ``UNROLL`` steps, state
  (hidden, batch), the readout computed in the loop (large batch).

Sequence forms: ``(xs[T, B, n_in], h[B, H]) -> (ys[T, B, n_out], h_out[B, H])``.
Rollout forms: ``(x0[B, n_in], h[B, H], steps int64[1]) -> (ys[steps, B, n_out], h_out[B, H])``,
valid for steps >= 2 (the runtime runs one step with the step model).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from runtime.fused import ROLLOUT_LOOP, ROLLOUT_RNN, SEQUENCE_FORMS, SEQUENCE_LOOP, SEQUENCE_RNN
from runtime.manifest import form_file_name

from .onnx_graph import FLOAT, INT64, UNROLL, classic_io, const, finish_model, ints, value


@dataclass(frozen=True)
class ElmanWeights:
    """``w1`` (n_in + H, H) and ``w2`` (H, n_out) as float32 numpy arrays."""

    w1: np.ndarray
    w2: np.ndarray
    input_size: int

    @property
    def hidden_size(self) -> int:
        return int(self.w1.shape[1])

    @property
    def output_size(self) -> int:
        return int(self.w2.shape[1])

    @property
    def w1_x(self) -> np.ndarray:  # (n_in, H)
        return self.w1[: self.input_size]

    @property
    def w1_h(self) -> np.ndarray:  # (H, H)
        return self.w1[self.input_size :]

    def closed_loop_matrix(self) -> np.ndarray:
        """``w1_h + w2 @ w1_x`` (H, H): one closed-loop step after the first, in float64 then rounded."""
        folded = self.w1_h.astype(np.float64) + self.w2.astype(np.float64) @ self.w1_x.astype(np.float64)
        return folded.astype(np.float32)


def sequence_rnn(weights: ElmanWeights, opset: int, metadata: dict[str, str]) -> onnx.ModelProto:
    hidden = weights.hidden_size
    nodes = [
        helper.make_node("Unsqueeze", ["h", "axis0"], ["h0"]),  # (1, B, H)
        helper.make_node(
            "RNN", ["xs", "W", "R", "", "", "h0"], ["Y", "Y_h"], hidden_size=hidden, activations=["Tanh"]
        ),  # Y (T, 1, B, H)
        helper.make_node("Squeeze", ["Y", "axis1"], ["hs"]),  # (T, B, H)
        helper.make_node("MatMul", ["hs", "w2"], ["ys"]),  # (T, B, n_out)
        helper.make_node("Squeeze", ["Y_h", "axis0"], ["h_out"]),
    ]
    initializers = [
        const("W", weights.w1_x.T[None].copy()),  # (1, H, n_in)
        const("R", weights.w1_h.T[None].copy()),  # (1, H, H)
        const("w2", weights.w2),
        ints("axis0", 0),
        ints("axis1", 1),
    ]
    inputs, outputs = classic_io(weights.input_size, weights.hidden_size, weights.output_size, rollout=False)
    graph = helper.make_graph(nodes, SEQUENCE_RNN, inputs, outputs, initializers)
    return finish_model(graph, opset, SEQUENCE_RNN, metadata)


def rollout_rnn(weights: ElmanWeights, opset: int, metadata: dict[str, str]) -> onnx.ModelProto:
    hidden = weights.hidden_size
    nodes = [
        helper.make_node("Concat", ["x0", "h"], ["xh"], axis=1),
        helper.make_node("MatMul", ["xh", "w1"], ["pre1"]),
        helper.make_node("Tanh", ["pre1"], ["h1"]),  # (B, H), the first step as the step model does it
        helper.make_node("Sub", ["steps", "one"], ["rest"]),  # steps - 1 autonomous steps
        helper.make_node("Shape", ["x0"], ["batch"], start=0, end=1),
        helper.make_node("Concat", ["rest", "batch", "one"], ["zeros_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape", ["zeros_shape"], ["no_input"], value=helper.make_tensor("zero", FLOAT, [1], [0.0])
        ),  # (T-1, B, 1)
        helper.make_node("Unsqueeze", ["h1", "axis0"], ["h1_rnn"]),
        helper.make_node(
            "RNN", ["no_input", "W_none", "R", "", "", "h1_rnn"], ["Y", "Y_h"], hidden_size=hidden, activations=["Tanh"]
        ),
        helper.make_node("Squeeze", ["Y", "axis1"], ["h_rest"]),  # (T-1, B, H)
        helper.make_node("Unsqueeze", ["h1", "axis0"], ["h1_seq"]),
        helper.make_node("Concat", ["h1_seq", "h_rest"], ["hs"], axis=0),  # (T, B, H)
        helper.make_node("MatMul", ["hs", "w2"], ["ys"]),
        helper.make_node("Squeeze", ["Y_h", "axis0"], ["h_out"]),
    ]
    initializers = [
        const("w1", weights.w1),
        const("w2", weights.w2),
        const("W_none", np.zeros((1, hidden, 1), np.float32)),
        const("R", weights.closed_loop_matrix().T[None].copy()),
        ints("one", 1),
        ints("axis0", 0),
        ints("axis1", 1),
    ]
    inputs, outputs = classic_io(weights.input_size, weights.hidden_size, weights.output_size, rollout=True)
    graph = helper.make_graph(nodes, ROLLOUT_RNN, inputs, outputs, initializers)
    return finish_model(graph, opset, ROLLOUT_RNN, metadata)


def _block_body(name: str, steps: int, hidden: int, n_out: int, inputs_from: str | None) -> onnx.GraphProto:
    """A Loop body: ``steps`` recurrent steps on the state (H, B), emitting readouts (steps*n_out, B).

    Teacher-forced bodies (``inputs_from`` names an outer tensor of inputs shaped
    (iterations, steps, n_in, B), or (r, n_in, B) for single steps) add ``W_xT @ x`` of
    iteration i's inputs before each tanh; closed-loop bodies (``inputs_from`` None) use the
    folded matrix alone. Projecting inside the loop keeps the intermediates at the size of the
    inputs (a (T, H, B) projection done up front is 100 MB at T=1000, B=4096, and slower).
    (Loop, not Scan: onnxruntime's Scan refuses a sequence of length 0, and a remainder of 0
    steps is common.)
    """
    prefix = f"{name}_"
    nodes, readouts, state = [], [], f"{prefix}h_in"
    if inputs_from is not None:
        nodes.append(helper.make_node("Gather", [inputs_from, f"{prefix}i"], [f"{prefix}u_block"], axis=0))
    for i in range(steps):
        pre = f"{prefix}pre{i}"
        nodes.append(helper.make_node("MatMul", ["RT", state], [pre]))  # (H, B)
        if inputs_from is not None:
            u = f"{prefix}u_block"
            if steps > 1:
                u = f"{prefix}u{i}"
                nodes.append(helper.make_node("Gather", [f"{prefix}u_block", f"step{i}"], [u], axis=0))
            nodes.append(helper.make_node("MatMul", ["W_xT", u], [f"{prefix}p{i}"]))  # (H, B)
            nodes.append(helper.make_node("Add", [pre, f"{prefix}p{i}"], [f"{prefix}a{i}"]))
            pre = f"{prefix}a{i}"
        state = f"{prefix}h_out" if i == steps - 1 else f"{prefix}h{i}"  # the last one is the body's output
        nodes.append(helper.make_node("Tanh", [pre], [state]))
        nodes.append(helper.make_node("MatMul", ["w2T", state], [f"{prefix}y{i}"]))  # (n_out, B)
        readouts.append(f"{prefix}y{i}")
    if len(readouts) > 1:
        nodes.append(helper.make_node("Concat", readouts, [f"{prefix}block"], axis=0))
    else:
        nodes.append(helper.make_node("Identity", readouts, [f"{prefix}block"]))
    nodes.append(helper.make_node("Identity", [f"{prefix}cond_in"], [f"{prefix}cond_out"]))
    inputs = [
        value(f"{prefix}i", INT64, []),
        value(f"{prefix}cond_in", TensorProto.BOOL, []),
        value(f"{prefix}h_in", FLOAT, [hidden, "batch"]),
    ]
    outputs = [
        value(f"{prefix}cond_out", TensorProto.BOOL, []),
        value(f"{prefix}h_out", FLOAT, [hidden, "batch"]),
        value(f"{prefix}block", FLOAT, [steps * n_out, "batch"]),
    ]
    return helper.make_graph(nodes, name, inputs, outputs)


def _blocked_readouts(nodes: list, blocks: str, tail: str, first: str | None) -> str:
    """Joins (iterations, k*n_out, B) and (r, n_out, B) readouts into ys (T, B, n_out)."""
    nodes += [
        helper.make_node("Concat", ["minus_one", "out_size", "batch"], ["block_shape"], axis=0),
        helper.make_node("Reshape", [blocks, "block_shape"], ["ys_main"]),  # (k * iterations, n_out, B)
        helper.make_node("Reshape", [tail, "block_shape"], ["ys_tail"]),
    ]
    parts = ([first] if first else []) + ["ys_main", "ys_tail"]
    nodes += [
        helper.make_node("Concat", parts, ["ys_t"], axis=0),  # (T, n_out, B)
        helper.make_node("Transpose", ["ys_t"], ["ys"], perm=[0, 2, 1]),
    ]
    return "ys"


def _blocked_initializers(weights: ElmanWeights, recurrent: np.ndarray, teacher_forced: bool) -> list[onnx.TensorProto]:
    step_indices = [const(f"step{i}", np.array(i, dtype=np.int64)) for i in range(UNROLL)] if teacher_forced else []
    return [
        const("RT", recurrent.T.copy()),  # (H, H): state (H, B) -> RT @ state
        const("w2T", weights.w2.T.copy()),  # (n_out, H)
        ints("unroll", UNROLL),
        ints("one", 1),
        ints("zero", 0),
        ints("minus_one", -1),
        ints("out_size", weights.output_size),
        const("true", np.array(True)),
        *step_indices,  # the bodies' Gather indices of the steps in a block
    ]


def sequence_loop(weights: ElmanWeights, opset: int, metadata: dict[str, str]) -> onnx.ModelProto:
    hidden, n_in, n_out = weights.hidden_size, weights.input_size, weights.output_size
    nodes = [
        helper.make_node("Transpose", ["xs"], ["x_t"], perm=[0, 2, 1]),  # (T, n_in, B)
        helper.make_node("Transpose", ["h"], ["h_t"], perm=[1, 0]),  # (H, B)
        helper.make_node("Shape", ["xs"], ["total"], start=0, end=1),
        helper.make_node("Shape", ["xs"], ["batch"], start=1, end=2),
        helper.make_node("Div", ["total", "unroll"], ["iterations_1d"]),
        helper.make_node("Mul", ["iterations_1d", "unroll"], ["main_steps"]),
        helper.make_node("Sub", ["total", "main_steps"], ["tail_1d"]),
        helper.make_node("Squeeze", ["iterations_1d", "zero"], ["iterations"]),
        helper.make_node("Squeeze", ["tail_1d", "zero"], ["tail_steps"]),
        helper.make_node("Slice", ["x_t", "zero", "main_steps", "zero"], ["x_main_flat"]),
        helper.make_node("Concat", ["minus_one", "unroll", "in_size", "batch"], ["main_shape"], axis=0),
        helper.make_node("Reshape", ["x_main_flat", "main_shape"], ["x_main"]),  # (iterations, k, n_in, B)
        helper.make_node("Slice", ["x_t", "main_steps", "total", "zero"], ["x_tail"]),  # (r, n_in, B)
        helper.make_node(
            "Loop",
            ["iterations", "true", "h_t"],
            ["h_mid", "blocks"],
            body=_block_body("main", UNROLL, hidden, n_out, inputs_from="x_main"),
        ),
        helper.make_node(
            "Loop",
            ["tail_steps", "true", "h_mid"],
            ["h_last", "tail"],
            body=_block_body("tail", 1, hidden, n_out, inputs_from="x_tail"),
        ),
        helper.make_node("Transpose", ["h_last"], ["h_out"], perm=[1, 0]),
    ]
    _blocked_readouts(nodes, "blocks", "tail", None)
    initializers = [
        const("W_xT", weights.w1_x.T.copy()),  # (H, n_in)
        ints("in_size", n_in),
        *_blocked_initializers(weights, weights.w1_h, teacher_forced=True),
    ]
    inputs, outputs = classic_io(weights.input_size, weights.hidden_size, weights.output_size, rollout=False)
    graph = helper.make_graph(nodes, SEQUENCE_LOOP, inputs, outputs, initializers)
    return finish_model(graph, opset, SEQUENCE_LOOP, metadata)


def rollout_loop(weights: ElmanWeights, opset: int, metadata: dict[str, str]) -> onnx.ModelProto:
    hidden, n_out = weights.hidden_size, weights.output_size
    nodes = [
        helper.make_node("Concat", ["x0", "h"], ["xh"], axis=1),
        helper.make_node("MatMul", ["xh", "w1"], ["pre1"]),
        helper.make_node("Tanh", ["pre1"], ["h1"]),  # (B, H), the first step as the step model does it
        helper.make_node("Transpose", ["h1"], ["h1_t"], perm=[1, 0]),  # (H, B)
        helper.make_node("MatMul", ["w2T", "h1_t"], ["y1"]),  # (n_out, B)
        helper.make_node("Unsqueeze", ["y1", "zero"], ["y1_seq"]),  # (1, n_out, B)
        helper.make_node("Shape", ["x0"], ["batch"], start=0, end=1),
        helper.make_node("Sub", ["steps", "one"], ["rest"]),
        helper.make_node("Div", ["rest", "unroll"], ["iterations_1d"]),
        helper.make_node("Mod", ["rest", "unroll"], ["tail_1d"]),
        helper.make_node("Squeeze", ["iterations_1d", "zero"], ["iterations"]),
        helper.make_node("Squeeze", ["tail_1d", "zero"], ["tail_steps"]),
        helper.make_node(
            "Loop",
            ["iterations", "true", "h1_t"],
            ["h_mid", "blocks"],
            body=_block_body("main", UNROLL, hidden, n_out, inputs_from=None),
        ),
        helper.make_node(
            "Loop",
            ["tail_steps", "true", "h_mid"],
            ["h_last", "tail"],
            body=_block_body("tail", 1, hidden, n_out, inputs_from=None),
        ),
        helper.make_node("Transpose", ["h_last"], ["h_out"], perm=[1, 0]),
    ]
    _blocked_readouts(nodes, "blocks", "tail", "y1_seq")
    initializers = [
        const("w1", weights.w1),
        *_blocked_initializers(weights, weights.closed_loop_matrix(), teacher_forced=False),
    ]
    inputs, outputs = classic_io(weights.input_size, weights.hidden_size, weights.output_size, rollout=True)
    graph = helper.make_graph(nodes, ROLLOUT_LOOP, inputs, outputs, initializers)
    return finish_model(graph, opset, ROLLOUT_LOOP, metadata)


BUILDERS = {
    SEQUENCE_RNN: sequence_rnn,
    SEQUENCE_LOOP: sequence_loop,
    ROLLOUT_RNN: rollout_rnn,
    ROLLOUT_LOOP: rollout_loop,
}


def write_fused(
    weights: ElmanWeights, folder: str | os.PathLike, opset: int, metadata: dict[str, str]
) -> dict[str, str]:
    """Writes every form's ``FORM.onnx`` into ``folder``; returns {form: file name}."""
    written = {}
    forms = [f for f in BUILDERS if f in SEQUENCE_FORMS or weights.input_size == weights.output_size]
    for form in forms:
        name = form_file_name(form)
        onnx.save(BUILDERS[form](weights, opset, metadata), os.path.join(folder, name))
        written[form] = name
    return written

"""Prototype for issue 13: a fused sampling rollout in onnxruntime against eager PyTorch.

Model (the issue's): Embedding(100, 32) -> 2-layer GRU (hidden 100) -> Linear(100 -> 100 logits),
fixed seed weights. Sampling: greedy (argmax) and temperature (softmax(logits / T) -> cumsum ->
first index where cdf > u, clamped to V - 1) with the uniforms u[t, b] supplied, the sampled token
fed back as the next input.

Implementations, each timed on 1000 tokens (best of interleaved rounds, after a warm-up):

- eager: torch (1 intra-op thread), ``nn.Embedding`` / ``nn.GRU`` (one step per call) / ``nn.Linear``
  and the same inverse-CDF draw in torch, one Python iteration per token
- step loop: a one-step ONNX model (the hand cells below, logits out) run per token from Python,
  sampling in numpy
- fused, hand cells: one ``Loop`` (K steps unrolled per iteration) whose body is Gather of the
  embedding folded into layer 1's input projection, two GRU cells from Gemm/Sigmoid/Tanh in torch's
  gate order (n = tanh(W_in x + b_in + r * (W_hn h + b_hn))), logits from the readout pre-scaled by
  1/T outside the loop, Softmax, CumSum, LessOrEqual(cdf, u[t]) summed to the index, Min(V - 1)
- fused, native GRU: the same Loop with onnxruntime's ``GRU`` op (linear_before_reset=1) per layer

Token parity: fused vs eager fed the same uniforms, token for token, over many seeds; where they
part, the step and the CDF gap at the drawn uniform.

Usage: ``.venv/bin/python benchmarks/sampling_prototype.py [--rounds 5] [--seeds 20] [--parity-batches 1,64]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from sampling import LAYERS, STEPS, TEMPERATURE, CharGRU, H, V, make_model  # benchmarks/sampling.py's model

from runtime.sessions import create_session  # the runtime's own session factory

OPSET = 17
UNROLL = 10
FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64


# ---------------------------------------------------------------------------------------------
# The model and eager sampling
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def eager_sample(model, token0, h0, uniforms, temperature, greedy, record_cdf=False):
    """Tokens [steps, batch] (and the cdf of each step if asked) from torch's modules, a Python loop."""
    tok = torch.from_numpy(token0)
    h = torch.from_numpy(h0)
    steps = uniforms.shape[0] if uniforms is not None else STEPS
    u = torch.from_numpy(uniforms).unsqueeze(-1) if uniforms is not None else None
    out = torch.empty(steps, tok.shape[0], dtype=torch.int64)
    cdfs = []
    for t in range(steps):
        y, h = model.gru(model.embedding(tok).unsqueeze(0), h)
        logits = model.linear(y[0])
        if greedy:
            tok = logits.argmax(-1)
        else:
            cdf = torch.softmax(logits / temperature, -1).cumsum(-1)
            tok = (cdf <= u[t]).sum(-1).clamp_(max=V - 1)
            if record_cdf:
                cdfs.append(cdf.numpy().copy())
        out[t] = tok
    return out.numpy(), (np.stack(cdfs) if record_cdf else None)


# ---------------------------------------------------------------------------------------------
# ONNX construction by hand
# ---------------------------------------------------------------------------------------------


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.array(array, order="C"), name)  # (ascontiguousarray makes 0-d 1-d)


def _vi(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


class Weights:
    def __init__(self, model: CharGRU) -> None:
        sd = {k: v.detach().numpy().astype(np.float64) for k, v in model.state_dict().items()}
        self.embedding = sd["embedding.weight"].astype(np.float32)  # [V, E]
        # layer 1's input projection folded into the embedding table: [V, 3H]
        self.table = (sd["embedding.weight"] @ sd["gru.weight_ih_l0"].T + sd["gru.bias_ih_l0"]).astype(np.float32)
        self.w_ih = [sd[f"gru.weight_ih_l{i}"].astype(np.float32) for i in range(LAYERS)]  # [3H, in]
        self.b_ih = [sd[f"gru.bias_ih_l{i}"].astype(np.float32) for i in range(LAYERS)]
        self.w_hh = [sd[f"gru.weight_hh_l{i}"].astype(np.float32) for i in range(LAYERS)]  # [3H, H]
        self.b_hh = [sd[f"gru.bias_hh_l{i}"].astype(np.float32) for i in range(LAYERS)]
        self.w_out = sd["linear.weight"].astype(np.float32)  # [V, H]
        self.b_out = sd["linear.bias"].astype(np.float32)

    def initializers(self) -> list[TensorProto]:
        inits = [_init("table", self.table), _init("w_out", self.w_out), _init("b_out", self.b_out)]
        for i in range(LAYERS):
            inits += [_init(f"w_hh{i}", self.w_hh[i]), _init(f"b_hh{i}", self.b_hh[i])]
            if i > 0:
                inits += [_init(f"w_ih{i}", self.w_ih[i]), _init(f"b_ih{i}", self.b_ih[i])]
        inits += [
            _init("split_2h_h", np.array([2 * H, H], np.int64)),
            _init("split_h_h", np.array([H, H], np.int64)),
            _init("axis1", np.array(1, np.int64)),
            _init("axes1", np.array([1], np.int64)),
            _init("vmax", np.array(V - 1, np.int64)),
        ]
        return inits

    def native_initializers(self) -> list[TensorProto]:
        """ONNX GRU weights: gate blocks z,r,h from torch's r,z,n; W [1, 3H, in], R [1, 3H, H], B [1, 6H]."""

        def order(a):
            r, z, n = np.split(a, 3, axis=0)
            return np.concatenate([z, r, n], axis=0)

        inits = [_init("embedding", self.embedding), _init("w_out_t", self.w_out.T.copy()), _init("b_out", self.b_out)]
        for i in range(LAYERS):
            inits += [
                _init(f"W{i}", order(self.w_ih[i])[None]),
                _init(f"R{i}", order(self.w_hh[i])[None]),
                _init(f"B{i}", np.concatenate([order(self.b_ih[i]), order(self.b_hh[i])])[None]),
            ]
        return inits


def _gru_cell(p: str, gx: str, h: str, layer: int, out: str) -> list:
    """torch's GRU cell from gx = W_ih x + b_ih [B, 3H] and h [B, H] (gate order r, z, n)."""
    n = helper.make_node
    return [
        n("Gemm", [h, f"w_hh{layer}", f"b_hh{layer}"], [f"{p}gh"], transB=1),
        n("Split", [gx, "split_2h_h"], [f"{p}gx_rz", f"{p}gx_n"], axis=1),
        n("Split", [f"{p}gh", "split_2h_h"], [f"{p}gh_rz", f"{p}gh_n"], axis=1),
        n("Add", [f"{p}gx_rz", f"{p}gh_rz"], [f"{p}rz_pre"]),
        n("Sigmoid", [f"{p}rz_pre"], [f"{p}rz"]),
        n("Split", [f"{p}rz", "split_h_h"], [f"{p}r", f"{p}z"], axis=1),
        n("Mul", [f"{p}r", f"{p}gh_n"], [f"{p}rgh"]),
        n("Add", [f"{p}gx_n", f"{p}rgh"], [f"{p}n_pre"]),
        n("Tanh", [f"{p}n_pre"], [f"{p}n"]),
        n("Sub", [h, f"{p}n"], [f"{p}hmn"]),
        n("Mul", [f"{p}z", f"{p}hmn"], [f"{p}zh"]),
        n("Add", [f"{p}n", f"{p}zh"], [out]),
    ]


def _hand_step(p: str, tok: str, h1: str, h2: str, w_out: str, b_out: str) -> tuple[list, str, str, str]:
    """Nodes of one step from tok [B] and states [B, H]: (nodes, logits, h1', h2')."""
    n = helper.make_node
    nodes = [n("Gather", ["table", tok], [f"{p}gx1"], axis=0)]
    nodes += _gru_cell(f"{p}l0_", f"{p}gx1", h1, 0, f"{p}h1")
    nodes.append(n("Gemm", [f"{p}h1", "w_ih1", "b_ih1"], [f"{p}gx2"], transB=1))
    nodes += _gru_cell(f"{p}l1_", f"{p}gx2", h2, 1, f"{p}h2")
    nodes.append(n("Gemm", [f"{p}h2", w_out, b_out], [f"{p}logits"], transB=1))
    return nodes, f"{p}logits", f"{p}h1", f"{p}h2"


def _native_step(p: str, tok: str, h1: str, h2: str, w_out: str, b_out: str) -> tuple[list, str, str, str]:
    """Same with onnxruntime's GRU op per layer; states [1, B, H]; logits [1, B, V]."""
    n = helper.make_node
    nodes = [
        n("Gather", ["embedding", tok], [f"{p}emb"], axis=0),
        n("Unsqueeze", [f"{p}emb", "axes0"], [f"{p}x"]),
        n("GRU", [f"{p}x", "W0", "R0", "B0", "", h1], ["", f"{p}h1"], hidden_size=H, linear_before_reset=1),
        n("GRU", [f"{p}h1", "W1", "R1", "B1", "", h2], ["", f"{p}h2"], hidden_size=H, linear_before_reset=1),
        n("MatMul", [f"{p}h2", w_out], [f"{p}lw"]),
        n("Add", [f"{p}lw", b_out], [f"{p}logits"]),
    ]
    return nodes, f"{p}logits", f"{p}h1", f"{p}h2"


def _draw(p: str, logits: str, u: str, axis: int) -> tuple[list, str, str]:
    """Inverse-CDF draw: (nodes, token, cdf); u broadcasts against the cdf."""
    n = helper.make_node
    axis_name = "axis1" if axis == 1 else "axis2"
    axes_name = "axes1" if axis == 1 else "axes2"
    return (
        [
            n("Softmax", [logits], [f"{p}prob"], axis=axis),
            n("CumSum", [f"{p}prob", axis_name], [f"{p}cdf"]),
            n("LessOrEqual", [f"{p}cdf", u], [f"{p}le"]),
            n("Cast", [f"{p}le"], [f"{p}lei"], to=INT64),
            n("ReduceSum", [f"{p}lei", axes_name], [f"{p}count"], keepdims=0),
            n("Min", [f"{p}count", "vmax"], [f"{p}tok"]),
        ],
        f"{p}tok",
        f"{p}cdf",
    )


def build_fused(weights: Weights, greedy: bool, native: bool = False, unroll: int = UNROLL, debug: bool = False):
    """The fused rollout: inputs token0 [B] int64, h [2, B, H], uniforms [S, B] (temperature) or steps
    [1] (greedy), temperature [1]; outputs tokens [S, B], h_out [2, B, H] (and cdf [S, B, V] if debug).
    S must be a multiple of ``unroll``."""
    n = helper.make_node
    step_fn = _native_step if native else _hand_step
    inits = weights.native_initializers() if native else weights.initializers()
    inits += [
        _init("axes0", np.array([0], np.int64)),
        _init("axes2", np.array([2], np.int64)),
        _init("axis2", np.array(2, np.int64)),
        _init("vmax", np.array(V - 1, np.int64)),
        _init("unroll", np.array(unroll, np.int64)),
        _init("zero", np.array(0, np.int64)),
        _init("true", np.array(True)),
        _init("idx0", np.array(0, np.int64)),
        _init("idx1", np.array(1, np.int64)),
    ]
    inits = list({t.name: t for t in inits}.values())
    inputs = [_vi("token0", INT64, ["batch"]), _vi("h", FLOAT, [LAYERS, "batch", H])]
    outer = []
    w_out, b_out = ("w_out_t", "b_out") if native else ("w_out", "b_out")
    if greedy:
        inputs.append(_vi("steps", INT64, [1]))
        outer.append(n("Squeeze", ["steps"], ["steps_s"]))
    else:
        inputs += [_vi("uniforms", FLOAT, ["steps", "batch"]), _vi("temperature", FLOAT, [1])]
        outer += [
            n("Shape", ["uniforms"], ["u_shape"]),
            n("Gather", ["u_shape", "idx0"], ["steps_s"], axis=0),
            # [S, B, 1] (native: [S, 1, B, 1]) so u[t] broadcasts against the cdf
            n("Unsqueeze", ["uniforms", "axes2"], ["u3"]),
            # the readout scaled by 1 / T once, outside the loop
            n("Div", [w_out, "temperature"], ["w_out_T"]),
            n("Div", [b_out, "temperature"], ["b_out_T"]),
        ]
        if native:
            outer.append(n("Unsqueeze", ["u3", "idx1_1d"], ["u4"]))
            inits.append(_init("idx1_1d", np.array([1], np.int64)))
        w_out, b_out = "w_out_T", "b_out_T"
    outer.append(n("Div", ["steps_s", "unroll"], ["iterations"]))
    if native:
        outer += [
            n("Gather", ["h", "idx0"], ["h1_0s"], axis=0),
            n("Gather", ["h", "idx1"], ["h2_0s"], axis=0),
            n("Unsqueeze", ["h1_0s", "axes0"], ["h1_0"]),
            n("Unsqueeze", ["h2_0s", "axes0"], ["h2_0"]),
        ]
    else:
        outer += [n("Gather", ["h", "idx0"], ["h1_0"], axis=0), n("Gather", ["h", "idx1"], ["h2_0"], axis=0)]

    # the body: unroll steps per iteration
    body_nodes = []
    tok, h1, h2 = "tok_in", "h1_in", "h2_in"
    toks, cdfs = [], []
    if not greedy:
        body_nodes += [
            n("Mul", ["iter", "unroll"], ["t0"]),
        ]
    for k in range(unroll):
        p = f"s{k}_"
        nodes, logits, h1, h2 = step_fn(p, tok, h1, h2, w_out, b_out)
        body_nodes += nodes
        axis = 2 if native else 1
        if greedy:
            body_nodes.append(n("ArgMax", [logits], [f"{p}tok"], axis=axis, keepdims=0))
            tok = f"{p}tok"
        else:
            body_nodes += [
                n("Add", ["t0", f"k{k}"], [f"{p}t"]),
                n("Gather", ["u4" if native else "u3", f"{p}t"], [f"{p}u"], axis=0),
            ]
            inits.append(_init(f"k{k}", np.array(k, np.int64)))
            nodes, tok, cdf = _draw(p, logits, f"{p}u", axis)
            body_nodes += nodes
            cdfs.append(cdf)
        if native:  # token [1, B] -> [B]
            body_nodes.append(n("Squeeze", [tok, "axes0"], [f"{p}tok_b"]))
            tok = f"{p}tok_b"
        toks.append(tok)
    body_nodes.append(n("Identity", ["cond_in"], ["cond_out"]))
    body_nodes += [n("Unsqueeze", [t, "axes0"], [f"{t}_1"]) for t in toks]
    body_nodes.append(n("Concat", [f"{t}_1" for t in toks], ["block_tokens"], axis=0))
    scan_outputs = [_vi("block_tokens", INT64, [unroll, "batch"])]
    if debug and not greedy:
        body_nodes += [n("Unsqueeze", [c, "axes0"], [f"{c}_1"]) for c in cdfs]
        body_nodes.append(n("Concat", [f"{c}_1" for c in cdfs], ["block_cdf"], axis=0))
        scan_outputs.append(_vi("block_cdf", FLOAT, [unroll, "batch", V]))
    body_nodes += [
        n("Identity", [tok], ["tok_out"]),
        n("Identity", [h1], ["h1_out"]),
        n("Identity", [h2], ["h2_out"]),
    ]
    state_shape = [1, "batch", H] if native else ["batch", H]
    body = helper.make_graph(
        body_nodes,
        "body",
        [
            _vi("iter", INT64, []),
            _vi("cond_in", TensorProto.BOOL, []),
            _vi("tok_in", INT64, ["batch"]),
            _vi("h1_in", FLOAT, state_shape),
            _vi("h2_in", FLOAT, state_shape),
        ],
        [
            _vi("cond_out", TensorProto.BOOL, []),
            _vi("tok_out", INT64, ["batch"]),
            _vi("h1_out", FLOAT, state_shape),
            _vi("h2_out", FLOAT, state_shape),
            *scan_outputs,
        ],
    )
    loop_outputs = ["tok_last", "h1_last", "h2_last", "tokens_blocks"] + (
        ["cdf_blocks"] if debug and not greedy else []
    )
    outer.append(n("Loop", ["iterations", "true", "token0", "h1_0", "h2_0"], loop_outputs, body=body))
    outer.append(n("Flatten", ["tokens_blocks"], ["tokens"], axis=2))
    if native:
        outer.append(n("Concat", ["h1_last", "h2_last"], ["h_out"], axis=0))
    else:
        outer += [
            n("Unsqueeze", ["h1_last", "axes0"], ["h1_l"]),
            n("Unsqueeze", ["h2_last", "axes0"], ["h2_l"]),
            n("Concat", ["h1_l", "h2_l"], ["h_out"], axis=0),
        ]
    outputs = [_vi("tokens", INT64, ["steps", "batch"]), _vi("h_out", FLOAT, [LAYERS, "batch", H])]
    if debug and not greedy:
        outputs.append(_vi("cdf_blocks", FLOAT, ["iterations", unroll, "batch", V]))
    graph = helper.make_graph(outer, "sampling_rollout", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_scan(weights: Weights):
    """Temperature sampling as a ``Scan`` over the uniforms (one step per iteration, hand cells): no
    iteration counter, no Gather of u[t]; inputs and outputs as ``build_fused``'s."""
    n = helper.make_node
    inits = weights.initializers() + [
        _init("axes0", np.array([0], np.int64)),
        _init("axes2", np.array([2], np.int64)),
        _init("idx0", np.array(0, np.int64)),
        _init("idx1", np.array(1, np.int64)),
    ]
    outer = [
        n("Unsqueeze", ["uniforms", "axes2"], ["u3"]),
        n("Div", ["w_out", "temperature"], ["w_out_T"]),
        n("Div", ["b_out", "temperature"], ["b_out_T"]),
        n("Gather", ["h", "idx0"], ["h1_0"], axis=0),
        n("Gather", ["h", "idx1"], ["h2_0"], axis=0),
    ]
    nodes, logits, h1, h2 = _hand_step("s_", "tok_in", "h1_in", "h2_in", "w_out_T", "b_out_T")
    draw, tok, _ = _draw("s_", logits, "u_t", 1)
    nodes += draw
    nodes += [n("Identity", [tok], ["tok_out"]), n("Identity", [tok], ["tok_scan"])]
    nodes += [n("Identity", [h1], ["h1_out"]), n("Identity", [h2], ["h2_out"])]
    body = helper.make_graph(
        nodes,
        "scan_body",
        [
            _vi("tok_in", INT64, ["batch"]),
            _vi("h1_in", FLOAT, ["batch", H]),
            _vi("h2_in", FLOAT, ["batch", H]),
            _vi("u_t", FLOAT, ["batch", 1]),
        ],
        [
            _vi("tok_out", INT64, ["batch"]),
            _vi("h1_out", FLOAT, ["batch", H]),
            _vi("h2_out", FLOAT, ["batch", H]),
            _vi("tok_scan", INT64, ["batch"]),
        ],
    )
    outer.append(
        n(
            "Scan",
            ["token0", "h1_0", "h2_0", "u3"],
            ["tok_last", "h1_last", "h2_last", "tokens"],
            body=body,
            num_scan_inputs=1,
        )
    )
    outer += [
        n("Unsqueeze", ["h1_last", "axes0"], ["h1_l"]),
        n("Unsqueeze", ["h2_last", "axes0"], ["h2_l"]),
        n("Concat", ["h1_l", "h2_l"], ["h_out"], axis=0),
    ]
    graph = helper.make_graph(
        outer,
        "sampling_scan",
        [
            _vi("token0", INT64, ["batch"]),
            _vi("h", FLOAT, [LAYERS, "batch", H]),
            _vi("uniforms", FLOAT, ["steps", "batch"]),
            _vi("temperature", FLOAT, [1]),
        ],
        [_vi("tokens", INT64, ["steps", "batch"]), _vi("h_out", FLOAT, [LAYERS, "batch", H])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_step(weights: Weights):
    """One step: token [B] int64, h [2, B, H] -> logits [B, V], h_out [2, B, H] (the hand cells)."""
    n = helper.make_node
    inits = weights.initializers() + [
        _init("axes0", np.array([0], np.int64)),
        _init("idx0", np.array(0, np.int64)),
        _init("idx1", np.array(1, np.int64)),
    ]
    nodes = [n("Gather", ["h", "idx0"], ["h1"], axis=0), n("Gather", ["h", "idx1"], ["h2"], axis=0)]
    step_nodes, logits, h1, h2 = _hand_step("s_", "token", "h1", "h2", "w_out", "b_out")
    nodes += step_nodes
    nodes += [
        n("Unsqueeze", [h1, "axes0"], ["h1_1"]),
        n("Unsqueeze", [h2, "axes0"], ["h2_1"]),
        n("Concat", ["h1_1", "h2_1"], ["h_out"], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "step",
        [_vi("token", INT64, ["batch"]), _vi("h", FLOAT, [LAYERS, "batch", H])],
        [_vi(logits, FLOAT, ["batch", V]), _vi("h_out", FLOAT, [LAYERS, "batch", H])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    """Made by the runtime's own session factory: intra-op threads, 1 inter-op thread, no constant folding."""
    return create_session(model.SerializeToString(), {}, "the prototype", "cpu", threads)


def step_loop_sample(sess, token0, h0, uniforms, temperature, greedy, steps=STEPS):
    tok, h = token0, h0
    out = np.empty((steps, token0.shape[0]), np.int64)
    inv_t = np.float32(1.0 / temperature)
    for t in range(steps):
        logits, h = sess.run(None, {"token": tok, "h": h})
        if greedy:
            tok = logits.argmax(-1)
        else:
            z = logits * inv_t
            z -= z.max(-1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(-1, keepdims=True)
            cdf = np.cumsum(z, -1)
            tok = np.minimum((cdf <= uniforms[t][:, None]).sum(-1), V - 1).astype(np.int64)
        out[t] = tok
    return out


def fused_sample(sess, token0, h0, uniforms, temperature, greedy, steps=STEPS):
    if greedy:
        feed = {"token0": token0, "h": h0, "steps": np.array([steps], np.int64)}
    else:
        feed = {"token0": token0, "h": h0, "uniforms": uniforms, "temperature": np.array([temperature], np.float32)}
    return sess.run(["tokens"], feed)[0]


# ---------------------------------------------------------------------------------------------
# Parity and timing
# ---------------------------------------------------------------------------------------------


def inputs(seed: int, batch: int, steps: int = STEPS):
    rng = np.random.default_rng(seed)
    token0 = rng.integers(0, V, size=batch, dtype=np.int64)
    h0 = np.zeros((LAYERS, batch, H), np.float32)
    uniforms = rng.random((steps, batch), dtype=np.float32)
    return token0, h0, uniforms


def parity(model, weights, seeds: int, batch: int, lines: list[str]) -> None:
    debug = session(build_fused(weights, greedy=False, debug=True), 1)
    greedy_sess = session(build_fused(weights, greedy=True), 1)
    parted, first_steps, gaps = 0, [], []
    greedy_parted = 0
    streams = 0
    detail = []
    for seed in range(seeds):
        token0, h0, uniforms = inputs(1000 + seed, batch)
        eager, cdf_e = eager_sample(model, token0, h0, uniforms, TEMPERATURE, greedy=False, record_cdf=True)
        fused, _, cdf_blocks = debug.run(
            None,
            {"token0": token0, "h": h0, "uniforms": uniforms, "temperature": np.array([TEMPERATURE], np.float32)},
        )
        cdf_f = cdf_blocks.reshape(STEPS, batch, V)
        ge, _ = eager_sample(model, token0, h0, None, TEMPERATURE, greedy=True)
        gf = fused_sample(greedy_sess, token0, h0, None, TEMPERATURE, greedy=True)
        greedy_parted += int((ge != gf).any(axis=0).sum())
        for b in range(batch):
            streams += 1
            diff = np.nonzero(eager[:, b] != fused[:, b])[0]
            if len(diff) == 0:
                continue
            t = int(diff[0])
            parted += 1
            first_steps.append(t)
            u = np.float32(uniforms[t, b])
            i_e, i_f = int(eager[t, b]), int(fused[t, b])
            k = min(i_e, i_f)  # the cdf entry that one side put <= u and the other > u
            gap_e = abs(float(cdf_e[t, b, k]) - float(u))
            gap_f = abs(float(cdf_f[t, b, k]) - float(u))
            cdf_diff = float(np.abs(cdf_e[t, b] - cdf_f[t, b]).max())
            gaps.append(max(gap_e, gap_f))
            detail.append(
                f"  seed {1000 + seed} row {b}: step {t}, eager {i_e} fused {i_f}, u={float(u):.9f}, "
                f"|cdf_eager[{k}]-u|={gap_e:.2e} |cdf_fused[{k}]-u|={gap_f:.2e}, "
                f"max |cdf_eager-cdf_fused| at that step {cdf_diff:.2e}, spacing(u)={float(np.spacing(u)):.1e}"
            )
    # cdf agreement before any parting (all streams, the first 50 steps)
    lines.append(
        f"Token parity, temperature {TEMPERATURE}, batch {batch}, {seeds} seeds x {batch} rows = {streams} streams "
        f"x {STEPS} tokens, fused (hand cells, 1 thread) vs eager, same uniforms:"
    )
    lines.append(f"  streams that part: {parted}/{streams}; first parting steps: {sorted(first_steps)}")
    if gaps:
        lines.append(
            f"  CDF gap at the drawn uniform (max of both sides): max {max(gaps):.2e}, median {np.median(gaps):.2e}"
        )
    lines += detail[:12]
    if len(detail) > 12:
        lines.append(f"  ... {len(detail) - 12} more")
    lines.append(f"Greedy parity: streams whose argmax tokens part within {STEPS}: {greedy_parted}/{streams}")


def _impls(model, step_sess, one, fused, scan, batch: int, greedy: bool) -> dict:
    token0, h0, uniforms = inputs(7, batch)
    impls = {
        "eager torch (1 thread)": lambda: eager_sample(model, token0, h0, uniforms, TEMPERATURE, greedy),
        "ORT step loop + numpy": lambda: step_loop_sample(step_sess, token0, h0, uniforms, TEMPERATURE, greedy),
        "fused Loop, hand cells, 1/iter, 1 thr": lambda: fused_sample(one, token0, h0, uniforms, TEMPERATURE, greedy),
    }
    if not greedy:
        impls["fused Scan over u, hand cells, 1 thr"] = lambda: fused_sample(
            scan, token0, h0, uniforms, TEMPERATURE, greedy
        )
    for native in (False, True):
        for threads in (1, 0):
            s = fused[(greedy, native, threads)]
            cells = "native GRU" if native else "hand cells"
            name = f"fused Loop, {cells}, {UNROLL}/iter, {threads or 'default'} thr"
            impls[name] = lambda s=s: fused_sample(s, token0, h0, uniforms, TEMPERATURE, greedy)
    return impls


def timing(model, weights, rounds: int, lines: list[str]) -> None:
    step_sess = session(build_step(weights), 1)
    fused = {}
    for greedy in (False, True):
        for native in (False, True):
            for threads in (1, 0):
                fused[(greedy, native, threads)] = session(build_fused(weights, greedy, native), threads)
    one = {}
    for greedy in (False, True):
        one[greedy] = session(build_fused(weights, greedy, unroll=1), 1)
    scan = session(build_scan(weights), 1)
    cases = [("temperature", 1, False), ("temperature", 64, False), ("greedy", 1, True), ("greedy", 64, True)]
    rows = []
    for label, batch, greedy in cases:
        impls = _impls(model, step_sess, one[greedy], fused, scan, batch, greedy)
        best = {name: float("inf") for name in impls}
        for fn in impls.values():
            fn()  # warm-up
        for _ in range(rounds):
            for name, fn in impls.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
        base = best["eager torch (1 thread)"]
        for name, t in best.items():
            rows.append((label, batch, name, t * 1e3, base / t))
    target = {("temperature", 1): 10, ("temperature", 64): 3, ("greedy", 1): 10, ("greedy", 64): None}
    lines.append(f"| sampling | batch | implementation | ms / {STEPS} tokens | x eager | target |")
    lines.append("|---|---|---|---|---|---|")
    for label, batch, name, ms, ratio in rows:
        tgt = target[(label, batch)]
        mark = "" if tgt is None or name.startswith("eager") else (" met" if ratio >= tgt else " missed")
        lines.append(
            f"| {label} | {batch} | {name} | {ms:.2f} | {ratio:.2f}x | {f'>= {tgt}x' + mark if tgt else '-'} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--parity-batches", default="1,64")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = make_model()
    weights = Weights(model)

    # sanity: the step model against torch on one step
    token0, h0, uniforms = inputs(0, 3)
    with torch.no_grad():
        y, h_t = model.gru(model.embedding(torch.from_numpy(token0)).unsqueeze(0), torch.from_numpy(h0))
        logits_t = model.linear(y[0]).numpy()
    logits_o, h_o = session(build_step(weights), 1).run(None, {"token": token0, "h": h0})
    lines = [
        f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} (1 thread), "
        f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}, opset {OPSET}",
        f"One step, hand-built ONNX vs torch: logits max abs {np.abs(logits_o - logits_t).max():.1e}, "
        f"state {np.abs(h_o - h_t.numpy()).max():.1e}",
    ]
    print("\n".join(lines), flush=True)
    start = time.perf_counter()
    timing(model, weights, args.rounds, lines)
    lines.append(f"(timing {time.perf_counter() - start:.0f} s, best of {args.rounds} interleaved rounds)")
    print("\n".join(lines[2:]), flush=True)
    shown = len(lines)
    lines.append("")
    start = time.perf_counter()
    for batch in map(int, args.parity_batches.split(",")):
        parity(model, weights, args.seeds, batch, lines)
    lines.append(f"(parity {time.perf_counter() - start:.0f} s)")
    print("\n".join(lines[shown:]))


if __name__ == "__main__":
    sys.exit(main())

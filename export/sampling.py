"""Builds the fused sampling rollouts (greedy, sampled) around any exported step graph.

`sampling_rollouts` wraps a step model (``(*inputs, *states) -> (*outputs, *state outputs)``, one
int64 token input, one float32 logits output (batch, V)) into the two forms `runtime.fused` names:

- ``rollout_greedy``: ``token0, *other inputs, *states, steps`` -> ``tokens, *state outputs``
- ``rollout_sample``: ``token0, *other inputs, *states, uniforms, temperature, top_k, top_p``
  -> ``tokens, *state outputs``

Each is an ONNX ``Loop`` whose body is the step graph, ``unroll`` copies of it per iteration,
each followed by the draw `runtime.sampling` pins (argmax, or the inverse-CDF draw at
``uniforms[t]``), its token fed to the next copy; a second ``Loop`` of one step per iteration
runs the remainder (steps % unroll). The step graph is rewritten on the way in
(`export.step_graph`: hoisting, dead code, the state's round trips between copies, the unrolled
body's own copies of the weights). The forms keep the step model's
opset (and its other domains and local functions) at IR version `export.onnx_graph.IR_VERSION`.
``rollout_sample`` chooses at run time (an outer ``If``) between a body without the top-k/top-p
filters (both off: top_k >= V and top_p >= 1) and one with them. A step with one-step ``GRU``
nodes (nn.GRU) gets a second choice (an ``If`` on the batch size): from
`runtime.fused.SAMPLING_CELLS_MIN_BATCH` rows the Loops compute each GRU as two ``Gemm`` and the
gates' element-wise ops (`export.gate_cells.gru_cells`), faster than onnxruntime's GRU kernel there, rounded in
another order (tokens agree with the step loop's but at float32 ties).


The eager reference (`eager_sample`, `first_parting`) is `export.sampling_reference`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from runtime.errors import ExportError
from runtime.fused import SAMPLING_CELLS_MIN_BATCH, SAMPLING_FORMS
from runtime.sampling import U_MAX

from .gate_cells import gru_cells
from .onnx_graph import BOOL, FLOAT, INT64, UNROLL, finish_model, ints, typed
from .step_graph import (
    StepGraph,
    bypass_slices_of_concats,
    bypass_squeezes_of_unsqueezes,
    copy_body,
    local_constants,
    prepare_step,
    prune,
    used_names,
    within_local_budget,
)

GREEDY_FORM, SAMPLE_FORM = SAMPLING_FORMS  # "rollout_greedy", "rollout_sample"
_P = "sampling/"  # prefix of every name this module adds
_OWN_NAMES = {"token0", "tokens", "steps", "uniforms", "temperature", "top_k", "top_p"}


def _draw_nodes(p: str, logits: str, u: str | None, filtered: bool) -> tuple[list[onnx.NodeProto], str]:
    """The pinned draw of one step (`runtime.sampling`): (nodes, token (batch,) int64)."""
    n = helper.make_node
    if u is None:
        return [n("ArgMax", [logits], [f"{p}token"], axis=1, keepdims=0)], f"{p}token"
    nodes = [n("Div", [logits, "temperature"], [f"{p}z"])]
    z = f"{p}z"
    if filtered:
        nodes += [
            n("TopK", [z, f"{_P}k"], [f"{p}top", f"{p}top_ids"], axis=1),
            n("Gather", [f"{p}top", f"{_P}k_last"], [f"{p}kth"], axis=1),  # (batch, 1): the k-th largest
            n("Less", [z, f"{p}kth"], [f"{p}below_k"]),
            n("Where", [f"{p}below_k", f"{_P}minus_inf", z], [f"{p}zk"]),
        ]
        z = f"{p}zk"
    nodes.append(n("Softmax", [z], [f"{p}p"], axis=1))
    prob = f"{p}p"
    if filtered:
        nodes += [
            n("TopK", [prob, f"{_P}vocabulary"], [f"{p}sorted", f"{p}sorted_ids"], axis=1),
            n("CumSum", [f"{p}sorted", f"{_P}axis1_0d"], [f"{p}mass"]),
            n("Less", [f"{p}mass", f"{_P}top_p"], [f"{p}short"]),
            n("Cast", [f"{p}short"], [f"{p}short_i"], to=INT64),
            n("ReduceSum", [f"{p}short_i", f"{_P}axis1"], [f"{p}m_raw"], keepdims=1),
            n("Min", [f"{p}m_raw", f"{_P}last_id"], [f"{p}m"]),
            n("GatherElements", [f"{p}sorted", f"{p}m"], [f"{p}pth"], axis=1),
            n("Less", [prob, f"{p}pth"], [f"{p}below_p"]),
            n("Where", [f"{p}below_p", f"{_P}zero_f", prob], [f"{p}pp"]),
        ]
        prob = f"{p}pp"
    nodes += [
        n("CumSum", [prob, f"{_P}axis1_0d"], [f"{p}cdf"]),
        n("Gather", [f"{p}cdf", f"{_P}last_id"], [f"{p}total"], axis=1),  # (batch, 1)
        n("Mul", [u, f"{p}total"], [f"{p}x"]),
        n("LessOrEqual", [f"{p}cdf", f"{p}x"], [f"{p}le"]),
        n("Cast", [f"{p}le"], [f"{p}le_i"], to=INT64),
        n("ReduceSum", [f"{p}le_i", f"{_P}axis1"], [f"{p}token"], keepdims=0),
    ]
    return nodes, f"{p}token"


def _loop_body(step: StepGraph, name: str, steps: int, sample: bool, filtered: bool, blocks: str | None):
    """A Loop body running ``steps`` steps: (iter, cond, token, *states) -> (cond, token, *states,
    tokens (steps * batch,)). ``blocks`` names the outer uniforms (iterations, batch, steps) when sampling."""
    p = f"{_P}{name}/"
    n = helper.make_node
    nodes: list[onnx.NodeProto] = []
    token, states = f"{p}token_in", [f"{p}state{i}_in" for i in range(len(step.states))]
    out_states = [f"{p}state{i}_out" for i in range(len(step.states))]
    us: list[str | None] = [None] * steps
    if sample:
        nodes.append(n("Gather", [blocks, f"{p}iter"], [f"{p}u_block"], axis=0))  # (batch, steps)
        us = [f"{p}u{k}" for k in range(steps)]
        if steps > 1:
            nodes.append(n("Split", [f"{p}u_block", f"{_P}ones{steps}"], us, axis=1))
        else:
            us = [f"{p}u_block"]
    tokens: list[str] = []
    origin: dict[str, str] = {}
    for k in range(steps):
        last = k == steps - 1
        final = dict(zip(step.state_output_names, out_states)) if last else None
        copy, (logits,), states = copy_body(step, f"{p}s{k}/", [token], states, origin, final)
        nodes += copy
        draw, token = _draw_nodes(f"{p}s{k}/", logits, us[k], filtered)
        nodes += draw
        tokens.append(token)
    for produced, wanted in zip(states, out_states):
        if produced != wanted:  # passed through, or the same value as another output
            nodes.append(n("Identity", [produced], [wanted]))
    nodes += [
        n("Identity", [f"{p}cond_in"], [f"{p}cond_out"]),
        n("Identity", [token], [f"{p}token_out"]),
        n("Concat", tokens, [f"{p}tokens"], axis=0) if steps > 1 else n("Identity", tokens, [f"{p}tokens"]),
    ]
    body_outputs = {f"{p}cond_out", f"{p}token_out", *out_states, f"{p}tokens"}
    dims_of = lambda name: step.dims.get(origin.get(name, name))  # noqa: E731
    nodes = bypass_slices_of_concats(nodes, step.constants, dims_of, body_outputs)
    nodes = bypass_squeezes_of_unsqueezes(nodes, step.constants, body_outputs)
    nodes = prune(nodes, body_outputs)
    nodes, local = local_constants(nodes, step.constants, f"{p}w/") if steps > 1 and step.local else (nodes, [])
    batch = step.varying[0].type.tensor_type.shape.dim[0]
    batch_dim = batch.dim_param if batch.HasField("dim_param") else None
    inputs = [
        helper.make_tensor_value_info(f"{p}iter", INT64, []),
        helper.make_tensor_value_info(f"{p}cond_in", BOOL, []),
        typed(step.varying[0], f"{p}token_in"),
        *(typed(s, f"{p}state{i}_in") for i, s in enumerate(step.states)),
    ]
    outputs = [
        helper.make_tensor_value_info(f"{p}cond_out", BOOL, []),
        typed(step.varying[0], f"{p}token_out"),
        *(typed(s, name) for s, name in zip(step.state_outputs, out_states)),
        helper.make_tensor_value_info(f"{p}tokens", INT64, [None if steps > 1 else batch_dim]),
    ]
    return helper.make_graph(nodes, name, inputs, outputs, initializer=local)


def _rollout_nodes(step: StepGraph, prefix: str, unroll: int, sample: bool, filtered: bool, out: list[str]) -> list:
    """The two Loops (unroll steps per iteration, then the remainder) from the outer values, into ``out``
    (tokens, *state outputs)."""
    n = helper.make_node
    p = f"{_P}{prefix}"
    states = [s.name for s in step.states]
    nodes = []
    blocks = tail_blocks = None
    if sample:
        blocks, tail_blocks = f"{p}u_blocks", f"{p}u_tail"
        nodes += [
            n("Slice", [f"{_P}u", f"{_P}zero1", f"{_P}main_steps", f"{_P}zero1"], [f"{p}u_main"]),
            n("Reshape", [f"{p}u_main", f"{_P}block_shape"], [f"{p}u_main3"]),  # (iterations, unroll, batch)
            n("Transpose", [f"{p}u_main3"], [blocks], perm=[0, 2, 1]),  # (iterations, batch, unroll)
            n("Slice", [f"{_P}u", f"{_P}main_steps", f"{_P}steps", f"{_P}zero1"], [f"{p}u_rest"]),
            n("Unsqueeze", [f"{p}u_rest", f"{_P}axis2"], [tail_blocks]),  # (rest, batch, 1)
        ]
    main_states = [f"{p}main_state{i}" for i in range(len(states))]
    nodes += [
        n(
            "Loop",
            [f"{_P}iterations", f"{_P}true", "token0", *states],
            [f"{p}main_token", *main_states, f"{p}main_tokens"],
            body=_loop_body(step, f"{prefix}main", unroll, sample, filtered, blocks),
        ),
        n(
            "Loop",
            [f"{_P}rest", f"{_P}true", f"{p}main_token", *main_states],
            [f"{p}last_token", *out[1:], f"{p}rest_tokens"],
            body=_loop_body(step, f"{prefix}rest", 1, sample, filtered, tail_blocks),
        ),
        n("Reshape", [f"{p}main_tokens", f"{_P}tokens_shape"], [f"{p}main_tokens2"]),  # (main steps, batch)
        n("Concat", [f"{p}main_tokens2", f"{p}rest_tokens"], [out[0]], axis=0),
    ]
    return nodes


def _branch(
    prefix: str, outputs: list[str], step: StepGraph, build: Callable[[str, list[str]], list[onnx.NodeProto]]
) -> onnx.GraphProto:
    """An If branch: ``build(prefix, names)``'s nodes computing ``outputs`` (tokens, *state outputs)
    into names of its own, and the branch's outputs (copies of those)."""
    names = [f"{_P}{prefix}{o}" for o in outputs]
    nodes = build(prefix, names)
    nodes += [helper.make_node("Identity", [name], [f"{_P}{prefix}out/{o}"]) for name, o in zip(names, outputs)]
    branch_outputs = [
        helper.make_tensor_value_info(f"{_P}{prefix}out/tokens", INT64, [None, None]),
        *(typed(s, f"{_P}{prefix}out/{o}") for s, o in zip(step.state_outputs, outputs[1:])),
    ]
    return helper.make_graph(nodes, prefix.strip("/").replace("/", "_"), [], branch_outputs)


def _prepare(
    step: onnx.ModelProto,
    token_input: str,
    logits_output: str,
    state_inputs: Sequence[str],
    state_outputs: Sequence[str],
    vocabulary: int | None,
) -> tuple[StepGraph, int]:
    """The step graph prepared around its token input and logits output, and the vocabulary size."""
    prepared = prepare_step(
        step,
        varying=[token_input],
        outputs=[logits_output],
        state_inputs=state_inputs,
        state_outputs=state_outputs,
        reserved=_OWN_NAMES,
        prefix=_P,
    )
    if prepared.varying[0].type.tensor_type.elem_type != INT64:
        raise ExportError(f"the token input {token_input!r} must be int64")
    logits_type = prepared.outputs[0].type.tensor_type
    if logits_type.elem_type != FLOAT or len(logits_type.shape.dim) != 2:
        raise ExportError(f"the logits output {logits_output!r} must be float32 (batch, vocabulary)")
    declared = logits_type.shape.dim[1]
    if vocabulary is None:
        if not declared.HasField("dim_value"):
            raise ExportError(f"the logits output {logits_output!r} has no static vocabulary size: pass vocabulary=")
        vocabulary = int(declared.dim_value)
    return prepared, vocabulary


def _rollout_constants(vocabulary: int, sample: bool, unroll: int) -> list[onnx.TensorProto]:
    """The outer graph's constants (what the bodies and the draws read from outside)."""
    scalar = numpy_helper.from_array
    constants = [
        ints(f"{_P}unroll", unroll),
        ints(f"{_P}zero1", 0),
        ints(f"{_P}axis1", 1),
        ints(f"{_P}axis2", 2),
        ints(f"{_P}minus_one", -1),
        ints(f"{_P}last_id", vocabulary - 1),
        ints(f"{_P}vocabulary", vocabulary),
        ints(f"{_P}cells_min", SAMPLING_CELLS_MIN_BATCH),
        scalar(np.array(1, np.int64), f"{_P}axis1_0d"),
        scalar(np.array(True), f"{_P}true"),
        scalar(np.array([float("-inf")], np.float32), f"{_P}minus_inf"),
        scalar(np.array([0.0], np.float32), f"{_P}zero_f"),
        scalar(np.array([U_MAX], np.float32), f"{_P}u_max"),
        scalar(np.array([1.0], np.float32), f"{_P}one_f"),
        scalar(np.array([2.0], np.float32), f"{_P}two_f"),
        scalar(np.array(0.0, np.float32), f"{_P}zero_f0d"),
        scalar(np.array(U_MAX, np.float32), f"{_P}u_max0d"),
    ]
    if sample and unroll > 1:
        constants.append(ints(f"{_P}ones{unroll}", *([1] * unroll)))
    return constants  # the unused ones are dropped with the graph's initializers


def _trip_counts(sample: bool) -> list[onnx.NodeProto]:
    """The batch, the steps (``steps``, or the uniforms' length), the iterations and the remainder."""
    n = helper.make_node
    nodes = [n("Shape", ["token0"], [f"{_P}batch"])]  # (1,)
    if sample:
        nodes += [
            n("Shape", ["uniforms"], [f"{_P}steps"], start=0, end=1),
            n("Clip", ["uniforms", f"{_P}zero_f0d", f"{_P}u_max0d"], [f"{_P}u"]),
        ]
    else:
        nodes.append(n("Identity", ["steps"], [f"{_P}steps"]))
    return nodes + [
        n("Div", [f"{_P}steps", f"{_P}unroll"], [f"{_P}iterations1"]),
        n("Mul", [f"{_P}iterations1", f"{_P}unroll"], [f"{_P}main_steps"]),
        n("Sub", [f"{_P}steps", f"{_P}main_steps"], [f"{_P}rest1"]),
        n("Squeeze", [f"{_P}iterations1", f"{_P}zero1"], [f"{_P}iterations"]),
        n("Squeeze", [f"{_P}rest1", f"{_P}zero1"], [f"{_P}rest"]),
        n("Concat", [f"{_P}minus_one", f"{_P}batch"], [f"{_P}tokens_shape"], axis=0),
    ]


def _filter_settings() -> list[onnx.NodeProto]:
    """The filters' settings, once: k in [1, V]; top_p >= 1 -> 2 (no prefix mass is below it);
    ``filter`` whether either filter is on."""
    n = helper.make_node
    return [
        n("Concat", [f"{_P}minus_one", f"{_P}unroll", f"{_P}batch"], [f"{_P}block_shape"], axis=0),
        n("Min", ["top_k", f"{_P}vocabulary"], [f"{_P}k_high"]),
        n("Max", [f"{_P}k_high", f"{_P}axis1"], [f"{_P}k"]),
        n("Sub", [f"{_P}k", f"{_P}axis1"], [f"{_P}k_last"]),
        n("GreaterOrEqual", ["top_p", f"{_P}one_f"], [f"{_P}p_off"]),
        n("Where", [f"{_P}p_off", f"{_P}two_f", "top_p"], [f"{_P}top_p"]),
        n("Less", [f"{_P}k", f"{_P}vocabulary"], [f"{_P}k_on"]),
        n("Not", [f"{_P}p_off"], [f"{_P}p_on"]),
        n("Or", [f"{_P}k_on", f"{_P}p_on"], [f"{_P}filter1"]),
        n("Squeeze", [f"{_P}filter1", f"{_P}zero1"], [f"{_P}filter"]),
    ]


def _loops(
    step: StepGraph, cells: StepGraph | None, label: str, names: list[str], unroll: int, sample: bool, filtered: bool
) -> list[onnx.NodeProto]:
    """The Loops into ``names`` (tokens, *state outputs): with GRU cells from SAMPLING_CELLS_MIN_BATCH
    rows (an If on ``cells_on``) when the step has GRU nodes to rewrite, else with the step's own nodes."""
    if cells is None:
        return _rollout_nodes(step, label, unroll, sample, filtered, names)
    outputs = ["tokens", *step.state_output_names]
    branches = {}
    for on, kind, variant in ((True, "cells", cells), (False, "kernels", step)):

        def build(prefix: str, out: list[str], variant: StepGraph = variant) -> list[onnx.NodeProto]:
            return _rollout_nodes(variant, prefix, unroll, sample, filtered, out)

        branches[on] = _branch(f"{label}{kind}/", outputs, step, build)
    return [helper.make_node("If", [f"{_P}cells_on"], names, then_branch=branches[True], else_branch=branches[False])]


def _rollout_io(step: StepGraph, sample: bool) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    """The form's declared inputs and outputs (`runtime.contract.form_specs`)."""
    batch = step.varying[0].type.tensor_type.shape.dim[0]
    batch_dim = batch.dim_param if batch.HasField("dim_param") else "batch"
    inputs = [typed(step.varying[0], "token0"), *step.held, *step.states]
    if sample:
        inputs += [
            helper.make_tensor_value_info("uniforms", FLOAT, ["steps", batch_dim]),
            helper.make_tensor_value_info("temperature", FLOAT, [1]),
            helper.make_tensor_value_info("top_k", INT64, [1]),
            helper.make_tensor_value_info("top_p", FLOAT, [1]),
        ]
    else:
        inputs.append(helper.make_tensor_value_info("steps", INT64, [1]))
    outputs = [
        helper.make_tensor_value_info("tokens", INT64, ["steps", batch_dim]),
        *(typed(s, s.name) for s in step.state_outputs),
    ]
    return inputs, outputs


def _rollout(
    step: StepGraph, vocabulary: int, form: str, unroll: int, opset: int, metadata: dict[str, str]
) -> onnx.ModelProto:
    n = helper.make_node
    sample = form == SAMPLE_FORM
    nodes = [*step.hoisted, *_trip_counts(sample)]
    outputs = ["tokens", *step.state_output_names]
    cells = gru_cells(step, _P)
    if cells is not None:
        nodes += [
            n("GreaterOrEqual", [f"{_P}batch", f"{_P}cells_min"], [f"{_P}cells_on1"]),
            n("Squeeze", [f"{_P}cells_on1", f"{_P}zero1"], [f"{_P}cells_on"]),
        ]
    variants = within_local_budget([step] if cells is None else [step, cells], 2 if sample else 1)
    step, cells = variants[0], (variants[1] if cells is not None else None)
    if not sample:
        nodes += _loops(step, cells, "", outputs, unroll, sample, False)
    else:
        nodes += _filter_settings()
        branches = {
            filtered: _branch(
                f"{label}/",
                outputs,
                step,
                lambda prefix, out, on=filtered: _loops(step, cells, prefix, out, unroll, sample, on),
            )
            for filtered, label in ((True, "filtered"), (False, "plain"))
        }
        nodes.append(n("If", [f"{_P}filter"], outputs, then_branch=branches[True], else_branch=branches[False]))
    inputs, graph_outputs = _rollout_io(step, sample)
    nodes = prune(nodes, outputs)  # hoisted nodes the rewrites left unused
    used = used_names(nodes) | set(outputs)
    constants = _rollout_constants(vocabulary, sample, unroll)
    initializers = [t for t in (*(cells or step).initializers, *constants) if t.name in used]
    graph = helper.make_graph(nodes, form, inputs, graph_outputs, initializers)
    # As export.fused's models, with the step model's other opset domains and local functions carried over.
    return finish_model(graph, opset, form, metadata, step.imports, step.functions)


def sampling_rollouts(
    step: onnx.ModelProto,
    *,
    token_input: str,
    logits_output: str,
    state_inputs: Sequence[str],
    state_outputs: Sequence[str],
    opset: int,
    metadata: dict[str, str],
    vocabulary: int | None = None,
    unroll: int = UNROLL,
) -> dict[str, onnx.ModelProto]:
    """``{"rollout_greedy": model, "rollout_sample": model}`` around the step model ``step``.

    ``step``'s inputs are its inputs then ``state_inputs``, its outputs its outputs then
    ``state_outputs``; ``token_input`` is its int64 (batch,) token input, ``logits_output`` its
    float32 (batch, V) logits (V read from the graph unless ``vocabulary`` is given). The inputs other
    than the token keep their names and are held for every step; the states keep their names and
    the step's state outputs name the final states. ``unroll`` steps run per Loop iteration."""
    if not isinstance(unroll, int) or unroll < 1:
        raise ExportError(f"unroll must be an int >= 1, got {unroll!r}")
    step_opset = next((o.version for o in step.opset_import if o.domain in ("", "ai.onnx")), opset)
    if step_opset != opset:
        raise ExportError(f"the step model is opset {step_opset}, the sampling forms were asked for opset {opset}")
    prepared, size = _prepare(step, token_input, logits_output, list(state_inputs), list(state_outputs), vocabulary)
    return {form: _rollout(prepared, size, form, unroll, opset, metadata) for form in SAMPLING_FORMS}

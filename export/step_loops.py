"""Builds the fused loops (``sequence_loop``, ``rollout_loop``) around any exported step graph.

`step_loops` wraps a step model ``(*inputs, *states) -> (*outputs, *state outputs)`` of any
signature (several inputs, token inputs, states of any rank with the batch axis anywhere) into the
forms `runtime.contract.form_specs` describes, named as it names them:

- ``sequence_loop`` (teacher-forced): every input with a steps axis in front -> every output with
  a steps axis in front, and the final states;
- ``rollout_loop`` (closed loop, where an output feeds back into an input as it is): the
  fed-back input's first value, the other inputs (held for every step), the states and
  ``steps`` -> the outputs of ``steps`` steps and the final states (any steps >= 0).

Each is an ONNX ``Loop`` whose body is the step graph, `UNROLL` copies per iteration, and a second
``Loop`` of one step per iteration for the remainder (steps % UNROLL), as `export.sampling` builds
the sampling rollouts: the step graph is rewritten on the way in (`export.step_graph`: what the
constants and held inputs alone compute runs once before the loops, the state's round trips between
copies are removed, the unrolled body holds its own copies of the weights while they are small;
`export.gate_cells`: LSTM kernels computed as Gemm cells from LOOP_CELLS_MIN_BATCH rows, an ``If``).
The forms keep the step model's opset, other domains and local functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from runtime.contract import INT64 as CONTRACT_INT64
from runtime.contract import form_specs
from runtime.errors import ExportError
from runtime.fused import ROLLOUT_LOOP, SEQUENCE_LOOP
from runtime.manifest import IDENTITY, Feedback, StateSpec, TensorSpec

from .gate_cells import LOOP_CELLS_MIN_BATCH, lstm_cells
from .onnx_graph import BOOL, FLOAT, INT64, UNROLL, finish_model, ints, typed
from .step_graph import (
    StepGraph,
    bypass_slices_of_concats,
    bypass_squeezes_of_unsqueezes,
    bypass_unsqueezes_of_squeezes,
    copy_body,
    local_constants,
    prepare_step,
    prune,
    used_names,
    within_local_budget,
)

LOOP_FORMS = (SEQUENCE_LOOP, ROLLOUT_LOOP)
_P = "loop/"  # prefix of every name this module adds


def _body(step: StepGraph, name: str, steps: int, sources: list[str] | None, fed: int | None) -> onnx.GraphProto:
    """A Loop body of ``steps`` steps: (iter, cond, [fed], *states) -> (cond, [fed], *states,
    *per-step outputs). Teacher-forced (``fed`` None): input i of step k is ``sources[i]`` (an outer
    value, (iterations, steps, batch, ...) for blocks, (rest, batch, ...) for single steps) at
    [iter, k]. Closed loop: output ``fed`` of a step is the next step's varying input."""
    p = f"{_P}{name}/"
    n = helper.make_node
    nodes: list[onnx.NodeProto] = []
    state_in = [f"{p}state{i}_in" for i in range(len(step.states))]
    state_out = [f"{p}state{i}_out" for i in range(len(step.states))]
    carried = [] if fed is None else [f"{p}fed_in"]
    if fed is None:
        nodes += [n("Gather", [source, f"{p}iter"], [f"{p}x{i}_block"], axis=0) for i, source in enumerate(sources)]
    states, value, per_step, origin = state_in, f"{p}fed_in", [], {}
    count = 0 if sources is None else len(sources)
    for k in range(steps):
        if fed is None:
            if steps > 1:
                nodes += [
                    n("Gather", [f"{p}x{i}_block", f"{_P}k{k}"], [f"{p}x{i}_s{k}"], axis=0) for i in range(len(sources))
                ]
            inputs = [f"{p}x{i}_s{k}" if steps > 1 else f"{p}x{i}_block" for i in range(count)]
        else:
            inputs = [value]
        final = dict(zip(step.state_output_names, state_out)) if k == steps - 1 else None
        copy, outputs, states = copy_body(step, f"{p}s{k}/", inputs, states, origin, final)
        nodes += copy
        per_step.append(outputs)
        value = outputs[fed] if fed is not None else value
    scans = [f"{p}y{j}" for j in range(len(step.outputs))]
    for j, scan in enumerate(scans):  # (steps * batch, ...): the steps' outputs one after another
        values = [outputs[j] for outputs in per_step]
        nodes.append(n("Concat", values, [scan], axis=0) if steps > 1 else n("Identity", values, [scan]))
    for produced, wanted in zip(states, state_out):
        if produced != wanted:  # passed through, or the same value as another output
            nodes.append(n("Identity", [produced], [wanted]))
    nodes.append(n("Identity", [f"{p}cond_in"], [f"{p}cond_out"]))
    if fed is not None:
        nodes.append(n("Identity", [value], [f"{p}fed_out"]))
    keep = {f"{p}cond_out", *(f"{p}fed_out" for _ in carried), *state_out, *scans}
    dims_of = lambda name: step.dims.get(origin.get(name, name))  # noqa: E731
    nodes = bypass_slices_of_concats(nodes, step.constants, dims_of, keep)
    nodes = bypass_squeezes_of_unsqueezes(nodes, step.constants, keep)
    nodes = bypass_unsqueezes_of_squeezes(nodes, step.constants, keep)
    nodes = prune(nodes, keep)
    nodes, local = local_constants(nodes, step.constants, f"{p}w/") if steps > 1 and step.local else (nodes, [])
    graph_inputs = [
        helper.make_tensor_value_info(f"{p}iter", INT64, []),
        helper.make_tensor_value_info(f"{p}cond_in", BOOL, []),
        *(typed(step.varying[0], c) for c in carried),
        *(typed(s, name) for s, name in zip(step.states, state_in)),
    ]
    graph_outputs = [
        helper.make_tensor_value_info(f"{p}cond_out", BOOL, []),
        *(typed(step.varying[0], f"{p}fed_out") for _ in carried),
        *(typed(s, name) for s, name in zip(step.state_outputs, state_out)),
        *(
            helper.make_tensor_value_info(scan, o.type.tensor_type.elem_type, None)
            for o, scan in zip(step.outputs, scans)
        ),
    ]
    return helper.make_graph(nodes, name, graph_inputs, graph_outputs, initializer=local)


def _trip_counts(total: str) -> list[onnx.NodeProto]:
    """``iterations`` (scalar) = total // UNROLL, ``main_steps`` (1,) = iterations * UNROLL, ``rest``
    (scalar) = total % UNROLL, from ``total`` int64 (1,)."""
    n = helper.make_node
    return [
        n("Div", [total, f"{_P}unroll"], [f"{_P}iterations1"]),
        n("Mul", [f"{_P}iterations1", f"{_P}unroll"], [f"{_P}main_steps"]),
        n("Sub", [total, f"{_P}main_steps"], [f"{_P}rest1"]),
        n("Squeeze", [f"{_P}iterations1", f"{_P}zero1"], [f"{_P}iterations"]),
        n("Squeeze", [f"{_P}rest1", f"{_P}zero1"], [f"{_P}rest"]),
    ]


def _sequence_sources(names: list[str]) -> tuple[list[onnx.NodeProto], list[str], list[str]]:
    """Each sequence (steps, batch, ...) cut into blocks (iterations, UNROLL, batch, ...) and the
    rest (rest, batch, ...): (nodes, block names, rest names)."""
    n = helper.make_node
    nodes = [n("Shape", [names[0]], [f"{_P}total"], start=0, end=1)]
    nodes += _trip_counts(f"{_P}total")
    blocks, rests = [], []
    for i, name in enumerate(names):
        q = f"{_P}x{i}_"
        nodes += [
            n("Slice", [name, f"{_P}zero1", f"{_P}main_steps", f"{_P}zero1"], [f"{q}main"]),
            n("Shape", [name], [f"{q}dims"], start=1),
            n("Concat", [f"{_P}minus_one", f"{_P}unroll", f"{q}dims"], [f"{q}block_shape"], axis=0),
            n("Reshape", [f"{q}main", f"{q}block_shape"], [f"{q}blocks"]),
            n("Slice", [name, f"{_P}main_steps", f"{_P}total", f"{_P}zero1"], [f"{q}rest"]),
        ]
        blocks.append(f"{q}blocks")
        rests.append(f"{q}rest")
    return nodes, blocks, rests


def _joined_outputs(names: list[str]) -> list[onnx.NodeProto]:
    """The main loop's (iterations, UNROLL * batch, ...) and the rest loop's (rest, batch, ...) of
    each output joined into (steps, batch, ...) as ``names``."""
    n = helper.make_node
    nodes = []
    for j, name in enumerate(names):
        q = f"{_P}y{j}_"
        nodes += [
            n("Concat", [f"{_P}minus_one", f"{_P}batch", f"{q}sizes"], [f"{q}shape"], axis=0),
            n("Reshape", [f"{q}blocks", f"{q}shape"], [f"{q}main"]),
            n("Concat", [f"{q}main", f"{q}rest"], [name], axis=0),
        ]
    return nodes


def _constants(output_dims: list[tuple], unroll: int) -> list[onnx.TensorProto]:
    """The outer graph's constants; ``output_dims`` the outputs' (steps, batch, *sizes)."""
    scalar = numpy_helper.from_array
    constants = [
        ints(f"{_P}unroll", unroll),
        ints(f"{_P}zero1", 0),
        ints(f"{_P}minus_one", -1),
        ints(f"{_P}cells_min", LOOP_CELLS_MIN_BATCH),
        scalar(np.array(True), f"{_P}true"),
        *(scalar(np.array(k, np.int64), f"{_P}k{k}") for k in range(unroll)),
    ]
    return constants + [ints(f"{_P}y{j}_sizes", *dims[2:]) for j, dims in enumerate(output_dims)]


def _loops(step: StepGraph, unroll: int, fed: int | None, sources, carried: list[str], out: list[str], label: str = ""):
    """The main Loop (``unroll`` steps an iteration) and the rest Loop (one step an iteration) from
    ``carried`` (the fed-back input's first value, if any, then the states) into ``out``: the last
    fed-back value (if any), the final states, each output's blocks, then each output's rest."""
    n = helper.make_node
    count = len(step.outputs)
    mids = [f"{_P}{label}mid{i}" for i in range(len(carried))]
    lasts, blocks_out, rests_out = (
        out[: len(carried)],
        out[len(carried) : len(carried) + count],
        out[len(carried) + count :],
    )
    blocks, rests = (None, None) if sources is None else sources
    return [
        n(
            "Loop",
            [f"{_P}iterations", f"{_P}true", *carried],
            [*mids, *blocks_out],
            body=_body(step, f"{label}main", unroll, blocks, fed),
        ),
        n(
            "Loop",
            [f"{_P}rest", f"{_P}true", *mids],
            [*lasts, *rests_out],
            body=_body(step, f"{label}rest", 1, rests, fed),
        ),
    ]


def _chosen_loops(
    variants: list[StepGraph], unroll: int, fed: int | None, sources, carried: list[str]
) -> list[onnx.NodeProto]:
    """The loops of the step (``variants[0]``), or where it has LSTM kernels (``variants[1]`` the
    step with `export.gate_cells`' cells) an ``If`` running the cells from LOOP_CELLS_MIN_BATCH rows.
    Into the last fed-back value (if any), the step's state output names, ``loop/y{j}_blocks`` and
    ``loop/y{j}_rest``."""
    step = variants[0]
    count = len(step.outputs)
    out = [*([f"{_P}fed_last"] if fed is not None else []), *step.state_output_names]
    out += [f"{_P}y{j}_blocks" for j in range(count)] + [f"{_P}y{j}_rest" for j in range(count)]
    if len(variants) == 1:
        return _loops(step, unroll, fed, sources, carried, out)
    kinds = [*(typed(step.varying[0], "") for _ in range(fed is not None)), *step.state_outputs]
    kinds += [helper.make_tensor_value_info("", o.type.tensor_type.elem_type, None) for o in step.outputs] * 2
    branches = []
    for label, variant in (("cells/", variants[1]), ("kernels/", step)):
        names = [f"{_P}{label}{name}" for name in out]
        nodes = _loops(variant, unroll, fed, sources, carried, names, label)
        nodes += [helper.make_node("Identity", [name], [f"{name}/out"]) for name in names]
        outputs = [typed(kind, f"{name}/out") for kind, name in zip(kinds, names)]
        branches.append(helper.make_graph(nodes, label.strip("/"), [], outputs))
    n = helper.make_node
    return [
        n("GreaterOrEqual", [f"{_P}batch", f"{_P}cells_min"], [f"{_P}cells_on1"]),
        n("Squeeze", [f"{_P}cells_on1", f"{_P}zero1"], [f"{_P}cells_on"]),
        n("If", [f"{_P}cells_on"], out, then_branch=branches[0], else_branch=branches[1]),
    ]


def _declared(spec: tuple) -> onnx.ValueInfoProto:
    """A `runtime.contract` spec (name, onnxruntime type, dims) as a graph input or output."""
    name, kind, dims = spec
    return helper.make_tensor_value_info(name, INT64 if kind == CONTRACT_INT64 else FLOAT, list(dims))


def _model(
    variants: list[StepGraph], form: str, nodes: list, specs: tuple, unroll: int, opset: int, metadata: dict[str, str]
) -> onnx.ModelProto:
    """The form's graph: ``nodes``, the inputs and outputs ``specs`` (form_specs') declare, the
    initializers the nodes read; checked."""
    step = variants[0]
    inputs, outputs = [_declared(s) for s in specs[0]], [_declared(s) for s in specs[1]]
    names = [o.name for o in outputs]
    nodes = prune(nodes, names)
    used = used_names(nodes) | set(names)
    output_dims = [dims for _, _, dims in specs[1][: len(step.outputs)]]
    initializers = [t for t in (*variants[-1].initializers, *_constants(output_dims, unroll)) if t.name in used]
    graph = helper.make_graph(nodes, form, inputs, outputs, initializers)
    return finish_model(graph, opset, form, metadata, step.imports, step.functions)


def _sequence_loop(variants: list[StepGraph], specs: tuple, unroll: int, opset: int, metadata: dict[str, str]):
    step = variants[0]
    names = [name for name, _, _ in specs[0][: len(step.varying)]]
    source_nodes, blocks, rests = _sequence_sources(names)
    nodes = [*step.hoisted, *source_nodes, helper.make_node("Shape", [names[0]], [f"{_P}batch"], start=1, end=2)]
    nodes += _chosen_loops(variants, unroll, None, (blocks, rests), [s.name for s in step.states])
    nodes += _joined_outputs([name for name, _, _ in specs[1][: len(step.outputs)]])
    return _model(variants, SEQUENCE_LOOP, nodes, specs, unroll, opset, metadata)


def _rollout_loop(variants: list[StepGraph], fed: int, specs: tuple, unroll: int, opset: int, metadata: dict):
    step, first = variants[0], specs[0][0][0]
    nodes = [*step.hoisted, helper.make_node("Identity", ["steps"], [f"{_P}total"]), *_trip_counts(f"{_P}total")]
    nodes.append(helper.make_node("Shape", [first], [f"{_P}batch"], start=0, end=1))
    nodes += _chosen_loops(variants, unroll, fed, None, [first, *(s.name for s in step.states)])
    nodes += _joined_outputs([name for name, _, _ in specs[1][: len(step.outputs)]])
    return _model(variants, ROLLOUT_LOOP, nodes, specs, unroll, opset, metadata)


def _prepared(step: onnx.ModelProto, specs: tuple, varying: list[str], signature: tuple) -> list[StepGraph]:
    """The step graph prepared for a form whose outer names are ``specs``' (ExportError where a
    name the step uses outside its loop body is one of them), and where it has LSTM kernels the
    same with `export.gate_cells`' cells."""
    inputs, outputs, states = signature
    prepared = prepare_step(
        step,
        varying=varying,
        outputs=[t.name for t in outputs],
        state_inputs=[s.name for s in states],
        state_outputs=[s.output for s in states],
        reserved=set(),
        prefix=_P,
    )
    names = [name for name, _, _ in (*specs[0], *specs[1])]
    outer = set(names) - {t.name for t in (*prepared.held, *prepared.states)}
    step_level = {t.name for t in prepared.initializers} | {o for node in prepared.hoisted for o in node.output}
    clashes = sorted((outer & step_level) | {name for name in names if names.count(name) > 1})
    if clashes:
        raise ExportError(f"the step graph's names {clashes[:3]} clash with the names of the fused loops")
    cells = lstm_cells(prepared, f"{_P}cells/")
    return within_local_budget([prepared] if cells is None else [prepared, cells], 1)


def step_loops(
    step: onnx.ModelProto,
    *,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    states: Sequence[StateSpec],
    feedback: Feedback | None,
    opset: int,
    metadata: dict[str, str],
    unroll: int = UNROLL,
) -> dict[str, onnx.ModelProto]:
    """``{"sequence_loop": model[, "rollout_loop": model]}`` around the step model ``step``, whose
    inputs are ``inputs`` then the states, its outputs ``outputs`` then the state outputs (the
    manifest's tensors); ``rollout_loop`` where ``feedback`` feeds an output back as it is.
    ``unroll`` steps run per Loop iteration. ExportError where the step graph does not allow it."""
    if not isinstance(unroll, int) or unroll < 1:
        raise ExportError(f"unroll must be an int >= 1, got {unroll!r}")
    step_opset = next((o.version for o in step.opset_import if o.domain in ("", "ai.onnx")), opset)
    if step_opset != opset:
        raise ExportError(f"the step model is opset {step_opset}, the fused loops were asked for opset {opset}")
    signature = (tuple(inputs), tuple(outputs), tuple(states))
    specs = form_specs(SEQUENCE_LOOP, *signature, feedback)
    prepared = _prepared(step, specs, [t.name for t in inputs], signature)
    forms = {SEQUENCE_LOOP: _sequence_loop(prepared, specs, unroll, opset, metadata)}
    if feedback is not None and feedback.via == IDENTITY:
        specs = form_specs(ROLLOUT_LOOP, *signature, feedback)
        prepared = _prepared(step, specs, [feedback.input], signature)
        fed = [t.name for t in outputs].index(feedback.output)
        forms[ROLLOUT_LOOP] = _rollout_loop(prepared, fed, specs, unroll, opset, metadata)
    return forms

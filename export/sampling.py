"""Builds the fused sampling rollouts around any exported step graph, and their eager PyTorch reference.

`sampling_rollouts` wraps a step model (``(*inputs, *states) -> (*outputs, *state outputs)``, one
int64 token input, one float32 logits output (batch, V)) into the two forms `runtime.fused` names:

- ``rollout_greedy``: ``token0, *other inputs, *states, steps`` -> ``tokens, *state outputs``
- ``rollout_sample``: ``token0, *other inputs, *states, uniforms, temperature, top_k, top_p``
  -> ``tokens, *state outputs``

Each is an ONNX ``Loop`` whose body is the step graph, ``unroll`` copies of it per iteration,
each followed by the draw `runtime.sampling` pins (argmax, or the inverse-CDF draw at
``uniforms[t]``), its token fed to the next copy; a second ``Loop`` of one step per iteration
runs the remainder (steps % unroll). The step graph is rewritten on the way in: the unrolled
body holds its own copies of the constants it reads (onnxruntime pre-packs only a graph's own
initializers; the remainder loop reads the outer graph's), its ``Constant`` nodes
and every node computed from constants and the held inputs alone run once before the loop,
nodes that only feed unused outputs are dropped, a ``Slice`` that takes back exactly one input of a
``Concat`` along its axis reads that input, ``Squeeze(Y)`` of a one-step ``GRU``/``LSTM``/``RNN``
reads its ``Y_h``, and the body's values are renamed per copy. The forms keep the step model's
opset (and its other domains and local functions) at IR version `export.fused.IR_VERSION`.
``rollout_sample`` chooses at run time (an outer ``If``) between a body without the top-k/top-p
filters (both off: top_k >= V and top_p >= 1) and one with them. A step with one-step ``GRU``
nodes (nn.GRU) gets a second choice (an ``If`` on the batch size): from
`runtime.fused.SAMPLING_CELLS_MIN_BATCH` rows the Loops compute each GRU as two ``Gemm`` and the
gates' element-wise ops (`_gru_cells`), faster than onnxruntime's GRU kernel there, rounded in
another order (tokens agree with the step loop's but at float32 ties).

`eager_sample` is the reference: a torch step callable looped in Python with the same draw in
torch; `first_parting` finds where two token streams part and whether the parting is a CDF tie.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from runtime.errors import ExportError
from runtime.fused import SAMPLING_CELLS_MIN_BATCH
from runtime.sampling import U_MAX

from .fused import IR_VERSION
from .onnx_export import stamp_model

UNROLL = 10  # steps per Loop iteration (benchmarks/sampling.py: the per-iteration cost amortised)
# Weights copied into a form's unrolled Loop bodies (`_local_constants`), all bodies together: above
# this the bodies read the outer graph's (a few % slower, see there; the file stays small).
LOCAL_CONSTANTS_MAX_BYTES = 32 << 20
TIE_ULPS = 4  # a parting whose drawn point lies within this many float32 ulps of a boundary is a tie
FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
GREEDY, SAMPLE = "rollout_greedy", "rollout_sample"
# Ops whose value differs run to run: never hoisted out of the loop.
_NONDETERMINISTIC = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}
_P = "sampling/"  # prefix of every name this module adds


# ---- the step graph, prepared -----------------------------------------------------------------


@dataclass
class _Step:
    """The step graph split into what runs once (hoisted) and what runs per step (body)."""

    hoisted: list[onnx.NodeProto]
    body: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]
    others: list[onnx.ValueInfoProto]  # the held inputs, in order
    token: onnx.ValueInfoProto
    states: list[onnx.ValueInfoProto]
    state_outputs: list[onnx.ValueInfoProto]
    logits: str
    state_output_names: list[str]
    vocabulary: int
    constants: dict[str, np.ndarray]  # initializers and Constant nodes' values
    imports: list[onnx.OperatorSetIdProto]  # the step model's opset imports
    functions: list[onnx.FunctionProto]  # and its local functions
    dims: dict[str, list[int | None]]  # the static shapes of the step's values
    local: bool = True  # the unrolled Loop body holds its own copies of the constants (_local_constants)


def _subgraph_refs(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from outside itself."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    refs: set[str] = set()
    for node in graph.node:
        refs |= {n for n in _node_inputs(node) if n and n not in defined}
        defined |= set(node.output)
    refs |= {o.name for o in graph.output if o.name not in defined}
    return refs


def _node_inputs(node: onnx.NodeProto) -> list[str]:
    """A node's inputs and what its subgraphs read from the outer scope."""
    names = list(node.input)
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            names += sorted(_subgraph_refs(attribute.g))
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            for graph in attribute.graphs:
                names += sorted(_subgraph_refs(graph))
    return names


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _rename_subgraph(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) if n not in defined else n for n in node.input]
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                _rename_subgraph(sub, {k: v for k, v in mapping.items() if k not in defined})
        defined |= set(node.output)
    for output in graph.output:
        if output.name not in defined:
            output.name = mapping.get(output.name, output.name)


def _renamed(node: onnx.NodeProto, mapping: dict[str, str]) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.input[:] = [mapping.get(n, n) for n in node.input]
    copy.output[:] = [mapping.get(n, n) for n in node.output]
    for attribute in copy.attribute:
        for sub in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
            _rename_subgraph(sub, mapping)
    return copy


def _static_dims(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Every value's shape as far as shape inference knows it (None for a free axis)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - a graph shape inference cannot follow: no static shapes, no rewrites
        return {}
    dims = {}
    for info in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            dims[info.name] = [
                d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim
            ]
    return dims


def _int_constant(name: str, constants: dict[str, np.ndarray]) -> list[int] | None:
    value = constants.get(name)
    if value is None or value.dtype.kind not in "iu":
        return None
    return [int(v) for v in value.reshape(-1)]


def _replaced(nodes: list[onnx.NodeProto], dropped: str, replace: dict[str, str]) -> list[onnx.NodeProto]:
    """``nodes`` without the ``dropped`` nodes whose output ``replace`` maps, every input read
    through ``replace`` to the end of its chain (a bypass can lead to another bypassed value)."""
    if not replace:
        return nodes

    def resolve(name: str) -> str:
        while name in replace:
            name = replace[name]
        return name

    kept = [n for n in nodes if not (n.op_type == dropped and n.output[0] in replace)]
    for node in kept:
        node.input[:] = [resolve(n) for n in node.input]
    return kept


def _bypass_slices_of_concats(nodes: list[onnx.NodeProto], constants, dims_of, keep: set[str]) -> list[onnx.NodeProto]:
    """``Slice(Concat(a, b, ...), start, end, axis)`` taking exactly one of the inputs ``a`` -> ``a``
    (nn.GRU's per-layer state: the step concatenates the layers, the next step slices them apart)."""
    producer = {o: n for n in nodes for o in n.output}
    replace: dict[str, str] = {}
    for node in nodes:
        if node.op_type != "Slice" or len(node.input) < 4 or (len(node.input) > 4 and node.input[4]):
            continue
        if node.output[0] in keep or node.domain not in ("", "ai.onnx"):
            continue
        concat = producer.get(node.input[0])
        if concat is None or concat.op_type != "Concat":
            continue
        starts, ends, axes = (_int_constant(n, constants) for n in node.input[1:4])
        axis = next((a.i for a in concat.attribute if a.name == "axis"), None)
        rank = len(dims_of(node.input[0]) or [])
        if None in (starts, ends, axes, axis) or len(starts) != 1 or rank == 0:
            continue
        if (axes[0] % rank) != (axis % rank):
            continue
        sizes = [(dims_of(i) or [None] * rank)[axis % rank] for i in concat.input]
        offset = 0
        for name, size in zip(concat.input, sizes):
            if size is None:
                break
            if starts[0] == offset and ends[0] == offset + size:
                replace[node.output[0]] = name
                break
            offset += size
    return _replaced(nodes, "Slice", replace)


def _bypass_squeezes_of_unsqueezes(nodes: list[onnx.NodeProto], constants, keep: set[str]) -> list[onnx.NodeProto]:
    """``Squeeze(Unsqueeze(a, axes), axes)`` -> ``a`` (a GRU cell's state, stacked for the state
    output and taken apart again by the next step's copy), except where the Squeeze's output is
    one of ``keep`` (the body's outputs)."""
    producer = {o: n for n in nodes for o in n.output}
    replace: dict[str, str] = {}
    standard = ("", "ai.onnx")
    for node in nodes:
        if node.op_type != "Squeeze" or node.domain not in standard or len(node.input) != 2 or node.output[0] in keep:
            continue
        source = producer.get(node.input[0])
        if source is None or source.op_type != "Unsqueeze" or source.domain not in standard or len(source.input) != 2:
            continue
        axes = _int_constant(node.input[1], constants)
        if axes is not None and axes == _int_constant(source.input[1], constants):
            replace[node.output[0]] = source.input[0]
    return _replaced(nodes, "Squeeze", replace)


def _last_states_for_squeezed_sequences(
    nodes: list[onnx.NodeProto], constants, dims, keep: set[str]
) -> list[onnx.NodeProto]:
    """``Squeeze(Y, axes=[1])`` of a one-direction ``GRU``/``LSTM``/``RNN`` run over a sequence of
    length 1 is its last state ``Y_h`` (both (1, batch, hidden)): read ``Y_h``, drop the Squeeze
    (an nn.GRU layer called for one step, as step modules do)."""
    producer = {o: (n, i) for n in nodes for i, o in enumerate(n.output)}
    replace: dict[str, str] = {}
    for node in nodes:
        if node.op_type != "Squeeze" or len(node.input) != 2 or node.output[0] in keep:
            continue
        source, index = producer.get(node.input[0], (None, None))
        if source is None or source.op_type not in ("GRU", "LSTM", "RNN") or index != 0 or len(source.output) < 2:
            continue
        direction = next((a.s for a in source.attribute if a.name == "direction"), b"forward")
        sequence = (dims.get(source.input[0]) or [None])[0]
        if direction == b"bidirectional" or sequence != 1 or not source.output[1]:
            continue
        if _int_constant(node.input[1], constants) == [1]:
            replace[node.output[0]] = source.output[1]
    if not replace:
        return nodes
    kept = [n for n in nodes if not (n.op_type == "Squeeze" and n.output[0] in replace)]
    for node in kept:
        node.input[:] = [replace.get(n, n) for n in node.input]
    return kept


def _attribute(node: onnx.NodeProto, name: str, default=None):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)


def _cell_weights(node: onnx.NodeProto, constants: dict, dims: dict) -> tuple[np.ndarray, ...] | None:
    """(W (3H, I), R (3H, H), Wb (3H,), Rb (3H,)) of a ``GRU`` node `_gru_cells` can rewrite: one
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


def _gru_cells(step: _Step) -> _Step | None:
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
        found = _cell_weights(node, step.constants, step.dims)
        if found is None:
            body.append(node)
            continue
        hidden = _attribute(node, "hidden_size")
        q = f"{_P}cell{index}/"
        for name, value in zip(("W", "R", "Wb", "Rb"), found):
            weights.append(numpy_helper.from_array(np.ascontiguousarray(value), f"{q}{name}"))
        x, h = node.input[0], node.input[5]
        for source, name in ((x, f"{q}x"), (h, f"{q}h")):
            if source not in squeezed:  # else: the (batch, H) state of the cell that made it
                body.append(n("Squeeze", [source, f"{_P}axes0"], [name]))
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
        weights += [_i64(f"{q}split", 2 * hidden, hidden), _i64(f"{q}halves", hidden, hidden)]
        y, y_h = (list(node.output) + ["", ""])[:2]
        if y:
            body.append(n("Unsqueeze", [f"{q}h_new", f"{_P}axes01"], [y]))
        if y_h:
            body.append(n("Unsqueeze", [f"{q}h_new", f"{_P}axes0"], [y_h]))
            squeezed[y_h] = f"{q}h_new"
    if not weights:
        return None
    weights += [_i64(f"{_P}axes0", 0), _i64(f"{_P}axes01", 0, 1)]
    constants = {**step.constants, **{t.name: numpy_helper.to_array(t) for t in weights}}
    return dataclasses.replace(step, body=body, initializers=[*step.initializers, *weights], constants=constants)


def _prepare(
    step: onnx.ModelProto,
    token_input: str,
    logits_output: str,
    state_inputs: Sequence[str],
    state_outputs: Sequence[str],
    vocabulary: int | None,
) -> _Step:
    graph = step.graph
    initializer_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializer_names]
    by_name = {i.name: i for i in inputs}
    outputs = {o.name: o for o in graph.output}
    missing = [n for n in (token_input, *state_inputs) if n not in by_name]
    missing += [n for n in (logits_output, *state_outputs) if n not in outputs]
    if missing:
        raise ExportError(
            f"the step graph has no input or output {missing}: its inputs are {list(by_name)}, "
            f"its outputs {list(outputs)}"
        )
    if len(state_inputs) != len(state_outputs):
        raise ExportError(f"{len(state_inputs)} state inputs but {len(state_outputs)} state outputs")
    token = by_name[token_input]
    if token.type.tensor_type.elem_type != INT64:
        raise ExportError(f"the token input {token_input!r} must be int64")
    logits_type = outputs[logits_output].type.tensor_type
    if logits_type.elem_type != FLOAT or len(logits_type.shape.dim) != 2:
        raise ExportError(f"the logits output {logits_output!r} must be float32 (batch, vocabulary)")
    declared = logits_type.shape.dim[1]
    if vocabulary is None:
        if not declared.HasField("dim_value"):
            raise ExportError(f"the logits output {logits_output!r} has no static vocabulary size: pass vocabulary=")
        vocabulary = int(declared.dim_value)
    names = {n for node in graph.node for n in node.output} | set(by_name) | initializer_names
    own = {"token0", "tokens", "steps", "uniforms", "temperature", "top_k", "top_p"} - set(state_outputs)
    clashes = sorted(n for n in names if n.startswith(_P) or n in own)
    if clashes:
        raise ExportError(f"the step graph's names {clashes[:3]} clash with the names of the sampling forms")
    others = [i for i in inputs if i.name != token_input and i.name not in state_inputs]

    # Dead code: only what the logits and the new states need.
    needed = {logits_output, *state_outputs}
    live = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            live.append(node)
            needed |= set(_node_inputs(node))
    live.reverse()

    # Constants and loop-invariant nodes run once, outside the loop.
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in live:
        if node.op_type == "Constant" and not node.input:
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                constants[node.output[0]] = numpy_helper.to_array(value.t)
    invariant = set(initializer_names) | {o.name for o in others}
    hoisted, body = [], []
    for node in live:
        movable = (
            not _has_subgraph(node)
            and node.op_type not in _NONDETERMINISTIC
            and all(not n or n in invariant for n in node.input)
        )
        if movable:
            hoisted.append(node)
            invariant |= set(node.output)
        else:
            body.append(node)
    dims = _static_dims(step)
    body = _last_states_for_squeezed_sequences(body, constants, dims, {logits_output, *state_outputs})
    return _Step(
        hoisted=hoisted,
        body=body,
        initializers=list(graph.initializer),
        others=others,
        token=token,
        states=[by_name[n] for n in state_inputs],
        state_outputs=[outputs[n] for n in state_outputs],
        logits=logits_output,
        state_output_names=list(state_outputs),
        vocabulary=vocabulary,
        constants=constants,
        dims=dims,
        imports=list(step.opset_import),
        functions=list(step.functions),
    )


def _copy_body(
    step: _Step, prefix: str, token: str, states: list[str], origin: dict[str, str], final: dict[str, str] | None = None
) -> tuple[list[onnx.NodeProto], str, list[str]]:
    """One copy of the step's body nodes reading ``token`` and ``states``: (nodes, logits, new states).

    ``final`` names some step values directly (a loop body's outputs); values the step passes
    through unchanged come back as they are. ``origin`` gets {new name: the step's name}."""
    mapping = {step.token.name: token, **{s.name: n for s, n in zip(step.states, states)}}
    final = final or {}
    taken: set[str] = set()
    for node in step.body:
        for name in node.output:
            if name and name in final and final[name] not in taken:
                mapping[name] = final[name]
                taken.add(final[name])
            elif name:
                mapping[name] = f"{prefix}{name}"
    nodes = [_renamed(node, mapping) for node in step.body]
    for node in nodes:
        if node.name:
            node.name = f"{prefix}{node.name}"
    origin.update({renamed: name for name, renamed in mapping.items()})
    return nodes, mapping.get(step.logits, step.logits), [mapping.get(s, s) for s in step.state_output_names]


def _prune(nodes: list[onnx.NodeProto], wanted: Iterable[str]) -> list[onnx.NodeProto]:
    needed = set(wanted)
    kept = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed |= set(_node_inputs(node))
    kept.reverse()
    return kept


def _used_names(nodes: Iterable[onnx.NodeProto]) -> set[str]:
    """Every name the nodes (and their subgraphs, all the way down) read."""
    used: set[str] = set()
    for node in nodes:
        used |= set(node.input)
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                used |= _used_names(sub.node) | {o.name for o in sub.output}
    return used


def _i64(name: str, *values: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _typed(info: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(info)
    copy.name = name
    return copy


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


def _loop_body(step: _Step, name: str, steps: int, sample: bool, filtered: bool, blocks: str | None):
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
        copy, logits, states = _copy_body(step, f"{p}s{k}/", token, states, origin, final)
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
    nodes = _bypass_slices_of_concats(nodes, step.constants, dims_of, body_outputs)
    nodes = _bypass_squeezes_of_unsqueezes(nodes, step.constants, body_outputs)
    nodes = _prune(nodes, body_outputs)
    nodes, local = _local_constants(nodes, step.constants, f"{p}w/") if steps > 1 and step.local else (nodes, [])
    batch = step.token.type.tensor_type.shape.dim[0]
    batch_dim = batch.dim_param if batch.HasField("dim_param") else None
    inputs = [
        helper.make_tensor_value_info(f"{p}iter", INT64, []),
        helper.make_tensor_value_info(f"{p}cond_in", BOOL, []),
        _typed(step.token, f"{p}token_in"),
        *(_typed(s, f"{p}state{i}_in") for i, s in enumerate(step.states)),
    ]
    outputs = [
        helper.make_tensor_value_info(f"{p}cond_out", BOOL, []),
        _typed(step.token, f"{p}token_out"),
        *(_typed(s, name) for s, name in zip(step.state_outputs, out_states)),
        helper.make_tensor_value_info(f"{p}tokens", INT64, [None if steps > 1 else batch_dim]),
    ]
    return helper.make_graph(nodes, name, inputs, outputs, initializer=local)


def _local_constants(
    nodes: list[onnx.NodeProto], constants: dict[str, np.ndarray], prefix: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The constants the nodes read, copied into the body as its own initializers (renamed with
    ``prefix``), and the nodes reading those copies. onnxruntime pre-packs a kernel's constant
    weights only when they are initializers of the kernel's own graph, not values of the outer
    scope: measured (benchmarks/sampling.py's model, 2-core EPYC) 5% faster greedy and 9% faster
    temperature rollouts at batch 1, 2-7% at batch 32. The copies add to the file (the remainder
    loop keeps reading the outer ones): `_rollout` makes them only while all of a form's copies
    stay under LOCAL_CONSTANTS_MAX_BYTES."""
    read = [name for name in sorted(_used_names(nodes)) if name in constants]
    mapping = {name: f"{prefix}{name}" for name in read}
    local = [numpy_helper.from_array(constants[name], mapping[name]) for name in read]
    return [_renamed(node, mapping) for node in nodes], local


def _constant_bytes(step: _Step) -> int:
    """The bytes of the constants the step's body reads (what `_local_constants` would copy)."""
    return sum(step.constants[name].nbytes for name in _used_names(step.body) if name in step.constants)


def _rollout_nodes(step: _Step, prefix: str, unroll: int, sample: bool, filtered: bool, out: list[str]) -> list:
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
    prefix: str, outputs: list[str], step: _Step, build: Callable[[str, list[str]], list[onnx.NodeProto]]
) -> onnx.GraphProto:
    """An If branch: ``build(prefix, names)``'s nodes computing ``outputs`` (tokens, *state outputs)
    into names of its own, and the branch's outputs (copies of those)."""
    names = [f"{_P}{prefix}{o}" for o in outputs]
    nodes = build(prefix, names)
    nodes += [helper.make_node("Identity", [name], [f"{_P}{prefix}out/{o}"]) for name, o in zip(names, outputs)]
    branch_outputs = [
        helper.make_tensor_value_info(f"{_P}{prefix}out/tokens", INT64, [None, None]),
        *(_typed(s, f"{_P}{prefix}out/{o}") for s, o in zip(step.state_outputs, outputs[1:])),
    ]
    return helper.make_graph(nodes, prefix.strip("/").replace("/", "_"), [], branch_outputs)


def _rollout(step: _Step, form: str, unroll: int, opset: int, metadata: dict[str, str]) -> onnx.ModelProto:
    n = helper.make_node
    sample = form == SAMPLE
    vocabulary = step.vocabulary
    constants = [
        _i64(f"{_P}unroll", unroll),
        _i64(f"{_P}zero1", 0),
        _i64(f"{_P}axis1", 1),
        _i64(f"{_P}axis2", 2),
        _i64(f"{_P}minus_one", -1),
        _i64(f"{_P}last_id", vocabulary - 1),
        _i64(f"{_P}vocabulary", vocabulary),
        numpy_helper.from_array(np.array(1, np.int64), f"{_P}axis1_0d"),
        numpy_helper.from_array(np.array(True), f"{_P}true"),
        numpy_helper.from_array(np.array([float("-inf")], np.float32), f"{_P}minus_inf"),
        numpy_helper.from_array(np.array([0.0], np.float32), f"{_P}zero_f"),
        numpy_helper.from_array(np.array([U_MAX], np.float32), f"{_P}u_max"),
        numpy_helper.from_array(np.array([1.0], np.float32), f"{_P}one_f"),
        numpy_helper.from_array(np.array([2.0], np.float32), f"{_P}two_f"),
        numpy_helper.from_array(np.array(0.0, np.float32), f"{_P}zero_f0d"),
        numpy_helper.from_array(np.array(U_MAX, np.float32), f"{_P}u_max0d"),
    ]
    if sample and unroll > 1:
        constants.append(_i64(f"{_P}ones{unroll}", *([1] * unroll)))
    nodes = list(step.hoisted)
    nodes.append(n("Shape", ["token0"], [f"{_P}batch"]))  # (1,)
    if sample:
        nodes += [
            n("Shape", ["uniforms"], [f"{_P}steps"], start=0, end=1),
            n("Clip", ["uniforms", f"{_P}zero_f0d", f"{_P}u_max0d"], [f"{_P}u"]),
        ]
    else:
        nodes.append(n("Identity", ["steps"], [f"{_P}steps"]))
    nodes += [
        n("Div", [f"{_P}steps", f"{_P}unroll"], [f"{_P}iterations1"]),
        n("Mul", [f"{_P}iterations1", f"{_P}unroll"], [f"{_P}main_steps"]),
        n("Sub", [f"{_P}steps", f"{_P}main_steps"], [f"{_P}rest1"]),
        n("Squeeze", [f"{_P}iterations1", f"{_P}zero1"], [f"{_P}iterations"]),
        n("Squeeze", [f"{_P}rest1", f"{_P}zero1"], [f"{_P}rest"]),
        n("Concat", [f"{_P}minus_one", f"{_P}batch"], [f"{_P}tokens_shape"], axis=0),
    ]
    outputs = ["tokens", *step.state_output_names]
    cells = _gru_cells(step)
    if cells is not None:
        nodes += [
            n("GreaterOrEqual", [f"{_P}batch", f"{_P}cells_min"], [f"{_P}cells_on1"]),
            n("Squeeze", [f"{_P}cells_on1", f"{_P}zero1"], [f"{_P}cells_on"]),
        ]
        constants.append(_i64(f"{_P}cells_min", SAMPLING_CELLS_MIN_BATCH))
    variants = [step] if cells is None else [step, cells]
    copies = (2 if sample else 1) * sum(_constant_bytes(v) for v in variants)  # one unrolled body each
    if copies > LOCAL_CONSTANTS_MAX_BYTES:
        step = dataclasses.replace(step, local=False)
        cells = None if cells is None else dataclasses.replace(cells, local=False)

    def loops(label: str, names: list[str], filtered: bool) -> list[onnx.NodeProto]:
        """The Loops into ``names``: with GRU cells from SAMPLING_CELLS_MIN_BATCH rows (an If) when
        the step has GRU nodes to rewrite, else with the step's own nodes."""
        if cells is None:
            return _rollout_nodes(step, label, unroll, sample, filtered, names)
        branches = {}
        for on, kind, variant in ((True, "cells", cells), (False, "kernels", step)):

            def build(prefix: str, out: list[str], variant: _Step = variant) -> list[onnx.NodeProto]:
                return _rollout_nodes(variant, prefix, unroll, sample, filtered, out)

            branches[on] = _branch(f"{label}{kind}/", outputs, step, build)
        return [n("If", [f"{_P}cells_on"], names, then_branch=branches[True], else_branch=branches[False])]

    if not sample:
        nodes += loops("", outputs, False)
    else:
        nodes += [
            n("Concat", [f"{_P}minus_one", f"{_P}unroll", f"{_P}batch"], [f"{_P}block_shape"], axis=0),
            # the filters' settings, once: k in [1, V]; top_p >= 1 -> 2 (no prefix mass is below it)
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
        branches = {
            filtered: _branch(f"{label}/", outputs, step, lambda prefix, out, on=filtered: loops(prefix, out, on))
            for filtered, label in ((True, "filtered"), (False, "plain"))
        }
        nodes.append(n("If", [f"{_P}filter"], outputs, then_branch=branches[True], else_branch=branches[False]))
    batch = step.token.type.tensor_type.shape.dim[0]
    batch_dim = batch.dim_param if batch.HasField("dim_param") else "batch"
    inputs = [_typed(step.token, "token0"), *step.others, *step.states]
    if sample:
        inputs += [
            helper.make_tensor_value_info("uniforms", FLOAT, ["steps", batch_dim]),
            helper.make_tensor_value_info("temperature", FLOAT, [1]),
            helper.make_tensor_value_info("top_k", INT64, [1]),
            helper.make_tensor_value_info("top_p", FLOAT, [1]),
        ]
    else:
        inputs.append(helper.make_tensor_value_info("steps", INT64, [1]))
    graph_outputs = [
        helper.make_tensor_value_info("tokens", INT64, ["steps", batch_dim]),
        *(_typed(s, s.name) for s in step.state_outputs),
    ]
    nodes = _prune(nodes, [o.name for o in graph_outputs])  # hoisted nodes the rewrites left unused
    used = _used_names(nodes) | {o.name for o in graph_outputs}
    initializers = [t for t in (*(cells or step).initializers, *constants) if t.name in used]
    graph = helper.make_graph(nodes, form, inputs, graph_outputs, initializers)
    # As export.fused's models (IR_VERSION pinned, metadata stamped), with the step model's other
    # opset domains and local functions carried over.
    imports = [helper.make_opsetid("", opset), *(o for o in step.imports if o.domain not in ("", "ai.onnx"))]
    model = helper.make_model(graph, opset_imports=imports, functions=step.functions)
    model.ir_version = IR_VERSION
    stamp_model(model, metadata, form=form)
    onnx.checker.check_model(model, full_check=True)
    return model


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
    prepared = _prepare(step, token_input, logits_output, list(state_inputs), list(state_outputs), vocabulary)
    return {form: _rollout(prepared, form, unroll, opset, metadata) for form in (GREEDY, SAMPLE)}


# ---- the eager reference ------------------------------------------------------------------------

StepFn = Callable[[torch.Tensor, dict, tuple], tuple]


def module_step(
    module: torch.nn.Module,
    input_names: Sequence[str],
    token_input: str,
    output_names: Sequence[str],
    logits_output: str,
) -> StepFn:
    """A step callable for `eager_sample` from a module ``forward(*inputs, *states) -> (*outputs, *states)``."""
    index = list(output_names).index(logits_output)
    count = len(output_names)

    def step_fn(token: torch.Tensor, others: dict, states: tuple) -> tuple:
        values = module(*(token if name == token_input else others[name] for name in input_names), *states)
        return values[index], tuple(values[count:])

    return step_fn


def torch_draw(
    logits: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pinned draw (`runtime.sampling`) in torch: (tokens (batch,) int64, cdf (batch, V), x (batch, 1))."""
    vocabulary = logits.shape[1]
    z = logits.float() / torch.tensor(temperature, dtype=torch.float32)
    if top_k is not None and top_k < vocabulary:
        kth = torch.topk(z, max(int(top_k), 1), dim=1).values[:, -1:]
        z = torch.where(z < kth, torch.tensor(float("-inf")), z)
    p = torch.softmax(z, dim=1)
    if top_p is not None and top_p < 1.0:
        ordered = torch.sort(p, dim=1, descending=True).values
        mass = torch.cumsum(ordered, dim=1)
        m = (mass < torch.tensor(top_p, dtype=torch.float32)).sum(1, keepdim=True).clamp_(max=vocabulary - 1)
        p = torch.where(p < torch.gather(ordered, 1, m), torch.tensor(0.0), p)
    cdf = torch.cumsum(p, dim=1)
    x = u.float().clamp(0.0, float(U_MAX)).unsqueeze(1) * cdf[:, -1:]
    tokens = (cdf <= x).sum(1).clamp_(max=vocabulary - 1)
    return tokens, cdf, x


def _gaps_ulps(cdf: np.ndarray, x: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Distance from x to the nearer cdf boundary of the drawn id, in float32 ulps at x (batch,)."""
    rows = np.arange(len(tokens))
    upper = cdf[rows, tokens]
    lower = np.where(tokens > 0, cdf[rows, np.maximum(tokens - 1, 0)], np.float32(0.0))
    x = x[:, 0]
    gap = np.minimum(np.abs(upper.astype(np.float64) - x), np.abs(x.astype(np.float64) - lower))
    return gap / np.spacing(np.maximum(np.abs(x), np.float32(np.finfo(np.float32).tiny)).astype(np.float32))


def _argmax_gaps_ulps(logits: np.ndarray) -> np.ndarray:
    if logits.shape[1] < 2:  # one id: nothing to part over
        return np.full(logits.shape[0], np.inf)
    top2 = -np.partition(-logits, 1, axis=1)[:, :2]
    gap = top2[:, 0].astype(np.float64) - top2[:, 1]
    return gap / np.spacing(np.maximum(np.abs(top2[:, 0]), np.float32(np.finfo(np.float32).tiny)).astype(np.float32))


@torch.no_grad()
def eager_sample(
    step_fn: StepFn,
    token0,
    others: dict,
    states: tuple,
    uniforms=None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    steps: int | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
    """Tokens int64 (steps, batch), the final states and the draws' gaps (steps, batch) from eager
    torch: ``step_fn(token, others, states) -> (logits, states)`` looped in Python, each token drawn
    with the pinned draw (`torch_draw`; greedy: argmax) at ``uniforms[t]`` (float32 (steps, batch);
    None for greedy, then ``steps`` is needed). A gap is the distance, in float32 ulps at the drawn
    point, from ``u * total`` to the nearer cdf boundary of the drawn id (greedy: from the maximum
    logit to the runner-up), what `first_parting` calls a tie when it is small."""
    token = torch.as_tensor(np.asarray(token0, dtype=np.int64))
    others = {k: torch.as_tensor(np.asarray(v)) for k, v in others.items()}
    current = tuple(torch.as_tensor(np.asarray(s, dtype=np.float32)) for s in states)
    if uniforms is None:
        if not greedy or steps is None:
            raise ExportError("eager_sample needs uniforms (steps, batch) unless greedy with steps given")
        total_steps = int(steps)
    else:
        uniforms = torch.as_tensor(np.asarray(uniforms, dtype=np.float32))
        total_steps = uniforms.shape[0]
    batch = token.shape[0]
    tokens = np.empty((total_steps, batch), np.int64)
    gaps = np.empty((total_steps, batch), np.float64)
    for t in range(total_steps):
        logits, current = step_fn(token, others, current)
        logits = logits.float()
        if greedy:
            token = logits.argmax(1)
            gaps[t] = _argmax_gaps_ulps(logits.numpy())
        else:
            token, cdf, x = torch_draw(logits, uniforms[t], temperature, top_k, top_p)
            gaps[t] = _gaps_ulps(cdf.numpy(), x.numpy(), token.numpy())
        tokens[t] = token.numpy()
    return tokens, tuple(s.numpy() for s in current), gaps


@dataclass(frozen=True)
class Parting:
    """Where two token streams first differ: ``step`` and ``stream`` (batch row), the tokens each
    side drew, the reference's gap there (float32 ulps, `eager_sample`) and whether that is a tie."""

    step: int
    stream: int
    expected: int
    actual: int
    gap_ulps: float | None
    tie: bool

    def describe(self) -> str:
        gap = "" if self.gap_ulps is None else f", gap {self.gap_ulps:.1f} ulps"
        kind = "a float32 tie" if self.tie else "not a tie"
        return f"step {self.step} stream {self.stream}: expected {self.expected}, got {self.actual}{gap} ({kind})"


def partings(expected_tokens, actual_tokens, gaps=None, *, ulps: float = TIE_ULPS) -> list[Parting]:
    """The first parting of every stream that parts, in stream order (tokens (steps, batch))."""
    expected, actual = np.asarray(expected_tokens), np.asarray(actual_tokens)
    if expected.shape != actual.shape:
        raise ExportError(f"token streams of different shapes: {expected.shape} and {actual.shape}")
    found = []
    differ = expected != actual
    for stream in np.flatnonzero(differ.any(axis=0)):
        t = int(np.argmax(differ[:, stream]))
        gap = None if gaps is None else float(np.asarray(gaps)[t, stream])
        found.append(
            Parting(
                t, int(stream), int(expected[t, stream]), int(actual[t, stream]), gap, gap is not None and gap <= ulps
            )
        )
    return found


def first_parting(expected_tokens, actual_tokens, gaps=None, *, ulps: float = TIE_ULPS) -> Parting | None:
    """The earliest step (then the lowest stream) where ``actual_tokens`` parts from
    ``expected_tokens`` (both (steps, batch)), or None; a tie when the reference's gap there
    (`eager_sample`'s, in float32 ulps) is at most ``ulps``."""
    found = partings(expected_tokens, actual_tokens, gaps, ulps=ulps)
    return min(found, key=lambda p: (p.step, p.stream)) if found else None

"""Graph surgery on an exported step graph, shared by the builders of fused loops around it.

`prepare_step` splits a step model ``(*inputs, *states) -> (*outputs, *state outputs)`` into what
runs once (its constants and every node computed from constants and the held inputs alone:
hoisted) and what runs per step (the body), dropping nodes that only feed unused outputs and
reading ``Y_h`` for ``Squeeze(Y)`` of a one-step ``GRU``/``LSTM``/``RNN``. `copy_body` makes one
renamed copy of the body per unrolled step; on an unrolled body `bypass_slices_of_concats` and
`bypass_squeezes_of_unsqueezes` remove the state's round trips between copies, `prune` drops what
no output needs and `local_constants` copies the weights the body reads into it (onnxruntime
pre-packs only a graph's own initializers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from runtime.errors import ExportError

# Weights copied into a form's unrolled Loop bodies (`local_constants`), all bodies together: above
# this the bodies read the outer graph's (a few % slower, see there; the file stays small).
LOCAL_CONSTANTS_MAX_BYTES = 32 << 20
# Ops whose value differs run to run: never hoisted out of the loop.
NONDETERMINISTIC = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}


@dataclass
class StepGraph:
    """The step graph split into what runs once (hoisted) and what runs per step (body)."""

    hoisted: list[onnx.NodeProto]
    body: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]
    varying: list[onnx.ValueInfoProto]  # the inputs that take a new value every step, in the order asked
    held: list[onnx.ValueInfoProto]  # the inputs held for every step, in the step's order
    states: list[onnx.ValueInfoProto]
    state_outputs: list[onnx.ValueInfoProto]
    outputs: list[onnx.ValueInfoProto]  # the outputs wanted every step, in the order asked
    constants: dict[str, np.ndarray]  # initializers and Constant nodes' values
    imports: list[onnx.OperatorSetIdProto]  # the step model's opset imports
    functions: list[onnx.FunctionProto]  # and its local functions
    dims: dict[str, list[int | None]]  # the static shapes of the step's values
    local: bool = True  # the unrolled Loop body holds its own copies of the constants (local_constants)

    @property
    def state_output_names(self) -> list[str]:
        return [s.name for s in self.state_outputs]


def _subgraph_refs(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from outside itself."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    refs: set[str] = set()
    for node in graph.node:
        refs |= {n for n in node_inputs(node) if n and n not in defined}
        defined |= set(node.output)
    refs |= {o.name for o in graph.output if o.name not in defined}
    return refs


def node_inputs(node: onnx.NodeProto) -> list[str]:
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


def renamed(node: onnx.NodeProto, mapping: dict[str, str]) -> onnx.NodeProto:
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


def int_constant(name: str, constants: dict[str, np.ndarray]) -> list[int] | None:
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


def bypass_slices_of_concats(nodes: list[onnx.NodeProto], constants, dims_of, keep: set[str]) -> list[onnx.NodeProto]:
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
        starts, ends, axes = (int_constant(n, constants) for n in node.input[1:4])
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


def bypass_squeezes_of_unsqueezes(nodes: list[onnx.NodeProto], constants, keep: set[str]) -> list[onnx.NodeProto]:
    """``Squeeze(Unsqueeze(a, axes), axes)`` -> ``a`` (a GRU cell's state, stacked for the state
    output and taken apart again by the next step's copy), except where the Squeeze's output is
    one of ``keep`` (the body's outputs)."""
    return _bypass_round_trips(nodes, constants, keep, "Squeeze", "Unsqueeze")


def bypass_unsqueezes_of_squeezes(nodes: list[onnx.NodeProto], constants, keep: set[str]) -> list[onnx.NodeProto]:
    """``Unsqueeze(Squeeze(a, axes), axes)`` -> ``a`` (an LSTM/GRU kernel's last state (1, batch,
    hidden) squeezed into the step's state output and unsqueezed again by the next step's copy:
    the squeezed axes have size 1, so the round trip gives ``a`` back), except where the
    Unsqueeze's output is one of ``keep``."""
    return _bypass_round_trips(nodes, constants, keep, "Unsqueeze", "Squeeze")


def _bypass_round_trips(nodes: list[onnx.NodeProto], constants, keep: set[str], outer: str, inner: str) -> list:
    """``outer(inner(a, axes), axes)`` -> ``a`` for the Squeeze/Unsqueeze pair (axes as constants)."""
    producer = {o: n for n in nodes for o in n.output}
    replace: dict[str, str] = {}
    standard = ("", "ai.onnx")
    for node in nodes:
        if node.op_type != outer or node.domain not in standard or len(node.input) != 2 or node.output[0] in keep:
            continue
        source = producer.get(node.input[0])
        if source is None or source.op_type != inner or source.domain not in standard or len(source.input) != 2:
            continue
        axes = int_constant(node.input[1], constants)
        if axes is not None and axes == int_constant(source.input[1], constants):
            replace[node.output[0]] = source.input[0]
    return _replaced(nodes, outer, replace)


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
        if int_constant(node.input[1], constants) == [1]:
            replace[node.output[0]] = source.output[1]
    if not replace:
        return nodes
    kept = [n for n in nodes if not (n.op_type == "Squeeze" and n.output[0] in replace)]
    for node in kept:
        node.input[:] = [replace.get(n, n) for n in node.input]
    return kept


def prune(nodes: list[onnx.NodeProto], wanted: Iterable[str]) -> list[onnx.NodeProto]:
    needed = set(wanted)
    kept = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed |= set(node_inputs(node))
    kept.reverse()
    return kept


def used_names(nodes: Iterable[onnx.NodeProto]) -> set[str]:
    """Every name the nodes (and their subgraphs, all the way down) read."""
    used: set[str] = set()
    for node in nodes:
        used |= set(node.input)
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                used |= used_names(sub.node) | {o.name for o in sub.output}
    return used


def local_constants(
    nodes: list[onnx.NodeProto], constants: dict[str, np.ndarray], prefix: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The constants the nodes read, copied into the body as its own initializers (renamed with
    ``prefix``), and the nodes reading those copies. onnxruntime pre-packs a kernel's constant
    weights only when they are initializers of the kernel's own graph, not values of the outer
    scope: measured (benchmarks/sampling.py's model, 2-core EPYC) 5% faster greedy and 9% faster
    temperature rollouts at batch 1, 2-7% at batch 32. The copies add to the file (the remainder
    loop keeps reading the outer ones): the builders make them only while all of a form's copies
    stay under LOCAL_CONSTANTS_MAX_BYTES."""
    read = [name for name in sorted(used_names(nodes)) if name in constants]
    mapping = {name: f"{prefix}{name}" for name in read}
    local = [numpy_helper.from_array(constants[name], mapping[name]) for name in read]
    return [renamed(node, mapping) for node in nodes], local


def constant_bytes(step: StepGraph) -> int:
    """The bytes of the constants the step's body reads (what `local_constants` would copy)."""
    return sum(step.constants[name].nbytes for name in used_names(step.body) if name in step.constants)


def _check_names(
    graph: onnx.GraphProto, asked_inputs: Sequence[str], asked_outputs: Sequence[str], reserved: set[str], prefix: str
) -> None:
    """Refuses names the step graph lacks, and names of its that clash with the form's own."""
    initializer_names = {t.name for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializer_names]
    outputs = [o.name for o in graph.output]
    missing = [n for n in asked_inputs if n not in inputs] + [n for n in asked_outputs if n not in outputs]
    if missing:
        raise ExportError(
            f"the step graph has no input or output {missing}: its inputs are {inputs}, its outputs {outputs}"
        )
    names = {n for node in graph.node for n in node.output} | set(inputs) | initializer_names
    clashes = sorted(n for n in names if n.startswith(prefix) or n in reserved)
    if clashes:
        raise ExportError(f"the step graph's names {clashes[:3]} clash with the names of the fused forms")


def _live_nodes(graph: onnx.GraphProto, wanted: Iterable[str]) -> list[onnx.NodeProto]:
    """The nodes the ``wanted`` values need (dead code dropped), in graph order."""
    return prune(list(graph.node), wanted)


def _graph_constants(graph: onnx.GraphProto, nodes: Iterable[onnx.NodeProto]) -> dict[str, np.ndarray]:
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in nodes:
        if node.op_type == "Constant" and not node.input:
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                constants[node.output[0]] = numpy_helper.to_array(value.t)
    return constants


def _hoist(nodes: list[onnx.NodeProto], invariant: set[str]) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]]:
    """(nodes computed from ``invariant`` values alone, run once; the rest, run per step)."""
    invariant = set(invariant)
    hoisted, body = [], []
    for node in nodes:
        movable = (
            not _has_subgraph(node)
            and node.op_type not in NONDETERMINISTIC
            and all(not n or n in invariant for n in node.input)
        )
        if movable:
            hoisted.append(node)
            invariant |= set(node.output)
        else:
            body.append(node)
    return hoisted, body


def prepare_step(
    step: onnx.ModelProto,
    *,
    varying: Sequence[str],
    outputs: Sequence[str],
    state_inputs: Sequence[str],
    state_outputs: Sequence[str],
    reserved: set[str],
    prefix: str,
) -> StepGraph:
    """``step`` split for a fused loop: ``varying`` inputs take a new value every step (the others
    that are not ``state_inputs`` are held), ``outputs`` are wanted every step; ``reserved`` names
    and names starting with ``prefix`` are the form's own (ExportError if the step has them)."""
    graph = step.graph
    if len(state_inputs) != len(state_outputs):
        raise ExportError(f"{len(state_inputs)} state inputs but {len(state_outputs)} state outputs")
    _check_names(graph, [*varying, *state_inputs], [*outputs, *state_outputs], reserved - set(state_outputs), prefix)
    initializer_names = {t.name for t in graph.initializer}
    by_name = {i.name: i for i in graph.input if i.name not in initializer_names}
    declared = {o.name: o for o in graph.output}
    held = [i for name, i in by_name.items() if name not in varying and name not in state_inputs]
    live = _live_nodes(graph, [*outputs, *state_outputs])
    constants = _graph_constants(graph, live)
    hoisted, body = _hoist(live, initializer_names | {i.name for i in held})
    dims = _static_dims(step)
    body = _last_states_for_squeezed_sequences(body, constants, dims, {*outputs, *state_outputs})
    return StepGraph(
        hoisted=hoisted,
        body=body,
        initializers=list(graph.initializer),
        varying=[by_name[n] for n in varying],
        held=held,
        states=[by_name[n] for n in state_inputs],
        state_outputs=[declared[n] for n in state_outputs],
        outputs=[declared[n] for n in outputs],
        constants=constants,
        dims=dims,
        imports=list(step.opset_import),
        functions=list(step.functions),
    )


def copy_body(
    step: StepGraph,
    prefix: str,
    inputs: Sequence[str],
    states: Sequence[str],
    origin: dict[str, str],
    final: dict[str, str] | None = None,
) -> tuple[list[onnx.NodeProto], list[str], list[str]]:
    """One copy of the step's body nodes reading ``inputs`` (the varying ones, in order) and
    ``states``: (nodes, outputs, new states).

    ``final`` names some step values directly (a loop body's outputs); values the step passes
    through unchanged come back as they are. ``origin`` gets {new name: the step's name}."""
    mapping = {v.name: n for v, n in zip(step.varying, inputs)}
    mapping.update({s.name: n for s, n in zip(step.states, states)})
    final = final or {}
    taken: set[str] = set()
    for node in step.body:
        for name in node.output:
            if name and name in final and final[name] not in taken:
                mapping[name] = final[name]
                taken.add(final[name])
            elif name:
                mapping[name] = f"{prefix}{name}"
    nodes = [renamed(node, mapping) for node in step.body]
    for node in nodes:
        if node.name:
            node.name = f"{prefix}{node.name}"
    origin.update({new: name for name, new in mapping.items()})
    outputs = [mapping.get(o.name, o.name) for o in step.outputs]
    return nodes, outputs, [mapping.get(s, s) for s in step.state_output_names]


def within_local_budget(steps: Sequence[StepGraph], copies: int) -> list[StepGraph]:
    """``steps`` as they are while ``copies`` unrolled bodies of each, holding their own weights,
    stay under LOCAL_CONSTANTS_MAX_BYTES all together; else reading the outer graph's weights."""
    if copies * sum(constant_bytes(s) for s in steps) <= LOCAL_CONSTANTS_MAX_BYTES:
        return list(steps)
    return [dataclasses.replace(s, local=False) for s in steps]

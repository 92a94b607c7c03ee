"""A model's signature as the runtime uses it: its tensors' shapes at a batch size, and a caller's
inputs and states checked against it.

Every signature a manifest can describe is one `Signature`: named inputs (float32 features
``(batch, *sizes)`` or int64 token ids below a vocabulary), outputs (values or logits), states of any
rank with the batch axis where the manifest puts it, time-first or batch-first sequences, and the
closed loop (``feedback``). The seed's ``x -> y`` signature is one of them (``classic``: one float32
``(batch, n)`` input and output, ``(batch, size)`` states, fed back as it is or not at all); its
conveniences (a scalar or ``(batch,)`` input, a flat ``(steps,)`` series) hold for any model whose one
input holds one float a stream.

Internally inputs and states travel as tuples in manifest order, time-first; dicts by name and the
batch-first layout exist only at the edges (`named`, `result`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputValueError, ShapeError
from .inputs import FLOAT32, INT64, all_finite, as_float32, as_tokens, check_memory, is_ready
from .manifest import BATCH_AXIS, BATCH_FIRST, IDENTITY, SAMPLE, Manifest, TensorSpec

Arrays = tuple[np.ndarray, ...]
SHAPE_CACHE = 16  # batch sizes whose shapes a signature keeps worked out


def dims(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def classic_shaped(manifest: Manifest) -> bool:
    """Whether the signature is the seed's: one float32 (batch, n) input and output, float32
    (batch, size) states, no tokens or logits, and a closed loop (if any) that feeds the output back
    as it is. Either layout."""
    if len(manifest.inputs) != 1 or len(manifest.outputs) != 1:
        return False
    for spec in (*manifest.inputs, *manifest.outputs, *manifest.state):
        if spec.dtype != "float32" or len(spec.shape) != 2 or spec.shape[0] != BATCH_AXIS:
            return False
        if spec.is_tokens or spec.is_logits:
            return False
    feedback = manifest.closed_loop
    return feedback is None or feedback.via == IDENTITY


def one_value(spec: TensorSpec) -> bool:
    """A float input or output of one value a stream, batch first: (batch, 1)."""
    return spec.shape == (BATCH_AXIS, 1) and not spec.is_tokens


class Signature:
    """The manifest's tensors with what the runtime works out of them once (shapes, bytes, the
    closed loop), and the checks of a caller's inputs and states."""

    def __init__(self, manifest: Manifest, *, allow_nonfinite: bool, max_memory_bytes: int) -> None:
        self.inputs, self.outputs, self.states = manifest.inputs, manifest.outputs, manifest.state
        self.input_names = tuple(t.name for t in self.inputs)
        self.output_names = tuple(t.name for t in self.outputs)
        self.state_names = tuple(s.name for s in self.states)
        self.state_outputs = tuple(s.output for s in self.states)
        self.layout = manifest.layout
        self.batch_first = manifest.layout == BATCH_FIRST
        self.feedback = manifest.closed_loop
        self.sampled = self.feedback is not None and self.feedback.via == SAMPLE
        self.classic = classic_shaped(manifest)
        self.allow_nonfinite = allow_nonfinite
        self.max_memory_bytes = max_memory_bytes
        self.input_dtypes = tuple(INT64 if t.is_tokens else FLOAT32 for t in self.inputs)
        self.one_value_input = len(self.inputs) == 1 and one_value(self.inputs[0])  # scalars, (steps,) series
        self.one_value_output = len(self.outputs) == 1 and one_value(self.outputs[0])
        first = self.inputs[0]  # the fast path of the checks: one float32 input, batch first
        ready = len(self.inputs) == 1 and self._batch_first(first)  # (rank, last size, sizes if rank > 2)
        self._ready = (
            (len(first.shape), first.shape[-1], first.sizes if len(first.shape) > 2 else None) if ready else None
        )
        self._state_shapes: dict[int, list[tuple[int, ...]]] = {}  # check_state's fast path, by batch size
        self.initial = tuple(np.asarray(s.initial, dtype=np.float32).reshape(s.sizes) for s in self.states)
        # bytes one stream takes in one step: its inputs, its outputs, its state in and out
        self.input_bytes = sum(t.count * (8 if t.is_tokens else 4) for t in self.inputs)
        self.output_bytes = 4 * sum(t.count for t in self.outputs)
        self.state_bytes = 2 * 4 * sum(s.count for s in self.states)
        self.step_bytes = self.input_bytes + self.output_bytes + self.state_bytes
        self.state_axes = tuple(s.batch_axis for s in self.states)
        self.feedback_output = None if self.feedback is None else self.output_names.index(self.feedback.output)
        self.feedback_input = None if self.feedback is None else self.input_names.index(self.feedback.input)
        self._shapes: dict[int, tuple[list, list, list]] = {}

    @staticmethod
    def _batch_first(spec: TensorSpec) -> bool:
        return not spec.is_tokens and spec.shape[0] == BATCH_AXIS and len(spec.shape) >= 2

    # ---- shapes -------------------------------------------------------------------------

    def shapes(self, batch_size: int) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]], list[tuple[int, ...]]]:
        """(input shapes, output shapes, state shapes) at ``batch_size``."""
        shapes = self._shapes.get(batch_size)
        if shapes is None:
            if len(self._shapes) >= SHAPE_CACHE:
                self._shapes.clear()
            shapes = tuple(
                [t.shape_for(batch_size) for t in specs] for specs in (self.inputs, self.outputs, self.states)
            )
            self._shapes[batch_size] = shapes
        return shapes

    def returned(self, batch_size: int, steps: int | None = None) -> list[tuple[tuple[int, ...], Any]]:
        """What a run must return: each output ((steps,) in front for a fused form), then each state."""
        _, outputs, states = self.shapes(batch_size)
        lead = () if steps is None else (steps,)
        return [((*lead, *shape), FLOAT32) for shape in outputs] + [(shape, FLOAT32) for shape in states]

    def initial_state(self, batch_size: int) -> Arrays:
        """The manifest's initial state for ``batch_size`` streams (new arrays)."""
        return tuple(
            np.ascontiguousarray(np.repeat(np.expand_dims(row, axis), batch_size, axis=axis))
            for row, axis in zip(self.initial, self.state_axes)
        )

    def check_bytes(self, size: int, what: str) -> None:
        if size > self.max_memory_bytes:
            check_memory(size, what, self.max_memory_bytes)

    # ---- a caller's inputs --------------------------------------------------------------

    def named(self, x: Any, what: str) -> dict[str, Any]:
        """A caller's inputs by name: a dict of exactly the input names, or a bare value for a model
        of one input."""
        if isinstance(x, dict):
            missing = [n for n in self.input_names if n not in x]
            unknown = [n for n in x if n not in self.input_names]
            if missing or unknown:
                parts = ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}"] if unknown else [])
                raise InputValueError(f"{what} must give the inputs {list(self.input_names)}: {', '.join(parts)}")
            return x
        if len(self.inputs) == 1:
            return {self.input_names[0]: x}
        raise InputValueError(
            f"this model has {len(self.inputs)} inputs {list(self.input_names)}: pass {what} as a dict "
            f"{{name: array}}, got {type(x).__name__}"
        )

    def _convert(self, spec: TensorSpec, value: Any, expected: str) -> np.ndarray:
        if isinstance(value, np.ndarray) and value.size * 4 > self.max_memory_bytes:
            check_memory(value.size * 4, f"input {spec.name!r} as float32", self.max_memory_bytes)
        if spec.is_tokens:
            return as_tokens(value, spec.name, expected, int(spec.vocabulary))
        return as_float32(value, spec.name, expected, allow_nonfinite=self.allow_nonfinite)

    def check_step(self, x: Any, what: str = "x") -> tuple[Arrays, int]:
        """One step's inputs, checked, in manifest order, and the batch size. A C-contiguous float32
        array of the right shape for a model of one input comes back as it is (a finiteness test,
        no copy); a scalar or (batch,) array is taken for an input of one value a stream."""
        ready = self._ready
        if ready is not None and is_ready(x, ready[0], ready[1], self.allow_nonfinite):
            if ready[2] is None or x.shape[1:] == ready[2]:
                return (x,), x.shape[0]
        if type(x) is dict and len(x) == len(self.inputs):
            ready_inputs = self._ready_inputs(x)
            if ready_inputs is not None:
                return ready_inputs
        elif type(x) is np.ndarray and len(self.inputs) == 1:  # e.g. the token ids of a one-input model
            ready_inputs = self._ready_inputs({self.input_names[0]: x})
            if ready_inputs is not None:
                return ready_inputs
        arrays, sizes = self._check_all(self.named(x, what), ("batch",), what)
        return arrays, sizes["batch"]

    def _ready_inputs(self, x: dict[str, Any]) -> tuple[Arrays, int] | None:
        """The fast path of `check_step` for a dict: every input already a C-contiguous array of its
        dtype and shape (finite floats, token ids in range), one batch size; None sends the
        call to the full check (and its typed errors)."""
        arrays = []
        batch_size = -1
        for spec in self.inputs:
            value = x.get(spec.name)
            if type(value) is not np.ndarray or not value.flags.c_contiguous or value.shape[1:] != spec.sizes:
                return None
            if spec.is_tokens:
                if value.dtype is not INT64 or not value.size:
                    return None
                low, high = (value.item(), value.item()) if value.size == 1 else (value.min(), value.max())
                if low < 0 or high >= spec.vocabulary:
                    return None
            elif value.dtype is not FLOAT32 or not value.size or not (self.allow_nonfinite or all_finite(value)):
                return None
            if batch_size != value.shape[0]:
                if batch_size != -1:
                    return None
                batch_size = value.shape[0]
            arrays.append(value)
        return tuple(arrays), batch_size

    def _check_all(self, given: dict[str, Any], lead: tuple[str, ...], what: str) -> tuple[Arrays, dict[str, int]]:
        """Each input checked against its spec with the ``lead`` axes in front; one size per lead axis."""
        sizes: dict[str, tuple[int, str]] = {}
        arrays = []
        for spec in self.inputs:
            value = given[spec.name]
            wanted = (*lead, *spec.sizes)
            expected = dims(wanted)
            dtype = "int64" if spec.is_tokens else "float32"
            array = self._convert(spec, value, expected)
            if len(lead) == 1 and array.ndim in (0, 1) and one_value(spec):
                array = array.reshape(-1, 1)  # a scalar or (batch,) for one value a stream
            shape = array.shape
            if len(shape) != len(wanted) or shape[len(lead) :] != spec.sizes:
                layout = f" (layout {self.layout})" if len(lead) == 2 and self.batch_first else ""
                raise ShapeError(
                    f"input {spec.name!r} must be {expected} {dtype}{layout}, got {shape} {np.asarray(value).dtype}"
                )
            for axis, label in enumerate(lead):
                if shape[axis] == 0:
                    raise ShapeError(
                        f"input {spec.name!r} must be {expected} with {label} >= 1, got an empty {label} {shape}"
                    )
                seen = sizes.setdefault(label, (shape[axis], spec.name))
                if seen[0] != shape[axis]:
                    raise ShapeError(
                        f"input {spec.name!r} must be {expected} {dtype} with the {label} of input {seen[1]!r} "
                        f"({seen[0]}), got {shape}: every input has the same {label}"
                    )
            arrays.append(array)
        return tuple(arrays), {label: size for label, (size, _) in sizes.items()}

    def check_sequences(self, xs: Any, what: str = "xs") -> tuple[Arrays, int, int, bool]:
        """Sequences of inputs, checked: (each input time-first (steps, batch, *sizes), the batch
        size, the steps, whether it came as one flat (steps,) series of a one-value input)."""
        ready = self._ready
        if ready is not None and not self.batch_first and is_ready(xs, ready[0] + 1, ready[1], self.allow_nonfinite):
            if ready[2] is None or xs.shape[2:] == ready[2]:
                return (xs,), xs.shape[1], xs.shape[0], False
        given = self.named(xs, what)
        if self.one_value_input:  # one stream's series (steps,): no batch axis to move
            name = self.input_names[0]
            array = self._convert(self.inputs[0], given[name], "(steps, batch, 1) or (steps,)")
            if array.ndim <= 1:
                if array.size == 0:
                    raise ShapeError(f"input {name!r} must have steps >= 1, got {array.shape}")
                return (array.reshape(-1, 1, 1),), 1, array.size, True
            given = {name: array}
        lead = ("batch", "steps") if self.batch_first else ("steps", "batch")
        arrays, sizes = self._check_all(given, lead, what)
        if self.batch_first:
            arrays = tuple(np.ascontiguousarray(a.swapaxes(0, 1)) for a in arrays)
        return arrays, sizes["batch"], sizes["steps"], False

    # ---- a caller's state ---------------------------------------------------------------

    def check_state(self, state: Any, batch_size: int) -> Arrays:
        """A caller's state as C-contiguous float32 arrays of the manifest's shapes at ``batch_size``
        (the batch axis where each spec has it), or a typed error; ``None`` is the initial state. A
        bare array is taken for a one-tensor state. Arrays that already fit come back as they are."""
        shapes = self._state_shapes.get(batch_size)
        if shapes is None:
            if len(self._state_shapes) >= SHAPE_CACHE:
                self._state_shapes.clear()
            shapes = self._state_shapes[batch_size] = self.shapes(batch_size)[2]
        if type(state) is tuple and len(state) == len(shapes):  # the fast path
            for value, shape in zip(state, shapes):
                if not (is_ready(value, len(shape), shape[-1], self.allow_nonfinite) and value.shape == shape):
                    break
            else:
                return state
        if state is None:
            return self.initial_state(batch_size)
        if isinstance(state, np.ndarray) or not isinstance(state, (tuple, list)):
            state = (state,)
        if len(state) != len(self.states):
            raise ShapeError(f"state must be {len(self.states)} array(s) {list(self.state_names)}, got {len(state)}")
        arrays = []
        for spec, value, wanted in zip(self.states, state, shapes):
            expected = f"{dims(spec.shape)} = {wanted}"
            if isinstance(value, np.ndarray) and value.size * 4 > self.max_memory_bytes:
                check_memory(value.size * 4, f"state {spec.name!r} as float32", self.max_memory_bytes)
            array = as_float32(value, spec.name, expected, allow_nonfinite=self.allow_nonfinite)
            if array.shape != wanted:
                raise ShapeError(
                    f"state {spec.name!r} must be {dims(spec.shape)} float32, {wanted} at the inputs' batch "
                    f"{batch_size} (a state must match the batch of the inputs), got {array.shape}"
                )
            arrays.append(array)
        return tuple(arrays)

    # ---- results ------------------------------------------------------------------------

    def result(self, arrays: list[np.ndarray] | Arrays, sequence: bool, flat: bool = False) -> Any:
        """Outputs as the caller gets them: batch-first sequences if the layout says so, a flat
        (steps,) series for a flat input, one array for one output, else a dict by name."""
        if sequence and flat and self.one_value_output:
            return arrays[0].reshape(-1)
        if sequence and self.batch_first:
            arrays = [np.ascontiguousarray(a.swapaxes(0, 1)) for a in arrays]
        return arrays[0] if len(arrays) == 1 else dict(zip(self.output_names, arrays))

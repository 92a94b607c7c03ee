"""`BoundStep`: the step model bound once to preallocated buffers of one batch size, for any signature."""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from .runs import ORT_ERRORS, RunGuard

if TYPE_CHECKING:
    from .model import Model

State = tuple[np.ndarray, ...]
Rows = int | slice | np.ndarray | None  # of a pool's state rows: one row, a range, gathered rows, all


class BoundStep:
    """The step model bound once to preallocated buffers of one batch size: a run is one
    onnxruntime call with no allocation and no rebinding (at batch 1 a bound run costs ~4 us,
    ~5 us with the state copied in and out, a ``session.run`` ~7-8 us, and rebinding one tensor
    ~3 us, so everything is bound once; NOTES.md). Every input (int64 for token ids), output and
    state tensor has its buffer, of its spec's shape at this batch size.

    The state stays in the bound buffers between runs: two IO bindings take turns (ping-pong),
    one reads state buffers A and writes B, the other reads B and writes A. Nothing is checked
    here: give it inputs and states checked by the model (`Model.check_inputs`, `Model.check_state`)
    or produced by the runtime. Not thread-safe: one caller at a time per BoundStep (a model can
    bind many).

    A pool keeps its streams' states as rows (one stream a row: ``(capacity, *sizes)``);
    ``load_state``/``store_state`` with ``rows`` gather and scatter them, moving the batch axis to
    where each state spec has it. On ``cuda`` the buffers are CUDA OrtValues and each run copies
    the inputs in and the outputs out; the state stays on the device.
    """

    def __init__(self, model: Model, batch_size: int, *, device_buffers: bool = False) -> None:
        """``device_buffers``: OrtValue buffers on the model's device even on the CPU (the CUDA path's
        code, which the tests run on machines without a GPU)."""
        signature = model.signature
        self.batch_size = batch_size
        self._session = model.step_session
        self._guard = RunGuard(model.run_timeout)  # this runner's RunOptions: one caller at a time
        self._what = model.step_file
        # buffers are numpy arrays that onnxruntime reads and writes, or OrtValues on the device
        self._host = model.device == "cpu" and not device_buffers
        self._cpu_values = model.device == "cpu" and device_buffers
        input_shapes, output_shapes, state_shapes = signature.shapes(batch_size)
        self._axes = signature.state_axes
        if self._host:
            self._inputs = [np.zeros(s, d) for s, d in zip(input_shapes, signature.input_dtypes)]
            self._outputs = [np.zeros(s, np.float32) for s in output_shapes]
            self._states = tuple([np.zeros(s, np.float32) for s in state_shapes] for _ in range(2))
            self._rows = tuple([np.moveaxis(b, a, 0) for b, a in zip(side, self._axes)] for side in self._states)
            values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self._inputs]  # shares the memory
            out_values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self._outputs]
            state_values = [[ort.OrtValue.ortvalue_from_numpy(a) for a in side] for side in self._states]
            self._x, self._y = self._inputs[0], self._outputs[0]
            self._ys = self._y.reshape(1, *self._y.shape)  # a view: y as one step of a sequence
        else:

            def value(shape: tuple[int, ...], dtype: Any = np.float32) -> ort.OrtValue:
                return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, model.device, 0)

            values = [value(s, d) for s, d in zip(input_shapes, signature.input_dtypes)]
            out_values = [value(s) for s in output_shapes]
            state_values = [[value(s) for s in state_shapes] for _ in range(2)]
            self._states = tuple(state_values)
            self._shapes = state_shapes
        self._in_values, self._out_values = values, out_values
        self._bindings = []
        for side in (0, 1):
            binding = self._session.io_binding()
            for name, bound in zip(signature.input_names, values):
                binding.bind_ortvalue_input(name, bound)
            for name, bound in zip(signature.output_names, out_values):
                binding.bind_ortvalue_output(name, bound)
            for name, output, read, write in zip(
                signature.state_names, signature.state_outputs, state_values[side], state_values[1 - side]
            ):
                binding.bind_ortvalue_input(name, read)
                binding.bind_ortvalue_output(output, write)
            self._bindings.append(binding)
        self._side = 0  # the binding of the next run; it reads self._states[self._side]
        self._one_output = len(out_values) == 1
        self.simple = self._host and self._one_output and len(values) == 1  # `run`'s fast path
        self._dtypes = signature.input_dtypes
        self._output_names = signature.output_names
        self.load_state(model.initial_state(batch_size))

    # ---- running --------------------------------------------------------------------------

    def set_inputs(self, values: Any) -> None:
        """Copies checked inputs (a tuple in manifest order) into the bound input buffers."""
        if self._host:
            for buffer, value in zip(self._inputs, values):
                buffer[...] = value
            return
        for bound, value, dtype in zip(self._in_values, values, self._dtypes):
            bound.update_inplace(np.ascontiguousarray(np.broadcast_to(value, bound.shape()), dtype))

    def execute(self) -> None:
        """One run of the bound inputs from the bound state; the new state stays bound."""
        binding = self._bindings[self._side]
        guard = self._guard
        guard.since = monotonic()
        try:
            self._session.run_with_iobinding(binding, guard.options)
        except ORT_ERRORS as error:
            guard.recover(error, self._what, self._session.run_with_iobinding, binding)
        guard.since = 0.0
        self._side ^= 1

    def feed_back(self, input_index: int, output_index: int, outputs: list[np.ndarray] | None = None) -> None:
        """The last run's output ``output_index`` becomes input ``input_index`` of the next run
        (``outputs``: what `outputs` returned for that run, so that a device is not read twice)."""
        if self._host:
            self._inputs[input_index][...] = self._outputs[output_index]
        else:
            value = outputs[output_index] if outputs is not None else self._out_values[output_index].numpy()
            self.set_input(input_index, value)

    def set_input(self, index: int, value: Any) -> None:
        """Copies one checked input into its bound buffer."""
        if self._host:
            self._inputs[index][...] = value
        else:
            bound = self._in_values[index]
            bound.update_inplace(np.ascontiguousarray(np.broadcast_to(value, bound.shape()), self._dtypes[index]))

    def outputs(self) -> list[np.ndarray]:
        """The last run's outputs: the bound buffers themselves on the CPU (valid until the next
        run; copy what you keep), copies from the device on CUDA."""
        if self._host:
            return self._outputs
        return [self._fetch(bound) for bound in self._out_values]

    def run(self, x: Any, out: np.ndarray | None = None) -> Any:
        """One step from the bound state with inputs ``x`` (a model of one input: anything that
        assigns to its (batch, *sizes) buffer; several: a tuple in manifest order); the new state
        stays bound. Returns y (a new array, or ``out`` with y written into it) for one output,
        else a dict of new arrays by output name."""
        if self.simple:
            self._x[...] = x
            self.execute()
            if out is None:
                return self._y.copy()
            out[...] = self._y
            return out
        self.set_inputs((x,) if len(self._in_values) == 1 else x)
        self.execute()
        arrays = self.outputs()
        if self._one_output:
            if out is None:
                return arrays[0].copy() if self._host else arrays[0]
            out[...] = arrays[0]
            return out
        return {name: array.copy() for name, array in zip(self._output_names, arrays)}

    def step(self, inputs: tuple, state: State, sequence: bool = False) -> tuple[list[np.ndarray], State]:
        """`Model.run_step` through the bound buffers: loads ``state``, runs, returns (the outputs as
        new arrays, each (1, batch, ...) if ``sequence``, the new state as new arrays). Checked inputs only."""
        if self._host:  # `Model.run_step`'s hot path, inlined
            for buffer, source in zip(self._states[self._side], state):
                buffer[...] = source
            if self.simple:
                self._x[...] = inputs[0]
            else:
                for buffer, value in zip(self._inputs, inputs):
                    buffer[...] = value
            guard = self._guard  # `execute`, inlined
            guard.since = monotonic()
            try:
                self._session.run_with_iobinding(self._bindings[self._side], guard.options)
            except ORT_ERRORS as error:
                guard.recover(error, self._what, self._session.run_with_iobinding, self._bindings[self._side])
            guard.since = 0.0
            self._side ^= 1
            if self.simple:
                ys = [self._ys.copy() if sequence else self._y.copy()]
            elif sequence:
                ys = [y.reshape(1, *y.shape).copy() for y in self._outputs]
            else:
                ys = [y.copy() for y in self._outputs]
            return ys, tuple([buffer.copy() for buffer in self._states[self._side]])
        self.load_state(state)
        self.set_inputs(inputs)
        self.execute()
        ys = self.outputs()
        return ([y.reshape(1, *y.shape) for y in ys] if sequence else ys), self.state

    def step_rows(self, inputs: tuple, states: list[np.ndarray], rows: Rows) -> list[np.ndarray]:
        """One step of rows ``rows`` of a pool's state rows ``states`` (each (n, *sizes), updated in
        place) with inputs ``inputs``: gather, run, scatter. Returns the outputs (new arrays)."""
        if self._host and type(rows) is int:  # one stream on the CPU: the pool's hot path, inlined
            for buffer, source in zip(self._rows[self._side], states):
                buffer[0] = source[rows]
            for buffer, value in zip(self._inputs, inputs):
                buffer[...] = value
            self.execute()
            for buffer, target in zip(self._rows[self._side], states):
                target[rows] = buffer[0]
            return [y.copy() for y in self._outputs]
        self.load_state(states, rows)
        self.set_inputs(inputs)
        self.execute()
        ys = self.outputs()
        self.store_state(states, rows)
        return [y.copy() for y in ys] if self._host else ys

    # ---- the bound state ------------------------------------------------------------------

    @property
    def state(self) -> State:
        """A copy of the bound state (what the next run reads), each tensor of its spec's shape."""
        if self._host:
            return tuple([buffer.copy() for buffer in self._states[self._side]])
        return tuple([self._fetch(bound) for bound in self._states[self._side]])

    def _fetch(self, bound: ort.OrtValue) -> np.ndarray:
        """An OrtValue's values as a new array (on the CPU, ``numpy()`` would share the buffer)."""
        return bound.numpy().copy() if self._cpu_values else bound.numpy()

    def load_state(self, sources: State | list[np.ndarray], rows: Rows = None) -> None:
        """Sets the bound state to ``sources`` (each of its spec's shape at this batch size), or to
        rows ``rows`` of a pool's state rows (an int for batch 1, a slice, or an index array)."""
        if not self._host:
            for bound, source, axis, shape in zip(self._states[self._side], sources, self._axes, self._shapes):
                value = source if rows is None else _rows_to_batch(source, rows, axis)
                bound.update_inplace(np.ascontiguousarray(value, np.float32).reshape(shape))
        elif rows is None:
            for buffer, source in zip(self._states[self._side], sources):
                buffer[...] = source
        elif type(rows) is int or isinstance(rows, np.integer):
            for buffer, source in zip(self._rows[self._side], sources):
                buffer[0] = source[rows]
        elif type(rows) is slice:
            for buffer, source in zip(self._rows[self._side], sources):
                buffer[...] = source[rows]
        else:
            for buffer, source, axis in zip(self._rows[self._side], sources, self._axes):
                if axis == 0:
                    np.take(source, rows, axis=0, out=buffer)  # a gather without a temporary
                else:
                    buffer[...] = source[rows]

    def store_state(self, targets: State | list[np.ndarray], rows: Rows = None) -> None:
        """Copies the bound state into ``targets`` (each of its spec's shape), or into rows ``rows``
        of a pool's state rows (a scatter)."""
        if self._host:
            buffers = self._rows[self._side] if rows is not None else self._states[self._side]
        else:
            values = [bound.numpy() for bound in self._states[self._side]]
            buffers = values if rows is None else [np.moveaxis(v, a, 0) for v, a in zip(values, self._axes)]
        if rows is None:
            for buffer, target in zip(buffers, targets):
                target[...] = buffer
        elif type(rows) is int or isinstance(rows, np.integer):
            for buffer, target in zip(buffers, targets):
                target[rows] = buffer[0]
        else:
            for buffer, target in zip(buffers, targets):
                target[rows] = buffer


def _rows_to_batch(source: np.ndarray, rows: Rows, axis: int) -> np.ndarray:
    """Rows of a pool's state rows as one state tensor: the batch axis moved to ``axis``."""
    selected = source[rows]
    if type(rows) is int or isinstance(rows, np.integer):
        selected = selected[np.newaxis]
    return np.moveaxis(selected, 0, axis)

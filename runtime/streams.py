"""Stateful streams over a loaded model: one `Stream`, or a `StreamPool` that serves many
concurrent streams with one batched step-model run per tick.

Both run the step model through `BoundStep` (IO bindings prebound to preallocated buffers), so a
push costs one onnxruntime call: a `Stream` keeps its state inside its bound buffers between
pushes; a pool gathers the stepped streams' rows into a bound runner of that batch size and
scatters the new state back.

State snapshots are plain bytes (a small header and float32 rows, never a pickle), tagged with
the model's step file hash so that a state cannot be restored into a different model.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .bound import BoundStep
from .errors import DtypeError, InputValueError, ShapeError
from .inputs import MAX_INT64, check_count, check_memory, check_scalar
from .model import Model
from .signature import one_value

_MAGIC = b"RNNSTATE"
_VERSION = 1
_HEADER = struct.Struct("<8sHH16s")  # magic, version, tensor count, model tag (16 hex digits)
RUNNER_CACHE = 40  # bound runners a pool keeps, one per batch size, least recently used dropped
EXACT_BATCHES = 16  # batches up to this size run as they are; larger ones are padded to a few sizes


def padded_batch(count: int) -> int:
    """The batch size a pool runs ``count`` streams at: ``count`` up to 16, then the next of four
    sizes per octave (20, 24, 28, 32, 40, 48, ...): at most a quarter more rows, and few enough
    sizes that the runners bound for them stay cached instead of being rebuilt (a bind costs
    about 100 us; a run of 100 rows of a small model about 30 us)."""
    if count <= EXACT_BATCHES:
        return count
    quarter = 1 << (count.bit_length() - 3)
    return -(-count // quarter) * quarter


def _model_tag(model: Model) -> bytes:
    return model.step_sha256[:16].encode("ascii")


def state_to_bytes(model: Model, state: Sequence[np.ndarray]) -> bytes:
    """One stream's state (each tensor (size,) or (1, size)) as bytes for `state_from_bytes`."""
    rows = [np.ascontiguousarray(np.asarray(s, dtype="<f4").reshape(-1)) for s in state]
    parts = [_HEADER.pack(_MAGIC, _VERSION, len(rows), _model_tag(model))]
    for row in rows:
        parts += [struct.pack("<I", row.size), row.tobytes()]
    return b"".join(parts)


def state_from_bytes(model: Model, data: bytes) -> tuple[np.ndarray, ...]:
    """The state rows saved by `state_to_bytes`, checked against this model's state sizes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputValueError(f"a saved state must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise InputValueError(f"a saved state is at least {_HEADER.size} bytes, got {len(data)}")
    magic, version, count, tag = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _VERSION:
        raise InputValueError("these bytes are not a stream state saved by this toolkit")
    if tag != _model_tag(model):
        raise InputValueError("this state was saved from a different model (its step model's hash differs)")
    sizes = tuple(s.count for s in model.states)  # values one stream holds of each tensor
    if count != len(sizes):
        raise ShapeError(f"the saved state has {count} tensors, the model has {len(sizes)}")
    rows, offset = [], _HEADER.size
    for size in sizes:
        if offset + 4 > len(data):
            raise InputValueError("the saved state is truncated")
        (saved,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if saved != size or offset + 4 * size > len(data):
            raise ShapeError(f"the saved state tensor has {saved} values, the model's has {size} (or it is truncated)")
        rows.append(np.frombuffer(data, dtype="<f4", count=size, offset=offset).astype(np.float32))
        offset += 4 * size
    if offset != len(data):
        raise InputValueError(f"{len(data) - offset} unexpected bytes after the saved state")
    return tuple(rows)


def _stream_id(stream: Any) -> int:
    """A stream id as given by a caller: an int (or numpy integer), never a bool, float, string or
    array; an InputValueError otherwise (raised in the caller's thread, before anything is queued)."""
    if type(stream) is int:  # the fast path
        return stream
    if isinstance(stream, bool) or not isinstance(stream, (int, np.integer)):
        raise InputValueError(f"a stream id is an int returned by open(), got {type(stream).__name__} {stream!r:.40}")
    return int(stream)


def one_stream_input(model: Model, x: Any) -> tuple:
    """One stream's inputs, checked, in manifest order as a batch of 1: ``{name: value}`` (each of
    its spec's non-batch shape; a token id an int), a bare value for a model of one input. A Python
    or numpy float for an input of one value a stream stays a float (the fast path: no array)."""
    signature = model.signature
    if signature.one_value_input and isinstance(x, (float, np.floating)):
        return (check_scalar(x, signature.input_names[0], allow_nonfinite=model.allow_nonfinite),)
    given = signature.named(x, "x")
    quick = []  # the fast path: a token id an int, one value a float, each in range
    for spec in signature.inputs:
        value = given[spec.name]
        if spec.is_tokens and type(value) is int and 0 <= value < spec.vocabulary:
            quick.append(value)
        elif type(value) is float and one_value(spec):
            quick.append(check_scalar(value, spec.name, allow_nonfinite=model.allow_nonfinite))
        else:
            break
    else:
        return tuple(quick)
    batched = {}
    for name, value in given.items():
        if isinstance(value, np.ndarray):
            batched[name] = value[np.newaxis]
            continue
        try:
            batched[name] = np.asarray([value])
        except (ValueError, TypeError):
            raise DtypeError(
                f"input {name!r} of one stream must be numbers, got a ragged {type(value).__name__}"
            ) from None
    return signature.check_step(batched, "x")[0]


def state_rows(model: Model, state: Any) -> list[np.ndarray]:
    """One stream's state as a caller gives it (per tensor: its spec's non-batch shape, its values
    flat, or the model's layout at batch 1), checked, as rows (1, *sizes)."""
    if isinstance(state, np.ndarray) or not isinstance(state, (tuple, list)):
        state = (state,)
    if len(state) != len(model.states):
        raise ShapeError(f"state must be {len(model.states)} array(s) {list(model.state_names)}, got {len(state)}")
    shaped = []
    for value, spec in zip(state, model.states):
        array = value
        if isinstance(value, (list, tuple)):
            try:
                array = np.asarray(value)
            except (ValueError, TypeError):
                raise DtypeError(f"state {spec.name!r} must be numbers, got a ragged {type(value).__name__}") from None
        if isinstance(array, np.ndarray) and array.dtype.kind in "fiu" and array.size == spec.count:
            array = np.expand_dims(array.reshape(spec.sizes), spec.batch_axis)
        shaped.append(array)
    checked = model.check_state(tuple(shaped), 1)
    return [np.moveaxis(value, spec.batch_axis, 0) for value, spec in zip(checked, model.states)]


def _outputs(model: Model, ys: list[np.ndarray], row: int | None = None) -> Any:
    """A run's outputs as a caller gets them: an array for one output, else a dict; one row of each
    if ``row`` is given."""
    if row is not None:
        ys = [y[row] for y in ys]
    return ys[0] if len(ys) == 1 else dict(zip(model.output_names, ys))


class Stream:
    """One sequence of any signature: ``push(x) -> y`` steps it, keeping its state between calls
    (not thread-safe; use a `StreamPool` to serve many streams from many threads). ``x`` is one
    stream's inputs (``{name: value}``, a bare value for one input, a scalar for one value); y an
    array (a dict for several outputs). The state stays inside the stream's bound onnxruntime
    buffers between pushes (`runtime.bound.BoundStep`); ``state`` is one array of each spec's
    non-batch shape."""

    def __init__(self, model: Model, state: Any = None) -> None:
        self.model = model
        self._bound = model.bind(1)
        if state is not None:
            self._bound.load_state(state_rows(model, state), 0)

    def push(self, x: Any) -> Any:
        """Steps the stream with inputs ``x``; returns its outputs."""
        values = one_stream_input(self.model, x)
        bound = self._bound
        if bound.simple:
            return bound.run(values[0])[0]
        bound.set_inputs(values)
        bound.execute()
        return _outputs(self.model, [y.copy() for y in bound.outputs()], 0)

    def reset(self) -> None:
        """Back to the manifest's initial state."""
        self._bound.load_state(self.model.initial_state(1))

    @property
    def state(self) -> tuple[np.ndarray, ...]:
        """A copy of the state, one array of each state spec's non-batch shape."""
        return tuple(np.moveaxis(s, spec.batch_axis, 0)[0] for s, spec in zip(self._bound.state, self.model.states))

    def save(self) -> bytes:
        """The state as bytes for `restore` (here or in another process with the same model)."""
        return state_to_bytes(self.model, self.state)

    @classmethod
    def restore(cls, model: Model, data: bytes) -> Stream:
        """A stream continuing from bytes saved by `save`; refuses a state of another model."""
        return cls(model, state_from_bytes(model, data))


class _Pending:
    __slots__ = ("stream", "x", "y", "error", "done")

    def __init__(self, stream: int, x: tuple) -> None:  # x: checked by one_stream_input
        self.stream, self.x, self.y, self.error = stream, x, None, None
        self.done = threading.Event()


class StreamPool:
    """Serves many concurrent streams of one model (any signature) with batched step-model runs.

    The states of all open streams live in one preallocated array per state tensor, one stream a
    row ``(capacity, *sizes)`` (grown by doubling when full, never stacked per tick). ``step(ids,
    xs)`` runs a batch that arrived together in one run; ``push(id, x)`` may be called from many
    threads: a push that finds no tick in progress and nothing queued runs at once in its caller's
    thread; otherwise pending pushes are gathered into one run per tick by whichever caller finds
    no tick in progress. Every run goes through a bound runner of its batch size (gather the rows
    into its state buffers, run, scatter back). Streams may open and close at any time. Every
    method is thread-safe.
    """

    def __init__(self, model: Model, capacity: int = 64) -> None:
        capacity = check_count(capacity, "capacity", 1, MAX_INT64)
        counts = [s.count for s in model.states]
        check_memory(capacity * 4 * sum(counts), f"a pool of {capacity} streams", model.max_memory_bytes)
        self.model = model
        self._states = [np.zeros((capacity, *s.sizes), np.float32) for s in model.states]
        self._initial = [np.moveaxis(s, spec.batch_axis, 0) for s, spec in zip(model.initial_state(1), model.states)]
        self._slots: dict[int, int] = {}
        self._free = list(range(capacity - 1, -1, -1))
        self._next_id = 0
        self._lock = threading.Lock()  # streams, slots and states
        self._tick = threading.Lock()  # held by the caller that runs the pending pushes
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self._runners: dict[int, BoundStep] = {}  # batch size -> bound runner, least recently used first
        self._scratch: int | None = None  # the slot padded rows of a run read and write (no stream's)

    # ---- streams ------------------------------------------------------------------------

    def open(self, state: Any = None) -> int:
        """A new stream (initial state, or ``state`` as returned by `state`); returns its id."""
        rows = self._initial if state is None else state_rows(self.model, state)
        with self._lock:
            if not self._free:
                self._grow()
            slot = self._free.pop()
            stream = self._next_id
            self._next_id += 1
            self._slots[stream] = slot
            for array, row in zip(self._states, rows):
                array[slot] = row[0]
            return stream

    def close(self, stream: int) -> None:
        with self._lock:
            self._free.append(self._slot(stream))
            del self._slots[stream]

    def reset(self, stream: int) -> None:
        with self._lock:
            slot = self._slot(stream)
            for array, initial in zip(self._states, self._initial):
                array[slot] = initial[0]

    def state(self, stream: int) -> tuple[np.ndarray, ...]:
        """A copy of one stream's state, one array of each state spec's non-batch shape."""
        with self._lock:
            slot = self._slot(stream)
            return tuple(array[slot].copy() for array in self._states)

    def save(self, stream: int) -> bytes:
        return state_to_bytes(self.model, self.state(stream))

    def restore(self, data: bytes) -> int:
        """Opens a stream from bytes saved by `save` (here or in another process)."""
        return self.open(state_from_bytes(self.model, data))

    def __len__(self) -> int:
        with self._lock:
            return len(self._slots)

    @property
    def capacity(self) -> int:
        return self._states[0].shape[0] if self._states else len(self._free) + len(self._slots)

    def _slot(self, stream: int) -> int:
        slot = self._slots.get(_stream_id(stream))
        if slot is None:
            raise InputValueError(f"stream {stream!r} is not open in this pool")
        return slot

    def _grow(self) -> None:
        old = self.capacity
        self._states = [np.concatenate([a, np.zeros_like(a)]) for a in self._states]
        self._free.extend(range(2 * old - 1, old - 1, -1))

    # ---- stepping -----------------------------------------------------------------------

    def step(self, streams: Any, xs: Any) -> Any:
        """One step for the given streams (ids, distinct) with inputs ``xs`` (as `Model.step` takes
        them, a row per stream); one step-model run for all of them. Returns the outputs (an array
        for one output, else a dict), a row per stream."""
        if isinstance(streams, np.ma.MaskedArray):
            raise InputValueError("stream ids must be integers, got a masked array")
        ids = streams if type(streams) is np.ndarray else np.asarray(streams)
        if ids.dtype.kind not in "iu":
            raise InputValueError(f"stream ids must be integers, got {ids.dtype}")
        inputs, batch_size = self.model.signature.check_step(xs, "xs")
        keys = ids.ravel().tolist()
        if batch_size != len(keys):
            raise ShapeError(f"{len(keys)} stream ids but {batch_size} inputs")
        if len(keys) == 1:  # one stream: no gather array, no distinctness check
            with self._lock:
                return _outputs(self.model, self._runner(1).step_rows(inputs, self._states, self._slot(keys[0])))
        if len(set(keys)) != len(keys):
            raise InputValueError("a stream can take one step per call; ids must be distinct")
        with self._lock:
            return _outputs(self.model, self._step_slots([self._slot(key) for key in keys], inputs))

    def _gather_inputs(self, items: list[_Pending]) -> tuple:
        """The checked inputs of ``items`` as one batch, a row each."""
        input_shapes = self.model.signature.shapes(len(items))[0]
        gathered = []
        for index, (shape, dtype) in enumerate(zip(input_shapes, self.model.signature.input_dtypes)):
            batch = np.empty(shape, dtype)
            for row, item in enumerate(items):
                batch[row : row + 1] = item.x[index]  # a checked float or (1, *sizes) array
            gathered.append(batch)
        return tuple(gathered)

    def _runner(self, batch_size: int) -> BoundStep:
        """The bound runner for ``batch_size`` streams (made on first use); the caller holds ``_lock``."""
        runner = self._runners.pop(batch_size, None)
        if runner is None:
            runner = self.model.bind(batch_size)
            if len(self._runners) >= RUNNER_CACHE:
                del self._runners[next(iter(self._runners))]
        self._runners[batch_size] = runner  # (re)inserted last: the most recently used
        return runner

    def _step_slots(self, slots: list[int], inputs: tuple) -> list[np.ndarray]:
        """One run for distinct ``slots`` with checked inputs; the caller holds ``_lock``. The rows
        are gathered into the bound state of a runner of that batch size, and its new state
        scattered back; the inputs and outputs go through the runner's bound buffers."""
        count = len(slots)
        rows: int | slice | np.ndarray
        size = padded_batch(count)
        if size != count:  # pad with the scratch slot; every row's result is its own (row-wise model)
            if self._scratch is None:
                if not self._free:
                    self._grow()
                self._scratch = self._free.pop()
            padded = []
            for value in inputs:
                array = np.zeros((size, *value.shape[1:]), value.dtype)
                array[:count] = value
                padded.append(array)
            rows = np.array(slots + [self._scratch] * (size - count), dtype=np.intp)
            return [y[:count] for y in self._runner(size).step_rows(tuple(padded), self._states, rows)]
        if count == 1:
            rows = slots[0]
        else:
            rows = np.array(slots, dtype=np.intp)
            if rows[0] == 0 and rows[-1] == count - 1 and np.array_equal(rows, np.arange(count)):
                rows = slice(0, count)  # the common case of streams opened in order: a plain copy
        return self._runner(count).step_rows(inputs, self._states, rows)

    def push(self, stream: int, x: Any) -> Any:
        """Steps one stream; returns its outputs (an array, a dict for several outputs). Concurrent
        pushes from other threads share one run per tick. A bad id or input is refused here, in the
        caller's thread; a push that fails in a tick (its stream closed meanwhile) fails alone, and
        a failed run fails the pushes of that run only."""
        key, value = _stream_id(stream), one_stream_input(self.model, x)
        if not self._queue and self._tick.acquire(blocking=False):  # nobody else stepping: run it here
            ys = None
            try:
                if not self._queue:
                    with self._lock:
                        ys = self._runner(1).step_rows(value, self._states, self._slot(key))
            finally:
                self._tick.release()
            if ys is not None:
                if self._queue:  # queued while this push ran: serve them now, not at their next poll
                    self._drain_stranded()
                return _outputs(self.model, ys, 0)
        return self._push_queued(_Pending(key, value))

    def _drain_stranded(self) -> None:
        if self._tick.acquire(blocking=False):  # else the caller holding the tick serves them
            try:
                self._drain()
            finally:
                self._tick.release()

    def _push_queued(self, pending: _Pending) -> Any:
        with self._queue_lock:
            self._queue.append(pending)
        extra_drains = 1  # after its own push is served, a caller drains stranded pushes once, not forever
        while True:
            if self._tick.acquire(blocking=False):
                try:
                    self._drain()
                finally:
                    self._tick.release()
                with self._queue_lock:  # a push queued between the last drain and the release:
                    stranded = bool(self._queue)  # serve it now rather than leave it to its timeout
                if pending.done.is_set():
                    if not stranded or extra_drains == 0:
                        break
                    extra_drains -= 1
            elif pending.done.wait(0.005):  # the running tick serves this push; the timeout is a fallback
                break
        if pending.error is not None:
            raise pending.error
        return pending.y

    def _drain(self) -> None:
        while True:
            with self._queue_lock:
                batch, self._queue = self._queue, []
            if not batch:
                return
            try:
                while batch:  # one step per stream per run, in arrival order
                    seen, now, later = set(), [], []
                    for item in batch:
                        (later if item.stream in seen else now).append(item)
                        seen.add(item.stream)
                    self._run_pending(now)
                    batch = later
            except BaseException as error:  # never strand a taken push: each one still waiting gets the error
                for item in batch:
                    if not item.done.is_set():
                        item.error = error
                        item.done.set()
                if not isinstance(error, Exception):
                    raise  # KeyboardInterrupt and the like stay with this thread

    def _run_pending(self, items: list[_Pending]) -> None:
        with self._lock:
            valid, slots = [], []
            for item in items:
                slot = self._slots.get(item.stream)
                if slot is None:
                    item.error = InputValueError(f"stream {item.stream!r} is not open in this pool")
                    item.done.set()
                else:
                    valid.append(item)
                    slots.append(slot)
            if not valid:
                return
            inputs = self._gather_inputs(valid)
            try:
                ys = self._step_slots(slots, inputs)
            except Exception as error:  # handed to every waiting caller, raised in its own thread
                for item in valid:
                    item.error = error
                    item.done.set()
                return
        for row, item in enumerate(valid):
            item.y = _outputs(self.model, ys, row)
            item.done.set()

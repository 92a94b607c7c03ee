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

from .errors import DtypeError, InputValueError, ShapeError, UnsupportedError
from .inputs import MAX_INT64, as_float32, check_count, check_memory, check_scalar
from .model import BoundStep, Model

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


def _check_classic(model: Model, what: str) -> None:
    """Refuses a model beyond the classic signature: a Stream runs it through a `BoundStep`."""
    if not model.classic:
        raise UnsupportedError(
            f"a {what} serves models with the classic signature (one float32 input, (batch, size) states); "
            f"this model has inputs {list(model.input_names)}: use a StreamPool (one stream a row) or Model.step"
        )


def _stream_id(stream: Any) -> int:
    """A stream id as given by a caller: an int (or numpy integer), never a bool, float, string or
    array; an InputValueError otherwise (raised in the caller's thread, before anything is queued)."""
    if type(stream) is int:  # the fast path
        return stream
    if isinstance(stream, bool) or not isinstance(stream, (int, np.integer)):
        raise InputValueError(f"a stream id is an int returned by open(), got {type(stream).__name__} {stream!r:.40}")
    return int(stream)


def _one_input(model: Model, x: Any) -> np.ndarray | float:
    """One stream's input, checked: a float for a float scalar of a one-input model, else a
    (1, input_size) float32 array (from a scalar or an (input_size,) array)."""
    if model.input_size == 1 and isinstance(x, (float, np.floating)):  # the fast path: no array
        return check_scalar(x, "x", allow_nonfinite=model.allow_nonfinite)
    expected = "a scalar" if model.input_size == 1 else f"({model.input_size},)"
    array = as_float32(x, "x", expected, allow_nonfinite=model.allow_nonfinite)
    if array.size != model.input_size or array.ndim > 1:
        raise ShapeError(f"input 'x' of one stream must be {expected} float32, got shape {array.shape}")
    return array.reshape(1, model.input_size)


class Stream:
    """One sequence: ``push(x) -> y`` steps it, keeping its state between calls (not thread-safe;
    use a `StreamPool` to serve many streams from many threads). The state stays inside the
    stream's bound onnxruntime buffers between pushes (`runtime.model.BoundStep`)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Stream:  # (model, state=None); copy.copy passes nothing
        model = args[0] if args else kwargs.get("model")
        if cls is Stream and model is not None and not getattr(model, "classic", True):
            return super().__new__(GeneralStream)
        return super().__new__(cls)

    def __init__(self, model: Model, state: Any = None) -> None:
        _check_classic(model, "Stream")
        self.model = model
        self._bound = model.bind(1)
        if state is not None:
            self._bound.load_state(model.check_state(state, 1))

    def push(self, x: Any) -> np.ndarray:
        """Steps the stream with input ``x`` (a scalar or (input_size,)); returns y (output_size,)."""
        return self._bound.run(_one_input(self.model, x))[0]

    def reset(self) -> None:
        """Back to the manifest's initial state."""
        self._bound.load_state(self.model.initial_state(1))

    @property
    def state(self) -> tuple[np.ndarray, ...]:
        """A copy of the state, one (size,) array per state tensor."""
        return tuple(s[0] for s in self._bound.state)

    def save(self) -> bytes:
        """The state as bytes for `restore` (here or in another process with the same model)."""
        return state_to_bytes(self.model, self._bound.state)

    @classmethod
    def restore(cls, model: Model, data: bytes) -> Stream:
        """A stream continuing from bytes saved by `save`; refuses a state of another model."""
        return cls(model, tuple(row.reshape(1, -1) for row in state_from_bytes(model, data)))


class _Pending:
    __slots__ = ("stream", "x", "y", "error", "done")

    def __init__(self, stream: int, x: np.ndarray | float) -> None:  # x: checked by _one_input
        self.stream, self.x, self.y, self.error = stream, x, None, None
        self.done = threading.Event()


class StreamPool:
    """Serves many concurrent streams of one model with batched step-model runs.

    The states of all open streams live in one preallocated array per state tensor (grown by
    doubling when full, never stacked per tick). ``step(ids, xs)`` runs a batch that arrived
    together in one run; ``push(id, x)`` may be called from many threads: the pending pushes
    are gathered into one run per tick by whichever caller finds no tick in progress. Streams
    may open and close at any time. Every method is thread-safe.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> StreamPool:  # (model, capacity=64)
        model = args[0] if args else kwargs.get("model")
        if cls is StreamPool and model is not None and not getattr(model, "classic", True):
            cls = GeneralStreamPool
        return super().__new__(cls)

    def __init__(self, model: Model, capacity: int = 64) -> None:
        capacity = check_count(capacity, "capacity", 1, MAX_INT64)
        check_memory(capacity * 4 * sum(model.state_sizes), f"a pool of {capacity} streams", model.max_memory_bytes)
        self.model = model
        self._states = [np.zeros((capacity, size), np.float32) for size in model.state_sizes]
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
        rows = None if state is None else self._state_rows(state)
        with self._lock:
            if not self._free:
                self._grow()
            slot = self._free.pop()
            stream = self._next_id
            self._next_id += 1
            self._slots[stream] = slot
            for array, row in zip(self._states, rows or self._initial_rows()):
                array[slot] = row[0]
            return stream

    def _state_rows(self, state: Any) -> Any:
        """One stream's state as given by a caller, checked: a row (1, ...) per state tensor."""
        return self.model.check_state(tuple(np.reshape(s, (1, -1)) for s in state), 1)

    def _initial_rows(self) -> Any:
        return self.model.initial_state(1)

    def close(self, stream: int) -> None:
        with self._lock:
            self._free.append(self._slot(stream))
            del self._slots[stream]

    def reset(self, stream: int) -> None:
        with self._lock:
            slot = self._slot(stream)
            for array, initial in zip(self._states, self._initial_rows()):
                array[slot] = initial[0]

    def state(self, stream: int) -> tuple[np.ndarray, ...]:
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
        return self._states[0].shape[0]

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

    def step(self, streams: Any, xs: Any) -> np.ndarray:
        """One step for the given streams (ids, distinct) with inputs ``xs`` (len(ids), input_size);
        one step-model run for all of them. Returns (len(ids), output_size)."""
        if isinstance(streams, np.ma.MaskedArray):
            raise InputValueError("stream ids must be integers, got a masked array")
        ids = streams if type(streams) is np.ndarray else np.asarray(streams)
        if ids.dtype.kind not in "iu":
            raise InputValueError(f"stream ids must be integers, got {ids.dtype}")
        x = self.model.check_x(xs, "xs")
        keys = ids.ravel().tolist()
        if x.shape[0] != len(keys):
            raise ShapeError(f"{len(keys)} stream ids but {x.shape[0]} inputs")
        if len(keys) == 1:  # one stream: no gather array, no distinctness check
            with self._lock:
                return self._runner(1).step_rows(x, self._states, self._slot(keys[0]))
        if len(set(keys)) != len(keys):
            raise InputValueError("a stream can take one step per call; ids must be distinct")
        with self._lock:
            return self._step_slots([self._slot(key) for key in keys], x)

    def _one_input(self, x: Any) -> Any:
        return _one_input(self.model, x)

    def _gather_inputs(self, items: list[_Pending]) -> Any:
        """The checked inputs of ``items`` as one batch, a row each."""
        x = np.empty((len(items), self.model.input_size), np.float32)
        for row, item in enumerate(items):
            x[row] = item.x  # a checked float or (1, input_size) array
        return x

    def _runner(self, batch_size: int) -> BoundStep:
        """The bound runner for ``batch_size`` streams (made on first use); the caller holds ``_lock``."""
        runner = self._runners.pop(batch_size, None)
        if runner is None:
            runner = self.model.bind(batch_size)
            if len(self._runners) >= RUNNER_CACHE:
                del self._runners[next(iter(self._runners))]
        self._runners[batch_size] = runner  # (re)inserted last: the most recently used
        return runner

    def _step_slots(self, slots: list[int], x: np.ndarray) -> np.ndarray:
        """One run for distinct ``slots`` with checked inputs ``x``; the caller holds ``_lock``.
        The rows are gathered into the bound state of a runner of that batch size, and its new
        state scattered back; x and y go through the runner's bound buffers."""
        count = len(slots)
        rows: int | slice | np.ndarray
        size = padded_batch(count)
        if size != count:  # pad with the scratch slot; every row's result is its own (row-wise model)
            if self._scratch is None:
                if not self._free:
                    self._grow()
                self._scratch = self._free.pop()
            padded = np.zeros((size, x.shape[1]), np.float32)
            padded[:count] = x
            rows = np.array(slots + [self._scratch] * (size - count), dtype=np.intp)
            return self._runner(size).step_rows(padded, self._states, rows)[:count]
        if count == 1:
            rows = slots[0]
        else:
            rows = np.array(slots, dtype=np.intp)
            if rows[0] == 0 and rows[-1] == count - 1 and np.array_equal(rows, np.arange(count)):
                rows = slice(0, count)  # the common case of streams opened in order: a plain copy
        return self._runner(count).step_rows(x, self._states, rows)

    def push(self, stream: int, x: Any) -> np.ndarray:
        """Steps one stream; concurrent pushes from other threads share one run per tick. A bad id
        or input is refused here, in the caller's thread; a push that fails in a tick (its stream
        closed meanwhile) fails alone, and a failed run fails the pushes of that run only."""
        pending = _Pending(_stream_id(stream), self._one_input(x))
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
            x = self._gather_inputs(valid)
            try:
                ys = self._step_slots(slots, x)
            except Exception as error:  # handed to every waiting caller, raised in its own thread
                for item in valid:
                    item.error = error
                    item.done.set()
                return
        for item, y in zip(valid, self._per_stream(ys)):
            item.y = y
            item.done.set()

    def _per_stream(self, ys: Any) -> Any:
        """A run's outputs, one item per stream (rows of y)."""
        return ys


class GeneralStreamPool(StreamPool):
    """A `StreamPool` of a model beyond the classic signature (`runtime.model.GeneralModel`), made
    by ``StreamPool(model)``: named inputs (one stream's as ``{name: value}``, a token id an int),
    outputs an array for one output else a dict, states of any rank. Each tick is one
    ``session.run`` of the stepped streams' rows (no bound runners, no padding). A state of one
    stream is one array of its spec's non-batch shape per tensor."""

    def __init__(self, model: Model, capacity: int = 64) -> None:
        capacity = check_count(capacity, "capacity", 1, MAX_INT64)
        counts = [s.count for s in model.states]
        check_memory(capacity * 4 * sum(counts), f"a pool of {capacity} streams", model.max_memory_bytes)
        self.model = model
        # one stream a row: each state (capacity, *sizes), moved to its batch axis for a run
        self._states = [np.zeros((capacity, *s.sizes), np.float32) for s in model.states]
        self._slots = {}
        self._free = list(range(capacity - 1, -1, -1))
        self._next_id = 0
        self._lock = threading.Lock()
        self._tick = threading.Lock()
        self._queue = []
        self._queue_lock = threading.Lock()
        self._runners = {}
        self._scratch = None

    def _rows(self, state: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        """A model state (batch axis where each spec has it) as rows (batch, *sizes)."""
        return [np.moveaxis(value, spec.batch_axis, 0) for value, spec in zip(state, self.model.states)]

    def _batched(self, rows: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        return tuple(
            np.ascontiguousarray(np.moveaxis(value, 0, spec.batch_axis)) for value, spec in zip(rows, self.model.states)
        )

    def _state_rows(self, state: Any) -> list[np.ndarray]:
        """``state`` as returned by `state` (one array of each state's non-batch shape, or its
        values flat), checked, as rows (1, *sizes)."""
        if isinstance(state, np.ndarray) or not isinstance(state, (tuple, list)):
            state = (state,)
        if len(state) != len(self.model.states):
            raise ShapeError(f"state must be {len(self.model.states)} array(s), got {len(state)}")
        shaped = []
        for value, spec in zip(state, self.model.states):
            array = np.asarray(value) if isinstance(value, np.ndarray) else value
            if isinstance(array, np.ndarray) and array.size == spec.count:
                array = np.expand_dims(array.reshape(spec.sizes), spec.batch_axis)
            shaped.append(array)
        return self._rows(self.model.check_state(tuple(shaped), 1))

    def _initial_rows(self) -> list[np.ndarray]:
        return self._rows(self.model.initial_state(1))

    def _one_input(self, x: Any) -> Any:
        """One stream's inputs ({name: value of the spec's non-batch shape}, a token id an int; a
        bare value for a model of one input) checked, as a batch of 1."""
        batched = {}
        for name, value in self.model._named(x, "x").items():
            if isinstance(value, np.ndarray):
                batched[name] = value[np.newaxis]
                continue
            try:
                batched[name] = np.asarray([value])
            except (ValueError, TypeError):
                raise DtypeError(
                    f"input {name!r} of one stream must be numbers, got a ragged {type(value).__name__}"
                ) from None
        return self.model.check_inputs(batched, "x")

    def _gather_inputs(self, items: list[_Pending]) -> Any:
        return {name: np.concatenate([item.x[name] for item in items]) for name in self.model.input_names}

    def step(self, streams: Any, xs: Any) -> Any:
        """One step for the given streams (ids, distinct) with inputs ``xs`` ({name: (len(ids), *sizes)});
        one run for all of them. Returns the outputs (an array for one output, else a dict)."""
        if isinstance(streams, np.ma.MaskedArray):
            raise InputValueError("stream ids must be integers, got a masked array")
        ids = np.asarray(streams)
        if ids.dtype.kind not in "iu":
            raise InputValueError(f"stream ids must be integers, got {ids.dtype}")
        x = self.model.check_inputs(xs, "xs")
        keys = ids.ravel().tolist()
        if next(iter(x.values())).shape[0] != len(keys):
            raise ShapeError(f"{len(keys)} stream ids but {next(iter(x.values())).shape[0]} inputs")
        if len(set(keys)) != len(keys):
            raise InputValueError("a stream can take one step per call; ids must be distinct")
        with self._lock:
            return self._step_slots([self._slot(key) for key in keys], x)

    def _step_slots(self, slots: list[int], x: Any) -> Any:
        rows = np.array(slots, dtype=np.intp)
        model = self.model
        state = self._batched([np.take(array, rows, axis=0) for array in self._states])
        values = model._run_general({**x, **dict(zip(model.state_names, state))}, len(slots))
        count = len(model.outputs)
        for array, new in zip(self._states, self._rows(tuple(values[count:]))):
            array[rows] = new
        outputs = values[:count]
        return outputs[0] if count == 1 else dict(zip(model.output_names, outputs))

    def _per_stream(self, ys: Any) -> Any:
        if isinstance(ys, dict):  # several outputs: each stream gets a dict of its rows
            return [dict(zip(ys, rows)) for rows in zip(*ys.values())]
        return ys


class GeneralStream(Stream):
    """A `Stream` of a model beyond the classic signature, made by ``Stream(model)``: one stream of
    a `GeneralStreamPool` of its own. ``push`` takes ``{name: value}`` (a token id an int) and
    returns an array for one output, else a dict; the state is one array of each spec's
    non-batch shape."""

    def __init__(self, model: Model, state: Any = None) -> None:
        if getattr(model, "classic", True):
            raise UnsupportedError(
                "a GeneralStream runs a model beyond the classic signature; use runtime.Stream(model)"
            )
        self.model = model
        self._pool = GeneralStreamPool(model, capacity=1)
        self._id = self._pool.open(state)

    def push(self, x: Any) -> Any:
        return self._pool.push(self._id, x)

    def reset(self) -> None:
        self._pool.reset(self._id)

    @property
    def state(self) -> tuple[np.ndarray, ...]:
        return self._pool.state(self._id)

    def save(self) -> bytes:
        return self._pool.save(self._id)

    @classmethod
    def restore(cls, model: Model, data: bytes) -> Stream:
        stream = GeneralStream(model)
        restored = stream._pool.restore(data)
        stream._pool.close(stream._id)
        stream._id = restored
        return stream

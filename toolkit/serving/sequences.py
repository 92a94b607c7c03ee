"""The server-held sequences of `rnn serve`: a request's sequence parameters checked, one live
sequence (`Sequence`: its stream in the model's `runtime.StreamPool`, its lock and version), and the
dynamic batcher (`Batcher`) that runs the steps of different sequences arriving together as one
`StreamPool.step`. Any signature: one input as an array, several as a dict by name."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from runtime.streams import StreamPool

from .metrics import Metrics
from .protocol import BadRequest

MAX_SEQUENCE_ID_CHARS = 256
MAX_SEQUENCE_VERSION = (1 << 63) - 1  # the answer's version (one more) still fits gRPC's int64
GONE_REMEMBERED = 100_000  # ended or expired sequence ids kept to name them in errors


def sequence_key(value: Any) -> int | str | None:
    """A request's ``sequence_id`` parameter checked: an int (1 to 2**64-1) or a non-empty string;
    0, "" and absent mean "no sequence", as in Triton. Ints and strings are different ids."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadRequest(f"parameter 'sequence_id' must be an integer or a string, got {type(value).__name__}")
    if isinstance(value, int):
        if not 0 <= value < 1 << 64:
            raise BadRequest(f"parameter 'sequence_id' must be an unsigned 64-bit integer, got {value}")
        return value or None
    if len(value) > MAX_SEQUENCE_ID_CHARS:
        raise BadRequest(f"parameter 'sequence_id' is longer than {MAX_SEQUENCE_ID_CHARS} characters")
    return value or None


def describe_id(key: int | str) -> str:
    return f"{key}" if isinstance(key, int) else f"{key!r}"


def flag(parameters: dict[str, Any], name: str) -> bool:
    """A boolean request parameter (absent: False)."""
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"parameter '{name}' must be a boolean, got {type(value).__name__}")
    return value


def sequence_version(parameters: dict[str, Any]) -> int | None:
    """A request's ``sequence_version``: how many requests of the sequence the client has had
    answered (None: the client does not track it, and no version is checked)."""
    value = parameters.get("sequence_version")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_SEQUENCE_VERSION:
        raise BadRequest(f"parameter 'sequence_version' must be a non-negative integer, got {value!r:.40}")
    return value


class Sequence:
    """One live sequence: its stream in the pool, when it was last used, its lock (one request of
    a sequence at a time, in arrival order) and version (requests answered since it (re)started
    from its base version). Setting ``last_used`` moves it to the end of its `LiveSequences`."""

    __slots__ = ("key", "stream", "_used", "lock", "closed", "version", "owner")

    def __init__(self, key: int | str, stream: int) -> None:
        self.key, self.stream, self._used = key, stream, time.monotonic()
        self.lock = asyncio.Lock()
        self.closed = False
        self.version = 0
        self.owner: LiveSequences | None = None

    @property
    def last_used(self) -> float:
        return self._used

    @last_used.setter
    def last_used(self, value: float) -> None:
        self._used = value
        owner = self.owner
        if owner is not None and owner.get(self.key) is self:
            owner.move_to_end(self.key)


class LiveSequences(OrderedDict):
    """A model's live sequences by key, least recently used first (a `Sequence` moves to the end
    when its ``last_used`` is set): the idle sweep reads from the front and stops at the first
    one still fresh, instead of scanning every live sequence each period."""

    def __setitem__(self, key: int | str, entry: Sequence) -> None:
        super().__setitem__(key, entry)
        self.move_to_end(key)
        entry.owner = self

    def idle(self, now: float, timeout: float) -> list[Sequence]:
        """The sequences unused for more than ``timeout`` s at ``now``, but none with a request in
        progress; touches only those (and the ones in progress among them) and one fresh one."""
        stale = []
        for entry in self.values():
            if now - entry.last_used <= timeout:
                break
            if not entry.lock.locked():
                stale.append(entry)
        return stale


def _batched(inputs: list[Any]) -> Any:
    """The inputs of several one-stream steps as one batch: arrays concatenated, or per name."""
    if len(inputs) == 1:
        return inputs[0]
    if isinstance(inputs[0], dict):
        return {name: np.concatenate([x[name] for x in inputs]) for name in inputs[0]}
    return np.concatenate(inputs)


def _row(ys: Any, row: int) -> Any:
    if isinstance(ys, dict):
        return {name: y[row : row + 1] for name, y in ys.items()}
    return ys[row : row + 1]


class Batcher:
    """Steps of different sequences that arrive within ``delay`` seconds of the first run as one
    `StreamPool.step` on the event loop (the pool's batched run is bit-identical to stepping
    each stream alone). The caller guarantees one pending step per stream. A step's inputs are
    the model's checked inputs at batch 1 (an array for one input, else a dict by name); its
    answer the outputs at batch 1 (an array for one output, else a dict)."""

    def __init__(self, pool: StreamPool, delay: float, max_batch: int, metrics: Metrics, name: str) -> None:
        self.pool, self.delay, self.max_batch, self.metrics, self.name = pool, delay, max_batch, metrics, name
        self.pending: list[tuple[int, Any, asyncio.Future, float]] = []
        self.scheduled = False

    def submit(self, stream: int, x: Any) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((stream, x, future, time.perf_counter()))
        if len(self.pending) >= self.max_batch:
            self._flush()
        elif not self.scheduled:
            self.scheduled = True
            if self.delay > 0:
                loop.call_later(self.delay, self._flush)
            else:
                loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self.scheduled = False
        while self.pending:
            batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
            live = [item for item in batch if not item[2].done()]  # a cancelled caller is skipped
            if not live:
                continue
            started = time.perf_counter()
            try:
                ids = np.fromiter((item[0] for item in live), dtype=np.int64, count=len(live))
                ys = self.pool.step(ids, _batched([item[1] for item in live]))
            except Exception as error:  # the same error for every step of this run, no state changed
                for item in live:
                    item[2].set_exception(error)
                continue
            finished = time.perf_counter()
            self.metrics.batch(self.name, len(live), finished - started, started - live[0][3])
            for row, item in enumerate(live):
                item[2].set_result(_row(ys, row))

"""The server-held sequences of `rnn serve`: a request's sequence parameters checked
(`sequence_ask`, which also draws the id of a start that names none), one live sequence
(`Sequence`: its stream in the model's `runtime.StreamPool`, its lock and version), where it is
kept (`slot`: its id, or (owner, id) for a sequence bound to a token, `callers`), and the dynamic
batcher (`Batcher`) that runs the steps of different sequences arriving together as one
`StreamPool.step`. Any signature: one input as an array, several as a dict by name."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.streams import StreamPool

from .metrics import Metrics
from .protocol import BadRequest

MAX_SEQUENCE_ID_CHARS = 256
MAX_SEQUENCE_VERSION = (1 << 63) - 1  # the answer's version (one more) still fits gRPC's int64
GONE_REMEMBERED = 100_000  # ended or expired sequence ids kept to name them in errors
ASSIGNED_ID_BYTES = 18  # a server-assigned id: 144 random bits (`secrets`), 24 URL-safe characters
ASSIGN = "assign_sequence_id"  # the parameter that asks for one (tritonclient cannot send a start without an id)

SequenceId = int | str
Slot = int | str | tuple[str, int | str]  # where a sequence is kept: `slot`


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


def describe_id(key: Slot) -> str:
    """A sequence's id as messages name it (of a `slot`: its id alone, never its owner)."""
    if isinstance(key, tuple):
        key = key[1]
    return f"{key}" if isinstance(key, int) else f"{key!r}"


def slot(owner: str, key: SequenceId) -> Slot:
    """Where sequence ``key`` of ``owner`` (an owner tag, `callers`) is kept among a model's
    sequences: its id when it belongs to nobody (one token or none), else (owner, id), so that
    another owner's sequence of the same id is another sequence."""
    return (owner, key) if owner else key


def new_sequence_id() -> str:
    """An id for a sequence the server starts: unguessable (144 bits of `secrets`), a string."""
    return secrets.token_urlsafe(ASSIGNED_ID_BYTES)


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


@dataclass(frozen=True)
class SequenceAsk:
    """A request's sequence parameters, checked: ``key`` (None: a stateless request), ``start``,
    ``end``, ``version``, and whether the server drew the id (``assigned``: a start that named
    none, or with ``assign_sequence_id``; the answer gives it back as ``sequence_id``)."""

    key: SequenceId | None
    start: bool = False
    end: bool = False
    version: int | None = None
    assigned: bool = False

    def answer(self, version: int) -> dict[str, Any]:
        """The parameters an answer of the sequence carries after the request: its version, and
        its id where the server drew it."""
        answer: dict[str, Any] = {"sequence_version": version}
        if self.assigned:
            answer["sequence_id"] = self.key
        return answer


def sequence_ask(parameters: dict[str, Any], client_ids: bool = True) -> SequenceAsk:
    """A request's sequence parameters checked (BadRequest, one line). A start without an id (none,
    0 or "", as Triton means "no sequence"), or with ``assign_sequence_id: true``, gets a new
    unguessable id. ``client_ids`` False (`rnn serve --refuse-client-sequence-ids`): a start that
    names its own id is refused."""
    key = sequence_key(parameters.get("sequence_id"))
    start, end = flag(parameters, "sequence_start"), flag(parameters, "sequence_end")
    version = sequence_version(parameters)
    if flag(parameters, ASSIGN):
        if key is not None:
            raise BadRequest(f"parameter '{ASSIGN}' asks the server for an id: send it without 'sequence_id'")
        start = True
    if key is None:
        if start:
            return SequenceAsk(new_sequence_id(), True, end, version, assigned=True)
        if end or version is not None:
            raise BadRequest("parameters 'sequence_start'/'sequence_end'/'sequence_version' need a 'sequence_id'")
    elif start and not client_ids:
        raise BadRequest(
            "this server assigns sequence ids (--refuse-client-sequence-ids): start a sequence without "
            f"'sequence_id' (or with '{ASSIGN}': true) and send the id its answer gives"
        )
    return SequenceAsk(key, start, end, version)


class Sequence:
    """One live sequence: its stream in the pool, when it was last used, its lock (one request of
    a sequence at a time, in arrival order) and version (requests answered since it (re)started
    from its base version). Setting ``last_used`` moves it to the end of its `LiveSequences`."""

    __slots__ = ("key", "stream", "_used", "lock", "closed", "version", "home")

    def __init__(self, key: Slot, stream: int) -> None:
        self.key, self.stream, self._used = key, stream, time.monotonic()  # key: its `slot`
        self.lock = asyncio.Lock()
        self.closed = False
        self.version = 0
        self.home: LiveSequences | None = None

    @property
    def last_used(self) -> float:
        return self._used

    @last_used.setter
    def last_used(self, value: float) -> None:
        self._used = value
        home = self.home
        if home is not None and home.get(self.key) is self:
            home.move_to_end(self.key)


class LiveSequences(OrderedDict):
    """A model's live sequences by `slot`, least recently used first (a `Sequence` moves to the end
    when its ``last_used`` is set): the idle sweep reads from the front and stops at the first
    one still fresh, instead of scanning every live sequence each period."""

    def __setitem__(self, key: Slot, entry: Sequence) -> None:
        super().__setitem__(key, entry)
        self.move_to_end(key)
        entry.home = self

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
            queued = len(live) * started - sum(item[3] for item in live)  # every step's wait, summed
            self.metrics.batch(self.name, len(live), finished - started, started - live[0][3], queued)
            for row, item in enumerate(live):
                item[2].set_result(_row(ys, row))

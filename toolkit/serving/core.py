"""The protocol-neutral heart of `rnn serve`: which models are served under which names, what
each one takes and returns, the server-held sequences and the dynamic batcher.

The HTTP and gRPC fronts (`http_api`, `grpc_api`) decode a request into a `protocol.InferRequest`
(numpy arrays and Python parameter values), await `Engine.infer`, and encode the
`protocol.InferResponse`; every mistake of the caller is a `protocol.BadRequest` (or `NotFound`)
raised here with one line, so both fronts answer it the same way. Everything runs on one asyncio event loop:
steps of sequences are batched there (one `runtime.StreamPool` run per tick, inline: a tick
of a small model takes microseconds), multi-step requests run in a thread pool.

Names (each a `ServedName`): a folder served as ``NAME`` offers ``NAME`` (one step: x and the
state tensors in, y and the new state out), ``NAME-predict`` (teacher-forced, x (T, batch, input),
or (batch, T, input) for a batch-first model) and ``NAME-generate`` (closed loop, x (batch, input)
and ``steps``). The state inputs are optional
(absent: the manifest's initial state); with a ``sequence_id`` they must be absent, the
server holds the state.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import runtime
from runtime.fused import STEP as STEP_FORM
from runtime.inputs import NONFINITE_HINT
from runtime.manifest import MANIFEST_NAME
from runtime.streams import StreamPool, state_from_bytes

from .metrics import Metrics
from .protocol import (
    DATATYPE_OF,
    PLATFORM,
    VERSION,
    BadRequest,
    Conflict,
    InferRequest,
    InferResponse,
    NotFound,
    ServeError,
    TensorMetadata,
    TooLarge,
    Unavailable,
    callers_error,
    one_line,
    status_of,
)

# The calls a served name makes: the `runtime.Model` method it runs, and the suffix of its name.
STEP, PREDICT, GENERATE = "step", "predict", "generate"
SUFFIXES = {STEP: "", PREDICT: "-predict", GENERATE: "-generate"}
STEPS_INPUT = "steps"  # the generate call's INT64 input: how many closed-loop steps
MAX_SEQUENCE_ID_CHARS = 256
MAX_SEQUENCE_VERSION = (1 << 63) - 1  # the answer's version (one more) still fits gRPC's int64
GONE_REMEMBERED = 100_000  # ended or expired sequence ids kept to name them in errors


# ---- settings -----------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. The fronts enforce the body size; the engine the rest."""

    max_body_bytes: int = 64 << 20
    max_elements: int = 1 << 22  # per tensor
    max_steps: int = 100_000  # T of a predict request, steps of a generate request
    max_sequences: int = 1 << 20  # live sequences per model
    max_connections: int = 4096  # open HTTP connections (beyond: 503) and concurrent gRPC calls


@dataclass(frozen=True)
class Settings:
    limits: Limits = field(default_factory=Limits)
    max_queue_delay_us: int = 0  # how long a step waits for others to share its run
    max_batch: int = 1024  # steps of sequences in one run
    sequence_idle_timeout_s: float = 600.0
    workers: int = 2  # threads for multi-step requests


# ---- sequences ---------------------------------------------------------------------------------


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


def check_model_name(name: str) -> str:
    """A served model's name: letters, digits, '.', '_' and '-' (it appears in URL paths)."""
    if not name or len(name) > 128 or not all(c.isascii() and (c.isalnum() or c in "._-") for c in name):
        raise runtime.InputValueError(f"a model name is 1-128 letters, digits, '.', '_' or '-', got {name!r:.60}")
    if name.startswith("."):
        raise runtime.InputValueError(f"a model name cannot start with '.', got {name!r}")
    return name


def describe_id(key: int | str) -> str:
    return f"{key}" if isinstance(key, int) else f"{key!r}"


def _flag(parameters: dict[str, Any], name: str) -> bool:
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


class _Sequence:
    __slots__ = ("key", "stream", "last_used", "lock", "closed", "version")

    def __init__(self, key: int | str, stream: int) -> None:
        self.key, self.stream, self.last_used = key, stream, time.monotonic()
        self.lock = asyncio.Lock()  # one request of a sequence at a time, in arrival order
        self.closed = False
        self.version = 0  # requests answered since the sequence (re)started from its base version


class _Batcher:
    """Steps of different sequences that arrive within ``delay`` seconds of the first run as one
    `StreamPool.step` on the event loop (the pool's batched run is bit-identical to stepping
    each stream alone). The caller guarantees one pending step per stream."""

    def __init__(self, pool: StreamPool, delay: float, max_batch: int, metrics: Metrics, name: str) -> None:
        self.pool, self.delay, self.max_batch, self.metrics, self.name = pool, delay, max_batch, metrics, name
        self.pending: list[tuple[int, np.ndarray, asyncio.Future, float]] = []
        self.scheduled = False

    def submit(self, stream: int, x: np.ndarray) -> asyncio.Future:
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
                xs = live[0][1] if len(live) == 1 else np.concatenate([item[1] for item in live])
                ys = self.pool.step(ids, xs)
            except Exception as error:  # the same error for every step of this run, no state changed
                for item in live:
                    item[2].set_exception(error)
                continue
            finished = time.perf_counter()
            self.metrics.batch(self.name, len(live), finished - started, started - live[0][3])
            for row, item in enumerate(live):
                item[2].set_result(ys[row : row + 1])


# ---- served models --------------------------------------------------------------------------


class Served:
    """One artifact folder: its loaded model (or why it failed to load), its sequences and batcher."""

    def __init__(self, name: str, folder: Path, model: runtime.Model | None, error: str, settings: Settings) -> None:
        self.name, self.folder, self.model, self.error, self.settings = name, folder, model, error, settings
        self.sequences: dict[int | str, _Sequence] = {}
        self.gone: OrderedDict[int | str, str] = OrderedDict()  # id -> "ended" / "expired ..."
        self.pool: StreamPool | None = None
        self.batcher: _Batcher | None = None

    @property
    def ready(self) -> bool:
        return self.model is not None

    @property
    def names(self) -> tuple[str, ...]:
        forms = [STEP, PREDICT]
        if self.model is None or self.model.feedback is not None:
            forms.append(GENERATE)  # the closed loop feeds y back as x
        return tuple(self.name + SUFFIXES[form] for form in forms)

    def start(self, metrics: Metrics) -> None:
        if self.model is not None and self.pool is None:
            self.pool = StreamPool(self.model, capacity=64)
            delay = self.settings.max_queue_delay_us / 1e6
            self.batcher = _Batcher(self.pool, delay, self.settings.max_batch, metrics, self.name)

    def forget(self, key: int | str, why: str) -> None:
        entry = self.sequences.pop(key, None)
        if entry is not None:
            entry.closed = True
            if self.pool is not None:
                self.pool.close(entry.stream)
        self.gone[key] = why
        self.gone.move_to_end(key)
        while len(self.gone) > GONE_REMEMBERED:
            self.gone.popitem(last=False)

    def open(self, key: int | str, state: Any = None) -> _Sequence:
        if len(self.sequences) >= self.settings.limits.max_sequences:
            raise Unavailable(f"model '{self.name}' holds its maximum of {len(self.sequences)} live sequences")
        assert self.pool is not None
        entry = _Sequence(key, self.pool.open(state))
        self.sequences[key] = entry
        self.gone.pop(key, None)
        return entry


class ServedName:
    """One name the server answers to: a folder's model in one of its calls (``call``: step,
    predict or generate), with the tensors its metadata shows."""

    def __init__(self, served: Served, call: str) -> None:
        self.served, self.call = served, call
        self.name = served.name + SUFFIXES[call]
        model = served.model
        if model is None:
            self.inputs: tuple[TensorMetadata, ...] = ()
            self.outputs: tuple[TensorMetadata, ...] = ()
            return
        x_shape = (-1, -1, model.input_size) if call == PREDICT else (-1, model.input_size)
        y_shape = (-1, model.output_size) if call == STEP else (-1, -1, model.output_size)  # either layout
        inputs = [TensorMetadata(model.input_name, "FP32", x_shape)]
        if call == GENERATE:
            inputs.append(TensorMetadata(STEPS_INPUT, "INT64", (1,)))
        states = zip(model.state_names, model.state_sizes)
        inputs += [TensorMetadata(n, "FP32", (-1, s), optional=True) for n, s in states]
        outputs = [TensorMetadata(model.output_name, "FP32", y_shape)]
        outputs += [TensorMetadata(n, "FP32", (-1, s)) for n, s in zip(model.state_outputs, model.state_sizes)]
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)

    @property
    def ready(self) -> bool:
        return self.served.ready

    def metadata(self) -> dict[str, Any]:
        if not self.ready:
            raise Unavailable(f"model '{self.name}' is not ready: {self.served.error}")
        return {
            "name": self.name,
            "versions": [VERSION],
            "platform": PLATFORM,
            "inputs": [spec.metadata() for spec in self.inputs],
            "outputs": [spec.metadata() for spec in self.outputs],
        }


# ---- the engine ------------------------------------------------------------------------------


def artifact_folders(repository: str | os.PathLike) -> list[tuple[str, Path]]:
    """(name, folder) for every folder directly under ``repository`` that holds a manifest."""
    root = Path(repository)
    if not root.is_dir():
        raise runtime.ArtifactError(f"model repository {root} is not a folder")
    found = [(check_model_name(c.name), c) for c in sorted(root.iterdir()) if (c / MANIFEST_NAME).is_file()]
    if not found:
        raise runtime.ArtifactError(f"model repository {root} holds no artifact folder (none has {MANIFEST_NAME})")
    return found


Loader = Callable[[Path], runtime.Model]


def _default_loader(folder: Path) -> runtime.Model:
    return runtime.load(folder)


def servable(model: runtime.Model) -> runtime.Model:
    """``model``, its sessions created (`_warm_up`), if the server runs its signature:
    UnsupportedError unless it is the classic one (one float32 input and output, states of
    (batch, size), fed back as it is), time- or batch-first."""
    if not model.classic:
        raise runtime.UnsupportedError(
            "rnn serve runs folders of the classic signature (one float32 input x -> one output y); this one has "
            f"inputs {', '.join(model.input_names)} and outputs {', '.join(model.output_names)} (named or token "
            "inputs, several outputs or states of other ranks), which the server does not serve yet"
        )
    _warm_up(model)
    return model


def _warm_up(model: runtime.Model) -> None:
    """Creates the sessions of every form now, not in the first request that needs one."""
    x = np.zeros((2, 1, model.input_size), np.float32)  # 2 steps of batch 1, or batch 2 of 1 step
    for form in model.forms:
        if form == STEP_FORM:
            continue
        if form.startswith("rollout"):
            if model.feedback is not None:
                model.generate(x[0], 2, form=form)
        else:
            model.predict(x, form=form)


class Engine:
    """The served models and their names; `infer` answers one request."""

    def __init__(
        self,
        folders: Iterable[tuple[str, str | os.PathLike]],
        settings: Settings | None = None,
        loader: Loader | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.metrics = metrics or Metrics()
        self.served: dict[str, Served] = {}
        self.names: dict[str, ServedName] = {}
        self._in_flight = 0  # requests in progress (a drain waits for none)
        self._executor = ThreadPoolExecutor(max_workers=self.settings.workers, thread_name_prefix="rnn-serve")
        load = loader or _default_loader
        for name, folder in folders:
            model, error = None, ""
            try:
                model = servable(load(Path(folder)))
            except (runtime.ToolkitError, OSError) as failure:
                model, error = None, one_line(failure)
            self.add(Served(name, Path(folder), model, error, self.settings))

    def add(self, served: Served) -> None:
        """Serves ``served`` under its names; ArtifactError if one is taken."""
        for name in served.names:
            if name in self.names:
                raise runtime.ArtifactError(f"two served models are named '{name}'")
        self.served[served.name] = served
        for call, suffix in SUFFIXES.items():
            if served.name + suffix in served.names:
                self.names[served.name + suffix] = ServedName(served, call)

    # ---- lifecycle (called by the server on its event loop) ----

    def start(self) -> None:
        """Called on the server's event loop before the first request."""
        for served in self.served.values():
            served.start(self.metrics)
            self.metrics.live_sequences(served.name, len(served.sequences))

    async def drained(self, timeout: float) -> bool:
        """Waits until no request is in progress (at most ``timeout`` seconds); whether none is."""
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:  # polled: no event to set per request
            await asyncio.sleep(0.01)
        return not self._in_flight

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    @property
    def ready(self) -> bool:
        """Every model loaded (Triton's strict readiness)."""
        return all(served.ready for served in self.served.values())

    def lookup(self, name: str, version: str = "") -> ServedName:
        named = self.names.get(name)
        if named is None:
            raise NotFound(f"unknown model '{name}'")
        if version not in ("", VERSION):
            raise NotFound(f"model '{name}' has no version '{version}' (it has version {VERSION})")
        return named

    def repository_index(self) -> list[dict[str, str]]:
        index = []
        for name, named in self.names.items():
            entry = {"name": name, "version": VERSION, "state": "READY" if named.ready else "UNAVAILABLE"}
            if not named.ready:
                entry["reason"] = named.served.error
            index.append(entry)
        return index

    def expire_idle(self, now: float | None = None) -> int:
        """Ends the sequences idle for longer than the timeout (never one with a request in progress)."""
        now = time.monotonic() if now is None else now
        timeout = self.settings.sequence_idle_timeout_s
        expired = 0
        for served in self.served.values():
            stale = [e for e in served.sequences.values() if now - e.last_used > timeout and not e.lock.locked()]
            for entry in stale:
                served.forget(entry.key, f"expired after {timeout:g} s idle")
            if stale:
                expired += len(stale)
                self.metrics.expired(served.name, len(stale))
                self.metrics.live_sequences(served.name, len(served.sequences))
        return expired

    # ---- inference ----

    async def infer(self, request: InferRequest, protocol: str, version: str = "") -> InferResponse:
        started = time.perf_counter()
        name = request.model
        self._in_flight += 1
        try:
            named = self.lookup(name, version)
            if not named.ready:
                raise Unavailable(f"model '{name}' is not ready: {named.served.error}")
            outputs, parameters = await self.run_request(named, request)
        except Exception as error:
            status = status_of(error)
            self.metrics.request(name if name in self.names else "", protocol, status, time.perf_counter() - started)
            if isinstance(error, ServeError):
                raise
            if callers_error(error):  # the runtime's hint names options of the library and CLI, not of a server
                raise BadRequest(one_line(error).replace(f"; {NONFINITE_HINT}", "")) from error
            raise
        finally:
            self._in_flight -= 1
        self.metrics.request(name, protocol, 200, time.perf_counter() - started)
        return InferResponse(name, request.id, outputs, parameters)

    async def run_request(self, named: ServedName, request: InferRequest) -> tuple[list[tuple[str, np.ndarray]], dict]:
        """Answers ``request`` of ready ``named`` (`infer` around it looks the name up and counts the
        answer): its outputs and its answer's parameters. `ray_serve.RoutedEngine` runs it on a replica."""
        parameters = request.parameters
        key = sequence_key(parameters.get("sequence_id"))
        start, end = _flag(parameters, "sequence_start"), _flag(parameters, "sequence_end")
        version = sequence_version(parameters)
        if key is None and (start or end or version is not None):
            raise BadRequest("parameters 'sequence_start'/'sequence_end'/'sequence_version' need a 'sequence_id'")
        arrays = self._checked_inputs(named, request.inputs, sequence=key is not None, start=start)
        wanted = self._wanted_outputs(named, request.outputs)
        answer: dict[str, Any] = {}
        if key is None:
            values = await self._run(named, arrays, None)
        else:
            values, answered = await self._run_sequence(named, key, start, end, version, arrays, wanted)
            answer["sequence_version"] = answered
        return [(spec.name, values[spec.name]) for spec in named.outputs if spec.name in wanted], answer

    def _checked_inputs(
        self, named: ServedName, inputs: dict[str, np.ndarray], sequence: bool, start: bool = False
    ) -> dict:
        """The request's inputs checked against ``named``'s tensors and the limits: ``x``, ``state``
        (None: the initial one, or the sequence's) and, for generate, ``steps``."""
        model = named.served.model
        assert model is not None
        if sequence and named.call == STEP and len(inputs) == 1:
            x = inputs.get(model.input_name)  # the hot path: one step of a sequence, x (1, input_size) FP32
            if x is not None and x.dtype == np.float32 and x.shape == (1, model.input_size):
                return {"x": x, "state": None}  # values are checked by model.check_x before the run
        self._check_tensors(named, inputs, sequence, start)
        x = inputs[model.input_name]
        batch_first = model.layout == "batch_first"
        batch = x.shape[1] if named.call == PREDICT and not batch_first else x.shape[0]
        limits = self.settings.limits
        if named.call == PREDICT and x.shape[1 if batch_first else 0] > limits.max_steps:
            steps = x.shape[1 if batch_first else 0]
            raise TooLarge(f"input '{model.input_name}' has {steps} steps, the limit is {limits.max_steps}")
        if sequence and batch != 1:
            raise BadRequest(f"a request of a sequence steps one stream: input '{model.input_name}' batch must be 1")
        states = [inputs.get(n) for n in model.state_names]
        for state_name, state in zip(model.state_names, states):
            if state is not None and state.shape[0] != batch:
                raise BadRequest(f"input '{state_name}' has batch {state.shape[0]}, input '{model.input_name}' {batch}")
        if any(s is not None for s in states) and any(s is None for s in states):
            raise BadRequest(f"send every state input ({', '.join(model.state_names)}) or none")
        checked = {"x": x, "state": tuple(states) if states and states[0] is not None else None}
        steps = 1
        if named.call == GENERATE:
            steps = checked["steps"] = int(inputs[STEPS_INPUT][0])
            if not 1 <= steps <= limits.max_steps:
                raise BadRequest(f"input '{STEPS_INPUT}' must be 1 to {limits.max_steps}, got {steps}")
        elif named.call == PREDICT:
            steps = x.shape[1 if batch_first else 0]
        answer = 4 * batch * (steps * model.output_size + sum(model.state_sizes))
        if answer > limits.max_body_bytes:  # refused before anything runs or any state changes
            raise TooLarge(f"the answer would hold {answer} bytes of outputs, the limit is {limits.max_body_bytes}")
        return checked

    def _check_tensors(self, named: ServedName, inputs: dict[str, np.ndarray], sequence: bool, start: bool) -> None:
        """Each input one of ``named``'s, of its datatype, shape and size; every required one given;
        a sequence's state inputs only on its start."""
        specs = {spec.name: spec for spec in named.inputs}
        limits = self.settings.limits
        for name, array in inputs.items():
            spec = specs.get(name)
            if spec is None:
                raise BadRequest(f"model '{named.name}' has no input '{name}' (inputs: {', '.join(specs)})")
            if sequence and spec.optional and not start:
                raise BadRequest(
                    f"input '{name}' is held by the server for a sequence (a sequence_start request may "
                    f"set it); send only {', '.join(s.name for s in named.inputs if not s.optional)}"
                )
            datatype = DATATYPE_OF.get(array.dtype)
            if datatype != spec.datatype:
                raise BadRequest(f"input '{name}' must be {spec.datatype}, got {datatype or array.dtype}")
            if array.ndim != len(spec.shape) or any(d not in (-1, n) for d, n in zip(spec.shape, array.shape)):
                wanted = "[" + ", ".join(str(d) for d in spec.shape) + "]"
                raise BadRequest(f"input '{name}' must have shape {wanted} (-1: any), got {list(array.shape)}")
            if array.size > limits.max_elements:
                raise TooLarge(f"input '{name}' has {array.size} elements, the limit is {limits.max_elements}")
        missing = [spec.name for spec in named.inputs if not spec.optional and spec.name not in inputs]
        if missing:
            raise BadRequest(f"model '{named.name}' needs input {', '.join(repr(m) for m in missing)}")

    @staticmethod
    def _wanted_outputs(named: ServedName, requested: list[str] | None) -> set[str]:
        names = [spec.name for spec in named.outputs]
        if requested is None:
            return set(names)
        unknown = [name for name in requested if name not in names]
        if unknown:
            raise BadRequest(f"model '{named.name}' has no output '{unknown[0]}' (outputs: {', '.join(names)})")
        if len(set(requested)) != len(requested):
            raise BadRequest("an output is requested twice")
        return set(requested)

    def _values(self, named: ServedName, y: np.ndarray, state: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        model = named.served.model
        assert model is not None
        return {model.output_name: y, **dict(zip(model.state_outputs, state))}

    def _compute(self, named: ServedName, arrays: dict, state: Any) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        model = named.served.model
        assert model is not None
        if named.call == STEP:
            return model.step(arrays["x"], state)
        if named.call == PREDICT:
            return model.predict(arrays["x"], state)
        return model.generate(arrays["x"], arrays["steps"], state)

    async def _run(self, named: ServedName, arrays: dict, state: Any) -> dict[str, np.ndarray]:
        """A stateless request: a small step inline, anything longer in the thread pool."""
        state = arrays["state"] if state is None else state
        started = time.perf_counter()
        if named.call == STEP and arrays["x"].shape[0] <= 256:
            y, new_state = self._compute(named, arrays, state)
        else:
            loop = asyncio.get_running_loop()
            y, new_state = await loop.run_in_executor(self._executor, self._compute, named, arrays, state)
        self.metrics.compute(named.served.name, time.perf_counter() - started)
        return self._values(named, y, new_state)

    async def _run_sequence(
        self,
        named: ServedName,
        key: int | str,
        start: bool,
        end: bool,
        version: int | None,
        arrays: dict,
        wanted: set[str],
    ) -> tuple[dict[str, np.ndarray], int]:
        """A request of sequence ``key``; its values and the sequence's version after it. Nothing
        of the sequence changes unless the request succeeds: its new state is committed after the
        run, a failed first request of a new id leaves no sequence behind, and a failed start of a
        live id leaves it as it was. A start may carry the state to begin from (state inputs) and
        the version it had (``sequence_version``); any other request with ``sequence_version``
        runs only when this server holds exactly that version of the sequence (else Conflict)."""
        served = named.served
        given = arrays["state"]
        initial = None if given is None else tuple(s[0] for s in given)
        while True:
            entry = served.sequences.get(key)
            created = entry is None
            if created:
                if not start:
                    gone = served.gone.get(key)
                    why = f"it {gone}" if gone else "it was never started (send sequence_start first)"
                    if version is not None and not (gone or "").startswith("ended"):
                        raise Conflict(
                            f"this server holds no state of sequence {describe_id(key)} of model "
                            f"'{served.name}' ({why}); resend the last acknowledged state with sequence_start"
                        )
                    raise BadRequest(f"model '{served.name}' has no live sequence {describe_id(key)}: {why}")
                entry = served.open(key, initial)
                self.metrics.live_sequences(served.name, len(served.sequences))
            async with entry.lock:
                if entry.closed:
                    if start:
                        continue  # it ended (or expired) while this start waited: begin it anew
                    raise BadRequest(
                        f"sequence {describe_id(key)} of model '{served.name}' ended while this request waited"
                    )
                if not start and version is not None and version != entry.version:
                    raise Conflict(
                        f"sequence {describe_id(key)} of model '{served.name}' is at version {entry.version} "
                        f"here, the request expects {version}; resend the last acknowledged state with sequence_start"
                    )
                base = (version or 0) if start else entry.version
                try:
                    values = await self._sequence_request(named, entry, start and not created, initial, arrays, wanted)
                except BaseException:
                    if created and not entry.closed:
                        served.forget(key, "was never started: its start request failed")
                        self.metrics.live_sequences(served.name, len(served.sequences))
                    raise
                entry.last_used = time.monotonic()
                entry.version = base + 1
                if end:
                    served.forget(key, "ended (its last request had sequence_end)")
                    self.metrics.live_sequences(served.name, len(served.sequences))
                return values, entry.version

    async def _sequence_request(
        self,
        named: ServedName,
        entry: _Sequence,
        restart: bool,
        initial: tuple[np.ndarray, ...] | None,
        arrays: dict,
        wanted: set[str],
    ) -> dict[str, np.ndarray]:
        """Runs one request of a sequence from its state (on a ``restart`` of a live id: from
        ``initial``, or the model's initial state, as Triton begins it again) and commits the new
        state only when the run succeeded. The caller holds the sequence's lock."""
        served = named.served
        pool, model, batcher = served.pool, served.model, served.batcher
        assert pool is not None and model is not None and batcher is not None
        entry.last_used = time.monotonic()
        if named.call == STEP:
            x = model.check_x(arrays["x"])  # refused here, before anything is queued or changed
            stream = pool.open(initial) if restart else entry.stream  # a restart runs on a fresh stream
            try:
                y = await batcher.submit(stream, x)
            except BaseException:
                if restart:
                    pool.close(stream)
                raise
            if restart:
                pool.close(entry.stream)
                entry.stream = stream
            state = pool.state(stream) if wanted - {model.output_name} else ()
            return self._values(named, y, tuple(s.reshape(1, -1) for s in state))
        if restart:
            state = model.initial_state(1) if initial is None else tuple(s.reshape(1, -1) for s in initial)
        else:
            state = tuple(s.reshape(1, -1) for s in pool.state(entry.stream))
        values = await self._run(named, arrays, state)
        # commit: a fresh stream of the pool holds the new state, the old one is closed
        new_stream = pool.open(tuple(values[n][0] for n in model.state_outputs))
        pool.close(entry.stream)
        entry.stream = new_stream
        return values

    # ---- saving and restoring sequences ----

    def saved_sequences(self) -> dict[str, list[tuple[int | str, bytes, int]]]:
        """Every live sequence's id, state bytes and version, by folder name (call with no
        request in progress)."""
        saved = {}
        for served in self.served.values():
            if served.pool is not None and served.sequences:
                saved[served.name] = [
                    (key, served.pool.save(e.stream), e.version) for key, e in served.sequences.items()
                ]
        return saved

    def restore_sequence(self, name: str, key: int | str, data: bytes, version: int = 0) -> None:
        """Opens sequence ``key`` of folder ``name`` from state bytes at ``version``; ToolkitError
        if they do not fit."""
        served = self.served.get(name)
        if served is None or served.model is None or served.pool is None:
            raise runtime.ArtifactError(f"no ready model '{name}' to restore sequences into")
        state = state_from_bytes(served.model, data)
        if key in served.sequences:
            served.forget(key, "replaced")
        served.open(key, state).version = version
        self.metrics.live_sequences(served.name, len(served.sequences))

"""The protocol-neutral heart of `rnn serve`: which models are served under which names, what
each one takes and returns, and the work of a request (stateless or of a server-held sequence).

The HTTP and gRPC fronts (`http_api`, `grpc_api`) decode a request into a `protocol.InferRequest`
(numpy arrays and Python parameter values), await `Engine.infer`, and encode the
`protocol.InferResponse`; every mistake of the caller is a `protocol.BadRequest` (or `NotFound`)
raised here with one line, so both fronts answer it the same way. Everything runs on one asyncio
event loop: steps of sequences are batched there (`sequences.Batcher`: one `runtime.StreamPool` run
per tick, inline: a tick of a small model takes microseconds), multi-step requests run in a thread
pool.

Every signature is served (`tensors` says what each name takes and returns). A folder served as
``NAME`` offers ``NAME`` (one step: the model's inputs by their manifest names, token ids INT64,
values FP32, and the optional state tensors in; every output and the new states out),
``NAME-predict`` (teacher-forced sequences, (T, batch, ...) or (batch, T, ...) for a batch-first
model; the runtime picks the fused form) and ``NAME-generate`` (the closed loop: the first step's
inputs and ``steps``; inputs other than the fed-back one are held). The state inputs are optional
(absent: the manifest's initial state); with a ``sequence_id`` the server holds the state and they
may only come with ``sequence_start``.

**The plug-in place.** A call this module does not run itself is served by a `CallHandler`
registered with `plug` under its call name: today the sampled ``NAME-generate`` of a model whose
feedback samples its next token (``toolkit.serving.generate_calls`` registers it with
``plug(GENERATE, handler)`` when imported, as the package does). The handler says which models it serves
(``serves``), their tensors (``tensors``) and answers a request (``run``, with the engine's
sequences and pools at hand). Until a handler for it is registered, such a model offers ``NAME``
and ``NAME-predict`` and no ``NAME-generate``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

import runtime
from runtime.inputs import retell_nonfinite
from runtime.manifest import MANIFEST_NAME
from runtime.streams import StreamPool, state_from_bytes

from .callers import CALLER
from .metrics import Metrics
from .protocol import (
    PLATFORM,
    VERSION,
    BadRequest,
    Conflict,
    InferRequest,
    InferResponse,
    NotFound,
    ServeError,
    TensorMetadata,
    Unavailable,
    callers_error,
    one_line,
    status_of,
)
from .sequences import (
    GONE_REMEMBERED,
    MAX_SEQUENCE_ID_CHARS,
    MAX_SEQUENCE_VERSION,
    Batcher,
    LiveSequences,
    Sequence,
    Slot,
    describe_id,
    sequence_ask,
    sequence_key,
    sequence_version,
    slot,
)
from .statistics import batch_items
from .tensors import (
    GENERATE,
    PREDICT,
    STEP,
    STEPS_INPUT,
    SUFFIXES,
    call_tensors,
    check_tensors,
    checked_inputs,
    generates,
    model_parameters,
    warm_up,
)

__all__ = [  # with the names of `sequences` and `tensors` that callers import from here
    "GENERATE",
    "MAX_SEQUENCE_ID_CHARS",
    "MAX_SEQUENCE_VERSION",
    "PREDICT",
    "STEP",
    "STEPS_INPUT",
    "SUFFIXES",
    "Answer",
    "CallHandler",
    "Engine",
    "Limits",
    "Served",
    "ServedName",
    "Settings",
    "artifact_folders",
    "check_model_name",
    "describe_id",
    "plug",
    "sequence_key",
    "sequence_version",
]


# ---- settings -----------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. The fronts enforce the body size; the engine the rest."""

    max_body_bytes: int = 64 << 20
    max_elements: int = 1 << 22  # per tensor
    max_steps: int = 100_000  # T of a predict request, steps of a generate request
    max_sequences: int = 1 << 20  # live sequences per model
    max_connections: int = 4096  # HTTP requests in progress (beyond: 503) and concurrent gRPC calls


@dataclass(frozen=True)
class Settings:
    limits: Limits = field(default_factory=Limits)
    max_queue_delay_us: int = 0  # how long a step waits for others to share its run
    max_batch: int = 1024  # steps of sequences in one run
    sequence_idle_timeout_s: float = 600.0
    workers: int = 2  # threads for multi-step requests
    client_sequence_ids: bool = True  # False: a start may not name its id (the server draws every id)


def check_model_name(name: str) -> str:
    """A served model's name: letters, digits, '.', '_' and '-' (it appears in URL paths)."""
    if not name or len(name) > 128 or not all(c.isascii() and (c.isalnum() or c in "._-") for c in name):
        raise runtime.InputValueError(f"a model name is 1-128 letters, digits, '.', '_' or '-', got {name!r:.60}")
    if name.startswith("."):
        raise runtime.InputValueError(f"a model name cannot start with '.', got {name!r}")
    return name


# ---- the plug-in place: calls another module serves ----------------------------------------------

Answer = tuple[list[tuple[str, np.ndarray]], dict[str, Any]]  # a request's outputs and answer parameters


class CallHandler(Protocol):
    """A call served by another module (registered with `plug`): sampled NAME-generate."""

    def serves(self, model: runtime.Model) -> bool:
        """Whether it serves this call of ``model`` (the engine serves the call itself where it can)."""
        ...

    def tensors(self, model: runtime.Model) -> tuple[tuple[TensorMetadata, ...], tuple[TensorMetadata, ...]]:
        """(inputs, outputs) of the call for ``model``, as its metadata shows them."""
        ...

    async def run(self, engine: Engine, named: ServedName, request: InferRequest) -> Answer:
        """Answers ``request`` of ready ``named`` (`Engine.infer` around it counts the answer)."""
        ...

    def close(self, served: Served) -> None:
        """Stops what it runs for ``served`` (`Engine.close`): calls in progress end with Unavailable."""
        ...


CALL_HANDLERS: dict[str, CallHandler] = {}


def plug(call: str, handler: CallHandler) -> None:
    """Registers ``handler`` for ``call`` (GENERATE): engines made after this serve it for the
    models it ``serves`` whose call this module does not run itself."""
    if call not in SUFFIXES:
        raise ValueError(f"unknown call {call!r}; calls: {list(SUFFIXES)}")
    CALL_HANDLERS[call] = handler


# ---- served models --------------------------------------------------------------------------


class Served:
    """One artifact folder: its loaded model (or why it failed to load), its sequences and batcher."""

    def __init__(self, name: str, folder: Path, model: runtime.Model | None, error: str, settings: Settings) -> None:
        self.name, self.folder, self.model, self.error, self.settings = name, folder, model, error, settings
        self.sequences = LiveSequences()  # slot -> Sequence, least recently used first
        self.gone: OrderedDict[Slot, str] = OrderedDict()  # slot -> "ended" / "expired ..."
        self.pool: StreamPool | None = None
        self.batcher: Batcher | None = None

    @property
    def ready(self) -> bool:
        return self.model is not None

    def handler(self, call: str) -> CallHandler | None:
        """The plugged-in handler that serves ``call`` of this model (None: the engine serves it,
        or nobody does)."""
        model, handler = self.model, CALL_HANDLERS.get(call)
        if call != GENERATE or model is None or handler is None or generates(model):
            return None
        return handler if handler.serves(model) else None

    @property
    def names(self) -> tuple[str, ...]:
        calls = [STEP, PREDICT]
        if self.model is None or generates(self.model) or self.handler(GENERATE) is not None:
            calls.append(GENERATE)  # the closed loop: identity feedback here, sampled by the plug-in
        return tuple(self.name + SUFFIXES[call] for call in calls)

    def start(self, metrics: Metrics) -> None:
        if self.model is not None and self.pool is None:
            self.pool = StreamPool(self.model, capacity=64)
            delay = self.settings.max_queue_delay_us / 1e6
            self.batcher = Batcher(self.pool, delay, self.settings.max_batch, metrics, self.name)

    def forget(self, key: Slot, why: str) -> None:
        entry = self.sequences.pop(key, None)
        if entry is not None:
            entry.closed = True
            if self.pool is not None:
                self.pool.close(entry.stream)
        self.gone[key] = why
        self.gone.move_to_end(key)
        while len(self.gone) > GONE_REMEMBERED:
            self.gone.popitem(last=False)

    def open(self, key: Slot, state: Any = None) -> Sequence:
        """Opens the sequence kept at ``key`` (its `sequences.slot`) from ``state`` (None: the initial
        state; else one array per state tensor, its non-batch shape or the model's layout at batch 1)."""
        if len(self.sequences) >= self.settings.limits.max_sequences:
            raise Unavailable(f"model '{self.name}' holds its maximum of {len(self.sequences)} live sequences")
        assert self.pool is not None
        entry = Sequence(key, self.pool.open(state))
        self.sequences[key] = entry
        self.gone.pop(key, None)
        return entry

    def held_state(self, entry: Sequence) -> tuple[np.ndarray, ...]:
        """A copy of sequence ``entry``'s state in the model's layout at batch 1 (each state's batch
        axis where the manifest puts it)."""
        assert self.pool is not None and self.model is not None
        rows = self.pool.state(entry.stream)
        # reshape, not np.expand_dims: this runs on every step of every sequence (3x cheaper)
        return tuple(
            row.reshape(row.shape[: spec.batch_axis] + (1,) + row.shape[spec.batch_axis :])
            for row, spec in zip(rows, self.model.states)
        )


class ServedName:
    """One name the server answers to: a folder's model in one of its calls (``call``: step,
    predict or generate), with the tensors its metadata shows; ``handler`` is the plugged-in
    `CallHandler` that serves it (None: the engine)."""

    def __init__(self, served: Served, call: str) -> None:
        self.served, self.call = served, call
        self.name = served.name + SUFFIXES[call]
        self.handler = served.handler(call)
        self.inputs: tuple[TensorMetadata, ...] = ()
        self.outputs: tuple[TensorMetadata, ...] = ()
        self.parameters: dict[str, str] = {}
        model = served.model
        if model is not None:
            tensors = self.handler.tensors(model) if self.handler is not None else call_tensors(model, call)
            self.inputs, self.outputs = tensors
            self.parameters = model_parameters(model)
        self.by_name = {spec.name: spec for spec in self.inputs}

    @property
    def ready(self) -> bool:
        return self.served.ready

    def metadata(self) -> dict[str, Any]:
        """The protocol's model metadata; a model beyond the classic signature adds its
        ``parameters`` (`tensors.model_parameters`: vocabulary sizes, layout, the states' batch axes)."""
        if not self.ready:
            raise Unavailable(f"model '{self.name}' is not ready: {self.served.error}")
        metadata: dict[str, Any] = {
            "name": self.name,
            "versions": [VERSION],
            "platform": PLATFORM,
            "inputs": [spec.metadata() for spec in self.inputs],
            "outputs": [spec.metadata() for spec in self.outputs],
        }
        model = self.served.model
        if model is not None and not model.classic:
            metadata["parameters"] = dict(self.parameters)
        return metadata


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
    """``model`` with the sessions of every form created (`tensors.warm_up`): every signature is served."""
    warm_up(model)
    return model


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
        """Stops the plugged-in calls' work (running generations end with Unavailable) and the workers."""
        for served in self.served.values():
            for handler in CALL_HANDLERS.values():
                handler.close(served)
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
            stale = served.sequences.idle(now, timeout)  # from the least recently used: only the expired read
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
                raise BadRequest(retell_nonfinite(one_line(error))) from error
            raise
        finally:
            self._in_flight -= 1
        self.metrics.request(name, protocol, 200, time.perf_counter() - started, batch_items(named, request.inputs))
        return InferResponse(name, request.id, outputs, parameters)

    async def run_request(self, named: ServedName, request: InferRequest) -> Answer:
        """Answers ``request`` of ready ``named`` (`infer` around it looks the name up and counts the
        answer): its outputs and its answer's parameters. `ray_serve.RoutedEngine` runs it on a
        replica; a plugged-in call's handler answers its own requests."""
        if named.handler is not None:
            return await named.handler.run(self, named, request)
        ask = sequence_ask(request.parameters, self.settings.client_sequence_ids)
        key, start = ask.key, ask.start
        arrays = self._checked_inputs(named, request.inputs, sequence=key is not None, start=start)
        wanted = self.wanted_outputs(named, request.outputs)
        answer: dict[str, Any] = {}
        if key is None:
            values = await self._run(named, arrays, None)
        else:
            values, answered = await self.run_sequence(named, key, start, ask.end, ask.version, arrays, wanted)
            answer = ask.answer(answered)
        return [(spec.name, values[spec.name]) for spec in named.outputs if spec.name in wanted], answer

    def _checked_inputs(
        self, named: ServedName, inputs: dict[str, np.ndarray], sequence: bool, start: bool = False
    ) -> dict:
        """The request's inputs checked against ``named``'s tensors and the limits
        (`tensors.checked_inputs`): ``x``, ``state`` (None: the initial one, or the sequence's),
        ``batch`` and, for generate, ``steps``."""
        model = named.served.model
        assert model is not None
        if sequence and named.call == STEP and len(inputs) == 1:
            x = inputs.get(model.input_name)  # the hot path: one step of a sequence of a one-input model
            if x is not None and x.dtype == np.float32 and x.shape == (1, model.input_size) and model.classic:
                return {"x": x, "state": None, "batch": 1}  # values are checked by model.check_x before the run
        limits = self.settings.limits
        check_tensors(named.by_name, named.name, inputs, sequence and not start, limits.max_elements)
        return checked_inputs(model, named.call, inputs, sequence, limits)

    @staticmethod
    def wanted_outputs(named: ServedName, requested: list[str] | None) -> set[str]:
        """The outputs an answer carries: those ``requested`` (None: every one), each known and once."""
        names = [spec.name for spec in named.outputs]
        if requested is None:
            return set(names)
        unknown = [name for name in requested if name not in names]
        if unknown:
            raise BadRequest(f"model '{named.name}' has no output '{unknown[0]}' (outputs: {', '.join(names)})")
        if len(set(requested)) != len(requested):
            raise BadRequest("an output is requested twice")
        return set(requested)

    @staticmethod
    def _values(named: ServedName, ys: Any, state: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        """The outputs by name: ``ys`` (an array for one output, else a dict) and the new state."""
        model = named.served.model
        assert model is not None
        values = dict(ys) if isinstance(ys, dict) else {model.output_name: ys}
        values.update(zip(model.state_outputs, state))
        return values

    def _compute(self, named: ServedName, arrays: dict, state: Any) -> tuple[Any, tuple[np.ndarray, ...]]:
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
        if named.call == STEP and arrays["batch"] <= 256:
            ys, new_state = self._compute(named, arrays, state)
        else:
            loop = asyncio.get_running_loop()
            ys, new_state = await loop.run_in_executor(self._executor, self._compute, named, arrays, state)
        self.metrics.compute(named.name, time.perf_counter() - started, arrays["batch"])
        return self._values(named, ys, new_state)

    async def run_sequence(
        self,
        named: ServedName,
        key: int | str,
        start: bool,
        end: bool,
        version: int | None,
        arrays: dict,
        wanted: set[str],
        run: Callable[..., Awaitable[dict[str, np.ndarray]]] | None = None,
    ) -> tuple[dict[str, np.ndarray], int]:
        """A request of sequence ``key`` (run by ``run``, default `_sequence_request`: a plugged-in
        call passes its own); its values and the sequence's version after it. Nothing
        of the sequence changes unless the request succeeds: its new state is committed after the
        run, a failed first request of a new id leaves no sequence behind, and a failed start of a
        live id leaves it as it was. A start may carry the state to begin from (state inputs) and
        the version it had (``sequence_version``); any other request with ``sequence_version``
        runs only when this server holds exactly that version of the sequence (else Conflict).
        The sequence is the caller's (`callers.CALLER`): another token's of the same id is
        another sequence, so a request never reaches, nor learns of, one it did not start."""
        served = named.served
        initial = arrays["state"]  # each at batch 1, in the model's layout
        kept = slot(CALLER.get(), key)
        while True:
            entry = served.sequences.get(kept)
            created = entry is None
            if created:
                if not start:
                    gone = served.gone.get(kept)
                    why = f"it {gone}" if gone else "it was never started (send sequence_start first)"
                    if version is not None and not (gone or "").startswith("ended"):
                        raise Conflict(
                            f"this server holds no state of sequence {describe_id(key)} of model "
                            f"'{served.name}' ({why}); resend the last acknowledged state with sequence_start"
                        )
                    raise BadRequest(f"model '{served.name}' has no live sequence {describe_id(key)}: {why}")
                entry = served.open(kept, initial)
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
                    request = run or self._sequence_request
                    values = await request(named, entry, start and not created, initial, arrays, wanted)
                except BaseException:
                    if created and not entry.closed:
                        served.forget(kept, "was never started: its start request failed")
                        self.metrics.live_sequences(served.name, len(served.sequences))
                    raise
                entry.last_used = time.monotonic()
                entry.version = base + 1
                if end:
                    served.forget(kept, "ended (its last request had sequence_end)")
                    self.metrics.live_sequences(served.name, len(served.sequences))
                return values, entry.version

    async def _sequence_request(
        self,
        named: ServedName,
        entry: Sequence,
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
            x = arrays["x"]  # checked here, before anything is queued or changed
            x = model.check_inputs(x) if isinstance(x, dict) else model.check_x(x)
            stream = pool.open(initial) if restart else entry.stream  # a restart runs on a fresh stream
            try:
                ys = await batcher.submit(stream, x)
            except BaseException:
                if restart:
                    pool.close(stream)
                raise
            if restart:
                pool.close(entry.stream)
                entry.stream = stream
            held = served.held_state(entry) if wanted.difference(model.output_names) else ()
            return self._values(named, ys, held)
        if restart:
            state = model.initial_state(1) if initial is None else initial
        else:
            state = served.held_state(entry)
        values = await self._run(named, arrays, state)
        # commit: a fresh stream of the pool holds the new state, the old one is closed
        new_stream = pool.open(tuple(values[n] for n in model.state_outputs))
        pool.close(entry.stream)
        entry.stream = new_stream
        return values

    # ---- saving and restoring sequences ----

    def saved_sequences(self) -> dict[str, list[tuple[Slot, bytes, int]]]:
        """Every live sequence's `sequences.slot` (its id, or its owner and id), state bytes and
        version, by folder name (call with no request in progress)."""
        saved = {}
        for served in self.served.values():
            if served.pool is not None and served.sequences:
                saved[served.name] = [
                    (key, served.pool.save(e.stream), e.version) for key, e in served.sequences.items()
                ]
        return saved

    def restore_sequence(self, name: str, key: Slot, data: bytes, version: int = 0) -> None:
        """Opens the sequence kept at ``key`` (as `saved_sequences` gives it) of folder ``name``
        from state bytes at ``version``; ToolkitError if they do not fit."""
        served = self.served.get(name)
        if served is None or served.model is None or served.pool is None:
            raise runtime.ArtifactError(f"no ready model '{name}' to restore sequences into")
        state = state_from_bytes(served.model, data)
        if key in served.sequences:
            served.forget(key, "replaced")
        served.open(key, state).version = version
        self.metrics.live_sequences(served.name, len(served.sequences))

"""`rnn serve --ray`: the Open Inference Protocol server of `toolkit.serving` on Ray Serve, with
N stepping replicas, sequence affinity and sequences that survive a replica's death.

Two deployments make the application:

- ``Front`` (the ingress): Ray's HTTP proxy hands it every request; it runs this package's
  HTTP app (`create_app`) over a `RoutedEngine`, which decodes and checks a request as the
  one-process server does, then passes it to a ``Stepper`` replica through a deployment handle.
  A request of a sequence goes with ``session_id = <folder>/<sequence id>``, so the
  `SequenceRouter` (rendezvous hashing over the replicas' ids: every router, in every process,
  picks the same replica for the same sequence and replica set) keeps it on one replica;
  a stateless request goes to the less loaded of two random replicas. When the replica
  running a request dies, the Front answers 503 (retryable) instead of Ray's 500.
- ``Stepper`` (N replicas, or autoscaled): an `Engine` over the folders, with its own
  sequences and dynamic batching, answering `infer` calls.

Why state survives a replica's death: the client holds it. Every answer of a sequence carries
the new state (the model's state outputs) and ``sequence_version`` (requests answered); every
request sends ``sequence_version``, and a replica runs it only when it holds exactly that
version of the sequence (else 409 Conflict). After a 409 or a 503 the client resends its request
with ``sequence_start`` and its last acknowledged state and version (`SequenceClient` in
`toolkit.serving.client` does this): wherever the sequence lands, it goes on from the last
state the client saw, and a replica's stale or lost copy is never used. The cost: the state
travels back on every answer (4 bytes per state value), one extra request per sequence after
a failover; no shared store, no extra round trip per step. NOTES.md has the reasoning.

Any signature the engine serves is served so (named INT64 and FP32 inputs, states of any rank and
number: the client resends whatever state tensors the model has). Sampled ``NAME-generate``: its
infer route runs on the replicas (with a ``sequence_id`` on the sequence's replica, going on from
its state); Triton's generate extension and gRPC streaming run in the front, on its copy of the
model, and take stateless generations only (`RoutedEngine.run_sequence`). A sampled generation in
a sequence is not failed over: its answer carries the tokens and ``sequence_version``, not the
state, so a client has nothing to resend; when its replica dies the sequence is lost (503, then
409 for the next request with ``sequence_version``) and the client starts it again from its
beginning (its prompt and the tokens it got, with ``sequence_start``).

Every folder's files travel to the replicas as bytes (no shared filesystem needed on a
cluster) and are loaded there pinned to the manifest digest the driver checked (and, with
``public_key``, verified), so every replica runs exactly the bytes the caller pinned.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import os
import random
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError, RayError, RayTaskError
from ray.serve.config import AutoscalingConfig, RequestRouterConfig
from ray.serve.exceptions import BackPressureError
from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

import runtime
from runtime.manifest import MANIFEST_NAME

from ..ray_cluster import connect
from . import generate_calls  # noqa: F401  (plugs sampled NAME-generate into every engine: fronts and replicas)
from .callers import CALLER
from .core import (
    Engine,
    ServedName,
    Settings,
)
from .http_api import create_app
from .protocol import BadRequest, InferRequest, InferResponse, ServeError, Unavailable, one_line
from .sequences import ASSIGN, sequence_ask

log = logging.getLogger("rnn.serve")

APP_NAME = "rnn"
STEPPER = "Stepper"
FRONT = "Front"
MAX_FOLDER_BYTES = 256 << 20  # what one folder may ship to every replica
EXPIRY_PERIOD_S = 5.0
REPLICA_PROTOCOL = "ray"  # the protocol label of a replica's request metrics
SCRATCH_PREFIX = "rnn-serve-"  # + pid: the unpacked folders of a process
CALLS_PER_REPLICA = 2  # calls in flight from one front to one replica; later requests wait for the next

# ---- routing ----------------------------------------------------------------------------------


def rendezvous_order(key: str, replica_ids: Iterable[str]) -> list[str]:
    """``replica_ids`` ranked for ``key`` by rendezvous (highest random weight) hashing: the
    same order in every process; adding or removing a replica moves only the keys that rank
    it first."""

    return sorted(replica_ids, key=lambda replica: _weight(key, replica), reverse=True)


def rendezvous_first(key: str, replica_ids: Iterable[str]) -> str:
    """The first of `rendezvous_order` (one pass, no sort: the per-request choice)."""
    return max(replica_ids, key=lambda replica: _weight(key, replica))


def _weight(key: str, replica: str) -> bytes:
    return hashlib.blake2b(f"{key}\0{replica}".encode(), digest_size=8).digest()


REPLICA_SESSION = "replica:"  # a session id naming the replica to route to: "replica:<unique id>"

# The replicas each router of this process sees, by (application, deployment): what a
# `RoutedEngine` groups its requests by (one call per replica and tick).
_VIEWS: dict[tuple[str, str], tuple[str, ...]] = {}


def replica_view(app_name: str, deployment: str = STEPPER) -> tuple[str, ...]:
    """The unique ids of the replicas this process's router of the deployment sees (sorted)."""
    return _VIEWS.get((app_name, deployment), ())


class SequenceRouter(RequestRouter):  # not FIFOMixin: it hands a choice to the oldest request, not its own
    """Requests with a ``session_id`` (a sequence) go to the replica that ranks first for it
    (the others follow as fallbacks: a versioned request reaching a replica without that
    version is answered 409 and the client resends its state); ``replica:<id>`` names the replica
    (a batch grouped by `RoutedEngine`; the others follow as fallbacks); requests without a
    session go to the less loaded of two random replicas (Ray's power of two choices)."""

    def _publish(self) -> None:
        import sys

        # Ray may rebuild this class by value (cloudpickle), with a copy of this module's globals:
        # the views go to the module this process imported, where RoutedEngine reads them.
        views = sys.modules[__name__]._VIEWS
        key = (self._deployment_id.app_name, self._deployment_id.name)
        views[key] = tuple(sorted(replica_id.unique_id for replica_id in self._replica_id_set))

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        self._publish()

    def on_replica_actor_died(self, replica_id: Any) -> None:
        super().on_replica_actor_died(replica_id)
        self._publish()

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        session = pending_request.metadata.session_id if pending_request is not None else ""
        if session:
            by_id = {replica.replica_id.unique_id: replica for replica in candidate_replicas}
            named = session.removeprefix(REPLICA_SESSION) if session.startswith(REPLICA_SESSION) else None
            order = rendezvous_order(session, by_id)
            if named in by_id:
                order.remove(named)
                order.insert(0, named)
            return [[by_id[unique]] for unique in order]
        if len(candidate_replicas) <= 2:
            return [list(candidate_replicas)]
        return [random.sample(candidate_replicas, 2)]


# ---- shipping folders ------------------------------------------------------------------------


@dataclass(frozen=True)
class ShippedFolder:
    """An artifact folder as bytes, with the manifest digest every replica pins it to."""

    name: str
    files: dict[str, bytes]  # path relative to the folder -> bytes
    digest: str


def ship_folder(name: str, folder: Path, loader: Any = None) -> ShippedFolder:
    """Reads ``folder`` once into a `ShippedFolder` pinned to its manifest's digest; ``loader``
    (e.g. one that verifies a signature) checks a copy of exactly those bytes, so the replicas
    run what was checked even if the folder changes meanwhile."""
    folder = Path(folder)
    if not (folder / MANIFEST_NAME).is_file():
        raise runtime.ArtifactError(f"{folder} is not an artifact folder (it has no {MANIFEST_NAME})")
    files, total = {}, 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        total += len(data)
        if total > MAX_FOLDER_BYTES:
            raise runtime.ArtifactError(f"{folder} holds more than {MAX_FOLDER_BYTES >> 20} MiB to ship to replicas")
        files[path.relative_to(folder).as_posix()] = data
    shipped = ShippedFolder(name, files, hashlib.sha256(files[MANIFEST_NAME]).hexdigest())
    if loader is not None:  # refuses what the caller would not run (bad digest, bad signature)
        with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX) as scratch:
            ((_, copy),) = unpack([shipped], Path(scratch))
            loader(copy)
    return shipped


def unpack(shipped: Iterable[ShippedFolder], root: Path) -> list[tuple[str, Path]]:
    folders = []
    for item in shipped:
        folder = root / item.name
        for relative, data in item.files.items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        folders.append((item.name, folder))
    return folders


def scratch_folder() -> tempfile.TemporaryDirectory:
    """A temporary folder named after this process; the folders of processes that are gone
    (a replica killed before its finalizer ran) are removed first."""
    import shutil

    root = Path(tempfile.gettempdir())
    for old in root.glob(f"{SCRATCH_PREFIX}*-*"):
        pid = old.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists() and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")


def unpacked(shipped: list[ShippedFolder], device: str = "cpu") -> tuple[list[tuple[str, Path]], Any, Any]:
    """The shipped folders unpacked into a temporary folder of this process: (name, folder)
    pairs, a loader that loads each pinned to the driver's manifest digest, and the temporary
    folder (kept alive as long as the models are used)."""
    scratch = scratch_folder()
    digests = {item.name: item.digest for item in shipped}

    def loader(folder: Path) -> runtime.Model:
        return runtime.load(folder, device=device, digest=digests[folder.name])

    return unpack(shipped, Path(scratch.name)), loader, scratch


# ---- the deployments -------------------------------------------------------------------------


class Stepper:
    """One stepping replica: an `Engine` with its sequences and batcher."""

    def __init__(self, shipped: list[ShippedFolder], settings: Settings, device: str) -> None:
        folders, loader, self._scratch = unpacked(shipped, device)
        # the front checks a start's id (--refuse-client-sequence-ids) and draws the ids it assigns
        self.engine = Engine(folders, replace(settings, client_sequence_ids=True), loader=loader)
        self._expiry: asyncio.Task | None = None

    def _start(self) -> None:
        self.engine.start()
        self._expiry = asyncio.get_running_loop().create_task(self._expire())

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_PERIOD_S)
            self.engine.expire_idle()

    async def infer(
        self, request: InferRequest, protocol: str, version: str, caller: str = ""
    ) -> InferResponse | ServeError:
        """The engine's answer, or its ServeError as a value (the Front raises it); ``caller``: the
        owner tag of the request's token (`callers`), whose sequences it reaches."""
        if self._expiry is None:
            self._start()
        CALLER.set(caller)  # this request's task alone (gather runs each in its own)
        try:
            return await self.engine.infer(request, protocol, version)
        except ServeError as error:
            return error
        except Exception as error:  # this request's failure alone, never its batch's: a 500
            log.exception("a request of model %r failed on this replica", request.model)
            return ServeError(f"the replica failed on this request ({type(error).__name__})")

    async def infer_many(self, batch: list[tuple[InferRequest, str, str, str]]) -> list[InferResponse | ServeError]:
        """Several requests in one call, run concurrently (so the batcher can share their steps);
        the answers in order, one per request. A sequence's requests start in the order given."""
        answers = await asyncio.gather(*(self.infer(*item) for item in batch), return_exceptions=True)
        # infer answers ServeErrors as values; anything else raised (a cancellation) is its own 500
        return [
            a if isinstance(a, (InferResponse, ServeError)) else ServeError(f"failed: {type(a).__name__}")
            for a in answers
        ]

    def pid(self) -> int:
        return os.getpid()

    def metrics_text(self) -> str:
        return self.engine.metrics.text()


def _lost(error: BaseException | None) -> ServeError:
    why = type(error).__name__ if error is not None else "no answer"
    return Unavailable(
        f"the replica running this request died, is unreachable or the call was lost ({why}); the request "
        "may have run: resend a sequence's request from its last acknowledged state with sequence_start"
    )


def _session(served: str, key: int | str) -> str:
    return f"{served}/{'i' if isinstance(key, int) else 's'}:{key}"


class RoutedEngine(Engine):
    """The fronts' engine: the folders loaded for their metadata and request checks; `infer`
    runs on a Stepper replica chosen by sequence. Requests for one replica go as one call
    (`Stepper.infer_many`), at most `CALLS_PER_REPLICA` in flight; requests arriving meanwhile
    wait for the next call: Ray's cost per actor call (about 2 ms of CPU here) is paid per
    call, not per request, and an idle server sends at once. The replica of a sequence is
    the router's rendezvous choice over the replicas it sees; stateless requests spread round
    robin over them."""

    def __init__(
        self, folders: list[tuple[str, Path]], settings: Settings, loader: Any, stepper: Any, app_name: str
    ) -> None:
        super().__init__(folders, settings, loader=loader)
        self.stepper, self.app_name = stepper, app_name
        self._queues: dict[str, list[tuple[InferRequest, str, str, str, asyncio.Future]]] = {}  # by replica
        self._busy: dict[str, int] = {}  # calls in flight, by replica
        self._turn = 0  # round robin of stateless requests
        self._tasks: set[asyncio.Task] = set()  # calls in flight (referenced until done)
        self.calls = 0  # actor calls made (for tests and benchmarks: requests per call)

    def _call(self, request: InferRequest, protocol: str, version: str, session: str | None) -> asyncio.Future:
        """Queues the request for its replica; its answer's future. A replica has at most
        `CALLS_PER_REPLICA` calls in flight; what arrives meanwhile goes in its next call."""
        view = replica_view(self.app_name)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        # The HTTP front's ASGI receive (a closure of this process) cannot travel to a replica; the
        # caller's owner tag (`callers.CALLER`, set by the front's token check) travels with it.
        sent = replace(request, receive=None) if request.receive is not None else request
        item = (sent, protocol, version, CALLER.get(), future)
        if not view:  # the router has not seen the replicas yet: alone, routed by Ray
            handle = self.stepper if session is None else self.stepper.options(session_id=session)
            self._spawn(self._send(handle, [item], None))
            return future
        if session is None:
            self._turn += 1
            target = view[self._turn % len(view)]
        else:
            target = rendezvous_first(session, view)
        queue = self._queues.get(target)
        if queue is None:
            self._queues[target] = [item]
            if self._busy.get(target, 0) < CALLS_PER_REPLICA:  # after this tick's other arrivals, in a
                # context of its own: not a child of the request that happened to come first (Ray
                # cancels a call whose parent request is cancelled)
                loop.call_soon(self._flush, target, context=contextvars.Context())
        else:
            queue.append(item)
        return future

    def _flush(self, target: str) -> None:
        items = self._queues.pop(target, None)
        if not items:
            return
        self._busy[target] = self._busy.get(target, 0) + 1
        handle = self.stepper.options(session_id=REPLICA_SESSION + target)
        self._spawn(self._send(handle, items, target))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, handle: Any, items: list[tuple[InferRequest, str, str, str, asyncio.Future]], target: str | None
    ) -> None:
        self.calls += 1
        answers: list[Any] = []
        try:
            answers = await handle.infer_many.remote([item[:4] for item in items])
        except BackPressureError as error:
            answers = [Unavailable(f"every replica is busy: {one_line(error)}")] * len(items)
        except RayTaskError as error:  # the replica's code failed (not one request: infer answers those)
            log.error("a call to a replica failed: %s", one_line(error))
            answers = [ServeError(f"the replica failed ({type(error).__name__})")] * len(items)
        except (RayActorError, ActorUnavailableError, RayError, asyncio.CancelledError) as error:
            answers = [_lost(error)] * len(items)  # died, unreachable, lost, cancelled: retryable
        finally:
            if target is not None:
                self._busy[target] -= 1
                if target in self._queues:
                    self._flush(target)
            for index, (*_, future) in enumerate(items):  # every request answered, whatever happened
                if not future.done():
                    answer = answers[index] if index < len(answers) else _lost(None)
                    if isinstance(answer, BaseException):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)

    async def run_sequence(self, named: ServedName, *args: Any, **kwargs: Any) -> Any:
        """Never here: a sequence lives on its replica. Only a call that runs in the front itself
        gets here (the sampled generation of Triton's generate extension and of gRPC streaming,
        which stream from the front's copy of the model): refused in a sequence, whose state
        is the replica's; their stateless generations run here and give the same tokens."""
        raise BadRequest(
            f"on rnn serve --ray a generation in a sequence goes through the infer route ('{named.name}' with "
            "sequence_id, on the sequence's replica); the generate extension and gRPC streaming take stateless ones"
        )

    async def run_request(self, named: ServedName, request: InferRequest) -> tuple[list[tuple[str, Any]], dict]:
        """Runs on a replica (`Engine.infer` around it checks the model and counts the answer). A
        start without an id gets its id here, so that it and the requests after it go to one
        replica; the replica is sent the start with that id."""
        ask = sequence_ask(request.parameters, self.settings.client_sequence_ids)
        if ask.assigned:
            parameters = {k: v for k, v in request.parameters.items() if k != ASSIGN}
            request = replace(request, parameters={**parameters, "sequence_id": ask.key, "sequence_start": True})
        session = None if ask.key is None else _session(named.served.name, ask.key)
        answer = await self._call(request, REPLICA_PROTOCOL, "", session)  # the version checked here
        if isinstance(answer, ServeError):
            raise answer
        if ask.assigned:
            return answer.outputs, {**answer.parameters, "sequence_id": ask.key}
        return answer.outputs, answer.parameters


@serve.ingress()
class Front:
    """The ingress: this package's HTTP app over a `RoutedEngine`."""

    def __init__(
        self, stepper: Any, shipped: list[ShippedFolder], settings: Settings, token: str | list[str] | None
    ) -> None:
        # for metadata and checks, and the streaming routes' generations (Triton's generate extension,
        # gRPC streaming), which run here on the front's copy of the model; every infer runs on a replica
        folders, loader, self._scratch = unpacked(shipped)
        self.engine = RoutedEngine(folders, settings, loader, stepper, stepper.app_name)
        self.token = token

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.engine, token=self.token)


# ---- the application -------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """How many Stepper replicas: ``replicas`` fixed, or autoscaled between ``min_replicas``
    and ``max_replicas`` on ongoing requests per replica."""

    replicas: int = 2
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float = 64.0
    replica_cpus: float = 1.0
    max_ongoing_requests: int = 4096  # Ray's default (5) would starve the batcher


def steppers(shipped: list[ShippedFolder], settings: Settings, scale: Scale, device: str = "cpu") -> Any:
    """The Stepper deployment, bound: an application of its own (`serve.run` it without a
    route; `RayServer` calls it through a handle) or a part of `application`."""
    router = RequestRouterConfig(request_router_class=f"{__name__}.SequenceRouter")  # by name: imported, not a copy
    if scale.min_replicas is not None or scale.max_replicas is not None:
        low = scale.min_replicas if scale.min_replicas is not None else 1
        high = scale.max_replicas if scale.max_replicas is not None else max(low, scale.replicas)
        sizing: dict[str, Any] = {
            "autoscaling_config": AutoscalingConfig(
                min_replicas=low, max_replicas=high, target_ongoing_requests=scale.target_ongoing_requests
            )
        }
    else:
        sizing = {"num_replicas": scale.replicas}
    return serve.deployment(
        Stepper,
        name=STEPPER,
        max_ongoing_requests=scale.max_ongoing_requests,
        request_router_config=router,
        ray_actor_options={"num_cpus": scale.replica_cpus},
        **sizing,
    ).bind(shipped, settings, device)


def application(
    shipped: list[ShippedFolder],
    settings: Settings | None = None,
    *,
    scale: Scale | None = None,
    token: str | list[str] | None = None,
    device: str = "cpu",
) -> Any:
    """The whole application on Ray Serve, HTTP through Ray's proxy (`serve.run` it with
    ``route_prefix="/"``): the Front ingress and its Stepper replicas. Two actor hops per
    request (proxy to Front, Front to Stepper): `RayServer` has one."""
    settings, scale = settings or Settings(), scale or Scale()
    stepper = steppers(shipped, settings, scale, device)
    front = serve.deployment(
        Front,
        name=FRONT,
        max_ongoing_requests=scale.max_ongoing_requests,
        ray_actor_options={"num_cpus": 0.5},
    )
    return front.bind(stepper, shipped, settings, token)


def app_builder(args: dict[str, Any]) -> Any:
    """For ``serve run toolkit.serving.ray_serve:app_builder models=NAME=FOLDER,... replicas=2``
    and Serve config files (``import_path: toolkit.serving.ray_serve:app_builder``, ``args:``):
    ``models`` (NAME=FOLDER pairs, comma-separated, or a list) or ``repository`` (a folder of
    artifact folders), ``replicas``, ``min_replicas``, ``max_replicas``, ``token`` (one, or a
    list: each sequence belongs to the token that started it), ``max_queue_delay_us``, ``device``."""
    from .core import artifact_folders, check_model_name

    models = args.get("models")
    if models:
        pairs = models.split(",") if isinstance(models, str) else list(models)
        folders = []
        for pair in pairs:
            name, _, folder = pair.partition("=")
            if not folder:
                name, folder = Path(name).name, name
            folders.append((check_model_name(name), Path(folder)))
    elif args.get("repository"):
        folders = artifact_folders(args["repository"])
    else:
        raise runtime.InputValueError("give 'models' (NAME=FOLDER,...) or 'repository'")

    def number(key: str) -> int | None:
        return None if args.get(key) is None else int(args[key])

    scale = Scale(
        replicas=number("replicas") or 2, min_replicas=number("min_replicas"), max_replicas=number("max_replicas")
    )
    settings = Settings(max_queue_delay_us=number("max_queue_delay_us") or 0)
    shipped = [ship_folder(name, folder, runtime.load) for name, folder in folders]
    return application(shipped, settings, scale=scale, token=args.get("token"), device=args.get("device", "cpu"))


def start(
    app: Any, *, address: str | None = None, host: str = "127.0.0.1", http_port: int = 8000, cpus: int | None = None
) -> None:
    """Starts (or joins, with ``address``) Ray, Serve's HTTP proxy on ``host:http_port`` and
    ``app`` (from `application`); returns once every replica is up."""
    connect(address, cpus)
    serve.start(http_options={"host": host, "port": http_port}, logging_config={"log_level": "WARNING"})
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)


def stop(*, shutdown_ray: bool = True) -> None:
    try:
        serve.shutdown()
    finally:
        if shutdown_ray:
            ray.shutdown()


class RayServer:
    """`rnn serve --ray`: this package's `Server` (HTTP and gRPC fronts, limits, token, metrics)
    in this process over a `RoutedEngine` whose requests run on Stepper replicas on Ray (a
    local cluster started for it, or the one at ``address``). One actor hop per request (this
    process to a replica); a replica's death is answered 503 here."""

    def __init__(
        self,
        folders: list[tuple[str, Path]],
        *,
        scale: Scale | None = None,
        settings: Settings | None = None,
        loader: Any = None,
        device: str = "cpu",
        address: str | None = None,
        app_name: str = APP_NAME,
        say: Any = print,
        **server_options: Any,
    ) -> None:
        from .server import Server

        self.settings = settings or Settings()
        self.scale = scale or Scale()
        self.app_name, self.say = app_name, say
        load = loader or runtime.load
        shipped = [ship_folder(name, Path(folder), load) for name, folder in folders]
        most = max(self.scale.replicas, self.scale.max_replicas or 0)
        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve's INFO lines are not the server's to print
        self.started_ray = connect(address, cpus=None if address else max(os.cpu_count() or 1, most + 1))
        try:
            serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING"})
            first = self.scale.replicas if self.scale.min_replicas is None else self.scale.min_replicas
            say(f"starting {first} Stepper replica(s) on Ray" + (f" at {address}" if address else " (a local cluster)"))
            handle = serve.run(steppers(shipped, self.settings, self.scale, device), name=app_name, route_prefix=None)
            self.engine = RoutedEngine(folders, self.settings, load, handle, app_name)
            self.replica_pids(max(1, first))  # the router knows every replica before a sequence is placed
            self.server = Server([], settings=self.settings, engine=self.engine, say=say, **server_options)
        except BaseException:
            self.close()
            raise

    @property
    def http_port(self) -> int | None:
        return self.server.http_port

    @property
    def grpc_port(self) -> int | None:
        return self.server.grpc_port

    def replica_pids(self, expected: int, timeout_s: float = 90.0) -> set[int]:
        """The process ids of the Stepper replicas the router sees now (at least ``expected``
        of them, waiting up to ``timeout_s`` for Serve to start replacements)."""
        handle = self.engine.stepper  # its router is the one requests go through
        deadline = time.monotonic() + timeout_s
        while True:
            probes = [handle.options(session_id=f"probe/{i}").pid.remote() for i in range(16 * expected)]
            pids = {probe.result(timeout_s=timeout_s) for probe in probes}
            if len(pids) >= expected or time.monotonic() > deadline:
                return pids
            time.sleep(0.5)

    def start(self) -> RayServer:
        """Serves in a background thread (see `Server.start`)."""
        self.server.start()
        return self

    def run(self) -> None:
        """Serves until SIGTERM/SIGINT, then deletes the application."""
        try:
            self.server.run()
        finally:
            self.close()

    def stop(self) -> None:
        try:
            self.server.stop()
        finally:
            self.close()

    def close(self) -> None:
        """Deletes the application (and stops Ray if this process started it: the whole local
        cluster goes, Serve's controller with it)."""
        try:
            if ray.is_initialized() and not self.started_ray:
                serve.delete(self.app_name)
        finally:
            if self.started_ray and ray.is_initialized():
                ray.shutdown()

"""`rnn serve` as a Python object: the HTTP front (Starlette on uvicorn) and the gRPC front
(grpcio's asyncio server) on one event loop around one `Engine`.

    from toolkit.serving import Server
    server = Server([("sine", "artifacts/sine-elman")], http_port=0, grpc_port=0)
    server.start()            # in a background thread; returns once both ports listen
    ...                       # server.http_port, server.grpc_port
    server.stop()             # drains in-flight requests, saves sequences to state_dir

`run()` serves in the calling thread until SIGTERM or SIGINT, then does the same drain.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import runtime
from rnn.folders import write_text_atomically
from runtime.inputs import all_finite
from runtime.jsonfile import parse_json
from runtime.streams import state_from_bytes

from .callers import Tokens, is_owner_tag
from .core import (
    MAX_SEQUENCE_VERSION,
    Engine,
    Loader,
    Settings,
    describe_id,
    sequence_key,
)
from .doors import DEFAULT_MAX_OPEN_CONNECTIONS, capped_protocol, descriptor_room, raw_response
from .metrics import Metrics
from .protocol import ServeError, one_line
from .sequences import Slot, slot

STATE_FORMAT = "rnn-serve-sequences"
STATE_FORMAT_VERSIONS = (1, 2)  # 2: sequences may name their owner (the SHA-256 of their token); 1: none does
STATE_SUFFIX = ".sequences.json"
RESUMED_SUFFIX = ".sequences.resumed.json"  # a state file once resumed: kept until the next save
NOT_RESUMED_SUFFIX = ".sequences.not-resumed.json"  # a state file that could not be resumed, set aside
DRAIN_SECONDS = 10.0  # how long a stop waits for requests in progress

log = logging.getLogger("rnn.serve")


@dataclass(frozen=True)
class Doors:
    """How the fronts hold against slow, idle and greedy clients (`rnn serve` options).

    ``max_inflight_bytes``: request bodies held at once across all HTTP requests (None: 4 x
    --max-body-bytes); beyond, a request is a 503 with Retry-After. ``header_timeout_s``: from a
    connection's start (or a request's first byte) to its headers' end, else the connection is
    closed (408). ``keep_alive_s``: an idle connection between requests is closed after it.
    ``body_timeout_s``: a body that stops arriving this long is a 408. ``max_header_bytes``: a
    request line and headers longer than this are a 431, refused as they arrive.
    ``grpc_idle_s``: a gRPC connection with no call this long is closed (a call or stream that
    sends nothing holds no place among --max-connections: `grpc_api.Admission`).
    ``grpc_streams_per_connection``: calls (HTTP/2 streams) one gRPC connection may hold open at
    once; beyond, a new one is refused (REFUSED_STREAM). Room for a stream per sequence on one
    channel, as tritonclient users open them. ``max_open_connections``: HTTP connections open at
    once, idle or not; one accepted beyond is answered 503 and closed (`doors.capped_protocol`)."""

    max_inflight_bytes: int | None = None
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 64 << 10
    grpc_idle_s: float = 300.0
    grpc_streams_per_connection: int = 1024
    max_open_connections: int = DEFAULT_MAX_OPEN_CONNECTIONS


def read_token_file(path: str | os.PathLike) -> str | tuple[str, ...]:
    """The token in ``path``, or its tokens where it holds several (`rnn serve --token-file`,
    which keeps them out of the process list, as RNN_SERVE_TOKEN does): a token per line, spaces
    stripped; blank lines and lines that begin with '#' are not tokens. Several tokens are several
    tenants: a sequence belongs to the token that started it (`callers`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise runtime.InputValueError(f"cannot read the token file {path}: {one_line(error)}") from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)]
    lines = [(number, line) for number, line in lines if line and not line.startswith("#")]
    for number, line in lines:  # a bearer token has no spaces (RFC 6750): a note would become a token
        if any(c.isspace() for c in line):
            raise runtime.InputValueError(
                f"line {number} of the token file {path} holds a space, which no token does: "
                "begin notes with '#' (every other line is a token, each a tenant)"
            )
    tokens = tuple(dict.fromkeys(line for _, line in lines))
    if not tokens:
        raise runtime.InputValueError(f"the token file {path} is empty")
    return tokens[0] if len(tokens) == 1 else tokens


def _guarded_protocol(doors: Doors) -> Any:
    """uvicorn's httptools protocol with a deadline and a size bound on each request's head: a
    connection that sends nothing, or its headers too slowly, is closed after
    ``doors.header_timeout_s``; a head past ``doors.max_header_bytes`` is a 431 before more of
    it is buffered. The deadline's timer is armed only when a read ends inside a head (and at a
    connection's start): a request whose head arrives in one read (every small request) pays no
    timer. None where httptools is missing (h11 bounds the head itself)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    class GuardedProtocol(HttpToolsProtocol):
        _in_head = True
        _head_bytes = 0
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._begin_head()

        def _begin_head(self) -> None:
            self._in_head = True
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(doors.header_timeout_s, self._head_late)

        def _end_head(self) -> None:
            self._in_head, self._head_bytes = False, 0
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_late(self) -> None:
            self._head_timer = None
            if self._in_head and not self.transport.is_closing():
                if self._head_bytes:
                    message = f"the request's headers did not arrive within {doors.header_timeout_s:g} s"
                    self.transport.write(raw_response(408, "Request Timeout", message))
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True  # its timer only if this read ends inside the head (data_received)

        def on_headers_complete(self) -> None:
            self._end_head()
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            was_in_head = self._in_head
            if was_in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._in_head and not was_in_head:  # a head began in this read and did not end in it
                self._head_bytes += len(data)
            if self._in_head and self._head_bytes > doors.max_header_bytes and not self.transport.is_closing():
                message = f"the request line and headers pass {doors.max_header_bytes} bytes, the limit"
                self.transport.write(raw_response(431, "Request Header Fields Too Large", message))
                self.transport.close()
                self._end_head()
            elif self._in_head and not self.transport.is_closing():
                self._begin_head()  # a head split across reads: its deadline (armed once) from now on

        def connection_lost(self, exc: Exception | None) -> None:
            self._end_head()
            super().connection_lost(exc)

    return GuardedProtocol


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise runtime.DataError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it: no 40 ms
    # delayed-ACK stall between uvicorn's write of the headers and its write of the body
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def port_taken(host: str, port: int) -> OSError | None:
    """Why ``port`` on ``host`` cannot be listened on now (the error a bind gives), or None: a
    check before anything starts, so a port another program holds is one clear line (gRPC's own
    bind would log its C-core line first)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as both fronts bind
        try:
            sock.bind((host, port))
        except OSError as error:
            return error
    return None


def _run_loop(main: Any) -> None:
    """Runs ``main`` on uvloop's event loop where it is installed (uvicorn[standard] brings it; much
    of a small request's cost is the loop's own), else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is None or not hasattr(asyncio, "Runner"):  # asyncio.Runner: Python 3.11
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


class Server:
    """Serves artifact folders over the Open Inference Protocol (HTTP and gRPC).

    ``folders``: (name, folder) pairs (or ``engine``: the engine to serve, folders ignored).
    ``token``: a bearer token every route but liveness requires, or several (any one is let in;
    each sequence is bound to the token that started it). ``state_dir``: where a stop writes
    every live sequence (with its owner) and a start resumes them.
    A folder that fails to load is served as not ready (said when the server starts); the others
    serve. `rnn serve` refuses to start when none loads (`toolkit.launch`)."""

    def __init__(
        self,
        folders: Iterable[tuple[str, str | os.PathLike]],
        *,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int | None = 8001,
        token: str | Iterable[str] | None = None,
        settings: Settings | None = None,
        state_dir: str | os.PathLike | None = None,
        loader: Loader | None = None,
        say: Callable[[str], None] = _say,
        engine: Engine | None = None,
        doors: Doors | None = None,
    ) -> None:
        self.tokens = Tokens.of(token)  # InputValueError where one is empty
        self.token = token if isinstance(token, str) or token is None else tuple(token)
        self.host, self.say = host, say
        self.settings = settings or Settings()
        self.state_dir = Path(state_dir) if state_dir is not None else None
        if engine is None:
            engine = Engine(folders, self.settings, loader, Metrics())
        self.engine = engine  # given: an engine of another kind (RoutedEngine: its requests run on Ray)
        self.metrics = engine.metrics
        self.settings = engine.settings
        self.doors = doors or Doors()
        self.door: Any = None  # the HTTP front's `http_api.Door` once it serves
        self._requested_ports = (http_port, grpc_port)
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    # ---- running -----------------------------------------------------------------------

    def run(self) -> None:
        """Serves in this thread until SIGTERM/SIGINT; then drains and saves sequences."""
        _run_loop(self._serve(signals=True))

    def start(self, timeout: float = 30.0) -> Server:
        """Serves in a background thread; returns once both fronts listen (raises what failed)."""
        self._thread = threading.Thread(target=self._thread_main, name="rnn-serve", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError(f"the server did not start within {timeout:g} s")
        if self._failure is not None:
            raise self._failure
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Drains and stops a server started with `start` (what SIGTERM does to `run`)."""
        if self._thread is None:
            return  # never started, or stopped already
        if self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # its loop has ended already
                pass
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _thread_main(self) -> None:
        try:
            _run_loop(self._serve(signals=False))
        except BaseException as error:  # reported to start() or, later, logged
            self._failure = error
            self._started.set()
            if not isinstance(error, runtime.ToolkitError):
                log.exception("the server failed")

    def _http_server(self, sock: socket.socket) -> Any:
        """The HTTP front on uvicorn, set up to serve on ``sock`` (not started)."""
        import uvicorn  # the serve extra

        from .http_api import Door, create_app

        doors, limits = self.doors, self.settings.limits
        inflight = doors.max_inflight_bytes if doors.max_inflight_bytes is not None else 4 * limits.max_body_bytes
        inflight = max(inflight, limits.max_body_bytes)  # room for one request of the largest body
        # --max-connections counts requests in progress, not open connections (an idle one is not work)
        door = Door(limits.max_connections, inflight, doors.body_timeout_s, limits.max_body_bytes)
        self.door = door
        cap, warning = descriptor_room(doors.max_open_connections)  # what the file descriptor limit holds
        if warning is not None:
            self.say(warning)
        protocol = capped_protocol(_guarded_protocol(doors), cap)
        config = uvicorn.Config(
            create_app(self.engine, token=self.token, door=door),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=DRAIN_SECONDS,
            server_header=False,
            timeout_keep_alive=max(1, round(doors.keep_alive_s)),
            h11_max_incomplete_event_size=doors.max_header_bytes,
            http=protocol,
        )
        config.load()
        http = uvicorn.Server(config)
        http.lifespan = config.lifespan_class(config)  # what uvicorn's own serve() sets up (lifespan "off")
        return http

    def _grpc_server(self, grpc_port: int | None, sock: socket.socket) -> Any:
        """The gRPC front bound to its port (None without one); DataError (``sock`` closed) if the
        port cannot be had."""
        if grpc_port is None:
            return None
        from .grpc_api import create_grpc_server

        grpc_server = create_grpc_server(
            self.engine,
            token=self.token,
            idle_s=self.doors.grpc_idle_s,
            max_streams=self.doors.grpc_streams_per_connection,
        )
        target = f"[{self.host}]:{grpc_port}" if ":" in self.host else f"{self.host}:{grpc_port}"
        try:
            self.grpc_port = grpc_server.add_insecure_port(target)
        except RuntimeError as error:
            sock.close()
            raise runtime.DataError(f"cannot listen on {target} for gRPC: {one_line(error)}") from None
        return grpc_server

    def _announce(self) -> None:
        for served in self.engine.served.values():
            if not served.ready:
                self.say(f"model '{served.name}' is not ready: {served.error}")
        if self.token is None and self.host not in ("127.0.0.1", "::1", "localhost"):
            self.say(f"warning: serving on {self.host} without a token: anyone who reaches it can use it (--token)")
        if self.tokens is not None and self.tokens.several:
            self.say(f"{len(self.tokens)} tokens: each sequence belongs to the token that started it")
        self.say(f"HTTP  http://{self.host}:{self.http_port}/v2 (metrics at /metrics)")
        if self.grpc_port is not None:
            self.say(f"gRPC  {self.host}:{self.grpc_port}")
        self.say(
            "models: " + ", ".join(e.name + ("" if e.ready else " (not ready)") for e in self.engine.names.values())
        )

    async def _serve(self, signals: bool) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        http_port, grpc_port = self._requested_ports
        self.engine.start()
        sock = _bind(self.host, http_port)
        self.http_port = sock.getsockname()[1]
        http = self._http_server(sock)
        grpc_server = self._grpc_server(grpc_port, sock)
        self._resume_sequences()  # both ports are ours and nothing is served yet: no request sees a gap
        if grpc_server is not None:
            await grpc_server.start()
        try:
            await http.startup(sockets=[sock])
        except BaseException:
            if grpc_server is not None:
                await grpc_server.stop(None)
            sock.close()
            raise
        main = asyncio.create_task(http.main_loop())
        sweeper = asyncio.create_task(self._sweep())
        if signals:
            for number in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(number, self._signalled)
        self._announce()
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await self._drain(http, main, sock, grpc_server, sweeper)

    async def _drain(self, http: Any, main: asyncio.Task, sock: socket.socket, grpc_server: Any, sweeper: Any) -> None:
        """Stops both fronts (requests in progress finish, up to DRAIN_SECONDS), saves the sequences."""
        self.say("stopping: draining requests in progress")
        http.should_exit = True
        await main
        drains = [http.shutdown(sockets=[sock])]
        if grpc_server is not None:
            drains.append(grpc_server.stop(DRAIN_SECONDS))
        await asyncio.gather(*drains)
        sweeper.cancel()
        try:
            if not await self.engine.drained(DRAIN_SECONDS):
                self.say(f"requests still in progress after {DRAIN_SECONDS:g} s: saving without them")
            self._save_sequences()
        finally:
            self.engine.close()

    def _signalled(self) -> None:
        """The first SIGTERM/SIGINT drains and saves; a second one exits at once (nothing saved)."""
        assert self._stop is not None
        if self._stop.is_set():
            self.say("second signal: exiting without draining or saving sequences")
            os._exit(1)
        self._stop.set()

    async def _sweep(self) -> None:
        period = max(0.05, min(1.0, self.settings.sequence_idle_timeout_s / 4))
        while True:
            await asyncio.sleep(period)
            self.engine.expire_idle()

    # ---- sequences across restarts ----------------------------------------------------------

    def _state_file(self, name: str, suffix: str = STATE_SUFFIX) -> Path:
        assert self.state_dir is not None
        return self.state_dir / f"{name}{suffix}"

    def _save_sequences(self) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # states are the clients' data: owner only
        saved = self.engine.saved_sequences()
        for name, sequences in saved.items():
            served = self.engine.served[name]
            assert served.model is not None
            entries = [_saved_entry(key, data, version) for key, data, version in sequences]
            document = {
                "format": STATE_FORMAT,
                "format_version": 2 if any("owner" in entry for entry in entries) else 1,  # 1: as before owners
                "model": name,
                "step_sha256": served.model.step_sha256,
                "sequences": entries,
            }
            path = write_text_atomically(self._state_file(name), json.dumps(document, indent=1) + "\n")
            os.chmod(path, 0o600)
        for name in self.engine.served:  # what the last start resumed is now saved (or ended)
            self._state_file(name, RESUMED_SUFFIX).unlink(missing_ok=True)
        total = sum(len(s) for s in saved.values())
        self.say(f"saved {total} live sequence(s) to {self.state_dir}")

    def _resume_sequences(self) -> None:
        """Opens the sequences saved in the state folder: all of a file or none of it. A resumed
        file is renamed ``*.sequences.resumed.json`` (removed by the next save: it is never
        resumed twice); a file that cannot be resumed is moved aside, never overwritten."""
        if self.state_dir is None or not self.state_dir.is_dir():
            return
        self._remove_stale_temporaries()
        for name, served in self.engine.served.items():
            path, resumed = self._state_file(name), self._state_file(name, RESUMED_SUFFIX)
            if not path.is_file():
                if resumed.is_file():
                    self.say(
                        f"not resumed again: {resumed} (an earlier start resumed it and did not stop cleanly; "
                        "its sequences may have advanced since)"
                    )
                continue
            try:
                saved = self._read_state_file(path)
                if served.model is None:
                    raise runtime.DataError(f"model '{name}' is not ready")
                for key, data, _version in saved:  # every state checked before any sequence opens
                    rows = state_from_bytes(served.model, data)
                    if not (served.model.allow_nonfinite or all(all_finite(row) for row in rows)):
                        raise runtime.DataError(f"the state of sequence {describe_id(key)} holds NaN or infinity")
                room = self.settings.limits.max_sequences - len(served.sequences)
                if len(saved) > room:
                    raise runtime.DataError(f"{len(saved)} sequences saved, room for {room} (--max-sequences)")
                for key, data, version in saved:
                    self.engine.restore_sequence(name, key, data, version)
            except (runtime.ToolkitError, ServeError, OSError) as error:
                aside = self._set_aside(name, path)
                self.say(f"not resumed: {one_line(error)}; the file is kept as {aside}")
                continue
            os.replace(path, resumed)
            self.say(f"resumed {len(saved)} sequence(s) of model '{name}' from {path}{self._strays(saved)}")

    def _set_aside(self, name: str, path: Path) -> Path:
        """Moves ``path`` to the first free ``NAME.sequences.not-resumed[-N].json``: never over an
        earlier one (a link fails where the name is taken, so two starts cannot race onto one)."""
        for number in range(1, 100_000):
            suffix = NOT_RESUMED_SUFFIX if number == 1 else NOT_RESUMED_SUFFIX.replace(".json", f"-{number}.json")
            aside = self._state_file(name, suffix)
            try:
                os.link(path, aside)
            except FileExistsError:
                continue
            path.unlink()
            return aside
        raise runtime.DataError(f"{path} cannot be set aside: 100,000 earlier files not resumed are kept beside it")

    def _remove_stale_temporaries(self) -> None:
        """Removes the temporary files of saves killed midway (``.NAME.sequences.tmp-PID-*``, of a
        process that no longer runs): never a state file, and never one a live save is writing."""
        assert self.state_dir is not None
        for path in self.state_dir.glob(".*.sequences.tmp-*"):
            pid = path.name.split(".tmp-", 1)[1].split("-", 1)[0]
            if not pid.isdigit() or int(pid) == os.getpid() or not path.is_file() or path.is_symlink():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                path.unlink(missing_ok=True)
                self.say(f"removed {path}, left by a save that was killed")
            except PermissionError:
                pass  # that process runs, under another user

    def _strays(self, saved: list[tuple[Slot, bytes, int]]) -> str:
        """What the resume line adds about the sequences no token of this server owns."""
        owners = self.tokens.owners if self.tokens is not None else frozenset({""})
        strays = sum(1 for key, _, _ in saved if (key[0] if isinstance(key, tuple) else "") not in owners)
        if not strays:
            return ""
        return (
            f"; {strays} of them belong to a token this server is not given (or were saved with one token or none "
            "and it has several): no request reaches them until it is given again, and they end once idle"
        )

    @staticmethod
    def _read_state_file(path: Path) -> list[tuple[Slot, bytes, int]]:
        document = parse_json(path.read_bytes(), str(path), runtime.DataError)
        if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
            raise runtime.DataError(f"{path} is not a file of saved sequences")
        if document.get("format_version", 1) not in STATE_FORMAT_VERSIONS:
            raise runtime.DataError(f"{path} has format_version {document.get('format_version')!r:.20}, unknown here")
        entries = document.get("sequences")
        if not isinstance(entries, list):
            raise runtime.DataError(f"{path} has no list of sequences")
        saved = []
        for entry in entries:
            try:
                key = sequence_key(entry.get("id") if isinstance(entry, dict) else None)
            except ServeError:
                key = None
            if key is None:
                raise runtime.DataError(f"{path} holds a sequence without a valid id")
            try:
                data = base64.b64decode(entry.get("state", ""), validate=True)
            except (ValueError, TypeError):
                raise runtime.DataError(f"{path}: the state of sequence {describe_id(key)} is not base64") from None
            version = entry.get("version", 0)  # files of earlier versions have none
            if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < MAX_SEQUENCE_VERSION:
                raise runtime.DataError(f"{path}: the version of sequence {describe_id(key)} is not a valid version")
            owner = entry.get("owner", "")  # format 1 has none: the sequence belongs to nobody
            if owner != "" and not is_owner_tag(owner):
                raise runtime.DataError(f"{path}: the owner of sequence {describe_id(key)} is not a SHA-256 in hex")
            saved.append((slot(owner, key), data, version))
        return saved


def _saved_entry(key: Slot, data: bytes, version: int) -> dict[str, Any]:
    """A live sequence as a state file holds it: its id, state, version and owner (the SHA-256 of
    the token that started it, where it belongs to one: never the token)."""
    owner, key = key if isinstance(key, tuple) else ("", key)
    entry: dict[str, Any] = {"id": key, "state": base64.b64encode(data).decode("ascii"), "version": version}
    if owner:
        entry["owner"] = owner
    return entry

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
from pathlib import Path
from typing import Any

import runtime
from rnn.folders import write_text_atomically
from runtime.jsonfile import parse_json
from runtime.streams import state_from_bytes

from .core import (
    MAX_SEQUENCE_VERSION,
    Engine,
    Loader,
    Settings,
    describe_id,
    sequence_key,
)
from .metrics import Metrics
from .protocol import ServeError, one_line

STATE_FORMAT = "rnn-serve-sequences"
STATE_SUFFIX = ".sequences.json"
RESUMED_SUFFIX = ".sequences.resumed.json"  # a state file once resumed: kept until the next save
NOT_RESUMED_SUFFIX = ".sequences.not-resumed.json"  # a state file that could not be resumed, set aside
DRAIN_SECONDS = 10.0  # how long a stop waits for requests in progress

log = logging.getLogger("rnn.serve")


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
    ``token``: a bearer token every route but liveness requires. ``state_dir``: where a stop
    writes every live sequence and a start resumes them.
    A folder that fails to load is served as not ready (said when the server starts); the others
    serve. `rnn serve` refuses to start when none loads (`toolkit.launch`)."""

    def __init__(
        self,
        folders: Iterable[tuple[str, str | os.PathLike]],
        *,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int | None = 8001,
        token: str | None = None,
        settings: Settings | None = None,
        state_dir: str | os.PathLike | None = None,
        loader: Loader | None = None,
        say: Callable[[str], None] = _say,
        engine: Engine | None = None,
    ) -> None:
        if token is not None and not token.strip():
            raise runtime.InputValueError("the token is empty: give a secret, or no token to serve without one")
        self.host, self.token, self.say = host, token, say
        self.settings = settings or Settings()
        self.state_dir = Path(state_dir) if state_dir is not None else None
        if engine is None:
            engine = Engine(folders, self.settings, loader, Metrics())
        self.engine = engine  # given: an engine of another kind (RoutedEngine: its requests run on Ray)
        self.metrics = engine.metrics
        self.settings = engine.settings
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

        from .http_api import create_app

        config = uvicorn.Config(
            create_app(self.engine, token=self.token),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=DRAIN_SECONDS,
            server_header=False,
            limit_concurrency=self.settings.limits.max_connections + 1,  # uvicorn counts the new one too; beyond: 503
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

        grpc_server = create_grpc_server(self.engine, token=self.token)
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
        self.state_dir.mkdir(parents=True, exist_ok=True)
        saved = self.engine.saved_sequences()
        for name, sequences in saved.items():
            served = self.engine.served[name]
            assert served.model is not None
            document = {
                "format": STATE_FORMAT,
                "format_version": 1,
                "model": name,
                "step_sha256": served.model.step_sha256,
                "sequences": [
                    {"id": key, "state": base64.b64encode(data).decode("ascii"), "version": version}
                    for key, data, version in sequences
                ],
            }
            write_text_atomically(self._state_file(name), json.dumps(document, indent=1) + "\n")
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
                for _key, data, _version in saved:  # every state checked before any sequence opens
                    state_from_bytes(served.model, data)
                room = self.settings.limits.max_sequences - len(served.sequences)
                if len(saved) > room:
                    raise runtime.DataError(f"{len(saved)} sequences saved, room for {room} (--max-sequences)")
                for key, data, version in saved:
                    self.engine.restore_sequence(name, key, data, version)
            except (runtime.ToolkitError, ServeError, OSError) as error:
                aside = self._state_file(name, NOT_RESUMED_SUFFIX)
                os.replace(path, aside)
                self.say(f"not resumed: {one_line(error)}; the file is kept as {aside}")
                continue
            os.replace(path, resumed)
            self.say(f"resumed {len(saved)} sequence(s) of model '{name}' from {path}")

    @staticmethod
    def _read_state_file(path: Path) -> list[tuple[int | str, bytes, int]]:
        document = parse_json(path.read_bytes(), str(path), runtime.DataError)
        if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
            raise runtime.DataError(f"{path} is not a file of saved sequences")
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
            saved.append((key, data, version))
        return saved

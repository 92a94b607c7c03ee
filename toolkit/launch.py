"""`rnn serve` as a plain function: the folders to serve, the server's limits and settings, here or on Ray Serve."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import ArtifactError, DataError, InputValueError

from .console import say
from .extras import require
from .trust import Loading, load_model


@dataclass(frozen=True)
class ServeOptions:
    """Everything `rnn serve` takes, as its options give it (toolkit.serving's Limits and Settings are made of it)."""

    models: tuple[str, ...]
    repository: Path | None
    host: str
    http_port: int
    grpc_port: int
    no_grpc: bool
    token: str | None
    max_queue_delay_us: int
    max_batch: int
    sequence_idle_timeout: float
    state_dir: Path | None
    max_body_bytes: int
    max_elements: int
    max_steps: int
    max_sequences: int
    max_connections: int
    workers: int
    device: str
    public_key: Path | None
    on_ray: bool
    replicas: int | None
    min_replicas: int | None
    max_replicas: int | None
    address: str | None
    app_name: str
    serve_unready: bool = False
    token_file: Path | None = None
    max_inflight_bytes: int | None = None  # None: the server's default (4 x max_body_bytes)
    header_timeout: float | None = None  # None: `Doors`' default
    idle_timeout: int | None = None  # None: `Doors`' default
    max_open_connections: int | None = None  # None: `Doors`' default
    refuse_client_sequence_ids: bool = False

    def check_http(self) -> None:
        """One source of the token, and a body budget that holds one body of the largest size."""
        if self.token is not None and self.token_file is not None:
            raise InputValueError("--token (or RNN_SERVE_TOKEN) and --token-file both give the token: give one of them")
        budget = self.max_inflight_bytes
        if budget is not None and budget < self.max_body_bytes:
            raise InputValueError(
                f"--max-inflight-bytes {budget} is less than --max-body-bytes {self.max_body_bytes}: "
                "a request of the largest body would never fit"
            )

    def server_token(self) -> str | tuple[str, ...] | None:
        """--token (or RNN_SERVE_TOKEN), else the token (or tokens, one per line) of --token-file, else None."""
        from toolkit.serving.server import read_token_file

        return self.token or (read_token_file(self.token_file) if self.token_file is not None else None)

    def doors(self) -> Any:
        """The fronts' `toolkit.serving.server.Doors` from --max-inflight-bytes, --header-timeout, --idle-timeout
        and --max-open-connections."""
        from toolkit.serving.server import Doors

        given = {
            "max_inflight_bytes": self.max_inflight_bytes,
            "header_timeout_s": self.header_timeout,
            "keep_alive_s": self.idle_timeout,
            "max_open_connections": self.max_open_connections,
        }
        return Doors(**{name: value for name, value in given.items() if value is not None})

    def check_ray(self) -> None:
        """The --ray options go with --ray, and --state-dir without it."""
        ray_options = {"--replicas": self.replicas, "--min-replicas": self.min_replicas}
        ray_options.update({"--max-replicas": self.max_replicas, "--address": self.address})
        ray_options["--app-name"] = self.app_name if self.app_name != "rnn" else None
        given = [name for name, value in ray_options.items() if value is not None]
        if given and not self.on_ray:
            raise InputValueError(f"{given[0]} needs --ray")
        if self.on_ray and self.state_dir is not None:
            raise InputValueError(
                "--state-dir does not apply with --ray: the clients hold their sequences' state (see the README)"
            )
        if self.on_ray and self.serve_unready:
            raise InputValueError(
                "--serve-unready does not apply with --ray: every folder is loaded before the replicas start"
            )
        low, high = self.min_replicas, self.max_replicas
        if low is not None and high is not None and low > high:
            raise InputValueError(f"--min-replicas {low} is more than --max-replicas {high}")


def model_specs(specs: tuple[str, ...], repository: Path | None) -> list[tuple[str, Path]]:
    """(name, folder) from FOLDER or NAME=FOLDER arguments and the folders under --repository."""
    from toolkit.serving.core import artifact_folders, check_model_name

    folders = [] if repository is None else artifact_folders(repository)
    for spec in specs:
        name, _, path = spec.partition("=") if "=" in spec else ("", "", spec)  # a name never holds '='
        folder = Path(path)
        folders.append((check_model_name(name or folder.resolve().name), folder))
    if not folders:
        raise InputValueError("name at least one FOLDER (or NAME=FOLDER), or --repository DIR")
    return folders


PORT_ERRORS = (errno.EADDRINUSE, errno.EACCES)  # the port is the problem: another one would do


def check_ports(options: ServeOptions) -> None:
    """Refuses, before any model loads, one port for both fronts and a port that cannot be
    listened on, naming the option that changes it (InputValueError / DataError)."""
    from toolkit.serving.server import port_taken

    fronts = [("HTTP", options.http_port, "--http-port")]
    if not options.no_grpc:
        if options.grpc_port == options.http_port != 0:
            raise InputValueError(
                f"--http-port and --grpc-port are both {options.http_port}: give each front its own port "
                "(or --no-grpc to serve HTTP only)"
            )
        fronts.append(("gRPC", options.grpc_port, "--grpc-port, or --no-grpc to serve HTTP only"))
    for front, port, option in fronts:
        error = port_taken(options.host, port) if port else None
        if error is not None:
            hint = f" (choose another port with {option})" if error.errno in PORT_ERRORS else ""
            raise DataError(f"cannot listen on {options.host}:{port} for {front}: {error.strerror or error}{hint}")


def check_servable(served: Any, serve_unready: bool) -> None:
    """ArtifactError (one line: each folder and why) when no folder loaded, unless ``serve_unready``
    (a repository whose models come and go)."""
    failed = list(served.values())
    if serve_unready or any(s.ready for s in failed):
        return
    reasons = "; ".join(s.error if str(s.folder) in s.error else f"{s.folder}: {s.error}" for s in failed)
    what = "it" if len(failed) == 1 else "them"
    counted = "" if len(failed) == 1 else f"none of the {len(failed)} folders loads: "
    raise ArtifactError(f"nothing to serve: {counted}{reasons} (--serve-unready serves {what} anyway, not ready)")


def serve(options: ServeOptions) -> None:
    """Serves the folders until SIGTERM or Ctrl-C, here or (--ray) on Ray Serve replicas."""
    require(("uvicorn", "starlette", "grpc", "tritonclient.grpc", "prometheus_client"), "'rnn serve'", "serve")
    options.check_ray()
    options.check_http()
    if options.on_ray:
        require(("ray", "ray.serve"), "'rnn serve --ray'", "ray")
    from toolkit.serving import Limits, Server, Settings

    folders = model_specs(options.models, options.repository)
    token = options.server_token()
    check_ports(options)
    limits = Limits(
        max_body_bytes=options.max_body_bytes,
        max_elements=options.max_elements,
        max_steps=options.max_steps,
        max_sequences=options.max_sequences,
        max_connections=options.max_connections,
    )
    settings = Settings(
        limits=limits,
        max_queue_delay_us=options.max_queue_delay_us,
        max_batch=options.max_batch,
        sequence_idle_timeout_s=options.sequence_idle_timeout,
        workers=options.workers,
        client_sequence_ids=not options.refuse_client_sequence_ids,
    )
    loading = Loading(device=options.device, public_key=options.public_key)

    def loader(folder: Path) -> Any:
        return load_model(folder, loading)

    fronts = {
        "host": options.host,
        "http_port": options.http_port,
        "grpc_port": None if options.no_grpc else options.grpc_port,
        "token": token,
        "doors": options.doors(),
    }
    if options.on_ray:
        _serve_on_ray(options, folders, settings, loader, fronts)
        return
    server = Server(folders, settings=settings, state_dir=options.state_dir, loader=loader, **fronts)
    check_servable(server.engine.served, options.serve_unready)
    server.run()


def _serve_on_ray(options: ServeOptions, folders, settings, loader, fronts: dict[str, Any]) -> None:
    """The same fronts (``fronts``: host, ports, token, doors: every HTTP option) here, the models on Ray."""
    from toolkit.serving.ray_serve import RayServer, Scale

    scale = Scale(replicas=options.replicas or 2, min_replicas=options.min_replicas, max_replicas=options.max_replicas)
    RayServer(
        folders,
        scale=scale,
        settings=settings,
        loader=loader,
        device=options.device,
        address=options.address,
        app_name=options.app_name,
        say=say,
        **fronts,
    ).run()

"""Joining a Ray cluster, or starting a local one, the same way for `rnn serve --ray` and bulk runs."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from runtime.errors import DataError


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuses at once a HOST:PORT (or ray://HOST:PORT) nothing listens on: Ray itself retries
    for minutes. "auto" and other forms go to Ray as they are."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise DataError(f"cannot join the Ray cluster at {address!r}: {error.strerror or error}") from None


def _token_auth_if_configured() -> None:
    """Ray 2.60 starts local clusters with token authentication (the token in ~/.ray/auth_token)
    but joins one without sending it unless RAY_AUTH_MODE=token: set it where a token is at
    hand and the caller did not choose (RAY_AUTH_MODE=disabled opts out)."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if (
        os.environ.get("RAY_AUTH_TOKEN")
        or os.environ.get("RAY_AUTH_TOKEN_PATH")
        or (Path.home() / ".ray" / "auth_token").is_file()
    ):
        os.environ["RAY_AUTH_MODE"] = "token"


def _choose_token_auth() -> None:
    """Ray 2.60 starts a local cluster with token authentication unless RAY_AUTH_MODE says
    otherwise, and WARNs so on every start when the mode is not chosen: chosen here, the same
    mode (auth stays on), unless the caller chose. As Ray does when it turns it on itself, the
    process's cached Ray config is read again: set only in the environment, the driver would
    still think auth disabled and the cluster's own processes refuse it."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._raylet import Config
    except ImportError:  # another Ray: its own default (and its warning)
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")


def connect(address: str | None = None, cpus: int | None = None, logging_level: str = "WARNING") -> bool:
    """Joins the Ray cluster at ``address``, or starts a local one (``cpus`` logical CPUs; no
    dashboard); nothing if Ray is already up in this process. Whether this call started one."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        _reachable(address)
        _token_auth_if_configured()
        try:
            ray.init(address=address, logging_level=logging_level, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            message = " ".join(str(error).split())[:300] or type(error).__name__
            raise DataError(f"cannot join the Ray cluster at {address!r}: {message}") from None
        return False
    _choose_token_auth()
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging_level, log_to_driver=False)
    return True

"""A hard cap on the HTTP connections open at once (issue 23): `--max-open-connections`.

``--max-connections`` counts requests in progress, and the header and keep-alive deadlines close
connections that send nothing, but until they do every accepted socket holds a file descriptor: a
client that opens sockets faster than the deadlines close them would run the process out of
descriptors (then every accept, the gRPC front's included, and every file the server opens
fails). `capped_protocol` wraps uvicorn's HTTP protocol class so that a connection accepted while
``cap`` are open is answered 503 (one line, ``connection: close``) and closed at once, before any
of it is read; the connections under the cap, liveness and every other route, go on as before.
The count is uvicorn's own set of open connections (its ``server_state.connections``), so a
closed connection frees its place when the event loop sees it close.

`descriptor_room` compares the cap with the process's file descriptor limit (RLIMIT_NOFILE): the
soft limit is raised toward the hard limit where that makes room (as servers commonly do); where
the limit still leaves less than the cap needs, the cap is lowered to fit it and a warning line
says so.
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_MAX_OPEN_CONNECTIONS = 8192  # above the 4,100 idle connections of the attack, well under a
# typical raised descriptor limit (65,536; this CI machine's is 20,000)
DESCRIPTOR_RESERVE = 512  # descriptors kept for everything but HTTP connections: gRPC, files, the loop's own


def raw_response(status: int, reason: str, message: str, headers: str = "") -> bytes:
    """An HTTP/1.1 answer written straight to a socket (before or instead of uvicorn's): the
    status, ``{"error": message}``, ``headers`` (``name: value\\r\\n`` lines) and ``connection: close``."""
    body = json.dumps({"error": message}).encode()
    head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return (head + headers).encode() + b"connection: close\r\n\r\n" + body


def capped_protocol(base: Any, cap: int) -> Any:
    """uvicorn's HTTP protocol class ``base`` (None: its h11 protocol) refusing a connection made
    while ``cap`` connections are open: a 503 written and the socket closed, nothing read."""
    if base is None:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol
    message = f"the server has {cap} HTTP connections open, its limit (--max-open-connections): retry shortly"
    refusal = raw_response(503, "Service Unavailable", message, "retry-after: 1\r\n")  # nothing of it read

    class CappedProtocol(base):  # type: ignore[misc, valid-type]
        refused = False

        def connection_made(self, transport: Any) -> None:
            if len(self.connections) >= cap:  # uvicorn's set of the connections open now
                self.refused = True
                transport.write(refusal)
                transport.close()  # the 503 is flushed first; the socket is never read
                return
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            if not self.refused:
                super().data_received(data)

        def eof_received(self) -> Any:
            return None if self.refused else super().eof_received()

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.refused:  # a refused one was never counted or set up
                super().connection_lost(exc)

    CappedProtocol.__name__ = CappedProtocol.__qualname__ = f"Capped{base.__name__}"
    return CappedProtocol


def descriptor_room(cap: int) -> tuple[int, str | None]:
    """The cap that the process's file descriptor limit can hold, and what to say about it:
    the soft limit is raised toward the hard one to make room for ``cap`` connections and
    DESCRIPTOR_RESERVE; where it still cannot, the cap is lowered to the room left (so a connection
    beyond gets the 503, not a failed accept) and a warning line says so (else None)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return cap, None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = cap + DESCRIPTOR_RESERVE
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return cap, None
    raised = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if raised > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft >= wanted:
        return cap, None
    room = max(soft - DESCRIPTOR_RESERVE, 1)
    return room, (
        f"warning: this process may open {soft} files (ulimit -n; hard limit {hard}), too few for "
        f"--max-open-connections {cap}: at most {room} HTTP connections are let in; raise ulimit -n for more"
    )

"""`rnn web FOLDER`: serves the browser page of examples/web and an artifact folder on loopback.

The page (onnxruntime-web, WASM) loads the folder from ``/model/``, checks every file against the
manifest's sha256 in the browser and runs the loop there. This server only hands out files: the
page's own files, the three onnxruntime-web files it needs (from examples/web/node_modules, put
there by ``npm ci --ignore-scripts``), and of the folder only what the page reads: manifest.json,
the files it lists and the self-check's ``test_data/<form>/test_data_set_0/{input,output}_N.pb``
(never a key, a ``.env`` or anything else that happens to lie there). The Host header is checked
on every address (DNS rebinding): loopback names, IP literals, the bound host and this machine's
names pass; others are added with ``allowed_hosts`` (`rnn web --allow-host NAME`). Standard
library only.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from runtime.errors import DataError, MissingDependencyError

PAGE_DIR = Path(__file__).resolve().parent.parent / "examples" / "web"
ORT_DIST = PAGE_DIR / "node_modules" / "onnxruntime-web" / "dist"
PAGE_FILES = ("index.html", "app.js", "model.js", "signature.js", "sampling.js", "numpy_random.js", "tensorproto.js")
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
LOOPBACK = ("127.0.0.1", "::1")
SELF_CHECK_FILE = re.compile(r"test_data/[A-Za-z0-9_.-]+/test_data_set_0/(input|output)_[0-9]{1,3}\.pb")
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".csv": "text/csv",
    ".png": "image/png",
}


def check_page() -> None:
    """Refuses (one line) when the page or onnxruntime-web is not where the server looks."""
    missing = [name for name in PAGE_FILES if not (PAGE_DIR / name).is_file()]
    if missing:
        raise DataError(
            f"the web page is not at {PAGE_DIR} (missing {', '.join(missing)}): run rnn web from a checkout"
        )
    if not all((ORT_DIST / name).is_file() for name in ORT_FILES):
        raise MissingDependencyError(
            f"rnn web needs onnxruntime-web in {PAGE_DIR / 'node_modules'}: run `npm ci --ignore-scripts` in {PAGE_DIR}"
        )


def served_names(folder: Path) -> frozenset[str]:
    """The folder's files the page may read: manifest.json and every file its manifest lists."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        listed = [entry["name"] for entry in manifest["files"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{folder / 'manifest.json'} cannot be read as a manifest: {error}") from None
    return frozenset(["manifest.json", *(name for name in listed if isinstance(name, str))])


def host_names(host: str, extra: tuple[str, ...] = ()) -> frozenset[str]:
    """The Host header names a server bound to ``host`` answers (IP literals pass anyway)."""
    names = {"localhost", *LOOPBACK, host.lower(), *(name.lower() for name in extra)}
    if host in ("0.0.0.0", "::", ""):  # every interface: this machine's own names too
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(names)


def _is_ip(name: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
    except OSError:
        return False
    return True


class _Handler(SimpleHTTPRequestHandler):
    folder: Path  # set on the subclass made per server
    names: frozenset[str] = frozenset()  # the folder's files it serves
    hosts: frozenset[str] = frozenset()  # the Host names it answers
    quiet = True

    def _target(self) -> Path | None:
        path = unquote(urlsplit(self.path).path)
        if path in ("/", "/index.html"):
            return PAGE_DIR / "index.html"
        name = path.removeprefix("/")
        if name in PAGE_FILES:
            return PAGE_DIR / name
        if path.startswith("/ort/") and path.removeprefix("/ort/") in ORT_FILES:
            return ORT_DIST / path.removeprefix("/ort/")
        if path.startswith("/model/"):
            name = path.removeprefix("/model/")
            if name not in self.names and not SELF_CHECK_FILE.fullmatch(name):
                return None
            try:
                target = (self.folder / name).resolve()
                if target.is_relative_to(self.folder) and target.is_file():  # symlinks resolved first
                    return target
            except (ValueError, OSError):  # a NUL byte, a name too long: not a file of the folder
                return None
        return None

    def _host_allowed(self) -> bool:
        """Only known names in the Host header, on every address: a page of another site whose
        name was rebound to this machine (DNS rebinding) does not get the folder's files."""
        given = (self.headers.get("Host") or "").strip().lower()
        host = given[1:].split("]", 1)[0] if given.startswith("[") else given.rsplit(":", 1)[0]
        return host in self.hosts or _is_ip(host)

    def _answer(self, body: bool) -> None:
        if not self._host_allowed():
            self.send_error(HTTPStatus.FORBIDDEN, "unknown Host name (rnn web --allow-host NAME adds one)")
            return
        if urlsplit(self.path).path == "/favicon.ico":
            self.send_response(HTTPStatus.NO_CONTENT)
            self.end_headers()
            return
        target = self._target()
        if target is None:
            self.send_error(HTTPStatus.NOT_FOUND, "no such file here")
            return
        try:
            data = target.read_bytes()
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "no such file here")
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", TYPES.get(target.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self._answer(True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(False)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        if not self.quiet:
            super().log_message(format, *args)


class _Listener(ThreadingHTTPServer):
    # the default 5 dropped rapid connects (each waited a 1 s SYN retry), 128 a burst of 200 at once;
    # the kernel caps it at net.core.somaxconn (4096 on current Linux)
    request_queue_size = 1024
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


class WebServer:
    """The page and ``folder`` on ``host:port`` (0: a free port); `start` serves in a thread,
    `serve_forever` in this one."""

    def __init__(
        self,
        folder: str | os.PathLike,
        host: str = "127.0.0.1",
        port: int = 8080,
        quiet: bool = True,
        allowed_hosts: tuple[str, ...] = (),
    ):
        check_page()
        folder = Path(folder).resolve()
        if not (folder / "manifest.json").is_file():
            raise DataError(f"{folder} is not an artifact folder (it has no manifest.json)")
        settings = {"folder": folder, "quiet": quiet, "names": served_names(folder)}
        handler = type("Handler", (_Handler,), {**settings, "hosts": host_names(host, tuple(allowed_hosts))})
        try:
            self.httpd = _Listener((host, port), handler)
        except OSError as error:
            raise DataError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> WebServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="rnn-web", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever()
        finally:
            self.httpd.server_close()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(10)

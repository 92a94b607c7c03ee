"""`rnn web FOLDER`: serves the browser page of examples/web and an artifact folder on loopback.

The page (onnxruntime-web, WASM) loads the folder from ``/model/``, checks every file against the
manifest's sha256 in the browser and runs the loop there. This server only hands out files: the
page's own files, the three onnxruntime-web files it needs (from examples/web/node_modules, put
there by ``npm ci --ignore-scripts``), and the folder's files (nothing outside it). Standard
library only.
"""

from __future__ import annotations

import os
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


class _Handler(SimpleHTTPRequestHandler):
    folder: Path  # set on the subclass made per server
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
            try:
                target = (self.folder / path.removeprefix("/model/")).resolve()
                if target.is_relative_to(self.folder) and target.is_file():  # symlinks resolved first
                    return target
            except (ValueError, OSError):  # a NUL byte, a name too long: not a file of the folder
                return None
        return None

    def _host_allowed(self) -> bool:
        """On a loopback address, only loopback names in the Host header: a page of another site
        whose name was rebound to 127.0.0.1 (DNS rebinding) does not get the folder's files."""
        if self.server.server_address[0] not in LOOPBACK:
            return True
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        return host in LOOPBACK or host == "localhost"

    def _answer(self, body: bool) -> None:
        if not self._host_allowed():
            self.send_error(HTTPStatus.FORBIDDEN, "this server answers loopback names only")
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


class WebServer:
    """The page and ``folder`` on ``host:port`` (0: a free port); `start` serves in a thread,
    `serve_forever` in this one."""

    def __init__(self, folder: str | os.PathLike, host: str = "127.0.0.1", port: int = 8080, quiet: bool = True):
        check_page()
        folder = Path(folder).resolve()
        if not (folder / "manifest.json").is_file():
            raise DataError(f"{folder} is not an artifact folder (it has no manifest.json)")
        handler = type("Handler", (_Handler,), {"folder": folder, "quiet": quiet})
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
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

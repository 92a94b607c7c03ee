"""Turns a failure inside TorchScript, an ONNX exporter or a user's module into one typed line."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from runtime.errors import ExportError, ToolkitError


def describe_failure(error: BaseException) -> str:
    """One line from a TorchScript or exporter error: its first line and the source it points at."""
    lines = [line.rstrip() for line in str(error).splitlines() if line.strip()]
    head = next(
        (line.strip() for line in lines if not line.strip().startswith(("File ", "Traceback"))), type(error).__name__
    )
    code = ""
    for index, line in enumerate(lines):
        if "<--- HERE" in line and index > 0:
            code = lines[index - 1].strip()
            break
    return f"{head[:300]}" + (f" (at: {code[:160]})" if code else "")


@contextlib.contextmanager
def failing_as(what: str, hint: str = "") -> Iterator[None]:
    """Runs a block of third-party code (TorchScript, an exporter, the user's module): any failure
    becomes ExportError("{what}: {one line}{hint}"). The toolkit's own typed errors pass unchanged."""
    try:
        yield
    except ToolkitError:
        raise
    except Exception as error:  # these libraries raise many types; each means "cannot do this"
        raise ExportError(f"{what}: {type(error).__name__}: {describe_failure(error)}{hint}") from None

"""The optional extras: one check that the packages a command needs are installed, and one wording
of what to install when they are not."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from runtime.errors import MissingDependencyError


def install_hint(extra: str) -> str:
    return f"pip install 'rnn-toolkit[{extra}]' (in a checkout: pip install -c constraints.txt -e '.[{extra}]')"


def require(packages: Iterable[str], needed_by: str, extra: str) -> None:
    """Imports each of ``packages``; a MissingDependencyError naming ``extra`` for the first one absent."""
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError:
            raise MissingDependencyError(
                f"{needed_by} needs {package.split('.')[0]}, which is not installed; install the {extra} extra: "
                + install_hint(extra)
            ) from None


def require_torch(command: str, threads: int = 1) -> None:
    """Says which extra to install when a torch command runs without torch; then sets torch's
    intra-op threads (1 by default: these models are far too small for more to pay, and on busy
    cores torch's default spins; NOTES.md)."""
    require(("torch", "onnx", "matplotlib"), f"'rnn {command}'", "train")
    import torch

    torch.set_num_threads(threads)

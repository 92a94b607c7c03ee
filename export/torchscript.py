"""Scripts a step module with torch.jit.script and saves it for torch.jit.load and libtorch."""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from runtime.errors import IntegrityError
from runtime.manifest import STEP_TORCHSCRIPT_NAME, FileEntry, resolve_file


def script_step(model: torch.nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of the step module, in eval mode (the caller sets and restores the mode).

    TorchScript is deprecated in current PyTorch but is what libtorch programs load; the
    design keeps it (NOTES.md), so its deprecation warning is silenced here. A failure leaves
    TorchScript's type cache as it was (`_forget_failed_types`), so that scripting the same
    class again in this process fails with the same error, not ``Can't redefine method``.
    """
    before = _known_types()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated.*", category=DeprecationWarning)
            return torch.jit.script(model.eval())
    except Exception:
        _forget_failed_types(before)
        raise


def _type_store() -> Any:
    """TorchScript's cache of module types (private to torch; None if a torch version has none)."""
    return getattr(getattr(torch.jit, "_recursive", None), "concrete_type_store", None)


def _known_types() -> dict[type, int]:
    """How many compiled types TorchScript's cache holds per module class."""
    store = _type_store()
    return {} if store is None else {cls: len(types) for cls, types in store.type_store.items()}


def _forget_failed_types(before: dict[type, int]) -> None:
    """Drops the types a failed ``torch.jit.script`` left in TorchScript's cache without their
    methods compiled: reused, they fail with ``Can't redefine method: forward on class``."""
    store = _type_store()
    if store is None:
        return
    for cls, types in store.type_store.items():
        kept = before.get(cls, 0)
        types[kept:] = [t for t in types[kept:] if t in store.methods_compiled]


def save_torchscript(scripted: torch.jit.ScriptModule, folder: str | os.PathLike) -> Path:
    """Saves ``scripted`` as the folder's step.torchscript.pt."""
    path = Path(folder) / STEP_TORCHSCRIPT_NAME
    scripted.save(str(path))
    return path


def load_torchscript(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """``torch.jit.load`` on the CPU. Loading a TorchScript archive runs its code: load only files
    whose sha256 the manifest vouches for (verification and bench reach them through it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated.*", category=DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")


def load_torchscript_checked(folder: str | os.PathLike, entry: FileEntry) -> torch.jit.ScriptModule:
    """`load_torchscript` of the manifest entry ``entry``, from bytes read once and checked against
    the entry's size and sha256 (what runs is what was hashed). Only for trusted folders: loading
    runs the archive's code."""
    data = resolve_file(folder, entry).read_bytes()
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise IntegrityError(f"{entry.name!r} changed after it was checked: its bytes no longer match the manifest")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated.*", category=DeprecationWarning)
        return torch.jit.load(io.BytesIO(data), map_location="cpu")

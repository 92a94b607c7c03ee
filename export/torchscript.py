"""Scripts a step module with torch.jit.script and saves it for torch.jit.load and libtorch."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from runtime.manifest import STEP_TORCHSCRIPT_NAME


def script_step(model: torch.nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of the step module, in eval mode.

    TorchScript is deprecated in current PyTorch but is what libtorch programs load; the
    design keeps it (NOTES.md), so its deprecation warning is silenced here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated.*", category=DeprecationWarning)
        return torch.jit.script(model.eval())


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

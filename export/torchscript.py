"""Scripts a step module with torch.jit.script and saves it for torch.jit.load and libtorch."""

from __future__ import annotations

import hashlib
import io
import os
import pickletools
import re
import struct
import warnings
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any

import torch

from runtime.errors import ArtifactError, ExportError, IntegrityError
from runtime.manifest import STEP_TORCHSCRIPT_NAME, FileEntry, resolve_file

from .errors import describe_failure


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
    """Saves ``scripted`` as the folder's step.torchscript.pt, the same bytes wherever the
    module's source lives (`reproducible_archive`)."""
    path = Path(folder) / STEP_TORCHSCRIPT_NAME
    reproducible_archive(scripted.save_to_buffer(), path)
    return path


# The archive's record torch derives from the other records' checksums; its writer makes it anew.
SERIALIZATION_ID = ".data/serialization_id"
DEBUG_SUFFIX = ".debug_pkl"
CODE_PREFIX = "code/__torch__/"
MANGLED = re.compile(r"___torch_mangle_\d+")  # torch's name for a second type of one class
# A class's constants, one a line: TorchScript writes them in the order of a Python set of their
# names, which follows the process's string hash seed.
CONSTANTS = re.compile(rb"(?:^[ ]+\w+ : Final\[[^\n]*\] = [^\n]*\n)+", re.MULTILINE)


def reproducible_archive(archive: bytes, path: str | os.PathLike) -> Path:
    """Writes the TorchScript ``archive`` to ``path`` so that the same module scripted in two
    checkouts or two processes gives byte-identical files (and manifest digests): every source
    file path in its debug records made relative (`relative_source_path`; error messages of the
    loaded module name ``rnn/model.py``), and each class's constants in name order
    (`_sorted_constants`). torch's own writer writes the records in their order, with its fixed
    zip timestamps and a serialization id of the records' checksums."""
    reader = torch._C.PyTorchFileReader(io.BytesIO(archive))
    writer = torch._C.PyTorchFileWriter(str(path))
    for name in reader.get_all_records():
        if name == SERIALIZATION_ID:
            continue
        data = reader.get_record(name)
        if name.endswith(DEBUG_SUFFIX) and name.startswith(CODE_PREFIX):
            module = name[len(CODE_PREFIX) : -len(DEBUG_SUFFIX)]  # rnn/model.py
            parts = PurePosixPath(module).with_suffix("").parts
            data = _relative_debug_paths(data, tuple(p for p in parts if not MANGLED.fullmatch(p)))
        elif name.startswith(CODE_PREFIX) and name.endswith(".py"):
            data = _sorted_constants(data)
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    return Path(path)


def _relative_debug_paths(pickled: bytes, module: tuple[str, ...]) -> bytes:
    """The debug pickle with each absolute source path among its strings replaced by
    `relative_source_path` (a string opcode rewritten in place: protocol 2 has no frames, and
    memo indices do not depend on byte offsets). Source text always ends in a newline."""
    pieces, done = [], 0
    for opcode, argument, position in pickletools.genops(pickled):
        if opcode.name not in ("BINUNICODE", "SHORT_BINUNICODE") or "\n" in argument:
            continue
        source = _absolute(argument)
        if source is None:
            continue
        encoded = relative_source_path(source, module).encode()
        head = b"X" + struct.pack("<I", len(encoded))
        end = position + 1 + (4 if opcode.name == "BINUNICODE" else 1) + len(argument.encode())
        pieces += [pickled[done:position], head, encoded]
        done = end
    return b"".join([*pieces, pickled[done:]])


def _sorted_constants(code: bytes) -> bytes:
    """``code`` with each run of constant lines in name order (the same bytes, permuted within
    the run, so the debug records' offsets of everything else stay true)."""
    return CONSTANTS.sub(lambda run: b"".join(sorted(run.group(0).splitlines(keepends=True))), code)


def _absolute(text: str) -> PurePath | None:
    for kind in (PurePosixPath, PureWindowsPath):
        path = kind(text)
        if path.is_absolute():
            return path
    return None


def relative_source_path(source: PurePath, module: tuple[str, ...]) -> str:
    """``source``'s path from its package root when its last parts are the ``module``'s
    (``/checkout/rnn/model.py`` of ``rnn.model`` -> ``rnn/model.py``), else its file name."""
    parts = source.with_suffix("").parts
    if module and len(parts) >= len(module) and parts[-len(module) :] == module:
        return "/".join((*module[:-1], source.name))
    return source.name


# A class TorchScript names after its module: a module name that is not a dotted identifier
# (runpy.run_path's "<run_path>") is saved as written, and torch.jit.load cannot parse it back.
UNNAMABLE_FIX = "define the module's classes in an importable module (a .py file you import) and export again"


def load_torchscript(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """``torch.jit.load`` on the CPU. Loading a TorchScript archive runs its code: load only files
    whose sha256 the manifest vouches for (verification and bench reach them through it).
    ArtifactError naming the file and the cause for an archive torch cannot load."""
    return _jit_load(str(path), Path(path).name)


def _jit_load(source: str | io.BytesIO, name: str) -> torch.jit.ScriptModule:
    """torch.jit.load of ``source`` on the CPU; ArtifactError in one line where it fails (a
    truncated or foreign file, code torch cannot parse), with the fix where an archive names a
    class of a script run by runpy."""
    try:
        return _torch_load(source)
    except Exception as error:  # torch raises RuntimeError, ValueError, zip errors, ...
        fix = f": {UNNAMABLE_FIX}" if "__torch__.<" in str(error) else ""
        raise ArtifactError(f"{name} cannot be loaded by torch.jit.load ({_cause(error)}){fix}") from None


def _torch_load(source: str | io.BytesIO) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated.*", category=DeprecationWarning)
        return torch.jit.load(source, map_location="cpu")


def _cause(error: BaseException) -> str:
    return f"{type(error).__name__}: {describe_failure(error)}"


def unnamable_classes(module: torch.nn.Module) -> dict[str, str]:
    """{class name: its module} of the module's (and submodules') classes whose module name is not
    a dotted identifier: TorchScript writes such names into the archive, and cannot read them back."""
    found = {}
    for sub in module.modules():
        kind = type(sub)
        where = str(kind.__module__)
        if not all(part.isidentifier() for part in where.split(".")):
            found[kind.__qualname__] = where
    return found


def check_loads(path: Path, module: torch.nn.Module) -> None:
    """Loads the archive just written at ``path`` back; ExportError naming the file, the cause and,
    for a class defined in a script run by runpy (``<run_path>``), the fix."""
    try:
        _torch_load(str(path))
    except Exception as error:  # as _jit_load
        unnamable = unnamable_classes(module)
        where = "; ".join(f"class {name} is defined in {place!r}" for name, place in unnamable.items())
        fix = f": {where} (a script run by runpy), a name TorchScript cannot read back: {UNNAMABLE_FIX}"
        raise ExportError(
            f"{path.name} was written but torch.jit.load cannot load it back ({_cause(error)})"
            + (fix if unnamable else "")
        ) from None


def load_torchscript_checked(folder: str | os.PathLike, entry: FileEntry) -> torch.jit.ScriptModule:
    """`load_torchscript` of the manifest entry ``entry``, from bytes read once and checked against
    the entry's size and sha256 (what runs is what was hashed). Only for trusted folders: loading
    runs the archive's code."""
    data = resolve_file(folder, entry).read_bytes()
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise IntegrityError(f"{entry.name!r} changed after it was checked: its bytes no longer match the manifest")
    return _jit_load(io.BytesIO(data), entry.name)

"""Writes a folder or a file as a whole: build it beside the target, then swap it into place atomically.

Used by training (`rnn.train.train_folder`), by export (`export.artifact`) and by the application's
output files (plots, generate.csv, bench.json); it lives in the core, the lowest layer that
writes, so that all of them can use it without importing upward.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from runtime.errors import ArtifactError
from runtime.manifest import CONFIG_NAME, MANIFEST_NAME

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths in one step with Linux renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def _fsync_folder(folder: Path) -> None:
    """Makes a rename inside ``folder`` durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_folder(folder)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``target`` for the caller to write (it exists, empty, and
    keeps ``target``'s suffix, so ``savefig`` picks the same format); when the block returns, the
    file is fsynced and renamed over ``target`` with ``os.replace``, so a reader sees the old file
    or the new one, never half of one.

    If the block raises (or the process dies), ``target`` is left as it was; on an exception the
    temporary file (hidden: ``.NAME.tmp-*``) is removed. A ``target`` that is a symlink is
    replaced itself, never written through. ArtifactError if the folder cannot be written.
    """
    target = Path(target)
    try:
        descriptor, name = tempfile.mkstemp(
            prefix=f".{target.stem}.tmp-{os.getpid()}-", suffix=target.suffix, dir=target.parent
        )
        os.close(descriptor)
    except OSError as error:
        raise ArtifactError(f"cannot write {str(target)!r}: {error.strerror}") from None
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; the result is an ordinary file
        os.replace(temporary, target)
        _fsync_folder(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def write_text_atomically(target: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``target`` through `atomic_path`: all of it or, on failure, nothing."""
    with atomic_path(target) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(target)


def _remove_stale_staging(target: Path) -> None:
    """Removes staging folders of ``target`` left by processes that died (killed mid-write)."""
    prefix = f".{target.name}.tmp-"
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return
    for path in siblings:
        if not path.name.startswith(prefix) or not path.is_dir() or path.is_symlink():
            continue
        pid_text = path.name[len(prefix) :].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # the process exists, under another user


def ensure_parent(target: Path) -> Path:
    """Creates the folder that will hold ``target`` and proves it writable (a file is made and
    removed there: permission bits say nothing for root or read-only mounts); ArtifactError if
    not."""
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ArtifactError(f"cannot create a folder beside {str(target)!r}: {error.strerror}") from None
    try:
        descriptor, probe = tempfile.mkstemp(prefix=f".{target.name}.probe-", dir=parent)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise ArtifactError(f"cannot write into {str(parent)!r}: {error.strerror}") from None
    return parent


@contextlib.contextmanager
def replacing_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yields a fresh temporary folder beside ``target``; on success it replaces ``target``.

    ``target`` must be new, empty, or an earlier trained or artifact folder (`prepare_output`).
    If the block raises or the process dies, ``target`` is untouched; the temporary folder
    (named ``.NAME.tmp-*``, never mistaken for an artifact folder) is removed on errors.
    """
    target = Path(target)
    prepare_output(target)
    parent = target.parent
    _remove_stale_staging(target)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=parent))
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; the result is an ordinary folder
    except OSError as error:
        raise ArtifactError(f"cannot create a folder beside {str(target)!r}: {error.strerror}") from None
    try:
        yield staging
        _fsync_tree(staging)
        if target.exists() and not target.is_dir():
            raise ArtifactError(f"{str(target)!r} exists and is not a folder")
        if not target.exists():
            os.rename(staging, target)
        elif _exchange(staging, target):
            shutil.rmtree(staging)  # now holds the old folder
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-old-", dir=parent))
            os.rename(target, old / target.name)
            os.rename(staging, target)
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_replaceable(target: Path) -> None:
    """Only an empty folder, or an earlier trained or artifact folder, may be replaced whole."""
    if not target.is_dir():
        raise ArtifactError(f"output {str(target)!r} exists and is not a folder")
    names = {p.name for p in target.iterdir()}
    if names and not names & {MANIFEST_NAME, CONFIG_NAME}:
        raise ArtifactError(
            f"output folder {str(target)!r} is not empty and holds no earlier artifacts; choose a new or empty folder"
        )


def prepare_output(target: Path) -> None:
    """Checks, before any long work, that ``target`` may be replaced and its parent made."""
    if target.exists():
        check_replaceable(target)
    ensure_parent(target)

"""`runtime.load`: an artifact folder checked (manifest, pin, every file's sha256) and opened as a `Model`,
with the options it runs under (`LoadOptions`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ArtifactError, DeviceError, InputValueError
from .fused import FORMS, STEP
from .inputs import DEFAULT_MAX_MEMORY_BYTES, DEFAULT_MAX_STEPS, MAX_INT64, check_count
from .manifest import ROLE_STEP_ONNX, check_files, read_manifest_pinned
from .model import Model
from .runs import DEFAULT_RUN_TIMEOUT, check_run_timeout
from .sessions import DEVICES

MAX_THREADS = 1024  # for threads and workers: more is a typo, not a machine
_UNSET: Any = object()  # max_output_bytes not given


@dataclass(frozen=True)
class LoadOptions:
    """What a loaded model runs under, checked once. ``threads``: onnxruntime's intra-op threads (1 is
    fastest for small recurrent models); ``workers``: threads a large fused call is split across
    (None: the number of CPUs; 1 turns splitting off); ``allow_nonfinite``: take NaN and infinity in
    inputs; ``max_steps`` per call; ``max_memory_bytes`` of arrays one call may allocate;
    ``run_timeout`` seconds for each onnxruntime run (None: no limit); ``digest``: the pinned
    manifest_digest (None: unpinned). `Model.options` carries the digest the model was read with, so
    a worker process that loads the same folder with them loads the same bytes or fails."""

    threads: int = 1
    workers: int | None = None
    allow_nonfinite: bool = False
    max_steps: int = DEFAULT_MAX_STEPS
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES
    run_timeout: float | None = DEFAULT_RUN_TIMEOUT
    digest: str | None = None

    def __post_init__(self) -> None:
        workers = (os.cpu_count() or 1) if self.workers is None else self.workers
        checked = {
            "threads": check_count(self.threads, "threads", 0, MAX_THREADS),
            "workers": check_count(workers, "workers", 1, MAX_THREADS),
            "max_steps": check_count(self.max_steps, "max_steps", 1, MAX_INT64),
            "max_memory_bytes": check_count(self.max_memory_bytes, "max_memory_bytes", 1, MAX_INT64),
            "run_timeout": check_run_timeout(self.run_timeout),
        }
        if not isinstance(self.allow_nonfinite, (bool, np.bool_)):
            raise InputValueError(f"allow_nonfinite must be True or False, got {self.allow_nonfinite!r:.80}")
        checked["allow_nonfinite"] = bool(self.allow_nonfinite)
        if self.digest is not None and not isinstance(self.digest, str):
            raise InputValueError(f"digest must be a string of 64 hex digits, got {type(self.digest).__name__}")
        for name, value in checked.items():
            object.__setattr__(self, name, value)


def load(
    folder: str | os.PathLike,
    device: str = "cpu",
    *,
    options: LoadOptions | None = None,
    max_output_bytes: int = _UNSET,
    **settings: Any,
) -> Model:
    """Loads an exported artifact folder after checking its manifest and every file's sha256.

    ``device`` is ``"cpu"`` or ``"cuda"``; CUDA without a working CUDA execution provider is a
    DeviceError, never a silent fall back to the CPU. What the model runs under is ``options`` (a
    `LoadOptions`), or its fields given as keywords (``threads=``, ``workers=``, ``allow_nonfinite=``,
    ``max_steps=``, ``max_memory_bytes=``, ``run_timeout=``, ``digest=``): workers split fused calls of
    batch >= PARALLEL_MIN_BATCH (sampling forms: >= SAMPLING_PARALLEL_MIN_BATCH); a call that would
    allocate more than max_memory_bytes is refused before it allocates (``max_output_bytes`` is its
    old name, still accepted); an onnxruntime run past run_timeout is stopped with a RunTimeoutError
    (a fused generate runs all its steps in one run: pass a larger run_timeout, or use generate_iter).

    ``digest`` pins the folder: the manifest_digest of its manifest.json (64 hex digits). The
    manifest is read once; its bytes are hashed, compared with ``digest`` (IntegrityError when
    they differ) and parsed, so that nothing can change between the check and the use. The
    manifest records every other file's sha256, and every byte onnxruntime is given is a byte
    that was hashed. The step model's session is created here; fused forms' sessions on first use.
    """
    if not isinstance(folder, (str, os.PathLike)):
        raise InputValueError(f"folder must be a path (str or os.PathLike), got {type(folder).__name__}")
    if not isinstance(device, str) or device not in DEVICES:
        raise DeviceError(f"device must be one of {list(DEVICES)}, got {device!r:.80}")
    options = _options(options, settings, max_output_bytes)
    manifest, manifest_digest = read_manifest_pinned(folder, options.digest)
    check_files(folder, manifest)
    entries = {}
    for entry in manifest.files:
        form = STEP if entry.role == ROLE_STEP_ONNX else entry.role
        if form in FORMS and form not in entries:
            entries[form] = entry
    if STEP not in entries:
        raise ArtifactError(f"the manifest of {str(folder)!r} lists no file with role {ROLE_STEP_ONNX!r}")
    options = dataclasses.replace(options, digest=manifest_digest)
    return Model(folder, manifest, entries, device=device, options=options, manifest_digest=manifest_digest)


def _options(options: LoadOptions | None, settings: dict[str, Any], max_output_bytes: Any) -> LoadOptions:
    """The options of a `load` call: ``options`` or the keywords, not both."""
    fields = {f.name for f in dataclasses.fields(LoadOptions)}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise InputValueError(f"runtime.load got unknown settings {unknown}; it takes {sorted(fields)}")
    if max_output_bytes is not _UNSET:
        if "max_memory_bytes" in settings:
            raise InputValueError("give max_memory_bytes or its old name max_output_bytes, not both")
        settings["max_memory_bytes"] = max_output_bytes
    if options is None:
        return LoadOptions(**settings)
    if not isinstance(options, LoadOptions):
        raise InputValueError(f"options must be a runtime.LoadOptions, got {type(options).__name__}")
    if settings:
        raise InputValueError(f"give options= or the settings {sorted(settings)} as keywords, not both")
    return options

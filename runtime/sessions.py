"""onnxruntime sessions of a folder's files: created from hashed bytes, run under a time limit,
their returns checked against the manifest, and large batches split across worker threads."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import monotonic
from typing import Any

import numpy as np
import onnxruntime as ort

from .errors import ArtifactError, DeviceError, IntegrityError
from .manifest import FileEntry, Manifest, resolve_file
from .onnx_refs import external_data_locations
from .runs import ORT_ERRORS, RunGuard, first_line

DEVICES = ("cpu", "cuda")
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
CUDA_PROVIDER_OPTIONS = {"use_tf32": "0"}  # full float32 matmuls on the GPU (see create_session)

Expected = Sequence[tuple[tuple[int, ...], Any]]  # (shape, numpy dtype) of each returned array


def read_checked(folder: Path, entry: FileEntry) -> bytes:
    """The bytes of a listed file, read once and checked against the manifest's size and sha256."""
    data = resolve_file(folder, entry).read_bytes()
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise IntegrityError(f"{entry.name!r} changed after it was checked: its bytes no longer match the manifest")
    return data


def model_source(folder: Path, manifest: Manifest, entry: FileEntry) -> tuple[bytes, dict[str, bytes]]:
    """What onnxruntime is given for ``entry``: the model's bytes and the bytes of every external
    data file it refers to, each read once and checked against the manifest, so that every byte
    onnxruntime uses is a byte that was hashed (it reads external data from these buffers, never
    from the disk). External data must be a file listed (and so hashed) in the manifest."""
    data = read_checked(folder, entry)
    listed = {f.name: f for f in manifest.files}
    external = {}
    for location in external_data_locations(data, entry.name):
        if location not in listed:
            raise IntegrityError(
                f"{entry.name!r} refers to external data {location!r}, which is not a file listed (and hashed) "
                "in the manifest; external data must be a plain file name inside the folder"
            )
        if location not in external:
            external[location] = read_checked(folder, listed[location])
    return data, external


def _session_options(threads: int, arena: bool, name: str, external: dict[str, bytes]) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = arena
    if external:  # onnxruntime copies what it needs from these buffers while it creates the session
        if not hasattr(options, "add_external_initializers_from_files_in_memory"):
            raise ArtifactError(
                f"{name} keeps its weights in external data, which this onnxruntime {ort.__version__} cannot "
                "take from memory (so it would read the files again, unhashed); upgrade onnxruntime"
            )
        names = list(external)
        buffers = [external[n] for n in names]
        options.add_external_initializers_from_files_in_memory(names, buffers, [len(b) for b in buffers])
    return options


def create_session(
    source: bytes, external: dict[str, bytes], name: str, device: str, threads: int, *, arena: bool = True
) -> ort.InferenceSession:
    """A session of ``source`` on ``device``; a DeviceError where that device's provider is missing
    or onnxruntime fell back to another (never a silent CPU run of a "cuda" model)."""
    wanted = PROVIDERS[device]
    available = ort.get_available_providers()
    if wanted not in available:
        raise DeviceError(
            f"device {device!r} needs onnxruntime's {wanted}, but this onnxruntime offers only "
            f"{available}; install onnxruntime-gpu (pip install onnxruntime-gpu) with a matching CUDA"
        )
    options = _session_options(threads, arena, name, external)
    # CUDA: TF32 off. onnxruntime's CUDA provider rounds float32 matmul inputs to TF32 (10-bit
    # mantissa) by default on Ampere and later GPUs: measured on an H200, one Elman step then
    # differed from the CPU by 3e-4 and a 1000-step rollout by 0.2. These models are far too small
    # for TF32 to pay, and a CUDA session must agree with the CPU and with eager PyTorch.
    providers = [wanted] if device == "cpu" else [(wanted, CUDA_PROVIDER_OPTIONS), "CPUExecutionProvider"]
    try:
        # No constant folding: it runs while the session is built, where no run_timeout reaches, and
        # a hostile graph can make it compute for minutes (Expand of constants to N x N, then MatMul).
        # Our models have nothing to fold: measured no change in their speed (NOTES.md).
        session = ort.InferenceSession(
            source, sess_options=options, providers=providers, disabled_optimizers=["ConstantFolding"]
        )
    except ORT_ERRORS as error:
        raise ArtifactError(f"onnxruntime cannot load {name}: {first_line(error)}") from None
    if session.get_providers()[0] != wanted:
        raise DeviceError(
            f"onnxruntime fell back to {session.get_providers()} instead of {wanted} "
            "(CUDA or cuDNN libraries could not be loaded); check the onnxruntime-gpu install"
        )
    return session


class SessionRunner:
    """``session.run`` under a run timeout from any thread: each call takes an idle `RunGuard`
    (list pop/append are thread-safe) and gives it back; onnxruntime's failures become typed errors."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self._guards: list[RunGuard] = []

    def run(self, session: ort.InferenceSession, what: str, outputs: list[str], feed: dict) -> list:
        """``session.run(outputs, feed)``; ``what`` names the file in errors."""
        guards = self._guards
        try:
            guard = guards.pop()
        except IndexError:
            guard = RunGuard(self.timeout)
        try:
            guard.since = monotonic()
            try:
                result = session.run(outputs, feed, guard.options)
            except ORT_ERRORS as error:
                result = guard.recover(error, what, session.run, outputs, feed)
            guard.since = 0.0
        finally:
            guards.append(guard)
        return result


def _describe(value: Any) -> str:
    return f"{getattr(value, 'shape', '?')} {getattr(value, 'dtype', type(value).__name__)}"


def check_returned(form: str, file_name: str, arrays: Sequence[Any], expected: Expected) -> None:
    """Refuses what a run of ``form`` returned unless every array has the expected shape and dtype:
    a model that breaks its contract is an ArtifactError, never a wrong answer."""
    for value, (shape, dtype) in zip(arrays, expected):
        if not (type(value) is np.ndarray and value.shape == shape and (value.dtype is dtype or value.dtype == dtype)):
            break
    else:
        if len(arrays) == len(expected):
            return
    wanted = [f"{shape} {np.dtype(dtype).name}" for shape, dtype in expected]
    raise ArtifactError(
        f"the ONNX model of form {form!r} ({file_name}) returned {', '.join(_describe(a) for a in arrays)}, "
        f"the manifest promises {', '.join(wanted)}"
    )


def row_parts(batch_size: int, parts: int) -> list[slice]:
    """``parts`` contiguous row ranges of a batch, as even as can be."""
    bounds = np.linspace(0, batch_size, parts + 1).astype(int)
    return [slice(int(start), int(stop)) for start, stop in zip(bounds[:-1], bounds[1:])]


class Workers:
    """A model's worker threads, started on first use, that run the parts of a split call at once
    (onnxruntime releases the GIL while it runs)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        """Whether a split call has run (the threads exist)."""
        return self._pool is not None

    def map(self, run: Callable[..., Any], calls: list[tuple]) -> list[Any]:
        """``[run(*args) for args in calls]``, the calls run concurrently."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.count, thread_name_prefix="rnn-runtime")
        futures = [self._pool.submit(run, *args) for args in calls]
        return [future.result() for future in futures]

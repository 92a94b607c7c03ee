"""The artifact folder's manifest.json: its schema, reading, validation and writing. Torch-free.

This module is the one definition of the contract between the exporting side (`export/`)
and the running side (`runtime/`). `export/` builds a `Manifest` and calls
`write_manifest`; `runtime/` calls `read_manifest` and `check_files`.

The step model every artifact folder carries has inputs ``(*inputs, *state)`` and outputs
``(*outputs, *state_outputs)``, in the order the manifest lists them; the first axis of
every tensor is the symbolic batch axis ``"batch"``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ArtifactError, InputValueError, IntegrityError, ManifestError, VersionError
from .inputs import FLOAT32_ROUNDS_TO_INF
from .jsonfile import parse_json

FORMAT = "rnn-toolkit-artifact"
FORMAT_VERSION = 1

# The file names of a trained or artifact folder: one home for every module that reads or writes them.
MANIFEST_NAME = "manifest.json"
STEP_ONNX_NAME = "step.onnx"
STEP_TORCHSCRIPT_NAME = "step.torchscript.pt"
WEIGHTS_NAME = "weights.pt"
CONFIG_NAME = "config.json"
VERIFY_NAME = "verify.json"  # the parity report; not listed in the manifest (written after it)
TEST_DATA_DIR = "test_data"  # self-check inputs and outputs, ONNX model zoo layout


def form_file_name(form: str, suffix: str = ".onnx") -> str:
    """The file a fused form (or its ORT-format copy, ``suffix=".ort"``) is written to."""
    return f"{form}{suffix}"


MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few KB; anything near 1 MiB is not ours
MAX_TENSOR_SIZE = 2**31 - 1  # a tensor's size (shape[1]) beyond int32 is not a recurrent model we wrote
BATCH_AXIS = "batch"
DTYPES = ("float32",)

# Roles of the files an artifact folder can list.
ROLE_STEP_ONNX = "step_onnx"
ROLE_STEP_TORCHSCRIPT = "step_torchscript"
ROLE_WEIGHTS = "weights"
ROLE_CONFIG = "config"
ROLE_TRAIN_DATA = "train_data"  # a user's training series, copied in (verification and predict read it)

# A key of the manifest's ``model``: why the folder has no step.torchscript.pt (the dynamo
# exporter exported a module TorchScript cannot compile); absent where the file was written.
TORCHSCRIPT_SKIPPED_KEY = "torchscript_skipped"


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor of the step model: ``shape[0]`` is ``"batch"``, the rest are sizes."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def describe(self) -> str:
        return f"({', '.join(str(d) for d in self.shape)}) {self.dtype}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class StateSpec(TensorSpec):
    """A state tensor: read from input ``name``, written to output ``output``.

    ``initial`` is one row of ``shape[1]`` values, the same for every stream of a batch.
    """

    output: str = ""
    initial: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "output": self.output, "initial": list(self.initial)}


@dataclass(frozen=True)
class FileEntry:
    """One file of the folder, with the role it plays and what its bytes must hash to."""

    name: str
    role: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    """Everything a runtime needs to know about an artifact folder."""

    model: dict[str, Any]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    state: tuple[StateSpec, ...]
    files: tuple[FileEntry, ...]
    opset: int
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    producers: dict[str, str] = field(default_factory=dict)  # file name -> what made it (optional)

    def file(self, role: str) -> FileEntry | None:
        """The first file with this role, or None."""
        return next((f for f in self.files if f.role == role), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "model": self.model,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "state": [s.to_dict() for s in self.state],
            "opset": self.opset,
            "files": [f.to_dict() for f in self.files],
            "versions": self.versions,
            "producers": self.producers,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Validates a parsed manifest; raises ManifestError naming the first bad field."""
        if not isinstance(data, dict):
            raise ManifestError(f"manifest must be a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise ManifestError(f"manifest 'format' must be {FORMAT!r}, got {data.get('format')!r}")
        version = _field(data, "format_version", int, "manifest")
        if version != FORMAT_VERSION:
            raise VersionError(
                f"manifest format_version {version} is not supported by this runtime "
                f"(it reads version {FORMAT_VERSION}); re-export the folder or upgrade the toolkit"
            )
        model = _field(data, "model", dict, "manifest")
        inputs = tuple(_tensor(t, f"inputs[{i}]") for i, t in enumerate(_field(data, "inputs", list, "manifest")))
        outputs = tuple(_tensor(t, f"outputs[{i}]") for i, t in enumerate(_field(data, "outputs", list, "manifest")))
        state = tuple(_state(s, f"state[{i}]") for i, s in enumerate(_field(data, "state", list, "manifest")))
        files = tuple(_file(f, f"files[{i}]") for i, f in enumerate(_field(data, "files", list, "manifest")))
        opset = _field(data, "opset", int, "manifest")
        versions = _field(data, "versions", dict, "manifest")
        producers = data.get("producers", {})
        if not isinstance(producers, dict) or not all(isinstance(v, str) for v in producers.values()):
            raise ManifestError("manifest.producers must map file names to text")
        if not inputs or not outputs:
            raise ManifestError("manifest must list at least one input and one output")
        names = [t.name for t in (*inputs, *outputs, *state)] + [s.output for s in state]
        seen: set[str] = set()
        duplicates = sorted({n for n in names if n in seen or seen.add(n)})  # linear: one set look-up a name
        if duplicates:
            raise ManifestError(f"manifest tensor names must be unique, repeated: {duplicates}")
        file_names = [f.name for f in files]
        if len(set(file_names)) != len(file_names):
            raise ManifestError("manifest lists the same file twice")
        return cls(
            model=model,
            inputs=inputs,
            outputs=outputs,
            state=state,
            files=files,
            opset=opset,
            versions={str(k): str(v) for k, v in versions.items()},
            format_version=version,
            producers={str(k): v for k, v in producers.items()},
        )


def _field(data: dict, key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise ManifestError(f"{where} is missing the field {key!r}")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"{where}.{key} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _tensor(data: Any, where: str) -> TensorSpec:
    name, shape, dtype = _tensor_fields(data, where)
    return TensorSpec(name=name, shape=shape, dtype=dtype)


def _tensor_fields(data: Any, where: str) -> tuple[str, tuple[int | str, ...], str]:
    if not isinstance(data, dict):
        raise ManifestError(f"manifest {where} must be an object, got {type(data).__name__}")
    name = _field(data, "name", str, where)
    shape = _field(data, "shape", list, where)
    dtype = _field(data, "dtype", str, where)
    if len(shape) != 2 or shape[0] != BATCH_AXIS:
        raise ManifestError(f'{where}.shape must be ["{BATCH_AXIS}", size], got {shape}')
    size = shape[1]
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_TENSOR_SIZE:
        raise ManifestError(f"{where}.shape[1] must be an integer from 1 to {MAX_TENSOR_SIZE}, got {size!r:.80}")
    if dtype not in DTYPES:
        raise ManifestError(f"{where}.dtype must be one of {list(DTYPES)}, got {dtype!r}")
    return name, (BATCH_AXIS, size), dtype


def _state(data: Any, where: str) -> StateSpec:
    name, shape, dtype = _tensor_fields(data, where)
    output = _field(data, "output", str, where)
    initial = _field(data, "initial", list, where)
    if len(initial) != shape[1] or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in initial):
        raise ManifestError(f"{where}.initial must be {shape[1]} numbers, got {initial!r:.80}")
    for v in initial:  # NaN fails the comparison; an int is compared exactly (10**400 never overflows)
        if not abs(v) < FLOAT32_ROUNDS_TO_INF:
            raise ManifestError(
                f"{where}.initial must hold finite float32 values (magnitude up to 3.4e38), got {str(v):.40}"
            )
    return StateSpec(name=name, shape=shape, dtype=dtype, output=output, initial=tuple(float(v) for v in initial))


def _file(data: Any, where: str) -> FileEntry:
    if not isinstance(data, dict):
        raise ManifestError(f"manifest {where} must be an object, got {type(data).__name__}")
    name = _field(data, "name", str, where)
    if not name or "/" in name or "\\" in name or name in (".", "..") or name == MANIFEST_NAME:
        raise ManifestError(f"{where}.name must be a plain file name inside the folder, got {name!r}")
    sha = _field(data, "sha256", str, where)
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ManifestError(f"{where}.sha256 must be 64 lowercase hex digits, got {sha!r:.80}")
    size = _field(data, "size", int, where)
    if size < 0:
        raise ManifestError(f"{where}.size must be >= 0, got {size}")
    return FileEntry(name=name, role=_field(data, "role", str, where), sha256=sha, size=size)


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, as 64 lowercase hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(folder: str | os.PathLike, name: str, role: str) -> FileEntry:
    """Describes an existing file of a folder for the manifest."""
    path = Path(folder) / name
    return FileEntry(name=name, role=role, sha256=file_sha256(path), size=path.stat().st_size)


def read_manifest_bytes(folder: str | os.PathLike) -> bytes:
    """The bytes of ``folder/manifest.json`` (read once, at most MAX_MANIFEST_BYTES of them);
    raises ArtifactError or ManifestError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"artifact folder {str(folder)!r} does not exist or is not a folder")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(
            f"{str(folder)!r} has no {MANIFEST_NAME}: it is not an exported artifact folder "
            "(run 'rnn export' on it first)"
        )
    if path.is_symlink():  # a link could lead to any file; its fields would be quoted in errors
        raise IntegrityError(f"{MANIFEST_NAME} of {str(folder)!r} is a symbolic link: it must be a regular file")
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(descriptor, "rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as error:
        raise ArtifactError(f"cannot read {path}: {error.strerror or error}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path} is more than the {MAX_MANIFEST_BYTES} bytes a manifest may have")
    return raw


def parse_manifest(raw: bytes, source: str = MANIFEST_NAME) -> Manifest:
    """Validates the bytes of a manifest.json (``source`` names it in errors); every way a
    hostile file can fail (not UTF-8, not JSON, NaN, nested too deep, an integer of thousands of
    digits, a wrong field) is a ManifestError of one line."""
    data = parse_json(raw, source, ManifestError)
    try:
        return Manifest.from_dict(data)
    except RecursionError:
        raise ManifestError(f"{source} nests arrays or objects too deeply to be a manifest") from None


def digest_of(raw: bytes) -> str:
    """The manifest digest of a manifest's bytes: their sha256, 64 lowercase hex digits."""
    return hashlib.sha256(raw).hexdigest()


def manifest_digest(folder: str | os.PathLike) -> str:
    """The sha256 (64 lowercase hex digits) of ``folder/manifest.json``'s bytes: pin a folder with
    it (``runtime.load(folder, digest=...)``). The manifest records every file's sha256, so this
    one digest covers the whole folder."""
    return digest_of(read_manifest_bytes(folder))


def check_digest_argument(digest: Any) -> str:
    """A pinned digest as given by a caller: 64 hex digits (either case), returned lowercase."""
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
        raise InputValueError(f"digest must be 64 hex digits (a manifest_digest), got {digest!r:.80}")
    return digest.lower()


def read_manifest_pinned(folder: str | os.PathLike, digest: str | None = None) -> tuple[Manifest, str]:
    """(the manifest, its digest): manifest.json is read once, those bytes hashed, compared with
    ``digest`` if given (IntegrityError on a mismatch) and parsed, so that what is parsed is what
    was hashed."""
    expected = None if digest is None else check_digest_argument(digest)
    raw = read_manifest_bytes(folder)
    actual = digest_of(raw)
    if expected is not None and actual != expected:
        raise IntegrityError(
            f"{MANIFEST_NAME} of {str(folder)!r} has digest {actual[:12]}..., the pinned digest is "
            f"{expected[:12]}...: the manifest was changed after it was pinned"
        )
    return parse_manifest(raw, str(Path(folder) / MANIFEST_NAME)), actual


def read_manifest(folder: str | os.PathLike) -> Manifest:
    """Reads and validates ``folder/manifest.json``; raises ArtifactError or a subclass."""
    return read_manifest_pinned(folder)[0]


def resolve_file(folder: str | os.PathLike, entry: FileEntry) -> Path:
    """The path of a listed file; refuses one that is missing or leads outside the folder."""
    root = Path(folder).resolve()
    path = root / entry.name
    if not path.exists():
        raise ArtifactError(f"{entry.name!r} is listed in the manifest but missing from {str(folder)!r}")
    real = path.resolve()
    if real.parent != root or not real.is_file():
        raise IntegrityError(f"{entry.name!r} must be a regular file inside {str(folder)!r}, it leads to {real}")
    return path


def check_files(folder: str | os.PathLike, manifest: Manifest) -> None:
    """Checks every listed file's size and sha256; raises IntegrityError on the first mismatch."""
    for entry in manifest.files:
        path = resolve_file(folder, entry)
        size = path.stat().st_size
        if size != entry.size:
            raise IntegrityError(
                f"{entry.name!r} is {size} bytes, the manifest says {entry.size}: "
                "the file was changed or truncated after export"
            )
        sha = file_sha256(path)
        if sha != entry.sha256:
            raise IntegrityError(
                f"{entry.name!r} has sha256 {sha[:12]}..., the manifest says {entry.sha256[:12]}...: "
                "the file was changed after export"
            )


def write_manifest(folder: str | os.PathLike, manifest: Manifest) -> Path:
    """Writes ``folder/manifest.json`` (sorted keys, indented, newline at the end)."""
    path = Path(folder) / MANIFEST_NAME
    try:
        text = json.dumps(manifest.to_dict(), indent=2, sort_keys=True, allow_nan=False)
    except ValueError:
        raise ManifestError("a manifest cannot hold NaN or infinity (an initial state must be finite)") from None
    path.write_text(text + "\n", encoding="utf-8")
    return path

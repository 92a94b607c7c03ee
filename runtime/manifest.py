"""The artifact folder's manifest.json: its schema, reading, validation and writing. Torch-free.

This module is the one definition of the contract between the exporting side (`export/`)
and the running side (`runtime/`). `export/` builds a `Manifest` and calls
`write_manifest`; `runtime/` calls `read_manifest` and `check_files`.

The step model every artifact folder carries has inputs ``(*inputs, *state)`` and outputs
``(*outputs, *state_outputs)``, in the order the manifest lists them; every tensor has one
symbolic batch axis ``"batch"``.

Two versions are read. Version 1 (written for the classic signature: one float32 input
``(batch, n)``, one float32 output ``(batch, m)``, states ``(batch, size)``, sequences time-first)
is the format every earlier toolkit writes and reads. Version 2 is written only when a model needs
more: several named inputs, int64 token inputs (``role: "tokens"``, a ``vocabulary``), logits
outputs, states of any rank with the batch axis anywhere (``nn.GRU``'s ``(layers, batch,
hidden)``), batch-first sequences (``layout``) and how generation feeds an output back
(``feedback``: the same values, or a token sampled from logits), and optionally the text of each
id of the token input that sampled feedback feeds (the top-level ``vocabulary``, a list of
strings: `runtime.vocabulary`). A runtime that reads only version 1 refuses a version 2 folder by
its ``format_version``, never by a wrong answer.
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
from .vocabulary import check_tokens, check_vocabulary_size

FORMAT = "rnn-toolkit-artifact"
FORMAT_VERSION = 2  # the newest version this runtime reads and writes
CLASSIC_FORMAT_VERSION = 1  # written for the classic signature, so older runtimes still read those folders
READ_VERSIONS = (CLASSIC_FORMAT_VERSION, FORMAT_VERSION)

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
MAX_RANK = 8  # axes of one tensor, batch included
BATCH_AXIS = "batch"
DTYPES = ("float32", "int64")
# Roles of a version 2 tensor: an input holds "features" (float32) or "tokens" (int64 ids below
# its vocabulary); an output holds "values" or "logits" (unnormalised scores over a vocabulary).
FEATURES, TOKENS = "features", "tokens"
VALUES, LOGITS = "values", "logits"
INPUT_ROLES = (FEATURES, TOKENS)
OUTPUT_ROLES = (VALUES, LOGITS)
TIME_FIRST, BATCH_FIRST = "time_first", "batch_first"
LAYOUTS = (TIME_FIRST, BATCH_FIRST)  # the axis order of sequences (steps, batch, ...) or (batch, steps, ...)
IDENTITY, SAMPLE = "identity", "sample"
FEEDBACK_KINDS = (IDENTITY, SAMPLE)  # generate's next input: the output as it is, or a token drawn from logits

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
    """A named tensor of the step model: ``shape`` holds ``"batch"`` once (an input's or output's
    first axis; a state's anywhere), the rest are sizes. ``role`` and ``vocabulary`` (version 2):
    an input's "features" or "tokens" (int64 ids 0 .. vocabulary - 1), an output's "values" or
    "logits"; None where the role is the default."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    role: str | None = None
    vocabulary: int | None = None

    @property
    def batch_axis(self) -> int:
        return self.shape.index(BATCH_AXIS)

    @property
    def sizes(self) -> tuple[int, ...]:
        """The shape without the batch axis: what one stream holds."""
        return tuple(int(d) for d in self.shape if d != BATCH_AXIS)

    @property
    def count(self) -> int:
        """Values one stream holds (1 for a rank-1 tensor: one token or one value a stream)."""
        count = 1
        for size in self.sizes:
            count *= size
        return count

    def shape_for(self, batch_size: int) -> tuple[int, ...]:
        """The concrete shape at ``batch_size``."""
        return tuple(batch_size if d == BATCH_AXIS else int(d) for d in self.shape)

    @property
    def is_tokens(self) -> bool:
        return self.role == TOKENS

    @property
    def is_logits(self) -> bool:
        return self.role == LOGITS

    def describe(self) -> str:
        text = f"({', '.join(str(d) for d in self.shape)}) {self.dtype}"
        if self.is_tokens:
            text += f" tokens < {self.vocabulary}"
        elif self.is_logits:
            text += " logits"
        return text

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.role is not None:
            document["role"] = self.role
        if self.vocabulary is not None:
            document["vocabulary"] = self.vocabulary
        return document

    @property
    def fits_version_1(self) -> bool:
        """Whether manifest version 1 can say it: float32 ``(batch, size)`` with no role."""
        return self.dtype == "float32" and len(self.shape) == 2 and self.shape[0] == BATCH_AXIS and self.role is None


@dataclass(frozen=True)
class StateSpec(TensorSpec):
    """A state tensor: read from input ``name``, written to output ``output``.

    ``initial`` is what one stream starts from: ``count`` values, the non-batch axes in C order
    (for ``(layers, batch, hidden)``: layer 0's hidden values, then layer 1's), the same for every
    stream of a batch.
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
class Feedback:
    """How generate closes the loop: output ``output`` becomes input ``input`` of the next step,
    as it is (``identity``) or as a token drawn from its logits (``sample``). Inputs other than
    ``input`` keep the value the caller gave for the whole generation."""

    output: str
    input: str
    via: str = IDENTITY

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "input": self.input, "via": self.via}


@dataclass(frozen=True)
class Signature:
    """A step model's tensors as a format 2 manifest lists them: what `export.custom` records in
    config.json for a module beyond the classic signature, and what the manifest is written from."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    state: tuple[StateSpec, ...]
    layout: str = TIME_FIRST
    feedback: Feedback | None = None
    vocabulary: tuple[str, ...] | None = None  # one string per id of the token input sampled feedback feeds

    def to_dict(self) -> dict[str, Any]:
        document = {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "state": [s.to_dict() for s in self.state],
            "layout": self.layout,
            "feedback": None if self.feedback is None else self.feedback.to_dict(),
        }
        return document if self.vocabulary is None else {**document, "vocabulary": list(self.vocabulary)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "signature") -> Signature:
        """Validates a signature as `Manifest.from_dict` validates a format 2 manifest's tensors."""
        if not isinstance(data, dict):
            raise ManifestError(f"{where} must be an object, got {type(data).__name__}")
        inputs = tuple(
            _tensor(t, f"{where}.inputs[{i}]", True, INPUT_ROLES)
            for i, t in enumerate(_field(data, "inputs", list, where))
        )
        outputs = tuple(
            _tensor(t, f"{where}.outputs[{i}]", True, OUTPUT_ROLES)
            for i, t in enumerate(_field(data, "outputs", list, where))
        )
        state = tuple(_state(s, f"{where}.state[{i}]", True) for i, s in enumerate(_field(data, "state", list, where)))
        layout = data.get("layout", TIME_FIRST)
        if layout not in LAYOUTS:
            raise ManifestError(f"{where}.layout must be one of {list(LAYOUTS)}, got {layout!r:.80}")
        feedback = None if data.get("feedback") is None else _feedback(data["feedback"], inputs, outputs)
        vocabulary = read_vocabulary(data.get("vocabulary"), feedback, inputs, ManifestError, f"{where}.vocabulary")
        return cls(inputs, outputs, state, layout, feedback, vocabulary)


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
    format_version: int = 0  # 0: the lowest version that can say it (1 for the classic signature, else 2)
    producers: dict[str, str] = field(default_factory=dict)  # file name -> what made it (optional)
    layout: str = TIME_FIRST  # version 2: sequences (steps, batch, ...) or batch-first (batch, steps, ...)
    feedback: Feedback | None = None  # version 2: how generate feeds an output back; None: see `closed_loop`
    vocabulary: tuple[str, ...] | None = None  # version 2: one string per id of the token input sampled feedback feeds

    def __post_init__(self) -> None:
        if self.format_version == 0:
            object.__setattr__(
                self, "format_version", CLASSIC_FORMAT_VERSION if self.fits_version_1 else FORMAT_VERSION
            )
        elif self.format_version == CLASSIC_FORMAT_VERSION and not self.fits_version_1:
            raise ManifestError("this model needs manifest format_version 2 (version 1 has one float32 input, ...)")
        if self.vocabulary is not None:
            tokens = read_vocabulary(self.vocabulary, self.feedback, self.inputs, ManifestError, "manifest.vocabulary")
            object.__setattr__(self, "vocabulary", tokens)

    @property
    def fits_version_1(self) -> bool:
        """Whether manifest version 1 can describe it (and every earlier runtime run it): the classic
        signature, time-first, no declared feedback. (`runtime.Model.classic` is the signature alone,
        either layout: what the runtime and the commands route on.)"""
        return (
            len(self.inputs) == 1
            and len(self.outputs) == 1
            and all(t.fits_version_1 for t in (*self.inputs, *self.outputs, *self.state))
            and self.layout == TIME_FIRST
            and self.feedback is None
        )

    @property
    def closed_loop(self) -> Feedback | None:
        """How generate feeds back: the declared feedback, or for a one-input, one-output model
        whose output has the input's shape, the output itself (the classic closed loop)."""
        if self.feedback is not None:
            return self.feedback
        if len(self.inputs) == 1 and len(self.outputs) == 1:
            x, y = self.inputs[0], self.outputs[0]
            if x.dtype == y.dtype == "float32" and x.sizes == y.sizes and not x.is_tokens and not y.is_logits:
                return Feedback(y.name, x.name, IDENTITY)
        return None

    def file(self, role: str) -> FileEntry | None:
        """The first file with this role, or None."""
        return next((f for f in self.files if f.role == role), None)

    def to_dict(self) -> dict[str, Any]:
        document = {
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
        if self.format_version >= 2:
            document["layout"] = self.layout
            if self.feedback is not None:
                document["feedback"] = self.feedback.to_dict()
            if self.vocabulary is not None:
                document["vocabulary"] = list(self.vocabulary)
        return document

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Validates a parsed manifest; raises ManifestError naming the first bad field."""
        if not isinstance(data, dict):
            raise ManifestError(f"manifest must be a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise ManifestError(f"manifest 'format' must be {FORMAT!r}, got {data.get('format')!r}")
        version = _field(data, "format_version", int, "manifest")
        if version not in READ_VERSIONS:
            raise VersionError(
                f"manifest format_version {version} is not supported by this runtime "
                f"(it reads versions {', '.join(map(str, READ_VERSIONS))}); re-export the folder or upgrade the toolkit"
            )
        model = _field(data, "model", dict, "manifest")
        general = version >= 2
        inputs = tuple(
            _tensor(t, f"inputs[{i}]", general, INPUT_ROLES)
            for i, t in enumerate(_field(data, "inputs", list, "manifest"))
        )
        outputs = tuple(
            _tensor(t, f"outputs[{i}]", general, OUTPUT_ROLES)
            for i, t in enumerate(_field(data, "outputs", list, "manifest"))
        )
        state = tuple(_state(s, f"state[{i}]", general) for i, s in enumerate(_field(data, "state", list, "manifest")))
        files = tuple(_file(f, f"files[{i}]") for i, f in enumerate(_field(data, "files", list, "manifest")))
        opset = _field(data, "opset", int, "manifest")
        versions = _field(data, "versions", dict, "manifest")
        producers = data.get("producers", {})
        if not isinstance(producers, dict) or not all(isinstance(v, str) for v in producers.values()):
            raise ManifestError("manifest.producers must map file names to text")
        if not inputs or not outputs:
            raise ManifestError("manifest must list at least one input and one output")
        if not general and (len(inputs) != 1 or len(outputs) != 1):
            raise ManifestError("a format_version 1 manifest lists exactly one input and one output")
        layout, feedback = TIME_FIRST, None
        if general:
            layout = data.get("layout", TIME_FIRST)
            if layout not in LAYOUTS:
                raise ManifestError(f"manifest.layout must be one of {list(LAYOUTS)}, got {layout!r:.80}")
            if data.get("feedback") is not None:
                feedback = _feedback(data["feedback"], inputs, outputs)
        vocabulary = read_vocabulary(data.get("vocabulary"), feedback, inputs, ManifestError, "manifest.vocabulary")
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
            layout=layout,
            feedback=feedback,
            vocabulary=vocabulary,
        )


def _field(data: dict, key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise ManifestError(f"{where} is missing the field {key!r}")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"{where}.{key} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _tensor(data: Any, where: str, general: bool = False, roles: tuple[str, ...] = INPUT_ROLES) -> TensorSpec:
    name, shape, dtype = _tensor_fields(data, where, general, state=False)
    role, vocabulary = None, None
    if general:
        role = data.get("role")
        if role is not None and role not in roles:
            raise ManifestError(f"{where}.role must be one of {list(roles)}, got {role!r:.80}")
        vocabulary = data.get("vocabulary")
        if role in (TOKENS, LOGITS) or vocabulary is not None or dtype == "int64":
            _check_vocabulary(name, shape, dtype, role, vocabulary, where)
        if role in (FEATURES, VALUES):
            role = None  # the default role is not written
    return TensorSpec(name=name, shape=shape, dtype=dtype, role=role, vocabulary=vocabulary)


def _check_vocabulary(name: str, shape: tuple, dtype: str, role: Any, vocabulary: Any, where: str) -> None:
    """Token inputs are int64 ids with a vocabulary; logits are float32 (batch, V); nothing else is int64."""
    if role == TOKENS:
        if dtype != "int64":
            raise ManifestError(f"{where}: tokens input {name!r} must be int64, got {dtype}")
        if not isinstance(vocabulary, int) or isinstance(vocabulary, bool) or not 1 <= vocabulary <= MAX_TENSOR_SIZE:
            raise ManifestError(
                f"{where}: tokens input {name!r} needs a vocabulary, an integer from 1 to {MAX_TENSOR_SIZE}, "
                f"got {vocabulary!r:.80}"
            )
        return
    if dtype == "int64":
        raise ManifestError(f"{where}: {name!r} is int64, which only a tokens input (role 'tokens') may be")
    if vocabulary is not None:
        raise ManifestError(f"{where}: {name!r} has a vocabulary but is not a tokens input")
    if role == LOGITS and len(shape) != 2:
        raise ManifestError(f"{where}: logits output {name!r} must be (batch, vocabulary), got {list(shape)}")


def _tensor_fields(
    data: Any, where: str, general: bool = False, state: bool = False
) -> tuple[str, tuple[int | str, ...], str]:
    if not isinstance(data, dict):
        raise ManifestError(f"manifest {where} must be an object, got {type(data).__name__}")
    name = _field(data, "name", str, where)
    shape = _field(data, "shape", list, where)
    dtype = _field(data, "dtype", str, where)
    if not general:
        if len(shape) != 2 or shape[0] != BATCH_AXIS:
            raise ManifestError(f'{where}.shape must be ["{BATCH_AXIS}", size], got {shape!r:.80}')
        if dtype != "float32":
            raise ManifestError(f"{where}.dtype must be 'float32' in a format_version 1 manifest, got {dtype!r:.80}")
    if not 1 <= len(shape) <= MAX_RANK or shape.count(BATCH_AXIS) != 1 or (not state and shape[0] != BATCH_AXIS):
        where_batch = "once, anywhere" if state else "first"
        raise ManifestError(
            f'{where}.shape must hold "{BATCH_AXIS}" {where_batch} and up to {MAX_RANK} axes in all, got {shape!r:.80}'
        )
    count = 1
    for size in shape:
        if size == BATCH_AXIS:
            continue
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_TENSOR_SIZE:
            raise ManifestError(f"{where}.shape sizes must be integers from 1 to {MAX_TENSOR_SIZE}, got {size!r:.80}")
        count *= size
    if count > MAX_TENSOR_SIZE:
        raise ManifestError(f"{where}.shape holds {count} values a stream, more than {MAX_TENSOR_SIZE}")
    if dtype not in DTYPES:
        raise ManifestError(f"{where}.dtype must be one of {list(DTYPES)}, got {dtype!r:.80}")
    return name, tuple(shape), dtype


def _state(data: Any, where: str, general: bool = False) -> StateSpec:
    name, shape, dtype = _tensor_fields(data, where, general, state=True)
    if dtype != "float32":
        raise ManifestError(f"{where}.dtype of a state must be 'float32', got {dtype!r}")
    output = _field(data, "output", str, where)
    initial = _field(data, "initial", list, where)
    count = 1
    for size in shape:
        count *= 1 if size == BATCH_AXIS else size
    if len(initial) != count or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in initial):
        raise ManifestError(f"{where}.initial must be {count} numbers, got {initial!r:.80}")
    for v in initial:  # NaN fails the comparison; an int is compared exactly (10**400 never overflows)
        if not abs(v) < FLOAT32_ROUNDS_TO_INF:
            raise ManifestError(
                f"{where}.initial must hold finite float32 values (magnitude up to 3.4e38), got {str(v):.40}"
            )
    return StateSpec(name=name, shape=shape, dtype=dtype, output=output, initial=tuple(float(v) for v in initial))


def _feedback(data: Any, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> Feedback:
    """A declared feedback, checked against the tensors it names."""
    if not isinstance(data, dict):
        raise ManifestError(f"manifest.feedback must be an object, got {type(data).__name__}")
    feedback = Feedback(
        output=_field(data, "output", str, "manifest.feedback"),
        input=_field(data, "input", str, "manifest.feedback"),
        via=_field(data, "via", str, "manifest.feedback"),
    )
    check_feedback(feedback, inputs, outputs, ManifestError)
    return feedback


def check_feedback(
    feedback: Feedback, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], error: type[Exception]
) -> None:
    """Raises ``error`` unless ``feedback`` names an output and an input it can connect: ``identity``
    between float32 tensors of one shape, ``sample`` from logits (batch, V) to tokens (batch,) of
    vocabulary V."""
    source = next((t for t in outputs if t.name == feedback.output), None)
    target = next((t for t in inputs if t.name == feedback.input), None)
    if source is None or target is None:
        raise error(
            f"feedback names output {feedback.output!r} and input {feedback.input!r}; the outputs are "
            f"{[t.name for t in outputs]}, the inputs {[t.name for t in inputs]}"
        )
    if feedback.via == IDENTITY:
        if source.is_logits or target.is_tokens or source.shape != target.shape or source.dtype != target.dtype:
            raise error(
                f"feedback via identity needs output {source.name!r} {source.describe()} to be input "
                f"{target.name!r}'s shape and dtype ({target.describe()})"
            )
    elif feedback.via == SAMPLE:
        if (
            not source.is_logits
            or not target.is_tokens
            or len(target.shape) != 1
            or source.sizes != (target.vocabulary,)
        ):
            raise error(
                f"feedback via sample needs a logits output (batch, V) and a tokens input (batch,) of vocabulary V; "
                f"got {source.name!r} {source.describe()} and {target.name!r} {target.describe()}"
            )
    else:
        raise error(f"feedback.via must be one of {list(FEEDBACK_KINDS)}, got {feedback.via!r:.80}")


def sampled_vocabulary(feedback: Feedback | None, inputs: tuple[TensorSpec, ...]) -> int | None:
    """The vocabulary size of the token input that sampled feedback feeds; None without one."""
    if feedback is None or feedback.via != SAMPLE:
        return None
    return next((t.vocabulary for t in inputs if t.name == feedback.input and t.is_tokens), None)


def read_vocabulary(
    value: Any, feedback: Feedback | None, inputs: tuple[TensorSpec, ...], error: type[Exception], where: str
) -> tuple[str, ...] | None:
    """A manifest's (or an export's) ``vocabulary``: None where absent, else distinct non-empty
    strings, one per id of the token input that sampled feedback feeds; ``error`` naming the problem."""
    if value is None:
        return None
    tokens = check_tokens(value, error, where)
    check_vocabulary_size(tokens, sampled_vocabulary(feedback, inputs), error, where)
    return tokens


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
    if len(text) + 1 > MAX_MANIFEST_BYTES:  # ASCII (json escapes the rest): characters are bytes
        raise ManifestError(
            f"the manifest would be {len(text) + 1} bytes, more than the {MAX_MANIFEST_BYTES} a runtime reads "
            "(a vocabulary of that many tokens does not fit)"
        )
    path.write_text(text + "\n", encoding="utf-8")
    return path

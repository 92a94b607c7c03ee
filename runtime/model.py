"""Loads an artifact folder into onnxruntime and runs it: step, predict, generate, generate_iter."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import monotonic
from typing import Any

import numpy as np
import onnxruntime as ort

from .contract import TEMPERATURE, TOP_K, TOP_P, check_session, form_io, general_form_io
from .errors import ArtifactError, DeviceError, InputValueError, IntegrityError, ShapeError, UnsupportedError
from .fused import (
    FORMS,
    FUSED_MIN_STEPS,
    PARALLEL_MIN_BATCH,
    ROLLOUT_FORMS,
    SAMPLING_CELLS_MIN_BATCH,
    SAMPLING_FORMS,
    SAMPLING_PARALLEL_MIN_BATCH,
    SEQUENCE_FORMS,
    STEP,
    choose_form,
    io_names,
)
from .inputs import (
    DEFAULT_MAX_MEMORY_BYTES,
    DEFAULT_MAX_STEPS,
    FLOAT32,
    MAX_INT64,
    as_float32,
    as_tokens,
    check_batch,
    check_count,
    check_memory,
    check_steps,
    is_ready,
)
from .manifest import (
    BATCH_AXIS,
    BATCH_FIRST,
    IDENTITY,
    ROLE_STEP_ONNX,
    SAMPLE,
    FileEntry,
    Manifest,
    check_files,
    read_manifest_pinned,
    resolve_file,
)
from .onnx_refs import external_data_locations
from .runs import DEFAULT_RUN_TIMEOUT, ORT_ERRORS, RunGuard, check_run_timeout, first_line

State = tuple[np.ndarray, ...]

DEVICES = ("cpu", "cuda")
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
CUDA_PROVIDER_OPTIONS = {"use_tf32": "0"}  # full float32 matmuls on the GPU (see _create_session)


DEFAULT_CHUNK = 100_000  # steps per chunk of generate_iter
INITIAL_CACHE = 16  # batch sizes whose initial state `step` keeps ready (read-only) for state=None
# `run_step` goes through a shared BoundStep for batches up to this size (copying into bound
# buffers and running them (BoundStep.step) costs ~5 us at batch 1 against ~7-8 us for session.run, which wraps
# every input and allocates every output); larger batches, and calls that find the bound
# runners busy in another thread, use session.run.
BOUND_MAX_BATCH = 64
BOUND_CACHE = 8  # batch sizes with a shared bound runner, least recently made dropped
MAX_THREADS = 1024  # for threads and workers: more is a typo, not a machine
_UNSET: Any = object()  # max_output_bytes not given


def load(
    folder: str | os.PathLike,
    device: str = "cpu",
    *,
    threads: int = 1,
    workers: int | None = None,
    allow_nonfinite: bool = False,
    max_steps: int = DEFAULT_MAX_STEPS,
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    run_timeout: float | None = DEFAULT_RUN_TIMEOUT,
    digest: str | None = None,
    max_output_bytes: int = _UNSET,
) -> Model:
    """Loads an exported artifact folder after checking its manifest and every file's sha256.

    ``device`` is ``"cpu"`` or ``"cuda"``; CUDA without a working CUDA execution provider is a
    DeviceError, never a silent fall back to the CPU. ``threads`` is onnxruntime's intra-op
    thread count (1 is fastest for small recurrent models). ``workers`` (default: the number of
    CPUs) splits fused calls of batch >= PARALLEL_MIN_BATCH (sampling forms: >=
    SAMPLING_PARALLEL_MIN_BATCH) across that many threads; 1 turns that off. NaN and infinity in
    inputs are refused unless ``allow_nonfinite``.

    Bounds: ``max_steps`` per call; ``max_memory_bytes`` of arrays one call may allocate (its
    inputs as converted to float32, outputs and states in and out; a larger call is refused
    before it allocates; ``max_output_bytes`` is its old name, still accepted); ``run_timeout``
    seconds for each onnxruntime run (a longer one is stopped with a RunTimeoutError; None: no
    limit). A fused generate runs all its steps in one run: pass a larger run_timeout for very
    long calls, or use generate_iter.

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
    if max_output_bytes is not _UNSET:
        if max_memory_bytes != DEFAULT_MAX_MEMORY_BYTES:
            raise InputValueError("give max_memory_bytes or its old name max_output_bytes, not both")
        max_memory_bytes = max_output_bytes
    options = {
        "threads": check_count(threads, "threads", 0, MAX_THREADS),
        "workers": check_count((os.cpu_count() or 1) if workers is None else workers, "workers", 1, MAX_THREADS),
        "max_steps": check_count(max_steps, "max_steps", 1, MAX_INT64),
        "max_memory_bytes": check_count(max_memory_bytes, "max_memory_bytes", 1, MAX_INT64),
        "run_timeout": check_run_timeout(run_timeout),
    }
    if not isinstance(allow_nonfinite, (bool, np.bool_)):
        raise InputValueError(f"allow_nonfinite must be True or False, got {allow_nonfinite!r:.80}")
    manifest, manifest_digest = read_manifest_pinned(folder, digest)
    check_files(folder, manifest)
    entries = {}
    for entry in manifest.files:
        form = STEP if entry.role == ROLE_STEP_ONNX else entry.role
        if form in FORMS and form not in entries:
            entries[form] = entry
    if STEP not in entries:
        raise ArtifactError(f"the manifest of {str(folder)!r} lists no file with role {ROLE_STEP_ONNX!r}")
    kind = Model if classic_shaped(manifest) else GeneralModel
    if kind is Model and manifest.layout == BATCH_FIRST:
        kind = BatchFirstModel
    return kind(
        folder,
        manifest,
        entries,
        device=device,
        allow_nonfinite=bool(allow_nonfinite),
        manifest_digest=manifest_digest,
        **options,
    )


def _read_checked(folder: Path, entry: FileEntry) -> bytes:
    """The bytes of a listed file, read once and checked against the manifest's size and sha256."""
    data = resolve_file(folder, entry).read_bytes()
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise IntegrityError(f"{entry.name!r} changed after it was checked: its bytes no longer match the manifest")
    return data


def _model_source(folder: Path, manifest: Manifest, entry: FileEntry) -> tuple[bytes, dict[str, bytes]]:
    """What onnxruntime is given for ``entry``: the model's bytes and the bytes of every external
    data file it refers to, each read once and checked against the manifest, so that every byte
    onnxruntime uses is a byte that was hashed (it reads external data from these buffers, never
    from the disk). External data must be a file listed (and so hashed) in the manifest."""
    data = _read_checked(folder, entry)
    listed = {f.name: f for f in manifest.files}
    external = {}
    for location in external_data_locations(data, entry.name):
        if location not in listed:
            raise IntegrityError(
                f"{entry.name!r} refers to external data {location!r}, which is not a file listed (and hashed) "
                "in the manifest; external data must be a plain file name inside the folder"
            )
        if location not in external:
            external[location] = _read_checked(folder, listed[location])
    return data, external


def _create_session(
    source: bytes, external: dict[str, bytes], name: str, device: str, threads: int, *, arena: bool = True
) -> ort.InferenceSession:
    wanted = _PROVIDERS[device]
    available = ort.get_available_providers()
    if wanted not in available:
        raise DeviceError(
            f"device {device!r} needs onnxruntime's {wanted}, but this onnxruntime offers only "
            f"{available}; install onnxruntime-gpu (pip install onnxruntime-gpu) with a matching CUDA"
        )
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


Rows = int | slice | np.ndarray | None  # of a state array: one row, a range, gathered rows, all


class BoundStep:
    """The step model bound once to preallocated buffers of one batch size: a run is one
    onnxruntime call with no allocation and no rebinding (at batch 1 a bound run costs ~4 us,
    ~5 us with the state copied in and out, a ``session.run`` ~7-8 us, and rebinding one tensor
    ~3 us, so everything is bound once; NOTES.md).

    The state stays in the bound buffers between runs: two IO bindings take turns (ping-pong),
    one reads state buffers A and writes B, the other reads B and writes A. Nothing is checked
    here: give it inputs returned by `Model.check_x` / `Model.check_state` or produced by the
    runtime. Not thread-safe: one caller at a time per BoundStep (a model can bind many).

    On ``cuda`` the buffers are CUDA OrtValues and each run copies x in and y out; that path is
    untested (no GPU on the CI machine).
    """

    def __init__(self, model: Model, batch_size: int) -> None:
        self.batch_size = batch_size
        self._session = model.step_session
        self._guard = RunGuard(model.run_timeout)  # this runner's RunOptions: one caller at a time
        self._what = model.step_file
        self._host = model.device == "cpu"  # buffers are numpy arrays that onnxruntime reads and writes
        shapes = {
            model.input_name: (batch_size, model.input_size),
            model.output_name: (batch_size, model.output_size),
        }
        state_shapes = [(batch_size, size) for size in model.state_sizes]
        if self._host:
            self._x, self._y = (np.zeros(shape, np.float32) for shape in shapes.values())
            self._states = tuple(tuple(np.zeros(shape, np.float32) for shape in state_shapes) for _ in range(2))
            values = [ort.OrtValue.ortvalue_from_numpy(a) for a in (self._x, self._y)]  # shares the memory
            state_values = [[ort.OrtValue.ortvalue_from_numpy(a) for a in side] for side in self._states]
        else:

            def value(shape: tuple[int, int]) -> ort.OrtValue:
                return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, model.device, 0)

            values = [value(shape) for shape in shapes.values()]
            state_values = [[value(shape) for shape in state_shapes] for _ in range(2)]
            self._states = tuple(tuple(side) for side in state_values)
        self._x_value, self._y_value = values
        if self._host:
            self._ys = self._y.reshape(1, batch_size, model.output_size)  # a view: y as one step of a sequence
        self._bindings = []
        for side in (0, 1):
            binding = self._session.io_binding()
            binding.bind_ortvalue_input(model.input_name, self._x_value)
            binding.bind_ortvalue_output(model.output_name, self._y_value)
            for name, output, read, write in zip(
                model.state_names, model.state_outputs, state_values[side], state_values[1 - side]
            ):
                binding.bind_ortvalue_input(name, read)
                binding.bind_ortvalue_output(output, write)
            self._bindings.append(binding)
        self._side = 0  # the binding of the next run; it reads self._states[self._side]
        self.load_state(model.initial_state(batch_size))

    def run(self, x: Any, out: np.ndarray | None = None) -> np.ndarray:
        """One step from the bound state with input ``x`` (anything that assigns to a checked
        (batch, input_size) float32 array); the new state stays bound. Returns y: a new array,
        or ``out`` (batch, output_size) with y written into it."""
        if self._host:
            self._x[...] = x
        else:
            shape = self._x_value.shape()
            flat = np.broadcast_to(np.asarray(x, np.float32).reshape(-1), (shape[0] * shape[1],))
            self._x_value.update_inplace(np.ascontiguousarray(flat).reshape(shape))
        self._run(self._bindings[self._side])
        self._side ^= 1
        y = self._y if self._host else self._y_value.numpy()
        if out is None:
            return y.copy() if self._host else y
        out[...] = y
        return out

    def step(self, x: np.ndarray, state: State, sequence: bool = False) -> tuple[np.ndarray, State]:
        """`Model.run_step` through the bound buffers: loads ``state``, runs, returns (y, new state)
        as new arrays; y is (1, batch, output_size) if ``sequence`` (one step of predict or
        generate). Checked inputs only."""
        if self._host:  # `Model.run_step`'s hot path, inlined
            for buffer, source in zip(self._states[self._side], state):
                buffer[...] = source
            self._x[...] = x
            guard = self._guard  # `_run`, inlined
            guard.since = monotonic()
            try:
                self._session.run_with_iobinding(self._bindings[self._side], guard.options)
            except ORT_ERRORS as error:
                guard.recover(error, self._what, self._session.run_with_iobinding, self._bindings[self._side])
            guard.since = 0.0
            self._side ^= 1
            y = self._ys.copy() if sequence else self._y.copy()
            return y, tuple([buffer.copy() for buffer in self._states[self._side]])
        self.load_state(state)
        y = self.run(x)
        return (y.reshape(1, *y.shape) if sequence else y), self.state

    def step_rows(self, x: np.ndarray, states: State | list[np.ndarray], rows: Rows) -> np.ndarray:
        """One step of rows ``rows`` of the state arrays ``states`` (each (n, size), updated in
        place) with inputs ``x``: gather, run, scatter. Returns y (batch, output_size)."""
        if self._host and type(rows) is int:  # one stream on the CPU: the pool's hot path, inlined
            for buffer, source in zip(self._states[self._side], states):
                buffer[0] = source[rows]
            self._x[...] = x
            self._run(self._bindings[self._side])
            self._side ^= 1
            for buffer, target in zip(self._states[self._side], states):
                target[rows] = buffer[0]
            return self._y.copy()
        self.load_state(states, rows)
        y = self.run(x)
        self.store_state(states, rows)
        return y

    def _run(self, binding: Any) -> None:
        """One run of ``binding`` under the model's run_timeout; onnxruntime refuses outputs of
        another shape or dtype than the bound buffers (an ArtifactError here)."""
        guard = self._guard
        guard.since = monotonic()
        try:
            self._session.run_with_iobinding(binding, guard.options)
        except ORT_ERRORS as error:
            guard.recover(error, self._what, self._session.run_with_iobinding, binding)
        guard.since = 0.0

    @property
    def state(self) -> State:
        """A copy of the bound state (what the next run reads), one (batch, size) array per tensor."""
        if self._host:
            return tuple([buffer.copy() for buffer in self._states[self._side]])
        return tuple([value.numpy() for value in self._states[self._side]])

    def load_state(self, sources: State | list[np.ndarray], rows: Rows = None) -> None:
        """Sets the bound state to ``sources`` (each (batch, size)), or to rows ``rows`` of them
        (an int for batch 1, a slice, or an index array: a gather without a temporary)."""
        buffers = self._states[self._side]
        if not self._host:
            for buffer, source in zip(buffers, sources):
                selected = source if rows is None else source[rows]
                buffer.update_inplace(np.ascontiguousarray(selected, np.float32).reshape(buffer.shape()))
        elif rows is None or type(rows) is slice:
            for buffer, source in zip(buffers, sources):
                buffer[...] = source if rows is None else source[rows]
        elif type(rows) is int or isinstance(rows, np.integer):
            for buffer, source in zip(buffers, sources):
                buffer[0] = source[rows]
        else:
            for buffer, source in zip(buffers, sources):
                np.take(source, rows, axis=0, out=buffer)

    def store_state(self, targets: State | list[np.ndarray], rows: Rows = None) -> None:
        """Copies the bound state into ``targets``, or into rows ``rows`` of them (a scatter)."""
        buffers = self._states[self._side]
        if not self._host:
            buffers = tuple(value.numpy() for value in buffers)
        if rows is None:
            for buffer, target in zip(buffers, targets):
                target[...] = buffer
        elif type(rows) is int or isinstance(rows, np.integer):
            for buffer, target in zip(buffers, targets):
                target[rows] = buffer[0]
        else:
            for buffer, target in zip(buffers, targets):
                target[rows] = buffer


def classic_shaped(manifest: Manifest) -> bool:
    """Whether the classic `Model` runs it: one float32 (batch, n) input and output, float32
    (batch, size) states, no tokens or logits, and a closed loop (if declared) that feeds the output
    back as it is. The layout may be batch_first (`BatchFirstModel`)."""
    if len(manifest.inputs) != 1 or len(manifest.outputs) != 1:
        return False
    for spec in (*manifest.inputs, *manifest.outputs, *manifest.state):
        if spec.dtype != "float32" or len(spec.shape) != 2 or spec.shape[0] != BATCH_AXIS:
            return False
        if spec.is_tokens or spec.is_logits:
            return False
    feedback = manifest.feedback
    return feedback is None or (
        feedback.via == IDENTITY
        and feedback.output == manifest.outputs[0].name
        and feedback.input == manifest.inputs[0].name
    )


def _refuse_sampler() -> None:
    raise InputValueError(
        "sampler= is for models whose generate samples the next token from logits (manifest feedback via "
        "'sample'); this model feeds its output back as it is"
    )


class Model:
    """A loaded model. All methods take and return float32 numpy arrays.

    Shapes: ``x`` is (batch, input_size); each state tensor is (batch, size) in manifest order;
    ``y`` is (batch, output_size). When a size is 1, a (batch,) array or a scalar is accepted
    for ``x`` too. ``predict`` and ``generate`` run the fastest form for the call (see
    `runtime.fused.choose_form`) unless ``form=`` names one of ``model.forms``. The model is
    safe to share between threads.

    Trust: ``manifest_digest`` is the sha256 of the manifest bytes it was built from (pin a
    folder with it: ``runtime.load(folder, digest=...)``). Every session's declared inputs and
    outputs are checked against the manifest when it is created, and what each run returns is
    checked too (shape, float32): a model that breaks its contract is an ArtifactError, never a
    wrong answer. Each onnxruntime run is stopped after ``run_timeout`` seconds
    (RunTimeoutError); a call that would allocate more than ``max_memory_bytes`` is refused.

    ``classic`` is True for this class (one float32 input, one output, (batch, size) states);
    `runtime.load` gives a `GeneralModel` (``classic`` False) for any other signature of a format 2
    folder. ``inputs``, ``outputs``, ``states`` are the manifest's specs, ``layout`` its sequence
    layout, ``feedback`` how generate closes the loop (None: it cannot).
    """

    classic = True

    def __init__(
        self,
        folder: str | os.PathLike,
        manifest: Manifest,
        entries: dict[str, FileEntry],
        *,
        device: str,
        threads: int,
        workers: int,
        allow_nonfinite: bool,
        max_steps: int,
        max_memory_bytes: int,
        run_timeout: float | None = DEFAULT_RUN_TIMEOUT,
        manifest_digest: str = "",
    ) -> None:
        self.folder = Path(folder)
        self.manifest = manifest
        self.manifest_digest = manifest_digest  # sha256 of the manifest.json bytes that were parsed
        self.device = device
        self.threads = threads
        self.workers = max(1, int(workers))
        self._pool: ThreadPoolExecutor | None = None
        self.allow_nonfinite = allow_nonfinite
        self.max_steps = max_steps
        self.max_memory_bytes = max_memory_bytes
        self.run_timeout = run_timeout
        self._guards: list[RunGuard] = []  # idle RunOptions for session.run calls (list pop/append: thread-safe)
        self.inputs, self.outputs, self.states = manifest.inputs, manifest.outputs, manifest.state
        self.input_names = tuple(t.name for t in manifest.inputs)
        self.output_names = tuple(t.name for t in manifest.outputs)
        self.state_names = tuple(s.name for s in manifest.state)
        self.state_outputs = tuple(s.output for s in manifest.state)
        self.layout = manifest.layout
        self.feedback = manifest.closed_loop
        self._host = device == "cpu"
        self._entries = dict(entries)
        self._forms = tuple(form for form in FORMS if form in self._entries)  # the folder's forms, fixed
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._lock = threading.Lock()
        self._init_signature(manifest)
        # fail at load, not at the first call, if the step model is unusable
        self._step_session = self._session(STEP)

    def _init_signature(self, manifest: Manifest) -> None:
        """The classic signature's sizes and caches (a general model sets up its own)."""
        if not classic_shaped(manifest):
            raise ArtifactError("this Model runs the classic signature; load the folder with runtime.load")
        self.input_name = manifest.inputs[0].name
        self.output_name = manifest.outputs[0].name
        self.input_size = int(manifest.inputs[0].shape[1])
        self.output_size = int(manifest.outputs[0].shape[1])
        self.state_sizes = tuple(int(s.shape[1]) for s in manifest.state)
        self._input_names = (self.input_name, *self.state_names)
        self._output_names = [self.output_name, *self.state_outputs]
        self._initial = tuple(np.asarray(s.initial, dtype=np.float32) for s in manifest.state)
        self._initial_cache: dict[int, State] = {}
        self._bound: dict[int, BoundStep] = {}  # run_step's runners by batch size, used under _bound_lock
        self._bound_lock = threading.Lock()
        self._row_bytes = self.output_size * 4  # of one step's float32 output, per stream
        # bytes of one stream's arrays in one call: x and y of a step, the state in and out
        self._x_bytes = self.input_size * 4
        self._state_bytes = 2 * 4 * sum(self.state_sizes)
        self._step_bytes = self._x_bytes + self._row_bytes + self._state_bytes
        self._feeds_back = self.input_size == self.output_size  # generate can feed y back as x
        self._cell = str(manifest.model.get("kind", ""))  # the built-in cell kind, for choose_form
        self._hidden = max(self.state_sizes, default=0)  # the widest state, for choose_form
        # per fused form once its session exists: (session, file name, input names, output names),
        # so that a call builds none of them (~3 us of a ~8 us overhead per fused call, NOTES.md)
        self._fused: dict[str, tuple[ort.InferenceSession, str, tuple[str, ...], list[str]]] = {}

    @property
    def forms(self) -> tuple[str, ...]:
        """The forms this folder can run: ``step`` and the fused forms it ships."""
        return self._forms

    @property
    def loaded_forms(self) -> tuple[str, ...]:
        """The forms whose onnxruntime session exists: ``step`` from `load`, fused forms once used
        (call each form once to warm a model up before serving)."""
        return tuple(form for form in FORMS if form in self._sessions)

    @property
    def providers(self) -> list[str]:
        """The execution providers onnxruntime actually uses, first is preferred."""
        return list(self._step_session.get_providers())

    @property
    def max_output_bytes(self) -> int:
        """The old name of `max_memory_bytes` (it now counts inputs and states too)."""
        return self.max_memory_bytes

    @property
    def step_file(self) -> str:
        """The name of the step model's ONNX file in the folder."""
        return self._entries[STEP].name

    @property
    def step_sha256(self) -> str:
        """The sha256 of the step model's ONNX file, as the manifest records it (and load checked):
        the model's fingerprint, which tags saved stream states."""
        return self._entries[STEP].sha256

    @property
    def step_session(self) -> ort.InferenceSession:
        """The onnxruntime session of the step model, shared by every call (for benchmarks and
        IO binding; inputs ``(input_name, *state_names)``, outputs ``(output_name, *state_outputs)``)."""
        return self._step_session

    def bind(self, batch_size: int) -> BoundStep:
        """A `BoundStep` of ``batch_size`` streams, starting from the initial state: the fastest
        way to run many single steps (the state stays inside onnxruntime's bound buffers)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputValueError(f"batch_size must be a whole number >= 1, got {batch_size!r:.80}")
        check_memory(int(batch_size) * self._step_bytes, f"a bound step of batch {batch_size}", self.max_memory_bytes)
        return BoundStep(self, int(batch_size))

    def __repr__(self) -> str:
        return (
            f"Model({str(self.folder)!r}, kind={self.manifest.model.get('kind')!r}, "
            f"input_size={self.input_size}, state={dict(zip(self.state_names, self.state_sizes))}, "
            f"forms={list(self.forms)}, providers={self.providers})"
        )

    def _session(self, form: str) -> ort.InferenceSession:
        session = self._sessions.get(form)
        if session is not None:
            return session
        with self._lock:
            if form not in self._sessions:
                entry = self._entries[form]
                source, external = _model_source(self.folder, self.manifest, entry)
                # The sampling forms' Loop bodies allocate many small tensors each step: plain malloc
                # beats the CPU arena there (batch 1: 7-10% faster greedy, 1-7% temperature; docs/sampling-bench.txt).
                arena = form not in SAMPLING_FORMS
                session = _create_session(source, external, entry.name, self.device, self.threads, arena=arena)
                inputs, outputs = self._form_io(form)
                check_session(session, form, entry.name, inputs, outputs)
                self._sessions[form] = session
            return self._sessions[form]

    def _form_io(self, form: str) -> tuple[list, list]:
        """What the ONNX model of ``form`` must declare (`runtime.contract`)."""
        return form_io(
            form,
            self.input_size,
            self.output_size,
            self.state_names,
            self.state_outputs,
            self.state_sizes,
            self.input_name,
            self.output_name,
        )

    # ---- inputs ---------------------------------------------------------------------------

    def initial_state(self, batch_size: int = 1) -> State:
        """The manifest's initial state, repeated for ``batch_size`` streams."""
        return tuple(np.tile(row, (batch_size, 1)) for row in self._initial)

    def _initial_rows(self, batch_size: int) -> State:
        """The initial state for ``batch_size`` streams, shared and read-only (for feeding only)."""
        state = self._initial_cache.get(batch_size)
        if state is None:
            state = self.initial_state(batch_size)
            for array in state:
                array.flags.writeable = False
            if len(self._initial_cache) >= INITIAL_CACHE:
                self._initial_cache.clear()
            self._initial_cache[batch_size] = state
        return state

    def check_x(self, x: Any, name: str = "x") -> np.ndarray:
        """A caller's input as a C-contiguous (batch, input_size) float32 array, or a typed error
        (ShapeError, DtypeError, InputValueError for NaN/infinity/float32 overflow). A (batch,)
        array or a scalar is accepted when input_size is 1. A C-contiguous float32 array of the
        right shape comes back as it is: the check is then a finiteness test, no copy."""
        if is_ready(x, 2, self.input_size, self.allow_nonfinite):
            return x
        expected = f"(batch, {self.input_size})"
        x = self._unwrap(x, name)
        self._check_conversion(x, name)
        array = as_float32(x, name, expected, allow_nonfinite=self.allow_nonfinite)
        if self.input_size == 1 and array.ndim in (0, 1):
            array = array.reshape(-1, 1)
        if array.ndim != 2 or array.shape[1] != self.input_size:
            raise ShapeError(f"input {name!r} must be {expected} float32, got {array.shape} {np.asarray(x).dtype}")
        check_batch(array, name, expected)
        return array

    def check_state(self, state: Any, batch_size: int) -> State:
        """A caller's state as a tuple of C-contiguous (batch_size, size) float32 arrays in manifest
        order, or a typed error; ``None`` is the initial state (new arrays). A bare array is
        accepted for a one-tensor state. Arrays that already fit come back as they are."""
        if type(state) is tuple and len(state) == len(self.state_sizes):  # the fast path
            for value, size in zip(state, self.state_sizes):
                if not (is_ready(value, 2, size, self.allow_nonfinite) and value.shape[0] == batch_size):
                    break
            else:
                return state
        if state is None:
            return self.initial_state(batch_size)
        if isinstance(state, np.ndarray) or not isinstance(state, (tuple, list)):
            state = (state,)
        if len(state) != len(self.state_names):
            raise ShapeError(
                f"state must be {len(self.state_names)} array(s) {list(self.state_names)}, got {len(state)}"
            )
        arrays = []
        for name, size, value in zip(self.state_names, self.state_sizes, state):
            expected = f"({batch_size}, {size})"
            array = as_float32(value, name, expected, allow_nonfinite=self.allow_nonfinite)
            if array.shape != (batch_size, size):
                raise ShapeError(
                    f"state {name!r} must be {expected} float32 to match the batch of x, got {array.shape}"
                )
            arrays.append(array)
        return tuple(arrays)

    def _unwrap(self, value: Any, name: str) -> Any:
        """The array of a dict that names the model's one input (``{"x": array}``, as a general
        model takes its inputs); an InputValueError for a dict of other names."""
        if not isinstance(value, dict):
            return value
        if list(value) != [self.input_name]:
            raise InputValueError(
                f"{name} names the inputs {list(value)[:8]}, but this model has the classic signature: one "
                f"float32 input {self.input_name!r} (batch, {self.input_size}); pass the array, or a dict "
                f"of that one name"
            )
        return value[self.input_name]

    def _check_conversion(self, value: Any, name: str) -> None:
        """Refuses an array whose float32 copy alone would take more than max_memory_bytes, before
        converting it."""
        if isinstance(value, np.ndarray) and value.size * 4 > self.max_memory_bytes:
            check_memory(value.size * 4, f"input {name!r} as float32", self.max_memory_bytes)

    def _input_sequence(self, xs: Any) -> tuple[np.ndarray, bool]:
        """(xs as (steps, batch, input_size), whether it came as a flat (steps,) series)."""
        if is_ready(xs, 3, self.input_size, self.allow_nonfinite):
            return xs, False
        expected = f"(steps, batch, {self.input_size})" + (" or (steps,)" if self.input_size == 1 else "")
        xs = self._unwrap(xs, "xs")
        self._check_conversion(xs, "xs")
        array = as_float32(xs, "xs", expected, allow_nonfinite=self.allow_nonfinite)
        flat = self.input_size == 1 and array.ndim == 1
        if flat:
            array = array.reshape(-1, 1, 1)
        if array.ndim != 3 or array.shape[2] != self.input_size:
            raise ShapeError(f"input 'xs' must be {expected} float32, got {array.shape}")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ShapeError(f"input 'xs' must be {expected} with steps >= 1 and batch >= 1, got {array.shape}")
        return array, flat

    def _pick(self, kind: str, form: str | None, batch_size: int, steps: int) -> str:
        allowed = (STEP, *(SEQUENCE_FORMS if kind == "predict" else ROLLOUT_FORMS))
        if form is None:
            return choose_form(kind, batch_size, steps, self._forms, self._cell, self._hidden)
        if form not in allowed:
            raise InputValueError(f"{kind} runs in one of the forms {list(allowed)}, got {form!r}")
        if form not in self.forms:
            raise InputValueError(f"form {form!r} is not in this artifact folder; it has {list(self.forms)}")
        return form

    # ---- running ------------------------------------------------------------------------

    def run_step(self, x: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One step on arrays that are already checked (by `check_x` and `check_state`, or produced
        by the runtime): nothing is validated. Returns (y (batch, output_size), new state)."""
        return self._run_step(x, state, False)

    def _run_step(self, x: np.ndarray, state: State, sequence: bool) -> tuple[np.ndarray, State]:
        """`run_step`; with ``sequence``, x may be (1, batch, input_size) and y comes as
        (1, batch, output_size): one step of predict or generate."""
        batch_size = x.shape[-2]
        if batch_size <= BOUND_MAX_BATCH and self._host and self._bound_lock.acquire(blocking=False):
            try:
                return self._shared_runner(batch_size).step(x, state, sequence)
            finally:
                self._bound_lock.release()
        if x.ndim == 3:
            x = x[0]
        feed = dict(zip(self._input_names, (x, *state)))
        y, *new_state = self._run_session(self._step_session, self.step_file, self._output_names, feed)
        self._check_outputs(STEP, y, (batch_size, self.output_size), new_state, batch_size)
        return (y.reshape(1, *y.shape) if sequence else y), tuple(new_state)

    def _run_session(self, session: ort.InferenceSession, what: str, outputs: list[str], feed: dict) -> list:
        """``session.run`` under the model's run_timeout, its failures typed (``what`` names the file)."""
        guards = self._guards
        try:
            guard = guards.pop()
        except IndexError:
            guard = RunGuard(self.run_timeout)
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

    def _check_outputs(self, form: str, y: Any, y_shape: tuple[int, ...], states: Any, batch_size: int) -> None:
        """Refuses what a run returned unless y is ``y_shape`` and each state (batch_size, size),
        all float32: a model that breaks its contract is an ArtifactError, never a wrong answer."""
        if type(y) is np.ndarray and y.shape == y_shape and y.dtype == FLOAT32:
            for value, size in zip(states, self.state_sizes):
                if not (type(value) is np.ndarray and value.shape == (batch_size, size) and value.dtype == FLOAT32):
                    break
            else:
                return
        got = [f"{getattr(a, 'shape', '?')} {getattr(a, 'dtype', type(a).__name__)}" for a in (y, *states)]
        wanted = [f"{y_shape} float32", *(f"{(batch_size, size)} float32" for size in self.state_sizes)]
        raise ArtifactError(
            f"the ONNX model of form {form!r} ({self._entries[form].name}) returned {', '.join(got)}, "
            f"the manifest promises {', '.join(wanted)}"
        )

    def _shared_runner(self, batch_size: int) -> BoundStep:
        """The model's own BoundStep for ``batch_size``; the caller holds ``_bound_lock``."""
        runner = self._bound.get(batch_size)
        if runner is None:
            if len(self._bound) >= BOUND_CACHE:
                del self._bound[next(iter(self._bound))]
            runner = self._bound[batch_size] = BoundStep(self, batch_size)
        return runner

    def _run_fused(self, form: str, first: np.ndarray, state: State, steps: int | None) -> tuple[np.ndarray, State]:
        batch_axis = 1 if steps is None else 0  # xs is (T, B, n_in), x0 is (B, n_in)
        batch_size = first.shape[batch_axis]
        if batch_size < PARALLEL_MIN_BATCH:  # parts below would be < 2: skip working it out
            return self._run_fused_part(form, first, state, steps)
        parts = min(self.workers, batch_size // (PARALLEL_MIN_BATCH // 2))
        if parts < 2 or self.device != "cpu":
            return self._run_fused_part(form, first, state, steps)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="rnn-runtime")
        firsts = np.array_split(first, parts, axis=batch_axis)
        states = zip(*(np.array_split(s, parts, axis=0) for s in state))
        futures = [self._pool.submit(self._run_fused_part, form, f, tuple(s), steps) for f, s in zip(firsts, states)]
        results = [future.result() for future in futures]
        ys = np.concatenate([r[0] for r in results], axis=1)
        return ys, tuple(np.concatenate(parts_, axis=0) for parts_ in zip(*(r[1] for r in results)))

    def _run_fused_part(
        self, form: str, first: np.ndarray, state: State, steps: int | None
    ) -> tuple[np.ndarray, State]:
        fused = self._fused.get(form)
        if fused is None:
            session = self._session(form)  # checks the session against the contract when it creates it
            inputs, outputs = io_names(form, self.state_names, self.state_outputs)
            fused = self._fused[form] = (session, self._entries[form].name, tuple(inputs), outputs)
        session, name, inputs, outputs = fused
        feed = dict(zip(inputs, (first, *state)))
        if steps is not None:
            feed["steps"] = np.array([steps], dtype=np.int64)
            batch_size, ys_shape = first.shape[0], (steps, first.shape[0], self.output_size)
        else:
            batch_size, ys_shape = first.shape[1], (first.shape[0], first.shape[1], self.output_size)
        ys, *new_state = self._run_session(session, name, outputs, feed)
        self._check_outputs(form, ys, ys_shape, new_state, batch_size)
        return ys, tuple(new_state)

    def _step_loop(self, xs: np.ndarray | None, x: np.ndarray | None, state: State, ys: np.ndarray) -> State:
        """Runs the step model once per row of ``ys``: teacher-forced from ``xs``, or closed loop
        from ``x``. On CUDA the state stays on the device between steps (IO binding)."""
        if self.device == "cuda":
            return self._step_loop_bound(xs, x, state, ys)
        batch_size = ys.shape[1]
        shared = batch_size <= BOUND_MAX_BATCH and self._bound_lock.acquire(blocking=False)
        try:  # the state stays in the runner's bound buffers from step to step
            runner = self._shared_runner(batch_size) if shared else BoundStep(self, batch_size)
            runner.load_state(state)
            for t in range(ys.shape[0]):
                x = runner.run(xs[t] if xs is not None else x, out=ys[t])
            return runner.state
        finally:
            if shared:
                self._bound_lock.release()

    def _step_loop_bound(self, xs: np.ndarray | None, x: np.ndarray | None, state: State, ys: np.ndarray) -> State:
        session = self._step_session
        guard = RunGuard(self.run_timeout)
        binding = session.io_binding()
        device = "cuda" if self.device == "cuda" else "cpu"
        current = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(s), device, 0) for s in state]
        x_value = None if x is None else ort.OrtValue.ortvalue_from_numpy(x, device, 0)
        for t in range(ys.shape[0]):
            if xs is not None:
                binding.bind_cpu_input(self.input_name, np.ascontiguousarray(xs[t]))
            else:
                binding.bind_ortvalue_input(self.input_name, x_value)
            for name, value in zip(self.state_names, current):
                binding.bind_ortvalue_input(name, value)
            for name in self._output_names:
                binding.bind_output(name, device, 0)
            guard.since = monotonic()
            try:
                session.run_with_iobinding(binding, guard.options)
            except ORT_ERRORS as error:
                guard.recover(error, self.step_file, session.run_with_iobinding, binding)
            guard.since = 0.0
            x_value, *current = binding.get_outputs()
            y = x_value.numpy()
            if t == 0 or y.shape != ys.shape[1:]:  # the full check once, then one tuple compare a step
                self._check_outputs(STEP, y, ys.shape[1:], [value.numpy() for value in current], ys.shape[1])
            ys[t] = y
        return tuple(value.numpy() for value in current)

    def step(self, x: Any, state: Any = None) -> tuple[np.ndarray, State]:
        """One step for a batch of streams: returns (y (batch, output_size), new state).

        Inputs are checked as `check_x` and `check_state` do; ``state=None`` is the initial state."""
        x = self.check_x(x)
        if x.shape[0] * self._step_bytes > self.max_memory_bytes:
            check_memory(x.shape[0] * self._step_bytes, f"a step of batch {x.shape[0]}", self.max_memory_bytes)
        state = self._initial_rows(x.shape[0]) if state is None else self.check_state(state, x.shape[0])
        return self._run_step(x, state, False)

    def predict(self, xs: Any, state: Any = None, *, form: str | None = None) -> tuple[np.ndarray, State]:
        """Teacher-forced run over a sequence: each step gets the given input.

        ``xs`` is (steps, batch, input_size), or (steps,) for one stream of a one-input model.
        Returns outputs shaped like ``xs`` (with output_size) and the final state.
        """
        sequence, flat = self._input_sequence(xs)
        steps, batch_size, _ = sequence.shape
        self._check_call_memory("predict", steps, batch_size)
        current = self._initial_rows(batch_size) if state is None else self.check_state(state, batch_size)
        if steps == 1 and form is None:  # straight to the step model: no loop, no output buffer
            ys, current = self._run_step(sequence, current, True)
        else:
            chosen = self._pick("predict", form, batch_size, steps)
            if chosen == STEP:
                ys = np.empty((steps, batch_size, self.output_size), dtype=np.float32)
                current = self._step_loop(sequence, None, current, ys)
            else:
                ys, current = self._run_fused(chosen, sequence, current, None)
        return (ys.reshape(steps) if flat and self.output_size == 1 else ys), current

    def generate(
        self, x0: Any, steps: Any, state: Any = None, *, form: str | None = None, sampler: Any = None
    ) -> tuple[np.ndarray, State]:
        """The autoregressive context loop: each output is fed back as the next input.

        ``x0`` is (batch, input_size) (a scalar or (batch,) for one input); returns the
        outputs (steps, batch, output_size) and the final state. ``sampler`` is for models that
        sample tokens from logits; here it is refused.
        """
        if sampler is not None:
            _refuse_sampler()
        x, steps, current, _ = self._generate_inputs(x0, steps, state)
        batch_size = x.shape[0]
        if steps == 1 and form is None:  # a fused rollout of one step is the step model
            return self._run_step(x, current, True)
        return self._generate(x, steps, current, self._pick("generate", form, batch_size, steps))

    def _check_call_memory(self, kind: str, steps: int, batch_size: int) -> None:
        """Refuses a predict or generate call of ``steps`` x ``batch_size`` whose inputs (xs for
        predict, x0 for generate), outputs and states would take more than max_memory_bytes."""
        inputs = steps * self._x_bytes if kind == "predict" else self._x_bytes
        size = batch_size * (inputs + steps * self._row_bytes + self._state_bytes)
        if size > self.max_memory_bytes:
            check_memory(size, f"{kind} of {steps} steps x batch {batch_size}", self.max_memory_bytes)

    def _generate_inputs(
        self, x0: Any, steps: Any, state: Any, chunk: Any = None
    ) -> tuple[np.ndarray, int, State, int | None]:
        if not self._feeds_back:
            raise ShapeError(
                f"generate feeds each output back as the next input, so output size {self.output_size} "
                f"must equal input size {self.input_size}"
            )
        x = self.check_x(x0, "x0")
        if type(steps) is not int or not 1 <= steps <= self.max_steps:  # the common case costs no call
            steps = check_steps(steps, self.max_steps)
        if chunk is not None:
            chunk = check_steps(chunk, self.max_steps)
        self._check_call_memory("generate", steps if chunk is None else min(chunk, steps), x.shape[0])
        current = self._initial_rows(x.shape[0]) if state is None else self.check_state(state, x.shape[0])
        return x, steps, current, chunk

    def _generate(self, x: np.ndarray, steps: int, state: State, form: str) -> tuple[np.ndarray, State]:
        if steps == 1:
            return self._run_step(x, state, True)
        if form == STEP:
            ys = np.empty((steps, x.shape[0], self.output_size), dtype=np.float32)
            return ys, self._step_loop(None, x, state, ys)
        return self._run_fused(form, x, state, steps)

    def generate_iter(
        self,
        x0: Any,
        steps: Any,
        state: Any = None,
        *,
        chunk: int = DEFAULT_CHUNK,
        form: str | None = None,
        sampler: Any = None,
    ) -> Iterator[tuple[np.ndarray, State]]:
        """`generate` in bounded memory: yields (outputs (n <= chunk, batch, output_size), state)
        chunk by chunk, each chunk continuing from the last output and state of the one before."""
        if sampler is not None:
            _refuse_sampler()
        x, steps, current, chunk = self._generate_inputs(x0, steps, state, chunk)
        done = 0
        while done < steps:
            n = min(chunk, steps - done)
            ys, current = self._generate(x, n, current, self._pick("generate", form, x.shape[0], n))
            done += n
            x = ys[-1]
            yield ys, current


class BatchFirstModel(Model):
    """A classic-signature model whose sequences are batch-first (manifest ``layout``
    "batch_first"): predict takes xs (batch, steps, input_size) and returns (batch, steps,
    output_size); generate and generate_iter return (batch, steps, output_size). Transposed at
    the edges; the step model and the fused forms run time-first as for every classic model."""

    def predict(self, xs: Any, state: Any = None, *, form: str | None = None) -> tuple[np.ndarray, State]:
        expected = f"(batch, steps, {self.input_size})" + (" or (steps,)" if self.input_size == 1 else "")
        xs = self._unwrap(xs, "xs")
        self._check_conversion(xs, "xs")
        array = as_float32(xs, "xs", expected, allow_nonfinite=self.allow_nonfinite)
        if self.input_size == 1 and array.ndim == 1:  # one stream's series: no batch axis to move
            return super().predict(array, state, form=form)
        if array.ndim != 3 or array.shape[2] != self.input_size or not all(array.shape):
            raise ShapeError(
                f"input 'xs' must be {expected} float32 (layout batch_first) with batch and steps >= 1, "
                f"got {array.shape}"
            )
        ys, current = super().predict(np.ascontiguousarray(array.swapaxes(0, 1)), state, form=form)
        return np.ascontiguousarray(ys.swapaxes(0, 1)), current

    def generate(
        self, x0: Any, steps: Any, state: Any = None, *, form: str | None = None, sampler: Any = None
    ) -> tuple[np.ndarray, State]:
        ys, current = super().generate(x0, steps, state, form=form, sampler=sampler)
        return np.ascontiguousarray(ys.swapaxes(0, 1)), current

    def generate_iter(
        self,
        x0: Any,
        steps: Any,
        state: Any = None,
        *,
        chunk: int = DEFAULT_CHUNK,
        form: str | None = None,
        sampler: Any = None,
    ) -> Iterator[tuple[np.ndarray, State]]:
        for ys, current in super().generate_iter(x0, steps, state, chunk=chunk, form=form, sampler=sampler):
            yield np.ascontiguousarray(ys.swapaxes(0, 1)), current


Named = dict[str, np.ndarray]


def _dims(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


class GeneralModel(Model):
    """A loaded model of any signature a format 2 manifest describes: several named inputs (float32
    features (batch, *sizes) or int64 token ids (batch,) below a vocabulary), several outputs
    (values, or logits (batch, V)), states of any rank with the batch axis where the manifest puts
    it, time-first or batch-first sequences, and generation that feeds an output back as it is or
    samples the next token from logits.

    Inputs are a dict ``{name: array}`` (a bare array for a model with one input); outputs are an
    array for a model with one output, else a dict. States are a tuple in manifest order.
    ``predict`` and the step-loop ``generate`` run the step model once per step from Python; a
    sampled ``generate`` of 2 steps or more runs the folder's fused sampling form when it has one
    (``rollout_greedy`` for a greedy sampler, ``rollout_sample`` otherwise), giving the step loop's
    tokens for the same sampler seed (the uniforms are drawn up front and fed to both); from
    `SAMPLING_CELLS_MIN_BATCH` rows it computes nn.GRU layers as Gemm cells, rounded in another
    order than the step model's GRU kernel, so tokens may part there at a float32 tie (as from eager
    PyTorch's; `rnn verify` checks both).
    """

    classic = False

    def _init_signature(self, manifest: Manifest) -> None:
        self._initial = tuple(np.asarray(s.initial, dtype=np.float32).reshape(s.sizes) for s in manifest.state)
        self._initial_cache: dict[int, State] = {}
        self._fetch_names = [*self.output_names, *self.state_outputs]
        self._shapes: dict[int, list[tuple[int, ...]]] = {}  # batch size -> shapes of a step's outputs and states
        self._in_bytes = sum(t.count * (8 if t.dtype == "int64" else 4) for t in self.inputs)  # a stream's, a step
        self._out_bytes = 4 * sum(t.count for t in self.outputs)
        self._state_bytes = 2 * 4 * sum(s.count for s in self.states)
        self._step_bytes = self._in_bytes + self._out_bytes + self._state_bytes
        self._forms = tuple(form for form in (STEP, *SAMPLING_FORMS) if form in self._entries)
        self._fused: dict[str, tuple[ort.InferenceSession, str, list[str], list[str]]] = {}
        self._feedback_output = None if self.feedback is None else self.output_names.index(self.feedback.output)

    def _form_io(self, form: str) -> tuple[list, list]:
        return general_form_io(form, self.inputs, self.outputs, self.states, self.feedback)

    def __repr__(self) -> str:
        return (
            f"GeneralModel({str(self.folder)!r}, inputs={[f'{t.name} {t.describe()}' for t in self.inputs]}, "
            f"outputs={[f'{t.name} {t.describe()}' for t in self.outputs]}, "
            f"state={[f'{s.name} {s.describe()}' for s in self.states]}, layout={self.layout!r}, "
            f"forms={list(self.forms)}, providers={self.providers})"
        )

    def _unsupported(self, what: str) -> UnsupportedError:
        return UnsupportedError(
            f"{what} runs models with the classic signature (one float32 input, one output, (batch, size) "
            f"states); this model has inputs {list(self.input_names)}: use step, predict and generate"
        )

    def bind(self, batch_size: int) -> BoundStep:
        raise self._unsupported("a BoundStep")

    def run_step(self, x: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        raise self._unsupported("run_step")

    # ---- inputs -------------------------------------------------------------------------

    def initial_state(self, batch_size: int = 1) -> State:
        """The manifest's initial state for ``batch_size`` streams, each tensor with its batch axis
        where the manifest puts it (new arrays)."""
        batch_size = check_count(batch_size, "batch_size", 1, MAX_INT64)
        return tuple(
            np.ascontiguousarray(np.repeat(np.expand_dims(row, s.batch_axis), batch_size, axis=s.batch_axis))
            for row, s in zip(self._initial, self.states)
        )

    def check_state(self, state: Any, batch_size: int) -> State:
        """A caller's state as a tuple of C-contiguous float32 arrays of the manifest's shapes at
        ``batch_size`` (the batch axis where each spec has it), or a typed error; ``None`` is the
        initial state. A bare array is accepted for a one-tensor state."""
        if state is None:
            return self.initial_state(batch_size)
        if isinstance(state, np.ndarray) or not isinstance(state, (tuple, list)):
            state = (state,)
        if len(state) != len(self.states):
            raise ShapeError(f"state must be {len(self.states)} array(s) {list(self.state_names)}, got {len(state)}")
        arrays = []
        for spec, value in zip(self.states, state):
            wanted = spec.shape_for(batch_size)
            expected = f"{_dims(spec.shape)} = {wanted}"
            self._check_conversion(value, spec.name)
            array = as_float32(value, spec.name, expected, allow_nonfinite=self.allow_nonfinite)
            if array.shape != wanted:
                raise ShapeError(
                    f"state {spec.name!r} must be {_dims(spec.shape)} float32, {wanted} at the inputs' batch "
                    f"{batch_size}, got {array.shape}"
                )
            arrays.append(array)
        return tuple(arrays)

    def check_x(self, x: Any, name: str = "x") -> Named:  # type: ignore[override]
        """`check_inputs` (a dict of checked arrays, not one array)."""
        return self.check_inputs(x, name)

    def check_inputs(self, x: Any, name: str = "x") -> Named:
        """One step's inputs as ``{name: array}``: float32 (batch, *sizes) for features, int64
        (batch,) ids below the vocabulary for tokens, one batch size for all; or a typed error."""
        return self._check_inputs(x, name, sequence=False)[0]

    def _named(self, x: Any, what: str) -> dict[str, Any]:
        if isinstance(x, dict):
            missing = [n for n in self.input_names if n not in x]
            unknown = [n for n in x if n not in self.input_names]
            if missing or unknown:
                parts = ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}"] if unknown else [])
                raise InputValueError(f"{what} must give the inputs {list(self.input_names)}: {', '.join(parts)}")
            return x
        if len(self.inputs) == 1:
            return {self.input_names[0]: x}
        raise InputValueError(
            f"this model has {len(self.inputs)} inputs {list(self.input_names)}: pass {what} as a dict "
            f"{{name: array}}, got {type(x).__name__}"
        )

    def _check_inputs(self, x: Any, what: str, sequence: bool) -> tuple[Named, int, int]:
        """(the inputs checked, time-first for a sequence, the batch size, the steps (1 for a step))."""
        given = self._named(x, what)
        if sequence:
            lead = ("batch", "steps") if self.layout == BATCH_FIRST else ("steps", "batch")
        else:
            lead = ("batch",)
        sizes: dict[str, tuple[int, str]] = {}  # "batch"/"steps" -> (size, the input it came from)
        named = {}
        for spec in self.inputs:
            value = given[spec.name]
            dims = (*lead, *spec.sizes)
            expected = _dims(dims)
            dtype = "int64" if spec.is_tokens else "float32"
            self._check_conversion(value, spec.name)
            if spec.is_tokens:
                array = as_tokens(value, spec.name, expected, int(spec.vocabulary))
            else:
                array = as_float32(value, spec.name, expected, allow_nonfinite=self.allow_nonfinite)
            shape = array.shape
            if len(shape) != len(dims) or shape[len(lead) :] != spec.sizes:
                raise ShapeError(
                    f"input {spec.name!r} must be {expected} {dtype}, got {shape} {np.asarray(value).dtype}"
                )
            for axis, label in enumerate(lead):
                if shape[axis] == 0:
                    raise ShapeError(f"input {spec.name!r} must be {expected} with {label} >= 1, got {shape}")
                seen = sizes.setdefault(label, (shape[axis], spec.name))
                if seen[0] != shape[axis]:
                    raise ShapeError(
                        f"input {spec.name!r} must be {expected} {dtype} with the {label} of input {seen[1]!r} "
                        f"({seen[0]}), got {shape}: every input has the same {label}"
                    )
            if sequence and self.layout == BATCH_FIRST:
                array = np.ascontiguousarray(array.swapaxes(0, 1))
            named[spec.name] = array
        return named, sizes["batch"][0], sizes["steps"][0] if sequence else 1

    def _check_bytes(self, size: int, what: str) -> None:
        if size > self.max_memory_bytes:
            check_memory(size, what, self.max_memory_bytes)

    # ---- running ------------------------------------------------------------------------

    def _run_general(self, feed: dict[str, np.ndarray], batch_size: int) -> list[np.ndarray]:
        """One run of the step model; refuses outputs and states of another shape or dtype."""
        values = self._run_session(self._step_session, self.step_file, self._fetch_names, feed)
        shapes = self._shapes.get(batch_size)
        if shapes is None:
            if len(self._shapes) >= INITIAL_CACHE:
                self._shapes.clear()
            shapes = [t.shape_for(batch_size) for t in (*self.outputs, *self.states)]
            self._shapes[batch_size] = shapes
        for value, shape in zip(values, shapes):
            if not (type(value) is np.ndarray and value.dtype == FLOAT32 and value.shape == shape):
                got = [f"{getattr(a, 'shape', '?')} {getattr(a, 'dtype', type(a).__name__)}" for a in values]
                raise ArtifactError(
                    f"the ONNX model of form 'step' ({self.step_file}) returned {', '.join(got)}, the manifest "
                    f"promises {', '.join(f'{s} float32' for s in shapes)}"
                )
        return values

    def _result(self, arrays: list[np.ndarray], sequence: bool) -> Any:
        """Outputs as the caller gets them: batch-first if the layout says so, one array or a dict."""
        if sequence and self.layout == BATCH_FIRST:
            arrays = [np.ascontiguousarray(a.swapaxes(0, 1)) for a in arrays]
        return arrays[0] if len(arrays) == 1 else dict(zip(self.output_names, arrays))

    def step(self, x: Any, state: Any = None) -> tuple[Any, State]:
        """One step for a batch of streams: ``x`` a dict {name: array} (a bare array for one input),
        each (batch, *sizes); returns (y, new state), y an array for one output, else a dict."""
        named, batch_size, _ = self._check_inputs(x, "x", sequence=False)
        self._check_bytes(batch_size * self._step_bytes, f"a step of batch {batch_size}")
        current = self._initial_rows(batch_size) if state is None else self.check_state(state, batch_size)
        values = self._run_general({**named, **dict(zip(self.state_names, current))}, batch_size)
        count = len(self.outputs)
        return self._result(values[:count], False), tuple(values[count:])

    def predict(self, xs: Any, state: Any = None, *, form: str | None = None) -> tuple[Any, State]:
        """Teacher-forced over sequences: each input (steps, batch, *sizes), or (batch, steps,
        *sizes) when the layout is batch_first; returns the outputs in the same layout and the
        final state. Runs the step model once per step."""
        if form not in (None, STEP):
            raise InputValueError(f"predict of this model runs in the form 'step', got {form!r}")
        named, batch_size, steps = self._check_inputs(xs, "xs", sequence=True)
        size = batch_size * (steps * (self._in_bytes + self._out_bytes) + self._state_bytes)
        self._check_bytes(size, f"predict of {steps} steps x batch {batch_size}")
        current = self._initial_rows(batch_size) if state is None else self.check_state(state, batch_size)
        ys = [np.empty((steps, batch_size, *t.sizes), np.float32) for t in self.outputs]
        count = len(self.outputs)
        for t in range(steps):
            feed = {name: array[t] for name, array in named.items()}
            values = self._run_general({**feed, **dict(zip(self.state_names, current))}, batch_size)
            for buffer, value in zip(ys, values):
                buffer[t] = value
            current = tuple(values[count:])
        return self._result(ys, True), current

    def _generate_inputs(  # type: ignore[override]
        self, x0: Any, steps: Any, state: Any, sampler: Any, chunk: Any = None
    ) -> tuple[Named, int, State, int | None]:
        feedback = self.feedback
        if feedback is None:
            raise InputValueError(
                "generate needs to know which output becomes which input: this model's manifest declares no "
                f"feedback, and its outputs {list(self.output_names)} are not its inputs' shapes"
            )
        if feedback.via == SAMPLE:
            if sampler is None:
                raise InputValueError(
                    f"this model samples its next {feedback.input!r} token from the logits {feedback.output!r}: "
                    "pass sampler=runtime.Sampler(...) (greedy, temperature, top_k or top_p)"
                )
            if not all(callable(getattr(sampler, a, None)) for a in ("uniforms", "draw", "feeds")):
                raise InputValueError(f"sampler must be a runtime.Sampler, got {type(sampler).__name__}")
        elif sampler is not None:
            _refuse_sampler()
        named, batch_size, _ = self._check_inputs(x0, "x0", sequence=False)
        if type(steps) is not int or not 1 <= steps <= self.max_steps:
            steps = check_steps(steps, self.max_steps)
        if chunk is not None:
            chunk = check_steps(chunk, self.max_steps)
        n = steps if chunk is None else min(chunk, steps)
        per_step = 12 if feedback.via == SAMPLE else self._out_bytes  # tokens and uniforms, or the outputs
        size = batch_size * (self._in_bytes + self._out_bytes + n * per_step + self._state_bytes)
        self._check_bytes(size, f"generate of {n} steps x batch {batch_size}")
        current = self._initial_rows(batch_size) if state is None else self.check_state(state, batch_size)
        return named, steps, current, chunk

    def _sampling_form(self, form: str | None, sampler: Any, steps: int) -> str:
        wanted = "rollout_greedy" if sampler.greedy else "rollout_sample"
        if form is None:
            return wanted if steps >= FUSED_MIN_STEPS and wanted in self._forms else STEP
        if form == STEP:
            return STEP
        if form not in SAMPLING_FORMS:
            raise InputValueError(
                f"generate of this model runs in one of the forms {[STEP, *SAMPLING_FORMS]}, got {form!r}"
            )
        if form not in self._forms:
            raise InputValueError(f"form {form!r} is not in this artifact folder; it has {list(self.forms)}")
        if form != wanted:
            raise InputValueError(f"form {form!r} does not run a {'greedy' if sampler.greedy else 'random'} sampler")
        return form

    def _rollout(
        self, named: Named, steps: int, current: State, sampler: Any, form: str | None
    ) -> tuple[list[np.ndarray], State, np.ndarray]:
        """``steps`` closed-loop steps from ``named``: (time-first outputs: [tokens] when sampled, else
        every output stacked; the final state; the feedback input's next value)."""
        feedback = self.feedback
        assert feedback is not None  # checked by _generate_inputs
        batch_size = next(iter(named.values())).shape[0]
        count = len(self.outputs)
        if feedback.via != SAMPLE:
            if form not in (None, STEP):
                raise InputValueError(f"generate of this model runs in the form 'step', got {form!r}")
            ys = [np.empty((steps, batch_size, *t.sizes), np.float32) for t in self.outputs]
            feed = dict(named)
            for t in range(steps):
                feed.update(zip(self.state_names, current))
                values = self._run_general(feed, batch_size)
                for buffer, value in zip(ys, values):
                    buffer[t] = value
                feed[feedback.input] = values[self._feedback_output]
                current = tuple(values[count:])
            return ys, current, feed[feedback.input]
        chosen = self._sampling_form(form, sampler, steps)
        uniforms = np.ascontiguousarray(sampler.uniforms(steps, batch_size), dtype=np.float32)
        if uniforms.shape != (steps, batch_size):
            raise InputValueError(
                f"the sampler drew uniforms {uniforms.shape}, not (steps, batch) = {(steps, batch_size)}"
            )
        if chosen != STEP:
            tokens, current = self._run_sampling(chosen, named, current, sampler, uniforms, steps)
            return [tokens], current, tokens[-1]
        tokens = np.empty((steps, batch_size), np.int64)
        feed = dict(named)
        for t in range(steps):
            feed.update(zip(self.state_names, current))
            values = self._run_general(feed, batch_size)
            token = np.asarray(sampler.draw(values[self._feedback_output], uniforms[t]), dtype=np.int64)
            tokens[t] = token
            feed[feedback.input] = tokens[t]
            current = tuple(values[count:])
        return [tokens], current, tokens[-1]

    def _run_sampling(
        self, form: str, named: Named, state: State, sampler: Any, uniforms: np.ndarray, steps: int
    ) -> tuple[np.ndarray, State]:
        """One run of a fused sampling form: (tokens (steps, batch) int64, the final state). A batch of
        `SAMPLING_PARALLEL_MIN_BATCH` or more on the CPU is split into one part of rows per worker
        thread, each run by the same session at once (the streams are independent; each part has at
        least `SAMPLING_CELLS_MIN_BATCH` rows, so it runs the whole batch's arithmetic and gives its
        rows' tokens and states bit for bit)."""
        feedback = self.feedback
        assert feedback is not None
        fused = self._fused.get(form)
        if fused is None:
            session = self._session(form)  # checked against the contract as it is created
            inputs, outputs = self._form_io(form)
            fused = self._fused[form] = (
                session,
                self._entries[form].name,
                [s[0] for s in inputs],
                [s[0] for s in outputs],
            )
        held = [named[t.name] for t in self.inputs if t.name != feedback.input]
        if form == "rollout_greedy":
            settings = [np.array([steps], dtype=np.int64)]
        else:
            vocabulary = next(t.vocabulary for t in self.inputs if t.name == feedback.input)
            feeds = sampler.feeds(vocabulary)
            settings = [
                np.asarray(feeds[TEMPERATURE], np.float32).reshape(1),
                np.asarray(feeds[TOP_K], np.int64).reshape(1),
                np.asarray(feeds[TOP_P], np.float32).reshape(1),
            ]
        token = named[feedback.input]
        batch_size = uniforms.shape[1]
        parts = min(self.workers, batch_size // SAMPLING_CELLS_MIN_BATCH)  # parts of >= that many rows
        if batch_size < SAMPLING_PARALLEL_MIN_BATCH or parts < 2 or self.device != "cpu":
            return self._run_sampling_part(form, fused, token, held, state, uniforms, settings, steps)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="rnn-runtime")
        bounds = np.linspace(0, batch_size, parts + 1).astype(int)
        axes = [s.batch_axis for s in self.states]
        futures = []
        for start, stop in zip(bounds[:-1], bounds[1:]):
            rows = slice(int(start), int(stop))
            part_state = tuple(np.ascontiguousarray(s[(slice(None),) * axis + (rows,)]) for s, axis in zip(state, axes))
            futures.append(
                self._pool.submit(
                    self._run_sampling_part,
                    form,
                    fused,
                    token[rows],
                    [h[rows] for h in held],
                    part_state,
                    np.ascontiguousarray(uniforms[:, rows]),
                    settings,
                    steps,
                )
            )
        results = [future.result() for future in futures]
        tokens = np.concatenate([r[0] for r in results], axis=1)
        return tokens, tuple(np.concatenate(p, axis=a) for p, a in zip(zip(*(r[1] for r in results)), axes))

    def _run_sampling_part(
        self,
        form: str,
        fused: tuple,
        token: np.ndarray,
        held: list[np.ndarray],
        state: State,
        uniforms: np.ndarray,
        settings: list[np.ndarray],
        steps: int,
    ) -> tuple[np.ndarray, State]:
        session, name, input_names, output_names = fused
        values = [token, *held, *state]
        if form == "rollout_greedy":
            values += settings
        else:
            values += [uniforms, *settings]
        tokens, *new_state = self._run_session(session, name, output_names, dict(zip(input_names, values)))
        batch_size = uniforms.shape[1]
        shapes = [s.shape_for(batch_size) for s in self.states]
        good = type(tokens) is np.ndarray and tokens.dtype == np.int64 and tokens.shape == (steps, batch_size)
        if not good or any(
            not (type(v) is np.ndarray and v.dtype == FLOAT32 and v.shape == s) for v, s in zip(new_state, shapes)
        ):
            got = [f"{getattr(a, 'shape', '?')} {getattr(a, 'dtype', type(a).__name__)}" for a in (tokens, *new_state)]
            raise ArtifactError(
                f"the ONNX model of form {form!r} ({name}) returned {', '.join(got)}, the manifest promises "
                f"{(steps, batch_size)} int64, {', '.join(f'{s} float32' for s in shapes)}"
            )
        return tokens, tuple(new_state)

    def generate(
        self, x0: Any, steps: Any, state: Any = None, *, form: str | None = None, sampler: Any = None
    ) -> tuple[Any, State]:
        """The closed loop the manifest declares (``feedback``): ``x0`` the first step's inputs (as
        `step` takes them); inputs other than the fed-back one keep their value for every step.

        Fed back as it is: returns every output stacked, (steps, batch, *sizes) (batch-first:
        (batch, steps, *sizes)), an array for one output, else a dict. Sampled: ``sampler`` (a
        `runtime.Sampler`) draws each next token from the logits; returns the tokens int64
        (steps, batch) (batch-first: (batch, steps)). ``form`` "step" forces the step loop;
        None runs the folder's fused sampling form for 2 steps or more."""
        named, steps, current, _ = self._generate_inputs(x0, steps, state, sampler)
        ys, current, _ = self._rollout(named, steps, current, sampler, form)
        return self._generated(ys), current

    def _generated(self, ys: list[np.ndarray]) -> Any:
        if self.feedback is not None and self.feedback.via == SAMPLE:
            tokens = ys[0]
            return np.ascontiguousarray(tokens.T) if self.layout == BATCH_FIRST else tokens
        return self._result(ys, True)

    def generate_iter(  # type: ignore[override]
        self,
        x0: Any,
        steps: Any,
        state: Any = None,
        *,
        chunk: int = DEFAULT_CHUNK,
        form: str | None = None,
        sampler: Any = None,
    ) -> Iterator[tuple[Any, State]]:
        """`generate` in bounded memory: yields (outputs or tokens of n <= chunk steps, state) chunk
        by chunk, each continuing from the last fed-back value and state of the one before (the
        sampler draws each chunk's uniforms as the chunk starts)."""
        named, steps, current, chunk = self._generate_inputs(x0, steps, state, sampler, chunk)
        assert self.feedback is not None and chunk is not None
        named = dict(named)
        done = 0
        while done < steps:
            n = min(chunk, steps - done)
            ys, current, following = self._rollout(named, n, current, sampler, form)
            named[self.feedback.input] = following
            done += n
            yield self._generated(ys), current

"""Loads an artifact folder into onnxruntime and runs the step model: step, predict, generate."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .errors import ArtifactError, DeviceError, ShapeError
from .inputs import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_STEPS,
    as_float32,
    check_batch,
    check_output_size,
    check_steps,
)
from .manifest import ROLE_STEP_ONNX, Manifest, check_files, read_manifest, resolve_file

State = tuple[np.ndarray, ...]

DEVICES = ("cpu", "cuda")
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def load(
    folder: str | os.PathLike,
    device: str = "cpu",
    *,
    threads: int = 1,
    allow_nonfinite: bool = False,
    max_steps: int = DEFAULT_MAX_STEPS,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
) -> Model:
    """Loads an exported artifact folder after checking its manifest and every file's sha256.

    ``device`` is ``"cpu"`` or ``"cuda"``; CUDA without a working CUDA execution provider is a
    DeviceError, never a silent fall back to the CPU. ``threads`` is onnxruntime's intra-op
    thread count (1 is fastest for small recurrent models). NaN and infinity in inputs are
    refused unless ``allow_nonfinite``.
    """
    if device not in DEVICES:
        raise DeviceError(f"device must be one of {list(DEVICES)}, got {device!r}")
    manifest = read_manifest(folder)
    check_files(folder, manifest)
    entry = manifest.file(ROLE_STEP_ONNX)
    if entry is None:
        raise ArtifactError(f"the manifest of {str(folder)!r} lists no file with role {ROLE_STEP_ONNX!r}")
    session = _session(resolve_file(folder, entry), device, threads)
    return Model(
        folder,
        manifest,
        session,
        device=device,
        allow_nonfinite=allow_nonfinite,
        max_steps=max_steps,
        max_output_bytes=max_output_bytes,
    )


def _session(path: Path, device: str, threads: int) -> ort.InferenceSession:
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
    providers = [wanted] if device == "cpu" else [wanted, "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidGraph,
            ort.capi.onnxruntime_pybind11_state.InvalidProtobuf, ort.capi.onnxruntime_pybind11_state.NoSuchFile) as error:
        raise ArtifactError(f"onnxruntime cannot load {path.name}: {str(error).splitlines()[0]:.300}") from None
    if session.get_providers()[0] != wanted:
        raise DeviceError(
            f"onnxruntime fell back to {session.get_providers()} instead of {wanted} "
            "(CUDA or cuDNN libraries could not be loaded); check the onnxruntime-gpu install"
        )
    return session


class Model:
    """A loaded step model. All methods take and return float32 numpy arrays.

    Shapes: ``x`` is (batch, input_size); each state tensor is (batch, size) in manifest order;
    ``y`` is (batch, output_size). When a size is 1, a (batch,) array or a scalar is accepted
    for ``x`` too. The model is safe to share between threads.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        manifest: Manifest,
        session: ort.InferenceSession,
        *,
        device: str,
        allow_nonfinite: bool,
        max_steps: int,
        max_output_bytes: int,
    ) -> None:
        self.folder = Path(folder)
        self.manifest = manifest
        self.device = device
        self.allow_nonfinite = allow_nonfinite
        self.max_steps = max_steps
        self.max_output_bytes = max_output_bytes
        self._session = session
        if len(manifest.inputs) != 1 or len(manifest.outputs) != 1:
            raise ArtifactError("the runtime runs step models with one input and one output tensor")
        self._x = manifest.inputs[0]
        self._y = manifest.outputs[0]
        self.input_size = int(self._x.shape[1])
        self.output_size = int(self._y.shape[1])
        self.state_names = tuple(s.name for s in manifest.state)
        self.state_sizes = tuple(int(s.shape[1]) for s in manifest.state)
        self._output_names = [self._y.name, *(s.output for s in manifest.state)]
        self._initial = tuple(np.asarray(s.initial, dtype=np.float32) for s in manifest.state)
        session_inputs = [i.name for i in session.get_inputs()]
        session_outputs = [o.name for o in session.get_outputs()]
        expected_inputs = [self._x.name, *self.state_names]
        if session_inputs != expected_inputs or session_outputs != self._output_names:
            raise ArtifactError(
                f"the ONNX step model has inputs {session_inputs} and outputs {session_outputs}, "
                f"the manifest promises {expected_inputs} and {self._output_names}"
            )

    @property
    def providers(self) -> list[str]:
        """The execution providers onnxruntime actually uses, first is preferred."""
        return list(self._session.get_providers())

    def __repr__(self) -> str:
        return (
            f"Model({str(self.folder)!r}, kind={self.manifest.model.get('kind')!r}, "
            f"input_size={self.input_size}, state={dict(zip(self.state_names, self.state_sizes))}, "
            f"providers={self.providers})"
        )

    # ---- inputs ---------------------------------------------------------------------------

    def initial_state(self, batch_size: int = 1) -> State:
        """The manifest's initial state, repeated for ``batch_size`` streams."""
        return tuple(np.tile(row, (batch_size, 1)) for row in self._initial)

    def _input_x(self, x: Any, name: str = "x") -> np.ndarray:
        expected = f"(batch, {self.input_size})"
        array = as_float32(x, name, expected, allow_nonfinite=self.allow_nonfinite)
        if self.input_size == 1 and array.ndim in (0, 1):
            array = array.reshape(-1, 1)
        if array.ndim != 2 or array.shape[1] != self.input_size:
            raise ShapeError(f"input {name!r} must be {expected} float32, got {array.shape} {np.asarray(x).dtype}")
        check_batch(array, name, expected)
        return array

    def _input_state(self, state: Any, batch_size: int) -> State:
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

    def _input_sequence(self, xs: Any) -> np.ndarray:
        expected = f"(steps, batch, {self.input_size})" + (" or (steps,)" if self.input_size == 1 else "")
        array = as_float32(xs, "xs", expected, allow_nonfinite=self.allow_nonfinite)
        if self.input_size == 1 and array.ndim == 1:
            array = array.reshape(-1, 1, 1)
        if array.ndim != 3 or array.shape[2] != self.input_size:
            raise ShapeError(f"input 'xs' must be {expected} float32, got {array.shape}")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ShapeError(f"input 'xs' must be {expected} with steps >= 1 and batch >= 1, got {array.shape}")
        return array

    # ---- running ------------------------------------------------------------------------

    def _run(self, x: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        feed = {self._x.name: x}
        feed.update(zip(self.state_names, state))
        y, *new_state = self._session.run(self._output_names, feed)
        return y, tuple(new_state)

    def step(self, x: Any, state: Any = None) -> tuple[np.ndarray, State]:
        """One step for a batch of streams: returns (y (batch, output_size), new state)."""
        x = self._input_x(x)
        return self._run(x, self._input_state(state, x.shape[0]))

    def predict(self, xs: Any, state: Any = None) -> tuple[np.ndarray, State]:
        """Teacher-forced run over a sequence: each step gets the given input.

        ``xs`` is (steps, batch, input_size), or (steps,) for one stream of a one-input model.
        Returns outputs shaped like ``xs`` (with output_size) and the final state.
        """
        flat = np.ndim(xs) == 1
        sequence = self._input_sequence(xs)
        steps, batch_size, _ = sequence.shape
        check_output_size(steps, batch_size, self.output_size, self.max_output_bytes)
        current = self._input_state(state, batch_size)
        ys = np.empty((steps, batch_size, self.output_size), dtype=np.float32)
        for t in range(steps):
            ys[t], current = self._run(sequence[t], current)
        return (ys.reshape(steps) if flat and self.output_size == 1 else ys), current

    def generate(self, x0: Any, steps: Any, state: Any = None) -> tuple[np.ndarray, State]:
        """The autoregressive context loop: each output is fed back as the next input.

        ``x0`` is (batch, input_size) (a scalar or (batch,) for one input); returns the
        outputs (steps, batch, output_size) and the final state.
        """
        if self.input_size != self.output_size:
            raise ShapeError(
                f"generate feeds each output back as the next input, so output size {self.output_size} "
                f"must equal input size {self.input_size}"
            )
        x = self._input_x(x0, "x0")
        steps = check_steps(steps, self.max_steps)
        check_output_size(steps, x.shape[0], self.output_size, self.max_output_bytes)
        current = self._input_state(state, x.shape[0])
        ys = np.empty((steps, x.shape[0], self.output_size), dtype=np.float32)
        for t in range(steps):
            x, current = self._run(x, current)
            ys[t] = x
        return ys, current


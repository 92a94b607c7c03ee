"""The torch-free runtime: loading, device selection, inputs, and errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

import runtime
from runtime.errors import (
    ArtifactError,
    DeviceError,
    DtypeError,
    InputValueError,
    IntegrityError,
    ShapeError,
    ToolkitError,
)

from .conftest import COMMITTED, REPO

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_importing_and_running_the_runtime_does_not_import_torch():
    code = (
        "import sys, runtime\n"
        f"model = runtime.load({str(COMMITTED)!r})\n"
        "ys, state = model.generate(0.5, 20)\n"
        "assert ys.shape == (20, 1, 1), ys.shape\n"
        "heavy = sorted(m for m in ('torch', 'onnx', 'matplotlib', 'rnn', 'export') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "heavy: []" in result.stdout


def test_committed_artifacts_load_and_generate():
    model = runtime.load(COMMITTED)
    assert model.providers == ["CPUExecutionProvider"]
    assert (model.input_size, model.state_sizes, model.output_size) == (1, (6,), 1)
    ys, (h,) = model.generate(np.float32(np.sin(2.0)), 200)
    assert ys.shape == (200, 1, 1) and h.shape == (1, 6) and ys.dtype == np.float32
    assert np.isfinite(ys).all() and np.abs(ys).max() < 3


def test_generate_feeds_each_output_back(exported_folder):
    model = runtime.load(exported_folder)
    x0 = np.array([[0.3], [-0.7]], dtype=np.float32)
    ys, final = model.generate(x0, 4, form="step")
    x, state = x0, None
    for t in range(4):
        x, state = model.step(x, state)
        np.testing.assert_array_equal(ys[t], x)
    np.testing.assert_array_equal(final[0], state[0])


def test_predict_accepts_a_flat_series_and_returns_one(exported_folder):
    model = runtime.load(exported_folder)
    xs = np.sin(np.linspace(0, 3, 10)).astype(np.float32)
    flat, state_flat = model.predict(xs)
    full, state_full = model.predict(xs.reshape(10, 1, 1))
    assert flat.shape == (10,) and full.shape == (10, 1, 1)
    np.testing.assert_array_equal(flat, full.reshape(10))
    np.testing.assert_array_equal(state_flat[0], state_full[0])


def test_state_round_trips_through_calls(exported_folder):
    model = runtime.load(exported_folder)
    xs = np.random.default_rng(0).uniform(-1, 1, (30, 2, 1)).astype(np.float32)
    whole, final = model.predict(xs)
    first, middle = model.predict(xs[:12])
    second, final_split = model.predict(xs[12:], middle)
    np.testing.assert_array_equal(whole, np.concatenate([first, second]))
    np.testing.assert_array_equal(final[0], final_split[0])


def test_inputs_that_convert_safely_are_accepted(exported_folder):
    model = runtime.load(exported_folder)
    reference, _ = model.step(np.array([[0.25]], dtype=np.float32))
    for x in (0.25, [0.25], [[0.25]], np.array([[0.25]], dtype=np.float64), np.float32(0.25)):
        y, _ = model.step(x)
        np.testing.assert_array_equal(y, reference)
    y, _ = model.step(np.array([[1]], dtype=np.int64))
    assert y.dtype == np.float32


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m: m.step(np.zeros((3, 2), np.float32)), ShapeError, r"must be \(batch, 1\) float32, got \(3, 2\)"),
        (lambda m: m.step(np.zeros((2, 1, 1), np.float32)), ShapeError, "must be"),
        (lambda m: m.step(np.zeros((0, 1), np.float32)), ShapeError, "empty batch"),
        (lambda m: m.step(np.array([["a"]])), DtypeError, "float32"),
        (lambda m: m.step(np.array([[1 + 2j]])), DtypeError, "complex"),
        (lambda m: m.step(np.array([[True]])), DtypeError, "bool"),
        (lambda m: m.step("0.5"), DtypeError, "got str"),
        (lambda m: m.step([[0.1], [0.2, 0.3]]), DtypeError, "ragged"),
        (lambda m: m.step(np.array([[np.nan]], np.float32)), InputValueError, "NaN or infinity"),
        (lambda m: m.step(np.zeros((3, 1), np.float32), np.zeros((2, 6), np.float32)), ShapeError, "match the batch"),
        (lambda m: m.step(np.zeros((1, 1), np.float32), (np.zeros((1, 6)), np.zeros((1, 6)))), ShapeError, "1 array"),
        (lambda m: m.generate(0.5, 0), InputValueError, "between 1 and"),
        (lambda m: m.generate(0.5, -3), InputValueError, "between 1 and"),
        (lambda m: m.generate(0.5, 2.5), InputValueError, "whole number"),
        (lambda m: m.generate(0.5, True), InputValueError, "whole number"),
        (lambda m: m.generate(np.zeros((10**6, 1), np.float32), 1000), InputValueError, "MiB"),
        (lambda m: m.predict(np.zeros((0,), np.float32)), ShapeError, "steps >= 1"),
        (lambda m: m.predict(np.zeros((4, 2), np.float32)), ShapeError, "steps, batch, 1"),
    ],
)
def test_bad_inputs_get_typed_errors_and_the_model_keeps_working(exported_folder, call, error, message):
    model = runtime.load(exported_folder)
    with pytest.raises(error, match=message):
        call(model)
    y, _ = model.step(0.5)  # still usable afterwards
    assert y.shape == (1, 1)


def test_nonfinite_inputs_can_be_allowed(exported_folder):
    model = runtime.load(exported_folder, allow_nonfinite=True)
    y, _ = model.step(np.array([[np.nan]], np.float32))
    assert np.isnan(y).all()


def test_every_error_is_a_toolkit_error():
    for error in (ShapeError, DtypeError, InputValueError, ArtifactError, IntegrityError, DeviceError):
        assert issubclass(error, ToolkitError)


def test_load_refuses_a_tampered_file_before_creating_a_session(exported_copy):
    path = exported_copy / "step.onnx"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="step.onnx"):
        runtime.load(exported_copy)


def test_load_errors(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        runtime.load(tmp_path / "missing")
    with pytest.raises(ArtifactError, match="no manifest.json"):
        runtime.load(tmp_path)
    with pytest.raises(DeviceError, match="device must be one of"):
        runtime.load(COMMITTED, device="tpu")


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has the CUDA provider; the CUDA tests below run instead")
def test_cuda_without_the_provider_is_an_error_naming_the_fix():
    with pytest.raises(DeviceError, match="onnxruntime-gpu"):
        runtime.load(COMMITTED, device="cuda")


@pytest.mark.skipif(not HAS_CUDA, reason="CUDAExecutionProvider is not available (CPU-only onnxruntime or no GPU)")
def test_cuda_runs_on_the_gpu_and_agrees_with_the_cpu():
    from export.verify import ROLLOUT_ATOL, STEP_ATOL

    cpu = runtime.load(COMMITTED)
    gpu = runtime.load(COMMITTED, device="cuda")
    assert gpu.providers[0] == "CUDAExecutionProvider"
    x = np.random.default_rng(0).uniform(-1, 1, (64, 1)).astype(np.float32)
    np.testing.assert_allclose(gpu.step(x)[0], cpu.step(x)[0], atol=STEP_ATOL, rtol=0)
    np.testing.assert_allclose(gpu.generate(x, 200)[0], cpu.generate(x, 200)[0], atol=ROLLOUT_ATOL, rtol=0)

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
)

from ..conftest import COMMITTED, REPO

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


# ---- the public step API and its fast paths -------------------------------------------------


def session_step(model, x, state):
    """The reference: one plain session.run of the step model."""
    session = model.step_session
    feed = dict(zip([i.name for i in session.get_inputs()], (x, *state)))
    y, *new_state = session.run([o.name for o in session.get_outputs()], feed)
    return y, tuple(new_state)


def test_step_predict_and_generate_of_one_step_are_the_step_model_bit_for_bit():
    model = runtime.load(COMMITTED)
    rng = np.random.default_rng(0)
    for batch in (1, 3, 64, 100):  # 100: past the bound runners (session.run)
        x = rng.uniform(-1, 1, (batch, 1)).astype(np.float32)
        state = (rng.uniform(-1, 1, (batch, 6)).astype(np.float32),)
        y, (h,) = session_step(model, x, state)
        for got_y, (got_h,) in (model.step(x, state), model.run_step(x, state)):
            np.testing.assert_array_equal(got_y, y)
            np.testing.assert_array_equal(got_h, h)
        for ys, (got_h,) in (
            model.generate(x, 1, state),
            model.generate(x, 1, state, form="step"),
            model.predict(x.reshape(1, batch, 1), state),
            model.predict(x.reshape(1, batch, 1), state, form="step"),
        ):
            assert ys.shape == (1, batch, 1)
            np.testing.assert_array_equal(ys[0], y)
            np.testing.assert_array_equal(got_h, h)
    flat, _ = model.predict(np.array([0.5], np.float32))
    assert (
        flat.shape == (1,)
        and flat[0] == session_step(model, np.full((1, 1), 0.5, np.float32), model.initial_state(1))[0][0, 0]
    )


def test_a_chain_of_steps_is_the_step_model_bit_for_bit_and_results_are_not_reused():
    model = runtime.load(COMMITTED)
    x = np.full((1, 1), 0.3, np.float32)
    state, reference = None, model.initial_state(1)
    results = []
    for _ in range(50):
        y, state = model.step(x, state)
        expected_y, reference = session_step(model, x, reference)
        np.testing.assert_array_equal(y, expected_y)
        np.testing.assert_array_equal(state[0], reference[0])
        results.append((y, state, y.copy(), state[0].copy()))
        x = y
    for y, state, y_copy, h_copy in results:  # what a call returned belongs to the caller
        np.testing.assert_array_equal(y, y_copy)
        np.testing.assert_array_equal(state[0], h_copy)
    _, fresh = model.step(np.zeros((1, 1), np.float32))
    fresh[0][:] = 7  # writable, and not the initial state the model keeps
    _, again = model.step(np.zeros((1, 1), np.float32))
    _, (expected,) = session_step(model, np.zeros((1, 1), np.float32), model.initial_state(1))
    np.testing.assert_array_equal(again[0], expected)


def test_inputs_off_the_fast_path_still_work_and_agree():
    model = runtime.load(COMMITTED)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (4, 1)).astype(np.float32)
    h = rng.uniform(-1, 1, (4, 6)).astype(np.float32)
    y, (h_new,) = session_step(model, x, (h,))
    wide = np.zeros((4, 3), np.float32)
    wide[:, 1:2] = x
    variants_x = [x.astype(np.float64), wide[:, 1:2], x.astype(">f4"), x.reshape(4), list(x[:, 0].astype(float))]
    variants_h = [h.astype(np.float64), np.asfortranarray(h), h.T.copy().T, [h], h, [h.tolist()]]
    assert not variants_x[1].flags.c_contiguous and not variants_h[1].flags.c_contiguous
    for vx in variants_x:
        for vh in variants_h:
            got_y, (got_h,) = model.step(vx, vh if isinstance(vh, list) else (vh,))
            np.testing.assert_array_equal(got_y, y)
            np.testing.assert_array_equal(got_h, h_new)
    checked = model.check_x(x)
    assert checked is x  # the fast path neither copies nor converts
    assert model.check_state((h,), 4)[0] is h
    assert model.check_x(x.astype(np.float64)).dtype == np.float32
    assert model.check_x(wide[:, 1:2]).flags.c_contiguous


NAN_MESSAGE = r"NaN or infinity; load the model with allow_nonfinite=True to run it anyway"


@pytest.mark.parametrize("allow", [False, True])
def test_the_fast_path_refuses_what_the_slow_path_refuses(allow):
    model = runtime.load(COMMITTED, allow_nonfinite=allow)
    ok_x, ok_h = np.zeros((2, 1), np.float32), np.zeros((2, 6), np.float32)
    nonfinite = []
    for value in (np.nan, np.inf, -np.inf):
        bad_x, bad_h = ok_x.copy(), ok_h.copy()
        bad_x[1, 0], bad_h[1, 3] = value, value
        nonfinite += [
            (bad_x, (ok_h,)),
            (ok_x, (bad_h,)),
            (bad_x[1:], (bad_h[1:],)),
            (ok_x[1:], (bad_h[1:],)),
            (bad_x[1:], None),
        ]
    for x, state in nonfinite:
        if allow:
            model.step(x, state)
        else:
            with pytest.raises(InputValueError, match=NAN_MESSAGE):
                model.step(x, state)
    big_x, big_h = np.full((2, 1), 3e38, np.float32), np.full((2, 6), -1e20, np.float32)  # squares overflow
    for x, state in ((big_x, (ok_h,)), (ok_x, (big_h,)), (big_x, (big_h,))):
        y, _ = model.step(x, state)
        assert np.isfinite(y).all()
        model.generate(x, 1, state), model.predict(x.reshape(1, 2, 1), state)
    if not allow:
        for call in (
            lambda m: m.step(np.full((1, 1), 1e39)),
            lambda m: m.step(0.5, (np.full((1, 6), -1e39),)),
            lambda m: m.generate(np.full((1, 1), 1e39), 1),
            lambda m: m.predict(np.full((1, 1, 1), 1e39)),
        ):
            with pytest.raises(InputValueError, match="beyond float32's range"):
                call(model)
        with pytest.raises(InputValueError, match="NaN"):
            model.predict(np.full((1, 1, 1), np.nan, np.float32))
        with pytest.raises(InputValueError, match="NaN"):
            model.generate(np.full((1, 1), np.nan, np.float32), 1)
    for call, error in (
        (lambda m: m.step(np.zeros((1, 1), np.float32), (np.zeros((1, 5), np.float32),)), ShapeError),
        (lambda m: m.step(np.zeros((1, 1), np.float32), (np.zeros((1, 6), bool),)), DtypeError),
        (lambda m: m.step(np.zeros((1, 1), np.complex64)), DtypeError),
        (lambda m: m.step(np.zeros((1, 1), np.float32), (np.zeros((2, 6), np.float32),)), ShapeError),
        (lambda m: m.generate(np.zeros((1, 1), np.float32), 1, (np.zeros((1, 6), np.float32),) * 2), ShapeError),
    ):
        with pytest.raises(error):
            call(model)


@pytest.mark.parametrize("keyword", ["max_memory_bytes", "max_output_bytes"])  # the old name still works
def test_the_memory_bound_counts_inputs_outputs_and_states_and_holds_for_one_step_too(keyword):
    per_stream = 4 * (1 + 1 + 2 * 6)  # x, y, the state in and out: 56 bytes a stream a step
    model = runtime.load(COMMITTED, **{keyword: 16 * per_stream})
    assert model.max_memory_bytes == model.max_output_bytes == 16 * per_stream
    for call in (
        lambda b: model.generate(np.zeros((b, 1), np.float32), 1),
        lambda b: model.predict(np.zeros((1, b, 1), np.float32)),
        lambda b: model.step(np.zeros((b, 1), np.float32)),
        lambda b: model.bind(b),
    ):
        call(16)  # 896 bytes: allowed
        with pytest.raises(InputValueError, match="MiB"):
            call(17)


def test_bound_steps_keep_the_state_inside_and_equal_the_step_model():
    model = runtime.load(COMMITTED)
    rng = np.random.default_rng(2)
    bound = model.bind(3)
    assert bound.batch_size == 3
    np.testing.assert_array_equal(bound.state[0], model.initial_state(3)[0])
    state = (rng.uniform(-1, 1, (3, 6)).astype(np.float32),)
    bound.load_state(state)
    reference = state
    for _ in range(50):
        x = rng.uniform(-1, 1, (3, 1)).astype(np.float32)
        expected, reference = session_step(model, x, reference)
        np.testing.assert_array_equal(bound.run(x), expected)
        np.testing.assert_array_equal(bound.state[0], reference[0])
    targets = (np.zeros((5, 6), np.float32),)
    bound.store_state(targets, np.array([4, 0, 2]))
    np.testing.assert_array_equal(targets[0][[4, 0, 2]], reference[0])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputValueError, match="batch_size"):
            model.bind(bad)


def test_step_from_many_threads_is_exact_and_finishes():
    import threading

    model = runtime.load(COMMITTED)
    rng = np.random.default_rng(3)
    cases = [
        (rng.uniform(-1, 1, (b, 1)).astype(np.float32), (rng.uniform(-1, 1, (b, 6)).astype(np.float32),))
        for b in (1, 1, 2, 3, 1, 5, 1, 2)
    ]
    expected = [session_step(model, x, s) for x, s in cases]
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            for _ in range(200):
                y, (h,) = model.step(*cases[index])
                np.testing.assert_array_equal(y, expected[index][0])
                np.testing.assert_array_equal(h, expected[index][1][0])
        except BaseException as error:  # re-raised by the test thread below
            failures.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads) and not failures, failures


def test_fingerprint_and_form_contracts_are_public_and_typed():
    from runtime.manifest import ROLE_STEP_ONNX

    model = runtime.load(COMMITTED)
    assert model.step_sha256 == model.manifest.file(ROLE_STEP_ONNX).sha256
    assert [i.name for i in model.step_session.get_inputs()] == [model.input_name, *model.state_names]
    inputs, outputs = model.form_specs("rollout_loop")
    assert [s[0] for s in inputs] == ["x0", *model.state_names, "steps"] and outputs[0][0] == "ys"
    assert model.form_file("rollout_loop") == "rollout_loop.onnx"
    with pytest.raises(InputValueError, match="is not a form"):
        model.form_specs("rollout")
    with pytest.raises(InputValueError, match="not in this artifact folder"):
        model.form_file("rollout_greedy")


@pytest.mark.parametrize("batch", [1, 3, 100])  # 100: past the shared bound runners (a private one)
def test_step_loops_are_the_step_model_bit_for_bit(batch):
    model = runtime.load(COMMITTED)
    rng = np.random.default_rng(batch)
    xs = rng.uniform(-1, 1, (30, batch, 1)).astype(np.float32)
    state = (rng.uniform(-1, 1, (batch, 6)).astype(np.float32),)
    predicted, (h_predicted,) = model.predict(xs, state, form="step")
    generated, (h_generated,) = model.generate(xs[0], 30, state, form="step")
    reference = state
    for t in range(30):
        y, reference = session_step(model, xs[t], reference)
        np.testing.assert_array_equal(predicted[t], y)
    np.testing.assert_array_equal(h_predicted, reference[0])
    x, reference = xs[0], state
    for t in range(30):
        x, reference = session_step(model, x, reference)
        np.testing.assert_array_equal(generated[t], x)
    np.testing.assert_array_equal(h_generated, reference[0])
    chunks = list(model.generate_iter(xs[0], 30, state, chunk=7, form="step"))
    np.testing.assert_array_equal(np.concatenate([ys for ys, _ in chunks]), generated)

"""runtime.model through its fused forms: every form agrees with the step model, forcing a form,
generate_iter, the IO-binding loop, sessions made on first use, large batches split, CUDA, cells."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import runtime
from export.verify import ROLLOUT_ATOL, SEQUENCE_ATOL, STEP_ATOL
from rnn.checkpoint import load_checkpoint
from rnn.eager import generate_eager
from runtime.errors import InputValueError

from ..conftest import COMMITTED, REPO


@pytest.fixture(scope="module")
def model(exported_folder):
    return runtime.load(exported_folder)


@pytest.mark.parametrize("steps", [1, 2, 10, 11, 21, 1000])
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_every_rollout_form_agrees_with_the_step_model(model, steps, batch):
    rng = np.random.default_rng(steps * 100 + batch)
    x0 = rng.uniform(-1, 1, (batch, 1)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (batch, 6)).astype(np.float32)
    reference, (h_ref,) = model.generate(x0, steps, h0, form="step")
    for form in ("rollout_rnn", "rollout_loop", None):
        ys, (h,) = model.generate(x0, steps, h0, form=form)
        assert ys.shape == (steps, batch, 1) and h.shape == (batch, 6)
        np.testing.assert_allclose(ys, reference, atol=2 * ROLLOUT_ATOL, rtol=0, err_msg=str(form))
        np.testing.assert_allclose(h, h_ref, atol=2 * ROLLOUT_ATOL, rtol=0, err_msg=str(form))


@pytest.mark.parametrize("steps", [1, 9, 10, 11, 1000])
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_every_sequence_form_agrees_with_the_step_model(model, steps, batch):
    rng = np.random.default_rng(steps * 100 + batch)
    xs = rng.uniform(-1, 1, (steps, batch, 1)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (batch, 6)).astype(np.float32)
    reference, (h_ref,) = model.predict(xs, h0, form="step")
    for form in ("sequence_rnn", "sequence_loop", None):
        ys, (h,) = model.predict(xs, h0, form=form)
        np.testing.assert_allclose(ys, reference, atol=2 * SEQUENCE_ATOL, rtol=0, err_msg=str(form))
        np.testing.assert_allclose(h, h_ref, atol=2 * SEQUENCE_ATOL, rtol=0, err_msg=str(form))


def test_flat_series_through_a_fused_form(model):
    xs = np.sin(np.linspace(2, 10, 21))[:-1]
    flat, _ = model.predict(xs)
    assert flat.shape == (20,)


def test_forcing_a_form_that_does_not_fit_is_refused(model):
    with pytest.raises(InputValueError, match="predict runs in one of the forms"):
        model.predict(np.zeros((5, 1, 1), np.float32), form="rollout_rnn")
    with pytest.raises(InputValueError, match="generate runs in one of the forms"):
        model.generate(0.5, 5, form="sequence_loop")
    with pytest.raises(InputValueError, match="forms"):
        model.generate(0.5, 5, form="warp")


def test_a_folder_without_fused_forms_falls_back_to_the_step_model(exported_copy):
    manifest = json.loads((exported_copy / "manifest.json").read_text())
    manifest["files"] = [f for f in manifest["files"] if not f["role"].startswith(("sequence", "rollout"))]
    (exported_copy / "manifest.json").write_text(json.dumps(manifest))
    model = runtime.load(exported_copy)
    assert model.forms == ("step",)
    ys, _ = model.generate(0.5, 50)
    reference, _ = runtime.load(COMMITTED).generate(0.5, 50, form="step")
    assert ys.shape == (50, 1, 1)
    with pytest.raises(InputValueError, match="not in this artifact folder"):
        model.generate(0.5, 5, form="rollout_rnn")


@pytest.mark.parametrize("form", ["rollout_rnn", "rollout_loop", "step"])
def test_generate_iter_continues_across_chunks(model, form):
    x0 = np.array([[0.2], [-0.4]], np.float32)
    whole, (h_whole,) = model.generate(x0, 250, form=form)
    chunks = list(model.generate_iter(x0, 250, chunk=60, form=form))
    assert [len(ys) for ys, _ in chunks] == [60, 60, 60, 60, 10]
    joined = np.concatenate([ys for ys, _ in chunks])
    np.testing.assert_allclose(joined, whole, atol=ROLLOUT_ATOL, rtol=0)
    np.testing.assert_allclose(chunks[-1][1][0], h_whole, atol=ROLLOUT_ATOL, rtol=0)


def test_generate_iter_checks_its_arguments(model):
    with pytest.raises(InputValueError, match="between 1 and"):
        next(model.generate_iter(0.5, 10, chunk=0))
    with pytest.raises(InputValueError, match="between 1 and"):
        next(model.generate_iter(0.5, -1))


def test_ten_million_steps_in_bounded_memory():
    code = (
        "import tracemalloc, numpy as np, runtime\n"
        f"model = runtime.load({str(COMMITTED)!r})\n"
        "tracemalloc.start()\n"
        "count, total = 0, 0.0\n"
        "for ys, state in model.generate_iter(np.float32(0.5), 10_000_000, chunk=100_000):\n"
        "    count += len(ys); total += float(np.abs(ys).sum())\n"
        "peak = tracemalloc.get_traced_memory()[1]\n"
        "print(count, peak, np.isfinite(total))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    count, peak, finite = result.stdout.split()
    assert int(count) == 10_000_000 and finite == "True"
    assert int(peak) < 8 * 2**20, f"peak traced memory {int(peak)} bytes: the chunks are being held"  # all: 40 MB


def test_the_general_step_loop_matches_the_classic_fast_path(model):
    # White-box: every signature but the classic one on the CPU (and every model on CUDA) runs the
    # step loop through BoundStep.set_inputs/execute/feed_back; no GPU here, so that loop is run on
    # the CPU and held to the classic fast path (BoundStep.run) bit for bit.
    rng = np.random.default_rng(1)
    x0 = rng.uniform(-1, 1, (3, 1)).astype(np.float32)
    state = (rng.uniform(-1, 1, (3, 6)).astype(np.float32),)
    xs = rng.uniform(-1, 1, (25, 3, 1)).astype(np.float32)
    for sequence, start in (((xs,), None), (None, (x0,))):
        plain, general = np.empty((25, 3, 1), np.float32), np.empty((25, 3, 1), np.float32)
        plain_state = model._step_loop(sequence, start, state, [plain])
        runner = model.bind(3)
        assert runner.simple
        runner.load_state(state)
        model._general_loop(runner, sequence, start, [general])
        np.testing.assert_array_equal(plain, general)
        np.testing.assert_array_equal(plain_state[0], runner.state[0])


def test_fused_sessions_are_created_on_first_use(exported_folder):
    model = runtime.load(exported_folder)
    assert model.loaded_forms == ("step",)
    model.generate(0.5, 100)
    assert model.loaded_forms == ("step", "rollout_rnn")


CUDA_REASON = "CUDAExecutionProvider is not available (CPU-only onnxruntime or no GPU): CUDA paths not run"
HAS_CUDA = "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers()


@pytest.mark.skipif(not HAS_CUDA, reason=CUDA_REASON)
@pytest.mark.parametrize("batch", [1, 64, 4096])
def test_cuda_step_loop_and_fused_forms_agree_with_the_cpu(batch):
    cpu, gpu = runtime.load(COMMITTED), runtime.load(COMMITTED, device="cuda")
    assert gpu.providers[0] == "CUDAExecutionProvider"
    rng = np.random.default_rng(batch)
    x0 = rng.uniform(-1, 1, (batch, 1)).astype(np.float32)
    xs = rng.uniform(-1, 1, (200, batch, 1)).astype(np.float32)
    for form in ("step", "rollout_rnn", "rollout_loop"):  # "step" runs the IO-binding loop on the device
        np.testing.assert_allclose(
            gpu.generate(x0, 200, form=form)[0],
            cpu.generate(x0, 200, form="step")[0],
            atol=2 * ROLLOUT_ATOL,
            rtol=0,
            err_msg=form,
        )
    for form in ("step", "sequence_rnn", "sequence_loop"):
        np.testing.assert_allclose(
            gpu.predict(xs, form=form)[0], cpu.predict(xs, form="step")[0], atol=2 * SEQUENCE_ATOL, rtol=0, err_msg=form
        )


@pytest.mark.parametrize("form", ["rollout_loop", "rollout_rnn", "sequence_loop"])
def test_large_batches_split_across_workers_give_the_same_results(exported_folder, form):
    # The same arithmetic per stream; only the matmul kernel's row blocking can differ at a
    # part boundary (seen: one value 1 ulp apart), so compare within the step tolerance.
    rng = np.random.default_rng(7)
    batch = 4097  # odd, so the parts differ in size
    h0 = rng.uniform(-1, 1, (batch, 6)).astype(np.float32)
    one, two = runtime.load(exported_folder, workers=1), runtime.load(exported_folder, workers=2)
    if form.startswith("rollout"):
        x0 = rng.uniform(-1, 1, (batch, 1)).astype(np.float32)
        a, b = one.generate(x0, 23, h0, form=form), two.generate(x0, 23, h0, form=form)
    else:
        xs = rng.uniform(-1, 1, (23, batch, 1)).astype(np.float32)
        a, b = one.predict(xs, h0, form=form), two.predict(xs, h0, form=form)
    assert two.worker_threads.started and not one.worker_threads.started  # the split really happened
    np.testing.assert_allclose(a[0], b[0], atol=STEP_ATOL, rtol=0)
    np.testing.assert_allclose(a[1][0], b[1][0], atol=STEP_ATOL, rtol=0)


def test_cells_run_through_the_runtime_at_any_batch(cell_folder):
    cell, _, folder = cell_folder
    model = runtime.load(folder)
    eager = load_checkpoint(folder).model
    for batch in (1, 3, 64):
        x0 = np.random.default_rng(batch).uniform(-1, 1, (batch, 1)).astype(np.float32)
        ys, state = model.generate(x0, 50)
        assert len(state) == len(eager.model_config().state_names) and all(s.shape == (batch, 5) for s in state)
        expected, _ = generate_eager(eager, torch.from_numpy(x0), 50, eager.initial_state(batch))
        np.testing.assert_allclose(ys, expected.numpy(), atol=1e-4, rtol=0)

"""The fused forms through the runtime: choice, forcing, lengths, chunked rollouts, IO binding."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import runtime
from export.verify import ROLLOUT_ATOL, SEQUENCE_ATOL, STEP_ATOL
from runtime.errors import InputValueError
from runtime.fused import FORMS, RNN_MAX_BATCH, STEP, choose_form

from .conftest import COMMITTED, REPO

ALL = FORMS


def test_choice_by_batch_and_steps():
    assert choose_form("generate", 1, 1000, ALL) == "rollout_rnn"
    assert choose_form("generate", RNN_MAX_BATCH, 1000, ALL) == "rollout_rnn"
    assert choose_form("generate", RNN_MAX_BATCH + 1, 1000, ALL) == "rollout_loop"
    assert choose_form("generate", 4096, 20, ALL) == "rollout_loop"
    assert choose_form("predict", 1, 20, ALL) == "sequence_rnn"
    assert choose_form("predict", 4096, 1000, ALL) == "sequence_loop"
    assert choose_form("generate", 1, 1, ALL) == STEP  # one step is the step model
    assert choose_form("generate", 4096, 1000, ("step", "rollout_rnn")) == "rollout_rnn"  # what is there
    assert choose_form("predict", 4, 1000, ("step",)) == STEP  # a folder without fused forms


@pytest.fixture(scope="module")
def model(exported_folder):
    return runtime.load(exported_folder)


def test_every_form_is_listed(model):
    assert model.forms == ("step", "sequence_rnn", "sequence_loop", "rollout_rnn", "rollout_loop")


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
    import json

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


def test_the_io_binding_step_loop_matches_the_plain_one(model):
    # The CUDA path keeps the state on the device with IO binding; the same code runs on the CPU.
    rng = np.random.default_rng(1)
    x0 = rng.uniform(-1, 1, (3, 1)).astype(np.float32)
    state = (rng.uniform(-1, 1, (3, 6)).astype(np.float32),)
    xs = rng.uniform(-1, 1, (25, 3, 1)).astype(np.float32)
    for sequence, start in ((None, x0), (xs, None)):
        plain, bound = np.empty((25, 3, 1), np.float32), np.empty((25, 3, 1), np.float32)
        plain_state = model._step_loop(sequence, start, state, plain)
        bound_state = model._step_loop_bound(sequence, start, state, bound)
        np.testing.assert_array_equal(plain, bound)
        np.testing.assert_array_equal(plain_state[0], bound_state[0])


def test_fused_sessions_are_created_on_first_use(exported_folder):
    model = runtime.load(exported_folder)
    assert set(model._sessions) == {"step"}
    model.generate(0.5, 100)
    assert set(model._sessions) == {"step", "rollout_rnn"}


def test_bench_command_measures_every_implementation(tmp_path, exported_folder):
    from click.testing import CliRunner

    from toolkit.cli import cli

    plot = tmp_path / "bench.png"
    result = CliRunner().invoke(cli, ["bench", str(exported_folder), "--batch", "3", "--steps", "12",
                                      "--rounds", "1", "--streams", "5", "--plot", str(plot), "--json"],
                                     catch_exceptions=False)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    names = {(r["kind"], r["implementation"]) for r in document["rows"]}
    for kind, forms in (("generate", ("rollout_rnn", "rollout_loop")), ("predict", ("sequence_rnn", "sequence_loop"))):
        for name in ("eager", "torchscript", "onnx step loop", "auto", "numpy loop", *forms):
            assert (kind, name) in names
    assert all(r["us_per_step"] > 0 and r["ratio_vs_eager"] > 0 for r in document["rows"])
    assert document["cold_start"]["torch_imported"] is False
    assert {r["implementation"] for r in document["streams"]} == {
        "session.run per stream", "pool.step(ids, xs), batched", "pool.push from 8 threads"}
    assert plot.read_bytes()[:4] == b"\x89PNG" and plot.with_suffix(".json").is_file()


def test_numpy_baseline_computes_the_same_loop(exported_folder):
    import torch

    from toolkit.bench import _numpy_step_loop
    from rnn.eager import generate_eager
    from rnn.checkpoint import load_checkpoint

    eager = load_checkpoint(exported_folder).model
    loop = _numpy_step_loop(eager.w1.detach().numpy(), eager.w2.detach().numpy(), 1)
    x0, h0 = np.full((2, 1), 0.3, np.float32), np.zeros((2, 6), np.float32)
    expected, _ = generate_eager(eager, torch.from_numpy(x0), 30, (torch.from_numpy(h0),))
    np.testing.assert_allclose(loop(x0, h0, 30, False), expected.numpy(), atol=ROLLOUT_ATOL, rtol=0)


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
        np.testing.assert_allclose(gpu.generate(x0, 200, form=form)[0], cpu.generate(x0, 200, form="step")[0],
                                   atol=2 * ROLLOUT_ATOL, rtol=0, err_msg=form)
    for form in ("step", "sequence_rnn", "sequence_loop"):
        np.testing.assert_allclose(gpu.predict(xs, form=form)[0], cpu.predict(xs, form="step")[0],
                                   atol=2 * SEQUENCE_ATOL, rtol=0, err_msg=form)


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
    assert two._pool is not None and one._pool is None  # the split really happened
    np.testing.assert_allclose(a[0], b[0], atol=STEP_ATOL, rtol=0)
    np.testing.assert_allclose(a[1][0], b[1][0], atol=STEP_ATOL, rtol=0)


@pytest.mark.parametrize("hidden_size", [1, 3, 11])
def test_fused_forms_are_correct_for_any_hidden_size(tmp_path, hidden_size):
    from export import export_folder, verify_folder
    from rnn.config import TrainConfig
    from rnn.train import train_folder

    folder = tmp_path / f"h{hidden_size}"
    train_folder(TrainConfig(hidden_size=hidden_size, epochs=15, seed=4), folder)
    export_folder(folder)
    model = runtime.load(folder)
    assert model.forms == FORMS and model.state_sizes == (hidden_size,)
    report = verify_folder(folder, write=False)
    assert report.passed, report.table()
    assert {c.form for c in report.comparisons} >= {"sequence_rnn", "sequence_loop", "rollout_rnn", "rollout_loop"}

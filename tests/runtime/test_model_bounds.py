"""Bounded runs: a step model that loops without end is stopped by run_timeout with a typed error,
one that asks onnxruntime for ~80 GB ends with an ArtifactError, never a raw onnxruntime exception;
the memory bound counts every array a call allocates."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import runtime
from runtime.errors import ArtifactError, InputValueError, RunTimeoutError, ToolkitError
from runtime.runs import DEFAULT_RUN_TIMEOUT

from .hostile import copy_folder, endless_loop_step, expanding_step, folding_bomb_step, install

TIMEOUT = 0.3  # seconds: short, so that each endless run below ends quickly
GIB = 2**30


@pytest.fixture(scope="module")
def endless(tmp_path_factory, exported_folder):
    folder = copy_folder(exported_folder, tmp_path_factory.mktemp("endless") / "model")
    return runtime.load(install(folder, endless_loop_step()), run_timeout=TIMEOUT)


def one_line(error):
    message = str(error)
    assert message and "\n" not in message, message
    return message


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.step(0.5),  # the shared bound runner
        lambda m: m.step(np.zeros((100, 1), np.float32)),  # session.run (batch > BOUND_MAX_BATCH)
        lambda m: m.generate(0.5, 3, form="step"),  # the step loop
        lambda m: m.predict(np.zeros((1, 2, 1), np.float32)),
        lambda m: m.bind(2).run(np.zeros((2, 1), np.float32)),
        lambda m: runtime.Stream(m).push(0.1),
        lambda m: (lambda pool: pool.push(pool.open(), 0.1))(runtime.StreamPool(m)),
        lambda m: (lambda pool: pool.step([pool.open(), pool.open()], [0.1, 0.2]))(runtime.StreamPool(m)),
    ],
    ids=["step", "step-batch-100", "generate", "predict", "bound", "stream", "pool-push", "pool-step"],
)
def test_a_step_model_that_loops_2_63_times_is_stopped_with_a_typed_error(endless, call):
    with pytest.raises(RunTimeoutError) as caught:
        call(endless)
    assert f"run_timeout={TIMEOUT:g} s" in one_line(caught.value)
    assert isinstance(caught.value, ToolkitError)


def test_a_stopped_model_is_stopped_again_and_others_are_not_disturbed(endless, exported_folder):
    healthy = runtime.load(exported_folder, run_timeout=TIMEOUT)
    expected = healthy.generate(0.5, 50, form="step")[0]
    with ThreadPoolExecutor(2) as pool:
        stopped = [pool.submit(endless.step, 0.5) for _ in range(2)]
        for _ in range(20):  # runs of a healthy model next to the watchdog's work, many times its interval
            np.testing.assert_array_equal(healthy.generate(0.5, 50, form="step")[0], expected)
        for future in stopped:
            with pytest.raises(RunTimeoutError):
                future.result(timeout=60)


def test_run_timeout_is_a_positive_number_of_seconds_or_none(exported_folder):
    assert runtime.load(exported_folder).run_timeout == DEFAULT_RUN_TIMEOUT
    model = runtime.load(exported_folder, run_timeout=None)
    assert model.run_timeout is None and model.step(0.5)[0].shape == (1, 1)
    for bad in (0, -1, float("nan"), float("inf"), "60", True):
        with pytest.raises(InputValueError, match="run_timeout"):
            runtime.load(exported_folder, run_timeout=bad)


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param(
            20_000_000_000,  # (rows, 6) float32 = 480 GB; its first axis alone 80 GB
            marks=pytest.mark.skipif(
                os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") > 64 * GIB,
                reason="a machine this large might grant the allocation",
            ),
        ),
        2**60,  # more bytes than any machine has (and than size_t holds)
    ],
)
def test_a_model_asking_for_more_memory_than_there_is_ends_with_an_artifact_error(tmp_path, exported_folder, rows):
    folder = install(copy_folder(exported_folder, tmp_path / "model"), expanding_step(rows))
    model = runtime.load(folder)
    for call in (lambda: model.step(0.5), lambda: model.generate(0.5, 3, form="step")):
        with pytest.raises(ArtifactError, match="onnxruntime failed running step.onnx") as caught:
            call()
        one_line(caught.value)


def test_the_memory_bound_refuses_before_allocating(exported_folder):
    model = runtime.load(exported_folder, max_memory_bytes=64 * 2**20)
    x0 = np.zeros((1, 1), np.float32)
    for call in (
        lambda: model.generate(x0, 20_000_000),  # 80 MB of outputs
        lambda: next(model.generate_iter(x0, 10**8, chunk=20_000_000)),  # one chunk is too large
        lambda: model.predict(np.broadcast_to(np.float64(0.5), (20_000_000,))),  # before its float32 copy
        lambda: model.step(np.broadcast_to(np.float64(0.5), (20_000_000, 1))),
        lambda: model.step(np.zeros((2_000_000, 1), np.float32)),  # x, y and the state in and out: 112 MB
        lambda: model.bind(10**7),
        lambda: runtime.StreamPool(model, capacity=10**9),
    ):
        with pytest.raises(InputValueError, match="MiB"):
            call()
    assert sum(ys.shape[0] for ys, _ in model.generate_iter(0.5, 10**7, chunk=10**6)) == 10**7  # in chunks: fine


def test_building_a_session_does_no_work_a_hostile_graph_asks_of_its_constants(tmp_path, exported_folder):
    # Constant folding happens while onnxruntime builds the session, where no run timeout reaches:
    # a 300-byte graph squaring a 20000 x 20000 constant would keep load() busy for hours. The
    # runtime builds sessions without folding, so load returns at once (here: in a child process
    # given two minutes, so that a regression fails instead of hanging the suite).
    import subprocess
    import sys

    folder = install(copy_folder(exported_folder, tmp_path / "bomb"), folding_bomb_step(20_000))
    code = f"import runtime; model = runtime.load({str(folder)!r}); print(model.forms[0])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "step", result.stderr[-500:]

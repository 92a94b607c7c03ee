"""runtime.load's arguments and call arguments of the wrong type or range are typed errors, and
masked arrays are refused rather than run with their mask dropped."""

from __future__ import annotations

import numpy as np
import pytest

import runtime
from runtime.errors import DeviceError, DtypeError, InputValueError, ToolkitError

from ..conftest import COMMITTED


@pytest.fixture(scope="module")
def model():
    return runtime.load(COMMITTED)


@pytest.mark.parametrize(
    "arguments, match",
    [
        ({"threads": "2"}, "threads"),
        ({"threads": 2.0}, "threads"),
        ({"threads": -1}, "threads"),
        ({"threads": 10**6}, "threads"),
        ({"workers": 2.5}, "workers"),
        ({"workers": 0}, "workers"),
        ({"workers": True}, "workers"),
        ({"max_steps": "x"}, "max_steps"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": 2**63}, "max_steps"),  # steps are int64 inside a fused model
        ({"max_memory_bytes": 0}, "max_memory_bytes"),
        ({"max_memory_bytes": 1.5e9}, "max_memory_bytes"),
        ({"max_output_bytes": "1G"}, "max_memory_bytes"),
        ({"max_output_bytes": 10, "max_memory_bytes": 20}, "not both"),
        ({"run_timeout": "60"}, "run_timeout"),
        ({"allow_nonfinite": "yes"}, "allow_nonfinite"),
        ({"digest": 5}, "digest"),
    ],
)
def test_load_arguments_of_the_wrong_type_or_range_are_refused(arguments, match):
    with pytest.raises(InputValueError, match=match) as caught:
        runtime.load(COMMITTED, **arguments)
    assert "\n" not in str(caught.value)


def test_load_refuses_a_folder_that_is_not_a_path_and_a_device_it_does_not_know():
    for folder in (123, None, ["artifacts"]):
        with pytest.raises(InputValueError, match="folder"):
            runtime.load(folder)
    for device in ("tpu", 0, None):
        with pytest.raises(DeviceError):
            runtime.load(COMMITTED, device=device)


def test_load_accepts_numpy_integers_and_zero_threads():
    model = runtime.load(COMMITTED, threads=np.int64(0), workers=np.int32(2), max_steps=np.int64(10))
    assert (model.threads, model.workers, model.max_steps) == (0, 2, 10)
    assert type(model.max_steps) is int


@pytest.mark.parametrize("steps", [2**63, 2**64, -1, 0, 2.0, "5", None, True])
def test_steps_out_of_range_or_of_the_wrong_type_are_typed_errors(model, steps):
    with pytest.raises(InputValueError, match="steps"):
        model.generate(0.5, steps)
    with pytest.raises(InputValueError, match="steps"):
        next(model.generate_iter(0.5, steps))


@pytest.mark.parametrize("chunk", [2**63, 0, 1.5, "x"])
def test_a_chunk_out_of_range_or_of_the_wrong_type_is_a_typed_error(model, chunk):
    with pytest.raises(InputValueError, match="steps"):
        next(model.generate_iter(0.5, 10, chunk=chunk))


def test_masked_arrays_are_refused_not_run_with_their_mask_dropped(model):
    x = np.ma.masked_array([[0.5], [0.2]], mask=[[False], [True]], dtype=np.float32)
    state = (np.ma.masked_array(np.zeros((2, 6), np.float32), mask=False),)
    xs = np.ma.masked_array(np.zeros((4, 2, 1), np.float32), mask=False)
    for call in (
        lambda: model.step(x),
        lambda: model.step(np.zeros((2, 1), np.float32), state),
        lambda: model.predict(xs),
        lambda: model.generate(x, 3),
        lambda: runtime.Stream(model).push(np.ma.masked_array([0.5], mask=[True])),
        lambda: runtime.Stream(model).push(np.ma.masked),
        lambda: (lambda pool: pool.push(pool.open(), np.ma.masked_array([0.5])))(runtime.StreamPool(model)),
    ):
        with pytest.raises(DtypeError, match="masked"):
            call()


def test_every_refusal_here_is_a_toolkit_error():
    assert issubclass(InputValueError, ToolkitError) and issubclass(runtime.RunTimeoutError, ToolkitError)

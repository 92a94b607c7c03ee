"""runtime.inputs, through the model's calls: any value a caller hands in gives a result or a typed
error, and values beyond float32 are refused rather than turned into infinity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runtime
from runtime.errors import ToolkitError

from ..conftest import COMMITTED


def test_values_beyond_float32_are_refused_not_turned_into_infinity(exported_folder):
    model = runtime.load(exported_folder)
    with pytest.raises(runtime.InputValueError, match="beyond float32"):
        model.step(np.array([[1e300]]))


DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8, np.bool_, np.complex64]
arrays = st.builds(
    lambda shape, dtype, fill, special: _array(shape, dtype, fill, special),
    st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple),
    st.sampled_from(DTYPES),
    st.floats(-3, 3, allow_nan=False),
    st.sampled_from([None, np.nan, np.inf, -np.inf, 1e39]),
)


def _array(shape, dtype, fill, special):
    array = np.full(shape, fill, dtype=np.float64)
    if special is not None and array.size:
        array.flat[0] = special
    with np.errstate(invalid="ignore", over="ignore"):
        return array.astype(dtype)


values = st.one_of(
    arrays,
    st.none(),
    st.integers(-5, 5),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.lists(st.floats(-2, 2), max_size=4),
    st.lists(st.lists(st.integers(-2, 2), max_size=3), max_size=3),
)
steps = st.one_of(st.integers(-3, 40), st.floats(-1, 5), st.none(), st.booleans(), st.text(max_size=2))


@settings(max_examples=1000, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    kind=st.sampled_from(["step", "predict", "generate", "generate_iter"]),
    first=values,
    state=values,
    n=steps,
    form=st.sampled_from([None, "step", "rollout_rnn", "sequence_loop", "nope"]),
)
def test_any_input_gives_a_result_or_a_typed_error(committed_model, kind, first, state, n, form):
    try:
        if kind == "step":
            y, new = committed_model.step(first, state)
            assert y.shape[1] == 1 and new[0].shape == (y.shape[0], 6)
        elif kind == "predict":
            ys, new = committed_model.predict(first, state, form=form)
            assert ys.dtype == np.float32
        elif kind == "generate":
            ys, new = committed_model.generate(first, n, state, form=form)
            assert ys.shape[0] == n and ys.dtype == np.float32
        else:
            total = sum(len(ys) for ys, _ in committed_model.generate_iter(first, n, state, chunk=7, form=form))
            assert total == n
    except ToolkitError:
        pass
    assert committed_model.step(0.25)[0].shape == (1, 1)  # and the model keeps working


@pytest.fixture(scope="module")
def committed_model():
    return runtime.load(COMMITTED)


def test_large_finite_inputs_pass_the_fast_check_without_a_numpy_warning(exported_folder):
    import warnings

    model = runtime.load(exported_folder)
    big = np.full((64, 1), 3e38, np.float32)  # finite; its squares overflow float32
    state = (np.full((64, 6), 1e30, np.float32),)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning would be an exception here
        with np.errstate(all="raise"):
            y, _ = model.step(big, state)
    assert y.shape == (64, 1)


def test_a_zero_dimensional_float32_input_is_one_step_of_one_stream(exported_folder):
    model = runtime.load(exported_folder)
    ys, _ = model.predict(np.array(0.5, np.float32))
    expected, _ = model.predict(np.array([0.5], np.float64))
    np.testing.assert_array_equal(ys, expected)


def test_steps_that_are_not_a_whole_number_are_a_typed_error(exported_folder):
    from runtime.errors import InputValueError

    model = runtime.load(exported_folder)
    for steps in (np.array([1, 2]), 1.0, True, "1", None):
        with pytest.raises(InputValueError, match="steps must be a whole number"):
            model.generate(0.5, steps)

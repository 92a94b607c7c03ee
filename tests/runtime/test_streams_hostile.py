"""runtime.StreamPool against bad callers: ids that are not ints are refused in the caller's
thread before anything is queued, and no failing push can drop, block or fail another thread's."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import runtime
from runtime.errors import InputValueError

from ..conftest import COMMITTED

BAD_IDS = [[0], np.array([0]), np.array(0.0), 0.0, 1.5, "0", True, False, None, b"0", (0,)]
RESULT_TIMEOUT = 120  # seconds: a bound on a hung pool, not a timing


@pytest.fixture(scope="module")
def model():
    return runtime.load(COMMITTED)


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_a_stream_id_that_is_not_an_int_is_refused_before_it_is_queued(model, bad):
    pool = runtime.StreamPool(model)
    stream = pool.open()
    with pytest.raises(InputValueError, match="stream id"):
        pool.push(bad, 0.5)
    assert pool._queue == []  # nothing was left for a tick to trip over
    for call in (pool.state, pool.reset, pool.save, pool.close):
        with pytest.raises(InputValueError):
            call(bad)
    assert pool.push(stream, 0.5).shape == (1,)  # the pool still serves
    assert pool.push(np.int64(stream), 0.5).shape == (1,)  # a numpy integer is an int


def test_eight_threads_push_while_one_pushes_bad_ids_and_every_good_push_is_answered(model):
    pool = runtime.StreamPool(model, capacity=2)  # grows while the threads push
    streams = [pool.open() for _ in range(8)]
    rng = np.random.default_rng(5)
    xs = rng.uniform(-1, 1, (8, 60)).astype(np.float32)
    expected = [model.predict(row, form="step")[0] for row in xs]  # each stream alone, in order
    start = threading.Barrier(9)
    refused = []

    def good(index):
        start.wait()
        return [pool.push(streams[index], float(x))[0] for x in xs[index]]

    def bad():
        start.wait()
        for round_ in range(60):
            for value in BAD_IDS:
                try:
                    pool.push(value, 0.5)
                except InputValueError:
                    refused.append(value)
            with pytest.raises(InputValueError, match="not open"):
                pool.push(10_000 + round_, 0.5)  # an int that is no open stream: fails alone, in a tick

    with ThreadPoolExecutor(9) as executor:
        futures = [executor.submit(good, index) for index in range(8)]
        bad_future = executor.submit(bad)
        results = [future.result(timeout=RESULT_TIMEOUT) for future in futures]
        bad_future.result(timeout=RESULT_TIMEOUT)
    assert len(refused) == 60 * len(BAD_IDS)
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(np.array(got), want)


def test_a_push_to_a_stream_closed_meanwhile_fails_alone(model):
    pool = runtime.StreamPool(model)
    keep, gone = pool.open(), pool.open()
    pool.close(gone)
    with pytest.raises(InputValueError, match="not open"):
        pool.push(gone, 0.5)
    np.testing.assert_array_equal(pool.push(keep, 0.5), model.step(0.5)[0][0])


@pytest.mark.parametrize("capacity", [2.5, "2", 0, -1, True, None, [2]])
def test_a_capacity_that_is_not_a_whole_number_from_1_is_a_typed_error(model, capacity):
    with pytest.raises(InputValueError, match="capacity"):
        runtime.StreamPool(model, capacity=capacity)


def test_step_ids_must_be_integers(model):
    pool = runtime.StreamPool(model)
    a, b = pool.open(), pool.open()
    for ids in ([True, False], [0.0, 1.0], ["0", "1"], np.ma.masked_array([a, b], [False, True])):
        with pytest.raises(InputValueError):
            pool.step(ids, [0.1, 0.2])
    assert pool.step(np.array([a, b], np.int32), [0.1, 0.2]).shape == (2, 1)

"""runtime.Stream and runtime.StreamPool: stateful streams, batched ticks, threads, saved states."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import runtime
from export.verify import ROLLOUT_ATOL
from runtime.errors import InputValueError, ShapeError

from ..conftest import COMMITTED


@pytest.fixture(scope="module")
def model():
    return runtime.load(COMMITTED)


def test_a_stream_is_the_step_model_with_memory(model):
    xs = np.sin(np.linspace(0, 4, 30)).astype(np.float32)
    stream = runtime.Stream(model)
    pushed = np.array([stream.push(x)[0] for x in xs])
    expected, (h,) = model.predict(xs, form="step")
    np.testing.assert_array_equal(pushed, expected)
    np.testing.assert_array_equal(stream.state[0], h[0])
    stream.reset()
    np.testing.assert_array_equal(stream.state[0], np.zeros(6, np.float32))


def test_saved_state_bytes_round_trip_and_are_checked(model, exported_folder):
    stream = runtime.Stream(model)
    for x in (0.1, 0.2, 0.3):
        stream.push(x)
    data = stream.save()
    assert data.startswith(b"RNNSTATE") and len(data) == 8 + 2 + 2 + 16 + 4 + 6 * 4
    resumed = runtime.Stream.restore(model, data)
    np.testing.assert_array_equal(resumed.push(0.4), stream.push(0.4))
    other = runtime.load(exported_folder)  # another model: its state must not be mixed in
    with pytest.raises(InputValueError, match="different model"):
        runtime.Stream.restore(other, data)
    for broken, message in (
        (data[:-3], "truncated|values"),
        (b"junk" * 10, "not a stream state"),
        (data + b"x", "unexpected bytes"),
        ("text", "must be bytes"),
    ):
        with pytest.raises((InputValueError, ShapeError), match=message):
            runtime.Stream.restore(model, broken)


def test_stream_inputs_are_checked(model):
    stream = runtime.Stream(model)
    with pytest.raises(ShapeError):
        stream.push([0.1, 0.2])
    with pytest.raises(InputValueError):
        stream.push(float("nan"))
    assert stream.push(np.array([0.3]))[0] == runtime.Stream(model).push(0.3)[0]


def test_pool_batches_equal_each_stream_alone(model):
    pool = runtime.StreamPool(model, capacity=4)
    rng = np.random.default_rng(0)
    ids = [pool.open() for _ in range(37)]  # grows 4 -> 64
    assert pool.capacity == 64 and len(pool) == 37
    alone = {i: runtime.Stream(model) for i in ids}
    for _ in range(25):
        chosen = rng.choice(ids, size=rng.integers(1, len(ids)), replace=False)  # arbitrary subsets
        xs = rng.uniform(-1, 1, (len(chosen), 1)).astype(np.float32)
        ys = pool.step(chosen, xs)
        for stream, x, y in zip(chosen, xs, ys):
            np.testing.assert_allclose(y, alone[int(stream)].push(x), atol=ROLLOUT_ATOL, rtol=0)
    for i in ids:
        np.testing.assert_allclose(pool.state(i)[0], alone[i].state[0], atol=ROLLOUT_ATOL, rtol=0)


def test_pool_streams_join_and_leave(model):
    pool = runtime.StreamPool(model, capacity=2)
    a, b = pool.open(), pool.open()
    pool.step([a, b], [[0.5], [0.5]])
    pool.close(a)
    c = pool.open()  # reuses a's slot, with a fresh state
    np.testing.assert_array_equal(pool.state(c)[0], np.zeros(6, np.float32))
    assert not np.array_equal(pool.state(b)[0], np.zeros(6, np.float32))
    with pytest.raises(InputValueError, match="not open"):
        pool.step([a], [[0.1]])
    with pytest.raises(InputValueError, match="distinct"):
        pool.step([b, b], [[0.1], [0.2]])
    with pytest.raises(ShapeError, match="inputs"):
        pool.step([b, c], [[0.1]])
    with pytest.raises(InputValueError, match="not open"):
        pool.push(a, 0.1)
    restored = pool.restore(pool.save(b))
    np.testing.assert_array_equal(pool.state(restored)[0], pool.state(b)[0])
    pool.reset(b)
    np.testing.assert_array_equal(pool.state(b)[0], np.zeros(6, np.float32))


def test_pushes_from_many_threads_equal_each_stream_alone(model):
    pool = runtime.StreamPool(model, capacity=8)
    threads, per_thread, steps = 8, 6, 40
    results: dict[int, tuple[list, list]] = {}
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        mine = [pool.open() for _ in range(per_thread)]
        inputs = {s: [] for s in mine}
        outputs = {s: [] for s in mine}
        for step in range(steps):
            for s in mine:
                x = np.float32(rng.uniform(-1, 1))
                inputs[s].append(x)
                outputs[s].append(pool.push(s, x)[0])
            if step == steps // 2:  # leave and join while others are pushing
                pool.close(mine[0])
                inputs.pop(mine[0]), outputs.pop(mine[0])
                mine[0] = pool.open()
                inputs[mine[0]], outputs[mine[0]] = [], []
        with lock:
            for s in mine:
                results[s] = (inputs[s], outputs[s])

    workers = [threading.Thread(target=worker, args=(seed,)) for seed in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(results) == threads * per_thread
    for xs, ys in results.values():
        alone = runtime.Stream(model)
        np.testing.assert_allclose(ys, [alone.push(x)[0] for x in xs], atol=ROLLOUT_ATOL, rtol=0)


def test_a_pool_of_a_two_state_model(tmp_path):
    from export import export_folder
    from rnn.train import TrainConfig, train_folder

    folder = tmp_path / "lstm"
    train_folder(TrainConfig(cell="lstm", epochs=5), folder)
    export_folder(folder)
    lstm = runtime.load(folder)
    pool = runtime.StreamPool(lstm)
    ids = [pool.open() for _ in range(3)]
    pool.step(ids, [[0.1], [0.2], [0.3]])
    h, c = pool.state(ids[2])
    alone = runtime.Stream(lstm)
    alone.push(0.3)
    np.testing.assert_allclose(h, alone.state[0], atol=1e-6)
    np.testing.assert_allclose(c, alone.state[1], atol=1e-6)
    assert runtime.StreamPool(lstm).restore(pool.save(ids[2])) == 0
    xs = np.random.default_rng(4).uniform(-1, 1, 20).astype(np.float32)  # both states through the bound paths
    expected, (h, c) = reference_steps(lstm, xs)
    stream, pool = runtime.Stream(lstm), runtime.StreamPool(lstm)
    one = pool.open()
    np.testing.assert_array_equal(np.array([stream.push(x) for x in xs]), expected)
    np.testing.assert_array_equal(np.concatenate([pool.step([one], [[x]]) for x in xs]), expected)
    np.testing.assert_array_equal(lstm.predict(xs.reshape(-1, 1, 1), form="step")[0][:, 0], expected)
    for got in (stream.state, pool.state(one)):
        np.testing.assert_array_equal(got[0], h[0])
        np.testing.assert_array_equal(got[1], c[0])


# ---- the bound fast paths compute what the step model computes -------------------------------


def reference_steps(model, xs, state=None):
    """Each stream's outputs and states stepped one call at a time through the plain session.run of
    the step model: the reference that the bound (IO-binding) paths must reproduce."""
    session = model.step_session
    names = [o.name for o in session.get_outputs()]
    inputs = [i.name for i in session.get_inputs()]
    state = model.initial_state(1) if state is None else state
    ys = []
    for x in xs:
        y, *state = session.run(names, dict(zip(inputs, (np.full((1, model.input_size), x, np.float32), *state))))
        ys.append(y[0])
    return np.array(ys), tuple(state)


def test_stream_push_is_the_step_model_bit_for_bit(model):
    xs = np.random.default_rng(5).uniform(-1, 1, 50).astype(np.float32)
    expected, (h,) = reference_steps(model, xs)
    stream = runtime.Stream(model)
    pushed = []
    for x in xs:
        pushed.append(stream.push(x))  # kept: a later push must not overwrite an earlier result
    np.testing.assert_array_equal(np.array(pushed), expected)
    np.testing.assert_array_equal(stream.state[0], h[0])
    for x, kind in ((0.25, float), (np.float64(0.25), np.float64), (np.array([0.25], np.float32), np.ndarray)):
        assert isinstance(x, kind)
        np.testing.assert_array_equal(runtime.Stream(model).push(x), reference_steps(model, [0.25])[0][0])


def test_stream_save_restore_and_reset_continue_exactly(model):
    xs = np.random.default_rng(6).uniform(-1, 1, 50).astype(np.float32)
    expected, _ = reference_steps(model, xs)
    stream = runtime.Stream(model)
    first = [stream.push(x) for x in xs[:20]]
    resumed = runtime.Stream.restore(model, stream.save())
    np.testing.assert_array_equal(np.array(first + [resumed.push(x) for x in xs[20:]]), expected)
    given = runtime.Stream(model, tuple(s.reshape(1, -1) for s in runtime.Stream.restore(model, stream.save()).state))
    np.testing.assert_array_equal(given.push(xs[20]), expected[20])
    stream.reset()
    np.testing.assert_array_equal(np.array([stream.push(x) for x in xs]), expected)


@pytest.mark.parametrize("count", [1, 2, 5, 37])
def test_pool_step_is_the_step_model_bit_for_bit(model, count):
    """Slots in and out of order (streams closed and reopened in between), subsets, one stream at
    a time and all together; every output and state equals that stream stepped alone."""
    rng = np.random.default_rng(count)
    pool = runtime.StreamPool(model, capacity=2)
    extra = [pool.open() for _ in range(count)]  # taken first, closed below: the slots of `ids` get holes
    ids = [pool.open() for _ in range(count)]
    for stream in extra[::2]:
        pool.close(stream)
    ids += [pool.open() for _ in range(len(extra[::2]))]  # reopened slots, fresh state
    inputs: dict[int, list] = {i: [] for i in ids}
    for step in range(50):
        if step % 10 == 0:
            chosen = np.array(ids)
        elif step % 3 == 0:
            chosen = rng.permutation(ids)[: max(1, len(ids) // 2)]
        else:
            chosen = np.array([ids[step % len(ids)]])
        xs = rng.uniform(-1, 1, (len(chosen), 1)).astype(np.float32)
        ys = pool.step(chosen, xs)
        for stream, x, y in zip(chosen, xs[:, 0], ys):
            inputs[int(stream)].append(x)
            expected, _ = reference_steps(model, inputs[int(stream)])
            np.testing.assert_array_equal(y, expected[-1])
    for stream in ids:
        _, (h,) = reference_steps(model, inputs[stream])
        np.testing.assert_array_equal(pool.state(stream)[0], h[0])
        restored = pool.restore(pool.save(stream))
        x = np.float32(0.5)
        expected, _ = reference_steps(model, [*inputs[stream], x])
        np.testing.assert_array_equal(pool.step([restored], [[x]])[0], expected[-1])
        pool.close(restored)


def test_pool_step_of_one_stream_equals_a_stream(model):
    pool = runtime.StreamPool(model, capacity=1)
    stream = pool.open()
    alone = runtime.Stream(model)
    for x in np.random.default_rng(7).uniform(-1, 1, 50).astype(np.float32):
        np.testing.assert_array_equal(pool.step(np.array([stream]), np.array([[x]], np.float32))[0], alone.push(x))
        np.testing.assert_array_equal(pool.push(stream, x), alone.push(x))


def test_pool_step_from_many_threads_is_exact_and_finishes(model):
    pool = runtime.StreamPool(model, capacity=4)
    threads, steps = 8, 50
    results: dict[int, tuple[np.ndarray, list]] = {}
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            mine = [pool.open() for _ in range(seed % 3 + 1)]
            xs = rng.uniform(-1, 1, (steps, len(mine))).astype(np.float32)
            ys = []
            for t in range(steps):
                if t % 2:
                    ys.append(pool.step(mine, xs[t].reshape(-1, 1))[:, 0])
                else:
                    ys.append(np.array([pool.push(s, x)[0] for s, x in zip(mine, xs[t])]))
            results[seed] = (xs, np.array(ys))
        except BaseException as error:  # re-raised by the test thread below
            errors.append(error)

    workers = [threading.Thread(target=worker, args=(seed,)) for seed in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert not any(w.is_alive() for w in workers), "a pool call never returned"
    assert not errors, errors
    assert len(results) == threads
    for xs, ys in results.values():
        for column in range(xs.shape[1]):
            np.testing.assert_array_equal(ys[:, column], reference_steps(model, xs[:, column])[0][:, 0])


def test_stream_scalar_inputs_are_checked_like_arrays(model):
    stream = runtime.Stream(model)
    for bad, message in (
        (float("nan"), "NaN or infinity"),
        (float("inf"), "NaN or infinity"),
        (np.float64(1e39), "beyond float32's range"),
        (-1e39, "beyond float32's range"),
    ):
        with pytest.raises(InputValueError, match=message):
            stream.push(bad)
    with pytest.raises(InputValueError, match="allow_nonfinite=True"):
        stream.push(float("nan"))
    assert stream.state[0].tolist() == [0.0] * 6  # refused pushes leave the state alone
    tolerant = runtime.Stream(runtime.load(COMMITTED, allow_nonfinite=True))
    assert np.isnan(tolerant.push(float("nan"))).all()
    tolerant.reset()
    assert tolerant.push(1e39).shape == (1,)  # not refused: it becomes +inf, as an array's cast does


def test_large_batches_run_at_a_few_padded_sizes_and_padding_touches_no_stream(model):
    """Batches above 16 run padded to four sizes per octave (the padded rows use a scratch slot of
    no stream): every size from 1 to 300 steps bit for bit like each stream alone, with at most
    RUNNER_CACHE runners bound."""
    from runtime.streams import RUNNER_CACHE, padded_batch

    assert [padded_batch(c) for c in (1, 16, 17, 21, 33, 65, 300)] == [1, 16, 20, 24, 40, 80, 320]
    assert all(c <= padded_batch(c) <= c * 1.25 for c in range(1, 5000))
    pool = runtime.StreamPool(model, capacity=8)
    ids = [pool.open() for _ in range(300)]
    streams = [runtime.Stream(model) for _ in ids]
    rng = np.random.default_rng(3)
    for count in range(1, 301, 7):
        chosen = rng.permutation(len(ids))[:count]
        xs = rng.uniform(-1, 1, (count, 1)).astype(np.float32)
        ys = pool.step(np.array(ids)[chosen], xs)
        for row, index in enumerate(chosen):
            np.testing.assert_array_equal(ys[row], streams[index].push(xs[row, 0]))
    assert len(pool) == 300 and len(pool._runners) <= RUNNER_CACHE
    for stream, alone in zip(ids, streams):
        np.testing.assert_array_equal(pool.state(stream)[0], alone.state[0])


def test_a_push_queued_while_a_direct_push_runs_is_served_before_that_push_returns(monkeypatch):
    # A push that finds the pool idle runs in its caller's thread (no Event hand-off); one queued
    # meanwhile must not wait for its own next poll: the direct push drains it before it returns.
    model = runtime.load(COMMITTED)
    pool = runtime.StreamPool(model)
    first, second = pool.open(), pool.open()
    real = runtime.bound.BoundStep.step_rows
    calls = []

    def step_rows(self, inputs, states, rows):
        calls.append(rows)
        if len(calls) == 1:  # the direct push: hold it until the other push has queued
            for _ in range(2000):
                if pool._queue:
                    break
                threading.Event().wait(0.001)
        return real(self, inputs, states, rows)

    monkeypatch.setattr(runtime.bound.BoundStep, "step_rows", step_rows)
    results = {}
    queued = threading.Thread(target=lambda: results.setdefault("second", pool.push(second, 0.3)))
    direct = threading.Thread(target=lambda: results.setdefault("first", pool.push(first, 0.5)))
    direct.start()
    while not calls:
        threading.Event().wait(0.0005)
    queued.start()
    direct.join(10)
    assert "first" in results and not pool._queue and len(calls) == 2  # served by the direct push
    queued.join(10)
    np.testing.assert_array_equal(results["second"], model.step(0.3)[0][0])

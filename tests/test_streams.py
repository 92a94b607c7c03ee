"""runtime.Stream and runtime.StreamPool: stateful streams, batched ticks, threads, saved states."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import runtime
from export.verify import ROLLOUT_ATOL
from runtime.errors import InputValueError, ShapeError

from .conftest import COMMITTED


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
    for broken, message in ((data[:-3], "truncated|values"), (b"junk" * 10, "not a stream state"),
                            (data + b"x", "unexpected bytes"), ("text", "must be bytes")):
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

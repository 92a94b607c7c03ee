"""runtime.model from many threads: one model shared by eight threads gives the sequential results."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import runtime


def _calls(count, seed):
    rng = np.random.default_rng(seed)
    calls = []
    for _ in range(count):
        kind = rng.choice(["step", "predict", "generate"])
        batch = int(rng.choice([1, 3, 17, 64]))
        state = rng.uniform(-1, 1, (batch, 6)).astype(np.float32)
        if kind == "step":
            calls.append(("step", rng.uniform(-1, 1, (batch, 1)).astype(np.float32), state, None))
        elif kind == "predict":
            steps = int(rng.choice([1, 5, 23]))
            calls.append(("predict", rng.uniform(-1, 1, (steps, batch, 1)).astype(np.float32), state, None))
        else:
            steps = int(rng.choice([1, 5, 23]))
            form = rng.choice([None, "step", "rollout_rnn", "rollout_loop"])
            calls.append(("generate", rng.uniform(-1, 1, (batch, 1)).astype(np.float32), state, (steps, form)))
    return calls


def _call(model, call):
    kind, first, state, extra = call
    if kind == "step":
        y, new = model.step(first, state)
    elif kind == "predict":
        y, new = model.predict(first, state)
    else:
        steps, form = extra
        y, new = model.generate(first, steps, state, form=None if form is None else str(form))
    return y, new[0]


STRESS_CALLS = 10_000
STRESS_THREADS = 8


def test_one_model_from_eight_threads_matches_sequential_calls_bit_for_bit(exported_folder):
    model = runtime.load(exported_folder)
    calls = _calls(STRESS_CALLS, seed=11)
    calls += [("generate", np.full((2100, 1), 0.3, np.float32), np.zeros((2100, 6), np.float32), (12, None))] * 8
    start = time.perf_counter()
    sequential = [_call(model, c) for c in calls]
    sequential_s = time.perf_counter() - start
    start = time.perf_counter()
    with ThreadPoolExecutor(STRESS_THREADS) as pool:
        concurrent = list(pool.map(lambda c: _call(model, c), calls))
    concurrent_s = time.perf_counter() - start
    mismatches = sum(
        not (np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])) for a, b in zip(sequential, concurrent)
    )
    print(
        f"\nstress: {len(calls)} calls, sequential {sequential_s:.2f} s, {STRESS_THREADS} threads {concurrent_s:.2f} s"
    )
    assert mismatches == 0

"""The fused calls' cached per-form set-up: results bit-identical to a raw session.run, every call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime.fused import choose_form

FOLDER = Path(__file__).resolve().parents[2] / "artifacts" / "sine-elman"


@pytest.mark.parametrize("kind", ["generate", "predict"])
@pytest.mark.parametrize("batch", [1, 64])
def test_fused_calls_match_a_raw_run_bit_for_bit(kind: str, batch: int) -> None:
    model = runtime.load(FOLDER)
    rng = np.random.default_rng(batch)
    steps = 10
    form = choose_form(kind, batch, steps, model.forms, "elman")
    inputs, outputs = ([spec[0] for spec in specs] for specs in model.form_specs(form))
    for _ in range(3):  # the first call creates and caches the form's set-up; later ones reuse it
        state = tuple(rng.uniform(-1, 1, (batch, size)).astype(np.float32) for size in model.state_sizes)
        if kind == "generate":
            first = rng.uniform(-1, 1, (batch, 1)).astype(np.float32)
            ys, new_state = model.generate(first, steps, state)
            feed = {**dict(zip(inputs, (first, *state))), "steps": np.array([steps], dtype=np.int64)}
        else:
            first = rng.uniform(-1, 1, (steps, batch, 1)).astype(np.float32)
            ys, new_state = model.predict(first, state)
            feed = dict(zip(inputs, (first, *state)))
        assert model.loaded_forms == ("step", form)
        raw = model.session(form).run(outputs, feed)
        for got, want in zip((ys, *new_state), raw):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.array_equal(got, want)
    assert model.forms is model.forms  # computed once, at load

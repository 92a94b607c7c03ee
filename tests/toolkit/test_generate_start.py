"""Where `rnn generate` starts and what it says about the start: by default where the demo's
prediction picture starts its closed loop (the training series teacher-forced, then its last
point), and one warning line on stderr when the start is a fixed point of the closed loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import runtime
from toolkit.cli import cli
from toolkit.running import fixed_point

from ..conftest import COMMITTED

WARNING = "warning: the start is a fixed point of the closed loop"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def csv_values(text: str) -> np.ndarray:
    lines = text.strip().splitlines()
    assert lines[0] == "step,y" and [int(line.split(",")[0]) for line in lines[1:]] == list(range(1, len(lines)))
    return np.array([float(line.split(",")[1]) for line in lines[1:]])


def test_the_default_start_is_where_the_pictures_closed_loop_starts():
    """The rows equal the rollout prediction.png draws (`rnn.eager.run_series`: eager PyTorch
    over the training series, then its closed loop) to float32 rounding."""
    import torch

    from rnn.checkpoint import load_checkpoint
    from rnn.config import read_config, training_series
    from rnn.eager import run_series
    from rnn.model import initial_state

    steps = 40
    result = invoke("generate", COMMITTED, "--steps", steps)
    assert result.exit_code == 0 and result.stderr == "", result.stderr
    config = read_config(COMMITTED)
    values = training_series(config.train, COMMITTED).values
    with torch.no_grad():
        drawn = run_series(load_checkpoint(COMMITTED).model, initial_state(config.model), values, steps).rollout
    np.testing.assert_allclose(csv_values(result.stdout), drawn, rtol=0, atol=2e-5)
    document = json.loads(invoke("generate", COMMITTED, "--steps", steps, "--json").stdout)
    assert document["x0"] == pytest.approx(np.sin(10.0), abs=1e-7)  # the series' last point, t = 10
    np.testing.assert_array_equal(np.float32(document["y"]), np.float32(csv_values(result.stdout)))


def test_a_start_at_a_fixed_point_is_warned_in_one_line_and_still_generated():
    result = invoke("generate", COMMITTED, "--steps", 500, "--x0", 0)
    assert result.exit_code == 0
    said = result.stderr.strip().splitlines()
    assert len(said) == 1 and said[0].startswith(WARNING) and "x = 0" in said[0] and "--x0" in said[0], said
    assert np.array_equal(csv_values(result.stdout), np.zeros(500))  # a model without biases stays at 0
    as_json = invoke("generate", COMMITTED, "--steps", 3, "--x0", 0, "--json")
    assert as_json.stderr.startswith(WARNING) and json.loads(as_json.stdout)["y"] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("arguments", [["--x0", "0.5"], ["--x0", "-0.3"], []])
def test_a_start_that_moves_is_not_warned(arguments):
    result = invoke("generate", COMMITTED, "--steps", 5, *arguments)
    assert result.exit_code == 0 and WARNING not in result.stderr, result.stderr
    assert np.unique(csv_values(result.stdout)).size == 5


def test_a_fixed_point_is_the_input_fed_back_exactly_and_the_state_unchanged():
    model = runtime.load(COMMITTED)
    zero = {"x": np.zeros((1, 1), np.float32)}
    assert fixed_point(model, zero, None)  # no biases: 0 in, 0 out, the zero state stays zero
    assert fixed_point(model, zero, model.initial_state(1))
    _, warm = model.step(np.array([[0.7]], np.float32))  # the same input from another state moves
    assert not fixed_point(model, zero, warm)
    assert not fixed_point(model, {"x": np.full((1, 1), 0.25, np.float32)}, None)
    tiny = {"x": np.full((1, 1), -1e-30, np.float32)}  # a start next to one is not one (it reaches 0 later)
    assert not fixed_point(model, tiny, None) and model.step(tiny["x"])[0][0, 0] != 0
    # the definition's guarantee: from a fixed point every later step is that step again
    ys, state = model.generate(zero["x"], 50, model.initial_state(1))
    assert not ys.any() and all(not s.any() for s in state)

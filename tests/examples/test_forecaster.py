"""examples/forecaster: the worked two-layer LSTM forecaster (four state tensors), end to end: it
forecasts (its closed loop follows the true sine) and says how far off it is."""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import torch

import runtime

from ..conftest import REPO

# The test's run: shorter training and horizon than the example's defaults (200 epochs, 60
# closed-loop steps, 100-step forecast: max error 0.042 on the x86_64 CI-class machine), the same
# code path. This run's forecast measured 0.154 max error; a model trained one step ahead only
# (the example before) was off by up to 1.24.
EPOCHS, FREE_RUN, HORIZON = 100, 30, 50
MAX_ERROR, MAX_RMS = 0.3, 0.15


def load_example():
    spec = importlib.util.spec_from_file_location("forecaster", REPO / "examples" / "forecaster" / "forecaster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_forecaster_trains_until_its_closed_loop_holds_and_forecasts_the_sine(tmp_path, capsys):
    example = load_example()
    folder = tmp_path / "forecaster"
    argv = ["--out", str(folder), "--epochs", EPOCHS, "--free-run", FREE_RUN, "--horizon", HORIZON]
    assert example.main([str(a) for a in argv]) == 0
    report = json.loads((folder / "verify.json").read_text())
    assert report["passed"] and report["user_data"]["shape"] == [example.KNOWN, 1, 1]
    model = runtime.load(folder)
    assert model.state_names == ("h1", "c1", "h2", "c2")
    captured = capsys.readouterr()
    printed = captured.out.strip().splitlines()
    assert printed[0] == "step,y,truth" and len(printed) == HORIZON + 1
    rows = np.array([[float(v) for v in line.split(",")] for line in printed[1:]])
    np.testing.assert_array_equal(rows[:, 0], np.arange(1, HORIZON + 1))
    forecast, truth = rows[:, 1], rows[:, 2]
    np.testing.assert_allclose(truth, example.truth(HORIZON), atol=1e-6)
    t = example.times()
    np.testing.assert_allclose(truth, np.sin(t[example.KNOWN : example.KNOWN + HORIZON]), atol=1e-6)
    # The printed forecast is the runtime's closed loop from the known points, and it holds.
    np.testing.assert_allclose(forecast, example.forecast(model, example.series(), HORIZON), atol=1e-6)
    error = np.abs(forecast - truth)
    assert error.max() < MAX_ERROR and np.sqrt(np.mean(error**2)) < MAX_RMS, error
    assert forecast.max() > 0.8 and forecast.min() < -0.8  # it swings with the sine, not a constant
    said = re.search(r"max error (\d\.\d{3}), RMS (\d\.\d{3})", captured.err)
    assert said and float(said[1]) == round(float(error.max()), 3), captured.err


def test_training_is_seeded_and_the_closed_loop_loss_falls():
    example = load_example()
    data = example.series()
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        module = example.make()
        losses = example.train(module, data, epochs=6, free_run=10)
        runs.append((losses, [p.detach().clone() for p in module.parameters()]))
    assert runs[0][0] == runs[1][0] and losses[-1] < losses[0]
    for a, b in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

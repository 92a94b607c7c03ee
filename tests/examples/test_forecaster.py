"""examples/forecaster: the worked two-layer LSTM forecaster (four state tensors), end to end."""

from __future__ import annotations

import importlib.util
import json

import numpy as np

import runtime

from ..conftest import REPO


def load_example():
    spec = importlib.util.spec_from_file_location("forecaster", REPO / "examples" / "forecaster" / "forecaster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_forecaster_trains_exports_verifies_on_its_data_and_runs_closed_loop(tmp_path, capsys):
    example = load_example()
    folder = tmp_path / "forecaster"
    assert example.main(["--out", str(folder), "--epochs", "10"]) == 0
    report = json.loads((folder / "verify.json").read_text())
    assert report["passed"] and report["user_data"]["shape"] == [200, 1, 1]
    model = runtime.load(folder)
    assert model.state_names == ("h1", "c1", "h2", "c2")
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0] == "step,y" and len(printed) == 101
    values = np.array([float(line.split(",")[1]) for line in printed[1:]])
    assert np.all(np.isfinite(values)) and values.std() > 0.05  # a moving forecast, not a constant
    assert example.main(["--out", str(tmp_path / "again"), "--epochs", "10"]) == 0  # seeded: the same folder
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())["files"]
    first = json.loads((folder / "manifest.json").read_text())["files"]
    assert {f["name"]: f["sha256"] for f in first if f["name"] == "weights.pt"} == {
        f["name"]: f["sha256"] for f in again if f["name"] == "weights.pt"
    }

"""Verification on the user's own inputs (verify_folder(inputs=...), rnn verify --data): a module
whose export differs from it only outside [-1, 1] passes the built-in checks and fails on large
data; good models pass; the data's contract, the CLI's one-line errors, the report's record of the
data, and the caller's random generators left alone."""

from __future__ import annotations

import hashlib
import json
import random
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from export import export_module, verify_folder
from export.user_inputs import user_inputs
from rnn.data import load_inputs
from runtime.errors import DataError, DtypeError, InputValueError, ShapeError
from runtime.manifest import VERIFY_NAME
from toolkit.cli import cli

from ..user_modules import FOUR_STATES, make_four_state, make_two_state

CLAMPED = "tests.export.test_user_data:make_clamped"
TWO_STATE = "tests.user_modules:make_two_state"
FOUR_STATE = "tests.user_modules:make_four_state"
LARGE = 3.0  # the amplitude of the large-magnitude data: well outside verification's [-1, 1]


class ClampedWhenScripted(nn.Module):
    """Clamps its input to [-1, 1] only in TorchScript (so in the exported ONNX too), not in eager
    PyTorch: the two agree on every input verification draws by itself, and on no larger one."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 4) * 0.5)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        if torch.jit.is_scripting():
            x = torch.clamp(x, -1.0, 1.0)
        h_next = torch.tanh(torch.cat((x, h), 1) @ self.w)  # (batch, 4)
        return h_next[:, :1], h_next


def make_clamped() -> ClampedWhenScripted:
    torch.manual_seed(7)
    return ClampedWhenScripted()


def large_series(steps: int = 40) -> np.ndarray:
    return (LARGE * np.cos(np.linspace(0.0, 8.0, steps))).astype(np.float32)  # starts at LARGE


@pytest.fixture(scope="module")
def clamped_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("clamped") / "byo"
    return export_module(make_clamped(), out, input_size=1, output_size=1, states=[("h", 4)], factory=CLAMPED)


@pytest.fixture(scope="module")
def two_state_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("two") / "byo"
    states = [("fast", 4), ("slow", 4, 0.25)]
    return export_module(make_two_state(), out, input_size=1, output_size=1, states=states, factory=TWO_STATE)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def failed_checks(report) -> set[tuple[str, str]]:
    return {(c.form, c.check) for c in report.comparisons if not c.passed}


def test_an_export_that_differs_only_outside_the_unit_range_fails_on_large_user_data(clamped_folder):
    default = verify_folder(clamped_folder, write=False, trust=True, factory=CLAMPED)
    assert default.passed, default.table()  # the built-in checks cannot see it
    report = verify_folder(clamped_folder, write=False, trust=True, factory=CLAMPED, inputs=large_series())
    assert not report.passed
    assert failed_checks(report) == {
        (form, check)
        for form in ("torchscript", "onnx", "sequence_loop", "rollout_loop")  # the loops around the step graph too
        for check in ("user data b=1 T=40", "user data b=1 rollout T=200")
        if not (form == "sequence_loop" and "rollout" in check) and not (form == "rollout_loop" and "T=40" in check)
    }
    assert all(not c.passed for c in report.comparisons if c.check.startswith("user") and c.output == "y")
    worst = max(c.max_abs for c in report.comparisons if c.check == "user data b=1 T=40" and c.output == "y")
    assert worst > 1e-2
    assert "FAIL" in report.table() and "user data: array, shape 40x1x1" in report.table()
    # within [-1, 1] the user's data passes: the rows test the data, not the model
    assert verify_folder(clamped_folder, write=False, trust=True, factory=CLAMPED, inputs=large_series() / LARGE).passed


def test_rnn_verify_data_fails_on_large_data_and_records_the_file(clamped_folder, tmp_path):
    data = tmp_path / "large.csv"
    data.write_text("value\n" + "\n".join(f"{v:.6f}" for v in large_series()) + "\n")
    result = invoke("verify", clamped_folder, "--factory", CLAMPED, "--data", data)
    assert result.exit_code == 1, result.output
    assert "user data b=1 T=40" in result.output and "FAIL" in result.output
    written = json.loads((clamped_folder / VERIFY_NAME).read_text())
    assert written["passed"] is False
    user = written["user_data"]
    assert user["source"] == str(data) and user["shape"] == [40, 1, 1] and user["dtype"] == "float32"
    assert user["file_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    values = np.loadtxt(data, skiprows=1, dtype=np.float64).astype(np.float32).reshape(40, 1, 1)
    assert user["sha256"] == hashlib.sha256(values.tobytes()).hexdigest()
    info = invoke("info", clamped_folder)  # rnn info says which data the report is about
    assert f"user data  {data} (shape 40x1x1, sha256 {user['sha256'][:16]})" in info.output
    assert json.loads(invoke("info", clamped_folder, "--json").output)["verified_on_user_data"] == user
    assert invoke("verify", clamped_folder, "--factory", CLAMPED).exit_code == 0  # without --data: passes
    assert json.loads((clamped_folder / VERIFY_NAME).read_text())["user_data"] is None
    assert "user data  none" in invoke("info", clamped_folder).output


def test_a_good_module_passes_on_user_data_in_every_accepted_shape(two_state_folder):
    series = large_series(30)
    batch = np.stack([series, -series, series * 0.5], axis=1)[:, :, None]  # (30, 3, 1)
    for inputs, batch_size in ((series, 1), (series[:, None], 1), (batch, 3), (list(batch[:, :, 0].T), 3)):
        report = verify_folder(two_state_folder, write=False, trust=True, factory=TWO_STATE, inputs=inputs)
        assert report.passed, report.table()
        checks = {c.check for c in report.comparisons}
        assert {f"user data b={batch_size} T=30", f"user data b={batch_size} rollout T=200"} <= checks
        assert "sequence data T=20" not in checks and "rollout data T=200" not in checks  # no sine for a user's module
        assert {"step b=64", "sequence b=3 T=1000", "rollout b=64 T=200"} <= checks  # the built-in checks stay
        assert report.user_data["shape"] == [30, batch_size, 1] and report.user_data["source"] == "array"
    forms = {c.form for c in report.comparisons if c.check == "user data b=3 T=30"}
    assert forms == {"torchscript", "onnx", "sequence_loop"}


def test_the_built_in_model_keeps_its_training_series_checks_beside_user_data(exported_copy):
    report = verify_folder(exported_copy, write=False, inputs=large_series(25))
    assert report.passed, report.table()
    checks = {(c.form, c.check) for c in report.comparisons}
    for form in ("onnx", "sequence_rnn", "sequence_loop"):
        assert (form, "user data b=1 T=25") in checks and (form, "sequence data T=20") in checks
    for form in ("onnx", "rollout_rnn", "rollout_loop"):
        assert (form, "user data b=1 rollout T=200") in checks and (form, "rollout data T=200") in checks


def test_a_model_whose_outputs_are_not_inputs_gets_the_teacher_forced_check_only(tmp_path):
    folder = export_module(
        make_four_state(), tmp_path / "four", input_size=2, output_size=3, states=FOUR_STATES, factory=FOUR_STATE
    )
    data = tmp_path / "two_features.csv"
    rows = np.random.default_rng(0).normal(scale=4.0, size=(15, 2))
    data.write_text("a,b\n" + "\n".join(f"{a:.5f},{b:.5f}" for a, b in rows) + "\n")
    report = verify_folder(folder, write=False, trust=True, factory=FOUR_STATE, inputs=data)
    assert report.passed, report.table()
    user_checks = {c.check for c in report.comparisons if c.check.startswith("user")}
    assert user_checks == {"user data b=1 T=15"}
    assert report.user_data["shape"] == [15, 1, 2]


@pytest.mark.parametrize(
    ("inputs", "input_size", "error", "message"),
    [
        (np.zeros((5, 2), np.float32), 1, ShapeError, r"must be \(steps,\), \(steps, 1\) or \(steps, batch, 1\)"),
        (np.zeros((5, 3, 2), np.float32), 1, ShapeError, r"got shape \(5, 3, 2\)"),
        (np.zeros(5, np.float32), 2, ShapeError, r"must be \(steps, 2\) or \(steps, batch, 2\) real numbers, got"),
        (np.zeros((0, 1, 1), np.float32), 1, ShapeError, "got shape"),
        (np.zeros((2, 2, 2, 1), np.float32), 1, ShapeError, "got shape"),
        (np.float32(1.0), 1, ShapeError, "a single number"),
        ([np.zeros(5), np.zeros(4)], 1, ShapeError, "series of shapes"),
        ([np.zeros(5)], 2, ShapeError, "a list of series is for input_size 1"),
        ([], 1, ShapeError, "empty list"),
        (np.array([1.0, np.nan]), 1, InputValueError, "NaN or infinity"),
        (np.array([1e39]), 1, InputValueError, "beyond float32's range"),
        (np.array([True, False]), 1, DtypeError, "float32"),
        (np.array(["a"]), 1, DtypeError, "float32"),
    ],
)
def test_data_that_cannot_be_used_is_refused_naming_the_shapes_taken(inputs, input_size, error, message):
    with pytest.raises(error, match=message):
        user_inputs(inputs, input_size)


def test_user_data_is_refused_before_any_check_runs(two_state_folder):
    calls = []
    with pytest.raises(ShapeError):
        verify_folder(
            two_state_folder,
            write=False,
            factory=TWO_STATE,
            inputs=np.zeros((4, 2)),
            progress=lambda *a: calls.append(a),
        )
    assert calls == []


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "wide.csv",
            "1,2\n3,4\n",
            r"wide.csv must be \(steps,\), \(steps, 1\) or \(steps, batch, 1\) real numbers, got shape \(2, 2\)$",
        ),
        ("nan.csv", "1\nnan\n2\n", "NaN or infinity at index 1"),
        ("ragged.csv", "1,2\n3\n", "line 2 has 1 columns, the first row 2"),
        ("words.csv", "x\n1\nabc\n", "line 3 is not a row of numbers"),
        ("empty.csv", "header\n", "holds no values"),
        ("data.txt", "1\n2\n", "must be .csv or .npy"),
        ("deep.npy", np.zeros((2, 2, 2, 1)), "must be an array of 1 to 3 axes"),
        ("features.npy", np.zeros((5, 1, 3)), r"got shape \(5, 1, 3\)"),
        ("missing.csv", None, "does not exist"),
    ],
)
def test_rnn_verify_data_errors_are_one_line_and_exit_2(two_state_folder, tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        np.save(path, content)
    before = (two_state_folder / VERIFY_NAME).read_bytes() if (two_state_folder / VERIFY_NAME).exists() else None
    result = invoke("verify", two_state_folder, "--factory", TWO_STATE, "--data", path)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: "), result.output
    assert re.search(message, lines[-1]), result.output
    assert "Traceback" not in result.output
    after = (two_state_folder / VERIFY_NAME).read_bytes() if (two_state_folder / VERIFY_NAME).exists() else None
    assert after == before  # nothing written for a refused run


def test_load_inputs_reads_tables_as_predict_reads_series(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,c\n1,2,3\n\n4,5,6\n")
    read = load_inputs(tmp_path / "t.csv")
    assert read.values.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert read.sha256 == hashlib.sha256((tmp_path / "t.csv").read_bytes()).hexdigest()
    (tmp_path / "one.csv").write_text("0.5\n1.5\n")
    assert load_inputs(tmp_path / "one.csv").values.shape == (2,)
    np.save(tmp_path / "b.npy", np.arange(12, dtype=np.int32).reshape(2, 3, 2))
    assert load_inputs(tmp_path / "b.npy").values.dtype == np.float64
    with pytest.raises(DataError, match="must hold real numbers"):
        np.save(tmp_path / "o.npy", np.array([{}], dtype=object), allow_pickle=True)
        load_inputs(tmp_path / "o.npy")


def test_verification_on_user_data_leaves_the_callers_random_generators_alone(two_state_folder):
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    verify_folder(two_state_folder, write=False, factory=TWO_STATE, inputs=large_series(10))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]

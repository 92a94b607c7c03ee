"""rnn.data: the reference sine, its input/target pairs, and reading a user's one-column series."""

from __future__ import annotations

import numpy as np
import pytest

from rnn.data import load_series, pairs, sine_series
from runtime.errors import DataError


def test_pairs_shift_by_one():
    series = sine_series(20)
    inputs, targets = pairs(series)
    assert len(series) == 21 and np.array_equal(inputs[1:], targets[:-1])
    assert series[0] == pytest.approx(np.sin(2.0)) and series[-1] == pytest.approx(np.sin(10.0))


def test_csv_with_and_without_header(tmp_path):
    (tmp_path / "a.csv").write_text("value\n0.5\n1.5\n\n-2\n")
    (tmp_path / "b.csv").write_text("1\n2\n3\n")
    assert load_series(tmp_path / "a.csv").tolist() == [0.5, 1.5, -2.0]
    assert load_series(tmp_path / "b.csv").tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("shape", [(5,), (5, 1)])
def test_npy_one_column(tmp_path, shape):
    np.save(tmp_path / "s.npy", np.arange(5.0).reshape(shape))
    assert load_series(tmp_path / "s.npy").tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("two.csv", "1,2\n3,4\n", "expected one column"),
        ("text.csv", "1\nabc\n", "is not a number"),
        ("nan.csv", "1\nnan\n3\n", "NaN or infinity"),
        ("short.csv", "1\n", "at least 2 points"),
        ("data.txt", "1\n2\n", "must be .csv or .npy"),
        ("latin.csv", b"\xff\xfe1\n", "not UTF-8"),
    ],
)
def test_bad_text_files_are_refused(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=message):
        load_series(path)


def test_bad_npy_files_are_refused(tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((4, 2)))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="one column"):
        load_series(tmp_path / "wide.npy")
    with pytest.raises(DataError):  # a pickled object array is never unpickled
        load_series(tmp_path / "objects.npy")
    with pytest.raises(DataError):
        load_series(tmp_path / "broken.npy")
    with pytest.raises(DataError, match="does not exist"):
        load_series(tmp_path / "missing.csv")

"""rnn.data: the reference sine, its input/target pairs, and reading a user's one-column series."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from rnn.data import MAX_CSV_LINE_BYTES, MAX_SERIES_POINTS, load_series, pairs, sine_series
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


SECRET = "hunter2:x:0:0:zq-token"  # stands for a line of a file the reader of an error should not see


@pytest.mark.parametrize(
    "name, content",
    [
        ("text.csv", f"1\n2\n{SECRET}\n"),  # a number, then text: not a header
        ("columns.csv", f"1\n{SECRET},2\n"),
        ("header-only.csv", f"{SECRET}\n"),
        ("latin.csv", b"1\n\xff" + SECRET.encode() + b"\n"),
        ("magic.npy", SECRET),  # not the .npy magic string
        ("header.npy", b"\x93NUMPY\x01\x00\x20\x00{'descr': '" + SECRET.encode() + b"'}\n"),
    ],
)
def test_errors_name_the_place_never_the_files_contents(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as refused:
        load_series(path)
    assert "hunter2" not in str(refused.value) and "zq-token" not in str(refused.value), refused.value


def _npy_header_only(path, shape, values=b""):
    """An .npy file whose header claims ``shape`` (float64), followed by ``values`` bytes only."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f8", "fortran_order": False, "shape": shape})
        handle.write(values)


def test_an_npy_header_claiming_a_huge_shape_is_refused_before_its_data_is_read(tmp_path):
    _npy_header_only(tmp_path / "huge.npy", (10**11,))
    with pytest.raises(DataError, match=f"claims {10**11} points, more than the {MAX_SERIES_POINTS}"):
        load_series(tmp_path / "huge.npy")
    _npy_header_only(tmp_path / "column.npy", (10**11, 1))
    with pytest.raises(DataError, match="more than"):
        load_series(tmp_path / "column.npy")
    _npy_header_only(tmp_path / "short.npy", (100,), np.arange(10.0).tobytes())
    with pytest.raises(DataError, match="is truncated: its header says 100 points"):
        load_series(tmp_path / "short.npy")


def test_only_regular_files_are_read(tmp_path):
    """A named pipe is refused at once (it would block, or read what a writer sends), and so are
    folders and devices; a file that is not there says so."""
    os.mkfifo(tmp_path / "fifo.csv")
    (tmp_path / "folder.csv").mkdir()
    for path in (tmp_path / "fifo.csv", tmp_path / "folder.csv", Path("/dev/null")):
        with pytest.raises(DataError, match="is not a regular file"):
            load_series(path)
    with pytest.raises(DataError, match="does not exist"):
        load_series(tmp_path / "gone.csv")


def test_a_line_longer_than_any_number_is_refused(tmp_path):
    (tmp_path / "long.csv").write_text("1\n2\n" + "1" * (MAX_CSV_LINE_BYTES + 10) + "\n")
    with pytest.raises(DataError, match=f"line 3 is longer than {MAX_CSV_LINE_BYTES} bytes"):
        load_series(tmp_path / "long.csv")


def test_an_npz_is_refused_whole_when_its_arrays_pass_the_limit_together(tmp_path, monkeypatch):
    import rnn.data as data

    path = tmp_path / "two.npz"
    np.savez(path, a=np.zeros(100), b=np.zeros(100))
    monkeypatch.setattr(data, "MAX_NPZ_MEMBER_BYTES", 1000)  # each array fits, both do not
    with pytest.raises(DataError, match="bytes of arrays, more than 1000"):
        data.load_named_arrays(path)

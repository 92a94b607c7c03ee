"""Issue 23 point 8: a NaN message names only what its path offers (the library its
allow_nonfinite=True, `rnn generate` --allow-nonfinite, `rnn predict` and the bulk runs nothing),
and a bulk run over two rows of one id is refused, naming the id and its rows, before Ray starts."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import runtime
from runtime.errors import DataError, InputValueError
from toolkit.cli import cli

from ..conftest import COMMITTED
from .test_cli import run_rnn

NAN_SEQUENCES = np.array([[[0.1]], [[np.nan]], [[0.3]]], np.float32)  # (steps 3, batch 1, 1)


def test_the_library_names_its_own_option_only():
    model = runtime.load(COMMITTED)
    with pytest.raises(InputValueError) as refused:
        model.predict(NAN_SEQUENCES)
    assert "allow_nonfinite=True" in str(refused.value) and "--allow-nonfinite" not in str(refused.value)
    ys, _ = runtime.load(COMMITTED, allow_nonfinite=True).predict(NAN_SEQUENCES)  # what it advises works
    assert ys.shape == (3, 1, 1) and np.isnan(ys[1:]).all() and np.isfinite(ys[0]).all()


def test_rnn_predict_has_no_allow_nonfinite_and_does_not_advise_it(tmp_path):
    np.savez(tmp_path / "nan.npz", x=NAN_SEQUENCES)
    refused = run_rnn("predict", COMMITTED, "--input", tmp_path / "nan.npz")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == "error: input 'x' contains NaN or infinity\n"
    offered = CliRunner().invoke(cli, ["predict", str(COMMITTED), "--allow-nonfinite"])
    assert offered.exit_code == 2 and "No such option" in offered.output


@pytest.mark.parametrize("start", [["--x0", "nan"], ["--start", "x=inf"], ["--warmup", "nan.npz"]])
def test_rnn_generate_advises_its_own_option(tmp_path, start):
    np.savez(tmp_path / "nan.npz", x=np.array([[[0.1]], [[0.2]], [[np.nan]]], np.float32))
    args = [str(tmp_path / a) if a.endswith(".npz") else a for a in start]
    refused = CliRunner().invoke(cli, ["generate", str(COMMITTED), "--steps", "4", *args])
    assert refused.exit_code == 2 and refused.stdout == ""
    assert refused.stderr == "error: input 'x' contains NaN or infinity; pass --allow-nonfinite to run it anyway\n"
    allowed = CliRunner().invoke(cli, ["generate", str(COMMITTED), "--steps", "4", *args, "--allow-nonfinite"])
    assert allowed.exit_code == 0, allowed.output
    assert allowed.stdout.splitlines()[0] == "step,y" and len(allowed.stdout.splitlines()) == 5


def test_a_bulk_runs_nan_error_drops_the_advice():
    """A worker's NaN error reaches the caller of toolkit.bulk.run_bulk (which has no
    allow_nonfinite; `rnn generate --ray` refuses --allow-nonfinite) without the library's advice."""
    ray = pytest.importorskip("ray")
    from toolkit.bulk import _toolkit_cause

    with pytest.raises(InputValueError) as worker:
        runtime.load(COMMITTED).predict(NAN_SEQUENCES)
    wrapped = RuntimeError("map_batches failed")
    wrapped.__cause__ = type(worker.value)(f"{worker.value}\nRetrying ... (Ray's notes)")
    cause = _toolkit_cause(ray, wrapped)
    assert isinstance(cause, InputValueError) and str(cause) == "input 'x' contains NaN or infinity"


# ---- duplicate ids ----------------------------------------------------------------------------


@pytest.fixture()
def no_ray(monkeypatch):
    """Fails the test if the run gets as far as starting (or joining) Ray."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("pyarrow")

    def started(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr("toolkit.bulk.connect", started)
    yield
    assert not ray.is_initialized()


def _wide(path, ids) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    series = [np.sin(np.arange(6) * 0.4 + i) for i in range(len(ids))]
    pq.write_table(pa.table({"id": ids, "series": pa.array(series)}), path)


@pytest.mark.parametrize("command", [["predict"], ["generate", "--steps", "3"]])
def test_the_cli_refuses_duplicate_ids_before_ray(tmp_path, no_ray, command):
    _wide(tmp_path / "in.parquet", ["a", "b", "c", "b", "d"])
    args = [*command, str(COMMITTED), "--ray", "--input", str(tmp_path / "in.parquet"), "--out", str(tmp_path / "o")]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and refused.stdout == "", refused.output
    line = refused.stderr
    assert line.count("\n") == 1 and "id 'b' is on two rows" in line
    assert "row 1 of" in line and "row 3 of" in line and "in.parquet" in line
    assert not (tmp_path / "o").exists()


def test_duplicates_across_files_and_in_named_columns(tmp_path, no_ray):
    """Ids repeated across two files of a folder (the wide layout), and in Parquet of named columns
    (`toolkit.bulk_rows`: an ``id`` and an ``x`` column) with integer ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from toolkit.bulk import run_bulk

    (tmp_path / "wide").mkdir()
    _wide(tmp_path / "wide" / "part0.parquet", [10, 11, 12])
    _wide(tmp_path / "wide" / "part1.parquet", [13, 12])
    with pytest.raises(DataError, match=r"id 12 is on two rows .*row 2 of .*part0.parquet and row 1 of .*part1"):
        run_bulk(COMMITTED, tmp_path / "wide", tmp_path / "out")
    rows = pa.table({"id": [5, 6, 5], "x": pa.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])})
    pq.write_table(rows, tmp_path / "rows.parquet")
    with pytest.raises(DataError, match=r"id 5 is on two rows .*row 0 of .*and row 2 of"):
        run_bulk(COMMITTED, tmp_path / "rows.parquet", tmp_path / "out", kind="generate", steps=2)
    with pytest.raises(DataError, match="not all of one type"):
        _wide(tmp_path / "wide" / "part2.parquet", ["x"])
        run_bulk(COMMITTED, tmp_path / "wide", tmp_path / "out")

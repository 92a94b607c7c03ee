"""toolkit.bulk: predict and generate over many series on Ray Data equal the runtime's own calls on
the same rows, from Parquet and .npy, through the library and the CLI; ragged data refused in one line."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import runtime
from runtime.errors import DataError, InputValueError
from toolkit.cli import cli

from ..conftest import COMMITTED, REPO

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from toolkit.bulk import ID_COLUMN, SERIES_COLUMN, SeriesRunner, read_output, run_bulk  # noqa: E402

SERIES = 2000
STEPS = 25
BATCH = 256  # several batches and a short last one (2000 = 7 x 256 + 208)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module: run_bulk uses it and leaves it running."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model():
    return runtime.load(COMMITTED)


def series_matrix(seed: int, count: int, length: int) -> np.ndarray:
    """(count, length) float64 series: sines of random phase and frequency, as the model was trained on."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) * 0.4
    return np.sin(rng.uniform(0.5, 1.5, (count, 1)) * t + rng.uniform(0, 2 * np.pi, (count, 1)))


def by_id(got_ids, ys, ids) -> np.ndarray:
    """The outputs stacked in the order of ``ids``, after checking every id came back exactly once.
    Rows are matched by id: Ray Data's preserve_order kept the input order in all but one run here."""
    position = {key: index for index, key in enumerate(np.asarray(got_ids).tolist())}
    assert len(position) == len(got_ids) == len(ids) and set(position) == set(np.asarray(ids).tolist())
    return np.stack([ys[position[key]] for key in np.asarray(ids).tolist()])


def write_parquet(path, ids, rows: list[np.ndarray], row_group_size: int = 300) -> None:
    table = pa.table({ID_COLUMN: ids, SERIES_COLUMN: pa.array([np.asarray(r, dtype=np.float64) for r in rows])})
    pq.write_table(table, path, row_group_size=row_group_size)


def expected_predict(model, matrix: np.ndarray) -> np.ndarray:
    ys, _ = model.predict(matrix.T[:, :, None])  # (length, n, 1): one runtime call over all rows
    return ys[:, :, 0].T


def expected_generate(model, matrix: np.ndarray, steps: int) -> np.ndarray:
    xs = matrix.T[:, :, None]
    _, state = model.predict(xs[:-1])  # as `rnn generate --warmup`: all points but the last
    ys, _ = model.generate(xs[-1], steps, state)
    return ys[:, :, 0].T


def test_predict_parquet_equals_the_runtime_every_id_once(tmp_path, model):
    matrix = series_matrix(0, SERIES, 50)
    ids = [f"s{i:05d}" for i in range(SERIES)][::-1]  # string ids, not sorted: the order is the input's
    (tmp_path / "in").mkdir()
    half = SERIES // 2
    for part in range(2):  # a folder of two Parquet files, several row groups each
        rows = slice(part * half, (part + 1) * half)
        write_parquet(tmp_path / "in" / f"part{part}.parquet", ids[rows], list(matrix[rows]))
    result = run_bulk(COMMITTED, tmp_path / "in", tmp_path / "out", batch_size=BATCH, progress=False)
    assert result.series == SERIES
    got = by_id(*read_output(tmp_path / "out"), ids)
    assert got.dtype == np.float32 and got.shape == matrix.shape
    assert np.array_equal(got, expected_predict(model, matrix))


def test_generate_parquet_equals_the_runtime(tmp_path, model):
    matrix = series_matrix(7, SERIES, 20)
    write_parquet(tmp_path / "in.parquet", np.arange(SERIES, dtype=np.int64) * 3, list(matrix))
    run_bulk(COMMITTED, tmp_path / "in.parquet", tmp_path / "out", kind="generate", steps=STEPS, batch_size=BATCH)
    got = by_id(*read_output(tmp_path / "out"), np.arange(SERIES) * 3)
    assert np.array_equal(got, expected_generate(model, matrix, STEPS))


def test_npy_folder_generate_and_predict_equal_the_runtime(tmp_path, model):
    matrices = [series_matrix(11, 1200, 40), series_matrix(12, 800, 21).astype(np.float32)]  # files may differ
    (tmp_path / "in").mkdir()
    for index, matrix in enumerate(matrices):
        np.save(tmp_path / "in" / f"{index}.npy", matrix)
    run_bulk(COMMITTED, tmp_path / "in", tmp_path / "gen", kind="generate", steps=STEPS, batch_size=BATCH)
    got_ids, ys = read_output(tmp_path / "gen")
    got = by_id(got_ids, ys, np.arange(SERIES))  # ids: row numbers across the files in name order
    assert np.array_equal(np.stack(got[:1200]), expected_generate(model, matrices[0], STEPS))
    assert np.array_equal(np.stack(got[1200:]), expected_generate(model, matrices[1].astype(np.float64), STEPS))
    run_bulk(COMMITTED, tmp_path / "in" / "1.npy", tmp_path / "pred", batch_size=BATCH)
    got = by_id(*read_output(tmp_path / "pred"), np.arange(800))
    assert np.array_equal(got, expected_predict(model, matrices[1].astype(np.float64)))


def test_cli_ray_predict_and_generate(tmp_path, model):
    matrix = series_matrix(5, 300, 24)
    write_parquet(tmp_path / "in.parquet", np.arange(300), list(matrix))
    runner = CliRunner()
    args = [str(COMMITTED), "--ray", "--input", str(tmp_path / "in.parquet")]
    result = runner.invoke(cli, ["predict", *args, "--out", str(tmp_path / "p"), "--actors", "1"])
    assert result.exit_code == 0, result.output
    assert "predict: 300 series" in result.output
    assert np.array_equal(by_id(*read_output(tmp_path / "p"), np.arange(300)), expected_predict(model, matrix))
    result = runner.invoke(cli, ["generate", *args, "--steps", str(STEPS), "--out", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    assert np.array_equal(by_id(*read_output(tmp_path / "g"), np.arange(300)), expected_generate(model, matrix, STEPS))


def test_user_errors_before_ray_runs(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros(30))
    with pytest.raises(DataError, match="2-D numeric array"):
        run_bulk(COMMITTED, tmp_path / "flat.npy", tmp_path / "out")
    with pytest.raises(DataError, match="does not exist"):
        run_bulk(COMMITTED, tmp_path / "missing.parquet", tmp_path / "out")
    with pytest.raises(InputValueError, match="steps >= 1"):
        run_bulk(COMMITTED, tmp_path / "flat.npy", tmp_path / "out", kind="generate")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "a").write_text("x")
    with pytest.raises(InputValueError, match="already exists"):
        run_bulk(COMMITTED, tmp_path / "flat.npy", tmp_path / "taken")
    runner = CliRunner()
    refused = runner.invoke(cli, ["generate", str(COMMITTED), "--ray", "--out", str(tmp_path / "o")])
    assert refused.exit_code == 2 and "--ray needs --input" in refused.output
    refused = runner.invoke(cli, ["predict", str(COMMITTED), "--out", str(tmp_path / "o")])
    assert refused.exit_code == 2 and "go with --ray" in refused.output


def test_short_series_for_generate_refused():
    runner = SeriesRunner(str(COMMITTED), "generate", 3, BATCH)  # the actor's work, without Ray
    with pytest.raises(DataError, match="series need 2 or more, got 1"):
        runner.run(np.zeros((5, 1)))


def test_ragged_series_refused_in_one_line(tmp_path):
    """Last in the module: after a failed run, a later run on the same Ray instance can wait for
    the failed run's actors (seen once; NOTES.md). The CLI starts its own local Ray."""
    rows = [np.zeros(20)] * 10 + [np.zeros(21)] + [np.zeros(20)] * 10
    write_parquet(tmp_path / "ragged.parquet", [f"r{i}" for i in range(21)], rows)
    one_line = r"^series must all have the same length: id 'r\d+' has 2[01] points, id 'r\d+' has 2[01]$"
    with pytest.raises(DataError, match=one_line):
        run_bulk(COMMITTED, tmp_path / "ragged.parquet", tmp_path / "out", progress=False)
    code = (
        "import sys; from toolkit.cli import main; sys.argv = ['rnn', 'predict', sys.argv[1], '--ray', "
        "'--input', sys.argv[2], '--out', sys.argv[3]]; main()"
    )
    args = [str(COMMITTED), str(tmp_path / "ragged.parquet"), str(tmp_path / "x")]
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.match(one_line, errors[0].removeprefix("error: "))
    assert result.stderr.splitlines()[-1] == errors[0]  # last, after Ray Data's own log of the failure

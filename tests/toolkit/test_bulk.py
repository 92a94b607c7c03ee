"""toolkit.bulk: predict and generate over many series on Ray Data equal the runtime's own calls on
the same rows, from Parquet and .npy, through the library and the CLI; ragged data refused in one line."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import runtime
from runtime.errors import DataError, InputValueError, IntegrityError
from runtime.manifest import MANIFEST_NAME
from toolkit.cli import cli

from ..conftest import COMMITTED, REPO

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from toolkit import bulk  # noqa: E402
from toolkit.bulk import (  # noqa: E402
    ID_COLUMN,
    SERIES_COLUMN,
    LengthRegistry,
    SeriesRunner,
    long_to_wide,
    read_output,
    run_bulk,
)

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


def long_table(ids, matrix: np.ndarray, seed: int):
    """The long layout (series_id, t, value) of ``matrix``'s rows, rows shuffled; t counts from 100
    in steps of 3 (only the order of t matters)."""
    count, length = matrix.shape
    order = np.random.default_rng(seed).permutation(count * length)
    series_id = np.repeat(np.asarray(ids), length)[order]
    t = np.tile(100 + 3 * np.arange(length), count)[order]
    return pa.table({"series_id": series_id, "t": t, "value": matrix.reshape(-1)[order]})


def write_long(folder, table, parts: int = 3) -> None:
    """``table`` over ``parts`` files (so a series' rows are spread over them), small row groups."""
    folder.mkdir()
    size = -(-table.num_rows // parts)
    for part in range(parts):
        pq.write_table(table.slice(part * size, size), folder / f"part{part}.parquet", row_group_size=7000)


def test_long_layout_shuffled_over_files_equals_the_runtime(tmp_path, model, monkeypatch):
    monkeypatch.setattr(bulk, "LONG_ROWS_PER_PARTITION", 50_000)  # 90,000 rows: a sort into 2 blocks
    count = 3000
    matrix = series_matrix(21, count, 30)
    ids = np.random.default_rng(3).permutation(count).astype(np.int64) * 7 + 5  # int ids, not in order
    write_long(tmp_path / "long", long_table(ids, matrix, seed=4))
    result = run_bulk(COMMITTED, tmp_path / "long", tmp_path / "pred", batch_size=BATCH, progress=False)
    assert result.series == count
    got = by_id(*read_output(tmp_path / "pred"), ids)
    assert got.dtype == np.float32 and np.array_equal(got, expected_predict(model, matrix))
    run_bulk(COMMITTED, tmp_path / "long", tmp_path / "gen", kind="generate", steps=STEPS, batch_size=BATCH)
    got = by_id(*read_output(tmp_path / "gen"), ids)
    assert np.array_equal(got, expected_generate(model, matrix, STEPS))


def test_long_blocks_refused_without_ray():
    """long_to_wide, the work of one sorted block: two rows at one t, or lengths that differ in the
    block or from the first length seen elsewhere (LengthRegistry), are refused in one line."""
    block = pa.table({"series_id": ["a", "a", "b", "b"], "t": [2, 1, 1, 2], "value": [2.0, 1.0, 3.0, 4.0]})
    wide = long_to_wide(block)
    assert wide.column(ID_COLUMN).to_pylist() == ["a", "b"]
    assert wide.column(SERIES_COLUMN).to_pylist() == [[1.0, 2.0], [3.0, 4.0]]
    twice = pa.table({"series_id": [1, 1, 2, 2], "t": [0, 0, 0, 1], "value": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(DataError, match=r"^series_id 1 has two rows at t = 0$"):
        long_to_wide(twice)
    ragged = pa.table({"series_id": [1, 1, 2], "t": [0, 1, 0], "value": [1.0, 2.0, 3.0]})
    with pytest.raises(
        DataError, match=r"^series must all have the same length: series_id 1 has 2 points, series_id 2 has 1$"
    ):
        long_to_wide(ragged)

    class Local:  # LengthRegistry without Ray: check.remote(...) returns what ray.get needs
        def __init__(self):
            self.registry = LengthRegistry()
            self.check = self

        def remote(self, *args):
            return ray.put(self.registry.check(*args))

    registry = Local()
    long_to_wide(pa.table({"series_id": [7, 7], "t": [0, 1], "value": [1.0, 2.0]}), registry)
    with pytest.raises(
        DataError, match=r"^series must all have the same length: series_id 7 has 2 points, series_id 8 has 3$"
    ):
        long_to_wide(pa.table({"series_id": [8, 8, 8], "t": [0, 1, 2], "value": [1.0, 2.0, 3.0]}), registry)


def test_long_layout_ragged_refused_in_one_line(tmp_path):
    """Through Ray, string ids: one series one point short, in a table spread over files, refused
    as itself."""
    matrix = series_matrix(23, 400, 10)
    table = long_table([f"s{i}" for i in range(400)], matrix, seed=6)
    short = np.flatnonzero(table.column("series_id").to_numpy(zero_copy_only=False) == "s123")[0]
    write_long(tmp_path / "long", pa.concat_tables([table.slice(0, short), table.slice(short + 1)]), parts=2)
    one_line = r"^series must all have the same length: series_id .s\d+. has (10|9) points, series_id .s\d+. has \d+$"
    with pytest.raises(DataError, match=one_line):
        run_bulk(COMMITTED, tmp_path / "long", tmp_path / "out", progress=False)


def changed_after_read(monkeypatch, folder):
    """bulk.read_model as the driver runs it, then ``folder``'s manifest.json rewritten (the same
    JSON, other bytes: another digest) before any worker loads the folder."""
    read = bulk.read_model

    def read_then_change(*args, **kwargs):
        model = read(*args, **kwargs)
        manifest = folder / MANIFEST_NAME
        manifest.write_bytes(manifest.read_bytes() + b"\n")
        return model

    monkeypatch.setattr(bulk, "read_model", read_then_change)


def test_worker_refuses_a_folder_changed_after_the_pinned_read(tmp_path):
    """The actor's load, without Ray: pinned to the digest read before, a changed manifest is refused."""
    folder = tmp_path / "model"
    shutil.copytree(COMMITTED, folder)
    digest = runtime.load(folder).manifest_digest
    series = series_matrix(1, 3, 8)
    assert SeriesRunner(str(folder), "predict", None, BATCH, digest).run(series).shape == (3, 8)  # unchanged
    (folder / MANIFEST_NAME).write_bytes((folder / MANIFEST_NAME).read_bytes() + b" ")
    refused = SeriesRunner(str(folder), "predict", None, BATCH, digest)  # Ray's actor: built, refuses its batches
    with pytest.raises(IntegrityError, match="changed after it was pinned"):
        refused.run(series)


def test_run_refused_by_the_workers_when_the_folder_changes_after_the_driver_read(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    shutil.copytree(COMMITTED, folder)
    np.save(tmp_path / "in.npy", series_matrix(2, 10, 12))
    changed_after_read(monkeypatch, folder)
    one_line = r"^manifest\.json of .* has digest [0-9a-f]{12}\.\.\., the pinned digest is [0-9a-f]{12}\.\.\.: the"
    with pytest.raises(IntegrityError, match=one_line) as caught:
        run_bulk(folder, tmp_path / "in.npy", tmp_path / "out", batch_size=BATCH, actors=1, progress=False)
    assert "\n" not in str(caught.value)


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

"""Bulk runs of format 2 folders on Ray Data (toolkit.bulk_rows): named input columns, token ids,
per-row states, sampled generation with a per-row seed; every row equal to the runtime run on that
row alone, through the library and the CLI, on a local Ray this module starts and stops."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import runtime
from export.custom import export_module
from runtime.errors import DataError, InputValueError, IntegrityError
from runtime.manifest import BATCH_FIRST, MANIFEST_NAME
from toolkit.cli import cli

from ..conftest import REPO
from ..user_modules import CHAR_GRU_SIGNATURE, TWO_INPUTS_SIGNATURE, make_char_gru, make_two_inputs

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from toolkit.bulk import run_bulk  # noqa: E402
from toolkit.bulk_rows import ID_COLUMN, RowSeeds, RowsRunner  # noqa: E402

BATCH = 16  # several batches a run, a short last one
STEPS = 13  # generated steps: FUSED_MIN_STEPS or more, so the fused sampling forms run
SETTINGS = {"strategy": "top_k", "temperature": 0.8, "top_k": 4}
VOCABULARY = ["a", "b", "c", "d", "e", " ", "f", "g", "h", ".", "!"]  # the char GRU's 11 ids as text


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (loopback, 2 CPUs): run_bulk uses it and leaves it running."""
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def char(tmp_path_factory):
    """The char GRU: a token and a (3,) category in, logits out, a (2, batch, 7) state, sampled; a vocabulary."""
    folder = tmp_path_factory.mktemp("char") / "m"
    return export_module(make_char_gru(), folder, vocabulary=VOCABULARY, **CHAR_GRU_SIGNATURE)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """The two-input forecaster, batch-first: a value (fed back) and a day token, states h and c."""
    folder = tmp_path_factory.mktemp("two") / "m"
    return export_module(make_two_inputs(), folder, layout=BATCH_FIRST, **TWO_INPUTS_SIGNATURE)


def char_rows(count: int, seed: int) -> dict[str, list]:
    """Prompts of 1 to 6 steps: token ids and a category a step (a list of 3 a step)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 7, count)
    return {
        ID_COLUMN: [f"r{i:03d}" for i in range(count)],
        "token": [rng.integers(0, 11, n).tolist() for n in lengths],
        "category": [np.eye(3)[rng.integers(0, 3, n)].tolist() for n in lengths],
    }


def write_files(folder, columns: dict[str, list], parts: int = 2, row_group_size: int = 7) -> None:
    """``columns`` over ``parts`` files in name order, small row groups."""
    folder.mkdir()
    count = len(columns[ID_COLUMN])
    size = -(-count // parts)
    table = pa.table(columns)
    for part in range(parts):
        pq.write_table(table.slice(part * size, size), folder / f"part{part}.parquet", row_group_size=row_group_size)


def read_columns(out) -> dict[str, list]:
    table = pa.concat_tables([pq.read_table(path) for path in sorted(out.glob("*.parquet"))])
    return {name: table.column(name).to_pylist() for name in table.schema.names}


def char_alone(model, tokens: list[int], category: list, seed: int, settings=SETTINGS, steps=STEPS, final=False):
    """The row by itself: warmed up on its prompt but the last step, then sampled from the last;
    its tokens (and with ``final`` its final state h (2, 7))."""
    token, category = np.asarray(tokens, np.int64), np.asarray(category, np.float32)
    state = None
    if len(token) > 1:
        _, state = model.predict({"token": token[:-1, None], "category": category[:-1, None]})
    x0 = {"token": token[-1:], "category": category[-1:]}
    ys, (h,) = model.generate(x0, steps, state, sampler=runtime.Sampler(**settings, seed=seed))
    return (ys[:, 0], h[:, 0]) if final else ys[:, 0]


def test_row_seeds_draw_each_rows_own_uniforms():
    seeds = [5, 9, 5, 0]
    sampler = RowSeeds(SETTINGS | {"seed": None}, seeds)
    drawn = sampler.uniforms(6, 4)
    alone = [runtime.Sampler(**SETTINGS, seed=seed).uniforms(6, 1)[:, 0] for seed in seeds]
    assert drawn.dtype == np.float32 and np.array_equal(drawn, np.stack(alone, axis=1))
    assert np.array_equal(sampler.uniforms(2, 4)[:, 1], runtime.Sampler(**SETTINGS, seed=9).uniforms(8, 1)[6:, 0])
    with pytest.raises(InputValueError, match="holds 4 rows' seeds, asked for 3"):
        sampler.uniforms(1, 3)


def generate(folder, source, out, sampler):
    return run_bulk(
        folder, source, out, kind="generate", steps=STEPS, batch_size=BATCH, sampler=sampler, progress=False
    )


def test_token_model_sampled_generate_per_row_seed_equals_each_row_alone(tmp_path, char):
    """41 prompts of mixed lengths over 2 files of row groups of 7: tokens of a seed column, then of
    the base seed + the row's index, each row equal to its own runtime.generate."""
    model = runtime.load(char)
    columns = char_rows(41, seed=1)
    seeds = [int(s) for s in np.random.default_rng(2).integers(0, 2**40, 41)]
    write_files(tmp_path / "seeded", {**columns, "seed": seeds})
    sampler = runtime.Sampler(**SETTINGS, seed=1000)
    assert generate(char, tmp_path / "seeded", tmp_path / "a", sampler).series == 41
    got = read_columns(tmp_path / "a")
    assert got[ID_COLUMN] == columns[ID_COLUMN] and set(got) == {ID_COLUMN, "token", "text_output"}
    for i, tokens in enumerate(got["token"]):
        assert tokens == char_alone(model, columns["token"][i], columns["category"][i], seeds[i]).tolist()
        assert got["text_output"][i] == "".join(VOCABULARY[t] for t in tokens)
    write_files(tmp_path / "unseeded", columns, parts=3)
    generate(char, tmp_path / "unseeded", tmp_path / "b", sampler)
    got = read_columns(tmp_path / "b")
    for i, tokens in enumerate(got["token"]):
        assert tokens == char_alone(model, columns["token"][i], columns["category"][i], 1000 + i).tolist()
    assert len({tuple(t) for t in got["token"]}) > 30  # the rows' draws differ


def test_token_model_predict_writes_each_rows_logits(tmp_path, char):
    model = runtime.load(char)
    columns = char_rows(23, seed=3)
    write_files(tmp_path / "in", columns, parts=1)
    run_bulk(char, tmp_path / "in", tmp_path / "out", batch_size=BATCH, progress=False)
    got = read_columns(tmp_path / "out")
    assert set(got) == {ID_COLUMN, "logits"}
    for i, logits in enumerate(got["logits"]):
        xs = {
            "token": np.asarray(columns["token"][i])[:, None],
            "category": np.asarray(columns["category"][i])[:, None],
        }
        ys, _ = model.predict(xs)  # (steps, 1, 11)
        assert len(logits) == 11 * len(columns["token"][i])
        np.testing.assert_allclose(np.float32(logits), ys[:, 0].reshape(-1), rtol=0, atol=1e-6)


def two_rows(count: int, seed: int) -> dict[str, list]:
    """Series of 2 to 9 steps: a value a step (a flat list) and a day token a step; every third row
    starts from its own state h and c (flat lists), the others from the manifest's."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 10, count)
    return {
        ID_COLUMN: list(range(100, 100 + count)),
        "value": [np.sin(rng.uniform(0, 6) + 0.5 * np.arange(n)).tolist() for n in lengths],
        "day": [rng.integers(0, 7, n).tolist() for n in lengths],
        "h": [rng.normal(0, 0.5, 6).tolist() if i % 3 == 0 else None for i in range(count)],
        "c": [rng.normal(0, 0.5, 6).tolist() if i % 3 == 0 else None for i in range(count)],
    }


def two_alone(model, columns: dict[str, list], i: int, kind: str) -> np.ndarray:
    """Row i by itself (batch-first (1, steps, ...)): teacher-forced outputs, or generate's after
    the warm-up on all but the last step."""
    value = np.asarray(columns["value"][i], np.float32)[None, :, None]  # (1, steps, 1)
    day = np.asarray(columns["day"][i], np.int64)[None, :]  # (1, steps)
    given = columns["h"][i] is not None
    state = (np.float32([columns["h"][i]]), np.float32([columns["c"][i]])) if given else None
    if kind == "predict":
        ys, _ = model.predict({"value": value, "day": day}, state)
        return ys[0, :, 0]
    _, state = model.predict({"value": value[:, :-1], "day": day[:, :-1]}, state)
    ys, _ = model.generate({"value": value[:, -1], "day": day[:, -1]}, STEPS, state)
    return ys[0, :, 0]


def test_two_input_model_with_per_row_states_predict_and_generate_equal_each_row_alone(tmp_path, two):
    model = runtime.load(two)
    columns = two_rows(37, seed=4)
    write_files(tmp_path / "in", columns, parts=2, row_group_size=9)  # states null in 2 rows of 3
    pq.write_table(pa.table(columns).slice(0, 0), tmp_path / "in" / "part-empty.parquet")  # first, one empty row group
    for kind in ("predict", "generate"):
        run_bulk(two, tmp_path / "in", tmp_path / kind, kind=kind, steps=STEPS, batch_size=BATCH, progress=False)
        got = read_columns(tmp_path / kind)
        assert got[ID_COLUMN] == columns[ID_COLUMN] and set(got) == {ID_COLUMN, "next_value"}
        for i, values in enumerate(got["next_value"]):
            np.testing.assert_allclose(np.float32(values), two_alone(model, columns, i, kind), rtol=0, atol=2e-6)


def test_final_states_written_go_on_in_a_later_run(tmp_path, two):
    """states=True: predict over each row's first step writes its final h and c; a second run over
    the other steps from those state columns gives the whole row's predictions after its first."""
    model = runtime.load(two)
    columns = two_rows(20, seed=9)
    head = {**columns, "value": [v[:1] for v in columns["value"]], "day": [d[:1] for d in columns["day"]]}
    write_files(tmp_path / "head", head, parts=1)
    run_bulk(two, tmp_path / "head", tmp_path / "first", batch_size=BATCH, progress=False, states=True)
    first = read_columns(tmp_path / "first")
    assert set(first) == {ID_COLUMN, "next_value", "h", "c"} and all(len(h) == 6 for h in first["h"])
    tail = {ID_COLUMN: columns[ID_COLUMN], "value": [v[1:] for v in columns["value"]], "h": first["h"]}
    tail |= {"day": [d[1:] for d in columns["day"]], "c": first["c"]}
    write_files(tmp_path / "tail", tail, parts=1)
    run_bulk(two, tmp_path / "tail", tmp_path / "second", batch_size=BATCH, progress=False)
    for i, values in enumerate(read_columns(tmp_path / "second")["next_value"]):
        np.testing.assert_allclose(np.float32(values), two_alone(model, columns, i, "predict")[1:], rtol=0, atol=2e-6)


def test_a_sampled_generate_writes_each_rows_final_state(char):
    """Without Ray: the worker's generate with states, each row's tokens, text and final state
    (2, 7) its own generate's."""
    model = runtime.load(char)
    worker = RowsRunner(str(char), "generate", 5, BATCH, model.manifest_digest, SETTINGS | {"seed": 3}, states=True)
    columns = {ID_COLUMN: ["a", "b"], "token": [[1, 2], [3]], "category": [[[1, 0, 0]] * 2, [[0, 1, 0]]]}
    got = worker.run(pa.table(columns)).to_pydict()
    assert list(got) == [ID_COLUMN, "token", "h", "text_output"]
    for i in range(2):
        tokens, h = char_alone(model, columns["token"][i], columns["category"][i], 3 + i, steps=5, final=True)
        assert got["token"][i] == tokens.tolist() and got["text_output"][i] == "".join(VOCABULARY[t] for t in tokens)
        np.testing.assert_allclose(np.float32(got["h"][i]), h.reshape(-1), rtol=0, atol=2e-6)


def test_cli_generate_and_predict_ray_on_format_2_folders(tmp_path, char, two):
    """rnn generate --ray on the token model: the sampling options make the sampler (--seed 7 the
    base: row i draws with seed 7 + i); without one, greedy, as rnn generate without --ray; rnn
    predict --ray on the two-input model."""
    model = runtime.load(char)
    columns = char_rows(12, seed=5)
    write_files(tmp_path / "char", columns, parts=1)
    runner = CliRunner()
    args = ["--ray", "--input", str(tmp_path / "char"), "--actors", "1", "--steps", str(STEPS)]
    draw = ["--sample", "temperature", "--temperature", "0.7", "--seed", "7"]
    result = runner.invoke(cli, ["generate", str(char), *args, "--out", str(tmp_path / "g"), *draw])
    assert result.exit_code == 0, result.output
    assert "generate: 12 series" in result.output
    plain = {"strategy": "temperature", "temperature": 0.7}
    for i, tokens in enumerate(read_columns(tmp_path / "g")["token"]):
        assert tokens == char_alone(model, columns["token"][i], columns["category"][i], 7 + i, plain).tolist()
    result = runner.invoke(cli, ["generate", str(char), *args, "--out", str(tmp_path / "greedy")])
    assert result.exit_code == 0, result.output
    greedy, drawn = read_columns(tmp_path / "greedy")["token"], []
    for i, tokens in enumerate(greedy):
        row = columns["token"][i], columns["category"][i]
        assert tokens == char_alone(model, *row, 0, {"strategy": "greedy"}).tolist()
        drawn.append(char_alone(model, *row, i, {"strategy": "temperature", "temperature": 1.0}).tolist())
    assert greedy != drawn  # the earlier default (temperature 1, seed 0 + i) draws other tokens
    columns = two_rows(10, seed=6)
    write_files(tmp_path / "two", columns, parts=1)
    args = ["--ray", "--input", str(tmp_path / "two"), "--out", str(tmp_path / "p")]
    result = runner.invoke(cli, ["predict", str(two), *args])
    assert result.exit_code == 0, result.output
    for i, values in enumerate(read_columns(tmp_path / "p")["next_value"]):
        np.testing.assert_allclose(np.float32(values), two_alone(runtime.load(two), columns, i, "predict"), atol=2e-6)
    refused = runner.invoke(cli, ["predict", str(char), "--ray", "--input", str(tmp_path / "two"), "--out", "x"])
    assert (
        refused.exit_code == 2
        and refused.output.startswith("error: ")
        and "missing ['token', 'category']" in (refused.output)
    )


def test_named_columns_refused_in_one_line(tmp_path, char, two):
    """Before any worker runs (the columns, the sampler), and in a worker's batch (run here without Ray)."""
    write_files(tmp_path / "two", two_rows(5, seed=7), parts=1)
    sampler = runtime.Sampler("greedy")
    with pytest.raises(InputValueError, match="samples its next 'token' token: pass sampler="):
        run_bulk(char, tmp_path / "two", tmp_path / "o", kind="generate", steps=3)  # columns checked after
    with pytest.raises(DataError, match=r"must have the columns 'id' and one per input .* missing \['token'"):
        run_bulk(char, tmp_path / "two", tmp_path / "o", kind="generate", steps=3, sampler=sampler)
    with pytest.raises(InputValueError, match="a sampler goes only with generate of a model that samples"):
        run_bulk(two, tmp_path / "two", tmp_path / "o", sampler=sampler)
    worker = RowsRunner(str(char), "generate", 3, BATCH, runtime.load(char).manifest_digest, SETTINGS | {"seed": 0})
    good = {ID_COLUMN: ["a", "b"], "token": [[1, 2], [3]], "category": [[[1, 0, 0]] * 2, [[0, 1, 0]]]}
    x0 = {"token": np.int64([3]), "category": np.float32([[0, 1, 0]])}
    alone, _ = runtime.load(char).generate(x0, 3, sampler=runtime.Sampler(**SETTINGS, seed=1))  # row 1: seed 0 + 1
    assert worker.run(pa.table(good)).column("token").to_pylist()[1] == alone[:, 0].tolist()
    cases = [
        ({"token": [[1.0, 2.0], [3.0]]}, r"^column 'token' holds token ids: integers, got float64$"),
        ({"token": [[1, 2], [3, 4]]}, r"^id 'b': column 'category' holds 3 values, not a positive multiple of 3 "),
        ({"category": [[1, 0, 0, 0], [0, 1, 0]]}, r"^id 'a': column 'category' holds 4 values, not a positive"),
        ({"token": [[1, 2], []], "category": [[1, 0, 0] * 2, []]}, r"^id 'b': column 'token' holds 0 values"),
        ({"seed": [3, -1]}, r"^id 'b': seed must be an int >= 0, got -1$"),
        (
            {"h": [None, [0.0] * 13]},
            r"^id 'b': state 'h' needs 14 values \(2, 7\) \(or null: the initial state\), got 13$",
        ),
        ({"token": [[1, None], [3]]}, r"^column 'token' has 1 null values$"),
    ]
    for change, message in cases:
        with pytest.raises(DataError, match=message):
            worker.run(pa.table({**good, **change}))


def test_a_worker_is_pinned_to_the_digest_the_driver_read(tmp_path, two):
    """Without Ray: the worker of named columns loads the folder pinned to the driver's digest, so a
    manifest changed in between is refused by its first batch, never run."""
    folder = tmp_path / "m"
    shutil.copytree(two, folder)
    digest = runtime.load(folder).manifest_digest
    columns = pa.table({ID_COLUMN: [1], "value": [[0.5, 0.25]], "day": [[1, 2]]})
    assert RowsRunner(str(folder), "predict", None, BATCH, digest, None).run(columns).num_rows == 1
    (folder / MANIFEST_NAME).write_bytes((folder / MANIFEST_NAME).read_bytes() + b" ")
    with pytest.raises(IntegrityError, match="changed after it was pinned"):
        RowsRunner(str(folder), "predict", None, BATCH, digest, None)(pa.table({"path": ["unread"]}))


def test_the_rows_example_writes_what_the_workers_read(tmp_path, char, two):
    """examples/ray/rows.py: text prompts encoded by the vocabulary, random rows of any signature;
    the worker (without Ray) runs them as the row alone."""
    script = [sys.executable, str(REPO / "examples" / "ray" / "rows.py")]
    done = subprocess.run(
        [
            *script,
            str(char),
            str(tmp_path / "t.parquet"),
            "--text",
            "bad",
            "--text",
            "a.h!",
            "--hold",
            "category=0,1,0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.column("token").to_pylist() == [[1, 0, 3], [0, 9, 8, 10]]
    assert table.column("category").to_pylist() == [[0, 1, 0] * 3, [0, 1, 0] * 4]
    done = subprocess.run(
        [*script, str(two), str(tmp_path / "r.parquet"), "--rows", "5", "--steps", "4"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0 and "wrote 5 rows of value, day" in done.stdout, done.stderr
    columns = pq.read_table(tmp_path / "r.parquet").to_pydict()
    worker = RowsRunner(str(two), "predict", None, BATCH, runtime.load(two).manifest_digest, None)
    got = worker.run(pa.table(columns)).column("next_value").to_pylist()
    model = runtime.load(two)
    for i in range(5):
        ys, _ = model.predict(
            {"value": np.float32(columns["value"][i])[None, :, None], "day": np.int64([columns["day"][i]])}
        )
        np.testing.assert_allclose(np.float32(got[i]), ys[0, :, 0], rtol=0, atol=2e-6)
    refused = subprocess.run(
        [*script, str(char), str(tmp_path / "x.parquet"), "--text", "a"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert (
        refused.returncode == 2
        and refused.stderr == "error: --text: give input 'category' its value with --hold category=...\n"
    )

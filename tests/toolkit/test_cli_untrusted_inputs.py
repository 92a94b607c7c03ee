"""Trust what you load (issue 10), the application's share: what a folder, a data file or an option
value can make the CLI do. A user error is one line on stderr and exit 2, never a traceback; no
file's contents are echoed; output files are written whole or not at all."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import time
from pathlib import Path

import matplotlib.figure
import numpy as np
import pytest
from click.testing import CliRunner

import runtime
from rnn.config import TRAIN_DATA_NAME
from runtime.manifest import CONFIG_NAME, VERIFY_NAME
from toolkit import running
from toolkit.bench import write_json
from toolkit.cli import cli, main
from toolkit.plots import LOSS_NAME, PARITY_NAME, PREDICTION_NAME, plot_folder

from ..conftest import COMMITTED
from ..conftest import rehash_file as rehash

SECRET = "hunter2:x:0:0:zq-token"  # stands for a line of /etc/passwd
PICTURES = (PREDICTION_NAME, LOSS_NAME, PARITY_NAME)


def committed_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(COMMITTED, folder)
    return folder


def set_config(folder: Path, change) -> None:
    """Changes config.json's document with ``change`` and re-hashes it."""
    document = json.loads((folder / CONFIG_NAME).read_text())
    change(document)
    (folder / CONFIG_NAME).write_text(json.dumps(document))
    rehash(folder)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def run_main(capsys, monkeypatch, *args) -> tuple[int, str, str]:
    """The console script in this process (click's usage errors included): (code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["rnn", *map(str, args)])
    with pytest.raises(SystemExit) as ended:
        main()
    captured = capsys.readouterr()
    return ended.value.code, captured.out, captured.err


def assert_one_line_error(code: int, stderr: str, *fragments: str) -> None:
    assert code == 2, stderr
    assert stderr.startswith("error: ") and stderr.strip().count("\n") == 0, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


# ---- 8: recorded data paths stay inside the folder; errors never echo a file ----------------


@pytest.fixture()
def secret(tmp_path) -> Path:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "passwd.csv").write_text(f"{SECRET}\nroot:x:0:0:root:/root:/bin/bash\n")
    return folder / "passwd.csv"


@pytest.mark.parametrize("command", [["generate", "--steps", "3"], ["predict"], ["plot"]])
def test_an_unlisted_symlink_to_a_file_outside_is_never_read(tmp_path, secret, command):
    """config.json's train.data named an unlisted symlink to /etc/passwd, and `rnn generate`
    printed a line of that file in its error."""
    folder = committed_copy(tmp_path)
    (folder / "series.csv").symlink_to(secret)
    set_config(folder, lambda d: d["train"].update(data="series.csv"))
    result = invoke(command[0], folder, *command[1:])
    assert_one_line_error(result.exit_code, result.stderr, "outside that folder; it is not read")
    assert "hunter2" not in result.output and "zq-token" not in result.output


def test_a_data_file_given_on_the_command_line_is_read_and_never_quoted(tmp_path, secret):
    """The user may name any file; a bad one is refused with its line number, not its text."""
    result = invoke("predict", COMMITTED, "--input", secret)
    assert_one_line_error(result.exit_code, result.stderr, "line 2 is not a number")
    assert "hunter2" not in result.stderr and "root:x" not in result.stderr


def test_a_model_trained_on_a_users_series_carries_it_inside_its_folder(tmp_path):
    """train copies --data into the folder (TRAIN_DATA_NAME), so every command that reads the
    training series reads it from inside, even after the original is gone and the folder moved."""
    series = np.cos(np.arange(40) * 0.3)
    np.savetxt(tmp_path / "series.csv", series)
    folder = tmp_path / "m"
    assert invoke("train", "--out", folder, "--data", tmp_path / "series.csv", "--epochs", 3).exit_code == 0
    assert json.loads((folder / CONFIG_NAME).read_text())["train"]["data"] == TRAIN_DATA_NAME
    (tmp_path / "series.csv").unlink()
    assert invoke("export", folder).exit_code == 0
    folder = folder.rename(tmp_path / "moved")
    for command in (["verify"], ["plot"], ["predict"], ["generate", "--steps", "3"]):
        result = invoke(command[0], folder, *command[1:])
        assert result.exit_code == 0, (command, result.output)
    rows = invoke("predict", folder).stdout.splitlines()[1:]
    np.testing.assert_allclose([float(row.split(",")[1]) for row in rows], series[:-1], rtol=1e-7)
    # The copy is listed (and hashed) in the manifest, so a signature or a pin covers it too.
    listed = {f.name: f.role for f in runtime.read_manifest(folder).files}
    assert listed[TRAIN_DATA_NAME] == "train_data"
    np.save(folder / TRAIN_DATA_NAME, np.full(40, 0.123))  # the attack of the review: other inputs
    with pytest.raises(runtime.IntegrityError, match="train_data.npy"):
        runtime.load(folder)
    refused = invoke("predict", folder)
    assert refused.exit_code == 2 and "train_data.npy" in refused.stderr, refused.output


# ---- 9: every output file is written atomically --------------------------------------------


def _temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name]


def test_a_failing_draw_leaves_every_previous_picture_and_no_temporary_file(tmp_path, monkeypatch):
    folder = committed_copy(tmp_path)
    before = {name: (folder / name).read_bytes() for name in PICTURES}

    def failing_savefig(figure, path, **kwargs):
        Path(path).write_bytes(b"\x89PNG half a picture")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", failing_savefig)
    with pytest.raises(OSError, match="No space left"):
        plot_folder(folder)
    assert {name: (folder / name).read_bytes() for name in PICTURES} == before
    assert not _temporaries(folder)
    monkeypatch.undo()
    result = invoke("plot", folder)  # and through the CLI, one line
    assert result.exit_code == 0 and not _temporaries(folder)


def _failing_write_text(self, text, *args, **kwargs):
    with open(self, "w") as handle:
        handle.write(text[: len(text) // 2])
    raise OSError(errno.ENOSPC, "No space left on device")


def test_generate_csv_and_bench_json_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    csv, bench = tmp_path / "generate.csv", tmp_path / "bench.json"
    csv.write_text("old csv\n")
    bench.write_text("{}\n")

    class Report:
        def to_dict(self):
            return {"rows": list(range(1000))}

    monkeypatch.setattr(Path, "write_text", _failing_write_text)
    with pytest.raises(OSError, match="No space left"):
        running.write_generate_csv(csv, np.arange(1000.0).reshape(-1, 1, 1))
    with pytest.raises(OSError, match="No space left"):
        write_json(Report(), bench)
    assert csv.read_text() == "old csv\n" and bench.read_text() == "{}\n"
    assert not _temporaries(tmp_path)
    monkeypatch.undo()
    running.write_generate_csv(csv, np.arange(3.0).reshape(-1, 1, 1))
    write_json(Report(), bench)
    assert csv.read_text() == "step,y\n1,0\n2,1\n3,2\n" and len(json.loads(bench.read_text())["rows"]) == 1000


# ---- 10: no traceback, whatever the folder or the options hold ----------------------------


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe{}", b"[1, 2]", b"not json", b'{"passed": "yes"}', b"[" * 100_000, b'{"passed": ' + b"1" * 5000 + b"}"],
    ids=["not-utf8", "a-list", "not-json", "passed-not-bool", "deep", "huge-int"],
)
def test_an_unreadable_verify_json_is_reported_by_info_and_refused_by_plot(tmp_path, content):
    """info: "verified unknown (...)", exit 0 (the rest of the description stands); plot: exit 2."""
    folder = committed_copy(tmp_path)
    (folder / VERIFY_NAME).write_bytes(content)
    result = invoke("info", folder)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("verified")]
    assert len(lines) == 1 and lines[0].startswith(f"verified   unknown ({VERIFY_NAME}"), lines
    document = json.loads(invoke("info", folder, "--json").stdout)
    assert document["verified"] is None and document["verify_error"].startswith(VERIFY_NAME)
    before = (folder / PARITY_NAME).read_bytes()
    result = invoke("plot", folder)
    assert_one_line_error(result.exit_code, result.stderr, VERIFY_NAME)
    assert (folder / PARITY_NAME).read_bytes() == before


def test_a_verify_json_with_comparisons_of_the_wrong_shape_is_refused_by_plot(tmp_path):
    folder = committed_copy(tmp_path)
    report = json.loads((folder / VERIFY_NAME).read_text())
    for comparisons in ([1, 2], [{"check": 1, "output": "y", "form": "onnx", "max_abs": 0.1, "tolerance": 1}], "x"):
        (folder / VERIFY_NAME).write_text(json.dumps({**report, "comparisons": comparisons}))
        result = invoke("plot", folder)
        assert_one_line_error(result.exit_code, result.stderr, VERIFY_NAME)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["train"].update(seq_length=-5), "train.seq_length must be between 1 and"),
        (lambda d: d["train"].update(seq_length="abc"), "train.seq_length must be an integer"),
        (lambda d: d["train"].update(seq_length=3e9), "train.seq_length must be an integer"),
        (lambda d: d["train"].update(seq_length=3 * 10**9), "train.seq_length must be between 1 and"),
        (lambda d: d.update(train=[1, 2]), "train must be an object, got list"),
        (lambda d: d["model"].update(hidden_size=10**9), "must be at most"),
    ],
)
def test_a_hostile_config_json_is_one_line_for_every_running_command(tmp_path, change, message):
    folder = committed_copy(tmp_path)
    set_config(folder, change)
    for command in (["generate", "--steps", "3"], ["predict"]):
        result = invoke(command[0], folder, *command[1:])
        assert_one_line_error(result.exit_code, result.stderr, message)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"model": ' + b"1" * 5000 + b"}", "is not valid JSON"),
        (b'{"model": "\xff"}', "is not UTF-8"),
    ],
    ids=["deep", "huge-int", "not-utf8"],
)
def test_an_unparseable_config_json_is_one_line(tmp_path, content, message):
    folder = committed_copy(tmp_path)
    (folder / CONFIG_NAME).write_bytes(content)
    rehash(folder)
    result = invoke("generate", folder)
    assert_one_line_error(result.exit_code, result.stderr, message)


def _huge_npy(path: Path) -> Path:
    """An .npy file of a few bytes whose header claims 10**11 float64 values (800 GB)."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f8", "fortran_order": False, "shape": (10**11,)})
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["generate", COMMITTED, "--warmup", "{huge}"],
        ["predict", COMMITTED, "--input", "{huge}"],
        ["train", "--out", "{tmp}/m", "--data", "{huge}", "--epochs", "1"],
    ],
    ids=["warmup", "input", "data"],
)
def test_an_npy_header_claiming_10_to_the_11_values_is_refused_before_reading(tmp_path, args):
    huge = _huge_npy(tmp_path / "huge.npy")
    started = time.perf_counter()
    result = invoke(*[str(a).format(huge=huge, tmp=tmp_path) for a in args])
    assert_one_line_error(result.exit_code, result.stderr, f"claims {10**11} points")
    assert time.perf_counter() - started < 20


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--out", "x", "--seed", str(2**64)], "--seed"),
        (["train", "--out", "x", "--seed", "-1"], "--seed"),
        (["train", "--out", "x", "--hidden-size", "100000"], "--hidden-size"),
        (["train", "--out", "x", "--seq-length", str(10**10)], "--seq-length"),
        (["demo", "--out", "x", "--hidden-size", "100000"], "--hidden-size"),
    ],
)
def test_option_values_beyond_their_bounds_are_one_line(tmp_path, capsys, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run_main(capsys, monkeypatch, *args)
    assert_one_line_error(code, stderr, fragment)
    assert not (tmp_path / "x").exists()


def test_the_hidden_size_bound_gives_its_reason_in_the_help():
    assert "the weights grow with its square" in " ".join(invoke("train", "--help").output.split())


def test_generate_json_refuses_more_steps_than_one_document_holds_at_once():
    """--steps 100000000 --json hit MemoryError at 7.2 GB; now it is refused before running."""
    started = time.perf_counter()
    result = invoke("generate", COMMITTED, "--steps", 100_000_000, "--json")
    assert_one_line_error(result.exit_code, result.stderr, "--json holds at most", "leave out --json for CSV")
    assert result.stdout == "" and time.perf_counter() - started < 10


def test_generate_csv_streams_in_chunks_without_one_whole_array(monkeypatch):
    model = runtime.load(COMMITTED)  # the default start: the training series teacher-forced, then its last point
    _, warm = model.predict(np.sin(np.linspace(2, 10, 21))[:-1].reshape(-1, 1, 1).astype(np.float32))
    expected, _ = model.generate(np.float32(np.sin(10.0)), 50, warm)

    def whole(*args, **kwargs):
        raise AssertionError("the CSV path must stream with generate_iter, not build every step at once")

    monkeypatch.setattr(runtime.Model, "generate", whole)
    monkeypatch.setattr(running, "CSV_CHUNK", 7)
    monkeypatch.setattr(running, "CSV_LINES_PER_WRITE", 3)
    result = invoke("generate", COMMITTED, "--steps", 50)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "step,y" and [int(line.split(",")[0]) for line in lines[1:]] == list(range(1, 51))
    values = np.array([float(line.split(",")[1]) for line in lines[1:]])
    # chunks of 7 run another form than one call of 50 (the runtime picks by length): float32 apart
    np.testing.assert_allclose(values, expected.reshape(-1), rtol=0, atol=1e-5)


# ---- 11: diverging training, and files that are not files ----------------------------------


def test_a_learning_rate_that_diverges_is_one_line_naming_lr(tmp_path):
    """--lr 1e308 trained to NaN weights and exited 0."""
    result = invoke("train", "--out", tmp_path / "m", "--lr", "1e308", "--epochs", 3)
    assert_one_line_error(result.exit_code, result.stderr, "training diverged", "--lr")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["predict", COMMITTED, "--input", "{fifo}"],
        ["generate", COMMITTED, "--warmup", "{fifo}"],
        ["train", "--out", "{tmp}/m", "--data", "{fifo}"],
    ],
    ids=["predict", "generate", "train"],
)
def test_a_named_pipe_as_data_is_not_a_regular_file(tmp_path, args):
    """It said "no longer there" (or would block reading a pipe nobody writes)."""
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    result = invoke(*[str(a).format(fifo=fifo, tmp=tmp_path) for a in args])
    assert_one_line_error(result.exit_code, result.stderr, "is not a regular file")

"""The CLI on format 2 folders: export-module --signature, info, verify --data .npz, predict
--input .npz and generate --start / --warmup, with sampled tokens seeded and reproducible."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import runtime
from toolkit.cli import cli

from ..user_modules import MAKE_CHAR_GRU, MAKE_TWO_INPUTS

CHAR_SIGNATURE = {
    "inputs": [{"name": "token", "vocabulary": 11}, ["category", 3]],
    "outputs": [{"name": "logits", "vocabulary": 11}],
    "states": [{"name": "h", "shape": [2, "batch", 7]}],
}
TWO_SIGNATURE = {
    "inputs": [["value", 1], {"name": "day", "vocabulary": 7}],
    "outputs": [["next_value", 1]],
    "states": [["h", 6], ["c", 6, 0.1]],
    "feedback": {"output": "next_value", "input": "value"},
    "layout": "batch_first",
}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _export(tmp_path, factory, signature, name):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(signature))
    result = invoke("export-module", factory, "--out", tmp_path / name, "--signature", path)
    assert result.exit_code == 0, result.output
    return tmp_path / name


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli_general")
    return {
        "char": _export(base, MAKE_CHAR_GRU, CHAR_SIGNATURE, "char"),
        "two": _export(base, MAKE_TWO_INPUTS, TWO_SIGNATURE, "two"),
    }


def test_info_lists_every_tensor_layout_and_feedback(folders):
    result = invoke("info", folders["char"])
    assert result.exit_code == 0, result.output
    assert "inputs     token (batch) int64 tokens < 11, category (batch, 3) float32" in result.output
    assert "state      h -> h_out (2, batch, 7) float32" in result.output
    assert "feedback logits -> token (sample)" in result.output and "format version 2" in result.output


def test_verify_with_named_npz_data(folders, tmp_path):
    data = tmp_path / "data.npz"
    np.savez(data, value=np.linspace(-1, 1, 24).reshape(2, 12, 1), day=np.arange(24).reshape(2, 12) % 7)
    result = invoke("verify", folders["two"], "--factory", MAKE_TWO_INPUTS, "--trust", "--data", data)
    assert result.exit_code == 0, result.output
    assert "user data b=2 T=12" in result.output and "verification passed" in result.output


def test_generate_identity_feedback_matches_the_runtime(folders, tmp_path):
    result = invoke("generate", folders["two"], "--steps", 7, "--start", "value=0.25", "--start", "day=3")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "step,next_value" and len(lines) == 8
    model = runtime.load(folders["two"])
    expected, _ = model.generate({"value": np.array([[0.25]]), "day": np.array([3])}, 7)  # (batch, steps, 1)
    got = np.array([float(line.split(",")[1]) for line in lines[1:]])
    np.testing.assert_allclose(got, expected[0, :, 0], atol=1e-6, rtol=0)


def test_predict_over_an_npz_of_named_sequences(folders, tmp_path):
    data = tmp_path / "seq.npz"
    np.savez(data, value=np.linspace(-1, 1, 10).reshape(10, 1), day=np.arange(10) % 7)  # one stream
    result = invoke("predict", folders["two"], "--input", data)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "step,stream,next_value" and len(lines) == 11


@pytest.mark.parametrize(
    "args, message",
    [
        (["--start", "value=0.5"], "missing: ['day']"),
        (["--start", "value=0.5", "--start", "day=9"], "token id from 0 to 6"),
        (["--start", "value=a", "--start", "day=1"], "must be numbers"),
        (["--start", "speed=1"], "NAME one of ['value', 'day']"),
        (["--x0", "1"], "give --start NAME=VALUES instead of --x0"),
        (["--start", "value=0.5", "--start", "day=1", "--sample", "greedy"], "for models that sample"),
    ],
)
def test_generate_mistakes_are_one_line_exit_2(folders, args, message):
    result = invoke("generate", folders["two"], "--steps", 3, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_export_module_signature_mistakes_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**CHAR_SIGNATURE, "inputs": [{"name": "token", "vocabulary": -1}]}))
    result = invoke("export-module", MAKE_CHAR_GRU, "--out", tmp_path / "x", "--signature", bad)
    assert result.exit_code == 2 and "vocabulary must be a positive integer" in result.output
    result = invoke("export-module", MAKE_CHAR_GRU, "--out", tmp_path / "x", "--signature", bad, "--state", "h:3")
    assert result.exit_code == 2 and "leave out --state" in result.output


def test_plot_skips_the_prediction_picture_of_a_format_2_folder(folders):
    """(rnn bench times such a folder: tests/toolkit/test_bench_any.py.)"""
    result = invoke("plot", folders["two"], "--factory", MAKE_TWO_INPUTS)
    assert result.exit_code == 0, result.output
    assert "no prediction.png" in result.output and not (folders["two"] / "prediction.png").exists()


def _npz_files(tmp_path):
    ok = tmp_path / "ok.npz"
    np.savez(ok, value=np.zeros((4, 1)), day=np.arange(4))
    files = {"truncated": ok.read_bytes()[:200], "empty": b""}
    for name, data in files.items():
        (tmp_path / f"{name}.npz").write_bytes(data)
    np.savez(tmp_path / "objects.npz", value=np.array([1, "a", None], dtype=object), day=np.arange(3))
    np.savez(tmp_path / "no_steps.npz", value=np.zeros((0, 1)), day=np.zeros(0, np.int64))
    np.savez(tmp_path / "scalar.npz", value=np.zeros(1), day=np.array(3))
    return {
        "truncated": "not a readable .npz file",
        "empty": "not a readable .npz file",
        "objects": "Python objects are never unpickled",
        "no_steps": "at least one step",
        "scalar": "at least one step",
    }


@pytest.mark.parametrize("command", ["predict", "generate", "verify"])
def test_unreadable_npz_files_are_one_line_exit_2(folders, tmp_path, command):
    for name, message in _npz_files(tmp_path).items():
        path = tmp_path / f"{name}.npz"
        args = {
            "predict": ["predict", folders["two"], "--input", path],
            "generate": ["generate", folders["two"], "--warmup", path, "--steps", 2],
            "verify": ["verify", folders["two"], "--factory", MAKE_TWO_INPUTS, "--data", path],
        }[command]
        result = invoke(*args)
        assert result.exit_code == 2, (name, result.output)
        if command != "verify" or name not in ("no_steps", "scalar"):
            assert message in result.output, (name, result.output)
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--start", "token=99999999999999999999", "--start", "category=0,0,0"], "token id from 0 to 10"),
        (["--start", "token=1", "--start", "category=0,0,0", "--temperature", "1e-45"], "use strategy 'greedy'"),
        (["--start", "token=1", "--start", "category=0,0,0", "--sample", "temperature", "--top-k", "3"], "top_k"),
    ],
)
def test_sampling_mistakes_are_one_line_exit_2(folders, args, message):
    result = invoke("generate", folders["char"], "--steps", 3, *args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_sampling_options_on_a_model_that_does_not_sample_are_refused(folders):
    for option in (["--temperature", "0.5"], ["--seed", "3"]):
        result = invoke("generate", folders["two"], "--steps", 2, "--start", "value=0", "--start", "day=1", *option)
        assert result.exit_code == 2 and "for models that sample" in result.output, result.output


def test_generate_samples_reproducibly_by_seed(folders):
    args = ["generate", folders["char"], "--steps", 30, "--start", "token=4", "--start", "category=1,0,0"]
    first, again, other = (invoke(*args, "--seed", seed).output for seed in (5, 5, 6))
    assert first == again and first != other and first.splitlines()[0] == "step,token"
    tokens = [int(line.split(",")[1]) for line in first.splitlines()[1:]]
    model = runtime.load(folders["char"])
    x0 = {"token": np.array([4]), "category": np.array([[1.0, 0.0, 0.0]], np.float32)}
    want, _ = model.generate(x0, 30, sampler=runtime.Sampler("temperature", seed=5))
    assert tokens == want[:, 0].tolist()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"inputs": 5}, "inputs must be a list"),
        ({"states": None}, "states must be a list"),
        ({"inputs": [{"name": "category", "shape": [100000, 100000]}]}, "more than the 16777216"),
        ({"states": [["h", 7, 1e300]]}, "finite float32"),
    ],
)
def test_export_module_signature_values_that_cannot_work_exit_2(tmp_path, change, message):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**CHAR_SIGNATURE, **change}))
    result = invoke("export-module", MAKE_CHAR_GRU, "--out", tmp_path / "x", "--signature", bad)
    assert result.exit_code == 2 and message in result.output, result.output


def test_an_npz_whose_header_claims_a_huge_array_is_refused_before_allocating(folders, tmp_path):
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("value.npy", header.getvalue() + bytes(16))
        archive.writestr("day.npy", header.getvalue() + bytes(16))
    result = invoke("predict", folders["two"], "--input", path)
    assert result.exit_code == 2 and "is truncated: its header says (1000000, 1000000)" in result.output


def test_info_json_carries_the_digest_a_script_pins_every_running_command_with(folders, tmp_path):
    from runtime.manifest import manifest_digest

    document = json.loads(invoke("info", folders["two"], "--json").output)
    digest = document["manifest_sha256"]
    assert digest == manifest_digest(folders["two"]) and f"digest     {digest}" in invoke("info", folders["two"]).output
    data = tmp_path / "seq.npz"
    np.savez(data, value=np.zeros((3, 1)), day=np.arange(3))
    start = ["--start", "value=0.5", "--start", "day=2"]
    for command in (["generate", *start, "--steps", 2], ["predict", "--input", data], ["info"]):
        pinned = invoke(command[0], folders["two"], *command[1:], "--digest", digest)
        assert pinned.exit_code == 0, pinned.output
        refused = invoke(command[0], folders["two"], *command[1:], "--digest", "0" * 64)
        assert refused.exit_code == 2 and "pinned digest" in refused.output, refused.output


def test_generate_json_of_any_model_is_one_document_of_one_streams_outputs(folders):
    result = invoke("generate", folders["two"], "--steps", 5, "--start", "value=0.25", "--start", "day=3", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    model = runtime.load(folders["two"])
    expected, _ = model.generate({"value": np.array([[0.25]]), "day": np.array([3])}, 5)  # (batch, steps, 1)
    np.testing.assert_allclose(document["next_value"], expected[0, :, 0], atol=1e-6, rtol=0)
    assert document["x0"] == {"value": [0.25], "day": 3} and document["steps"] == 5 and document["sampler"] is None
    sampled = json.loads(
        invoke(
            "generate", folders["char"], "--steps", 6, "--start", "token=4", "--start", "category=1,0,0", "--json"
        ).output
    )
    csv = invoke("generate", folders["char"], "--steps", 6, "--start", "token=4", "--start", "category=1,0,0").output
    assert sampled["tokens"] == [int(line.split(",")[1]) for line in csv.splitlines()[1:]]


def test_a_warmup_npz_is_fed_teacher_forced_and_generation_goes_on_from_its_last_step(folders, tmp_path):
    values, days = np.linspace(-0.5, 0.5, 6).reshape(6, 1), np.arange(6) % 7
    np.savez(tmp_path / "warm.npz", value=values, day=days)
    result = invoke("generate", folders["two"], "--steps", 4, "--warmup", tmp_path / "warm.npz", "--json")
    assert result.exit_code == 0, result.output
    model = runtime.load(folders["two"])  # batch-first
    _, state = model.predict({"value": values[None, :-1], "day": days[None, :-1]})
    expected, _ = model.generate({"value": values[-1:], "day": days[-1:]}, 4, state)
    np.testing.assert_allclose(json.loads(result.output)["next_value"], expected[0, :, 0], atol=1e-6, rtol=0)


def test_the_seed_signature_is_one_case_of_the_general_path():
    """--start and an .npz of named sequences work for the seed's model too; its series and --x0
    are the same inputs by another name."""
    from ..conftest import COMMITTED

    by_x0 = invoke("generate", COMMITTED, "--steps", 5, "--x0", 0.5).output
    assert by_x0 == invoke("generate", COMMITTED, "--steps", 5, "--start", "x=0.5").output
    assert by_x0 == invoke("generate", COMMITTED, "--steps", 5, "--start", "0.5").output
    assert by_x0.splitlines()[0] == "step,y"


def test_predict_an_npz_on_the_seed_model_gives_the_series_predictions(tmp_path):
    from ..conftest import COMMITTED

    series = np.sin(np.linspace(2, 10, 21))
    np.savez(tmp_path / "x.npz", x=series[:-1].reshape(20, 1))
    rows = invoke("predict", COMMITTED, "--input", tmp_path / "x.npz").output.splitlines()
    assert rows[0] == "step,stream,y" and len(rows) == 21
    np.save(tmp_path / "x.npy", series)
    table = invoke("predict", COMMITTED, "--input", tmp_path / "x.npy").output.splitlines()
    assert [row.split(",")[2] for row in rows[1:]] == [row.split(",")[3] for row in table[1:-1]]


@pytest.mark.parametrize("command", ["predict", "generate"])
def test_a_series_file_for_a_model_of_several_inputs_is_one_line_asking_for_an_npz(folders, tmp_path, command):
    np.savetxt(tmp_path / "s.csv", np.arange(5.0))
    option = "--input" if command == "predict" else "--warmup"
    result = invoke(command, folders["two"], option, tmp_path / "s.csv")
    assert result.exit_code == 2 and "FILE.npz" in result.output, result.output
    if command == "predict":
        result = invoke("predict", folders["two"])
        assert result.exit_code == 2 and "give --input FILE.npz" in result.output, result.output


def test_the_csv_chunk_shrinks_for_wide_outputs_only():
    from types import SimpleNamespace

    from toolkit import running

    def model(*counts):
        return SimpleNamespace(outputs=tuple(SimpleNamespace(count=c) for c in counts))

    assert running.csv_chunk(model(1)) == running.CSV_CHUNK
    assert running.csv_chunk(model(100, 900)) == running.CSV_CHUNK_VALUES // 1000
    assert running.csv_chunk(model(10**8)) == 1

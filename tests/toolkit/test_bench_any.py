"""`rnn bench` on folders of every signature (toolkit.bench_any): a character GRU (token input, sampled
feedback, a vocabulary), the two-input forecaster batch-first, the README's two-LSTMCell forecaster
(identity feedback), with --factory and without; tiny modules with fixed seeds, a few steps, one round."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from export import export_module
from export.verify_cases import GENERATE, PREDICT
from runtime.manifest import BATCH_FIRST, manifest_digest
from toolkit.bench import UNTIMED_TORCHSCRIPT
from toolkit.bench_any import NO_EAGER, NO_GENERATE, STEP_LOOP, Call, Runner, eager_module, run_bench_any
from toolkit.cli import cli

from ..conftest import REPO
from ..user_modules import (
    CHAR_GRU_SIGNATURE,
    FOUR_STATES,
    MAKE_CHAR_GRU,
    MAKE_TWO_INPUTS,
    TWO_INPUTS_SIGNATURE,
    make_char_gru,
    make_four_state,
    make_two_inputs,
)

MAKE_FORECASTER = "tests.toolkit.test_bench_any:make_forecaster"
FORECASTER_STATES = [(name, 4) for name in ("h1", "c1", "h2", "c2")]
SAMPLED_KINDS = ("generate greedy", "generate t=0.8")


def make_forecaster() -> torch.nn.Module:
    """The README's forecaster (examples/forecaster: two LSTMCells and a linear head), hidden 4, seed 3."""
    spec = importlib.util.spec_from_file_location(
        "bench_forecaster", REPO / "examples" / "forecaster" / "forecaster.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    torch.manual_seed(3)
    return example.Forecaster(hidden=4)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bench-any")
    vocabulary = [chr(ord("a") + i) for i in range(11)]
    return {
        "char": export_module(
            make_char_gru(), root / "char", factory=MAKE_CHAR_GRU, vocabulary=vocabulary, **CHAR_GRU_SIGNATURE
        ),
        "two": export_module(make_two_inputs(), root / "two", layout=BATCH_FIRST, **TWO_INPUTS_SIGNATURE),
        "forecaster": export_module(
            make_forecaster(), root / "forecaster", input_size=1, output_size=1, states=FORECASTER_STATES
        ),
    }


def bench(folder, out, *extra: str):
    """`rnn bench FOLDER --json` at batches 1 and 3, 4 steps, one round, trusted by its digest."""
    arguments = ["bench", str(folder), "--batch", "1", "--batch", "3", "--steps", "4", "--rounds", "1"]
    arguments += ["--out", str(out), "--json", "--no-cold-start", "--no-streams", *extra]
    result = CliRunner().invoke(cli, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert json.loads((out / "bench.json").read_text()) == document
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"
    return document, result.stderr.splitlines()


def rows_of(document) -> set[tuple[str, int, str]]:
    return {(r["kind"], r["batch"], r["implementation"]) for r in document["rows"]}


@pytest.mark.parametrize(
    ("name", "factory", "kinds", "forms"),
    [
        (
            "char",
            MAKE_CHAR_GRU,
            SAMPLED_KINDS,
            {"generate greedy": "rollout_greedy", "generate t=0.8": "rollout_sample"},
        ),
        ("two", MAKE_TWO_INPUTS, ("generate",), {"generate": "rollout_loop"}),
        ("forecaster", MAKE_FORECASTER, ("generate",), {"generate": "rollout_loop"}),
    ],
)
def test_bench_times_every_signature_against_eager_pytorch(tmp_path, folders, name, factory, kinds, forms):
    folder = folders[name]
    document, said = bench(folder, tmp_path / "b", "--factory", factory, "--digest", manifest_digest(folder))
    # the forecaster has the seed's signature: with its module it gets the classic bench's tables
    assert document.get("baseline", "eager") == "eager" and not document.get("notes")
    names = rows_of(document)
    for kind in (*kinds, "predict"):
        fused = forms.get(kind, "sequence_loop")
        for batch in (1, 3):
            for implementation in ("eager", "torchscript", STEP_LOOP, fused, "auto"):
                assert (kind, batch, implementation) in names, (kind, batch, implementation)
    assert all(r["us_per_step"] > 0 and r["ratio_vs_eager"] > 0 for r in document["rows"])
    assert all(r["ratio_vs_eager"] == 1.0 for r in document["rows"] if r["implementation"] == "eager")
    one_call = {r["implementation"]: r for r in document["one_call"]}
    assert {"eager step (torch.no_grad)", "model.step", "Stream.push", "model.generate(x0, 1)"} <= set(one_call)
    assert one_call["eager step (torch.no_grad)"]["ratio_vs_eager_step"] == 1.0
    assert (f"timing checking {kinds[0]} batch 1 steps 4 against eager" in said) == (name != "forecaster")


def test_the_table_has_a_row_per_call_and_a_ratio_column(tmp_path, folders):
    arguments = ["bench", str(folders["char"]), "--steps", "3", "--batch", "2", "--rounds", "1", "--no-one-call"]
    result = CliRunner().invoke(
        cli, [*arguments, "--factory", MAKE_CHAR_GRU, "--trust", "--out", str(tmp_path)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("kind"))
    assert header.split()[-2:] == ["vs", "eager"]
    for kind in (*SAMPLED_KINDS, "predict"):
        row = next(line for line in lines if line.startswith(kind) and " eager " in line)
        assert row.split()[-1] == "1.0x" and row.split()[-6:-4] == ["2", "3"]
    assert sum(" rollout_sample " in line for line in lines) == 1


def test_without_its_factory_a_users_module_is_timed_against_the_step_loop(tmp_path, folders):
    document, said = bench(folders["two"], tmp_path / "b", "--trust", "--no-one-call")
    assert document["baseline"] == STEP_LOOP and document["notes"] == [NO_EAGER]
    names = {r["implementation"] for r in document["rows"]}
    assert "eager" not in names and {"torchscript", STEP_LOOP, "rollout_loop", "sequence_loop", "auto"} <= names
    assert all(r["ratio_vs_onnx_step_loop"] == 1.0 for r in document["rows"] if r["implementation"] == STEP_LOOP)
    assert f"timing {NO_EAGER}" in said
    result = CliRunner().invoke(
        cli, ["bench", str(folders["two"]), "--steps", "2", "--batch", "1", "--rounds", "1", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1] == NO_EAGER  # the one line before the table, after the machine
    assert "vs model.step" in result.stdout and "eager step" not in result.stdout


def test_an_untrusted_folder_is_timed_without_its_torchscript(tmp_path, folders):
    document, said = bench(folders["forecaster"], tmp_path / "b", "--factory", MAKE_FORECASTER, "--no-one-call")
    names = {r["implementation"] for r in document["rows"]}
    assert "torchscript" not in names and {"eager", STEP_LOOP, "auto"} <= names
    assert said[0] == f"timing {UNTIMED_TORCHSCRIPT}", said


@pytest.mark.parametrize(
    ("name", "factory", "call"),
    [
        ("char", make_char_gru, Call("generate t=0.8", GENERATE, {"strategy": "temperature", "temperature": 0.8})),
        ("char", make_char_gru, Call("generate greedy", GENERATE, {"strategy": "greedy"})),
        ("two", make_two_inputs, Call("generate", GENERATE)),
        ("two", make_two_inputs, Call("predict", PREDICT)),
        ("forecaster", make_forecaster, Call("generate", GENERATE)),
    ],
)
def test_the_runtimes_outputs_in_the_run_are_the_eager_modules(folders, name, factory, call):
    import runtime

    model = runtime.load(folders[name])
    eager = eager_module(folders[name], factory)
    runner = Runner(model, {"eager": eager}, call, 3, 6)
    results = {implementation: function() for implementation, function in runner.functions.items()}
    assert {"eager", STEP_LOOP, "auto"} <= set(results) and len(results) == 4  # and the call's fused form
    for implementation, outputs in results.items():
        assert set(outputs) == set(results["eager"])
        for key, value in results["eager"].items():
            if key == "tokens":
                assert value.shape == (6, 3) and value.min() >= 0 and value.max() < 11
                np.testing.assert_array_equal(outputs[key], value, err_msg=implementation)
            else:
                np.testing.assert_allclose(outputs[key], value, atol=1e-4, rtol=0, err_msg=f"{implementation} {key}")
    assert runner.check("eager") == []


def test_a_disagreeing_implementation_fails_before_any_timing(folders):
    import runtime

    model = runtime.load(folders["forecaster"])
    eager = eager_module(folders["forecaster"], make_forecaster)

    def off(*arguments):
        y, *state = eager(*arguments)
        return (y + 1e-2, *state)

    runner = Runner(model, {"eager": off}, Call("predict", PREDICT), 2, 5)
    problems = runner.check("eager")
    assert problems and all("max abs error" in p for p in problems)
    assert {p.split(":")[0] for p in problems} == {STEP_LOOP, "sequence_loop", "auto"}


def test_a_model_with_no_closed_loop_is_timed_on_predict_and_says_so(tmp_path):
    folder = export_module(make_four_state(), tmp_path / "four", input_size=2, output_size=3, states=FOUR_STATES)
    report = run_bench_any(folder, batches=(2,), steps=(3,), rounds=1, factory=make_four_state)
    assert report.notes == [NO_GENERATE] and report.baseline == "eager"
    assert {r.kind for r in report.rows} == {"predict"}
    assert {r.implementation for r in report.rows} == {"eager", STEP_LOOP, "sequence_loop", "auto"}
    assert "model.generate(x0, 1)" not in {r.implementation for r in report.one_call}
    assert report.table().splitlines()[1] == NO_GENERATE

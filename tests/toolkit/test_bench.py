"""toolkit.bench: the shared timing loop, the one-call table, every implementation, the report and its plot."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner

from export.verify import ROLLOUT_ATOL
from rnn.checkpoint import load_checkpoint
from rnn.eager import generate_eager
from runtime.manifest import manifest_digest
from toolkit.bench import (
    EAGER_STEP,
    IMPLEMENTATIONS,
    ONE_CALL,
    BenchReport,
    BenchRow,
    OneCallRow,
    _slots,
    best_times,
    plot_bench,
    run_bench,
    write_json,
)
from toolkit.cli import cli

from ..conftest import COMMITTED


def test_bench_command_measures_every_implementation(tmp_path, exported_folder):
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            str(exported_folder),
            "--batch",
            "3",
            "--steps",
            "12",
            "--rounds",
            "1",
            "--streams",
            "5",
            "--out",
            str(out),
            "--json",
            "--digest",  # a pinned folder is trusted: TorchScript is timed too
            manifest_digest(exported_folder),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    names = {(r["kind"], r["implementation"]) for r in document["rows"]}
    for kind, forms in (("generate", ("rollout_rnn", "rollout_loop")), ("predict", ("sequence_rnn", "sequence_loop"))):
        for name in ("eager", "torchscript", "onnx step loop", "auto", "numpy loop", *forms):
            assert (kind, name) in names
    assert all(r["us_per_step"] > 0 and r["ratio_vs_eager"] > 0 for r in document["rows"])
    assert document["cold_start"]["torch_imported"] is False
    assert {r["implementation"] for r in document["streams"]} == {
        "session.run per stream",
        "pool.step(ids, xs), batched",
        "pool.push from 8 threads",
    }
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "bench.json").read_text()) == document


def test_numpy_baseline_computes_the_same_loop(exported_folder):
    from toolkit.bench import numpy_step_loop

    eager = load_checkpoint(exported_folder).model
    loop = numpy_step_loop(eager.w1.detach().numpy(), eager.w2.detach().numpy(), 1)
    x0, h0 = np.full((2, 1), 0.3, np.float32), np.zeros((2, 6), np.float32)
    expected, _ = generate_eager(eager, torch.from_numpy(x0), 30, (torch.from_numpy(h0),))
    np.testing.assert_allclose(loop(x0, h0, 30, False), expected.numpy(), atol=ROLLOUT_ATOL, rtol=0)


def test_best_times_warms_up_then_interleaves_rounds():
    calls: list[str] = []
    best = best_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, calls=2)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 3
    assert set(best) == {"a", "b"} and all(0 < seconds < 1 for seconds in best.values())


def test_run_bench_has_every_table_and_leaves_torch_threads_alone(tmp_path):
    threads = torch.get_num_threads()
    report = run_bench(
        COMMITTED,
        batches=(1,),
        steps=(3,),
        kinds=("generate",),
        rounds=1,
        cold_start=False,
        stream_counts=(2,),
        one_call=True,
        trust=True,  # the committed folder: ours
    )
    assert torch.get_num_threads() == threads
    assert [r.implementation for r in report.one_call] == list(ONE_CALL)
    assert report.one_call_ratio(next(r for r in report.one_call if r.implementation == EAGER_STEP)) == 1.0
    assert all(r.us_per_call > 0 for r in report.one_call)
    assert "one call, batch 1, one step" in report.table() and "model.step" in report.table()
    document = report.to_dict()
    assert {r["implementation"] for r in document["one_call"]} == set(ONE_CALL)
    assert all(r["ratio_vs_eager_step"] > 0 for r in document["one_call"])
    assert {r["implementation"] for r in document["rows"]} >= {"eager", "torchscript", "onnx step loop", "auto"}
    assert plot_bench(report, tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    write_json(report, tmp_path / "bench.json")
    assert json.loads((tmp_path / "bench.json").read_text())["one_call"] == document["one_call"]
    without = run_bench(
        COMMITTED,
        batches=(1,),
        steps=(2,),
        kinds=("predict",),
        rounds=1,
        cold_start=False,
        stream_counts=(),
        one_call=False,
    )
    assert without.one_call == [] and without.streams == [] and "one call" not in without.table()


def test_the_plot_keeps_one_slot_order_and_leaves_missing_bars_empty(tmp_path):
    assert _slots(["auto", "mine", "rollout_rnn", "torchscript"]) == ["torchscript", "rollout_rnn", "auto", "mine"]
    assert list(IMPLEMENTATIONS).index("onnx step loop") < list(IMPLEMENTATIONS).index("auto")
    report = BenchReport("folder", "machine")
    for steps, names in ((20, ("eager", "auto", "numpy loop", "torchscript")), (1000, ("eager", "torchscript"))):
        report.rows += [BenchRow("generate", 1, steps, name, float(np.float32(1e-3))) for name in names]
    report.one_call = [OneCallRow(name, 1e-5) for name in ONE_CALL]
    assert plot_bench(report, tmp_path / "bench.png").is_file()


def test_an_untrusted_folder_is_timed_without_loading_its_torchscript(tmp_path, exported_folder):
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            str(exported_folder),
            "--batch",
            "1",
            "--steps",
            "3",
            "--rounds",
            "1",
            "--no-cold-start",
            "--no-streams",
            "--no-one-call",
            "--kind",
            "generate",
            "--out",
            str(tmp_path / "b"),
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    names = {r["implementation"] for r in json.loads(result.stdout)["rows"]}
    assert "torchscript" not in names and {"eager", "onnx step loop", "auto"} <= names
    said = result.stderr.splitlines()
    assert said[0] == "timing without TorchScript: this folder is not trusted (--digest, --public-key or --trust " + (
        "loads it; loading runs its code)"
    ), said  # before the first timing, not only by its absence from the table

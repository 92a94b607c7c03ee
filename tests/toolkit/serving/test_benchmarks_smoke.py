"""Smoke runs of the serving benchmarks, end to end in subprocesses as a user runs them: the
token streaming benchmark's ``--quick`` mode (2 generations x 5 tokens of the worked character GRU
over SSE and gRPC streaming, against the FastAPI baseline) and the served sequence steps of the
same token model (`benchmarks/serve.py --model char`) at tiny settings. No timing is asserted:
every cell ran to its end, the spot checks matched the runtime, and the table was printed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="fastapi (dev extra, the baseline) is not installed")
pytest.importorskip("uvloop", reason="the serve extra is not installed")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (dev extra) is not installed")

ROOT = Path(__file__).resolve().parents[3]
RUN_TIMEOUT_S = 300  # a whole smoke run, server start-up and the model's export included


def run_benchmark(script: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def table_rows(table: str, transports: set[str]) -> dict[str, list[str]]:
    """The table's rows by transport (a row starts with its transport's name)."""
    rows = {}
    for line in table.splitlines():
        words = line.split()
        if words and words[0] in transports:
            rows[words[0]] = words
    return rows


def test_token_streaming_quick_runs_every_cell_and_prints_its_table(tmp_path):
    result = run_benchmark("token_streaming.py", "--quick", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-4000:]
    info = json.loads((tmp_path / "token_streaming.json").read_text())
    cells = {cell["transport"]: cell for cell in info["cells"]}
    assert set(cells) == {"baseline-sse", "ours-sse", "ours-grpc"}
    for cell in cells.values():
        assert (cell["concurrency"], cell["generations"], cell["tokens"]) == (2, 2, 10)
        assert 0.0 < cell["ttft_p50_ms"] <= cell["ttft_p99_ms"]
        assert cell["tokens_per_s"] > 0.0
    assert cells["ours-sse"]["throughput_ratio"] > 0.0 and cells["ours-grpc"]["throughput_ratio"] > 0.0
    spot = info["spot_check"]["transports"]
    assert set(spot) == set(cells) and all(report["same_tokens"] for report in spot.values())
    rows = table_rows(result.stdout, set(cells))
    assert set(rows) == set(cells)
    assert all(row[1:3] == ["2", "2"] for row in rows.values())  # concurrency, generations
    assert "same tokens" in result.stdout and "DIFFERENT" not in result.stdout
    assert (tmp_path / "token_streaming.txt").read_text().strip() == result.stdout.strip()


def test_served_steps_of_the_token_model_run_and_print_their_table(tmp_path):
    result = run_benchmark(
        "serve.py",
        "--model",
        "char",
        "--seconds",
        "0.3",
        "--warmup",
        "0.1",
        "--rounds",
        "1",
        "--concurrency",
        "2",
        "--delay",
        "0",
        "--no-floor",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    info = json.loads((tmp_path / "serve.json").read_text())
    assert info["settings"]["model"].startswith("char ")
    cells = {cell["transport"]: cell for cell in info["cells"]}
    assert set(cells) == {"baseline-http", "ours-http", "ours-grpc"}
    assert all(cell["concurrency"] == 2 and cell["steps"] > 0 for cell in cells.values())
    spot = info["spot_check"]["transports"]
    assert all(report["bit_identical"] for report in spot.values()), spot
    assert set(table_rows(result.stdout, set(cells))) == set(cells)

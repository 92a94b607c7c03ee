"""A successful bulk run says its summary and nothing else that looks like a failure (issue 24
point 8): no error-level ``core_worker.cc`` line (Ray's warning about restartable actors whose
constructor arguments sit in the object store: the model workers are not restartable,
`toolkit.bulk.no_restarts`) and no deprecation warning of the keywords that say so."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from ..conftest import COMMITTED, REPO

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from toolkit.bulk import read_output  # noqa: E402

SERIES, LENGTH = 40, 12
RAY_LOG_ERROR = re.compile(r"^\[[^\]]* E \d+ \d+\]")  # Ray's C++ log prefix at error level


def test_a_successful_cli_bulk_run_prints_no_ray_error_line(tmp_path):
    """One `rnn predict --ray` in a fresh process (its own local Ray: Ray logs that line once per
    process, at the first actor it creates)."""
    series = [np.sin(np.arange(LENGTH) * 0.4 + i) for i in range(SERIES)]
    pq.write_table(pa.table({"id": list(range(SERIES)), "series": pa.array(series)}), tmp_path / "in.parquet")
    code = "import sys; from toolkit.cli import main; sys.argv = ['rnn', *sys.argv[1:]]; main()"
    args = ["predict", str(COMMITTED), "--ray", "--input", str(tmp_path / "in.parquet"), "--out", str(tmp_path / "o")]
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()  # the summary is said on stderr: stdout is the data's (none here)
    assert done.stdout == "" and re.fullmatch(rf"predict: {SERIES} series in [0-9.]+ s -> \S+", lines[-1]), lines
    assert not [line for line in lines if "core_worker" in line or RAY_LOG_ERROR.match(line)], done.stderr
    assert "Deprecat" not in done.stderr, done.stderr
    ids, ys = read_output(tmp_path / "o")
    assert sorted(ids.tolist()) == list(range(SERIES)) and all(y.shape == (LENGTH,) for y in ys)

"""The line tests/conftest.py adds at the end of a pytest run: how many tests skipped and why,
grouped by reason (a run of its own, in a fresh pytest process, over tests that skip)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

SKIPPING = """
import pytest

@pytest.mark.parametrize("n", range(2))
def test_cuda(n):
    pytest.skip("no CUDA provider: CUDA paths not run")

def test_cuda_too():
    pytest.skip("no CUDA provider")

@pytest.mark.skipif(True, reason="chromium not installed")
def test_page():
    pass

def test_chromium_too():
    pytest.skip("chromium not installed")

def test_module():
    pytest.importorskip("no_such_module_h24b", reason="the extra is not installed")

def test_runs():
    assert 1 + 1 == 2
"""


def run_pytest(tmp_path, source: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_skipping.py").write_text(source)
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-ra",
        "-p",
        "tests.conftest",
        "--rootdir",
        str(tmp_path),
        "-p",
        "no:cacheprovider",
    ]
    return subprocess.run(
        [*command, str(tmp_path / "test_skipping.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=environment,
    )


def test_the_end_of_a_run_says_how_many_skipped_and_why(tmp_path):
    result = run_pytest(tmp_path, SKIPPING)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    summary = [line for line in lines if "skipped: " in line and not line.startswith("=")]
    expected = "3 skipped: no CUDA provider; 2 skipped: chromium not installed; 1 skipped: the extra is not installed"
    assert summary == [expected] and lines[-1] == expected, lines  # the last line, after pytest's own
    assert "1 passed, 6 skipped" in lines[-2] and any(line.startswith("SKIPPED [2]") for line in lines)  # -ra's too


def test_a_run_without_skips_adds_nothing(tmp_path):
    result = run_pytest(tmp_path, "def test_runs():\n    assert 2 * 2 == 4\n")
    assert result.returncode == 0 and "skipped" not in result.stdout, result.stdout

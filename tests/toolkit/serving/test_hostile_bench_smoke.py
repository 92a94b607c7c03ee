"""A smoke run of issue 23's measurement (`benchmarks/hostile.py --quick`) end to end, as a user
runs it: three attacks (data nested 40 deep, an endless header, 200 idle connections), each
against a fresh `rnn serve` of a copy of the committed sine folder while a normal client runs. No
timing is asserted: the table has a row per attack with the server's refusals, the normal
client's requests all answered (y checked against the runtime), memory sampled, the server up
after each attack, and --out holds what was printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="the serve extra is not installed")

ROOT = Path(__file__).resolve().parents[3]
RUN_TIMEOUT_S = 120  # three servers started and stopped, 1 s an attack


def rows_of(table: str) -> dict[str, list[str]]:
    """The table's rows by attack name (a row starts with the attack's letter and name)."""
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.split(" | ")]
        if re.fullmatch(r"[a-h] [a-z-]+", cells[0]) and len(cells) == 8:
            rows[cells[0].split()[1]] = cells
    return rows


def test_quick_run_prints_a_row_per_attack_and_the_server_survives(tmp_path):
    out = tmp_path / "hostile.txt"
    command = [sys.executable, str(ROOT / "benchmarks" / "hostile.py"), "--quick", "--seconds", "1"]
    result = subprocess.run(
        [*command, "--attacks", "nested-json,b,a", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = rows_of(result.stdout)
    assert list(rows) == ["nested-json", "endless-header", "idle-http"]
    nested, header, idle = rows.values()
    assert re.fullmatch(r"(\d+) x data nested 40 deep \(.*\): \1 x 400", nested[1]), nested[1]
    assert re.search(r"\d+ x 431", header[1]) and " x 200" not in header[1], header[1]
    assert idle[1].startswith("200 held open, reopened when closed;"), idle[1]
    for name, (_, _, live, infer, errors, memory, cores, server) in rows.items():
        assert server == "up" and errors == "0", (name, server, errors)
        assert re.fullmatch(r"[\d.]+/[\d.]+", live) and re.fullmatch(r"[\d.]+/[\d.]+", infer), (name, live, infer)
        server_cores, machine_cores = (float(value) for value in cores.split("/"))
        assert 0.0 <= server_cores <= machine_cores + 0.1, (name, cores)  # the server is part of the machine (ticks)
        base, peak, hwm = (int(value) for value in re.fullmatch(r"(\d+)/(\d+) \(HWM (\d+)\)", memory).groups())
        assert 0 < base <= peak + 1 and peak <= hwm + 1, (name, memory)  # MiB rounded; no sample passes VmHWM
    assert "server answering liveness after every attack: yes" in result.stdout
    assert re.search(r"machine: .+, \d+ cores, load average", result.stdout)
    assert out.read_text() == result.stdout

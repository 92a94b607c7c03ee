"""`rnn export-module` and `rnn verify --trust` under careless users (issue 23, points 10-12): one
line on stderr and exit 2, never a traceback, and no output folder where the export is refused."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from click.testing import CliRunner

from runtime.manifest import STEP_TORCHSCRIPT_NAME, file_entry, read_manifest, write_manifest
from toolkit.cli import cli

from ..conftest import REPO
from ..user_modules import MAKE_FAILING, MAKE_NOT_A_MODULE, MAKE_PYTHON_ONLY, MAKE_SIZED_CELL, SIZED_CELL


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_error_line(result) -> str:
    """The one line a refused command prints (exit 2, nothing on stdout)."""
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_class_that_needs_arguments_is_one_line_in_a_real_process(tmp_path):
    code = (
        "import sys\nfrom toolkit.cli import main\n"
        f"sys.argv = ['rnn', 'export-module', {SIZED_CELL!r}, '--out', {str(tmp_path / 'x')!r}, '--state', 'h:4']\n"
        "main()"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "error: the factory tests.user_modules:SizedCell is called with no arguments, but class SizedCell needs "
        "hidden: write a function in tests.user_modules that builds the module "
        "(def build(): return SizedCell(hidden=...)) and pass tests.user_modules:build"
    ]
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("factory", "said"),
    [
        (SIZED_CELL, "is called with no arguments, but class SizedCell needs hidden"),
        (MAKE_FAILING, "the factory tests.user_modules:make_failing raised: FileNotFoundError: pretrained.pt"),
        (MAKE_NOT_A_MODULE, "returned OrderedDict, not a torch.nn.Module"),
        ("tests.user_modules:make_nothing", "'tests.user_modules' has no callable 'make_nothing'"),
        ("tests.no_such_module:build", "cannot import 'tests.no_such_module'"),
    ],
)
def test_export_module_with_a_factory_that_builds_no_module(tmp_path, factory, said):
    line = one_error_line(invoke("export-module", factory, "--out", tmp_path / "x", "--state", "h:4"))
    assert said in line
    assert not (tmp_path / "x").exists()


def test_export_verify_plot_and_bench_with_a_class_that_needs_arguments(tmp_path):
    folder = tmp_path / "sized"
    done = invoke("export-module", MAKE_SIZED_CELL, "--out", folder, "--state", "h:4")
    assert done.exit_code == 0 and f"rnn verify {folder} --factory {MAKE_SIZED_CELL}" in done.stdout
    for command in (
        ("export", folder, "--out", tmp_path / "again", "--factory", SIZED_CELL),
        ("verify", folder, "--factory", SIZED_CELL),
        ("plot", folder, "--factory", SIZED_CELL),
        ("bench", folder, "--factory", SIZED_CELL, "--out", tmp_path / "bench", "--rounds", 1),
    ):
        assert "class SizedCell needs hidden" in one_error_line(invoke(*command)), command


def test_the_dynamo_hint_when_torchscript_cannot_compile_the_module(tmp_path):
    line = one_error_line(invoke("export-module", MAKE_PYTHON_ONLY, "--out", tmp_path / "x", "--state", "h:4"))
    assert line.startswith("error: torch.jit.script cannot compile PythonOnly: ")
    assert "try --exporter dynamo" in line
    assert not (tmp_path / "x").exists()


def _rehashed(folder, name):
    manifest = read_manifest(folder)
    files = tuple(file_entry(folder, e.name, e.role) if e.name == name else e for e in manifest.files)
    write_manifest(folder, dataclasses.replace(manifest, files=files))


@pytest.mark.parametrize("rehash", [True, False], ids=["manifest-agrees", "manifest-differs"])
def test_verify_trust_on_a_corrupted_archive_is_one_line(exported_copy, rehash):
    archive = exported_copy / STEP_TORCHSCRIPT_NAME
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 3])
    if rehash:  # as a folder exported before the load-back: its manifest vouches for the broken file
        _rehashed(exported_copy, STEP_TORCHSCRIPT_NAME)
    line = one_error_line(invoke("verify", exported_copy, "--trust"))
    if rehash:
        assert line.startswith("error: step.torchscript.pt cannot be loaded by torch.jit.load (RuntimeError: ")
    else:
        assert line.startswith("error: 'step.torchscript.pt' is ") and "the manifest says" in line

"""README.md tells the truth: every measured figure comes from the file a benchmark wrote
(benchmarks/readme_figures.py renders each figure block from its source), no measured figure is
typed outside a block, and the lists it keeps (the artifact folder's files, the fused forms of the
built-in cells) match what the code writes."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

from export.fused_cells import CELL_FORMS
from rnn.config import TRAIN_DATA_NAME
from runtime.fused import SAMPLING_FORMS
from runtime.manifest import CONFIG_NAME, MANIFEST_NAME, VERIFY_NAME
from toolkit.signing import SIGNATURE_NAME

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _load_figures():
    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "benchmarks" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


figures = _load_figures()

# A measured figure: a ratio (38.0x, 1.4-2.2x), a time in us or ms, a rate, seconds with decimals.
MEASURED = (
    r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:-\d[\d,]*(?:\.\d+)?)?x\b",
    r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:-\d[\d,]*(?:\.\d+)?)? ?(?:us|ms)\b",
    r"(?<![\w.])\d[\d,]*(?:\.\d+)? ?(?:steps|tokens|series|stream-steps)/s\b",
    r"(?<![\w.])\d+\.\d+ ?s\b",
)
# Numbers with those units outside the blocks that are settings, not measurements (whitespace-normalised).
SETTINGS = (
    "a 100,000-token request stopped after 300 ms",  # the browser test's cancellation
    "every 5 ms over SSE and 10 ms over gRPC",  # the token streams' grouping intervals
)


def _sources_copy(tmp_path: Path, leave_out: str | None = None) -> Path:
    """A checkout of README.md and the text sources under docs/ (no pictures), without ``leave_out``."""
    shutil.copy(README, tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png"))
    if leave_out is not None:
        (tmp_path / leave_out).unlink()
    return tmp_path


def test_every_figure_block_matches_its_source():
    readme = README.read_text(encoding="utf-8")
    updated, found = figures.problems(readme)
    assert found == [], "run: python benchmarks/readme_figures.py --write"
    assert updated == readme
    assert len(figures.BLOCK.findall(readme)) == len(figures.FIGURES) >= 15


def test_check_names_a_stale_block_and_write_repairs_it(tmp_path, capsys):
    root = _sources_copy(tmp_path)
    readme = README.read_text(encoding="utf-8")
    cold = figures.BLOCK.search(readme[readme.index("<!-- figures: bench-cold-start -->") :])
    assert "**0.116 s**" in cold["body"]  # the committed docs/bench.json's cold start
    (root / "README.md").write_text(readme.replace("**0.116 s**", "**0.100 s**"), encoding="utf-8")

    assert figures.main(["--check", "--root", str(root)]) == 1
    assert "block bench-cold-start: stale" in capsys.readouterr().err
    assert figures.main(["--write", "--root", str(root)]) == 0
    assert (root / "README.md").read_text(encoding="utf-8") == readme
    assert figures.main(["--check", "--root", str(root)]) == 0


def test_a_changed_source_makes_its_block_stale(tmp_path, capsys):
    root = _sources_copy(tmp_path)
    bench = root / "docs" / "bench.json"
    bench.write_text(bench.read_text(encoding="utf-8").replace('"in_process_s": 0.1159', '"in_process_s": 0.2159'))
    assert figures.main(["--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "block bench-cold-start: stale" in err and "bench-calls" not in err
    figures.main(["--write", "--root", str(root)])
    assert "**0.216 s** inside the process" in (root / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(("source", "figure"), [("docs/serve-bench.txt", "serve"), ("docs/bench.json", "bench-calls")])
def test_check_names_a_missing_source(tmp_path, capsys, source, figure):
    root = _sources_copy(tmp_path, leave_out=source)
    assert figures.main(["--check", "--root", str(root)]) == 1
    assert f"figure {figure}: source {source} is missing" in capsys.readouterr().err


def test_an_unknown_block_and_a_figure_without_block_are_named(tmp_path):
    readme = README.read_text(encoding="utf-8").replace("<!-- figures: bulk-long -->", "<!-- figures: bulk-wide -->")
    _, found = figures.problems(readme, _sources_copy(tmp_path))
    assert "block bulk-wide: no such figure (FIGURES in benchmarks/readme_figures.py)" in found
    assert "figure bulk-long: no block in the README" in found


def test_no_measured_figure_outside_the_blocks():
    outside = " ".join(figures.BLOCK.sub("", README.read_text(encoding="utf-8")).split())
    for setting in SETTINGS:
        assert setting in outside, f"SETTINGS lists {setting!r}, which the README no longer says"
        outside = outside.replace(setting, "")
    typed = [
        outside[max(0, m.start() - 60) : m.end() + 20] for pattern in MEASURED for m in re.finditer(pattern, outside)
    ]
    assert typed == [], "measured figures belong in a figure block (benchmarks/readme_figures.py)"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}")
    return text[start : text.index("\n## ", start + 1)]


def test_the_artifact_table_lists_every_file_export_writes():
    table = _section("The artifact folder")
    committed = {path.name for path in (ROOT / "artifacts" / "sine-elman").iterdir()}
    assert {"weights.pt", "step.onnx", "test_data", "prediction.png"} <= committed
    names = committed | {TRAIN_DATA_NAME, SIGNATURE_NAME, MANIFEST_NAME, CONFIG_NAME, VERIFY_NAME, "<form>.ort"}
    names |= {f"{form}.onnx" for form in SAMPLING_FORMS}
    missing = sorted(name for name in names if f"`{name}" not in table)
    assert missing == []


def test_the_readme_names_the_fused_forms_each_built_in_cell_gets():
    section = " ".join(_section("Running the loop fast: fused forms").split())
    for cell, label in (("gru", "GRU"), ("lstm", "LSTM")):
        forms = " and ".join(f"`{form}`" for form in CELL_FORMS[cell])
        assert f"an exported {label} folder lists {forms}" in section or f"an {label} folder {forms}" in section
    assert "GRU and LSTM run the step model" not in README.read_text(encoding="utf-8")


def test_the_readme_names_every_typed_error():
    import runtime.errors

    errors = [name for name, value in vars(runtime.errors).items() if isinstance(value, type)]
    errors = [name for name in errors if issubclass(getattr(runtime.errors, name), runtime.errors.ToolkitError)]
    assert len(errors) >= 14
    section = _section("Reliability and security: what is checked")
    assert [name for name in errors if f"`{name}`" not in section and f"`runtime.{name}`" not in section] == []

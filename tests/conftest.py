"""Shared fixtures: tiny models trained with fixed seeds inside the tests, nothing downloaded."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "artifacts" / "sine-elman"


def pytest_configure(config) -> None:
    """One torch thread, here and in every process a test starts: these models are far too small
    for intra-op threads to pay, and on busy cores torch's default spins (a suite took 8x longer)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def skip_reasons(reports) -> list[tuple[int, str]]:
    """(count, reason) of the skipped tests' reports, most frequent first (ties by reason); a
    reason is grouped by its words before the first ": " (the detail after it varies by test)."""
    counts: dict[str, int] = {}
    for report in reports:
        longrepr = getattr(report, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr or "no reason")
        reason = " ".join(str(reason).removeprefix("Skipped: ").split()).split(": ", 1)[0]
        counts[reason] = counts.get(reason, 0) + 1
    return sorted(((n, reason) for reason, n in counts.items()), key=lambda item: (-item[0], item[1]))


def pytest_unconfigure(config) -> None:
    """The run's last line, after pytest's own summary: how many tests skipped and why, grouped
    ("21 skipped: no CUDA provider; 9 skipped: chromium not installed"): a skip is easy to miss."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    grouped = skip_reasons(reporter.stats.get("skipped", [])) if reporter is not None else []
    if grouped:
        reporter.write_line("; ".join(f"{n} skipped: {reason}" for n, reason in grouped), yellow=True, bold=True)


@pytest.fixture(scope="session")
def trained_folder(tmp_path_factory) -> Path:
    """A folder trained for a few epochs of the reference trainer (seed 3), not exported."""
    from rnn.config import TrainConfig
    from rnn.train import train_folder

    folder = tmp_path_factory.mktemp("trained") / "model"
    train_folder(TrainConfig(seed=3, epochs=20), folder)
    return folder


@pytest.fixture(scope="session")
def exported_folder(tmp_path_factory, trained_folder) -> Path:
    """The trained folder, exported (read-only by convention: copy it before changing it)."""
    from export import export_folder

    folder = tmp_path_factory.mktemp("exported") / "model"
    export_folder(trained_folder, folder)
    return folder


@pytest.fixture()
def exported_copy(tmp_path, exported_folder) -> Path:
    """A private copy of the exported folder that a test may change."""
    folder = tmp_path / "copy"
    shutil.copytree(exported_folder, folder)
    return folder


@pytest.fixture(
    scope="session",
    ids=lambda p: f"{p[0]}-{p[1]}",
    params=[(cell, exporter) for cell in ("gru", "lstm") for exporter in ("torchscript", "dynamo")],
)
def cell_folder(request, tmp_path_factory):
    """(cell, exporter, folder): a GRU or LSTM trained for a few epochs (seed 2, hidden 5) and
    exported with either exporter."""
    from export import export_folder
    from rnn.config import TrainConfig
    from rnn.train import train_folder

    cell, exporter = request.param
    folder = tmp_path_factory.mktemp(f"{cell}-{exporter}") / "model"
    train_folder(TrainConfig(cell=cell, epochs=20, seed=2, hidden_size=5), folder)
    export_folder(folder, exporter=exporter)
    return cell, exporter, folder


def plant(folder, scale_w1, file="step.onnx", initializer_name="w1"):
    """Rewrites an ONNX file with one initializer scaled, and re-hashes it so that it loads (a
    silent export bug of the kind verification exists to catch)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from runtime.manifest import file_entry, read_manifest, write_manifest

    path = folder / file
    model = onnx.load(str(path))
    found = False
    for initializer in model.graph.initializer:
        if initializer.name == initializer_name:
            scaled = numpy_helper.to_array(initializer) * scale_w1
            initializer.CopyFrom(numpy_helper.from_array(scaled.astype(np.float32), initializer_name))
            found = True
    assert found, f"{file} has no initializer {initializer_name}"
    onnx.save(model, str(path))
    manifest = read_manifest(folder)
    files = tuple(file_entry(folder, f.name, f.role) if f.name == file else f for f in manifest.files)
    write_manifest(folder, type(manifest)(**{**manifest.__dict__, "files": files}))


def kill_inside(module: str, function: str, call: str, marker: Path) -> None:
    """Runs ``call`` in a fresh interpreter with ``module.function`` wrapped so that, once the
    real function has returned, the process writes ``marker`` and waits; then SIGKILLs it there."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        f"import time, pathlib, {module} as m\n"
        f"real = m.{function}\n"
        "def stalled(*args, **kwargs):\n"
        "    result = real(*args, **kwargs)\n"
        f"    pathlib.Path({str(marker)!r}).write_text('x')\n"
        "    time.sleep(60)\n"
        "    return result\n"
        f"m.{function} = stalled\n"
        f"{call}\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), f"the process never reached {module}.{function}"
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="session")
def cpp_binary(tmp_path_factory):
    missing = [tool for tool in ("cmake", "g++") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: the C++ example cannot be built")
    import torch

    build = REPO / "build" / "cpp"  # ignored by git; kept between runs so a rebuild is quick
    configure = [
        "cmake",
        "-S",
        str(REPO / "examples" / "cpp"),
        "-B",
        str(build),
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
    ]
    for command in (configure, ["cmake", "--build", str(build), "-j", "2"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return build / "rnn_generate"


def npm_installed(folder: Path, package: str, what: str) -> Path:
    """``folder``'s npm packages, installed once (``npm ci --ignore-scripts``; node_modules is
    ignored by git); skips with the reason where node or npm is missing."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: {what} cannot run")
    if not (folder / "node_modules" / package).is_dir():
        result = subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return folder


@pytest.fixture(scope="session")
def node_example():
    return npm_installed(REPO / "examples" / "node", "onnxruntime-node", "the Node.js example") / "generate.js"


def rehash_file(folder: Path, name: str = "config.json") -> None:
    """Records ``name``'s new size and sha256 in manifest.json, as whoever made the whole folder
    can: the manifest proves a folder complete, not trustworthy (tests of what else must hold)."""
    import hashlib
    import json

    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / name).read_bytes()
    for entry in manifest["files"]:
        if entry["name"] == name:
            entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))

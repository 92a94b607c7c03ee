"""What the C++, Node.js and browser example tests share: the Python runtime's rollout to compare with,
and for format 2 folders (a token + category character GRU, a two-input forecaster) the Python
runtime's closed loop, its sampler fed the uniforms the examples read."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import runtime

from ..conftest import COMMITTED, REPO, npm_installed

EMBED_ATOL = 1e-5  # C++ and Node.js against the Python runtime over 200 steps (the bound); the
# reference-trainer artifacts amplify rounding (7.9e-6 measured), so they are held to ROLLOUT_ATOL
STEPS = 200


def python_generate(folder=COMMITTED, steps=STEPS):
    ys, _ = runtime.load(folder).generate(np.float32(np.sin(2.0)), steps)
    return ys.reshape(-1).astype(np.float64)


def read_csv(text):
    lines = text.strip().splitlines()
    assert lines[0] == "step,y"
    return np.array([float(line.split(",")[1]) for line in lines[1:]])


@pytest.fixture(scope="session")
def lstm_folder(tmp_path_factory):
    """An LSTM (two state tensors) trained for a few epochs and exported."""
    from export import export_folder
    from rnn.config import TrainConfig
    from rnn.train import train_folder

    folder = tmp_path_factory.mktemp("lstm") / "model"
    train_folder(TrainConfig(cell="lstm", epochs=20, seed=2, hidden_size=5), folder)
    return export_folder(folder)


def run_two_state(command, folder):
    """The example's 30 generated values for ``folder``, checked against the Python runtime."""

    expected = runtime.load(folder).generate(np.float32(np.sin(2.0)), 30)[0].reshape(-1)
    out = subprocess.run([*command, str(folder), "--steps", "30"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    values = np.array([float(line.split(",")[1]) for line in out.stdout.strip().splitlines()[1:]])
    np.testing.assert_allclose(values, expected, atol=1e-5, rtol=0, err_msg=command[0])


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def web_page():
    """examples/web ready to drive: Debian's chromium present (`.ci/run` installs it), the page's
    npm packages installed once."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set CHROMIUM)")
    return npm_installed(REPO / "examples" / "web", "puppeteer-core", "the browser page's tests")


# ---- format 2 folders: sampled tokens and identity feedback of several inputs ------------------------

GENERAL_STEPS = 60  # closed-loop steps of the format 2 checks
TEMPERATURE = 0.8
UNIFORMS_SEED = 7


@pytest.fixture(scope="session")
def general_folders(tmp_path_factory):
    """{"char": the CharGRU folder (token + category in, logits out, state (2, batch, 7), sampled
    feedback; with its fused sampling forms where the exporter writes them), "two": the TwoInputs
    folder (value + day token in, the value fed back as it is), "two_batch_first": the same with
    layout batch_first (the step model is the same; only sequences change axes)}, exported once
    (torch, fixed seeds)."""
    from export import export_module

    from ..user_modules import CHAR_GRU_SIGNATURE, TWO_INPUTS_SIGNATURE, make_char_gru, make_two_inputs

    root = tmp_path_factory.mktemp("general")
    return {
        "char": export_module(make_char_gru(), root / "char", **CHAR_GRU_SIGNATURE),
        "two": export_module(make_two_inputs(), root / "two", **TWO_INPUTS_SIGNATURE),
        "two_batch_first": export_module(
            make_two_inputs(), root / "two_batch_first", layout="batch_first", **TWO_INPUTS_SIGNATURE
        ),
    }


def uniforms_file(folder: Path, steps: int = GENERAL_STEPS, seed: int = UNIFORMS_SEED) -> tuple[np.ndarray, Path]:
    """``steps`` uniforms as ``runtime.Sampler(seed=seed)`` draws them at batch 1 (numpy's
    ``default_rng(seed).random(..., dtype=float32)``), and the raw little-endian float32 file the
    examples read them from (--uniforms)."""
    uniforms = np.random.default_rng(seed).random(steps, dtype=np.float32)
    path = folder / f"uniforms-{seed}-{steps}.f32"
    uniforms.astype("<f4").tofile(path)
    return uniforms, path


def reference_tokens(folder: Path, inputs: dict, steps: int, strategy: str, uniforms=None, **settings) -> np.ndarray:
    """The sampled closed loop of ``folder`` at batch 1 as the Python runtime's step-loop generate
    draws it with ``runtime.Sampler(strategy, temperature=TEMPERATURE, **settings)`` (top_k, top_p),
    fed ``uniforms[t]`` at step t."""

    class FixedUniforms(runtime.Sampler):
        """The runtime's draw, fed the uniforms the examples read from --uniforms."""

        def uniforms(self, steps: int, batch: int) -> np.ndarray:
            if self.greedy:
                return super().uniforms(steps, batch)
            return np.asarray(uniforms, np.float32).reshape(steps, batch)

    model = runtime.load(folder)
    x0 = {t.name: np.asarray(inputs[t.name], dtype=t.dtype).reshape(t.shape_for(1)) for t in model.inputs}
    sampler = FixedUniforms(strategy, **({} if strategy == "greedy" else {"temperature": TEMPERATURE, **settings}))
    tokens, _ = model.generate(x0, steps, sampler=sampler, form="step")
    return np.asarray(tokens).reshape(-1)


def reference_values(folder: Path, inputs: dict, steps: int) -> np.ndarray:
    """The fed-back output's first value a step, from the Python runtime's generate."""
    model = runtime.load(folder)
    x0 = {t.name: np.asarray(inputs[t.name], dtype=t.dtype).reshape(t.shape_for(1)) for t in model.inputs}
    ys, _ = model.generate(x0, steps)
    if isinstance(ys, dict):
        ys = ys[model.feedback.output]
    return np.asarray(ys).reshape(steps, -1)[:, 0].astype(np.float64)


def run_example(command: list[str], folder: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([*command, str(folder), *arguments], capture_output=True, text=True, timeout=120)


def read_column(result: subprocess.CompletedProcess, header: str) -> np.ndarray:
    """The second column of an example's CSV, checked to be "step,<header>" and numbered 1, 2, ..."""
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"step,{header}", lines[0]
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(1, len(lines)))
    return np.array([float(line.split(",")[1]) for line in lines[1:]])


CHAR_INPUTS = {"token": 4, "category": [2.0, -0.5, 0.7]}  # a greedy loop that cycles through 4 tokens
TWO_INPUTS = {"value": [0.5], "day": 3}


def input_arguments(inputs: dict) -> list[str]:
    arguments = []
    for name, value in inputs.items():
        text = ",".join(repr(float(v)) for v in value) if isinstance(value, list) else str(value)
        arguments += ["--input", f"{name}={text}"]
    return arguments


def check_general_example(command: list[str], folders: dict, tmp_path: Path, extra: tuple[str, ...] = ()) -> None:
    """The example's format 2 closed loops against the Python references: the character GRU's
    tokens, greedy, temperature, top-k and top-p (the same uniforms through --uniforms), equal over
    GENERAL_STEPS steps; the two-input forecaster's fed-back values within EMBED_ATOL."""
    char, two = folders["char"], folders["two"]
    steps = str(GENERAL_STEPS)
    greedy = read_column(run_example(command, char, "--steps", steps, *input_arguments(CHAR_INPUTS), *extra), "token")
    expected = reference_tokens(char, CHAR_INPUTS, GENERAL_STEPS, "greedy")
    np.testing.assert_array_equal(greedy, expected)
    assert len(set(expected.tolist())) >= 3  # not one token repeated
    uniforms, path = uniforms_file(tmp_path)
    arguments = ["--sample", "temperature", "--temperature", str(TEMPERATURE), "--uniforms", str(path)]
    sampled = read_column(
        run_example(command, char, "--steps", steps, *input_arguments(CHAR_INPUTS), *arguments, *extra), "token"
    )
    expected = reference_tokens(char, CHAR_INPUTS, GENERAL_STEPS, "temperature", uniforms)
    np.testing.assert_array_equal(sampled, expected)
    assert len(set(expected.tolist())) >= 4  # a draw that varies, not one token repeated
    for strategy, setting, flag in (("top_k", {"top_k": 3}, "--top-k=3"), ("top_p", {"top_p": 0.6}, "--top-p=0.6")):
        flags = [*flag.split("="), "--sample", strategy, "--temperature", str(TEMPERATURE), "--uniforms", str(path)]
        result = run_example(command, char, "--steps", steps, *input_arguments(CHAR_INPUTS), *flags, *extra)
        expected = reference_tokens(char, CHAR_INPUTS, GENERAL_STEPS, strategy, uniforms, **setting)
        np.testing.assert_array_equal(read_column(result, "token"), expected, err_msg=strategy)
        assert len(set(expected.tolist())) >= 3
    for folder in (two, folders["two_batch_first"]):
        values = read_column(run_example(command, folder, "--steps", steps, *input_arguments(TWO_INPUTS)), "next_value")
        difference = np.max(np.abs(values - reference_values(folder, TWO_INPUTS, GENERAL_STEPS)))
        print(f"\n{Path(command[-1]).name} vs the Python runtime, {folder.name}: {difference:.2e}")
        assert difference <= EMBED_ATOL


def general_error_cases(folders: dict, tmp_path: Path) -> list[tuple[Path, list[str], str]]:
    """(folder, arguments, what the one-line error must say) of each mistake a user can make with
    a format 2 folder, and a format 2 manifest the examples cannot run."""
    import json
    import shutil

    char, two = folders["char"], folders["two"]
    no_feedback = tmp_path / "no-feedback"
    shutil.copytree(char, no_feedback)
    manifest = json.loads((no_feedback / "manifest.json").read_text())
    del manifest["feedback"]
    (no_feedback / "manifest.json").write_text(json.dumps(manifest))
    newer = tmp_path / "newer"
    shutil.copytree(char, newer)
    manifest["format_version"] = 3
    (newer / "manifest.json").write_text(json.dumps(manifest))
    _, uniforms = uniforms_file(tmp_path, steps=5)
    return [
        (two, ["--input", "weekday=3"], "no input weekday"),
        (two, ["--input", "day=7"], "out of range"),
        (char, ["--input", "token=-1"], "token"),
        (two, ["--input", "value=0.5,0.25"], "needs 1 values"),
        (char, ["--input", "category=1,0"], "needs 3 values"),
        (char, ["--input", "category=1,x,0"], "not a finite number"),
        (char, ["--sample", "temperature", "--uniforms", str(uniforms), "--steps", "6"], "holds 5 float32 values"),
        (char, ["--sample", "nucleus"], "--sample must be"),
        (char, ["--sample", "top_k"], "needs --top-k"),
        (char, ["--sample", "temperature", "--top-p", "0.5"], "--top-p is for --sample top_p"),
        (char, ["--x0", "0.5"], "--x0 is for format 1"),
        (two, ["--sample", "greedy"], "fed back as it is"),
        (no_feedback, [], "declares no feedback"),
        (newer, [], "format version"),
        (COMMITTED, ["--input", "x=0.5"], "for format 2 folders"),
    ]


def check_general_errors(command: list[str], folders: dict, tmp_path: Path) -> None:
    for folder, arguments, expected in general_error_cases(folders, tmp_path):
        result = run_example(command, folder, *arguments)
        where = f"{' '.join(arguments)} on {folder.name}"
        assert result.returncode == 2, (
            f"{where}: exit {result.returncode}, {result.stdout[-300:]} {result.stderr[-300:]}"
        )
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (where, result.stderr)

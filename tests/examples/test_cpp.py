"""examples/cpp: the C++ example (libtorch, step.torchscript.pt) against the Python runtime."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess

import numpy as np
import pytest

import runtime
from export import export_folder
from export.verify import ROLLOUT_ATOL

from ..conftest import COMMITTED, REPO
from .conftest import (
    CHAR_INPUTS,
    EMBED_ATOL,
    GENERAL_STEPS,
    STEPS,
    TEMPERATURE,
    check_general_errors,
    check_general_example,
    input_arguments,
    python_generate,
    read_column,
    read_csv,
    run_example,
    run_two_state,
)
from .worked_char import char_generator as worked_char_generator


@pytest.fixture(scope="module")
def stable_folder(tmp_path_factory):
    """A bptt-trained model: its closed loop damps rounding differences instead of amplifying them."""
    from rnn.config import TrainConfig
    from rnn.train import train_folder

    folder = tmp_path_factory.mktemp("stable") / "model"
    train_folder(TrainConfig(trainer="bptt", epochs=400, seed=1), folder)
    return export_folder(folder)


def test_cpp_example_matches_the_python_runtime(cpp_binary, stable_folder):
    for folder, bound in ((stable_folder, EMBED_ATOL), (COMMITTED, ROLLOUT_ATOL)):
        result = subprocess.run(
            [str(cpp_binary), str(folder), "--steps", str(STEPS)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        values = read_csv(result.stdout)
        assert len(values) == STEPS
        difference = np.max(np.abs(values - python_generate(folder)))
        print(f"\nC++ vs Python runtime, {folder.name}: {difference:.2e}")
        assert difference <= bound, folder


def test_cpp_example_errors(cpp_binary, tmp_path):
    result = subprocess.run([str(cpp_binary), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "error:" in result.stderr
    result = subprocess.run([str(cpp_binary), str(COMMITTED), "--steps", "0"], capture_output=True, text=True)
    assert result.returncode == 2 and "--steps" in result.stderr


def test_cpp_example_runs_a_two_state_model(cpp_binary, lstm_folder):
    run_two_state([str(cpp_binary)], lstm_folder)


# ---- format 2 folders (the step model once per step, from step.torchscript.pt) ----------------


def test_cpp_example_runs_format_2_folders_as_the_python_reference(cpp_binary, general_folders, tmp_path):
    check_general_example([str(cpp_binary)], general_folders, tmp_path)


def run_cpp(cpp_binary, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(cpp_binary), *arguments], capture_output=True, text=True, timeout=120)


SEEDS = (0, 1, 42, 2**32 + 5, 2**64 - 1)  # one word, two words, the largest --seed


def test_cpp_example_draws_numpys_uniforms(cpp_binary):
    """--print-uniforms N: numpy.random.default_rng(seed).random(N, dtype=float32), bit for bit (an
    odd N: the last draw takes the lower half of a 64-bit draw and leaves the upper half buffered)."""
    for seed in SEEDS:
        result = run_cpp(cpp_binary, "--print-uniforms", "3001", "--seed", str(seed))
        assert result.returncode == 0, result.stderr
        drawn = np.array(result.stdout.split(), dtype=np.float64).astype(np.float32)
        np.testing.assert_array_equal(drawn, np.random.default_rng(seed).random(3001, dtype=np.float32), err_msg=seed)
    for bad in ("18446744073709551616", "-1", "1e3"):
        result = run_cpp(cpp_binary, "--print-uniforms", "3", "--seed", bad)
        assert result.returncode == 2 and "--seed must be a whole number from 0 to 2**64 - 1" in result.stderr, bad


SAMPLED = (  # strategy, its runtime.Sampler settings, its flags
    ("temperature", {}, []),
    ("top_k", {"top_k": 3}, ["--top-k", "3"]),
    ("top_p", {"top_p": 0.6}, ["--top-p", "0.6"]),
)


def seeded_tokens(folder, inputs: dict, steps: int, strategy: str, seed: int, **settings) -> np.ndarray:
    """The tokens of the Python runtime's generate at batch 1 with ``runtime.Sampler(strategy,
    temperature=TEMPERATURE, seed=seed, **settings)`` (greedy: no settings), the form it picks."""
    model = runtime.load(folder)
    x0 = {t.name: np.asarray(inputs[t.name], dtype=t.dtype).reshape(t.shape_for(1)) for t in model.inputs}
    options = {} if strategy == "greedy" else {"temperature": TEMPERATURE, **settings}
    tokens, _ = model.generate(x0, steps, sampler=runtime.Sampler(strategy, seed=seed, **options))
    return np.asarray(tokens).reshape(-1)


def test_cpp_example_seeded_tokens_are_the_python_runtimes(cpp_binary, general_folders):
    """One --seed gives the tokens of runtime.Sampler(strategy, ..., seed=seed) for every strategy;
    and the Node example's, which draws numpy's generator too."""
    char, steps = general_folders["char"], GENERAL_STEPS
    node = shutil.which("node")
    node_ready = node is not None and (REPO / "examples" / "node" / "node_modules" / "onnxruntime-node").is_dir()
    for seed in (5, 2**40 + 3):
        for strategy, settings, flags in SAMPLED:
            arguments = ["--steps", str(steps), *input_arguments(CHAR_INPUTS), "--sample", strategy, *flags]
            arguments += ["--temperature", str(TEMPERATURE), "--seed", str(seed)]
            tokens = read_column(run_example([str(cpp_binary)], char, *arguments), "token")
            expected = seeded_tokens(char, CHAR_INPUTS, steps, strategy, seed, **settings)
            np.testing.assert_array_equal(tokens, expected, err_msg=f"{strategy} seed {seed}")
            assert len(set(expected.tolist())) >= 3  # a draw that varies
            if node_ready:
                command = [node, str(REPO / "examples" / "node" / "generate.js")]
                same = read_column(run_example(command, char, *arguments, "--form", "step"), "token")
                np.testing.assert_array_equal(tokens, same, err_msg=f"Node, {strategy} seed {seed}")
    # seeds that differ draw differently
    first, second = (seeded_tokens(char, CHAR_INPUTS, steps, "temperature", seed) for seed in (5, 6))
    assert not np.array_equal(first, second)


def test_cpp_example_format_2_errors_are_one_line(cpp_binary, general_folders, tmp_path):
    check_general_errors([str(cpp_binary)], general_folders, tmp_path)
    result = run_example([str(cpp_binary)], general_folders["char"], "--form", "rollout_greedy")
    assert result.returncode == 2 and "runs the step model" in result.stderr


# ---- the README's worked character generator (examples/char_generator) ---------------------------

char_generator = worked_char_generator  # the shared module-scoped fixture, by the name the tests ask for


def text_rows(result: subprocess.CompletedProcess) -> list[list[str]]:
    """The rows of the example's CSV for a folder with a vocabulary: step, token id, its text."""
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["step", "token", "text"]
    assert [int(row[0]) for row in rows[1:]] == list(range(1, len(rows)))
    return rows[1:]


def test_cpp_example_runs_the_char_generator_as_the_python_runtime(cpp_binary, char_generator):
    """Greedy and seeded tokens from one start character equal runtime.load(folder).generate's
    (which runs the fused rollout forms), over 150 steps of the layered (2, batch, 64) state."""
    example, folder = char_generator
    for start, strategy, seed in (("A", "greedy", 0), ("t", "greedy", 0), ("A", "temperature", 0), ("W", "top_k", 9)):
        inputs = {"char": example.ALPHABET.index(start)}
        flags = [] if strategy == "greedy" else ["--sample", strategy, "--temperature", str(TEMPERATURE)]
        flags += ["--top-k", "5"] if strategy == "top_k" else []
        flags += [] if strategy == "greedy" else ["--seed", str(seed)]
        rows = text_rows(run_example([str(cpp_binary)], folder, "--steps", "150", *input_arguments(inputs), *flags))
        tokens = np.array([int(row[1]) for row in rows])
        assert [row[2] for row in rows] == [example.ALPHABET[i] for i in tokens]  # "," quoted
        settings = {"top_k": 5} if strategy == "top_k" else {}
        expected = seeded_tokens(folder, inputs, 150, strategy, seed, **settings)
        np.testing.assert_array_equal(tokens, expected, err_msg=f"{start} {strategy}")
        assert len(set(expected.tolist())) >= (3 if strategy == "greedy" else 8)  # not one character repeated


def prompted_tokens(folder, prompt: np.ndarray, steps: int, sampler) -> np.ndarray:
    """The worked example's generation: the state warmed up on the prompt but its last id
    (teacher-forced), then ``steps`` tokens from the last id."""
    model = runtime.load(folder)
    _, state = model.predict({"char": prompt[:-1].reshape(-1, 1)})
    tokens, _ = model.generate({"char": prompt[-1:]}, steps, state, sampler=sampler)
    return tokens[:, 0]


def test_cpp_example_continues_a_text_prompt_of_the_char_generator(cpp_binary, char_generator):
    """--prompt TEXT with the manifest's vocabulary: the prompt fed teacher-forced, then the
    tokens of the Python runtime for the same seed, as CSV with a text column and as text."""
    example, folder = char_generator
    prompt = "Alice was "
    vocabulary = runtime.load(folder).vocabulary
    assert vocabulary is not None and vocabulary.tokens == tuple(example.ALPHABET)
    arguments = ["--prompt", prompt, "--steps", "120", "--sample", "temperature", "--temperature", "0.8", "--seed", "4"]
    expected = prompted_tokens(
        folder, vocabulary.encode(prompt), 120, runtime.Sampler("temperature", temperature=0.8, seed=4)
    )
    result = run_example([str(cpp_binary)], folder, *arguments, "--text")
    assert result.returncode == 0, result.stderr
    assert result.stdout == prompt + vocabulary.decode(expected) + "\n"
    rows = text_rows(run_example([str(cpp_binary)], folder, *arguments))
    assert [(int(row[1]), row[2]) for row in rows] == [(i, example.ALPHABET[i]) for i in expected]
    greedy = run_example([str(cpp_binary)], folder, "--prompt", "Oh dear", "--steps", "40", "--text")
    expected = prompted_tokens(folder, vocabulary.encode("Oh dear"), 40, runtime.Sampler("greedy"))
    assert greedy.stdout == "Oh dear" + vocabulary.decode(expected) + "\n"


def test_cpp_example_text_errors_are_one_line(cpp_binary, char_generator, general_folders):
    _, folder = char_generator
    for where, arguments, expected in (
        (folder, ["--prompt", "Alice ~"], "--prompt: position 6 ('~') is no token of the vocabulary"),
        (folder, ["--prompt", ""], "--prompt is empty"),
        (folder, ["--prompt", "Alice", "--input", "char=3"], "give --prompt or --input char=ID, not both"),
        (general_folders["char"], ["--prompt", "abc"], "--prompt needs a vocabulary in manifest.json"),
        (general_folders["two"], ["--text"], "--text needs a vocabulary in manifest.json"),
        (COMMITTED, ["--prompt", "abc"], "for format 2 folders"),
    ):
        result = run_example([str(cpp_binary)], where, *arguments)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], (arguments, result.stderr)

"""examples/node: the Node.js example (onnxruntime-node) against the Python runtime."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

import runtime
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
    reference_tokens,
    run_example,
    run_two_state,
    uniforms_file,
)
from .worked_char import CHAR_PROMPT
from .worked_char import char_generator as worked_char_generator

SAMPLING_FORMS = ("rollout_greedy", "rollout_sample")
char_generator = worked_char_generator  # the fixture, by the name the tests ask for


@pytest.mark.parametrize("form", [None, "step", "rollout_loop"])
def test_node_example_matches_the_python_runtime(node_example, form):
    command = ["node", str(node_example), str(COMMITTED), "--steps", str(STEPS)] + (["--form", form] if form else [])
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    values = read_csv(result.stdout)
    assert len(values) == STEPS
    reference = python_generate()
    if form is None:  # the same fused model as the Python runtime's choice at batch 1
        assert np.max(np.abs(values - reference)) <= 1e-6
    assert np.max(np.abs(values - reference)) <= (EMBED_ATOL if form is None else ROLLOUT_ATOL)


def test_node_example_errors(node_example, tmp_path):
    result = subprocess.run(["node", str(node_example), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "manifest.json cannot be read" in result.stderr


def test_node_example_runs_a_two_state_model(node_example, lstm_folder):
    run_two_state(["node", str(node_example)], lstm_folder)


# ---- format 2 folders --------------------------------------------------------------------------


@pytest.mark.parametrize("form", [None, "step"])
def test_node_example_runs_format_2_folders_as_the_python_reference(node_example, general_folders, tmp_path, form):
    check_general_example(["node", str(node_example)], general_folders, tmp_path, ("--form", form) if form else ())


@pytest.fixture(scope="module")
def fused_char(general_folders, tmp_path_factory):
    """The character GRU's folder with its fused sampling forms: as exported where the exporter
    writes them, else built with export.sampling into a copy and listed in its manifest."""
    import dataclasses

    import onnx

    from export.sampling import sampling_rollouts
    from runtime.manifest import file_entry, read_manifest, write_manifest

    folder = general_folders["char"]
    manifest = read_manifest(folder)
    if all(manifest.file(form) for form in SAMPLING_FORMS):
        return folder
    copy = tmp_path_factory.mktemp("fused") / "char"
    shutil.copytree(folder, copy)
    forms = sampling_rollouts(
        onnx.load(str(copy / "step.onnx")),
        token_input=manifest.feedback.input,
        logits_output=manifest.feedback.output,
        state_inputs=[s.name for s in manifest.state],
        state_outputs=[s.output for s in manifest.state],
        opset=manifest.opset,
        metadata={},
    )
    for form, model in forms.items():
        onnx.save(model, str(copy / f"{form}.onnx"))
    entries = tuple(file_entry(copy, f"{form}.onnx", form) for form in forms)
    write_manifest(copy, dataclasses.replace(manifest, files=(*manifest.files, *entries)))
    return copy


def test_node_example_runs_the_fused_sampling_forms_in_one_run(node_example, fused_char, tmp_path):
    uniforms, path = uniforms_file(tmp_path)
    arguments = ["--steps", str(GENERAL_STEPS), *input_arguments(CHAR_INPUTS)]
    sample = ["--sample", "temperature", "--temperature", "0.8", "--uniforms", str(path)]
    for strategy, extra in (("greedy", []), ("temperature", sample)):
        expected = reference_tokens(fused_char, CHAR_INPUTS, GENERAL_STEPS, strategy, uniforms)
        for form in (None, f"rollout_{'greedy' if strategy == 'greedy' else 'sample'}", "step"):
            chosen = ["--form", form] if form else []
            tokens = read_column(
                run_example(["node", str(node_example)], fused_char, *arguments, *extra, *chosen), "token"
            )
            np.testing.assert_array_equal(tokens, expected, err_msg=f"{strategy}, form {form}")
    result = run_example(["node", str(node_example)], fused_char, "--form", "rollout_sample")  # greedy by default
    assert result.returncode == 2 and "does not run --sample greedy" in result.stderr


NUMPY_RANDOM = REPO / "examples" / "web" / "numpy_random.js"
# seeds of one word, two words (2**32 + 5) and more than the pool's four (a 150-bit seed)
SEEDS = (0, 1, 42, 2**32 + 5, 2**150 + 987654321)
DRAWS = (1, 2, 997, 2000)  # calls of odd and even sizes: the buffered high half crosses calls


def js_draws(seed: int) -> np.ndarray:
    """What numpy_random.js's defaultRng(seed) draws over the calls DRAWS, read bit for bit."""
    script = (
        f"import {{ defaultRng }} from {json.dumps(NUMPY_RANDOM.as_uri())};"
        f"const rng = defaultRng({json.dumps(str(seed))});"
        f"for (const n of {json.dumps(DRAWS)}) process.stdout.write(Buffer.from(rng.random(n).buffer).toString('hex'));"
    )
    result = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return np.frombuffer(bytes.fromhex(result.stdout), "<f4")


@pytest.mark.parametrize("seed", SEEDS)
def test_numpy_random_js_draws_numpys_default_rng_float32_bit_for_bit(seed):
    if shutil.which("node") is None:
        pytest.skip("node not installed")
    got = js_draws(seed)
    expected = np.random.default_rng(seed).random(sum(DRAWS), dtype=np.float32)
    assert got.shape == expected.shape == (3000,)
    np.testing.assert_array_equal(got.view("<u4"), expected.view("<u4"))
    assert 0.0 <= got.min() and got.max() < 1.0 and got.std() > 0.25  # not a constant or a short cycle


def test_numpy_random_js_refuses_a_seed_numpy_refuses():
    if shutil.which("node") is None:
        pytest.skip("node not installed")
    for seed in ("-1", "1.5", "x"):
        script = f"import {{ defaultRng }} from {json.dumps(NUMPY_RANDOM.as_uri())}; defaultRng({json.dumps(seed)});"
        result = subprocess.run(
            ["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60
        )
        assert result.returncode != 0 and "the seed must be a whole number >= 0" in result.stderr, seed


@pytest.mark.parametrize(
    "strategy, settings",
    [("greedy", {}), ("temperature", {}), ("top_k", {"top_k": 3}), ("top_p", {"top_p": 0.6})],
)
def test_node_example_seeded_tokens_are_the_python_runtimes(node_example, fused_char, strategy, settings):
    """--seed S draws numpy's default_rng(S): the tokens of runtime.Sampler(..., seed=S) at batch 1,
    in the step loop and in the fused form, for seeds of one and of two words."""
    model = runtime.load(fused_char)
    x0 = {"token": np.array([CHAR_INPUTS["token"]]), "category": np.array([CHAR_INPUTS["category"]], np.float32)}
    flags = ["--sample", strategy, *input_arguments(CHAR_INPUTS), "--steps", str(GENERAL_STEPS)]
    if strategy != "greedy":
        settings = {"temperature": TEMPERATURE, **settings}
        flags += ["--temperature", str(TEMPERATURE)]
    for key in ("top_k", "top_p"):
        flags += [f"--{key.replace('_', '-')}", str(settings[key])] if key in settings else []
    for seed in (3, 2**32 + 5) if strategy != "greedy" else (None,):
        sampler = runtime.Sampler(strategy, **settings, seed=seed)
        expected = np.asarray(model.generate(x0, GENERAL_STEPS, sampler=sampler)[0]).reshape(-1)
        if strategy != "greedy":
            assert len(set(expected.tolist())) >= 3  # a draw that varies
        seeded = flags + ([] if seed is None else ["--seed", str(seed)])
        for form in ("step", "rollout_greedy" if strategy == "greedy" else "rollout_sample"):
            tokens = read_column(run_example(["node", str(node_example)], fused_char, *seeded, "--form", form), "token")
            np.testing.assert_array_equal(tokens, expected, err_msg=f"{strategy}, seed {seed}, form {form}")


def test_node_example_seeded_draws_repeat(node_example, general_folders):
    def tokens(seed):
        arguments = ["--steps", "40", "--sample", "temperature", "--seed", str(seed), "--form", "step"]
        return read_column(run_example(["node", str(node_example)], general_folders["char"], *arguments), "token")

    np.testing.assert_array_equal(tokens(1), tokens(1))
    assert not np.array_equal(tokens(1), tokens(2))
    result = run_example(
        ["node", str(node_example)], general_folders["char"], "--sample", "temperature", "--seed", "-1"
    )
    assert result.returncode == 2 and "--seed must be a whole number >= 0" in result.stderr


def prompted(folder, prompt: str, steps: int, sampler) -> tuple[np.ndarray, str]:
    """The Python runtime's tokens after ``prompt`` (predict on all its ids but the last, then
    generate from the last), and the text the vocabulary gives them."""
    model = runtime.load(folder)
    ids = model.vocabulary.encode(prompt)
    _, state = model.predict({"char": ids[:-1].reshape(-1, 1)})
    tokens = np.asarray(model.generate({"char": ids[-1:]}, steps, state, sampler=sampler)[0]).reshape(-1)
    return tokens, model.vocabulary.decode(tokens)


def test_node_example_continues_a_text_prompt_of_the_char_generator(node_example, char_generator):
    """--prompt TEXT with the manifest's vocabulary: the prompt fed teacher-forced, then the Python
    runtime's tokens for the seed, as CSV with a text column (step loop and fused form) and as text."""
    import csv
    import io

    example, folder = char_generator
    node = ["node", str(node_example)]
    arguments = ["--prompt", CHAR_PROMPT, "--steps", "120", "--sample", "top_p", "--top-p", "0.9", "--seed", "4"]
    sampler = runtime.Sampler("top_p", top_p=0.9, seed=4)
    expected, text = prompted(folder, CHAR_PROMPT, 120, sampler)
    assert len(set(expected.tolist())) >= 8  # text, not one character repeated
    for form in ("step", "rollout_sample"):
        result = run_example(node, folder, *arguments, "--form", form)
        assert result.returncode == 0, result.stderr
        rows = list(csv.reader(io.StringIO(result.stdout)))
        assert rows[0] == ["step", "token", "text"] and [int(row[0]) for row in rows[1:]] == list(range(1, 121))
        assert [(int(row[1]), row[2]) for row in rows[1:]] == [(i, example.ALPHABET[i]) for i in expected], form
    result = run_example(node, folder, *arguments, "--text")
    assert result.returncode == 0 and result.stdout == CHAR_PROMPT + text + "\n", result.stderr
    greedy = run_example(node, folder, "--prompt", "Oh dear", "--steps", "40", "--text")
    assert greedy.stdout == "Oh dear" + prompted(folder, "Oh dear", 40, runtime.Sampler("greedy"))[1] + "\n"


def test_node_example_text_errors_are_one_line(node_example, char_generator, general_folders):
    _, folder = char_generator
    for where, arguments, expected in (
        (folder, ["--prompt", "Alice ~"], "--prompt: no token of the vocabulary matches the text at position 6"),
        (folder, ["--prompt", ""], "--prompt is empty"),
        (folder, ["--prompt", "Alice", "--input", "char=3"], "give --prompt or --input char=ID, not both"),
        (general_folders["char"], ["--prompt", "abc"], "--prompt needs a vocabulary in manifest.json"),
        (general_folders["two"], ["--text"], "--text needs a vocabulary in manifest.json"),
        (COMMITTED, ["--prompt", "abc"], "for format 2 folders"),
    ):
        result = run_example(["node", str(node_example)], where, *arguments)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], (arguments, result.stderr)


def test_node_example_format_2_errors_are_one_line(node_example, general_folders, tmp_path):
    check_general_errors(["node", str(node_example)], general_folders, tmp_path)

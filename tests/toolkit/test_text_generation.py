"""Text in and out on the command line for a folder with a vocabulary: rnn export-module
--vocabulary, rnn info, rnn generate --prompt (text, and --json with ids and text), each user
error one line and exit 2; and the worked character example's folder run from the command line."""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

import runtime
import toolkit.running
from toolkit.cli import cli

from ..conftest import COMMITTED, REPO
from ..user_modules import CHAR_GRU_SIGNATURE, MAKE_CHAR_GRU, MAKE_TWO_STATE

# one string per id of the char GRU's 11 tokens: characters and words sharing their first characters
TOKENS = ["a", "b", "c", " ", "ab", "abc", "the", "t", "h", "e", "."]
CATEGORY = [0.0, 1.0, 0.0]  # the char GRU's second input, held for every step


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def write_json(path, document):
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def char_folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("text")
    signature = write_json(base / "signature.json", CHAR_GRU_SIGNATURE)
    vocabulary = write_json(base / "vocabulary.json", TOKENS)
    folder = base / "char"
    result = invoke(
        "export-module", MAKE_CHAR_GRU, "--out", folder, "--signature", signature, "--vocabulary", vocabulary
    )
    assert result.exit_code == 0, result.output
    return folder


def expected_text(folder, prompt: str, steps: int, temperature: float, seed: int) -> str:
    """What the runtime samples after the prompt's tokens fed teacher-forced, decoded."""
    model = runtime.load(folder)
    ids = model.vocabulary.encode(prompt)
    category = np.array([CATEGORY], np.float32)
    state = None
    if len(ids) > 1:
        head = {"token": ids[:-1].reshape(-1, 1), "category": np.repeat(category[None], len(ids) - 1, axis=0)}
        _, state = model.predict(head)
    sampler = runtime.Sampler("temperature", temperature=temperature, seed=seed)
    tokens, _ = model.generate({"token": ids[-1:], "category": category}, steps, state, sampler=sampler)
    assert tokens.shape == (steps, 1)
    return model.vocabulary.decode(tokens[:, 0])


def test_export_module_writes_the_vocabulary_and_info_shows_it(char_folder):
    assert runtime.load(char_folder).vocabulary == runtime.Vocabulary(TOKENS)
    result = invoke("info", char_folder)
    assert result.exit_code == 0, result.output
    assert "vocabulary 11 tokens: 'a' 'b' 'c' ' ' 'ab' 'abc' 'the' 't' 'h' 'e' '.'\n" in result.output
    document = json.loads(invoke("info", char_folder, "--json").output)
    assert document["vocabulary"] == TOKENS


@pytest.mark.parametrize(("prompt", "seed"), [("the cab", 7), ("abc. the", 0), ("h", 3)])
def test_generate_prompt_prints_the_text_the_runtime_samples(char_folder, prompt, seed):
    steps = 40
    result = invoke(
        "generate", char_folder, "--prompt", prompt, "--start", "category=0,1,0", "--steps", steps,
        "--temperature", 0.9, "--seed", seed,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = expected_text(char_folder, prompt, steps, 0.9, seed)
    assert result.stdout == text + "\n"
    assert len(runtime.Vocabulary(TOKENS).encode(text)) <= steps  # a step's token may be a word


def test_generated_text_streamed_in_chunks_is_the_text_of_one_run(char_folder, monkeypatch):
    monkeypatch.setattr(toolkit.running, "CSV_CHUNK", 7)  # 60 steps in 9 runs of generate_iter
    result = invoke(
        "generate", char_folder, "--prompt", "the", "--start", "category=0,1,0", "--steps", 60, "--seed", 11,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == expected_text(char_folder, "the", 60, 1.0, 11) + "\n"


def test_generate_json_carries_the_ids_and_their_text(char_folder):
    result = invoke(
        "generate", char_folder, "--prompt", "abc the", "--start", "category=0,1,0", "--steps", 25,
        "--seed", 2, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["prompt"] == "abc the" and document["prompt_tokens"] == [5, 3, 6]
    assert document["x0"] == {"token": 6, "category": CATEGORY}
    assert len(document["tokens"]) == 25 and all(0 <= t < 11 for t in document["tokens"])
    assert document["text"] == "".join(TOKENS[t] for t in document["tokens"])
    assert document["text"] == expected_text(char_folder, "abc the", 25, 1.0, 2)


def test_generate_from_a_start_token_prints_text_for_a_folder_with_a_vocabulary(char_folder):
    start = ["--start", "token=6", "--start", "category=0,1,0", "--steps", 30]
    result = invoke("generate", char_folder, *start, "--sample", "temperature")
    assert result.exit_code == 0, result.output
    assert result.stdout == expected_text(char_folder, "the", 30, 1.0, 0) + "\n"  # "the" is token 6
    greedy = invoke("generate", char_folder, *start)  # greedy unless a draw is asked for, as the examples
    model = runtime.load(char_folder)
    category = np.array([CATEGORY], np.float32)
    tokens, _ = model.generate({"token": [6], "category": category}, 30, sampler=runtime.Sampler("greedy"))
    assert greedy.exit_code == 0 and greedy.stdout == model.vocabulary.decode(tokens[:, 0]) + "\n"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--prompt", "the xab"], r"error: --prompt: text position 4 \('x'\) starts no token of the vocabulary"),
        (["--prompt", ""], "error: --prompt must hold at least one token"),
        (["--prompt", "the", "--start", "token=1"], "error: --prompt gives input 'token' its tokens"),
        (["--prompt", "the", "--warmup", "x.npz"], "error: --prompt is where generation starts"),
    ],
)
def test_a_bad_prompt_is_one_line_and_exit_2(char_folder, arguments, message):
    result = invoke("generate", char_folder, "--start", "category=0,1,0", *arguments)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and re.match(message, lines[0]), result.stderr


def test_a_prompt_for_a_folder_without_a_vocabulary_is_one_line_and_exit_2():
    result = invoke("generate", COMMITTED, "--prompt", "hello")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: --prompt needs a folder with a vocabulary (export_module(..., vocabulary=[...]) or rnn "
        "export-module --vocabulary FILE); this one has none: give --start NAME=ID"
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('["a", "b"', "error: .*vocabulary.json"),
        ('{"a": 0}', r"error: --vocabulary .*vocabulary.json must be a list of strings, one per token id, got dict"),
        (json.dumps([*TOKENS[:-1], "a"]), r"error: --vocabulary .*: 'a' is id 0 and id 10"),
        (json.dumps([*TOKENS[:-1], 5]), r"error: --vocabulary .*vocabulary.json\[10\] must be a string, got int"),
        (json.dumps(TOKENS[:-1]), r"error: vocabulary must hold one string per token id: 11, got 10"),
    ],
)
def test_export_module_with_a_bad_vocabulary_file_is_one_line_and_exit_2(tmp_path, content, message):
    signature = write_json(tmp_path / "signature.json", CHAR_GRU_SIGNATURE)
    vocabulary = tmp_path / "vocabulary.json"
    vocabulary.write_text(content, encoding="utf-8")
    out = tmp_path / "m"
    result = invoke("export-module", MAKE_CHAR_GRU, "--out", out, "--signature", signature, "--vocabulary", vocabulary)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and re.match(message, lines[0]), result.stderr
    assert not out.exists()


def test_export_module_refuses_a_vocabulary_for_a_model_that_samples_nothing(tmp_path):
    vocabulary = write_json(tmp_path / "vocabulary.json", ["a", "b"])
    out = tmp_path / "m"
    result = invoke(
        "export-module", MAKE_TWO_STATE, "--out", out, "--state", "fast:4", "--state", "slow:4",
        "--vocabulary", vocabulary,
    )  # fmt: skip
    assert result.exit_code == 2 and not out.exists()
    assert result.stderr.splitlines() == [
        "error: vocabulary is for a model whose generation samples its next token (a logits output fed back into "
        "a tokens input); this model has none"
    ]


def test_the_worked_character_example_writes_its_vocabulary_and_the_cli_prints_its_text(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("char_generator", REPO / "examples/char_generator/char_generator.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    folder = tmp_path / "chars"
    assert example.main(["--out", str(folder), "--epochs", "5", "--length", "80", "--seed", "4"]) == 0
    printed = capsys.readouterr().out.removesuffix("\n")
    assert runtime.load(folder).vocabulary.tokens == tuple(example.ALPHABET)
    result = invoke("generate", folder, "--prompt", "Alice was ", "--steps", 80, "--temperature", 0.8, "--seed", 4)
    assert result.exit_code == 0, result.output
    assert "Alice was " + result.stdout.removesuffix("\n") == printed
    assert len(result.stdout) == 81


def test_generate_ray_hands_the_sampling_options_to_the_bulk_run_and_refuses_a_prompt(char_folder, monkeypatch):
    calls = []
    monkeypatch.setattr(toolkit.running, "run_bulk", lambda *args: calls.append(args) or "generate: done")
    arguments = ["generate", char_folder, "--ray", "--input", "rows.parquet", "--out", "out", "--steps", 9]
    result = invoke(*arguments, "--temperature", 0.7, "--top-k", 3, "--seed", 5)
    assert result.exit_code == 0, result.output
    (folder, kind, steps, _, as_json, bulk, sampling), *others = calls
    assert not others and (folder, kind, steps, as_json, bulk.ray) == (char_folder, "generate", 9, False, True)
    assert (sampling.sample, sampling.temperature, sampling.top_k, sampling.top_p, sampling.seed) == (
        None, 0.7, 3, None, 5,
    )  # fmt: skip
    refused = invoke(*arguments, "--prompt", "the")
    assert refused.exit_code == 2 and len(calls) == 1
    assert refused.stderr.startswith("error: --ray starts each series from its own last point") and (
        refused.stderr.count("\n") == 1
    )

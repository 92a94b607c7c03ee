"""runtime.Vocabulary (text to token ids and back) and the manifest's ``vocabulary``: written by
export_module, read back by runtime.load, refused by name where a hand-edited manifest breaks it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import runtime
from runtime.errors import DtypeError, InputValueError, IntegrityError, ManifestError, ShapeError
from runtime.manifest import manifest_digest, read_manifest

from ..conftest import COMMITTED
from ..user_modules import CHAR_GRU_SIGNATURE, make_char_gru
from .hostile import rewrite_manifest_json

# 11 tokens for the char GRU's 11 ids: characters, and words that share their first characters
TOKENS = ["a", "b", "c", " ", "ab", "abc", "the", "t", "h", "e", "."]


@pytest.fixture(scope="module")
def char_folder(tmp_path_factory):
    from export import export_module

    folder = tmp_path_factory.mktemp("vocabulary") / "char"
    return export_module(make_char_gru(), folder, vocabulary=TOKENS, **CHAR_GRU_SIGNATURE)


@pytest.fixture()
def char_copy(tmp_path, char_folder):
    return shutil.copytree(char_folder, tmp_path / "copy")


def test_encode_takes_the_longest_token_at_each_position_and_decode_joins_them():
    vocabulary = runtime.Vocabulary(TOKENS)
    ids = vocabulary.encode("abcab the.abt")
    # "abc" before "ab" before "a"; "the" before "t"; then "ab" and a lone "t"
    assert ids.tolist() == [5, 4, 3, 6, 10, 4, 7]
    assert ids.dtype == np.int64 and ids.shape == (7,)
    assert vocabulary.decode(ids) == "abcab the.abt"
    assert vocabulary.decode([6, 3, 0]) == "the a"
    assert vocabulary.decode(np.int64(8)) == "h"  # one id
    assert vocabulary.decode([]) == "" and vocabulary.encode("").shape == (0,)
    assert vocabulary.size == len(vocabulary) == 11 and vocabulary.tokens == tuple(TOKENS)


@pytest.mark.parametrize("text", ["", "a", "the cab.", "".join(TOKENS), "hate bath. " * 40])
def test_decode_of_encode_is_the_text(text):
    vocabulary = runtime.Vocabulary(TOKENS)
    assert vocabulary.decode(vocabulary.encode(text)) == text


def test_encode_names_the_first_position_no_token_starts():
    with pytest.raises(InputValueError, match=r"text position 5 \('x'\) starts no token"):
        runtime.Vocabulary(TOKENS).encode("the axe")


@pytest.mark.parametrize(
    ("ids", "error", "message"),
    [
        ([0, 11], InputValueError, r"token id 11 at position 1 is outside the vocabulary \(0 to 10\)"),
        ([-1], InputValueError, "token id -1 at position 0"),
        ([0.0, 1.0], DtypeError, "integer token ids"),
        ([[0, 1]], ShapeError, r"1-D\), got shape \(1, 2\)"),
    ],
)
def test_decode_refuses_what_is_not_ids_of_the_vocabulary(ids, error, message):
    with pytest.raises(error, match=message):
        runtime.Vocabulary(TOKENS).decode(ids)


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["a", "b", "a"], r"distinct strings: 'a' is id 0 and id 2"),
        (["a", ""], r"vocabulary\[1\] must be a string of 1 to"),
        (["a", 3], r"vocabulary\[1\] must be a string, got int"),
        ([], "at least one string"),
        ("abc", "must be a list of strings"),
        (["a", "\ud800"], r"vocabulary\[1\] is not valid Unicode"),
    ],
)
def test_a_vocabulary_is_distinct_non_empty_strings(tokens, message):
    with pytest.raises(InputValueError, match=message):
        runtime.Vocabulary(tokens)


def test_a_folder_exported_with_a_vocabulary_loads_with_it(char_folder):
    model = runtime.load(char_folder)
    assert model.vocabulary == runtime.Vocabulary(TOKENS)
    assert model.vocabulary.size == model.inputs[0].vocabulary == 11
    assert read_manifest(char_folder).vocabulary == tuple(TOKENS)
    assert read_manifest(char_folder).to_dict()["vocabulary"] == TOKENS
    # the text of a sampled generation: one token a step
    sampler = runtime.Sampler("temperature", temperature=1.0, seed=3)
    tokens, _ = model.generate({"token": [7], "category": [[0.0, 1.0, 0.0]]}, 9, sampler=sampler)
    assert tokens.shape == (9, 1)
    assert model.vocabulary.decode(tokens[:, 0]) == "".join(TOKENS[i] for i in tokens[:, 0].tolist())


def test_a_folder_without_a_vocabulary_has_none(char_folder):
    assert runtime.load(COMMITTED).vocabulary is None
    assert read_manifest(COMMITTED).to_dict().get("vocabulary") is None


def test_the_manifest_digest_covers_the_vocabulary(char_copy):
    pinned = manifest_digest(char_copy)
    rewrite_manifest_json(char_copy, lambda data: data.update(vocabulary=[*TOKENS[:-1], "!"]))
    with pytest.raises(IntegrityError, match="pinned"):
        runtime.load(char_copy, digest=pinned)
    assert runtime.load(char_copy).vocabulary.tokens[-1] == "!"  # unpinned, the edit is a valid vocabulary


def _drop_feedback(data):
    data["feedback"] = None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(vocabulary=TOKENS[:-1]), r"one string per token id: 11, got 10"),
        (lambda d: d.update(vocabulary=[*TOKENS, "z"]), r"one string per token id: 11, got 12"),
        (lambda d: d.update(vocabulary=[*TOKENS[:-1], "a"]), r"distinct strings: 'a' is id 0 and id 10"),
        (lambda d: d.update(vocabulary=[*TOKENS[:-1], 7]), r"manifest.vocabulary\[10\] must be a string"),
        (lambda d: d.update(vocabulary=[*TOKENS[:-1], ""]), r"manifest.vocabulary\[10\] must be a string of 1"),
        (lambda d: d.update(vocabulary="abcdefghijk"), "must be a list of strings"),
        (lambda d: d.update(vocabulary={"a": 0}), "must be a list of strings"),
        (_drop_feedback, "samples its next token .* this model has none"),
    ],
)
def test_a_hand_edited_vocabulary_is_refused_at_load(char_copy, change, message):
    rewrite_manifest_json(char_copy, change)
    with pytest.raises(ManifestError, match=message):
        runtime.load(char_copy)


def test_a_vocabulary_on_a_model_that_samples_nothing_is_refused_at_load(tmp_path):
    folder = shutil.copytree(COMMITTED, tmp_path / "sine")
    rewrite_manifest_json(folder, lambda d: d.update(vocabulary=["a"]))
    with pytest.raises(ManifestError, match="this model has none"):
        runtime.load(folder)

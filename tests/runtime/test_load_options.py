"""runtime.LoadOptions: what a model runs under, checked once, given as options= or as keywords, and
carrying the digest the folder was read with to whoever loads it again (a worker process)."""

from __future__ import annotations

import dataclasses
import json

import pytest

import runtime
from runtime import InputValueError, IntegrityError, LoadOptions

from ..conftest import COMMITTED


def test_options_or_keywords_give_the_same_model():
    by_options = runtime.load(COMMITTED, options=LoadOptions(max_steps=10, workers=1, run_timeout=5.0))
    by_keywords = runtime.load(COMMITTED, max_steps=10, workers=1, run_timeout=5.0)
    for model in (by_options, by_keywords):
        assert (model.max_steps, model.workers, model.run_timeout) == (10, 1, 5.0)
        with pytest.raises(InputValueError, match="steps must be between 1 and 10"):
            model.generate(0.5, 11)
    assert by_options.options == by_keywords.options


def test_the_model_carries_the_digest_it_was_read_with():
    model = runtime.load(COMMITTED)
    assert model.options.digest == model.manifest_digest and len(model.manifest_digest) == 64
    again = runtime.load(COMMITTED, options=model.options)  # what a worker does
    assert again.manifest_digest == model.manifest_digest


def test_a_folder_changed_after_the_first_read_is_refused_by_the_second(exported_copy):
    model = runtime.load(exported_copy)
    manifest = json.loads((exported_copy / "manifest.json").read_text())
    manifest["model"]["note"] = "changed after the driver read it"
    (exported_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError):
        runtime.load(exported_copy, options=model.options)
    runtime.load(exported_copy, options=dataclasses.replace(model.options, digest=None))  # unpinned: loads


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"threads": -1}, "threads must be a whole number"),
        ({"workers": 0}, "workers must be a whole number"),
        ({"max_steps": 0}, "max_steps must be a whole number"),
        ({"run_timeout": 0}, "run_timeout must be a number of seconds"),
        ({"allow_nonfinite": "yes"}, "allow_nonfinite must be True or False"),
        ({"digest": 5}, "digest must be a string"),
    ],
)
def test_bad_options_are_typed_errors(settings, message):
    with pytest.raises(InputValueError, match=message):
        LoadOptions(**settings)
    with pytest.raises(InputValueError, match=message):
        runtime.load(COMMITTED, **settings)


def test_options_and_keywords_together_or_unknown_keywords_are_refused():
    with pytest.raises(InputValueError, match="not both"):
        runtime.load(COMMITTED, options=LoadOptions(), threads=2)
    with pytest.raises(InputValueError, match=r"unknown settings \['thread'\]"):
        runtime.load(COMMITTED, thread=2)
    with pytest.raises(InputValueError, match="must be a runtime.LoadOptions"):
        runtime.load(COMMITTED, options={"threads": 1})

"""rnn.checkpoint: loading a trained folder's weights (weights_only) and config."""

from __future__ import annotations

import dataclasses
import pickle
import shutil

import pytest

from rnn.checkpoint import load_checkpoint
from rnn.config import CUSTOM, read_config
from runtime.errors import ArtifactError


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_weights_that_would_run_code_when_loaded_are_refused(tmp_path, trained_folder):
    folder = tmp_path / "m"
    shutil.copytree(trained_folder, folder)
    victim = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(victim), "w"))

    with open(folder / "weights.pt", "wb") as handle:
        pickle.dump({"w1": Exploit()}, handle)
    with pytest.raises(ArtifactError, match="cannot be loaded as weights"):
        load_checkpoint(folder)
    assert not victim.exists(), "loading must never execute code from the file"


@pytest.mark.parametrize(
    "factory, class_name, said",
    [
        ("tests.user_modules:make_two_state", "TwoStateLeaky", "(factory 'tests.user_modules:make_two_state' in "),
        (None, "TwoStateLeaky", "(class 'TwoStateLeaky'; config.json names no factory)"),
        (None, None, "(config.json names no factory)"),
    ],
)
def test_a_users_module_without_a_factory_argument_names_what_config_json_says(
    tmp_path, trained_folder, factory, class_name, said
):
    folder = tmp_path / "m"
    shutil.copytree(trained_folder, folder)
    config = read_config(folder)
    model = dataclasses.replace(config.model, kind=CUSTOM, factory=factory, class_name=class_name)
    dataclasses.replace(config, model=model).write(folder)
    with pytest.raises(ArtifactError) as raised:
        load_checkpoint(folder)
    message = str(raised.value)
    assert said in message and "None" not in message, message
    assert message.endswith("pass its factory explicitly (rnn verify --factory package.module:function)")

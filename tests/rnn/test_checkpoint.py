"""rnn.checkpoint: loading a trained folder's weights (weights_only) and config."""

from __future__ import annotations

import pickle
import shutil

import pytest

from rnn.checkpoint import load_checkpoint
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

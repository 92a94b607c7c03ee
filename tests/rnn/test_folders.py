"""rnn.folders: a folder written as a whole, through a hidden staging folder swapped into place."""

from __future__ import annotations

import shutil

from rnn.config import TrainConfig
from rnn.train import train_folder

from ..conftest import kill_inside


def test_sigkill_while_saving_a_training_run_leaves_the_old_folder(tmp_path, trained_folder):
    folder = tmp_path / "m"
    shutil.copytree(trained_folder, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    call = f"m.train_folder(m.TrainConfig(seed=9, epochs=3), {str(folder)!r})"
    kill_inside("rnn.train", "save_checkpoint", call, tmp_path / "saving")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".m.tmp-")]
    assert stale, "the killed run's staging folder is there, hidden"
    train_folder(TrainConfig(seed=9, epochs=3), folder)  # the next write clears it away
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.tmp-")]

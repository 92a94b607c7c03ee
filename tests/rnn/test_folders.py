"""rnn.folders: a folder written as a whole, through a hidden staging folder swapped into place."""

from __future__ import annotations

import errno
import shutil
import stat

import pytest

from rnn.config import TrainConfig
from rnn.folders import _umask, atomic_path, write_text_atomically
from rnn.train import train_folder
from runtime.errors import ArtifactError

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


def _temporaries(folder):
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name]


def test_atomic_path_replaces_the_file_whole_or_not_at_all(tmp_path):
    target = tmp_path / "picture.png"
    target.write_bytes(b"old")
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.suffix == ".png" and temporary.name.startswith(".")
        assert target.read_bytes() == b"old", "nothing changes until the block ends"
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new" and not _temporaries(tmp_path)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask(), "an ordinary file, not mkstemp's 0600"
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"half of a pict")
            raise OSError(errno.ENOSPC, "disk full")
    assert target.read_bytes() == b"new" and not _temporaries(tmp_path)


def test_atomic_path_replaces_a_symlink_never_writing_through_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "generate.csv").symlink_to(victim)
    write_text_atomically(tmp_path / "out" / "generate.csv", "step,y\n")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "out" / "generate.csv").is_symlink()


def test_atomic_path_into_a_folder_that_cannot_be_written_is_an_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="cannot write"):
        write_text_atomically(tmp_path / "missing" / "bench.json", "{}")

"""A signature covers the exact set of files under ``test_data/`` (issue 23 point 8): a file added
there after signing fails verification (library and CLI); the runtime, which never reads a file its
manifest does not list, loads an unsigned folder with such a file as before."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("model_signing", reason="the sign extra (model-signing) is not installed")

from click.testing import CliRunner  # noqa: E402

import runtime  # noqa: E402
from runtime.errors import IntegrityError  # noqa: E402
from runtime.manifest import TEST_DATA_DIR, manifest_digest  # noqa: E402
from toolkit.cli import cli  # noqa: E402
from toolkit.signing import load_signed, sign_folder, verify_signature  # noqa: E402

from ..conftest import COMMITTED  # noqa: E402
from .test_signing import key_pair  # noqa: E402


@pytest.fixture()
def signed(tmp_path):
    folder = tmp_path / "signed"
    shutil.copytree(COMMITTED, folder)
    private, public = key_pair(tmp_path)
    sign_folder(folder, private)
    return folder, public


@pytest.mark.parametrize("name", ["extra.npz", "deeper/extra.npy"])
def test_a_file_added_under_test_data_fails_verification(signed, name):
    folder, public = signed
    assert verify_signature(folder, public_key=public) == manifest_digest(folder)
    added = folder / TEST_DATA_DIR / name
    added.parent.mkdir(parents=True, exist_ok=True)
    np.save(added, np.zeros(3, np.float32)) if name.endswith(".npy") else added.write_bytes(b"PK\x05\x06" + bytes(18))
    with pytest.raises(IntegrityError, match=f"{TEST_DATA_DIR}/{name}"):
        verify_signature(folder, public_key=public)
    with pytest.raises(IntegrityError, match="not covered by the signature"):
        load_signed(folder, public_key=public)
    added.unlink()  # the exact signed set again: it verifies
    assert verify_signature(folder, public_key=public) == manifest_digest(folder)


def test_the_cli_says_so_in_one_line(signed):
    folder, public = signed
    (folder / TEST_DATA_DIR / "extra.csv").write_text("1,2,3\n")
    runner = CliRunner()
    checked = runner.invoke(cli, ["verify-signature", str(folder), "--public-key", str(public)])
    assert checked.exit_code == 2, checked.output
    assert checked.stderr.count("\n") == 1 and "test_data/extra.csv" in checked.stderr
    assert "not covered by the signature" in checked.stderr and checked.stdout == ""
    ran = runner.invoke(cli, ["generate", str(folder), "--steps", "3", "--public-key", str(public)])
    assert ran.exit_code == 2 and "test_data/extra.csv" in ran.stderr and ran.stdout == ""


def test_a_removed_test_data_file_fails_too(signed):
    folder, public = signed
    first = next(p for p in sorted((folder / TEST_DATA_DIR).rglob("*")) if p.is_file())
    first.unlink()
    with pytest.raises(IntegrityError, match="Missing files"):
        verify_signature(folder, public_key=public)


def test_the_runtime_ignores_unlisted_test_data_of_an_unsigned_folder(tmp_path):
    """runtime.load reads only the files the manifest lists (and checks their hashes): an extra file
    under test_data/ is neither read nor refused, and the model runs the same."""
    folder = tmp_path / "unsigned"
    shutil.copytree(COMMITTED, folder)
    (folder / TEST_DATA_DIR / "extra.npz").write_bytes(b"not read")
    ys, _ = runtime.load(folder).generate(0.5, 7)
    np.testing.assert_array_equal(ys, runtime.load(COMMITTED).generate(0.5, 7)[0])

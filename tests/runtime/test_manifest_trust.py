"""Trusting manifest.json: pinning a folder by its manifest digest (read once, hashed, parsed), and
hostile manifests (NaN and huge initial states, deep nesting, huge integers, 18,000 inputs) that
must be one-line ManifestErrors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import runtime
import runtime.manifest as manifest_module
from runtime.errors import ArtifactError, InputValueError, IntegrityError, ManifestError
from runtime.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, manifest_digest, read_manifest, write_manifest

from .hostile import copy_folder, rewrite_manifest_json


@pytest.fixture()
def folder(tmp_path, exported_folder):
    return copy_folder(exported_folder, tmp_path / "model")


def set_initial(folder, value):
    rewrite_manifest_json(folder, lambda data: data["state"][0].update(initial=[value] * 6))


# ---- pinning ------------------------------------------------------------------------------


def test_the_manifest_digest_is_the_sha256_of_its_bytes_and_a_pinned_load_keeps_it(folder):
    digest = manifest_digest(folder)
    assert digest == hashlib.sha256((folder / MANIFEST_NAME).read_bytes()).hexdigest()
    assert runtime.manifest_digest is manifest_digest
    model = runtime.load(folder, digest=digest)
    assert model.manifest_digest == digest
    assert runtime.load(folder, digest=digest.upper()).manifest_digest == digest  # hex in either case
    assert runtime.load(folder).manifest_digest == digest  # unpinned loads report it too


def test_a_changed_initial_state_is_refused_when_pinned(folder):
    digest = manifest_digest(folder)
    manifest = read_manifest(folder)
    state = manifest.state[0]
    changed = type(state)(**{**state.__dict__, "initial": (0.9,) * 6})
    write_manifest(folder, Manifest(**{**manifest.__dict__, "state": (changed,)}))  # a valid manifest
    assert runtime.load(folder).initial_state(1)[0][0, 0] == np.float32(0.9)  # unpinned: it loads
    with pytest.raises(IntegrityError) as caught:
        runtime.load(folder, digest=digest)
    message = str(caught.value)
    assert digest[:12] in message and manifest_digest(folder)[:12] in message and "\n" not in message


def test_a_nan_initial_state_is_refused_pinned_or_not(folder):
    digest = manifest_digest(folder)
    set_initial(folder, float("nan"))  # json.dumps writes NaN
    assert "NaN" in (folder / MANIFEST_NAME).read_text()
    with pytest.raises(IntegrityError, match=digest[:12]):
        runtime.load(folder, digest=digest)
    with pytest.raises(ManifestError, match="NaN"):
        runtime.load(folder, digest=manifest_digest(folder))  # pinned to the NaN manifest itself
    with pytest.raises(ManifestError):
        runtime.load(folder)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), 1e39, -3.5e38, 10**400, 1e400])
def test_an_initial_state_beyond_float32_is_a_manifest_error(folder, value):
    set_initial(folder, value)
    with pytest.raises(ManifestError) as caught:
        runtime.load(folder)
    assert "\n" not in str(caught.value)


def test_a_float32_initial_state_at_the_edge_still_loads(folder):
    set_initial(folder, 3.0e38)
    assert runtime.load(folder).initial_state(1)[0][0, 0] == np.float32(3.0e38)


@pytest.mark.parametrize("digest", ["abc", 12, b"0" * 64, "g" * 64, None])
def test_a_digest_argument_that_is_not_64_hex_digits_is_refused(folder, digest):
    if digest is None:
        assert runtime.load(folder, digest=None).manifest_digest == manifest_digest(folder)
        return
    with pytest.raises(InputValueError, match="64 hex digits"):
        runtime.load(folder, digest=digest)


def test_the_manifest_is_read_once_what_is_parsed_is_what_was_hashed(folder, monkeypatch):
    """A manifest swapped right after it was read (the time-of-check gap of hashing a file, then
    reading it again to parse it) changes nothing: load parses the bytes it hashed."""
    digest = manifest_digest(folder)
    real = manifest_module.read_manifest_bytes
    reads = []

    def read_then_swap(path):
        raw = real(path)
        reads.append(path)
        set_initial(folder, 0.9)  # the file on disk changes once its bytes were read
        return raw

    monkeypatch.setattr(manifest_module, "read_manifest_bytes", read_then_swap)
    model = runtime.load(folder, digest=digest)
    assert len(reads) == 1
    assert model.manifest_digest == digest
    assert model.initial_state(1)[0][0, 0] == 0.0  # the hashed manifest's initial state, not the swapped one
    monkeypatch.setattr(manifest_module, "read_manifest_bytes", real)
    with pytest.raises(IntegrityError):
        runtime.load(folder, digest=digest)  # the swapped file no longer matches the pin


# ---- hostile manifests --------------------------------------------------------------------


def write_raw(folder, text):
    (folder / MANIFEST_NAME).write_text(text, encoding="utf-8")


def expect_one_line_manifest_error(folder, match=None):
    for call in (read_manifest, runtime.load, manifest_digest):
        if call is manifest_digest:  # the digest of any bytes is fine; parsing them is not
            call(folder)
            continue
        with pytest.raises(ManifestError, match=match) as caught:
            call(folder)
        assert "\n" not in str(caught.value)


def test_a_manifest_nested_100000_deep_is_a_manifest_error(folder):
    write_raw(folder, "[" * 100_000 + "]" * 100_000)
    expect_one_line_manifest_error(folder, "too deeply")


def test_a_manifest_nested_in_an_object_value_is_a_manifest_error(folder):
    data = json.loads((folder / MANIFEST_NAME).read_text())
    text = json.dumps(data)
    write_raw(folder, text[:-1] + ', "extra": ' + "[" * 100_000 + "]" * 100_000 + "}")
    expect_one_line_manifest_error(folder, "too deeply")


def test_a_5000_digit_integer_is_a_manifest_error(folder):
    text = (folder / MANIFEST_NAME).read_text()
    data = json.loads(text)
    write_raw(folder, text.replace(f'"opset": {data["opset"]}', '"opset": ' + "9" * 5000))
    expect_one_line_manifest_error(folder, "digits")


def test_a_huge_integer_initial_state_is_a_manifest_error(folder):
    text = (folder / MANIFEST_NAME).read_text()
    write_raw(folder, text.replace('"initial": [', '"initial": [' + "1" + "0" * 400 + ",", 1).replace("0.0,", "", 1))
    data = json.loads((folder / MANIFEST_NAME).read_text())
    assert data["state"][0]["initial"][0] == 10**400 and len(data["state"][0]["initial"]) == 6
    expect_one_line_manifest_error(folder, "finite float32")


@pytest.mark.parametrize("size", [10**400, 2**31, 0])
def test_a_tensor_size_out_of_range_is_a_manifest_error(folder, size):
    rewrite_manifest_json(folder, lambda data: data["inputs"][0].update(shape=["batch", size]))
    expect_one_line_manifest_error(folder, "shape")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_anywhere_are_manifest_errors(folder, constant):
    text = (folder / MANIFEST_NAME).read_text()
    write_raw(folder, text[: text.rindex("}")] + f', "extra": {constant}}}')
    expect_one_line_manifest_error(folder, "not a JSON number")


def test_a_manifest_of_18000_inputs_is_read_in_linear_time_and_refused_by_load(folder):
    """The duplicate-name check is one set look-up a name (it was list.count: 18,000**2 steps)."""
    data = json.loads((folder / MANIFEST_NAME).read_text())
    data["inputs"] = [{"name": f"i{n}", "shape": ["batch", 1], "dtype": "float32"} for n in range(18_000)]
    data["format_version"] = 2  # version 1 has one input
    text = json.dumps(data, separators=(",", ":"))
    assert len(text) < MAX_MANIFEST_BYTES
    write_raw(folder, text)
    assert len(read_manifest(folder).inputs) == 18_000
    with pytest.raises(ArtifactError, match="input"):
        runtime.load(folder)
    data["inputs"][17_999]["name"] = "i5"
    write_raw(folder, json.dumps(data, separators=(",", ":")))
    with pytest.raises(ManifestError, match="repeated: \\['i5'\\]"):
        read_manifest(folder)


def test_a_manifest_over_the_size_limit_is_refused_without_reading_it_all(folder):
    write_raw(folder, " " * (MAX_MANIFEST_BYTES + 1))
    with pytest.raises(ManifestError, match="more than"):
        read_manifest(folder)


def test_write_manifest_refuses_a_nan_it_could_not_read_back(folder, tmp_path):
    manifest = read_manifest(folder)
    state = manifest.state[0]
    changed = type(state)(**{**state.__dict__, "initial": (float("nan"),) * 6})
    with pytest.raises(ManifestError, match="NaN"):
        write_manifest(tmp_path, Manifest(**{**manifest.__dict__, "state": (changed,)}))


def test_a_manifest_that_is_a_link_to_a_file_outside_is_refused_unread(folder, tmp_path):
    # A link could lead to any JSON file of the machine, and a manifest error quotes the fields it
    # finds wrong: the manifest must be a regular file of the folder.
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps({"format": "secret value from outside"}))
    (folder / MANIFEST_NAME).unlink()
    (folder / MANIFEST_NAME).symlink_to(outside)
    for read in (runtime.load, read_manifest, manifest_digest):
        with pytest.raises(IntegrityError, match="symbolic link") as caught:
            read(folder)
        assert "secret value" not in str(caught.value)

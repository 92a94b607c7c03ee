"""runtime.manifest: the schema's round trip and validation, torch-free."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.errors import ArtifactError, IntegrityError, ManifestError, VersionError
from runtime.manifest import (
    CLASSIC_FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    check_files,
    read_manifest,
    write_manifest,
)

from ..conftest import COMMITTED


def test_exported_manifest_round_trips(exported_folder):
    manifest = read_manifest(exported_folder)
    assert manifest.format_version == CLASSIC_FORMAT_VERSION  # a classic model is still written as version 1
    assert [t.name for t in manifest.inputs] == ["x"] and [t.name for t in manifest.outputs] == ["y"]
    (state,) = manifest.state
    assert (state.name, state.output, state.shape, state.initial) == ("h", "h_out", ("batch", 6), (0.0,) * 6)
    assert {f.role for f in manifest.files} == {
        "step_onnx",
        "step_torchscript",
        "weights",
        "config",
        "sequence_rnn",
        "sequence_loop",
        "rollout_rnn",
        "rollout_loop",
    }
    assert {"torch", "onnx", "onnxruntime", "toolkit"} <= set(manifest.versions)
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    check_files(exported_folder, manifest)


def _document(folder):
    return json.loads((folder / MANIFEST_NAME).read_text())


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda d: d.pop("files"), ManifestError, "missing the field 'files'"),
        (lambda d: d.update(format_version=99), VersionError, "format_version 99 is not supported"),
        (lambda d: d.update(format="other"), ManifestError, "'format' must be"),
        (lambda d: d["inputs"][0].update(shape=[3, 1]), ManifestError, "shape must be"),
        (lambda d: d["inputs"][0].update(dtype="float64"), ManifestError, "dtype must be"),
        (lambda d: d["state"][0].update(initial=[0.0]), ManifestError, "initial must be 6 numbers"),
        (lambda d: d["files"][0].update(name="../escape.onnx"), ManifestError, "plain file name"),
        (lambda d: d["files"][0].update(name="/etc/passwd"), ManifestError, "plain file name"),
        (lambda d: d["files"][0].update(sha256="xyz"), ManifestError, "64 lowercase hex"),
        (lambda d: d["outputs"][0].update(name="x"), ManifestError, "names must be unique"),
        (lambda d: d.update(opset="17"), ManifestError, "opset must be int"),
    ],
)
def test_invalid_manifests_are_refused(exported_copy, change, error, message):
    document = _document(exported_copy)
    change(document)
    (exported_copy / MANIFEST_NAME).write_text(json.dumps(document))
    with pytest.raises(error, match=message):
        read_manifest(exported_copy)


@pytest.mark.parametrize(
    "content, message",
    [(b"{not json", "not valid JSON"), (b"\xff\xfe\x00", "not UTF-8"), (b"[1, 2]", "must be a JSON object")],
)
def test_unreadable_manifests_are_refused(exported_copy, content, message):
    (exported_copy / MANIFEST_NAME).write_bytes(content)
    with pytest.raises(ManifestError, match=message):
        read_manifest(exported_copy)


def test_huge_manifest_is_refused_without_parsing(exported_copy):
    (exported_copy / MANIFEST_NAME).write_bytes(b" " * (2 << 20))
    with pytest.raises(ManifestError, match="more than"):
        read_manifest(exported_copy)


def test_missing_folder_and_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        read_manifest(tmp_path / "nowhere")
    with pytest.raises(ArtifactError, match="has no manifest.json"):
        read_manifest(tmp_path)


def test_tampered_truncated_and_missing_files(exported_copy):
    manifest = read_manifest(exported_copy)
    onnx_path = exported_copy / "step.onnx"
    original = onnx_path.read_bytes()
    onnx_path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # same size, one bit flipped
    with pytest.raises(IntegrityError, match="sha256"):
        check_files(exported_copy, manifest)
    onnx_path.write_bytes(original[:100])
    with pytest.raises(IntegrityError, match="truncated"):
        check_files(exported_copy, manifest)
    onnx_path.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        check_files(exported_copy, manifest)


def test_a_listed_file_that_links_outside_is_refused(exported_copy, tmp_path):
    outside = tmp_path / "outside.onnx"
    (exported_copy / "step.onnx").rename(outside)
    (exported_copy / "step.onnx").symlink_to(outside)
    with pytest.raises(IntegrityError, match="regular file inside"):
        check_files(exported_copy, read_manifest(exported_copy))


def test_write_then_read_is_identity(tmp_path, exported_folder):
    manifest = read_manifest(exported_folder)
    changed = dataclasses.replace(manifest, opset=18)
    write_manifest(tmp_path, changed)
    assert read_manifest(tmp_path) == changed


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 70), st.floats(allow_nan=False), st.text(max_size=6)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=1000, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    path=st.lists(st.one_of(st.text(max_size=8), st.integers(0, 3)), min_size=1, max_size=3),
    value=json_values,
    delete=st.booleans(),
)
def test_any_manifest_mutation_is_read_or_refused_with_a_manifest_error(path, value, delete):
    document = json.loads((COMMITTED / "manifest.json").read_text())
    _mutate(document, path, value, delete)
    try:
        manifest = Manifest.from_dict(document)
    except ManifestError:
        return
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest


def _pick(node, step):
    """The key (dict) or index (list) that ``step`` selects in ``node``; None for a leaf."""
    if isinstance(node, dict):
        if isinstance(step, str) and step in node or not node:
            return step if isinstance(step, str) else "extra"
        return sorted(node)[step % len(node)] if isinstance(step, int) else step
    if isinstance(node, list) and node:
        return step % len(node) if isinstance(step, int) else 0
    return None


def _mutate(document, path, value, delete):
    """Walks ``path`` down the document and replaces (or deletes) what it ends on."""
    node = document
    for step in path[:-1]:
        key = _pick(node, step)
        if key is None or not isinstance(node, (dict, list)) or (isinstance(node, dict) and key not in node):
            break
        node = node[key]
    key = _pick(node, path[-1])
    if key is None:
        return
    if delete:
        node.pop(key, None) if isinstance(node, dict) else node.pop(key)
    else:
        node[key] = value

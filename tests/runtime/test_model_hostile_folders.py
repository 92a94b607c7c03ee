"""runtime.model on hostile artifact folders: external data outside the manifest, links leading
outside, truncated, garbage and swapped model files."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import external_data_helper

import runtime
from runtime.errors import ArtifactError, IntegrityError
from runtime.manifest import Manifest, file_entry, read_manifest, write_manifest


def rehash(folder, extra=()):
    """Rewrites the manifest with fresh hashes of the listed files plus ``extra`` (name, role)."""
    manifest = read_manifest(folder)
    files = [file_entry(folder, f.name, f.role) for f in manifest.files]
    files += [file_entry(folder, name, role) for name, role in extra]
    write_manifest(folder, Manifest(**{**manifest.__dict__, "files": tuple(files)}))


def to_external(folder, location="step.data"):
    """Moves step.onnx's weights into an external data file named ``location``."""
    model = onnx.load(str(folder / "step.onnx"))
    external_data_helper.convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location="step.data", size_threshold=0
    )
    onnx.save(model, str(folder / "step.onnx"))
    if location != "step.data":
        model = onnx.load(str(folder / "step.onnx"), load_external_data=False)
        for tensor in external_data_helper._get_all_tensors(model):
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(model, str(folder / "step.onnx"))


def test_external_data_listed_in_the_manifest_loads(exported_copy):
    to_external(exported_copy)
    rehash(exported_copy, extra=[("step.data", "external_data")])
    model = runtime.load(exported_copy)
    assert model.step(0.5)[0].shape == (1, 1)


@pytest.mark.parametrize("location", ["/etc/passwd", "../outside.data", "sub/step.data", "unlisted.data"])
def test_external_data_outside_the_manifest_is_refused(exported_copy, location):
    to_external(exported_copy, location)
    (exported_copy / "step.data").rename(exported_copy / "unlisted.data")
    (exported_copy.parent / "outside.data").write_bytes((exported_copy / "unlisted.data").read_bytes())
    rehash(exported_copy)
    with pytest.raises(IntegrityError, match="not a file listed"):
        runtime.load(exported_copy)


def test_external_data_behind_a_symlink_leading_outside_is_refused(exported_copy, tmp_path):
    to_external(exported_copy)
    outside = tmp_path / "elsewhere.data"
    (exported_copy / "step.data").rename(outside)
    (exported_copy / "step.data").symlink_to(outside)
    rehash(exported_copy, extra=[("step.data", "external_data")])
    with pytest.raises(IntegrityError, match="regular file inside"):
        runtime.load(exported_copy)


@pytest.mark.parametrize("keep", [0.99, 0.5, 0.1])
def test_a_truncated_onnx_file_with_a_matching_manifest_is_refused(exported_copy, keep):
    # Without re-hashing, truncation is an IntegrityError (test_manifest). Re-hashed, the file
    # must still not load. (A cut exactly at the end of a trailing metadata field leaves a valid,
    # smaller protobuf; no check can tell it from a model written that way.)
    data = (exported_copy / "step.onnx").read_bytes()
    (exported_copy / "step.onnx").write_bytes(data[: int(len(data) * keep)])
    rehash(exported_copy)
    with pytest.raises(ArtifactError):
        runtime.load(exported_copy)


def test_garbage_in_place_of_a_model_is_refused(exported_copy):
    (exported_copy / "rollout_rnn.onnx").write_bytes(os.urandom(700))
    rehash(exported_copy)
    model = runtime.load(exported_copy)  # the step model is fine; the fused one fails when first used
    with pytest.raises(ArtifactError):
        model.generate(0.5, 100, form="rollout_rnn")
    assert model.generate(0.5, 100, form="step")[0].shape == (100, 1, 1)


def test_a_file_swapped_after_loading_is_refused_when_first_used(exported_copy, exported_folder):
    model = runtime.load(exported_copy)
    (exported_copy / "rollout_loop.onnx").write_bytes((exported_copy / "rollout_rnn.onnx").read_bytes())
    with pytest.raises(IntegrityError, match="changed after it was checked"):
        model.generate(np.zeros((64, 1), np.float32), 100, form="rollout_loop")

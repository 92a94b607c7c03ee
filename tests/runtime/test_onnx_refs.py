"""runtime.onnx_refs: the external data files an ONNX model refers to, found without the onnx package."""

from __future__ import annotations

import onnx
import pytest
from onnx import external_data_helper

from runtime.errors import ArtifactError
from runtime.onnx_refs import external_data_locations


def test_the_walker_finds_external_data_in_subgraphs_too(exported_folder):
    plain = (exported_folder / "rollout_loop.onnx").read_bytes()
    assert external_data_locations(plain) == []
    model = onnx.load(str(exported_folder / "rollout_loop.onnx"))
    external_data_helper.convert_model_to_external_data(model, location="loop.data", size_threshold=0)
    found = external_data_locations(model.SerializeToString())
    assert found and set(found) == {"loop.data"}


@pytest.mark.parametrize("data", [b"\xff" * 40, b"\x0a\x80", b"\x3a\x05ab"])
def test_bytes_that_are_not_an_onnx_model_are_an_artifact_error(data):
    with pytest.raises(ArtifactError, match="not a valid ONNX file"):
        external_data_locations(data, "bad.onnx")

"""export.onnx_export: the step.onnx graph, its names, symbolic batch, opset and metadata."""

from __future__ import annotations

import onnx


def test_onnx_graph_has_a_symbolic_batch_and_the_contract_names(exported_folder):
    model = onnx.load(str(exported_folder / "step.onnx"))
    assert [i.name for i in model.graph.input] == ["x", "h"]
    assert [o.name for o in model.graph.output] == ["y", "h_out"]
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.opset_import[0].version == 17
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["model_kind"] == "elman" and metadata["hidden_size"] == "6"
    assert metadata["state_names"] == "h" and "toolkit_version" in metadata
    onnx.checker.check_model(model, full_check=True)


def test_each_exporter_has_its_opset_and_dynamo_refuses_older_ones():
    import pytest

    from export.onnx_export import DYNAMO_MIN_OPSET, OPSET, resolve_opset
    from runtime.errors import InputValueError

    assert resolve_opset("torchscript", None) == OPSET == 17
    assert resolve_opset("dynamo", None) == DYNAMO_MIN_OPSET == 18
    assert resolve_opset("torchscript", 15) == 15 and resolve_opset("dynamo", 19) == 19
    with pytest.raises(InputValueError, match="opset 15 or later, got opset 14"):
        resolve_opset("torchscript", 14)  # the fused loops slice shapes with Shape(start, end)
    with pytest.raises(InputValueError, match="opset 18 or later, got opset 17"):
        resolve_opset("dynamo", 17)
    with pytest.raises(InputValueError, match="exporter must be one of"):
        resolve_opset("tracing", None)

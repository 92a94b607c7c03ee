"""export_module beyond x -> y: several named inputs, token ids, logits, states of any rank,
batch-first layout and sampled feedback, recorded in config.json and a format 2 manifest."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export import export_module
from export.custom import custom_signature
from export.test_data import read_test_data
from rnn.config import read_config
from runtime.errors import ExportError, InputValueError
from runtime.manifest import (
    CLASSIC_FORMAT_VERSION,
    FORMAT_VERSION,
    SAMPLE,
    TEST_DATA_DIR,
    Feedback,
    read_manifest,
)

from ..user_modules import (
    CHAR_GRU_SIGNATURE,
    MAKE_CHAR_GRU,
    TWO_INPUTS_SIGNATURE,
    TwoStateLeaky,
    make_char_gru,
    make_two_inputs,
)


def _session(folder):
    return ort.InferenceSession(str(folder / "step.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_token_model_with_a_layered_state_exports_as_format_2(tmp_path, exporter):
    module = make_char_gru()
    folder = export_module(module, tmp_path / "char", exporter=exporter, factory=MAKE_CHAR_GRU, **CHAR_GRU_SIGNATURE)
    manifest = read_manifest(folder)
    assert manifest.format_version == FORMAT_VERSION and not manifest.fits_version_1
    token, category = manifest.inputs
    assert (token.dtype, token.shape, token.vocabulary, token.role) == ("int64", ("batch",), 11, "tokens")
    assert category.shape == ("batch", 3) and category.role is None
    assert manifest.outputs[0].is_logits and manifest.outputs[0].shape == ("batch", 11)
    (h,) = manifest.state
    assert h.shape == (2, "batch", 7) and h.batch_axis == 1 and h.initial == (0.0,) * 14 and h.output == "h_out"
    assert manifest.feedback == Feedback("logits", "token", SAMPLE)
    # the step model runs at batch sizes other than the export example, tokens across the vocabulary
    session = _session(folder)
    declared = {i.name: (i.shape, i.type) for i in session.get_inputs()}
    assert declared == {
        "token": (["batch"], "tensor(int64)"),
        "category": (["batch", 3], "tensor(float)"),
        "h": ([2, "batch", 7], "tensor(float)"),
    }
    rng = np.random.default_rng(0)
    for batch in (1, 5, 11):
        tokens = rng.permutation(11)[:batch].astype(np.int64)
        category = rng.uniform(-1, 1, (batch, 3)).astype(np.float32)
        state = rng.uniform(-1, 1, (2, batch, 7)).astype(np.float32)
        logits, h_out = session.run(None, {"token": tokens, "category": category, "h": state})
        with torch.no_grad():
            want_logits, want_h = module(*(torch.from_numpy(a) for a in (tokens, category, state)))
        np.testing.assert_allclose(logits, want_logits.numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(h_out, want_h.numpy(), atol=1e-5, rtol=0)
    # config.json keeps the signature, so a re-export or a verification rebuilds the same contract
    assert read_config(folder).model.signature.inputs == manifest.inputs
    # self-check data: token ids as int64, the state with its batch axis second
    inputs, outputs = read_test_data(folder / TEST_DATA_DIR / "step" / "test_data_set_0")
    assert inputs["token"].dtype == np.int64 and inputs["h"].shape == (2, 3, 7)
    got = session.run(None, inputs)
    np.testing.assert_allclose(got[0], outputs["logits"], atol=1e-5, rtol=0)


def test_two_inputs_with_identity_feedback_and_batch_first(tmp_path):
    folder = export_module(
        make_two_inputs(),
        tmp_path / "two",
        layout="batch_first",
        factory="tests.user_modules:make_two_inputs",
        **TWO_INPUTS_SIGNATURE,
    )
    manifest = read_manifest(folder)
    assert manifest.layout == "batch_first"
    assert manifest.feedback == Feedback("next_value", "value", "identity")
    assert [t.name for t in manifest.inputs] == ["value", "day"] and manifest.state[1].initial == (0.1,) * 6
    document = json.loads((folder / "manifest.json").read_text())
    assert document["format_version"] == 2 and document["layout"] == "batch_first"


def test_the_classic_signature_is_still_written_as_format_1(tmp_path):
    module = TwoStateLeaky()
    folder = export_module(
        module, tmp_path / "c", inputs=[("x", 1)], outputs=[("y", 1)], states=[("fast", 4), ("slow", 4)]
    )
    assert read_manifest(folder).format_version == CLASSIC_FORMAT_VERSION


def test_the_protocol_check_calls_forward_with_every_named_tensor_at_its_declared_shape(tmp_path):
    signature = {**CHAR_GRU_SIGNATURE, "states": [{"name": "h", "shape": ["batch", 2, 7]}]}  # batch axis misplaced
    with pytest.raises(
        ExportError, match=r"forward\(token, category, h\) failed: RuntimeError: Expected hidden size \(2, 3, 7\)"
    ):
        export_module(make_char_gru(), tmp_path / "bad", **signature)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.update(inputs=[{"name": "token", "vocabulary": 0}]), "vocabulary must be a positive integer"),
        (lambda s: s.update(inputs=[{"name": "1x", "size": 2}]), "identifier"),
        (lambda s: s.update(outputs=[{"name": "h", "vocabulary": 11}]), "must be distinct"),
        (lambda s: s.update(states=[{"name": "h", "shape": [2, 7]}]), "'batch' once"),
        (lambda s: s.update(states=[{"name": "h", "shape": [2, "batch", 7], "initial": [0.0] * 3}]), "3 values"),
        (lambda s: s.update(feedback={"output": "logits", "input": "category"}), "feedback via sample needs"),
        (lambda s: s.update(inputs=[{"name": "tokens", "vocabulary": 11}, ("category", 3)]), "sampling forms"),
        (lambda s: s.update(layout="sideways"), "layout must be one of"),
    ],
)
def test_signature_mistakes_are_one_line_input_value_errors(change, message):
    signature = {**CHAR_GRU_SIGNATURE}
    change(signature)
    with pytest.raises(InputValueError, match=message):
        custom_signature(
            signature["inputs"],
            signature["outputs"],
            signature["states"],
            signature.get("layout", "time_first"),
            signature.get("feedback"),
        )


def test_sizes_and_inputs_cannot_be_mixed(tmp_path):
    with pytest.raises(InputValueError, match="not a mix"):
        export_module(make_char_gru(), tmp_path / "m", input_size=1, output_size=1, **CHAR_GRU_SIGNATURE)

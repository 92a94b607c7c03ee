"""runtime.model on hostile artifact folders: external data outside the manifest or changed on
disk after it was hashed, links leading outside, truncated, garbage and swapped model files."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, external_data_helper, helper

import runtime
import runtime.sessions as sessions_module
from runtime.errors import ArtifactError, IntegrityError

from .hostile import batch_mean_step, first_row_step, install, rehash, step_model


def identity(source, target):
    return helper.make_node("Identity", [source], [target])


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


def test_external_data_listed_in_the_manifest_loads(exported_copy, exported_folder):
    to_external(exported_copy)
    rehash(exported_copy, extra=[("step.data", "external_data")])
    model = runtime.load(exported_copy)
    expected = runtime.load(exported_folder).step(0.5)
    np.testing.assert_array_equal(model.step(0.5)[0], expected[0])


def test_onnxruntime_gets_the_external_bytes_that_were_hashed_never_the_file(
    exported_copy, exported_folder, monkeypatch
):
    """The external data file is overwritten on disk right after the runtime read and hashed it
    (the gap in which onnxruntime, given the model's path, would read it again): the session
    computes with the hashed bytes, held in memory."""
    to_external(exported_copy)
    rehash(exported_copy, extra=[("step.data", "external_data")])
    real = sessions_module.read_checked
    swapped = []

    def read_then_swap(folder, entry):
        data = real(folder, entry)
        if entry.name == "step.data":
            (exported_copy / "step.data").write_bytes(bytes(len(data)))  # all weights zero
            swapped.append(entry.name)
        return data

    monkeypatch.setattr(sessions_module, "read_checked", read_then_swap)
    model = runtime.load(exported_copy)
    assert swapped == ["step.data"]
    x = np.array([[0.5], [-0.3]], np.float32)
    y, (h,) = model.step(x)
    expected_y, (expected_h,) = runtime.load(exported_folder).step(x)
    assert np.any(h != 0)  # zero weights would give a zero state
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(h, expected_h)
    monkeypatch.setattr(sessions_module, "read_checked", real)
    with pytest.raises(IntegrityError):
        runtime.load(exported_copy)  # and the next load sees the change


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


# ---- the contract of inputs and outputs -------------------------------------------------------


@pytest.mark.parametrize(
    "model, match",
    [
        (batch_mean_step(h_out_shape=(1, 6)), "output 'h_out' as \\(1, 6\\) float"),
        (batch_mean_step(h_out_shape=("batch", 6)), "output 'h_out' as \\(1, 6\\)"),  # onnxruntime infers (1, 6)
        (step_model([identity("x", "y"), identity("h", "h_out")], y_type=TensorProto.DOUBLE), "double"),
        (step_model([identity("x", "y"), identity("h", "h_out")], y_shape=("batch", 1, 1)), "output 'y'"),
        (
            step_model(
                [helper.make_node("Concat", ["x", "x"], ["y"], axis=1), identity("h", "h_out")], y_shape=("batch", 2)
            ),
            "output 'y' as \\(batch, 2\\)",
        ),
        (step_model([identity("x", "y"), identity("h", "h_out")], y_shape=(4, 1)), "output 'y' as \\(4, 1\\)"),
        (step_model([identity("x", "y"), identity("h", "h_new")], output_names=("y", "h_new")), "outputs"),
    ],
    ids=["fixed-batch-1", "inferred-batch-1", "double", "rank-3", "size-2", "fixed-batch-4", "names"],
)
def test_a_step_model_that_declares_another_contract_is_refused_at_load(exported_copy, model, match):
    install(exported_copy, model)
    with pytest.raises(ArtifactError, match=match) as caught:
        runtime.load(exported_copy)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("form", ["rollout_rnn", "sequence_loop"])
def test_a_fused_form_that_declares_another_contract_is_refused_when_first_used(exported_copy, form):
    model = onnx.load(str(exported_copy / f"{form}.onnx"))
    model.graph.output[1].type.tensor_type.shape.dim[0].dim_value = 1  # h_out (1, 6), not (batch, 6)
    install(exported_copy, model, f"{form}.onnx")
    loaded = runtime.load(exported_copy)
    call = {
        "rollout_rnn": lambda f: loaded.generate(0.5, 10, form=f),
        "sequence_loop": lambda f: loaded.predict(np.zeros(10, np.float32), form=f),
    }[form]
    with pytest.raises(ArtifactError, match=f"form '{form}'.*output 'h_out' as \\(1, 6\\)"):
        call(form)
    assert form not in loaded.loaded_forms
    assert call("step")[0].shape[0] == 10  # the other forms still run


def test_a_step_model_that_returns_one_row_for_a_batch_is_refused_never_broadcast(exported_copy):
    """It declares (batch, 6) and returns (1, 6): every path that runs it must refuse the run,
    and a pool must not hand the first stream's row to every stream."""
    model = runtime.load(install(exported_copy, first_row_step()))
    np.testing.assert_array_equal(model.step(0.5)[1][0].shape, (1, 6))  # batch 1 is what it promised
    states = (np.arange(18, dtype=np.float32).reshape(3, 6),)
    for call in (
        lambda: model.step(np.zeros((3, 1), np.float32), states),  # bound buffers
        lambda: model.step(np.zeros((100, 1), np.float32)),  # session.run
        lambda: model.generate(np.zeros((3, 1), np.float32), 4, form="step"),
        lambda: model.bind(3).run(np.zeros((3, 1), np.float32)),
    ):
        with pytest.raises(ArtifactError, match="step.onnx") as caught:
            call()
        assert "\n" not in str(caught.value)
    pool = runtime.StreamPool(model)
    ids = [pool.open(state=(row,)) for row in states[0]]
    with pytest.raises(ArtifactError):
        pool.step(ids, np.zeros((3, 1), np.float32))
    for stream, row in zip(ids, states[0]):  # untouched: no row was broadcast into the others
        np.testing.assert_array_equal(pool.state(stream)[0], row)

"""verify_folder for modules beyond x -> y: every token id checked, the user's own named data,
identity feedback over two inputs, batch-first sequences, and sampled generation compared
token for token with eager PyTorch fed the same uniform draws."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from export import export_module, verify_folder
from runtime.errors import DataError, ShapeError
from runtime.manifest import MANIFEST_NAME, file_sha256

from ..user_modules import (
    CHAR_GRU_SIGNATURE,
    TWO_INPUTS_SIGNATURE,
    make_char_gru,
    make_two_inputs,
)


@pytest.fixture(scope="module")
def char_folder(tmp_path_factory):
    return export_module(make_char_gru(), tmp_path_factory.mktemp("char") / "model", **CHAR_GRU_SIGNATURE)


@pytest.fixture(scope="module")
def char_report(char_folder):
    """The char GRU's report at the verifier's own sizes, shared by the tests that only read it."""
    return verify_folder(char_folder, factory=make_char_gru, trust=True, write=False)


def shrink_cases(monkeypatch) -> None:
    """The random sequences and rollouts at small sizes, for tests of what fails where (not of the sizes)."""
    import export.verify_cases as cases

    monkeypatch.setattr(cases, "SEQUENCES_RANDOM", ((20, 3),))
    monkeypatch.setattr(cases, "ROLLOUT_BATCHES", (3,))


@pytest.fixture
def small_cases(monkeypatch):
    shrink_cases(monkeypatch)


def _checks(report, form="onnx"):
    return {c.check for c in report.comparisons if c.form == form}


def test_a_token_model_verifies_with_every_id_of_its_vocabulary(char_report):
    report = char_report
    assert report.passed, report.table()
    checks = _checks(report)
    assert {"every id of token (V=11), one step", "every id of token (V=11) b=11 T=1"} <= checks
    assert {c.form for c in report.comparisons} >= {"onnx", "torchscript"}
    assert {"step b=1", "step b=3", "step b=64", "sequence b=3 T=1000"} <= checks


def _with_changed_weight(source, target, file_name, shape, change):
    """A copy of the folder ``source`` whose ONNX file ``file_name`` has the initializer of ``shape``
    changed by ``change`` (in place on its values), the manifest re-hashed as a faulty exporter would
    leave it: a folder that loads, and computes something else."""
    target.mkdir()
    for path in source.iterdir():
        if path.is_file():
            (target / path.name).write_bytes(path.read_bytes())
    model = onnx.load(str(target / file_name))
    weights = [t for t in _initializers(model.graph) if numpy_helper.to_array(t).shape == shape]
    assert weights and all(
        numpy_helper.to_array(w).tobytes() == numpy_helper.to_array(weights[0]).tobytes() for w in weights
    )
    for weight in weights:  # the graph's, and the copies its Loop bodies hold (export.sampling)
        values = numpy_helper.to_array(weight).copy()
        change(values)
        weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(target / file_name))
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    for entry in manifest["files"]:
        if entry["name"] == file_name:
            entry["sha256"], entry["size"] = file_sha256(target / file_name), (target / file_name).stat().st_size
    (target / MANIFEST_NAME).write_text(json.dumps(manifest))
    return target


def _initializers(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    found = list(graph.initializer)
    for node in graph.node:
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                found += _initializers(sub)
    return found


def _zeroed_last_embedding_row(char_folder, tmp_path):
    """step.onnx with the last token's embedding row zeroed: wrong for id 10 only."""

    def zero(values):
        values[10] = 0.0

    return _with_changed_weight(char_folder, tmp_path / "broken", "step.onnx", (11, 5), zero)


def test_an_export_wrong_for_one_token_id_fails_the_every_id_checks(char_folder, tmp_path, small_cases):
    report = verify_folder(_zeroed_last_embedding_row(char_folder, tmp_path), factory=make_char_gru, write=False)
    failed = {c.check for c in report.comparisons if not c.passed and c.form == "onnx"}
    assert not report.passed
    assert {"every id of token (V=11), one step", "every id of token (V=11) b=11 T=1"} <= failed


def test_the_users_own_token_data_is_checked_and_recorded(char_folder, tmp_path, small_cases):
    rng = np.random.default_rng(3)
    path = tmp_path / "data.npz"
    np.savez(path, token=rng.integers(0, 11, (30, 2)), category=rng.uniform(-3, 3, (30, 2, 3)).astype(np.float32))
    report = verify_folder(char_folder, factory=make_char_gru, trust=True, write=False, inputs=path)
    assert report.passed, report.table()
    assert "user data b=2 T=30" in _checks(report)
    assert report.user_data["source"] == str(path) and report.user_data["shape"] == [30, 2]
    assert report.user_data["inputs"]["token"]["dtype"] == "int64"


@pytest.mark.parametrize(
    "data, error, message",
    [
        ({"token": np.array([1, 11]), "category": np.zeros((2, 3))}, DataError, "holds id 11 at"),
        ({"token": np.array([1, 2])}, ShapeError, "exactly the inputs"),
        ({"token": np.array([1.5, 2]), "category": np.zeros((2, 3))}, DataError, "integer token ids"),
        ({"token": np.array([1, 2]), "category": np.zeros((2, 4))}, ShapeError, "'category' must be"),
    ],
)
def test_unusable_user_data_is_refused_before_any_check(char_folder, data, error, message):
    with pytest.raises(error, match=message):
        verify_folder(char_folder, factory=make_char_gru, write=False, inputs=data)


def test_two_inputs_identity_feedback_batch_first(tmp_path, small_cases):
    folder = export_module(make_two_inputs(), tmp_path / "two", layout="batch_first", **TWO_INPUTS_SIGNATURE)
    data = {"value": np.sin(np.arange(40) / 4).reshape(1, 40, 1), "day": np.arange(40).reshape(1, 40) % 7}
    report = verify_folder(folder, factory=make_two_inputs, trust=True, write=False, inputs=data)
    assert report.passed, report.table()
    checks = _checks(report)
    assert {
        "rollout b=3 T=200",
        "user data b=1 T=40",
        "user data b=1 rollout T=200",
        "every id of day (V=7), one step",
    } <= checks


def test_sampled_generation_of_every_form_is_compared_token_for_token(char_report):
    report = char_report
    rows = {(c.form, c.check) for c in report.comparisons if c.output == "tokens"}
    for form in ("onnx", "torchscript", "rollout_greedy"):
        assert (form, "greedy b=3 T=200") in rows
    for check in (
        "temperature 0.8 b=3 T=200",
        "top-k 5 b=3 T=200",
        "top-p 0.9 b=3 T=200",
        "temperature 0.8 b=64 T=200",
    ):
        assert {("onnx", check), ("rollout_sample", check), ("torchscript", check)} <= rows
    assert not report.partings
    assert not report.horizons and "compared token for token" in report.horizon_skipped  # no closed loop of values


def _tampered_sampling_form(char_folder, tmp_path):
    """rollout_sample.onnx with one logit's bias moved: its tokens part from eager's."""

    def shift(values):
        values[3] += 2.0

    return _with_changed_weight(char_folder, tmp_path / "tampered", "rollout_sample.onnx", (11,), shift)


def test_a_sampling_form_that_draws_other_tokens_fails_naming_where(char_folder, tmp_path, small_cases):
    report = verify_folder(_tampered_sampling_form(char_folder, tmp_path), factory=make_char_gru, write=False)
    failed = [c for c in report.comparisons if not c.passed]
    assert failed and {c.form for c in failed} == {"rollout_sample"}
    assert all("tokens part from eager PyTorch's at step" in c.problem and "not a tie" in c.problem for c in failed)
    greedy = [c for c in report.comparisons if c.form == "rollout_greedy"]
    assert greedy and all(c.passed for c in greedy)  # the greedy form was left alone


def test_a_parting_at_a_tie_passes_and_is_reported(char_folder, tmp_path, monkeypatch, small_cases):
    import export.verify_sampling as sampling
    from export.sampling_reference import partings

    # every gap counts as a tie here: the tampered form's partings take the tie path
    monkeypatch.setattr(sampling, "partings", lambda e, a, g: partings(e, a, g, ulps=float("inf")))
    report = verify_folder(_tampered_sampling_form(char_folder, tmp_path), factory=make_char_gru, write=False)
    assert report.passed, report.table()
    assert any(key.startswith("rollout_sample / temperature 0.8") for key in report.partings)
    assert "a float32 tie" in next(iter(report.partings.values()))
    assert "part from eager PyTorch's where the drawn uniform falls within float32" in report.table()


def test_a_tie_in_one_stream_does_not_hide_another_streams_parting(char_folder, tmp_path, monkeypatch, small_cases):
    import dataclasses

    import export.verify_sampling as sampling
    from export.sampling_reference import partings

    def first_stream_a_tie(expected, actual, gaps):
        found = partings(expected, actual, gaps, ulps=-1.0)  # no tie anywhere...
        return [dataclasses.replace(p, tie=True) if i == 0 else p for i, p in enumerate(found)]  # ...but stream one's

    monkeypatch.setattr(sampling, "partings", first_stream_a_tie)
    report = verify_folder(_tampered_sampling_form(char_folder, tmp_path), factory=make_char_gru, write=False)
    failed = [c for c in report.comparisons if not c.passed]
    assert failed and {c.form for c in failed} == {"rollout_sample"}
    assert all("not a tie" in c.problem for c in failed)


def test_every_id_is_stepped_in_parts_above_the_batch_limit(char_folder, tmp_path, monkeypatch, small_cases):
    """A vocabulary larger than one step's batch is checked in several whole steps (V=11 in parts of 4 here)."""
    import export.verify_cases as cases

    monkeypatch.setattr(cases, "MAX_COVERAGE_STEP_BATCH", 4)
    report = verify_folder(char_folder, factory=make_char_gru, trust=True, write=False)
    parts = {c.check: c.shape for c in report.comparisons if c.form == "onnx" and c.output == "logits"}
    assert [parts[f"every id of token (V=11), one step {i}/3"] for i in (1, 2, 3)] == [[4, 11], [4, 11], [3, 11]]
    broken = verify_folder(_zeroed_last_embedding_row(char_folder, tmp_path), factory=make_char_gru, write=False)
    failed = {c.check for c in broken.comparisons if not c.passed and c.form == "onnx"}
    assert any(check.startswith("every id of token (V=11), one step ") for check in failed)


def test_a_batch_first_classic_folder_verifies_its_fused_forms(tmp_path):
    """The committed sine folder declared batch-first (format 2): every fused form is checked
    through the runtime's batch-first API, not only the step model."""
    import dataclasses
    import shutil

    from runtime.manifest import read_manifest, write_manifest

    from ..conftest import COMMITTED

    folder = tmp_path / "bf"
    shutil.copytree(COMMITTED, folder)
    manifest = read_manifest(folder)
    write_manifest(folder, dataclasses.replace(manifest, format_version=2, layout="batch_first"))
    report = verify_folder(folder, trust=True, write=False)
    assert report.passed, report.table()
    checked = {c.form for c in report.comparisons}
    assert {"onnx", "sequence_rnn", "sequence_loop", "rollout_rnn", "rollout_loop"} <= checked

"""The one verifier over the signature: every form of ``model.forms`` is called by name and compared,
a form it cannot check fails loudly, the classic signature's horizons are one instance of the general
path, and a case too wide for the memory budget is cut and reported."""

from __future__ import annotations

import numpy as np
import pytest

import runtime
from export import export_module, verify_folder
from export.verify_cases import GENERATE, PREDICT, SAMPLED, STEP_ONCE
from export.verify_forms import form_calls
from runtime.fused import FORMS, ROLLOUT_FORMS, SAMPLING_FORMS, SEQUENCE_FORMS, STEP

from ..user_modules import CHAR_GRU_SIGNATURE, TWO_INPUTS_SIGNATURE, make_char_gru, make_two_inputs
from .test_verify_general import shrink_cases


@pytest.fixture(scope="module")
def char_folder(tmp_path_factory):
    return export_module(make_char_gru(), tmp_path_factory.mktemp("char") / "model", **CHAR_GRU_SIGNATURE)


@pytest.fixture(scope="module")
def two_inputs_folder(tmp_path_factory):
    return export_module(make_two_inputs(), tmp_path_factory.mktemp("two") / "model", **TWO_INPUTS_SIGNATURE)


def test_each_kind_of_form_answers_its_calls_and_an_unknown_form_none():
    assert form_calls(STEP) == (STEP_ONCE, PREDICT, GENERATE, SAMPLED)
    assert all(form_calls(form) == (PREDICT,) for form in SEQUENCE_FORMS)
    assert all(form_calls(form) == (GENERATE,) for form in ROLLOUT_FORMS)
    assert all(form_calls(form) == (SAMPLED,) for form in SAMPLING_FORMS)
    assert all(form_calls(form) for form in FORMS)
    assert form_calls("rollout_beam") == ()


def _recording(monkeypatch) -> list[tuple[str, str | None]]:
    """Records the form= of every predict and generate call of any runtime.Model."""
    calls: list[tuple[str, str | None]] = []
    for method in ("predict", "generate"):
        real = getattr(runtime.Model, method)

        def recorded(self, *args, _real=real, _method=method, form=None, **kwargs):
            calls.append((_method, form))
            return _real(self, *args, form=form, **kwargs)

        monkeypatch.setattr(runtime.Model, method, recorded)
    return calls


def test_every_form_of_the_folder_is_called_by_its_name(exported_copy, monkeypatch):
    calls = _recording(monkeypatch)
    report = verify_folder(exported_copy, write=False)
    assert report.passed, report.table()
    forms = runtime.load(exported_copy).forms
    assert {form for _, form in calls} == set(forms)  # never None: the verifier picks, not the runtime
    assert {form for method, form in calls if method == "predict"} == {STEP, *SEQUENCE_FORMS}
    assert {form for method, form in calls if method == "generate"} == {STEP, *ROLLOUT_FORMS}
    assert {c.form for c in report.comparisons} == {"onnx", *(f for f in forms if f != STEP)}


def _with_forms(monkeypatch, extra: tuple[str, ...]) -> None:
    real = runtime.Model.forms
    monkeypatch.setattr(runtime.Model, "forms", property(lambda self: (*real.fget(self), *extra)))


def test_a_form_the_verifier_cannot_check_fails_verification(two_inputs_folder, monkeypatch):
    shrink_cases(monkeypatch)
    _with_forms(monkeypatch, ("rollout_beam",))
    report = verify_folder(two_inputs_folder, factory=make_two_inputs, write=False)
    assert not report.passed
    failed = [c for c in report.comparisons if not c.passed]
    assert [c.form for c in failed] == ["rollout_beam"]
    assert "cannot check form 'rollout_beam'" in failed[0].problem and "FAIL" in report.table()


def test_a_form_no_check_of_the_signature_runs_fails_verification(char_folder, monkeypatch):
    shrink_cases(monkeypatch)
    # a sampled model has no closed loop of values: a rollout form of values would never be run
    _with_forms(monkeypatch, ("rollout_loop",))
    report = verify_folder(char_folder, factory=make_char_gru, write=False)
    failed = [c for c in report.comparisons if not c.passed]
    assert [c.form for c in failed] == ["rollout_loop"] and "unverified" in failed[0].problem


def test_a_closed_loop_of_any_signature_gets_its_divergence_horizon(two_inputs_folder):
    report = verify_folder(two_inputs_folder, factory=make_two_inputs, trust=True, write=False)
    assert report.passed, report.table()
    rollouts = {f for f in runtime.load(two_inputs_folder).forms if f in ROLLOUT_FORMS}
    assert set(report.horizons) == {"eager", "torchscript", "onnx", *rollouts} and report.horizon_skipped is None
    assert {"rollout b=3 T=200", "rollout b=64 T=200", "rollout b=4096 T=200"} <= {c.check for c in report.comparisons}
    assert "divergence horizon vs float64 eager" in report.table()


def test_a_case_over_the_memory_budget_runs_fewer_steps_and_says_so(two_inputs_folder, monkeypatch):
    import export.verify_cases as cases

    monkeypatch.setattr(cases, "CASE_MAX_BYTES", 2**20)  # 1 MiB: the wide cases do not fit
    report = verify_folder(two_inputs_folder, factory=make_two_inputs, write=False)
    assert report.passed, report.table()
    checks = {c.check for c in report.comparisons}
    assert "sequence b=4096 T=200" not in checks and "sequence b=3 T=1000" in checks
    shortened = report.shortened["sequence b=4096 T=200"]
    assert shortened.startswith("run as 'sequence b=4096 T=") and shortened.split("T=")[1].split("'")[0] in {
        c.check.split("T=")[1] for c in report.comparisons if c.check.startswith("sequence b=4096")
    }
    assert "checks cut to fit the memory budget" in report.table()
    assert report.to_dict()["shortened_checks"] == report.shortened


def test_a_one_input_model_takes_its_data_by_name_too(exported_copy):
    series = np.sin(np.arange(30, dtype=np.float32) / 3).reshape(30, 1, 1)
    by_name = verify_folder(exported_copy, write=False, inputs={"x": series})
    as_array = verify_folder(exported_copy, write=False, inputs=series)
    assert by_name.passed and as_array.passed
    checks = {c.check for c in by_name.comparisons}
    assert {"user data b=1 T=30", "user data b=1 rollout T=200", "sequence data T=20"} <= checks
    assert by_name.user_data["inputs"]["x"]["shape"] == [30, 1, 1] and as_array.user_data["shape"] == [30, 1, 1]

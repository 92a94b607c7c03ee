"""Proves that every exported form of a step model of any signature computes what eager PyTorch computes.

Forms: ``torchscript`` (step.torchscript.pt through torch.jit.load, trusted folders only),
``onnx`` (step.onnx through `runtime.load`) and every form in ``model.forms``, each called by
name and compared with the eager model rebuilt from weights.pt. The checks come from the
signature (`export.verify_cases`): single steps at batch 1, 3 and 64 from random inputs and
states, every id of each tokens input, teacher-forced sequences (random at batch 3, 64 and 4096;
the training series of a one-value input; the user's own data), closed-loop rollouts where an
output is fed back as it is (from random starts, the data's first point), and where the next
token is sampled, sampled rollouts compared token for token (`export.verify_sampling`). Every
comparison checks names, then shapes, then values (`export.verify_report`); all failures are
collected; over multi-step checks the tolerance follows the model's own float32 drift from a
float64 eager run (`trusted_steps`). Where the loop is closed, the divergence horizon of every
closed-loop form against float64 eager is reported too. A form the verifier cannot check, or
one no check of the signature runs, fails verification.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import runtime
from rnn.checkpoint import load_checkpoint
from rnn.folders import write_text_atomically
from rnn.randomness import preserved_global_rng
from runtime.errors import VerificationFailed
from runtime.manifest import ROLE_STEP_TORCHSCRIPT, SAMPLE, VERIFY_NAME

from .factories import checked_factory
from .torchscript import load_torchscript_checked
from .verify_cases import GENERATE, STEP_ONCE, VERIFY_SEED, Case, Plan, build_cases, closed_loop
from .verify_data import read_user_data
from .verify_forms import EAGER, TORCHSCRIPT, Form, RuntimeForm, TorchForm, report_name
from .verify_report import (  # noqa: F401 - the tolerances and measures callers import from here
    DRIFT_ALLOWANCE,
    HORIZON_STEPS,
    ROLLOUT_ATOL,
    SEQUENCE_ATOL,
    STEP_ATOL,
    VerifyReport,
    compare,
    divergence_horizon,
    failure,
    trusted_steps,
)
from .verify_sampling import check_sampling, sampling_cases

Progress = Callable[[int, int, str], None]  # (checks done, checks in all, the check now running)

UNTRUSTED_TORCHSCRIPT = (
    "not loaded: loading a TorchScript archive runs the code inside it, and this folder is not trusted "
    "(pin its manifest digest with --digest, check its signature with --public-key, or pass --trust "
    "for a folder you made)"
)


def verify_folder(
    folder: str | os.PathLike,
    *,
    write: bool = True,
    raise_on_failure: bool = False,
    factory=None,
    progress: Progress | None = None,
    digest: str | None = None,
    trust: bool = False,
    inputs: Any = None,
) -> VerifyReport:
    """Verifies every exported form in ``folder``; writes ``verify.json`` there unless ``write=False``.

    A folder of a user's module needs its ``factory`` (callable or "package.module:function")
    to rebuild the eager module. ``progress`` is told of each check as it starts. Returns the
    report; with ``raise_on_failure`` a failing report raises VerificationFailed.

    Trust: loading step.torchscript.pt runs the code inside the archive, so the TorchScript form
    is checked only for a folder the caller trusts: one pinned by ``digest`` (the manifest's
    sha256, which a verified signature gives: `toolkit.signing`), or with ``trust=True`` (a
    folder you made yourself). Otherwise the report says it skipped that form. Everything else
    (the ONNX models in onnxruntime, weights.pt with ``weights_only=True``) runs no code.

    ``inputs``: the data the model will see, checked beside the random inputs (a model may differ
    from its export only outside their range): for any model a dict of arrays by input name or an
    ``.npz`` file of them (`export.verify_data`); for a model of one real-valued input also a
    (steps, batch, input_size) array, one series (steps, input_size), for input_size 1 also
    (steps,) or a list of equal-length 1-D series, or the path of a .csv (a column per input
    feature) or .npy file of those shapes. Every teacher-forced form runs over it from the initial
    state, and where an output is fed back as it is every closed-loop form rolls out from its
    first value; the report's ``user_data`` names it (source, shape, sha256). ShapeError (naming
    the shapes taken), DtypeError, InputValueError or DataError for data that cannot be used.
    """
    with preserved_global_rng(VERIFY_SEED):  # the caller's generators stay as they were
        return _verify(Path(folder), write, raise_on_failure, factory, progress, digest, trust, inputs)


def _verify(
    folder: Path,
    write: bool,
    raise_on_failure: bool,
    factory,
    progress: Progress | None,
    digest: str | None,
    trust: bool,
    inputs: Any,
) -> VerifyReport:
    model = runtime.load(folder, digest=digest)  # checks the manifest's digest, then every file's sha256
    data = None if inputs is None else read_user_data(inputs, model)  # refused before any check runs
    checkpoint = load_checkpoint(folder, checked_factory(factory))
    report = VerifyReport(
        str(folder), manifest_sha256=model.manifest_digest, user_data=None if data is None else data.described
    )
    eager = TorchForm(checkpoint.model, model)
    exact = TorchForm(copy.deepcopy(checkpoint.model).double(), model, torch.float64)
    forms = _forms(folder, model, trust or digest is not None, report)
    plan = build_cases(model, checkpoint.config, folder, data)
    report.shortened.update(plan.shortened)
    _run_checks(plan, model, eager, exact, forms, report, progress or _silent)
    _fail_unchecked(forms, report)
    return _finish(folder, report, write, raise_on_failure)


def _silent(done: int, total: int, check: str) -> None:
    """A progress callback that says nothing."""


def _run_checks(
    plan: Plan,
    model: runtime.Model,
    eager: TorchForm,
    exact: TorchForm,
    forms: dict[str, Form],
    report: VerifyReport,
    progress: Progress,
) -> None:
    """Every case of ``plan``, the sampled rollouts where tokens are sampled, then the divergence
    horizons where the loop is closed (or why they were not measured)."""
    sampled = model.feedback is not None and model.feedback.via == SAMPLE
    samplings = sampling_cases(model) if sampled else []
    total = len(plan.cases) + len(samplings) + (plan.horizon_start is not None)
    for index, case in enumerate(plan.cases):
        progress(index, total, case.check)
        check(case, eager, exact, forms, report)
    for index, sampling in enumerate(samplings):
        progress(len(plan.cases) + index, total, sampling.check)
        check_sampling(sampling, eager, forms, model, report)
    if plan.horizon_start is not None:
        progress(total - 1, total, "divergence horizon")
        measure_horizons(plan.horizon_start, model, eager, exact, forms, report)
    else:
        report.horizon_skipped = _no_horizon(model)
    progress(total, total, "done")


def _no_horizon(model: runtime.Model) -> str:
    """Why a model has no divergence horizon: no closed loop, or one of sampled tokens."""
    if closed_loop(model):
        return "no start to roll out from"
    if model.feedback is not None:
        return "generation samples tokens: its rollouts are compared token for token instead"
    if len(model.inputs) == 1 and len(model.outputs) == 1:
        return (
            f"the output size {model.outputs[0].count} differs from the input size {model.inputs[0].count}: "
            "outputs cannot be fed back as inputs, so there is no closed loop to roll out"
        )
    return "no output is fed back as an input: there is no closed loop to roll out"


def _finish(folder: Path, report: VerifyReport, write: bool, raise_on_failure: bool) -> VerifyReport:
    if write:
        write_text_atomically(folder / VERIFY_NAME, json.dumps(report.to_dict(), indent=2) + "\n")
    if raise_on_failure and not report.passed:
        failed = sum(not c.passed for c in report.comparisons)
        raise VerificationFailed(f"{failed} of {len(report.comparisons)} comparisons failed in {folder}", report)
    return report


def _forms(folder: Path, model: runtime.Model, trusted: bool, report: VerifyReport) -> dict[str, Form]:
    """TorchScript (trusted folders only), then every form of ``model.forms`` by its report name
    (the step model as "onnx"). A form the verifier knows no call of fails verification here."""
    forms: dict[str, Form] = {}
    scripted = _torchscript(folder, model, trusted, report)
    if scripted is not None:
        forms[TORCHSCRIPT] = TorchForm(scripted, model)
    for form in model.forms:
        runner = RuntimeForm(model, form)
        if runner.calls:
            forms[report_name(form)] = runner
        else:
            problem = f"the verifier cannot check form {form!r}: it knows no call that runs it"
            report.comparisons.append(failure(report_name(form), "every check", problem))
    return forms


def _fail_unchecked(forms: dict[str, Form], report: VerifyReport) -> None:
    """A failure for every form that no check of this signature ran: a form is verified or fails."""
    compared = {c.form for c in report.comparisons}
    for name in forms:
        if name not in compared:
            problem = f"no check of this model's signature runs form {name!r}, so it is unverified"
            report.comparisons.append(failure(name, "every check", problem))


def _torchscript(folder: Path, model: runtime.Model, trusted: bool, report: VerifyReport) -> Callable | None:
    """The folder's TorchScript module where it has one and the folder is trusted, else None
    with the reason in ``report.skipped``."""
    entry = model.manifest.file(ROLE_STEP_TORCHSCRIPT)
    if entry is None:
        report.skipped[TORCHSCRIPT] = "the folder has no TorchScript file"
    elif not trusted:
        report.skipped[TORCHSCRIPT] = UNTRUSTED_TORCHSCRIPT
    else:  # from the bytes checked against the pinned manifest, not from the path again
        return load_torchscript_checked(folder, entry)
    return None


def check(case: Case, eager: TorchForm, exact: TorchForm, forms: dict[str, Form], report: VerifyReport) -> None:
    """Compares every form that answers ``case.call`` with eager PyTorch, within the tolerance
    the model's own float32 drift allows (see `trusted_steps`)."""
    expected = eager.run(case)
    keep, tolerance = None, case.tolerance
    if case.call != STEP_ONCE:  # how far float32 itself drifts from float64 on this check
        names = list(expected)
        reference = exact.run(case)
        keep = trusted_steps(expected[names[0]], reference[names[0]], case.tolerance)
        compared = names[:1] if keep is not None else names
        drift = max(
            float(np.max(np.abs(np.asarray(expected[n][:keep], np.float64) - reference[n][:keep]))) for n in compared
        )
        tolerance = max(case.tolerance, DRIFT_ALLOWANCE * drift)
        if keep is not None or tolerance > case.tolerance:
            report.limits[case.check] = {"steps": keep, "float32_drift": drift, "tolerance": tolerance}
        if keep is not None:  # compare the outputs of the trusted steps; the final state is past them
            expected = {names[0]: expected[names[0]][:keep]}
    for name, form in forms.items():
        if case.call not in form.calls:
            continue
        actual = form.run(case)
        if keep is not None:
            actual = {key: actual[key][:keep] for key in expected if key in actual}
        report.comparisons.extend(compare(name, case.check, expected, actual, tolerance))


def measure_horizons(
    start: tuple, model: runtime.Model, eager: TorchForm, exact: TorchForm, forms: dict[str, Form], report: VerifyReport
) -> None:
    """The divergence horizon of eager PyTorch and every closed-loop form against float64 eager,
    over a HORIZON_STEPS rollout of the fed-back output from ``start`` = (first inputs, initial state)."""
    inputs, state = start
    case = Case("divergence horizon", GENERATE, inputs, state, ROLLOUT_ATOL, HORIZON_STEPS)
    name = model.feedback.output
    truth = exact.run(case)[name]
    for form_name, form in {EAGER: eager, **forms}.items():
        if GENERATE in form.calls:
            report.horizons[form_name] = divergence_horizon(form.run(case)[name], truth)

"""The tolerances of verification, the comparison of a form's outputs with eager PyTorch's, and the report.

Imports no verifier: `export.verify` (the checks) and its helper modules import this one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# Tolerances, as max abs error against eager float32 PyTorch. The models' values are O(1) (tanh
# states, a readout of them), so absolute errors are the meaningful measure; relative errors
# (max abs error / max |eager value| of the output) are reported beside them. NOTES.md justifies them.
STEP_ATOL = 1e-5  # one step: a handful of float32 roundings, ~1e-7 in practice
SEQUENCE_ATOL = 1e-5  # teacher-forced: errors do not feed back through the input
ROLLOUT_ATOL = 1e-4  # 200 closed-loop steps: rounding differences feed back and grow
DIVERGENCE_ATOL = 1e-3  # the divergence horizon: first step whose error against float64 passes this
# Multi-step checks of a model whose loop amplifies rounding: an exported form may drift from
# eager float32 up to this many times as far as eager float32 drifts from float64 (correct
# float32 implementations differ per step by a few ulp: matmul order, tanh approximations).
DRIFT_ALLOWANCE = 10.0
HORIZON_STEPS = 1000  # length of the rollout the divergence horizon is measured on

Outputs = dict[str, np.ndarray]


@dataclass
class Comparison:
    """One output of one form in one check, against eager PyTorch."""

    form: str
    check: str
    output: str
    shape: list[int] | None
    max_abs: float | None
    max_rel: float | None  # max abs error / max |eager value| of this output
    tolerance: float
    passed: bool
    problem: str | None = None  # a name or shape mismatch, or a value out of tolerance


@dataclass
class VerifyReport:
    """Every comparison of a verification run and what bounded it; ``table`` for people, ``to_dict`` for verify.json."""

    folder: str
    comparisons: list[Comparison] = field(default_factory=list)
    horizons: dict[str, int | None] = field(default_factory=dict)  # form -> first step over DIVERGENCE_ATOL
    horizon_steps: int = HORIZON_STEPS
    limits: dict[str, dict] = field(default_factory=dict)  # check -> steps compared, drift, tolerance used
    skipped: dict[str, str] = field(default_factory=dict)  # form -> why it was not checked
    horizon_skipped: str | None = None  # why no divergence horizon was measured (no closed loop)
    manifest_sha256: str = ""  # the manifest this report is about (`rnn info` trusts no other)
    user_data: dict[str, Any] | None = None  # the user's inputs it ran on (UserInputs.to_dict); None: none given
    partings: dict[str, str] = field(default_factory=dict)  # "form / check" -> where sampled tokens part at a tie
    shortened: dict[str, str] = field(default_factory=dict)  # check -> how it was cut to fit the memory budget

    @property
    def passed(self) -> bool:
        return bool(self.comparisons) and all(c.passed for c in self.comparisons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "manifest_sha256": self.manifest_sha256,
            "passed": self.passed,
            "user_data": self.user_data,
            "skipped": self.skipped,
            "tolerances": {"step": STEP_ATOL, "sequence": SEQUENCE_ATOL, "rollout": ROLLOUT_ATOL},
            "divergence": {
                "threshold": DIVERGENCE_ATOL,
                "steps": self.horizon_steps,
                "horizons": self.horizons,
                "not_measured": self.horizon_skipped,
            },
            "limited_checks": self.limits,
            "shortened_checks": self.shortened,
            "token_partings_at_ties": self.partings,
            "comparisons": [asdict(c) for c in self.comparisons],
        }

    def table(self) -> str:
        """A text table: one row per form, check and output, then the notes and the divergence horizons."""
        lines = comparison_rows(self.comparisons)
        lines += ["", user_data_line(self.user_data)]
        if self.skipped:
            lines += ["", "not checked:", *(f"  {form}: {why}" for form, why in self.skipped.items())]
        if self.shortened:
            lines += [
                "",
                "checks cut to fit the memory budget:",
                *(f"  {c}: {how}" for c, how in self.shortened.items()),
            ]
        problems = [f"  {c.form} / {c.check} / {c.output}: {c.problem}" for c in self.comparisons if c.problem]
        if problems:
            lines += ["", "problems:", *problems]
        lines += limit_lines(self.limits)
        if self.partings:
            lines += [
                "",
                "sampled tokens that part from eager PyTorch's where the drawn uniform falls within float32 "
                "resolution of a CDF boundary (a tie: expected; compared up to there):",
                *(f"  {where}: {note}" for where, note in self.partings.items()),
            ]
        lines += horizon_lines(self.horizons, self.horizon_steps, self.horizon_skipped)
        lines += [
            "",
            "max abs: the largest |form - eager| over the output; max rel: max abs divided by the largest "
            "|eager| value of that output; tol: the max abs allowed.",
            "",
            f"verification {'passed' if self.passed else 'FAILED'}: "
            f"{sum(c.passed for c in self.comparisons)}/{len(self.comparisons)} comparisons within tolerance",
        ]
        return "\n".join(lines)


def comparison_rows(comparisons: list[Comparison]) -> list[str]:
    """The table's aligned rows: a header, a rule, one row per comparison."""
    header = ("form", "check", "output", "shape", "max abs", "max rel", "tol", "ok")
    rows = [header]
    for c in comparisons:
        shape = "x".join(map(str, c.shape)) if c.shape else "-"
        passed = "ok" if c.passed else "FAIL"
        rows.append(
            (c.form, c.check, c.output, shape, _number(c.max_abs), _number(c.max_rel), f"{c.tolerance:.1e}", passed)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def user_data_line(data: dict[str, Any] | None) -> str:
    """What the report says of the user's data: none, or its source, shapes and sha256."""
    if data is None:
        return (
            "user data: none given (random inputs only: values over [-1, 1], token ids over each vocabulary; "
            "a trained folder's training series too)"
        )
    if "inputs" in data:
        shapes = ", ".join(
            f"{name} {'x'.join(map(str, d['shape']))} {d['dtype']}" for name, d in data["inputs"].items()
        )
    else:
        shapes = f"shape {'x'.join(map(str, data['shape']))} (steps x batch x input)"
    return f"user data: {data['source']}, {shapes}, sha256 {data['sha256'][:16]}"


def limit_lines(limits: dict[str, dict]) -> list[str]:
    """The checks whose tolerance or length the model's own float32 drift set."""
    if not limits:
        return []
    lines = [
        "",
        "checks where the model amplifies rounding (eager float32 drifts from float64): "
        f"tolerance = max(named tolerance, {DRIFT_ALLOWANCE:g} x that drift), compared up to the "
        "step where the drift reaches the named tolerance:",
    ]
    for check, limit in limits.items():
        steps = "all steps" if limit["steps"] is None else f"first {limit['steps']} steps, final state not compared"
        drift, tolerance = limit["float32_drift"], limit["tolerance"]
        lines.append(f"  {check}: float32 drift {drift:.1e}, tolerance {tolerance:.1e}, {steps}")
    return lines


def horizon_lines(horizons: dict[str, int | None], steps: int, skipped: str | None) -> list[str]:
    """The divergence horizon of each closed-loop form, or why none was measured."""
    if skipped:
        return ["", f"divergence horizon: not measured ({skipped})"]
    if not horizons:
        return []
    lines = [
        "",
        f"divergence horizon vs float64 eager (first step with error > {DIVERGENCE_ATOL:g}, "
        f"{steps}-step rollout from the data's first point):",
    ]
    for form, step in horizons.items():
        lines.append(f"  {form:<12} {'none within ' + str(steps) if step is None else 'step ' + str(step)}")
    return lines


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def compare(form: str, check: str, expected: Outputs, actual: Outputs, tolerance: float) -> list[Comparison]:
    """Names first, then shapes, then values; one Comparison per expected or unexpected output."""

    def failed(name: str, shape=None, error: float | None = None, problem: str = "") -> Comparison:
        return Comparison(form, check, name, shape, error, error, tolerance, False, problem)

    results = []
    for name in expected:
        if name not in actual:
            results.append(failed(name, problem=f"output missing; got {sorted(actual)}"))
            continue
        want, got = np.asarray(expected[name], dtype=np.float64), np.asarray(actual[name], dtype=np.float64)
        if want.shape != got.shape:
            results.append(failed(name, list(got.shape), problem=f"shape {got.shape}, expected {want.shape}"))
        elif not np.isfinite(got).all():
            results.append(failed(name, list(got.shape), math.inf, "NaN or infinity in the output"))
        else:
            max_abs = float(np.max(np.abs(got - want))) if want.size else 0.0
            scale = float(np.max(np.abs(want))) if want.size else 0.0
            max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
            passed = max_abs <= tolerance
            problem = None if passed else f"max abs error {max_abs:.3e} exceeds the tolerance {tolerance:.0e}"
            results.append(Comparison(form, check, name, list(got.shape), max_abs, max_rel, tolerance, passed, problem))
    results += [
        failed(name, problem=f"unexpected output; expected only {sorted(expected)}")
        for name in actual
        if name not in expected
    ]
    return results


def failure(form: str, check: str, problem: str) -> Comparison:
    """A comparison that could not be made, failed loudly (a form the verifier cannot run, say)."""
    return Comparison(form, check, "-", None, None, None, 0.0, False, problem)


def first_step_over(errors: np.ndarray, threshold: float) -> int | None:
    """The index of the first step whose largest error passes ``threshold``, or None.

    ``errors`` is (steps, ...): absolute errors of each step, reduced over the other axes."""
    per_step = np.asarray(errors).reshape(len(errors), -1).max(axis=1)
    over = np.nonzero(per_step > threshold)[0]
    return int(over[0]) if over.size else None


def trusted_steps(eager32: np.ndarray, eager64: np.ndarray, tolerance: float) -> int | None:
    """None if eager float32 stays within ``tolerance`` of float64 over the whole sequence; else
    the number of leading steps for which it does (at least 1).

    A model whose loop amplifies rounding (seen with hidden sizes 11 and 16, and with random
    states far from a trained model's orbit) makes any two float32 implementations drift apart
    at the rate float32 drifts from float64. Past the step where eager float32 itself is off by
    the tolerance, no implementation can be held to it, so the comparison stops there; before
    it, the tolerance is raised to DRIFT_ALLOWANCE times float32's own drift where that is
    larger. The report lists every check this touched.
    """
    first = first_step_over(np.abs(np.asarray(eager32, np.float64) - eager64), tolerance)
    return None if first is None else max(first, 1)


def divergence_horizon(rollout: np.ndarray, truth: np.ndarray, threshold: float = DIVERGENCE_ATOL) -> int | None:
    """The first step (1-based) whose max abs error against ``truth`` passes ``threshold``."""
    first = first_step_over(np.abs(np.asarray(rollout, np.float64) - truth), threshold)
    return None if first is None else first + 1

"""Verifies sampled generation token for token: every form against eager PyTorch fed the same uniform draws.

For a model whose feedback samples its next token from logits: greedy, temperature, top-k and
top-p rollouts from seeded random starts, through every form that answers a sampled rollout
(TorchScript, the step model, the sampling rollout of the strategy). The first step where a
form's tokens part from eager PyTorch's (`export.sampling_reference`) is reported; a parting
where the drawn uniform falls within float32 resolution of a boundary of the cumulative
distribution (a CDF tie) is expected and reported as such; any other parting fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import runtime
from runtime.fused import SAMPLING_FORMS, STEP

from .sampling_reference import eager_sample, module_step, partings
from .test_data import random_tensor
from .verify_cases import SAMPLED, VERIFY_SEED, State
from .verify_forms import Form, RuntimeForm, TorchForm
from .verify_report import ROLLOUT_ATOL, Comparison, VerifyReport, compare

SAMPLING_STEPS = 200  # tokens of each sampled rollout compared
SAMPLING_BATCHES = (3, 64)  # the wide batch once, with the plain temperature draw
SAMPLING_TEMPERATURE = 0.8
SAMPLING_TOP_K = 5
SAMPLING_TOP_P = 0.9
SAMPLING_SEED = 7
GREEDY_FORM, SAMPLE_FORM = SAMPLING_FORMS  # the fused rollouts of argmax and of drawn tokens


@dataclass(frozen=True)
class SamplingCase:
    check: str
    token0: np.ndarray  # (batch,) int64
    others: dict[str, np.ndarray]  # the held inputs
    state: State
    strategy: str
    options: dict[str, Any]  # temperature, top_k, top_p as runtime.Sampler takes them

    @property
    def greedy(self) -> bool:
        return self.strategy == "greedy"

    def sampler(self) -> runtime.Sampler:
        return runtime.Sampler(self.strategy, seed=SAMPLING_SEED, **self.options)


def sampling_cases(model: runtime.Model) -> list[SamplingCase]:
    """Greedy, temperature, top-k and top-p rollouts from seeded random starts."""
    feedback = model.feedback
    rng = np.random.default_rng(VERIFY_SEED + 1)
    token = next(t for t in model.inputs if t.name == feedback.input)
    top_k = min(SAMPLING_TOP_K, int(token.vocabulary))
    kinds = [
        ("greedy", "greedy", {}),
        (f"temperature {SAMPLING_TEMPERATURE:g}", "temperature", {"temperature": SAMPLING_TEMPERATURE}),
        (f"top-k {top_k}", "top_k", {"temperature": SAMPLING_TEMPERATURE, "top_k": top_k}),
        (f"top-p {SAMPLING_TOP_P:g}", "top_p", {"temperature": SAMPLING_TEMPERATURE, "top_p": SAMPLING_TOP_P}),
    ]
    cases = []
    for batch in SAMPLING_BATCHES:
        for label, strategy, options in kinds:
            if batch != SAMPLING_BATCHES[0] and strategy != "temperature":
                continue
            cases.append(
                SamplingCase(
                    f"{label} b={batch} T={SAMPLING_STEPS}",
                    random_tensor(token, batch, rng),
                    {t.name: random_tensor(t, batch, rng) for t in model.inputs if t.name != token.name},
                    tuple(random_tensor(s, batch, rng) for s in model.states),
                    strategy,
                    options,
                )
            )
    return cases


def answers(form: Form, case: SamplingCase) -> bool:
    """Whether ``form`` runs ``case``: torch and the step model every strategy, a sampling rollout its own."""
    if SAMPLED not in form.calls:
        return False
    if isinstance(form, TorchForm) or form.form == STEP:
        return True
    return form.form == (GREEDY_FORM if case.greedy else SAMPLE_FORM)


def check_sampling(
    case: SamplingCase, eager: TorchForm, forms: dict[str, Form], model: runtime.Model, report: VerifyReport
) -> None:
    """Every form's tokens against eager PyTorch's, fed the same uniforms: equal, or parting only
    at a float32 CDF tie (then compared up to the parting and reported in ``report.partings``)."""
    uniforms = None if case.greedy else case.sampler().uniforms(SAMPLING_STEPS, len(case.token0))
    options = {key: case.options.get(key) for key in ("top_k", "top_p")}
    options["temperature"] = case.options.get("temperature", 1.0)

    def eager_run(module: Callable) -> tuple[np.ndarray, tuple, np.ndarray]:
        feedback = model.feedback
        step_fn = module_step(module, model.input_names, feedback.input, model.output_names, feedback.output)
        return eager_sample(
            step_fn, case.token0, case.others, case.state, uniforms, greedy=case.greedy, steps=SAMPLING_STEPS, **options
        )

    expected, final, gaps = eager_run(eager.module)
    x0 = {model.feedback.input: case.token0, **case.others}
    for name, form in forms.items():
        if not answers(form, case):
            continue
        if isinstance(form, RuntimeForm):
            tokens, states = form.tokens(x0, SAMPLING_STEPS, case.state, case.sampler())
        else:
            tokens, states, _ = eager_run(form.module)
        report.comparisons += compare_tokens(name, case, model, (expected, final, gaps), (tokens, states), report)


def compare_tokens(
    name: str, case: SamplingCase, model: runtime.Model, eager: tuple, actual: tuple, report: VerifyReport
) -> list[Comparison]:
    """One form's tokens (then the final states of the streams that never part) against eager's."""
    (expected, final, gaps), (tokens, states) = eager, actual
    shape, streams = list(np.shape(tokens)), len(case.token0)
    found = partings(expected, tokens, gaps)  # the first parting of every stream that parts
    wrong = [p for p in found if not p.tie]
    if wrong:
        first = min(wrong, key=lambda p: (p.step, p.stream))
        problem = f"tokens part from eager PyTorch's at {first.describe()}; {len(wrong)} of {streams} streams part so"
        return [Comparison(name, case.check, "tokens", shape, None, None, 0.0, False, problem)]
    results = [Comparison(name, case.check, "tokens", shape, 0.0, 0.0, 0.0, True)]
    if found:
        first = min(found, key=lambda p: (p.step, p.stream))
        report.partings[f"{name} / {case.check}"] = f"{first.describe()}; {len(found)} of {streams} streams part"
    # the final states of the streams that never part (a parted stream's state is past the tie)
    kept = np.setdiff1d(np.arange(streams), [p.stream for p in found])
    if kept.size:
        axes = [s.batch_axis for s in model.states]
        names = [s.output for s in model.states]
        final_expected = {n: np.take(a, kept, axis=x) for n, a, x in zip(names, final, axes)}
        final_actual = {n: np.take(np.asarray(a), kept, axis=x) for n, a, x in zip(names, states, axes)}
        results += compare(name, case.check, final_expected, final_actual, ROLLOUT_ATOL)
    return results

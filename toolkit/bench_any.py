"""`rnn bench` for a folder of any signature: the runtime's calls against eager PyTorch, in one run.

Named, token and layered inputs and states, either layout, identity or sampled feedback. For each
kind of call (``predict``, teacher-forced; ``generate``, the closed loop the manifest declares: fed
back as it is, or for sampled feedback ``generate greedy`` and ``generate t=0.8`` with a seeded
`runtime.Sampler`, a fresh one each call so that every call, eager PyTorch's too, draws the same
uniforms) and each batch and length: eager PyTorch (the module in a Python loop; for a
user's module only with its factory), TorchScript (trusted folders only, as `toolkit.bench`), the
runtime's step loop (``form="step"``), every form of the folder that answers the call, and the
runtime's own choice. Then the one-call table (`toolkit.bench.bench_one_call`). Inputs come from
the verifier's seeded generator (`export.verify_cases.CaseBuilder`: ids across the vocabulary,
values in [-1, 1], the other inputs held in a closed loop), laid out as the folder takes them.

Before any timing every implementation runs one short call of each kind, compared with eager
PyTorch (without it, with the step loop) as verification compares them: values within the
verifier's tolerances, sampled tokens equal but where eager's draw was a float32 tie. A
disagreement is a VerificationFailed: a benchmark of wrong answers is no benchmark.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import runtime
from export.sampling_reference import eager_sample, module_step, partings
from export.verify_cases import GENERATE, PREDICT, Case, CaseBuilder, closed_loop
from export.verify_forms import TorchForm
from export.verify_report import ROLLOUT_ATOL, SEQUENCE_ATOL, compare
from rnn.checkpoint import load_checkpoint
from rnn.config import CUSTOM, read_config
from runtime.errors import VerificationFailed
from runtime.fused import ROLLOUT_FORMS, SAMPLING_FORMS, SEQUENCE_FORMS, STEP
from runtime.manifest import BATCH_FIRST, ROLE_STEP_TORCHSCRIPT, SAMPLE

from .bench import (
    BATCHES,
    EAGER_STEP,
    KINDS,
    ROUNDS,
    STEPS,
    UNTIMED_TORCHSCRIPT,
    BenchReport,
    BenchRow,
    _machine,
    _scripted_step,
    bench_one_call,
    best_times,
)

STEP_LOOP = "onnx step loop"  # the runtime's step loop: the baseline where eager PyTorch cannot run
SAMPLED_TEMPERATURE = 0.8
SAMPLER_SEED = 7
AGREEMENT_STEPS = 20  # the length of the short call each implementation is checked on before timing
GREEDY_FORM, SAMPLE_FORM = SAMPLING_FORMS
NO_EAGER = (
    "eager columns left out: this folder holds a user's module and no --factory builds it; "
    "ratios are against the runtime's step loop (form=step)"
)
NO_GENERATE = "generate left out: no output of this model is fed back as an input"

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class Call:
    """One kind of call the bench times: its table name, the verifier's call, the sampler's settings."""

    kind: str
    call: str  # PREDICT or GENERATE
    sampler: dict[str, Any] | None = None  # runtime.Sampler's arguments for sampled feedback

    def new_sampler(self) -> runtime.Sampler:
        return runtime.Sampler(**self.sampler, seed=SAMPLER_SEED)


def calls(model: runtime.Model, kinds) -> tuple[list[Call], list[str]]:
    """The calls timed for ``kinds`` (predict, generate) and the notes of those left out."""
    found, notes = [], []
    for kind in kinds:
        if kind == "predict":
            found.append(Call("predict", PREDICT))
        elif model.feedback is not None and model.feedback.via == SAMPLE:
            found.append(Call("generate greedy", GENERATE, {"strategy": "greedy"}))
            temperature = {"strategy": "temperature", "temperature": SAMPLED_TEMPERATURE}
            found.append(Call(f"generate t={SAMPLED_TEMPERATURE:g}", GENERATE, temperature))
        elif closed_loop(model):
            found.append(Call("generate", GENERATE))
        else:
            notes.append(NO_GENERATE)
    return found, notes


def eager_module(folder: Path, factory) -> torch.nn.Module | None:
    """The eager module rebuilt from weights.pt; None for a user's module given no factory."""
    if factory is None and read_config(folder).model.kind == CUSTOM:
        return None
    return load_checkpoint(folder, factory).model


class Runner:
    """Every implementation of one call at one batch and length, on inputs drawn once: name ->
    function() giving its outputs and final states by name, time-first (tokens for a sampled call)."""

    def __init__(self, model: runtime.Model, torch_steps: dict[str, Callable], call: Call, batch: int, steps: int):
        self.model, self.call, self.steps = model, call, steps
        build = CaseBuilder(model)
        lead = (steps,) if call.call == PREDICT else ()
        self.case = Case(call.kind, call.call, build.inputs(batch, *lead), build.state(batch), 0.0, steps)
        self.batch_first = model.layout == BATCH_FIRST
        swap = self.batch_first and call.call == PREDICT
        self.given = {k: np.ascontiguousarray(np.swapaxes(v, 0, 1)) if swap else v for k, v in self.case.inputs.items()}
        self.sampler = None if call.sampler is None else call.new_sampler()
        self.gaps: np.ndarray | None = None  # eager PyTorch's last draws' gaps (float32 ulps), for ties
        self.functions = {name: self._torch(step, name == "eager") for name, step in torch_steps.items()}
        wanted = {PREDICT: SEQUENCE_FORMS, GENERATE: ROLLOUT_FORMS}[call.call]
        if self.sampler is not None:
            wanted = (GREEDY_FORM if self.sampler.greedy else SAMPLE_FORM,)
        for form in (STEP, *wanted):
            if form in model.forms:
                self.functions[STEP_LOOP if form == STEP else form] = self._runtime(form)
        self.functions["auto"] = self._runtime(None)

    def _torch(self, module: Callable, eager: bool) -> Callable[[], Outputs]:
        model = self.model
        if self.sampler is None:
            form = TorchForm(module, model)
            return lambda: form.run(self.case)
        feedback = model.feedback
        step = module_step(module, model.input_names, feedback.input, model.output_names, feedback.output)
        others = {k: v for k, v in self.case.inputs.items() if k != feedback.input}
        token0, greedy = self.case.inputs[feedback.input], self.sampler.greedy
        temperature = self.sampler.temperature

        def sampled() -> Outputs:
            uniforms = None if greedy else self.call.new_sampler().uniforms(self.steps, len(token0))
            tokens, state, gaps = eager_sample(
                step, token0, others, self.case.state, uniforms, temperature, greedy=greedy, steps=self.steps
            )
            self.gaps = gaps if eager else self.gaps
            return self._named(tokens, state, runtime_layout=False)

        return sampled

    def _runtime(self, form: str | None) -> Callable[[], Outputs]:
        model, given, state = self.model, self.given, self.case.state
        if self.call.call == PREDICT:
            return lambda: self._named(*model.predict(given, state, form=form))
        if self.sampler is None:
            return lambda: self._named(*model.generate(given, self.steps, state, form=form))
        new = self.call.new_sampler  # a fresh seeded sampler each call: every call draws the same uniforms
        return lambda: self._named(*model.generate(given, self.steps, state, form=form, sampler=new()))

    def _named(self, outputs: Any, state: tuple, runtime_layout: bool = True) -> Outputs:
        """Outputs (tokens) and final states by name, time-first: the runtime's sequences are in
        the folder's layout, eager PyTorch's time-first."""
        model = self.model
        if isinstance(outputs, dict):
            named = dict(outputs)
        else:
            named = {"tokens" if self.sampler is not None else model.output_names[0]: np.asarray(outputs)}
        if self.batch_first and runtime_layout:
            named = {k: np.swapaxes(v, 0, 1) for k, v in named.items()}
        return {**named, **{name: np.asarray(s) for name, s in zip(model.state_outputs, state)}}

    def check(self, baseline: str) -> list[str]:
        """Every implementation's outputs against ``baseline``'s: the problems found (empty: they agree)."""
        tolerance = SEQUENCE_ATOL if self.call.call == PREDICT else ROLLOUT_ATOL
        results = {name: function() for name, function in self.functions.items()}
        expected, problems = results[baseline], []
        for name, actual in results.items():
            if name == baseline:
                continue
            if "tokens" in expected:
                parted = partings(expected["tokens"], actual["tokens"], self.gaps if baseline == "eager" else None)
                wrong = [p for p in parted if not p.tie]
                if wrong:
                    first = min(wrong, key=lambda p: (p.step, p.stream))
                    problems.append(f"{name}: tokens part from {baseline}'s at {first.describe()}")
                if parted:  # at a float32 tie of eager's draw (as `rnn verify` allows): the states are past it
                    continue
            compared = compare(name, self.call.kind, expected, actual, tolerance)
            problems += [f"{name}: {c.output} {c.problem}" for c in compared if not c.passed]
        return problems


def check_agreement(
    model: runtime.Model,
    torch_steps: dict[str, Callable],
    call: Call,
    batch: int,
    steps: int,
    baseline: str,
    say: Callable[[str], None] | None = None,
) -> None:
    """One short call (at most AGREEMENT_STEPS steps) of every implementation of ``call``, compared
    with ``baseline``'s; VerificationFailed naming the first disagreement."""
    short = Runner(model, torch_steps, call, batch, min(steps, AGREEMENT_STEPS))
    if say is not None:
        say(f"checking {call.kind} batch {batch} steps {short.steps} against {baseline}")
    problems = short.check(baseline)
    if problems:
        raise VerificationFailed(f"rnn bench: {call.kind} disagrees before timing: {problems[0]}")


def run_bench_any(
    folder: str | os.PathLike,
    batches=BATCHES,
    steps=STEPS,
    kinds=KINDS,
    rounds: int = ROUNDS,
    progress: Callable[[str], None] | None = None,
    factory=None,
    one_call: bool = True,
    digest: str | None = None,
    trust: bool = False,
) -> BenchReport:
    """The tables of `rnn bench` for a folder of any signature (see the module docstring)."""
    folder = Path(folder)
    say = progress or (lambda text: None)
    model = runtime.load(folder, digest=digest)
    eager = eager_module(folder, factory)
    scripted = _scripted_step(model, trusted=trust or digest is not None)
    if scripted is None and model.manifest.file(ROLE_STEP_TORCHSCRIPT) is not None:
        say(UNTIMED_TORCHSCRIPT)  # before any row, as the classic bench says it
    timed, notes = calls(model, kinds)
    if eager is None:
        notes.insert(0, NO_EAGER)
    report = BenchReport(
        str(folder),
        _machine(),
        baseline="eager" if eager is not None else STEP_LOOP,
        one_call_baseline=EAGER_STEP if eager is not None else "model.step",
        notes=notes,
        general=True,
    )
    for note in notes:
        say(note)
    torch_steps = {name: module for name, module in (("eager", eager), ("torchscript", scripted)) if module is not None}
    for call in timed:
        check_agreement(model, torch_steps, call, min(batches), min(steps), report.baseline, say)
        for batch in batches:
            for n in steps:
                say(f"{call.kind} batch {batch} steps {n}")
                runner = Runner(model, torch_steps, call, batch, n)
                best = best_times(runner.functions, rounds)
                report.rows.extend(BenchRow(call.kind, batch, n, name, seconds) for name, seconds in best.items())
    if one_call:
        say("one call, batch 1, one step")
        sampler = runtime.Sampler("greedy") if model.feedback is not None and model.feedback.via == SAMPLE else None
        report.one_call = bench_one_call(model, eager, rounds, sampler=sampler)
    return report

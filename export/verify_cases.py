"""Builds the checks of verification from a model's signature: steps, teacher-forced sequences, closed-loop rollouts.

Every case comes from the specs (`runtime.Model`'s inputs, outputs, states and feedback), so one
builder serves every signature; what a signature allows adds cases: every id of a tokens input,
the training series of a one-value input, closed-loop rollouts where an output is fed back as it
is (the sampled rollouts are `export.verify_sampling`'s). Inputs are time-first here whatever the
model's layout; `export.verify_forms` turns them into the layout the runtime takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

import runtime
from rnn.config import CUSTOM, Config, training_series
from rnn.data import pairs
from runtime.manifest import IDENTITY, TensorSpec

from .test_data import random_tensor
from .verify_data import UserData
from .verify_report import ROLLOUT_ATOL, SEQUENCE_ATOL, STEP_ATOL, Outputs

VERIFY_SEED = 1234
STEP_BATCHES = (1, 3, 64)
# (steps, batch) of the random teacher-forced checks; every batch size of the fused forms' range
# (4096: past runtime.fused.PARALLEL_MIN_BATCH, where a fused call is split across workers)
SEQUENCES_RANDOM = ((1000, 3), (200, 64), (200, 4096))
SHORT_SEQUENCE = (1, 3)  # (steps, batch): one teacher-forced step through every sequence form
VERIFY_ROLLOUT_STEPS = 200  # length of every closed-loop check
ROLLOUT_BATCHES = (3, 64, 4096)  # random starts, beside the one from the data's first point
# A sequence or rollout case whose inputs, outputs and states would take more than this (a wide
# logits output at batch 4096, say) runs fewer steps, or none where one step is over it: the
# report's ``shortened`` says which. The seed's widest case takes 6.6 MB.
CASE_MAX_BYTES = 64 * 2**20
COVERAGE_BATCH = 64  # streams of the every-id check: ceil(V / 64) steps cover a vocabulary of V
MAX_COVERAGE_STEP_BATCH = 4096  # the every-id single step runs at batch V up to this vocabulary

# The calls a form can answer: one step, a teacher-forced sequence, a closed-loop rollout fed back
# as it is, a sampled rollout (`export.verify_sampling`).
STEP_ONCE, PREDICT, GENERATE, SAMPLED = "step_once", "predict", "generate", "sampled"

State = tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Case:
    """One check: a call with its inputs (time-first, by name) and state, and its tolerance."""

    check: str
    call: str  # STEP_ONCE, PREDICT or GENERATE
    inputs: Outputs  # STEP_ONCE/GENERATE: (batch, ...); PREDICT: (steps, batch, ...)
    state: State
    tolerance: float
    steps: int = 0  # GENERATE: the rollout's length


@dataclass
class Plan:
    """The cases of one model, the start of its divergence-horizon rollout (None: no closed loop)
    and the cases cut to fit CASE_MAX_BYTES (check -> how)."""

    cases: list[Case]
    horizon_start: tuple[Outputs, State] | None
    shortened: dict[str, str] = field(default_factory=dict)


def closed_loop(model: runtime.Model) -> bool:
    """Whether an output is fed back as an input as it is (rollouts of values, a divergence horizon)."""
    return model.feedback is not None and model.feedback.via == IDENTITY


def takes_series(model: runtime.Model) -> bool:
    """Whether the model's one input is one real value a step: the training series fits it."""
    return len(model.inputs) == 1 and not model.inputs[0].is_tokens and model.inputs[0].count == 1


class CaseBuilder:
    """Seeded random inputs and states of each tensor's own dtype and range, and the cases made of them."""

    def __init__(self, model: runtime.Model) -> None:
        self.model = model
        self.rng = np.random.default_rng(VERIFY_SEED)

    def inputs(self, batch: int, *leading: int) -> Outputs:
        return {t.name: random_tensor(t, batch, self.rng, *leading) for t in self.model.inputs}

    def state(self, batch: int) -> State:
        return tuple(random_tensor(s, batch, self.rng) for s in self.model.states)

    def steps(self) -> list[Case]:
        return [Case(f"step b={b}", STEP_ONCE, self.inputs(b), self.state(b), STEP_ATOL) for b in STEP_BATCHES]

    def sequence(self, steps: int, batch: int) -> Case:
        label = f"sequence b={batch} T={steps}"
        return Case(label, PREDICT, self.inputs(batch, steps), self.state(batch), SEQUENCE_ATOL)

    def rollout(self, batch: int) -> Case:
        label = f"rollout b={batch} T={VERIFY_ROLLOUT_STEPS}"
        return Case(label, GENERATE, self.inputs(batch), self.state(batch), ROLLOUT_ATOL, VERIFY_ROLLOUT_STEPS)

    def coverage(self, spec: TensorSpec) -> list[Case]:
        """Checks in which every id 0 .. V - 1 of ``spec`` appears: single steps at batch V (a
        shuffled vocabulary; above MAX_COVERAGE_STEP_BATCH ids, one step per part of that many),
        the guarantee, since a step is compared whole; and a teacher-forced sequence of
        COVERAGE_BATCH streams whose ids are a shuffled vocabulary, padded with random ids to fill
        the last step (compared as far as float32 itself stays within the tolerance)."""
        vocabulary, rng = int(spec.vocabulary), self.rng
        cases = []
        ids = rng.permutation(vocabulary).astype(np.int64)
        parts = -(-vocabulary // MAX_COVERAGE_STEP_BATCH)
        for part in range(parts):
            chunk = ids[part * MAX_COVERAGE_STEP_BATCH : (part + 1) * MAX_COVERAGE_STEP_BATCH]
            step_inputs = self.inputs(len(chunk))
            step_inputs[spec.name] = chunk
            label = f"every id of {spec.name} (V={vocabulary}), one step" + (
                f" {part + 1}/{parts}" if parts > 1 else ""
            )
            cases.append(Case(label, STEP_ONCE, step_inputs, self.state(len(chunk)), STEP_ATOL))
        batch = min(COVERAGE_BATCH, vocabulary)
        steps = -(-vocabulary // batch)
        ids = np.concatenate([rng.permutation(vocabulary), rng.integers(0, vocabulary, steps * batch - vocabulary)])
        sequence = self.inputs(batch, steps)
        sequence[spec.name] = ids.reshape(steps, batch).astype(np.int64)
        label = f"every id of {spec.name} (V={vocabulary}) b={batch} T={steps}"
        cases.append(Case(label, PREDICT, sequence, self.state(batch), SEQUENCE_ATOL))
        return cases


def build_cases(model: runtime.Model, config: Config, folder: Path, data: UserData | None = None) -> Plan:
    """The checks in layers (steps, sequences, rollouts) for ``model``'s signature.

    A model of one real input also gets the folder's training series (teacher-forced, and rolled
    out from its first point where the loop is closed); with the user's ``data``, its own checks
    too, and for a user's module (whose config names no training series, only the built-in sine)
    they replace the sine's. The divergence horizon starts from the data's first point (the
    user's for a user's module, else the training series'), else from a random one."""
    build = CaseBuilder(model)
    cases = build.steps()
    for spec in (t for t in model.inputs if t.is_tokens):
        cases += build.coverage(spec)
    users_own = data is not None and config.model.kind == CUSTOM  # the user's data stands for the sine it never saw
    series = None if users_own or not takes_series(model) else _training_series(model, config, folder)
    if series is not None:
        label = f"sequence data T={len(next(iter(series.values())))}"
        cases.append(Case(label, PREDICT, series, model.initial_state(1), SEQUENCE_ATOL))
    cases += [build.sequence(steps, batch) for steps, batch in SEQUENCES_RANDOM]
    short = build.sequence(*SHORT_SEQUENCE)
    if data is not None:
        label = f"user data b={data.batch_size} T={data.steps}"
        cases.append(Case(label, PREDICT, data.values, model.initial_state(data.batch_size), SEQUENCE_ATOL))
    if not closed_loop(model):
        return _fitted(model, [*cases, short], None)
    if data is not None:
        label = f"user data b={data.batch_size} rollout T={VERIFY_ROLLOUT_STEPS}"
        state = model.initial_state(data.batch_size)
        cases.append(Case(label, GENERATE, first_step(data.values), state, ROLLOUT_ATOL, VERIFY_ROLLOUT_STEPS))
    if series is not None:
        label = f"rollout data T={VERIFY_ROLLOUT_STEPS}"
        cases.append(
            Case(label, GENERATE, first_step(series), model.initial_state(1), ROLLOUT_ATOL, VERIFY_ROLLOUT_STEPS)
        )
    cases += [build.rollout(batch) for batch in ROLLOUT_BATCHES]
    if users_own:
        start = first_step(data.values), model.initial_state(data.batch_size)
    elif series is not None:
        start = first_step(series), model.initial_state(1)
    else:
        start = build.inputs(1), model.initial_state(1)
    return _fitted(model, [*cases, short], start)


def first_step(sequences: Outputs) -> Outputs:
    """The first step of time-first sequences by name: where a rollout over them starts."""
    return {name: values[0] for name, values in sequences.items()}


def _training_series(model: runtime.Model, config: Config, folder: Path) -> Outputs:
    """The folder's training inputs as one stream, (steps, 1, 1) by the input's name."""
    inputs, _ = pairs(training_series(config.train, folder).values)
    return {model.input_names[0]: inputs.astype(np.float32).reshape(-1, 1, 1)}


def _fitted(model: runtime.Model, cases: list[Case], start: tuple[Outputs, State] | None) -> Plan:
    """The plan with every multi-step case cut to the steps CASE_MAX_BYTES holds (dropped where one step is over)."""
    plan = Plan([], start)
    for case in cases:
        fitted, note = fit_case(model, case)
        if note is not None:
            plan.shortened[case.check] = note
        if fitted is not None:
            plan.cases.append(fitted)
    return plan


def fit_case(model: runtime.Model, case: Case) -> tuple[Case | None, str | None]:
    """``case`` as it fits CASE_MAX_BYTES (itself, fewer steps, or None), and a note where it changed."""
    if case.call == STEP_ONCE:
        return case, None
    batch = next(iter(case.inputs.values())).shape[0 if case.call == GENERATE else 1]
    in_bytes = sum(_bytes(t) for t in model.inputs)
    out_bytes = sum(_bytes(t) for t in model.outputs)
    state_bytes = sum(_bytes(s) for s in model.states)
    per_step = batch * (out_bytes + (in_bytes if case.call == PREDICT else 0))
    fixed = batch * (state_bytes + (in_bytes if case.call == GENERATE else 0))
    steps = case.steps if case.call == GENERATE else next(iter(case.inputs.values())).shape[0]
    room = (CASE_MAX_BYTES - fixed) // per_step if per_step else steps
    if room >= steps:
        return case, None
    if room < 1:
        return None, f"not run: one step at batch {batch} takes {(fixed + per_step) / 2**20:.0f} MiB"
    label = case.check.replace(f"T={steps}", f"T={room}")
    note = f"run as {label!r}: {steps} steps would take {(fixed + steps * per_step) / 2**20:.0f} MiB"
    if case.call == GENERATE:
        return replace(case, check=label, steps=int(room)), note
    return replace(case, check=label, inputs={k: v[:room] for k, v in case.inputs.items()}), note


def _bytes(spec: TensorSpec) -> int:
    return spec.count * (8 if spec.is_tokens else 4)

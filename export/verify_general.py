"""Verification of a module beyond x -> y (a format 2 manifest): named inputs, token ids, logits,
states of any rank, batch-first sequences, sampled feedback.

The same layers as `export.verify` (single steps, teacher-forced sequences, closed loops), the
same tolerances, drift allowance and report, over inputs of each tensor's own dtype and range:
float inputs and states uniform over INPUT_RANGE, token ids uniform over the vocabulary, and
for every tokens input a check in which **every id of its vocabulary** appears (a check of id 0
only is not a check: a model that mishandles ids above some value passes it). Where generation
samples its next token from logits, the greedy and the seeded-sampling rollouts of every form
are compared with eager PyTorch fed the same uniform draws, token for token (`export.sampling`):
the first step where they part is reported, and a parting where the drawn uniform falls within
float32 resolution of a boundary of the cumulative distribution (a CDF tie) is expected and
reported as such; any other parting fails.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import runtime
from rnn.checkpoint import Checkpoint
from rnn.data import load_named_arrays
from runtime.errors import DataError, ShapeError
from runtime.fused import ROLLOUT_FORMS, SEQUENCE_FORMS, STEP
from runtime.manifest import BATCH_FIRST, IDENTITY, SAMPLE, TensorSpec

from .sampling import eager_sample, module_step, partings
from .test_data import random_tensor
from .verify import (
    DRIFT_ALLOWANCE,
    ROLLOUT_ATOL,
    SEQUENCE_ATOL,
    STEP_ATOL,
    VERIFY_ROLLOUT_STEPS,
    VERIFY_SEED,
    Comparison,
    Outputs,
    Progress,
    VerifyReport,
    compare,
    trusted_steps,
)

STEP_BATCHES = (1, 3, 64)
SEQUENCES = ((100, 3), (50, 64))  # (steps, batch) of the random teacher-forced checks
ROLLOUT_BATCHES = (3, 64)
COVERAGE_BATCH = 64  # streams of the every-id check: ceil(V / 64) steps cover a vocabulary of V
MAX_COVERAGE_STEP_BATCH = 4096  # the every-id single step runs at batch V up to this vocabulary


@dataclass(frozen=True)
class GeneralCase:
    check: str
    call: str  # "step", "predict" or "generate"
    inputs: dict[str, np.ndarray]  # step/generate: (batch, ...); predict: (steps, batch, ...) time-first
    state: tuple[np.ndarray, ...]
    tolerance: float
    steps: int = 0


class _Torch:
    """Eager PyTorch (or TorchScript) over numpy, time-first, outputs and states by name."""

    def __init__(self, module: Callable, manifest: runtime.Manifest, dtype: torch.dtype = torch.float32) -> None:
        self.module, self.manifest, self.dtype = module, manifest, dtype
        self.output_names = [t.name for t in manifest.outputs]
        self.state_outputs = [s.output for s in manifest.state]

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        return tensor if tensor.dtype == torch.int64 else tensor.to(self.dtype)

    def _call(self, inputs: dict[str, torch.Tensor], state: tuple) -> tuple[list, tuple]:
        result = self.module(*(inputs[t.name] for t in self.manifest.inputs), *state)
        count = len(self.output_names)
        return list(result[:count]), tuple(result[count:])

    def run(self, case: GeneralCase) -> Outputs:
        state = tuple(self._tensor(s) for s in case.state)
        with torch.no_grad():
            if case.call == "step":
                outputs, state = self._call({k: self._tensor(v) for k, v in case.inputs.items()}, state)
                stacked = [o.numpy() for o in outputs]
            elif case.call == "predict":
                steps = next(iter(case.inputs.values())).shape[0]
                collected: list[list] = [[] for _ in self.output_names]
                for t in range(steps):
                    outputs, state = self._call({k: self._tensor(v[t]) for k, v in case.inputs.items()}, state)
                    for bucket, output in zip(collected, outputs):
                        bucket.append(output.numpy())
                stacked = [np.stack(bucket) for bucket in collected]
            else:  # generate, identity feedback: the fed-back output is the next value of its input
                feedback = self.manifest.closed_loop
                inputs = {k: self._tensor(v) for k, v in case.inputs.items()}
                collected = [[] for _ in self.output_names]
                for _ in range(case.steps):
                    outputs, state = self._call(inputs, state)
                    for bucket, output in zip(collected, outputs):
                        bucket.append(output.numpy())
                    inputs[feedback.input] = outputs[self.output_names.index(feedback.output)]
                stacked = [np.stack(bucket) for bucket in collected]
        return {
            **dict(zip(self.output_names, stacked)),
            **dict(zip(self.state_outputs, (s.numpy() for s in state))),
        }


class _Runtime:
    """One form of the exported models through the torch-free runtime, in the manifest's layout."""

    def __init__(self, model: runtime.Model, form: str) -> None:
        self.model, self.form = model, form
        self.manifest = model.manifest
        self.output_names = [t.name for t in self.manifest.outputs]
        self.state_outputs = [s.output for s in self.manifest.state]
        self.batch_first = self.manifest.layout == BATCH_FIRST

    def _sequence_in(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.swapaxes(array, 0, 1)) if self.batch_first else array

    def _named(self, outputs: Any, sequence: bool) -> dict[str, np.ndarray]:
        named = dict(outputs) if isinstance(outputs, dict) else {self.output_names[0]: outputs}
        if sequence and self.batch_first:
            named = {k: np.swapaxes(v, 0, 1) for k, v in named.items()}
        return named

    def run(self, case: GeneralCase) -> Outputs:
        if case.call == "step":
            outputs, state = self.model.step(dict(case.inputs), case.state)
            named = self._named(outputs, sequence=False)
        elif case.call == "predict":
            inputs = {k: self._sequence_in(v) for k, v in case.inputs.items()}
            outputs, state = self.model.predict(inputs, case.state, form=self.form)
            named = self._named(outputs, sequence=True)
        else:
            outputs, state = self.model.generate(dict(case.inputs), case.steps, case.state, form=self.form)
            named = self._named(outputs, sequence=True)
        return {**named, **dict(zip(self.state_outputs, state))}


def general_cases(model: runtime.Model, data: dict[str, np.ndarray] | None) -> list[GeneralCase]:
    """The checks of a format 2 model, from seeded inputs of each tensor's dtype and range."""
    manifest = model.manifest
    rng = np.random.default_rng(VERIFY_SEED)

    def inputs(batch: int, *leading: int) -> dict[str, np.ndarray]:
        return {t.name: random_tensor(t, batch, rng, *leading) for t in manifest.inputs}

    def state(batch: int) -> tuple[np.ndarray, ...]:
        return tuple(random_tensor(s, batch, rng) for s in manifest.state)

    cases = [GeneralCase(f"step b={b}", "step", inputs(b), state(b), STEP_ATOL) for b in STEP_BATCHES]
    for spec in (t for t in manifest.inputs if t.is_tokens):
        cases += _coverage(spec, manifest.inputs, inputs, state, rng)
    for steps, batch in SEQUENCES:
        cases.append(
            GeneralCase(f"sequence b={batch} T={steps}", "predict", inputs(batch, steps), state(batch), SEQUENCE_ATOL)
        )
    if data is not None:
        batch = next(iter(data.values())).shape[1]
        steps = next(iter(data.values())).shape[0]
        cases.append(
            GeneralCase(f"user data b={batch} T={steps}", "predict", data, model.initial_state(batch), SEQUENCE_ATOL)
        )
    feedback = manifest.closed_loop
    if feedback is not None and feedback.via == IDENTITY:
        for batch in ROLLOUT_BATCHES:
            cases.append(
                GeneralCase(
                    f"rollout b={batch} T={VERIFY_ROLLOUT_STEPS}",
                    "generate",
                    inputs(batch),
                    state(batch),
                    ROLLOUT_ATOL,
                    VERIFY_ROLLOUT_STEPS,
                )
            )
        if data is not None:
            start = {k: v[0] for k, v in data.items()}
            batch = next(iter(start.values())).shape[0]
            cases.append(
                GeneralCase(
                    f"user data rollout T={VERIFY_ROLLOUT_STEPS}",
                    "generate",
                    start,
                    model.initial_state(batch),
                    ROLLOUT_ATOL,
                    VERIFY_ROLLOUT_STEPS,
                )
            )
    return cases


def _coverage(spec: TensorSpec, specs, inputs, state, rng: np.random.Generator) -> list[GeneralCase]:
    """Checks in which every id 0 .. V - 1 of ``spec`` appears: single steps at batch V (a
    shuffled vocabulary; above MAX_COVERAGE_STEP_BATCH ids, one step per part of that many),
    the guarantee, since a step is compared whole; and a teacher-forced sequence of
    COVERAGE_BATCH streams whose ids are a shuffled vocabulary, padded with random ids to fill
    the last step (compared as far as float32 itself stays within the tolerance)."""
    vocabulary = int(spec.vocabulary)
    cases = []
    ids = rng.permutation(vocabulary).astype(np.int64)
    parts = -(-vocabulary // MAX_COVERAGE_STEP_BATCH)
    for part in range(parts):
        chunk = ids[part * MAX_COVERAGE_STEP_BATCH : (part + 1) * MAX_COVERAGE_STEP_BATCH]
        step_inputs = inputs(len(chunk))
        step_inputs[spec.name] = chunk
        label = f"every id of {spec.name} (V={vocabulary}), one step" + (f" {part + 1}/{parts}" if parts > 1 else "")
        cases.append(GeneralCase(label, "step", step_inputs, state(len(chunk)), STEP_ATOL))
    batch = min(COVERAGE_BATCH, vocabulary)
    steps = -(-vocabulary // batch)
    ids = np.concatenate([rng.permutation(vocabulary), rng.integers(0, vocabulary, steps * batch - vocabulary)])
    sequence = inputs(batch, steps)
    sequence[spec.name] = ids.reshape(steps, batch).astype(np.int64)
    cases.append(
        GeneralCase(
            f"every id of {spec.name} (V={vocabulary}) b={batch} T={steps}",
            "predict",
            sequence,
            state(batch),
            SEQUENCE_ATOL,
        )
    )
    return cases


def check_general(case: GeneralCase, eager: _Torch, exact: _Torch, forms: dict[str, Any], report: VerifyReport) -> None:
    """Compares every form with eager PyTorch on ``case`` (as `export.verify._check` does: over
    multi-step checks the tolerance grows with float32's own drift from float64)."""
    expected = eager.run(case)
    tolerance, keep = case.tolerance, None
    if case.call != "step":
        reference = exact.run(case)
        first = eager.output_names[0]
        keep = trusted_steps(expected[first], reference[first], case.tolerance)
        compared = [first] if keep is not None else list(expected)
        drift = max(
            float(np.max(np.abs(np.asarray(expected[n][:keep], np.float64) - reference[n][:keep]))) for n in compared
        )
        tolerance = max(case.tolerance, DRIFT_ALLOWANCE * drift)
        if keep is not None or tolerance > case.tolerance:
            report.limits[case.check] = {"steps": keep, "float32_drift": drift, "tolerance": tolerance}
        if keep is not None:
            expected = {first: expected[first][:keep]}
    for name, form in forms.items():
        if not form_answers(name, case.call):
            continue
        actual = form.run(case)
        if keep is not None:
            actual = {key: actual[key][:keep] for key in expected if key in actual}
        report.comparisons.extend(compare(name, case.check, expected, actual, tolerance))


def form_answers(name: str, call: str) -> bool:
    """Whether the verified form ``name`` answers ``call``: TorchScript and the step model every
    call, a fused sequence form predict, a fused rollout generate (the sampling forms answer
    only sampled generation, `check_sampling`)."""
    if name in ("torchscript", "onnx"):
        return True
    return (call == "predict" and name in SEQUENCE_FORMS) or (call == "generate" and name in ROLLOUT_FORMS)


def verify_general(
    folder: Path,
    model: runtime.Model,
    checkpoint: Checkpoint,
    report: VerifyReport,
    torchscript: Callable | None,
    progress: Progress | None,
    data: dict[str, np.ndarray] | None,
) -> None:
    """Runs every check of a format 2 model into ``report``."""
    manifest = model.manifest
    eager = _Torch(checkpoint.model, manifest)
    exact = _Torch(copy.deepcopy(checkpoint.model).double(), manifest, torch.float64)
    forms: dict[str, Any] = {}
    if torchscript is not None:
        forms["torchscript"] = _Torch(torchscript, manifest)
    forms["onnx"] = _Runtime(model, STEP)
    for form in model.forms:  # a batch-first folder of the classic signature keeps its fused forms
        if form in SEQUENCE_FORMS or form in ROLLOUT_FORMS:
            forms[form] = _Runtime(model, form)
    cases = general_cases(model, data)
    total = len(cases) + 1
    for index, case in enumerate(cases):
        if progress is not None:
            progress(index, total, case.check)
        check_general(case, eager, exact, forms, report)
    feedback = manifest.closed_loop
    if feedback is not None and feedback.via == SAMPLE:
        samplings = sampling_cases(model)
        for index, case in enumerate(samplings):
            if progress is not None:
                progress(len(cases) + index, len(cases) + len(samplings), case.check)
            check_sampling(case, checkpoint.model, torchscript, model, report)
    if feedback is None:
        report.horizon_skipped = "no output is fed back as an input: there is no closed loop to roll out"
    elif feedback.via == SAMPLE:
        report.horizon_skipped = "generation samples tokens: its rollouts are compared token for token instead"
    else:
        report.horizon_skipped = "measured for the classic signature only"


SAMPLING_STEPS = 200  # tokens of each sampled rollout compared
SAMPLING_BATCHES = (3, 64)
SAMPLING_TEMPERATURE = 0.8
SAMPLING_TOP_K = 5
SAMPLING_TOP_P = 0.9
SAMPLING_SEED = 7


@dataclass(frozen=True)
class SamplingCase:
    check: str
    token0: np.ndarray  # (batch,) int64
    others: dict[str, np.ndarray]  # the held inputs
    state: tuple[np.ndarray, ...]
    strategy: str
    options: dict[str, Any]  # temperature, top_k, top_p as runtime.Sampler takes them

    def sampler(self) -> runtime.Sampler:
        return runtime.Sampler(self.strategy, seed=SAMPLING_SEED, **self.options)


def sampling_cases(model: runtime.Model) -> list[SamplingCase]:
    """Greedy, temperature, top-k and top-p rollouts from seeded random starts."""
    manifest = model.manifest
    feedback = manifest.closed_loop
    rng = np.random.default_rng(VERIFY_SEED + 1)
    token = next(t for t in manifest.inputs if t.name == feedback.input)
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
                continue  # the wide batch once, with the plain temperature draw
            cases.append(
                SamplingCase(
                    f"{label} b={batch} T={SAMPLING_STEPS}",
                    random_tensor(token, batch, rng),
                    {t.name: random_tensor(t, batch, rng) for t in manifest.inputs if t.name != token.name},
                    tuple(random_tensor(s, batch, rng) for s in manifest.state),
                    strategy,
                    options,
                )
            )
    return cases


def check_sampling(
    case: SamplingCase,
    module: Callable,
    torchscript: Callable | None,
    model: runtime.Model,
    report: VerifyReport,
) -> None:
    """Every form's tokens against eager PyTorch's, fed the same uniforms: equal, or parting only
    at a float32 CDF tie (then compared up to the parting and reported in ``report.partings``)."""
    manifest = model.manifest
    feedback = manifest.closed_loop
    names = [t.name for t in manifest.inputs]
    outputs = [t.name for t in manifest.outputs]
    state_outputs = [s.output for s in manifest.state]
    greedy = case.strategy == "greedy"
    uniforms = None if greedy else case.sampler().uniforms(SAMPLING_STEPS, len(case.token0))
    options = {"temperature": case.options.get("temperature", 1.0), "top_k": case.options.get("top_k")}
    options["top_p"] = case.options.get("top_p")

    def eager_run(step_module: Callable) -> tuple[np.ndarray, tuple, np.ndarray]:
        step_fn = module_step(step_module, names, feedback.input, outputs, feedback.output)
        return eager_sample(
            step_fn, case.token0, case.others, case.state, uniforms, greedy=greedy, steps=SAMPLING_STEPS, **options
        )

    expected, final, gaps = eager_run(module)
    results: dict[str, tuple[np.ndarray, tuple]] = {}
    if torchscript is not None:
        tokens, states, _ = eager_run(torchscript)
        results["torchscript"] = (tokens, states)
    wanted = "rollout_greedy" if greedy else "rollout_sample"
    for form in (STEP, wanted):
        if form not in model.forms:
            continue
        x0 = {feedback.input: case.token0, **case.others}
        tokens, states = model.generate(x0, SAMPLING_STEPS, case.state, sampler=case.sampler(), form=form)
        if manifest.layout == BATCH_FIRST:
            tokens = np.swapaxes(tokens, 0, 1)
        results["onnx" if form == STEP else form] = (np.asarray(tokens), tuple(states))
    for name, (tokens, states) in results.items():
        shape = list(np.shape(tokens))
        found = partings(expected, tokens, gaps)  # the first parting of every stream that parts
        wrong = [p for p in found if not p.tie]
        if wrong:
            first = min(wrong, key=lambda p: (p.step, p.stream))
            streams = f"{len(wrong)} of {len(case.token0)} streams part so"
            problem = f"tokens part from eager PyTorch's at {first.describe()}; {streams}"
            report.comparisons.append(Comparison(name, case.check, "tokens", shape, None, None, 0.0, False, problem))
            continue
        report.comparisons.append(Comparison(name, case.check, "tokens", shape, 0.0, 0.0, 0.0, True))
        if found:
            first = min(found, key=lambda p: (p.step, p.stream))
            report.partings[f"{name} / {case.check}"] = (
                f"{first.describe()}; {len(found)} of {len(case.token0)} streams part"
            )
        # the final states of the streams that never part (a parted stream's state is past the tie)
        kept = np.setdiff1d(np.arange(len(case.token0)), [p.stream for p in found])
        if kept.size:
            axes = [s.batch_axis for s in manifest.state]
            final_expected = {n: np.take(a, kept, axis=x) for n, a, x in zip(state_outputs, final, axes)}
            final_actual = {n: np.take(np.asarray(a), kept, axis=x) for n, a, x in zip(state_outputs, states, axes)}
            report.comparisons.extend(compare(name, case.check, final_expected, final_actual, ROLLOUT_ATOL))


def general_user_data(inputs: Any, model: runtime.Model) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The user's data for a format 2 model, time-first, and what verify.json records of it.

    ``inputs``: {input name: array} or the path of an ``.npz`` file of arrays named after the
    inputs, each (steps, batch, *sizes) ((batch, steps, *sizes) for a batch-first model) or
    (steps, *sizes) for one stream; token ids integers below the vocabulary."""
    manifest = model.manifest
    source, file_sha256 = "arrays", None
    if isinstance(inputs, (str, Path)) or hasattr(inputs, "__fspath__"):
        source = str(Path(inputs))
        inputs, file_sha256 = load_named_arrays(inputs)
    if not isinstance(inputs, dict):
        raise ShapeError(
            f"data for a model with inputs {[t.name for t in manifest.inputs]} must be a dict of arrays by input name "
            "or an .npz file"
        )
    names = [t.name for t in manifest.inputs]
    if sorted(inputs) != sorted(names):
        raise ShapeError(f"data must hold exactly the inputs {names}, got {sorted(inputs)}")
    batch_first = manifest.layout == BATCH_FIRST
    values: dict[str, np.ndarray] = {}
    for spec in manifest.inputs:
        array = np.asarray(inputs[spec.name])
        if array.ndim == len(spec.sizes) + 1:  # one stream
            array = array[:, None] if not batch_first else array[None]
        if array.ndim != len(spec.sizes) + 2 or tuple(array.shape[2:]) != spec.sizes or 0 in array.shape:
            layout = "(batch, steps" if batch_first else "(steps, batch"
            raise ShapeError(
                f"data {spec.name!r} must be {layout}{''.join(f', {d}' for d in spec.sizes)}), got shape {array.shape}"
            )
        if batch_first:
            array = np.swapaxes(array, 0, 1)
        values[spec.name] = _checked(spec, array)
    shapes = {v.shape[:2] for v in values.values()}
    if len(shapes) != 1:
        raise ShapeError(f"data arrays must share their steps and batch axes, got {sorted(shapes)}")
    digest = hashlib.sha256(b"".join(values[n].tobytes() for n in names)).hexdigest()
    return values, {
        "source": source,
        "file_sha256": file_sha256,
        "shape": list(next(iter(shapes))),
        "inputs": {n: {"shape": list(values[n].shape), "dtype": str(values[n].dtype)} for n in names},
        "sha256": digest,
    }


def _checked(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    if spec.is_tokens:
        if array.dtype.kind not in "iu" and not (array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0)):
            raise DataError(f"data {spec.name!r} must hold integer token ids, got {array.dtype}")
        ids = array.astype(np.int64)
        bad = np.argwhere((ids < 0) | (ids >= int(spec.vocabulary)))
        if bad.size:
            where = tuple(int(i) for i in bad[0])
            raise DataError(
                f"data {spec.name!r} holds id {int(ids[where])} at {where}: ids must be 0 .. {int(spec.vocabulary) - 1}"
            )
        return np.ascontiguousarray(ids)
    if array.dtype.kind not in "iuf":
        raise DataError(f"data {spec.name!r} must hold real numbers, got {array.dtype}")
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise DataError(f"data {spec.name!r} holds NaN or infinity (or values float32 cannot hold)")
    return np.ascontiguousarray(values)

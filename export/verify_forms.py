"""The ways of running a model that verification compares: eager PyTorch or TorchScript, and each runtime form.

A form runs a `export.verify_cases.Case` and gives its outputs and final states by name, time-first.
Which calls a runtime form answers follows from its kind (`form_calls`): the step model every
call, a sequence form teacher-forced sequences, a rollout form closed loops fed back as they are,
a sampling form sampled rollouts. A form of no known kind answers nothing, and verification fails
it loudly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import runtime
from runtime.fused import ROLLOUT_FORMS, SAMPLING_FORMS, SEQUENCE_FORMS, STEP
from runtime.manifest import BATCH_FIRST

from .verify_cases import GENERATE, PREDICT, SAMPLED, STEP_ONCE, Case
from .verify_report import Outputs

ONNX = "onnx"  # how reports name the step model run by the runtime
EAGER = "eager"  # how the divergence horizons name eager PyTorch
TORCHSCRIPT = "torchscript"


def form_calls(form: str) -> tuple[str, ...]:
    """The calls runtime form ``form`` answers; () for a form the verifier does not know how to check."""
    if form == STEP:
        return (STEP_ONCE, PREDICT, GENERATE, SAMPLED)
    if form in SEQUENCE_FORMS:
        return (PREDICT,)
    if form in ROLLOUT_FORMS:
        return (GENERATE,)
    if form in SAMPLING_FORMS:
        return (SAMPLED,)
    return ()


def report_name(form: str) -> str:
    """How reports name runtime form ``form`` (the step model is "onnx", beside "torchscript")."""
    return ONNX if form == STEP else form


class TorchForm:
    """Eager PyTorch (or TorchScript) over numpy, time-first, outputs and states by name; ``dtype``
    is the precision floats run in (float64 for the reference of the drift and the horizons)."""

    calls = (STEP_ONCE, PREDICT, GENERATE, SAMPLED)

    def __init__(self, module: Callable, model: runtime.Model, dtype: torch.dtype = torch.float32) -> None:
        self.module, self.dtype = module, dtype
        self.input_names = list(model.input_names)
        self.output_names = list(model.output_names)
        self.state_outputs = [s.output for s in model.states]
        self.feedback = model.feedback

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        return tensor if tensor.dtype == torch.int64 else tensor.to(self.dtype)

    def _call(self, inputs: dict[str, torch.Tensor], state: tuple) -> tuple[list, tuple]:
        result = self.module(*(inputs[name] for name in self.input_names), *state)
        count = len(self.output_names)
        return list(result[:count]), tuple(result[count:])

    def run(self, case: Case) -> Outputs:
        state = tuple(self._tensor(s) for s in case.state)
        with torch.no_grad():
            if case.call == STEP_ONCE:
                outputs, state = self._call({k: self._tensor(v) for k, v in case.inputs.items()}, state)
                stacked = [o.numpy() for o in outputs]
            else:
                stacked, state = self._loop(case, state)
        return {
            **dict(zip(self.output_names, stacked)),
            **dict(zip(self.state_outputs, (s.numpy() for s in state))),
        }

    def _loop(self, case: Case, state: tuple) -> tuple[list[np.ndarray], tuple]:
        """Teacher-forced over ``case.inputs`` (PREDICT), or closed: the fed-back output is the next
        value of its input, the other inputs held (GENERATE)."""
        closed = case.call == GENERATE
        inputs = {k: self._tensor(v) for k, v in case.inputs.items()}  # PREDICT: whole sequences
        steps = case.steps if closed else next(iter(inputs.values())).shape[0]
        source = self.output_names.index(self.feedback.output) if closed else -1
        collected: list[list] = [[] for _ in self.output_names]
        for t in range(steps):
            outputs, state = self._call(inputs if closed else {k: v[t] for k, v in inputs.items()}, state)
            for bucket, output in zip(collected, outputs):
                bucket.append(output.numpy())
            if closed:
                inputs[self.feedback.input] = outputs[source]
        return [np.stack(bucket) for bucket in collected], state


class RuntimeForm:
    """One form of the exported models through the torch-free runtime, called with ``form=`` its
    name, in the model's layout."""

    def __init__(self, model: runtime.Model, form: str) -> None:
        self.model, self.form = model, form
        self.calls = form_calls(form)
        self.batch_first = model.layout == BATCH_FIRST

    def _sequence_in(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.swapaxes(array, 0, 1)) if self.batch_first else array

    def _named(self, outputs: Any, sequence: bool) -> Outputs:
        named = dict(outputs) if isinstance(outputs, dict) else {self.model.output_names[0]: outputs}
        if sequence and self.batch_first:
            named = {k: np.swapaxes(v, 0, 1) for k, v in named.items()}
        return named

    def run(self, case: Case) -> Outputs:
        if case.call == STEP_ONCE:
            outputs, state = self.model.step(dict(case.inputs), case.state)
        elif case.call == PREDICT:
            inputs = {k: self._sequence_in(v) for k, v in case.inputs.items()}
            outputs, state = self.model.predict(inputs, case.state, form=self.form)
        else:
            outputs, state = self.model.generate(dict(case.inputs), case.steps, case.state, form=self.form)
        state_outputs = (s.output for s in self.model.states)
        return {**self._named(outputs, case.call != STEP_ONCE), **dict(zip(state_outputs, state))}

    def tokens(self, x0: Outputs, steps: int, state: tuple, sampler: runtime.Sampler) -> tuple[np.ndarray, tuple]:
        """A sampled rollout: tokens (steps, batch) time-first, and the final states."""
        tokens, states = self.model.generate(x0, steps, state, sampler=sampler, form=self.form)
        tokens = np.asarray(tokens)
        return (np.swapaxes(tokens, 0, 1) if self.batch_first else tokens), tuple(states)


Form = TorchForm | RuntimeForm

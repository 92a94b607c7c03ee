"""What each served name of a model takes and returns, for any signature: the tensors its metadata
shows (`call_tensors`), the model's parameters that the protocol's tensor metadata cannot say
(`model_parameters`: token vocabularies, the layout, the states' batch axes), a request's inputs
checked against them (`checked_inputs`), and the warm-up that creates every form's session before
the first request (`warm_up`).

Wire shapes are the manifest's with -1 for the batch axis (which a state may have anywhere) and,
for the sequence calls, a -1 steps axis before the batch (time-first) or after it (batch-first;
either way the metadata reads ``(-1, -1, *sizes)``, the ``layout`` parameter says which): token
inputs INT64 ``(-1,)`` (``(-1, -1)`` as sequences), features and every output and state FP32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import runtime
from runtime.fused import SAMPLING_FORMS
from runtime.fused import STEP as STEP_FORM
from runtime.manifest import BATCH_AXIS, BATCH_FIRST, TensorSpec

from .protocol import DATATYPE_OF, BadRequest, TensorMetadata, TooLarge

# The calls a served name makes: the `runtime.Model` method it runs, and the suffix of its name.
STEP, PREDICT, GENERATE = "step", "predict", "generate"
SUFFIXES = {STEP: "", PREDICT: "-predict", GENERATE: "-generate"}
STEPS_INPUT = "steps"  # the generate call's INT64 input: how many closed-loop steps


def wire_shape(spec: TensorSpec, steps: bool = False) -> tuple[int, ...]:
    """``spec``'s shape on the wire: -1 at the batch axis and, with ``steps``, one more -1 axis in
    front (an input's or output's batch axis is its first: (-1, -1, ...) in either layout)."""
    shape = tuple(-1 if d == BATCH_AXIS else int(d) for d in spec.shape)
    return (-1, *shape) if steps else shape


def _datatype(spec: TensorSpec) -> str:
    return "INT64" if spec.is_tokens else "FP32"


def call_tensors(model: runtime.Model, call: str) -> tuple[tuple[TensorMetadata, ...], tuple[TensorMetadata, ...]]:
    """(inputs, outputs) of ``model`` served in ``call``: the model's inputs (as sequences for
    predict; the first step's for generate, then ``steps``), its optional state inputs, its outputs
    (as sequences for predict and generate) and new states."""
    sequences_in, sequences_out = call == PREDICT, call != STEP
    inputs = [TensorMetadata(t.name, _datatype(t), wire_shape(t, sequences_in)) for t in model.inputs]
    if call == GENERATE:
        inputs.append(TensorMetadata(STEPS_INPUT, "INT64", (1,)))
    inputs += [TensorMetadata(s.name, "FP32", wire_shape(s), optional=True) for s in model.states]
    outputs = [TensorMetadata(t.name, "FP32", wire_shape(t, sequences_out)) for t in model.outputs]
    outputs += [TensorMetadata(output, "FP32", wire_shape(s)) for output, s in zip(model.state_outputs, model.states)]
    return tuple(inputs), tuple(outputs)


def model_parameters(model: runtime.Model) -> dict[str, str]:
    """What the protocol's tensor metadata cannot say, as string parameters (HTTP model metadata's
    ``parameters``, the gRPC model config's ``parameters``): ``vocabulary_size.NAME`` of each token
    input and logits output, ``batch_axis.NAME`` of each state (and its output), ``layout``
    (time_first or batch_first) and ``feedback`` ("OUTPUT -> INPUT (identity|sample)") where the
    model has a closed loop."""
    parameters = {"layout": str(model.layout)}
    for spec in (*model.inputs, *model.outputs):
        if spec.is_tokens or spec.is_logits:  # a logits output scores its last axis: the vocabulary
            size = spec.vocabulary if spec.vocabulary is not None else spec.sizes[-1]
            parameters[f"vocabulary_size.{spec.name}"] = str(int(size))
    for spec, output in zip(model.states, model.state_outputs):
        parameters[f"batch_axis.{spec.name}"] = parameters[f"batch_axis.{output}"] = str(spec.batch_axis)
    if model.feedback is not None:
        feedback = model.feedback
        parameters["feedback"] = f"{feedback.output} -> {feedback.input} ({feedback.via})"
    return parameters


def generates(model: runtime.Model) -> bool:
    """Whether the closed loop of ``model`` is served as NAME-generate by this module (identity
    feedback; sampled feedback is the sampled-generation plug-in's). A model with an input or
    state named ``steps`` has no NAME-generate (that name is generate's step count)."""
    if model.feedback is None or model.signature.sampled:
        return False
    return STEPS_INPUT not in (*model.input_names, *model.state_names)  # the name of generate's steps input


def _zeros(spec: TensorSpec, lead: tuple[int, ...]) -> np.ndarray:
    """Zeros of an input with the ``lead`` axes (batch, and steps) before its sizes."""
    return np.zeros((*lead, *spec.sizes), np.int64 if spec.is_tokens else np.float32)


def warm_up(model: runtime.Model) -> None:
    """Creates the sessions of every form now, not in the first request that needs one (running
    the teacher-forced and identity rollout forms once, at 2 steps of batch 1)."""
    x = {t.name: _zeros(t, (1,)) for t in model.inputs}  # one step at batch 1
    lead = (1, 2) if model.layout == BATCH_FIRST else (2, 1)  # 2 steps of batch 1
    xs = {t.name: _zeros(t, lead) for t in model.inputs}
    for form in model.forms:
        if form == STEP_FORM:
            continue
        if form in SAMPLING_FORMS:
            model.fused(form)  # sampled rollouts need a sampler: their session is created, not run
        elif form.startswith("rollout"):
            if model.feedback is not None:
                model.generate(x, 2, form=form)
        else:
            model.predict(xs, form=form)


def check_tensors(
    by_name: dict[str, TensorMetadata], model_name: str, inputs: dict[str, np.ndarray], held: bool, max_elements: int
) -> None:
    """Each input one of ``by_name``'s tensors, of its datatype, shape and size; every required one
    given; with ``held`` (a sequence past its start) no optional (state) input."""
    specs = by_name.values()
    for name, array in inputs.items():
        spec = by_name.get(name)
        if spec is None:
            raise BadRequest(f"model '{model_name}' has no input '{name}' (inputs: {', '.join(by_name)})")
        if held and spec.optional:
            raise BadRequest(
                f"input '{name}' is held by the server for a sequence (a sequence_start request may "
                f"set it); send only {', '.join(s.name for s in specs if not s.optional)}"
            )
        datatype = DATATYPE_OF.get(array.dtype)
        if datatype != spec.datatype:
            raise BadRequest(f"input '{name}' must be {spec.datatype}, got {datatype or array.dtype}")
        if array.ndim != len(spec.shape) or any(d not in (-1, n) for d, n in zip(spec.shape, array.shape)):
            wanted = "[" + ", ".join(str(d) for d in spec.shape) + "]"
            raise BadRequest(f"input '{name}' must have shape {wanted} (-1: any), got {list(array.shape)}")
        if array.size > max_elements:
            raise TooLarge(f"input '{name}' has {array.size} elements, the limit is {max_elements}")
    if len(inputs) == len(by_name):  # every input given
        return
    missing = [spec.name for spec in specs if not spec.optional and spec.name not in inputs]
    if missing:
        raise BadRequest(f"model '{model_name}' needs input {', '.join(repr(m) for m in missing)}")


def _one_size(model: runtime.Model, inputs: dict[str, np.ndarray], axis: int, label: str) -> int:
    """The size of every model input along ``axis`` (one for all, else BadRequest)."""
    first = model.input_names[0]
    size = inputs[first].shape[axis]
    for name in model.input_names[1:]:
        if inputs[name].shape[axis] != size:
            raise BadRequest(f"input '{name}' has {label} {inputs[name].shape[axis]}, input '{first}' {size}")
    return size


def _states(model: runtime.Model, inputs: dict[str, np.ndarray], batch: int) -> tuple[np.ndarray, ...] | None:
    """The request's state inputs (None: none given), each of ``batch`` at its batch axis."""
    states = [inputs.get(s.name) for s in model.states]
    for spec, state in zip(model.states, states):
        if state is not None and state.shape[spec.batch_axis] != batch:
            raise BadRequest(
                f"input '{spec.name}' has batch {state.shape[spec.batch_axis]} (axis {spec.batch_axis}), "
                f"input '{model.input_name}' {batch}"
            )
    given = [s is not None for s in states]
    if any(given) and not all(given):
        raise BadRequest(f"send every state input ({', '.join(model.state_names)}) or none")
    return tuple(states) if states and given[0] else None  # type: ignore[arg-type]


def lead_axes(model: runtime.Model, call: str) -> tuple[int, int | None]:
    """(the batch axis, the steps axis or None) of the model's inputs on the wire in ``call``:
    predict's sequences are (steps, batch, ...) time-first, (batch, steps, ...) batch-first."""
    if call != PREDICT:
        return 0, None
    return (0, 1) if model.layout == BATCH_FIRST else (1, 0)


def checked_inputs(
    model: runtime.Model, call: str, inputs: dict[str, np.ndarray], sequence: bool, limits: Any
) -> dict[str, Any]:
    """A request's inputs (each already of its tensor's datatype and shape, `check_tensors`) checked
    against each other and the limits: ``x`` (the model's inputs as the runtime takes them: an
    array for a model of one input, else a dict by name), ``state`` (None: the initial one, or the
    sequence's), ``batch`` and, for generate, ``steps``. (The answer's size is the fronts' check,
    before they call the engine: `answer_size`, in the encoding each writes.)"""
    batch_axis, steps_axis = lead_axes(model, call)
    batch = _one_size(model, inputs, batch_axis, "batch")
    steps = 1
    if steps_axis is not None:
        steps = _one_size(model, inputs, steps_axis, "steps")
        if steps > limits.max_steps:
            raise TooLarge(f"input '{model.input_name}' has {steps} steps, the limit is {limits.max_steps}")
    if sequence and batch != 1:
        raise BadRequest(f"a request of a sequence steps one stream: input '{model.input_name}' batch must be 1")
    names = model.input_names
    x = inputs[names[0]] if len(names) == 1 else {name: inputs[name] for name in names}
    checked = {"x": x, "state": _states(model, inputs, batch), "batch": batch}
    if call == GENERATE:
        steps = checked["steps"] = int(inputs[STEPS_INPUT][0])
        if not 1 <= steps <= limits.max_steps:
            raise BadRequest(f"input '{STEPS_INPUT}' must be 1 to {limits.max_steps}, got {steps}")
    return checked

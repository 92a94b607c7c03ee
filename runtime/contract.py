"""What each form's ONNX model must declare (names, dtypes, ranks, fixed sizes), checked on its session.

A session that declares something else is refused when it is created (an ArtifactError), before
it can compute a wrong answer: a step model whose state output is a fixed ``(1, 6)`` where the
manifest says ``(batch, 6)`` would hand one stream's row to every stream of a batch. What a
session declares can still be loose (a free axis where a size is expected, a symbolic rank is
not allowed); the runtime checks the shape of what each run returns as well.

`form_specs` gives every form of every signature (the step model, the sequence and rollout forms,
the sampling forms) from the manifest's tensors; for the classic signature the names of format 1
(``xs``, ``x0``, ``ys``), which older runtimes read too.
"""

from __future__ import annotations

from typing import Any

from .errors import ArtifactError, InputValueError
from .fused import ROLLOUT_FORMS, ROLLOUT_GREEDY, SAMPLING_FORMS, SEQUENCE_FORMS, STEP
from .manifest import BATCH_AXIS, IDENTITY, Feedback, TensorSpec

FLOAT32 = "tensor(float)"
INT64 = "tensor(int64)"
BATCH = "batch"  # a free axis (symbolic or unnamed) that takes the batch size
STEPS = "steps"  # a free axis that takes the number of steps

Dims = tuple[int | str, ...]
Spec = tuple[str, str, Dims]  # name, onnxruntime type, dims


# The sampling forms' own tensors (runtime.fused): the first token, the draws and the sampler's settings.
TOKEN0, TOKENS, SAMPLING_STEPS = "token0", "tokens", "steps"
UNIFORMS, TEMPERATURE, TOP_K, TOP_P = "uniforms", "temperature", "top_k", "top_p"


def _spec(tensor: TensorSpec, name: str | None = None) -> Spec:
    """A manifest tensor as a declared spec: int64 for tokens, a free batch axis where its shape has one."""
    dims = tuple(BATCH if d == BATCH_AXIS else int(d) for d in tensor.shape)
    return (tensor.name if name is None else name, INT64 if tensor.dtype == "int64" else FLOAT32, dims)


def _sampling_specs(
    form: str, inputs: tuple[TensorSpec, ...], state_in: list[Spec], state_out: list[Spec], feedback: Feedback | None
) -> tuple[list[Spec], list[Spec]]:
    """The sampling forms as `runtime.fused` describes them (``tokens`` (steps, batch) int64)."""
    if feedback is None or feedback.via != "sample":
        raise InputValueError(f"form {form!r} is not one a model of this signature runs")
    held = [_spec(t) for t in inputs if t.name != feedback.input]
    first = [(TOKEN0, INT64, (BATCH,)), *held, *state_in]
    if form == ROLLOUT_GREEDY:
        specs = [*first, (SAMPLING_STEPS, INT64, (1,))]
    else:
        specs = [*first, (UNIFORMS, FLOAT32, (STEPS, BATCH)), (TEMPERATURE, FLOAT32, (1,))]
        specs += [(TOP_K, INT64, (1,)), (TOP_P, FLOAT32, (1,))]
    return specs, [(TOKENS, INT64, (STEPS, BATCH)), *state_out]


# The fused forms' own tensors where the model has one input or one output (as the classic forms name them).
SEQUENCE_INPUT, ROLLOUT_INPUT, SEQUENCE_OUTPUT, ROLLOUT_STEPS = "xs", "x0", "ys", "steps"


def _stepped(spec: Spec, name: str) -> Spec:
    """``spec`` with a steps axis in front, under ``name``."""
    return (name, spec[1], (STEPS, *spec[2]))


def form_specs(
    form: str,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    states: tuple[Any, ...],
    feedback: Feedback | None,
) -> tuple[list[Spec], list[Spec]]:
    """The inputs and outputs the ONNX model of ``form`` must declare, in order, for any signature
    (``inputs``, ``outputs``, ``states`` and ``feedback`` as the manifest lists them):

    - ``step``: ``(*inputs, *states) -> (*outputs, *state outputs)``;
    - sequence forms (teacher-forced): each input with a steps axis in front ((steps, *shape),
      time-first whatever the layout), named ``xs`` where the model has one input, else the input's
      own name; then the states. Outputs: each output with a steps axis in front, named ``ys``
      where the model has one output, else the output's own name; then the state outputs;
    - rollout forms (closed loop, identity feedback only): the fed-back input at one step (named
      ``x0`` where the model has one input, else its own name), the other inputs (held for every
      step), the states, then ``steps`` int64 (1,). Outputs as the sequence forms';
    - sampling forms (sampled feedback only): ``token0`` int64 (batch,), the other inputs, the states,
      then ``steps`` (greedy) or ``uniforms``, ``temperature``, ``top_k``, ``top_p`` -> ``tokens``
      int64 (steps, batch) and the state outputs (`runtime.fused`).

    For the classic signature this is format 1's contract, name for name."""
    state_in = [_spec(s) for s in states]
    state_out = [_spec(s, s.output) for s in states]
    if form == STEP:
        return [*(_spec(t) for t in inputs), *state_in], [*(_spec(t) for t in outputs), *state_out]
    if form in SAMPLING_FORMS:
        return _sampling_specs(form, inputs, state_in, state_out, feedback)
    if form not in SEQUENCE_FORMS and form not in ROLLOUT_FORMS:
        raise InputValueError(f"{form!r} is not a form; the forms are {[STEP, *SEQUENCE_FORMS, *ROLLOUT_FORMS]}")
    one_output = len(outputs) == 1
    stepped_out = [_stepped(_spec(t), SEQUENCE_OUTPUT if one_output else t.name) for t in outputs]
    if form in SEQUENCE_FORMS:
        one_input = len(inputs) == 1
        stepped_in = [_stepped(_spec(t), SEQUENCE_INPUT if one_input else t.name) for t in inputs]
        return [*stepped_in, *state_in], [*stepped_out, *state_out]
    if feedback is None or feedback.via != IDENTITY:
        raise InputValueError(f"form {form!r} runs only a model whose output feeds back as it is")
    fed = next(t for t in inputs if t.name == feedback.input)
    first = _spec(fed, ROLLOUT_INPUT if len(inputs) == 1 else fed.name)
    held = [_spec(t) for t in inputs if t.name != feedback.input]
    return [first, *held, *state_in, (ROLLOUT_STEPS, INT64, (1,))], [*stepped_out, *state_out]


def _describe(dims: Any, kind: str) -> str:
    shape = "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")" if dims else "no shape"
    return f"{shape} {kind.removeprefix('tensor(').removesuffix(')')}"


def _fits(declared: Any, dims: Dims) -> bool:
    """Whether a declared shape (onnxruntime's: ints, names of free axes, None) fits ``dims``:
    the same rank, free where a batch or steps axis is expected, and every fixed size equal
    (a free size is allowed; the runtime checks the shapes each run returns)."""
    if not isinstance(declared, (list, tuple)) or len(declared) != len(dims):
        return False
    for got, wanted in zip(declared, dims):
        fixed = isinstance(got, int) and not isinstance(got, bool)
        if wanted in (BATCH, STEPS):
            if fixed:
                return False
        elif fixed and got != wanted:
            return False
    return True


def check_session(session: Any, form: str, file_name: str, inputs: list[Spec], outputs: list[Spec]) -> None:
    """Refuses a session whose declared inputs or outputs differ from ``inputs``/``outputs``:
    names (in order), then types, ranks and fixed sizes; one ArtifactError naming what differs."""
    declared = (list(session.get_inputs()), list(session.get_outputs()))
    names = ([arg.name for arg in declared[0]], [arg.name for arg in declared[1]])
    wanted = ([spec[0] for spec in inputs], [spec[0] for spec in outputs])
    if names != wanted:
        raise ArtifactError(
            f"the ONNX model of form {form!r} ({file_name}) has inputs {names[0]} and outputs {names[1]}, "
            f"the manifest promises {wanted[0]} and {wanted[1]}"
        )
    for role, args, specs in (("input", declared[0], inputs), ("output", declared[1], outputs)):
        for arg, (name, kind, dims) in zip(args, specs):
            if arg.type != kind or not _fits(arg.shape, dims):
                raise ArtifactError(
                    f"the ONNX model of form {form!r} ({file_name}) declares {role} {name!r} as "
                    f"{_describe(arg.shape, arg.type)}, the manifest needs {_describe(dims, kind)} "
                    f"(batch and steps free axes)"
                )

"""What each form's ONNX model must declare (names, dtypes, ranks, fixed sizes), checked on its session.

A session that declares something else is refused when it is created (an ArtifactError), before
it can compute a wrong answer: a step model whose state output is a fixed ``(1, 6)`` where the
manifest says ``(batch, 6)`` would hand one stream's row to every stream of a batch. What a
session declares can still be loose (a free axis where a size is expected, a symbolic rank is
not allowed); the runtime checks the shape of what each run returns as well.
"""

from __future__ import annotations

from typing import Any

from .errors import ArtifactError
from .fused import ROLLOUT_FORMS, SEQUENCE_FORMS, io_names

FLOAT32 = "tensor(float)"
INT64 = "tensor(int64)"
BATCH = "batch"  # a free axis (symbolic or unnamed) that takes the batch size
STEPS = "steps"  # a free axis that takes the number of steps

Dims = tuple[int | str, ...]
Spec = tuple[str, str, Dims]  # name, onnxruntime type, dims


def form_io(
    form: str,
    input_size: int,
    output_size: int,
    state_names: tuple[str, ...],
    state_outputs: tuple[str, ...],
    state_sizes: tuple[int, ...],
    input_name: str = "x",
    output_name: str = "y",
) -> tuple[list[Spec], list[Spec]]:
    """The inputs and outputs the ONNX model of ``form`` must declare, in order."""
    states = [(name, FLOAT32, (BATCH, size)) for name, size in zip(state_names, state_sizes)]
    new_states = [(name, FLOAT32, (BATCH, size)) for name, size in zip(state_outputs, state_sizes)]
    if form in SEQUENCE_FORMS or form in ROLLOUT_FORMS:
        (first, *_), (ys, *_) = io_names(form, state_names, state_outputs)
        if form in SEQUENCE_FORMS:
            inputs = [(first, FLOAT32, (STEPS, BATCH, input_size)), *states]
        else:
            inputs = [(first, FLOAT32, (BATCH, input_size)), *states, ("steps", INT64, (1,))]
        return inputs, [(ys, FLOAT32, (STEPS, BATCH, output_size)), *new_states]
    inputs = [(input_name, FLOAT32, (BATCH, input_size)), *states]
    return inputs, [(output_name, FLOAT32, (BATCH, output_size)), *new_states]


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

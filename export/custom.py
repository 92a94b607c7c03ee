"""Exports a user's step module: any ``torch.nn.Module`` with ``forward(x, *state) -> (y, *state)``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from rnn.checkpoint import save_checkpoint
from rnn.config import CUSTOM, MAX_SIZE, Config, ModelConfig, StateConfig
from rnn.folders import replacing_folder
from rnn.randomness import preserved_global_rng
from runtime.errors import ExportError, InputValueError
from runtime.fused import SAMPLING_FORMS
from runtime.inputs import FLOAT32_ROUNDS_TO_INF
from runtime.manifest import (
    BATCH_AXIS,
    IDENTITY,
    LAYOUTS,
    LOGITS,
    MAX_RANK,
    SAMPLE,
    TIME_FIRST,
    TOKENS,
    Feedback,
    Signature,
    StateSpec,
    TensorSpec,
    check_feedback,
    read_vocabulary,
)

from .artifact import step_specs, write_artifacts
from .errors import failing_as
from .onnx_export import resolve_opset
from .probe import PROBE_SEED, TORCH_DTYPES, probe_tensor

PROBE_BATCH = 3
MAX_STREAM_VALUES = 1 << 24  # values of one tensor a stream (64 MiB of float32): more is a typo, not a model
# Names the sampling forms give their own inputs and outputs (runtime.fused): no tensor of a
# model with sampled feedback may take them.
RESERVED_NAMES = ("token0", "tokens", "steps", "uniforms", "temperature", "top_k", "top_p")


def custom_config(
    input_size: int,
    output_size: int,
    states: Sequence[Any],
    *,
    factory: str | None = None,
    class_name: str | None = None,
) -> ModelConfig:
    """A ModelConfig from ``states`` given as (name, size), (name, size, initial) or dicts of those."""
    parsed = []
    for spec in states:
        if isinstance(spec, dict):
            spec = (spec.get("name"), spec.get("size"), spec.get("initial", 0.0))
        name, size, initial = (*spec, 0.0) if len(spec) == 2 else spec
        if not isinstance(name, str) or not name.isidentifier():
            raise InputValueError(f"a state name must be an identifier, got {name!r}")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_SIZE:
            raise InputValueError(f"state {name!r} needs an integer size from 1 to {MAX_SIZE}, got {size!r}")
        row = [float(initial)] * size if isinstance(initial, (int, float)) else [float(v) for v in initial]
        if len(row) != size:
            raise InputValueError(f"state {name!r}: initial has {len(row)} values, the size is {size}")
        if not all(abs(v) < FLOAT32_ROUNDS_TO_INF for v in row):  # NaN fails the comparison too
            raise InputValueError(f"state {name!r}: initial values must be finite float32 numbers (up to 3.4e38)")
        parsed.append(StateConfig(name, tuple(row)))
    for label, size in (("input_size", input_size), ("output_size", output_size)):
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_SIZE:
            raise InputValueError(f"{label} must be an integer from 1 to {MAX_SIZE}, got {size!r}")
    names = [s.name for s in parsed]
    if not names:
        raise InputValueError("a step module needs at least one state tensor")
    if len(set(names)) != len(names) or {"x", "y"} & set(names):
        raise InputValueError(f"state names must be distinct and not 'x' or 'y', got {names}")
    return ModelConfig(CUSTOM, input_size, output_size, tuple(parsed), factory=factory, class_name=class_name)


def _size(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 2**31 - 1:
        raise InputValueError(f"{what} must be a positive integer, got {value!r:.80}")
    return value


def _sizes(spec: dict, what: str) -> tuple[int, ...]:
    """A tensor's per-stream axes from ``size`` (one axis) or ``shape`` (a list, possibly empty)."""
    if "shape" in spec:
        shape = spec["shape"]
        if not isinstance(shape, (list, tuple)) or len(shape) >= MAX_RANK:
            raise InputValueError(f"{what}: shape must be a list of fewer than {MAX_RANK} sizes, got {shape!r:.80}")
        sizes = tuple(_size(d, f"{what}: each shape size") for d in shape)
    else:
        sizes = (_size(spec.get("size"), f"{what}: size"),)
    _check_count(sizes, what)
    return sizes


def _check_count(sizes: Sequence[int], what: str) -> None:
    count = 1
    for size in sizes:
        count *= size
    if count > MAX_STREAM_VALUES:
        raise InputValueError(f"{what}: {count} values a stream is more than the {MAX_STREAM_VALUES} a tensor may hold")


def _as_dict(spec: Any, what: str) -> dict:
    """(name, size), (name, size, initial) or a dict, as a dict."""
    if isinstance(spec, dict):
        return dict(spec)
    if isinstance(spec, (tuple, list)) and len(spec) in (2, 3):
        return {"name": spec[0], "size": spec[1], **({"initial": spec[2]} if len(spec) == 3 else {})}
    raise InputValueError(f"{what} must be (name, size) or a dict with 'name', got {spec!r:.80}")


def _name(spec: dict, what: str) -> str:
    name = spec.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise InputValueError(f"{what}: a name must be an identifier, got {name!r:.80}")
    return name


def _input_spec(spec: Any, index: int) -> TensorSpec:
    spec = _as_dict(spec, f"inputs[{index}]")
    name = _name(spec, f"inputs[{index}]")
    if "vocabulary" in spec:  # token ids, one a stream: (batch,) int64
        vocabulary = _size(spec["vocabulary"], f"input {name!r}: vocabulary")
        return TensorSpec(name, (BATCH_AXIS,), "int64", role=TOKENS, vocabulary=vocabulary)
    return TensorSpec(name, (BATCH_AXIS, *_sizes(spec, f"input {name!r}")))


def _output_spec(spec: Any, index: int) -> TensorSpec:
    spec = _as_dict(spec, f"outputs[{index}]")
    name = _name(spec, f"outputs[{index}]")
    if "vocabulary" in spec or spec.get("logits"):  # scores over a vocabulary: (batch, V)
        size = _size(spec.get("vocabulary", spec.get("size")), f"output {name!r}: vocabulary")
        return TensorSpec(name, (BATCH_AXIS, size), role=LOGITS)
    return TensorSpec(name, (BATCH_AXIS, *_sizes(spec, f"output {name!r}")))


def _state_spec(spec: Any, index: int) -> StateSpec:
    spec = _as_dict(spec, f"states[{index}]")
    name = _name(spec, f"states[{index}]")
    if "shape" in spec:  # the whole shape, "batch" where the batch axis is: [layers, "batch", hidden]
        shape = spec["shape"]
        if not isinstance(shape, (list, tuple)) or list(shape).count(BATCH_AXIS) != 1 or len(shape) > MAX_RANK:
            raise InputValueError(
                f"state {name!r}: shape must list its axes with {BATCH_AXIS!r} once, e.g. [2, {BATCH_AXIS!r}, 64], "
                f"got {shape!r:.80}"
            )
        shape = tuple(d if d == BATCH_AXIS else _size(d, f"state {name!r}: each shape size") for d in shape)
    else:
        shape = (BATCH_AXIS, _size(spec.get("size"), f"state {name!r}: size"))
    _check_count([d for d in shape if d != BATCH_AXIS], f"state {name!r}")
    count = 1
    for d in shape:
        count *= 1 if d == BATCH_AXIS else d
    initial = spec.get("initial", 0.0)
    if isinstance(initial, (int, float)) and not isinstance(initial, bool):
        row = (float(initial),) * count
    else:
        try:
            row = tuple(float(v) for v in torch.as_tensor(initial, dtype=torch.float64).reshape(-1).tolist())
        except (TypeError, ValueError, RuntimeError):
            raise InputValueError(f"state {name!r}: initial must be a number or {count} numbers") from None
    if len(row) != count:
        raise InputValueError(f"state {name!r}: initial has {len(row)} values, the state holds {count} a stream")
    if not all(abs(v) < FLOAT32_ROUNDS_TO_INF for v in row):  # NaN fails the comparison too
        raise InputValueError(f"state {name!r}: initial values must be finite float32 numbers (up to 3.4e38)")
    return StateSpec(name, shape, output=f"{name}_out", initial=row)


def custom_signature(
    inputs: Sequence[Any],
    outputs: Sequence[Any],
    states: Sequence[Any],
    layout: str = TIME_FIRST,
    feedback: Any = None,
    vocabulary: Any = None,
) -> Signature:
    """A format 2 signature from export_module's ``inputs``, ``outputs``, ``states`` and
    ``vocabulary`` (see there); InputValueError naming the first spec that cannot be used."""
    for label, value in (("inputs", inputs), ("outputs", outputs), ("states", states)):
        if not isinstance(value, (list, tuple)):
            raise InputValueError(f"{label} must be a list, got {type(value).__name__}")
    if not inputs or not outputs:
        raise InputValueError("a step module needs at least one input and one output")
    specs_in = tuple(_input_spec(spec, i) for i, spec in enumerate(inputs))
    specs_out = tuple(_output_spec(spec, i) for i, spec in enumerate(outputs))
    specs_state = tuple(_state_spec(spec, i) for i, spec in enumerate(states))
    if not specs_state:
        raise InputValueError("a step module needs at least one state tensor")
    if layout not in LAYOUTS:
        raise InputValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r:.80}")
    names = [t.name for t in (*specs_in, *specs_out, *specs_state)] + [s.output for s in specs_state]
    if len(set(names)) != len(names):
        raise InputValueError(
            f"input, output and state names (and NAME_out of each state) must be distinct, got {names}"
        )
    closed = _feedback(feedback, specs_in, specs_out)
    if closed is not None and closed.via == SAMPLE and set(RESERVED_NAMES) & set(names):
        raise InputValueError(
            f"a model with sampled feedback cannot name a tensor {sorted(set(RESERVED_NAMES) & set(names))}: "
            f"the sampling forms ({', '.join(SAMPLING_FORMS)}) use those names"
        )
    tokens = read_vocabulary(vocabulary, closed, specs_in, InputValueError, "vocabulary")
    return Signature(specs_in, specs_out, specs_state, layout, closed, tokens)


def _feedback(feedback: Any, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> Feedback | None:
    """The declared feedback: a dict {"output", "input"} (via sample from logits, else identity),
    or None: a single logits output sampled into a single tokens input of its vocabulary, else
    none declared (the manifest's classic rule: one output fed back as an input of its shape)."""
    if feedback is None:
        tokens = [t for t in inputs if t.is_tokens]
        logits = [t for t in outputs if t.is_logits]
        if len(tokens) == 1 and len(logits) == 1 and logits[0].sizes == (tokens[0].vocabulary,):
            return Feedback(logits[0].name, tokens[0].name, SAMPLE)
        return None
    if (
        not isinstance(feedback, dict)
        or not isinstance(feedback.get("output"), str)
        or not isinstance(feedback.get("input"), str)
    ):
        raise InputValueError(f'feedback must be {{"output": NAME, "input": NAME}}, got {feedback!r:.80}')
    source = next((t for t in outputs if t.name == feedback["output"]), None)
    via = feedback.get("via", SAMPLE if source is not None and source.is_logits else IDENTITY)
    declared = Feedback(feedback["output"], feedback["input"], via)
    check_feedback(declared, inputs, outputs, InputValueError)
    return declared


def check_protocol(module: torch.nn.Module, config: ModelConfig) -> None:
    """Runs the module once on seeded probe inputs of the declared dtypes, uniform over INPUT_RANGE
    (`export.probe`; the caller's global RNG untouched): it must return (y, *state) with the right
    shapes and dtypes. A module whose parameters are not float32 is refused first, by name."""
    check_float32(module)
    inputs, outputs, states = step_specs(config)
    generator = torch.Generator().manual_seed(PROBE_SEED)
    arguments = ", ".join(t.name for t in (*inputs, *states))
    with failing_as(f"calling the module as forward({arguments}) failed"), torch.no_grad():
        probes = [probe_tensor(spec, PROBE_BATCH, generator) for spec in (*inputs, *states)]
        result = module(*probes)
    expected = [*outputs, *states]
    returned = ", ".join(t.name for t in expected)
    if not isinstance(result, (tuple, list)) or len(result) != len(expected):
        count = len(result) if isinstance(result, (tuple, list)) else 1
        raise ExportError(f"forward must return ({returned}): {len(expected)} tensors, got {count}")
    for tensor, spec in zip(result, expected):
        shape = spec.shape_for(PROBE_BATCH)
        wanted = (shape, TORCH_DTYPES[spec.dtype])
        if isinstance(tensor, torch.Tensor) and (tuple(tensor.shape), tensor.dtype) == wanted:
            continue
        got = (
            f"{tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"
            if isinstance(tensor, torch.Tensor)
            else type(tensor).__name__
        )
        described = ", ".join(str(d) for d in spec.shape)
        raise ExportError(f"forward's {spec.name} must be a {spec.dtype} tensor of shape ({described}), got {got}")


def check_float32(module: torch.nn.Module) -> None:
    """ExportError naming the first floating parameter or buffer that is not float32, and what to do:
    the exported models compute in float32 and verification compares them with the module as it is."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    for name, tensor in tensors:
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            dtype = str(tensor.dtype).removeprefix("torch.")
            raise ExportError(
                f"the module's {name!r} is {dtype}; the exported models compute in float32: "
                f"export module.float() (a float32 copy: copy.deepcopy(module).float())"
            )


@contextlib.contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[None]:
    """The module (every submodule) in eval mode inside the block, each back in its own mode after."""
    modes = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training


def export_module(
    module: torch.nn.Module,
    out: str | os.PathLike,
    *,
    states: Sequence[Any],
    input_size: int | None = None,
    output_size: int | None = None,
    inputs: Sequence[Any] | None = None,
    outputs: Sequence[Any] | None = None,
    layout: str = TIME_FIRST,
    feedback: dict | None = None,
    vocabulary: Sequence[str] | None = None,
    exporter: str = "torchscript",
    opset: int | None = None,
    ort_format: bool = False,
    factory: str | None = None,
) -> Path:
    """Exports a user's step module into the artifact folder ``out`` (replaced whole).

    The classic signature ``forward(x, *states) -> (y, *states)``: give ``input_size`` and
    ``output_size``. Anything else: give ``inputs`` and ``outputs`` instead, in forward's order,
    ``forward(*inputs, *states) -> (*outputs, *states)``:

    - an input: ``(name, size)`` (float32 (batch, size)), ``{"name", "shape": [sizes]}`` (float32
      (batch, *sizes)) or ``{"name", "vocabulary": V}`` (int64 token ids (batch,), 0 <= id < V);
    - an output: ``(name, size)``, ``{"name", "shape"}``, or ``{"name", "vocabulary": V}`` for logits (batch, V);
    - ``feedback`` ``{"output": NAME, "input": NAME}``: what generate feeds back (logits are sampled
      into tokens, anything else fed as it is); by default a single logits output is sampled into
      a single tokens input of its vocabulary;
    - ``layout`` "batch_first": the runtime's sequences are (batch, steps, ...);
    - ``vocabulary``: for a model with sampled feedback, the text of each id of the token input
      it feeds (a list of distinct, non-empty strings, one per id), written into the manifest
      (``runtime.load(out).vocabulary`` encodes and decodes text; ``rnn generate --prompt``).

    ``states`` lists the state tensors in forward's order: (name, size) or (name, size,
    initial) for (batch, size), or ``{"name", "shape": [2, "batch", 64], "initial"}`` for any
    rank with the batch axis where the module has it (nn.GRU's (layers, batch, hidden));
    initial a number or one stream's values (default 0). ``factory``
    ("package.module:function") is recorded so that `verify_folder` can rebuild the module.
    Raises ExportError naming the construct when the module cannot be scripted or exported.

    The module is exported in eval mode and left in the mode it came in; the caller's global
    random generators are left as they were (torch's is seeded with PROBE_SEED meanwhile).
    With the dynamo exporter a module TorchScript cannot compile still exports: the folder then
    has no TorchScript file, and its manifest says why (``model.torchscript_skipped``).
    """
    class_name = f"{type(module).__module__}.{type(module).__qualname__}"
    if inputs is None and outputs is None and layout == TIME_FIRST and feedback is None:
        read_vocabulary(vocabulary, None, (), InputValueError, "vocabulary")  # x -> y samples nothing: refused
        model = custom_config(input_size, output_size, states, factory=factory, class_name=class_name)
    elif inputs is None or outputs is None or input_size is not None or output_size is not None:
        raise InputValueError(
            "give inputs and outputs (any signature) or input_size and output_size (x -> y), not a mix"
        )
    else:
        signature = custom_signature(inputs, outputs, states, layout, feedback, vocabulary)
        model = ModelConfig.from_signature(signature, factory=factory, class_name=class_name)
    opset = resolve_opset(exporter, opset)
    config = Config(model)
    with preserved_global_rng(PROBE_SEED), evaluating(module):
        check_protocol(module, model)
        with replacing_folder(out) as staging:
            save_checkpoint(module, config, staging)
            write_artifacts(staging, module, config, opset=opset, ort_format=ort_format, exporter=exporter)
    return Path(out)

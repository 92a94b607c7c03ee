"""Writes self-check data next to exported ONNX models, in the ONNX model zoo's layout.

For every ONNX model of a folder: ``test_data/<form>/test_data_set_0/input_<i>.pb`` and
``output_<i>.pb``, serialized TensorProtos named after the graph's inputs and outputs, the
outputs computed by eager PyTorch. Any onnxruntime deployment can run the inputs and compare.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from rnn.config import ModelConfig, step_specs
from rnn.eager import NumpyStep
from runtime.errors import ExportError
from runtime.fused import ROLLOUT_FORMS, ROLLOUT_GREEDY, SAMPLING_FORMS, SEQUENCE_FORMS, STEP
from runtime.manifest import TEST_DATA_DIR, TensorSpec

from .probe import INPUT_RANGE
from .sampling_reference import eager_sample, module_step

TEST_BATCH = 3
TEST_STEPS = 13  # > UNROLL, not a multiple: the blocked loops run a full block and a remainder
TEST_SEED = 99
TEST_TEMPERATURE = 0.8  # the sampling rollout's self-check: temperature only (top-k and top-p off)


def random_tensor(spec: TensorSpec, batch_size: int, rng: np.random.Generator, *leading: int) -> np.ndarray:
    """``spec`` at ``batch_size`` (after ``leading`` axes, e.g. steps): token ids uniform over the
    vocabulary as int64, anything else uniform over INPUT_RANGE as float32."""
    shape = (*leading, *spec.shape_for(batch_size))
    if spec.is_tokens:
        return rng.integers(0, int(spec.vocabulary), shape, dtype=np.int64)
    return rng.uniform(*INPUT_RANGE, shape).astype(np.float32)


def eager_step(model: torch.nn.Module, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """One call of the eager module on numpy arrays (graph order in, graph order out)."""
    with torch.no_grad():
        result = model(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
    return [t.detach().numpy() for t in result]


def general_case(
    model: torch.nn.Module, config: ModelConfig, form: str, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(inputs, outputs) of the step form of a module with a format 2 signature."""
    inputs, outputs, states = step_specs(config)
    if form == STEP:
        values = [random_tensor(spec, TEST_BATCH, rng) for spec in (*inputs, *states)]
        return values, eager_step(model, values)
    feedback = config.signature.feedback
    if form not in SAMPLING_FORMS or feedback is None:
        raise ExportError(f"no self-check data can be made for form {form!r} of a module with this signature")
    token = next(t for t in inputs if t.name == feedback.input)
    others = {t.name: random_tensor(t, TEST_BATCH, rng) for t in inputs if t.name != feedback.input}
    token0 = random_tensor(token, TEST_BATCH, rng)
    state = [random_tensor(spec, TEST_BATCH, rng) for spec in states]
    step_fn = module_step(model, [t.name for t in inputs], token.name, [t.name for t in outputs], feedback.output)
    if form == ROLLOUT_GREEDY:
        tokens, final, _ = eager_sample(step_fn, token0, others, tuple(state), greedy=True, steps=TEST_STEPS)
        extra = [np.array([TEST_STEPS], dtype=np.int64)]
    else:
        uniforms = rng.random((TEST_STEPS, TEST_BATCH), dtype=np.float32)
        tokens, final, _ = eager_sample(step_fn, token0, others, tuple(state), uniforms, TEST_TEMPERATURE)
        off = [np.array([TEST_TEMPERATURE], np.float32), np.array([token.vocabulary], np.int64), np.ones(1, np.float32)]
        extra = [uniforms, *off]
    return [token0, *others.values(), *state, *extra], [tokens, *final]


def reference_case(
    model: torch.nn.Module, config: ModelConfig, form: str, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(inputs, outputs) of one form, in the graph's order, outputs from eager PyTorch."""
    if config.signature is not None:
        return general_case(model, config, form, rng)
    n_in = config.input_size
    state = [rng.uniform(*INPUT_RANGE, (TEST_BATCH, size)).astype(np.float32) for size in config.state_sizes]
    eager = NumpyStep(model)
    if form == STEP:
        x = rng.uniform(*INPUT_RANGE, (TEST_BATCH, n_in)).astype(np.float32)
        inputs, (y, new) = [x, *state], eager.step_once(x, state)
    elif form in SEQUENCE_FORMS:
        xs = rng.uniform(*INPUT_RANGE, (TEST_STEPS, TEST_BATCH, n_in)).astype(np.float32)
        inputs, (y, new) = [xs, *state], eager.predict(xs, state)
    elif form in ROLLOUT_FORMS:
        x0 = rng.uniform(*INPUT_RANGE, (TEST_BATCH, n_in)).astype(np.float32)
        inputs = [x0, *state, np.array([TEST_STEPS], dtype=np.int64)]
        y, new = eager.generate(x0, TEST_STEPS, state)
    else:
        raise ExportError(f"no self-check data can be made for form {form!r}")
    return inputs, [y, *new]


def write_test_data(
    model: torch.nn.Module, config: ModelConfig, folder: str | os.PathLike, models: dict[str, str]
) -> list[Path]:
    """Writes one test data set per ``{form: onnx file name}``; returns the set folders."""
    rng = np.random.default_rng(TEST_SEED)
    written = []
    for form, name in models.items():
        graph = onnx.load(str(Path(folder) / name), load_external_data=False).graph
        inputs, outputs = reference_case(model, config, form, rng)
        target = Path(folder) / TEST_DATA_DIR / form / "test_data_set_0"
        target.mkdir(parents=True)
        for prefix, values, specs in (("input", inputs, graph.input), ("output", outputs, graph.output)):
            for index, (array, spec) in enumerate(zip(values, specs)):
                tensor = numpy_helper.from_array(array, spec.name)
                (target / f"{prefix}_{index}.pb").write_bytes(tensor.SerializeToString())
        written.append(target)
    return written


def read_test_data(folder: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Reads a ``test_data_set_*`` folder back: ({input name: array}, {output name: array})."""
    result: tuple[dict, dict] = ({}, {})
    for side, prefix in enumerate(("input", "output")):
        for path in sorted(Path(folder).glob(f"{prefix}_*.pb"), key=lambda p: int(p.stem.split("_")[1])):
            tensor = onnx.TensorProto()
            tensor.ParseFromString(path.read_bytes())
            result[side][tensor.name] = numpy_helper.to_array(tensor)
    return result

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

from rnn.model import StepInfo, generate_eager, predict_eager
from runtime.fused import ROLLOUT_FORMS, SEQUENCE_FORMS, STEP

TEST_DATA_DIR = "test_data"
TEST_BATCH = 3
TEST_STEPS = 13  # > UNROLL, not a multiple: the blocked loops run a full block and a remainder
TEST_SEED = 99


def reference_case(
    model: torch.nn.Module, info: StepInfo, form: str, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(inputs, outputs) of one form, in the graph's order, outputs from eager PyTorch."""
    n_in = info.input_size
    state = [rng.uniform(-1, 1, (TEST_BATCH, size)).astype(np.float32) for size in info.state_sizes]
    t = torch.from_numpy
    if form == STEP:
        x = rng.uniform(-1, 1, (TEST_BATCH, n_in)).astype(np.float32)
        with torch.no_grad():
            y, *new = model(t(x), *(t(s) for s in state))
        return [x, *state], [y.numpy(), *(s.numpy() for s in new)]
    if form in SEQUENCE_FORMS:
        xs = rng.uniform(-1, 1, (TEST_STEPS, TEST_BATCH, n_in)).astype(np.float32)
        ys, new = predict_eager(model, t(xs), tuple(t(s) for s in state))
        return [xs, *state], [ys.numpy(), *(s.numpy() for s in new)]
    if form in ROLLOUT_FORMS:
        x0 = rng.uniform(-1, 1, (TEST_BATCH, n_in)).astype(np.float32)
        ys, new = generate_eager(model, t(x0), TEST_STEPS, tuple(t(s) for s in state))
        return [x0, *state, np.array([TEST_STEPS], dtype=np.int64)], [ys.numpy(), *(s.numpy() for s in new)]
    raise ValueError(f"no reference for form {form!r}")


def write_test_data(model: torch.nn.Module, info: StepInfo, folder: str | os.PathLike, models: dict[str, str]) -> list[Path]:
    """Writes one test data set per ``{form: onnx file name}``; returns the set folders."""
    rng = np.random.default_rng(TEST_SEED)
    written = []
    for form, name in models.items():
        graph = onnx.load(str(Path(folder) / name), load_external_data=False).graph
        inputs, outputs = reference_case(model, info, form, rng)
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

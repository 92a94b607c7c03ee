"""Turns a trained folder (weights.pt + config.json) into a complete artifact folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from rnn.folders import prepare_output, replacing_folder
from rnn.config import CONFIG_NAME, WEIGHTS_NAME
from rnn.model import StepInfo
from rnn.train import load_checkpoint
from runtime._version import __version__
from runtime.errors import InputValueError
from runtime.manifest import (
    BATCH_AXIS,
    MANIFEST_NAME,
    ROLE_CONFIG,
    ROLE_STEP_ONNX,
    ROLE_STEP_TORCHSCRIPT,
    ROLE_WEIGHTS,
    Manifest,
    StateSpec,
    TensorSpec,
    file_entry,
    write_manifest,
)

from .custom import ExportError, describe_failure
from .fused import BUILDERS, ElmanWeights, write_fused
from .ort_format import convert_to_ort
from .test_data import write_test_data
from .onnx_export import DYNAMO_MIN_OPSET, EXPORTERS, OPSET, STEP_ONNX_NAME, export_step_onnx
from .torchscript import STEP_TORCHSCRIPT_NAME, save_torchscript, script_step

VERIFY_NAME = "verify.json"
# Files an export (re)writes; anything else in the source folder is carried over, except the
# verification report, which no longer describes the new files.
_WRITTEN = {STEP_ONNX_NAME, STEP_TORCHSCRIPT_NAME, MANIFEST_NAME, VERIFY_NAME, *(f"{form}.onnx" for form in BUILDERS)}


def export_folder(
    folder: str | os.PathLike,
    out: str | os.PathLike | None = None,
    opset: int = OPSET,
    ort_format: bool = False,
    exporter: str = "torchscript",
    factory=None,
) -> Path:
    """Scripts and exports the model trained in ``folder`` into ``out`` (default: ``folder``).

    Writes ``step.torchscript.pt``, ``step.onnx``, for the Elman cell the fused loop models
    (``sequence_*.onnx``, ``rollout_*.onnx``, see `export.fused`), self-check data for every
    ONNX model (`export.test_data`) and ``manifest.json``, beside copies of ``weights.pt`` and
    ``config.json``. With ``ort_format``, also each model in onnxruntime's ORT format
    (``<form>.ort``). ``exporter`` picks how ``step.onnx`` is made: from the TorchScript module
    ("torchscript") or through ``torch.export`` ("dynamo"); the manifest's ``producers`` records
    what made each file. A folder of a user's module needs its ``factory``. The result is built
    in a temporary folder and swapped into place, so an interrupted export leaves the previous
    folder as it was.
    """
    source = Path(folder)
    target = Path(out) if out is not None else source
    model, document = load_checkpoint(source, factory)
    if not (target.exists() and target.resolve() == source.resolve()):
        prepare_output(target)
    info = StepInfo.of_checkpoint(model, document)
    with replacing_folder(target) as staging:
        for path in sorted(source.iterdir()):
            if path.is_file() and path.name not in _WRITTEN and not path.name.startswith(".") \
                    and path.suffix != ".ort":
                shutil.copy2(path, staging / path.name)
        write_artifacts(staging, model, info, document, opset, ort_format, exporter)
    return target


def write_artifacts(
    staging: Path, model: torch.nn.Module, info: StepInfo, document: dict, opset: int, ort_format: bool, exporter: str
) -> Manifest:
    """Writes every exported file and, last, the manifest into ``staging`` (which already holds
    ``weights.pt`` and ``config.json``)."""
    if exporter not in EXPORTERS:
        raise InputValueError(f"exporter must be one of {list(EXPORTERS)}, got {exporter!r}")
    sizes = info.sizes()
    x = TensorSpec("x", (BATCH_AXIS, info.input_size))
    y = TensorSpec("y", (BATCH_AXIS, info.output_size))
    states = [
        StateSpec(name, (BATCH_AXIS, len(row)), output=f"{name}_out", initial=row)
        for name, row in zip(info.state_names, info.initial)
    ]
    train = document.get("train", {})
    try:
        scripted = script_step(model)
    except Exception as error:  # TorchScript's frontend raises several types; all mean "cannot compile"
        raise ExportError(f"torch.jit.script cannot compile {type(model).__name__}: {describe_failure(error)}") from None
    save_torchscript(scripted, staging)
    metadata = {
        "model_kind": info.kind,
        **{k: str(v) for k, v in sizes.items()},
        "state_names": ",".join(s.name for s in states),
        "state_outputs": ",".join(s.output for s in states),
    }
    step_module = scripted if exporter == "torchscript" else model
    try:
        export_step_onnx(step_module, staging / STEP_ONNX_NAME, [x], [y], states, metadata, opset, exporter)
    except Exception as error:  # the exporters raise many types; all mean "cannot export"
        raise ExportError(f"the {exporter} exporter cannot export {type(model).__name__}: {describe_failure(error)}") from None
    fused = {}
    if info.kind == "elman":  # the fused loops are built from the Elman weights
        weights = ElmanWeights(
            w1=model.w1.detach().numpy().astype(np.float32),
            w2=model.w2.detach().numpy().astype(np.float32),
            input_size=info.input_size,
        )
        fused = write_fused(weights, staging, opset, metadata)
    write_test_data(model, info, staging, {"step": STEP_ONNX_NAME, **fused})
    ort_files = convert_to_ort(staging, {"step": STEP_ONNX_NAME, **fused}) if ort_format else {}
    files = [
        file_entry(staging, STEP_ONNX_NAME, ROLE_STEP_ONNX),
        file_entry(staging, STEP_TORCHSCRIPT_NAME, ROLE_STEP_TORCHSCRIPT),
        file_entry(staging, WEIGHTS_NAME, ROLE_WEIGHTS),
        file_entry(staging, CONFIG_NAME, ROLE_CONFIG),
        *(file_entry(staging, name, form) for form, name in fused.items()),
        *(file_entry(staging, name, f"{form}_ort") for form, name in ort_files.items()),
    ]
    step_producer = (f"torch.onnx.export, TorchScript-based exporter, from {STEP_TORCHSCRIPT_NAME}"
                     if exporter == "torchscript" else "torch.onnx.export(dynamo=True), from torch.export")
    producers = {
        STEP_ONNX_NAME: step_producer,
        STEP_TORCHSCRIPT_NAME: "torch.jit.script",
        WEIGHTS_NAME: f"rnn train ({train.get('trainer')} trainer)" if train else "state_dict of the user's module",
        CONFIG_NAME: "rnn train" if train else "rnn export-module",
        **{name: "export.fused (onnx.helper, from the weights)" for name in fused.values()},
        **{name: "onnxruntime ORT format conversion" for name in ort_files.values()},
    }
    model_info = {"kind": info.kind, **sizes, "trainer": train.get("trainer"), "seed": train.get("seed"),
                  "exporter": exporter}
    if info.kind == "custom":
        model_info["factory"] = document["model"].get("factory")
    manifest = Manifest(
        model=model_info,
        producers=producers,
        inputs=(x,),
        outputs=(y,),
        state=tuple(states),
        files=tuple(files),
        opset=opset if exporter == "torchscript" else max(opset, DYNAMO_MIN_OPSET),
        versions={
            "toolkit": __version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__,
        },
    )
    write_manifest(staging, manifest)  # last: a folder without it is never loadable
    return manifest

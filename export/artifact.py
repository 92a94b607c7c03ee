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
from rnn.train import load_checkpoint
from runtime._version import __version__
from runtime.errors import ArtifactError, InputValueError
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

from .fused import BUILDERS, ElmanWeights, write_fused
from .ort_format import convert_to_ort
from .test_data import TEST_DATA_DIR, write_test_data
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
) -> Path:
    """Scripts and exports the model trained in ``folder`` into ``out`` (default: ``folder``).

    Writes ``step.torchscript.pt``, ``step.onnx``, the fused loop models (``sequence_*.onnx``,
    ``rollout_*.onnx``, see `export.fused`) and ``manifest.json`` beside copies of
    ``weights.pt`` and ``config.json``, and self-check data for every ONNX model
    (`export.test_data`). With ``ort_format``, also each model in onnxruntime's ORT format
    (``<form>.ort``, for mobile and minimal builds). ``exporter`` picks how ``step.onnx`` is
    made: from the TorchScript module ("torchscript") or through ``torch.export`` ("dynamo");
    the manifest's ``producers`` records what made each file. The result is built in a temporary folder and swapped
    into place, so an interrupted export leaves the previous folder as it was.
    """
    source = Path(folder)
    target = Path(out) if out is not None else source
    model, document = load_checkpoint(source)
    if not (target.exists() and target.resolve() == source.resolve()):
        prepare_output(target)
    if exporter not in EXPORTERS:
        raise InputValueError(f"exporter must be one of {list(EXPORTERS)}, got {exporter!r}")
    sizes = model.sizes()
    x = TensorSpec("x", (BATCH_AXIS, sizes["input_size"]))
    y = TensorSpec("y", (BATCH_AXIS, sizes["output_size"]))
    states = [
        StateSpec(name, (BATCH_AXIS, int(initial.shape[1])), output=f"{name}_out",
                  initial=tuple(float(v) for v in initial[0]))
        for name, initial in zip(model.state_names, model.initial_state(1))
    ]
    train = document.get("train", {})
    model_info = {"kind": model.kind, **sizes, "trainer": train.get("trainer"), "seed": train.get("seed")}
    with replacing_folder(target) as staging:
        for path in sorted(source.iterdir()):
            if path.is_file() and path.name not in _WRITTEN and not path.name.startswith(".") \
                    and path.suffix != ".ort":
                shutil.copy2(path, staging / path.name)
        scripted = script_step(model)
        save_torchscript(scripted, staging)
        metadata = {
            "model_kind": model.kind,
            **{k: str(v) for k, v in sizes.items()},
            "state_names": ",".join(s.name for s in states),
            "state_outputs": ",".join(s.output for s in states),
        }
        step_module = scripted if exporter == "torchscript" else model
        export_step_onnx(step_module, staging / STEP_ONNX_NAME, [x], [y], states, metadata, opset, exporter)
        fused = {}
        if model.kind == "elman":  # the fused loops are built from the Elman weights
            weights = ElmanWeights(
                w1=model.w1.detach().numpy().astype(np.float32),
                w2=model.w2.detach().numpy().astype(np.float32),
                input_size=sizes["input_size"],
            )
            fused = write_fused(weights, staging, opset, metadata)
        write_test_data(model, staging, {"step": STEP_ONNX_NAME, **fused})
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
            WEIGHTS_NAME: f"rnn train ({train.get('trainer')} trainer)",
            CONFIG_NAME: "rnn train",
            **{name: "export.fused (onnx.helper, from the weights)" for name in fused.values()},
            **{name: "onnxruntime ORT format conversion" for name in ort_files.values()},
        }
        step_opset = opset if exporter == "torchscript" else max(opset, DYNAMO_MIN_OPSET)
        manifest = Manifest(
            model={**model_info, "exporter": exporter},
            producers=producers,
            inputs=(x,),
            outputs=(y,),
            state=tuple(states),
            files=tuple(files),
            opset=step_opset,
            versions={
                "toolkit": __version__,
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
                "numpy": np.__version__,
            },
        )
        write_manifest(staging, manifest)  # last: a folder without it is never loadable
    return target

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
from runtime.errors import ArtifactError
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
from .onnx_export import OPSET, STEP_ONNX_NAME, export_step_onnx
from .torchscript import STEP_TORCHSCRIPT_NAME, save_torchscript, script_step

VERIFY_NAME = "verify.json"
# Files an export (re)writes; anything else in the source folder is carried over, except the
# verification report, which no longer describes the new files.
_WRITTEN = {STEP_ONNX_NAME, STEP_TORCHSCRIPT_NAME, MANIFEST_NAME, VERIFY_NAME, *(f"{form}.onnx" for form in BUILDERS)}


def export_folder(
    folder: str | os.PathLike, out: str | os.PathLike | None = None, opset: int = OPSET, ort_format: bool = False
) -> Path:
    """Scripts and exports the model trained in ``folder`` into ``out`` (default: ``folder``).

    Writes ``step.torchscript.pt``, ``step.onnx``, the fused loop models (``sequence_*.onnx``,
    ``rollout_*.onnx``, see `export.fused`) and ``manifest.json`` beside copies of
    ``weights.pt`` and ``config.json``, and self-check data for every ONNX model
    (`export.test_data`). With ``ort_format``, also each model in onnxruntime's ORT format
    (``<form>.ort``, for mobile and minimal builds). The result is built in a temporary folder and swapped
    into place, so an interrupted export leaves the previous folder as it was.
    """
    source = Path(folder)
    target = Path(out) if out is not None else source
    model, document = load_checkpoint(source)
    if not (target.exists() and target.resolve() == source.resolve()):
        prepare_output(target)
    sizes = model.sizes()
    x = TensorSpec("x", (BATCH_AXIS, sizes["input_size"]))
    y = TensorSpec("y", (BATCH_AXIS, sizes["output_size"]))
    h = StateSpec("h", (BATCH_AXIS, sizes["hidden_size"]), output="h_out", initial=(0.0,) * sizes["hidden_size"])
    train = document.get("train", {})
    model_info = {"kind": "elman", **sizes, "trainer": train.get("trainer"), "seed": train.get("seed")}
    with replacing_folder(target) as staging:
        for path in sorted(source.iterdir()):
            if path.is_file() and path.name not in _WRITTEN and not path.name.startswith(".") \
                    and path.suffix != ".ort":
                shutil.copy2(path, staging / path.name)
        scripted = script_step(model)
        save_torchscript(scripted, staging)
        metadata = {
            "model_kind": "elman",
            **{k: str(v) for k, v in sizes.items()},
            "state_names": "h",
            "state_outputs": "h_out",
        }
        export_step_onnx(scripted, staging / STEP_ONNX_NAME, [x], [y], [h], metadata, opset)
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
        manifest = Manifest(
            model=model_info,
            inputs=(x,),
            outputs=(y,),
            state=(h,),
            files=tuple(files),
            opset=opset,
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

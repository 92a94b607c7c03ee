"""Loads back every file an export wrote, before the folder is called done.

An export that writes a file nothing can read has not exported (a class of a script run by
runpy scripts and saves, but its archive names ``__torch__.<run_path>.Cell``, which torch.jit.load
cannot parse). So the finished staging folder is read the way its users read it: the manifest
and every file's sha256 through `runtime.load`, each ONNX model through onnx's checker and an
onnxruntime session checked against its form's contract, each ORT-format model in a session,
weights.pt with ``torch.load(weights_only=True)``, config.json, the training series and the
self-check data. TorchScript is loaded back where it is written (`export.torchscript.check_loads`),
before the dynamo exporter decides to keep it. The first file that fails is an ExportError naming
it and the cause; the caller's `rnn.folders.replacing_folder` then leaves the output as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

import runtime
from rnn.checkpoint import load_weights
from rnn.config import read_config
from runtime.errors import ExportError, ToolkitError
from runtime.fused import FORMS, STEP
from runtime.manifest import (
    ROLE_CONFIG,
    ROLE_STEP_ONNX,
    ROLE_STEP_TORCHSCRIPT,
    ROLE_TRAIN_DATA,
    ROLE_WEIGHTS,
    TEST_DATA_DIR,
    FileEntry,
)

from .errors import describe_failure
from .ort_format import open_ort
from .test_data import read_test_data

ORT_SUFFIX = "_ort"  # the role of a form's ORT-format copy: "<form>_ort" (export.artifact)


@contextlib.contextmanager
def loading_back(name: str) -> Iterator[None]:
    """Any failure inside the block becomes ExportError("{name} was written but cannot be loaded back: ...")."""
    try:
        yield
    except ExportError:
        raise
    except Exception as error:  # ToolkitErrors and whatever onnx, onnxruntime or torch raise
        cause = str(error) if isinstance(error, ToolkitError) else f"{type(error).__name__}: {describe_failure(error)}"
        raise ExportError(
            f"{name} was written but cannot be loaded back ({cause[:400]}); the output folder was left as it was"
        ) from None


def load_back(folder: Path) -> runtime.Model:
    """Reads every file of the finished folder ``folder`` back (see the module's docstring); the
    model `runtime.load` opens, every form's session created. ExportError on the first failure."""
    with loading_back("the folder"):  # runtime's errors name the file
        model = runtime.load(folder)  # the manifest parsed, every listed file's size and sha256, the step's session
    for entry in model.manifest.files:
        with loading_back(entry.name):
            _load_entry(folder, model, entry)
    for form_folder in sorted((folder / TEST_DATA_DIR).glob("*/test_data_set_*")):
        with loading_back(str(form_folder.relative_to(folder))):
            read_test_data(form_folder)
    return model


def _load_entry(folder: Path, model: runtime.Model, entry: FileEntry) -> None:
    """One manifest entry read back as its role's readers read it."""
    path = folder / entry.name
    role = entry.role
    if role == ROLE_STEP_ONNX or role in FORMS:
        onnx.checker.check_model(str(path))
        model.session(STEP if role == ROLE_STEP_ONNX else role)  # checked against the form's contract
    elif role.endswith(ORT_SUFFIX) and role.removesuffix(ORT_SUFFIX) in FORMS:
        open_ort(path)
    elif role == ROLE_WEIGHTS:
        load_weights(path)
    elif role == ROLE_CONFIG:
        read_config(folder)
    elif role == ROLE_TRAIN_DATA:
        np.load(path, allow_pickle=False)
    elif role != ROLE_STEP_TORCHSCRIPT:  # loaded back where it is written, before the manifest lists it
        raise ExportError(f"{entry.name}: the export has no way to load back a file of role {role!r}")

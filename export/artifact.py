"""Writes a complete artifact folder: TorchScript, ONNX step model, fused loops, self-check data, manifest."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from rnn.checkpoint import load_checkpoint
from rnn.config import CUSTOM, TRAIN_DATA_NAME, Config, ModelConfig, step_specs
from rnn.folders import replacing_folder
from rnn.randomness import preserved_global_rng
from runtime import __version__
from runtime.errors import ExportError
from runtime.fused import SAMPLING_FORMS, STEP
from runtime.manifest import (
    CONFIG_NAME,
    IDENTITY,
    MANIFEST_NAME,
    ROLE_CONFIG,
    ROLE_STEP_ONNX,
    ROLE_STEP_TORCHSCRIPT,
    ROLE_TRAIN_DATA,
    ROLE_WEIGHTS,
    SAMPLE,
    STEP_ONNX_NAME,
    STEP_TORCHSCRIPT_NAME,
    TIME_FIRST,
    TORCHSCRIPT_SKIPPED_KEY,
    VERIFY_NAME,
    WEIGHTS_NAME,
    Feedback,
    Manifest,
    StateSpec,
    TensorSpec,
    file_entry,
    form_file_name,
    write_manifest,
)

from .errors import failing_as
from .factories import checked_factory
from .fused import BUILDERS, ElmanWeights, write_fused
from .fused_cells import CELL_FORMS, CellWeights, write_cell_fused
from .loadback import load_back
from .onnx_export import export_step_onnx, resolve_opset
from .ort_format import convert_to_ort
from .probe import PROBE_SEED
from .sampling import sampling_rollouts
from .step_loops import LOOP_FORMS, step_loops
from .test_data import write_test_data
from .torchscript import check_loads, save_torchscript, script_step

# Files an export (re)writes; anything else in the source folder is carried over, except the
# verification report, which no longer describes the new files.
_WRITTEN = {
    STEP_ONNX_NAME,
    STEP_TORCHSCRIPT_NAME,
    MANIFEST_NAME,
    VERIFY_NAME,
    *map(form_file_name, BUILDERS),
    *map(form_file_name, SAMPLING_FORMS),
    *(form_file_name(form) for forms in CELL_FORMS.values() for form in forms),
}


def export_folder(
    folder: str | os.PathLike,
    out: str | os.PathLike | None = None,
    opset: int | None = None,
    ort_format: bool = False,
    exporter: str = "torchscript",
    factory=None,
) -> Path:
    """Scripts and exports the model trained in ``folder`` into ``out`` (default: ``folder``).

    Writes ``step.torchscript.pt`` (with the dynamo exporter, only if the model scripts: the
    manifest's ``model.torchscript_skipped`` says why not), ``step.onnx``, for the built-in
    cells the fused loop models (``sequence_*.onnx``, ``rollout_*.onnx``, see `export.fused`
    and `export.fused_cells`), self-check data for every ONNX model (`export.test_data`) and
    ``manifest.json``, beside copies of ``weights.pt`` and
    ``config.json``. With ``ort_format``, also each model in onnxruntime's ORT format
    (``<form>.ort``). ``exporter`` picks how ``step.onnx`` is made: from the TorchScript module
    ("torchscript") or through ``torch.export`` ("dynamo"); ``opset`` None is the exporter's
    default (`export.onnx_export.resolve_opset`). A folder of a user's module needs its
    ``factory``. The result is built in a temporary folder and swapped into place, so an
    interrupted export leaves the previous folder as it was. The caller's global random
    generators are left as they were.
    """
    source = Path(folder)
    opset = resolve_opset(exporter, opset)
    checkpoint = load_checkpoint(source, checked_factory(factory))
    with preserved_global_rng(PROBE_SEED), replacing_folder(source if out is None else out) as staging:
        _carry_over(source, staging)
        write_artifacts(
            staging, checkpoint.model, checkpoint.config, opset=opset, ort_format=ort_format, exporter=exporter
        )
    return source if out is None else Path(out)


def _carry_over(source: Path, staging: Path) -> None:
    """Copies the trained folder's own files (weights, config, the user's extras) into ``staging``."""
    for path in sorted(source.iterdir()):
        if (
            path.is_file()
            and not path.is_symlink()
            and path.name not in _WRITTEN
            and not path.name.startswith(".")
            and path.suffix != ".ort"
        ):
            shutil.copy2(path, staging / path.name)


def write_artifacts(
    staging: Path, model: torch.nn.Module, config: Config, *, opset: int, ort_format: bool, exporter: str
) -> Manifest:
    """Writes every exported file and, last, the manifest into ``staging`` (which already holds
    ``weights.pt`` and ``config.json``)."""
    inputs, outputs, states = step_specs(config.model)
    metadata = _onnx_metadata(config.model, states)
    scripted, torchscript_skipped = _script(model, staging, required=exporter == "torchscript")
    with failing_as(f"the {exporter} exporter cannot export {type(model).__name__}", _dynamo_hint(exporter)):
        step_module = scripted if exporter == "torchscript" else model
        export_step_onnx(step_module, staging / STEP_ONNX_NAME, inputs, outputs, states, metadata, opset, exporter)
    fused = _write_fused_forms(model, config.model, staging, opset, metadata)
    onnx_files = {STEP: STEP_ONNX_NAME, **fused}
    write_test_data(model, config.model, staging, _self_checked(config.model, onnx_files))
    ort_files = convert_to_ort(staging, onnx_files) if ort_format else {}
    manifest = _manifest(
        staging, config, (inputs, outputs, states), fused, ort_files, opset, exporter, torchscript_skipped
    )
    write_manifest(staging, manifest)  # last: a folder without it is never loadable
    load_back(staging)  # every file read back as its users read it: a folder nothing can load is not done
    return manifest


def _script(
    model: torch.nn.Module, staging: Path, *, required: bool
) -> tuple[torch.jit.ScriptModule | None, str | None]:
    """(the scripted module, None), its archive saved into ``staging`` and loaded back; or where
    TorchScript cannot compile it or load it back and it is not ``required`` (the dynamo exporter
    works from the eager module), (None, why), no archive left in ``staging``."""
    try:
        with failing_as(f"torch.jit.script cannot compile {type(model).__name__}", _dynamo_hint("torchscript")):
            scripted = script_step(model)
        check_loads(save_torchscript(scripted, staging), model)
        return scripted, None
    except ExportError as error:
        if required:
            raise
        (staging / STEP_TORCHSCRIPT_NAME).unlink(missing_ok=True)
        return None, str(error).removesuffix(_dynamo_hint("torchscript"))


def _dynamo_hint(exporter: str) -> str:
    """What a TorchScript failure adds where the dynamo exporter was not asked for: it needs no
    TorchScript (it traces the eager module with torch.export), and deciding whether it would work
    costs a whole dynamo export, so the hint is given on every such failure, not guessed."""
    if exporter != "torchscript":
        return ""
    return '; the dynamo exporter does not need TorchScript: try --exporter dynamo (exporter="dynamo" in Python)'


def _onnx_metadata(model: ModelConfig, states: list[StateSpec]) -> dict[str, str]:
    """What every ONNX file of the folder carries in its metadata_props."""
    return {
        "model_kind": model.kind,
        **{key: str(value) for key, value in model.sizes().items()},
        "state_names": ",".join(s.name for s in states),
        "state_outputs": ",".join(s.output for s in states),
    }


def _write_fused_forms(
    model: torch.nn.Module, config: ModelConfig, staging: Path, opset: int, metadata: dict[str, str]
) -> dict[str, str]:
    """The fused loop models: built from the weights of a built-in cell; for a user's module, the
    loops around its step model (`export.step_loops`: sequence_loop, and rollout_loop where an
    output feeds back as it is) and where it samples its next token the sampling rollouts
    (`export.sampling`): {form: file name}."""
    if config.signature is None and config.kind in CELL_FORMS:
        return write_cell_fused(CellWeights.from_module(model), staging, opset, metadata)
    if config.signature is None and config.kind == "elman":
        weights = ElmanWeights(
            w1=model.w1.detach().numpy().astype(np.float32),
            w2=model.w2.detach().numpy().astype(np.float32),
            input_size=config.input_size,
        )
        return write_fused(weights, staging, opset, metadata)
    if config.signature is None and config.kind != CUSTOM:
        return {}
    inputs, outputs, states = step_specs(config)
    feedback = _feedback(config, inputs, outputs)
    step = onnx.load(str(staging / STEP_ONNX_NAME))
    try:
        forms = step_loops(
            step, inputs=inputs, outputs=outputs, states=states, feedback=feedback, opset=opset, metadata=metadata
        )
    except ExportError:  # the step graph does not allow them (its names are the loops' own): the step loop runs
        forms = {}
    if feedback is not None and feedback.via == SAMPLE:
        with failing_as("the sampling rollouts cannot be built around step.onnx"):
            forms.update(
                sampling_rollouts(
                    step,
                    token_input=feedback.input,
                    logits_output=feedback.output,
                    state_inputs=[s.name for s in states],
                    state_outputs=[s.output for s in states],
                    opset=opset,
                    metadata=metadata,
                )
            )
    written = {}
    for form, form_model in forms.items():
        written[form] = form_file_name(form)
        onnx.save(form_model, str(staging / written[form]))
    return written


def _feedback(config: ModelConfig, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> Feedback | None:
    """What generate feeds back: the signature's, or for the classic signature the output into
    the input where their sizes agree."""
    if config.signature is not None:
        return config.signature.feedback
    x, y = inputs[0], outputs[0]
    return Feedback(y.name, x.name, IDENTITY) if x.shape == y.shape else None


def _self_checked(config: ModelConfig, onnx_files: dict[str, str]) -> dict[str, str]:
    """The forms `export.test_data` writes self-check data for: a format 2 model's step graph loops
    not yet (its ``general_case`` knows the step and the sampling forms)."""
    if config.signature is None:
        return onnx_files
    return {form: name for form, name in onnx_files.items() if form not in LOOP_FORMS}


_FUSED_PRODUCERS = {"elman": "export.fused", **dict.fromkeys(CELL_FORMS, "export.fused_cells")}


def _producers(
    config: Config, scripted: bool, exporter: str, fused: dict[str, str], ort_files: dict[str, str]
) -> dict[str, str]:
    """What made each file (the manifest's ``producers``)."""
    train = config.train
    step_producer = (
        f"torch.onnx.export, TorchScript-based exporter, from {STEP_TORCHSCRIPT_NAME}"
        if exporter == "torchscript"
        else "torch.onnx.export(dynamo=True), from torch.export"
    )
    around_step = config.model.kind == CUSTOM or config.model.signature is not None
    fused_producers = {
        name: (
            f"{'export.sampling' if form in SAMPLING_FORMS else 'export.step_loops'} (a Loop around step.onnx)"
            if around_step
            else f"{_FUSED_PRODUCERS[config.model.kind]} (onnx.helper, from the weights)"
        )
        for form, name in fused.items()
    }
    return {
        STEP_ONNX_NAME: step_producer,
        **({STEP_TORCHSCRIPT_NAME: "torch.jit.script"} if scripted else {}),
        WEIGHTS_NAME: f"rnn train ({train.trainer} trainer)" if train else "state_dict of the user's module",
        CONFIG_NAME: "rnn train" if train else "rnn export-module",
        **fused_producers,
        **{name: "onnxruntime ORT format conversion" for name in ort_files.values()},
    }


def _model_info(config: Config, exporter: str, torchscript_skipped: str | None) -> dict:
    """The manifest's ``model``: the kind, sizes (classic), how it was trained and exported."""
    train = config.train
    model_info = {
        "kind": config.model.kind,
        **(config.model.sizes() if config.model.signature is None else {}),  # a signature's tensors say more
        "trainer": train.trainer if train else None,
        "seed": train.seed if train else None,
        "exporter": exporter,
    }
    if config.model.kind == CUSTOM:
        model_info["factory"] = config.model.factory
    if torchscript_skipped is not None:
        model_info[TORCHSCRIPT_SKIPPED_KEY] = torchscript_skipped
    return model_info


def _manifest(
    staging: Path,
    config: Config,
    specs: tuple[list[TensorSpec], list[TensorSpec], list[StateSpec]],
    fused: dict[str, str],
    ort_files: dict[str, str],
    opset: int,
    exporter: str,
    torchscript_skipped: str | None,
) -> Manifest:
    """The manifest of what ``staging`` now holds, every file hashed; without a TorchScript file
    where ``torchscript_skipped`` says why there is none."""
    inputs, outputs, states = specs
    scripted = torchscript_skipped is None
    files = [
        file_entry(staging, STEP_ONNX_NAME, ROLE_STEP_ONNX),
        *([file_entry(staging, STEP_TORCHSCRIPT_NAME, ROLE_STEP_TORCHSCRIPT)] if scripted else []),
        file_entry(staging, WEIGHTS_NAME, ROLE_WEIGHTS),
        file_entry(staging, CONFIG_NAME, ROLE_CONFIG),
        *(file_entry(staging, name, form) for form, name in fused.items()),
        *([file_entry(staging, TRAIN_DATA_NAME, ROLE_TRAIN_DATA)] if (staging / TRAIN_DATA_NAME).is_file() else []),
        *(file_entry(staging, name, f"{form}_ort") for form, name in ort_files.items()),
    ]
    signature = config.model.signature
    return Manifest(
        model=_model_info(config, exporter, torchscript_skipped),
        producers=_producers(config, scripted, exporter, fused, ort_files),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        state=tuple(states),
        layout=signature.layout if signature else TIME_FIRST,
        feedback=signature.feedback if signature else None,
        vocabulary=signature.vocabulary if signature else None,
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

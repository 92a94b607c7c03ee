"""The whole story in one call: train -> export -> verify -> generate -> plots, into one folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import runtime
from export import export_folder, verify_folder
from export.verify import VerifyReport
from rnn.config import TrainConfig
from rnn.train import Progress, TrainResult, train_folder
from runtime.fused import ROLLOUT_LOOP, ROLLOUT_RNN, SEQUENCE_LOOP, SEQUENCE_RNN
from runtime.manifest import MANIFEST_NAME, TEST_DATA_DIR, VERIFY_NAME, read_manifest

from .plots import LOSS_NAME, PARITY_NAME, PREDICTION_NAME, plot_folder
from .run_inputs import training_start
from .running import write_generate_csv
from .settings import GENERATE_CSV, GENERATE_STEPS

Say = Callable[[str], None]


@dataclass
class DemoResult:
    folder: Path
    train: TrainResult
    report: VerifyReport
    files: dict[str, str]  # path -> what it is, every file the demo wrote


def run_demo(
    config: TrainConfig,
    out: str | os.PathLike,
    steps: int = GENERATE_STEPS,
    say: Say = print,
    progress: Progress | None = None,
    verify_progress=None,
) -> DemoResult:
    """Trains ``config`` into ``out``, exports, verifies, generates ``steps`` steps with the
    runtime into generate.csv and draws the plots. ``say`` reports each stage."""
    out = Path(out)
    say(f"[1/5] train ({config.trainer}, seed {config.seed})")
    result = train_folder(config, out, progress)
    say("      " + ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()))
    say("[2/5] export TorchScript + ONNX")
    export_folder(out)
    say("[3/5] verify against eager PyTorch")
    report = verify_folder(out, progress=verify_progress, trust=True)  # the folder it just made
    say(f"[4/5] generate {steps} steps with onnxruntime")
    model = runtime.load(out)
    ys, _ = model.generate(np.float32(training_start(out)), steps)
    write_generate_csv(out / GENERATE_CSV, ys)
    say("[5/5] plots")
    plot_folder(out)
    return DemoResult(out, result, report, describe_files(out, steps))


def describe_files(folder: Path, steps: int) -> dict[str, str]:
    """Every file of a demo folder with what it is: the manifest's files by role, then the rest."""
    roles = {
        "weights": "trained weights (state_dict)",
        "config": "sizes, trainer, seed, loss history, metrics",
        "step_torchscript": "TorchScript step module (torch.jit.load, libtorch)",
        "step_onnx": "ONNX step model (onnxruntime)",
        SEQUENCE_RNN: "fused teacher-forced loop, native RNN kernel (small batches)",
        SEQUENCE_LOOP: "fused teacher-forced loop, ONNX Loop (large batches)",
        ROLLOUT_RNN: "fused closed loop, native RNN kernel (small batches)",
        ROLLOUT_LOOP: "fused closed loop, ONNX Loop (large batches)",
    }
    files = {str(folder / entry.name): roles.get(entry.role, entry.role) for entry in read_manifest(folder).files}
    files.update(
        {
            str(folder / TEST_DATA_DIR): "self-check inputs and outputs of every ONNX model (ONNX model zoo layout)",
            str(folder / MANIFEST_NAME): "tensors, state, files with sha256, versions",
            str(folder / VERIFY_NAME): "parity report",
            str(folder / GENERATE_CSV): f"{steps} closed-loop steps from onnxruntime",
            str(folder / PREDICTION_NAME): "actual vs predicted, and the closed-loop rollout",
            str(folder / LOSS_NAME): "training loss",
            str(folder / PARITY_NAME): "parity errors against the tolerances",
        }
    )
    return files

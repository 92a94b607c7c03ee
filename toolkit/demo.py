"""The whole story in one call: train -> export -> verify -> generate -> plots, into one folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import runtime
from export import export_folder, verify_folder
from export.verify import VerifyReport
from rnn.config import TrainConfig
from rnn.train import Progress, TrainResult, stable_counterpart, train, train_folder
from runtime.fused import ROLLOUT_LOOP, ROLLOUT_RNN, SEQUENCE_LOOP, SEQUENCE_RNN
from runtime.manifest import MANIFEST_NAME, TEST_DATA_DIR, VERIFY_NAME, read_manifest

from .plots import LOSS_NAME, PARITY_NAME, PREDICTION_NAME, plot_folder, plot_side_by_side
from .running import stream_rows, training_warmup, write_generate_csv
from .settings import GENERATE_CSV, GENERATE_STEPS

Say = Callable[[str], None]
TrainerProgress = Callable[[str, int], Progress]  # (trainer, epochs) -> a training run's progress


@dataclass
class DemoResult:
    folder: Path
    train: TrainResult
    report: VerifyReport
    files: dict[str, str]  # path -> what it is, every file the demo wrote
    stable: TrainResult | None = None  # the bptt run drawn beside a reference run on the sine


def run_demo(
    config: TrainConfig,
    out: str | os.PathLike,
    steps: int = GENERATE_STEPS,
    say: Say = print,
    progress: TrainerProgress | None = None,
    verify_progress=None,
) -> DemoResult:
    """Trains ``config`` into ``out``, exports, verifies, generates ``steps`` steps with the
    runtime into generate.csv (what `rnn generate OUT --steps STEPS` prints: the closed loop from
    where prediction.png's starts, the training series fed teacher-forced first) and draws the
    plots. ``say`` reports each stage, ``progress`` (trainer, epochs) gives each training run's
    progress callback.

    The reference trainer on the sine (the default) fits the tutorial's points one step ahead,
    but its closed loop drifts off the wave; so the demo also trains the stable trainer
    (`rnn.train.stable_counterpart`, in memory) and prediction.png shows the seed's picture
    beside the stable trainer's closed loop (`toolkit.plots.plot_side_by_side`)."""
    config = config.resolved()
    out = Path(out)
    pair = config.trainer == "reference" and config.data is None
    stages = 6 if pair else 5
    say(f"[1/{stages}] train ({config.trainer}, seed {config.seed}, {config.epochs} epochs)")
    result = train_folder(config, out, progress and progress(config.trainer, config.epochs))
    say("      " + _metrics(result))
    stable = None
    if pair:
        counterpart = stable_counterpart(config)
        say(f"[2/{stages}] train the stable trainer beside it ({counterpart.trainer}, {counterpart.epochs} iterations)")
        stable = train(counterpart, progress and progress(counterpart.trainer, counterpart.epochs))
        say("      " + _metrics(stable))
    stage = stages - 3
    say(f"[{stage}/{stages}] export TorchScript + ONNX")
    export_folder(out)
    say(f"[{stage + 1}/{stages}] verify against eager PyTorch")
    report = verify_folder(out, progress=verify_progress, trust=True)  # the folder it just made
    say(f"[{stage + 2}/{stages}] generate {steps} steps with onnxruntime")
    model = runtime.load(out)
    x0, state = training_warmup(model, out)  # where prediction.png's closed loop starts, as `rnn generate OUT`
    ys, _ = model.generate(x0, steps, state)
    write_generate_csv(out / GENERATE_CSV, stream_rows(model, ys, False))
    say(f"[{stages}/{stages}] plots")
    plot_folder(out)
    if stable is not None:
        seed = (result.model, result.checkpoint_config())
        plot_side_by_side(seed, (stable.model, stable.checkpoint_config()), out / PREDICTION_NAME)
    return DemoResult(out, result, report, describe_files(out, steps, stable is not None), stable)


def _metrics(result: TrainResult) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())


def describe_files(folder: Path, steps: int, side_by_side: bool = False) -> dict[str, str]:
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
            str(folder / PREDICTION_NAME): (
                "the tutorial's picture (reference trainer) beside the bptt trainer's closed loop"
                if side_by_side
                else "actual vs predicted, and the closed-loop rollout"
            ),
            str(folder / LOSS_NAME): "training loss",
            str(folder / PARITY_NAME): "parity errors against the tolerances",
        }
    )
    return files

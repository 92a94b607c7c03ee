"""The `rnn` command's shared click pieces: the error-handling group and the options several commands take."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from runtime.errors import ToolkitError

EXISTING_FILE = click.Path(dir_okay=False, exists=True, path_type=Path)  # keys, certificates, weights


class ErrorsGroup(click.Group):
    """Turns the toolkit's typed errors into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ToolkitError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)
        except BrokenPipeError:
            quiet_broken_pipe()  # here: click's own main would turn it into exit code 1
        except OSError as error:  # unreadable input or unwritable output
            where = f" {error.filename!r}" if getattr(error, "filename", None) else ""
            click.echo(f"error: {error.strerror or error}{where}", err=True)
            sys.exit(2)


def quiet_broken_pipe() -> None:
    """stdout's reader is gone: point stdout at /dev/null so that the interpreter's final flush
    does not complain, and exit with the status of a process ended by SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(128 + signal.SIGPIPE)


def stacked(*options):
    """One decorator applying ``options`` in the order listed (the first is the first in --help)."""

    def apply(function):
        for option in reversed(options):
            function = option(function)
        return function

    return apply


def folder_argument(function):
    return click.argument("folder", type=click.Path(file_okay=False, path_type=Path))(function)


THREADS = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="PyTorch intra-op threads. More only pays for large hidden sizes on idle cores.",
)
DIGEST = click.option(
    "--digest",
    metavar="SHA256",
    default=None,
    help="Refuse the folder unless its manifest.json has this sha256 (rnn info prints it): a pinned folder.",
)
PUBLIC_KEY = click.option(
    "--public-key",
    type=EXISTING_FILE,
    default=None,
    help="Refuse the folder unless its signature (model.sig, rnn sign) verifies with this PEM key (sign extra).",
)
TRUST = click.option(
    "--trust",
    is_flag=True,
    help="Trust this folder (you made it) though it is neither pinned nor signed: TorchScript is loaded, and "
    "loading TorchScript runs the code inside it.",
)
PINS = stacked(DIGEST, PUBLIC_KEY)
FACTORY = click.option(
    "--factory",
    default=None,
    metavar="PACKAGE.MODULE:FUNCTION",
    help="For a folder of your own module: the function that builds it (it is imported and run).",
)
EXPORTER = click.option(
    "--exporter",
    type=click.Choice(["torchscript", "dynamo"]),
    default="torchscript",
    show_default=True,
    help="How step.onnx is made: from the TorchScript module, or through torch.export.",
)
OPSET = click.option(
    "--opset",
    type=int,
    default=None,
    help="ONNX opset. Default: the exporter's (torchscript 17, dynamo 18); the fused loops need 15 or later, "
    "the dynamo exporter 18 or later.",
)
ORT = click.option(
    "--ort",
    "ort_format",
    is_flag=True,
    help="Also write every model in onnxruntime's ORT format (<form>.ort) for mobile and minimal builds.",
)
DEVICE = click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Execution provider; cuda needs onnxruntime-gpu and never falls back to the CPU.",
)
NONFINITE = click.option(
    "--allow-nonfinite", is_flag=True, help="Run inputs that hold NaN or infinity instead of refusing them."
)
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of CSV.")


def train_options(function):
    """The options of what `rnn train` and `rnn demo` train (toolkit.making.TrainOptions), and --threads."""
    from rnn.config import HIDDEN_SIZE, MAX_SEED, MAX_SEQ_LENGTH, MAX_SIZE, TRAINER_DEFAULTS, TRAINERS
    from rnn.data import SEQ_LENGTH

    epochs = " / ".join(f"{d['epochs']}" for d in TRAINER_DEFAULTS.values())
    lrs = " / ".join(f"{d['lr']:g}" for d in TRAINER_DEFAULTS.values())
    return stacked(
        click.option(
            "--trainer",
            type=click.Choice(list(TRAINERS)),
            default="reference",
            show_default=True,
            help="reference: the tutorial's one-point-at-a-time SGD; bptt: Adam through whole windows "
            "with closed-loop loss (keeps the wave going when fed its own outputs).",
        ),
        click.option(
            "--cell",
            type=click.Choice(["elman", "gru", "lstm"]),
            default="elman",
            show_default=True,
            help="elman: the tutorial's RNN; gru / lstm: torch's GRUCell / LSTMCell with a linear readout.",
        ),
        click.option(
            "--seed",
            type=click.IntRange(0, MAX_SEED),
            default=0,
            show_default=True,
            help="Random seed; the same seed gives bit-identical weights.",
        ),
        click.option(
            "--epochs",
            type=click.IntRange(min=1),
            default=None,
            help=f"Epochs (reference) or iterations (bptt). Default: the trainer's ({epochs}).",
        ),
        click.option(
            "--lr",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help=f"Learning rate. Default: the trainer's ({lrs}).",
        ),
        click.option(
            "--hidden-size",
            type=click.IntRange(1, MAX_SIZE),
            default=HIDDEN_SIZE,
            show_default=True,
            help=f"Context neurons (at most {MAX_SIZE}: the weights grow with its square).",
        ),
        click.option(
            "--seq-length",
            type=click.IntRange(1, MAX_SEQ_LENGTH),
            default=SEQ_LENGTH,
            show_default=True,
            help="Points of the sine series (t = linspace(2, 10, seq_length + 1)).",
        ),
        click.option(
            "--data",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="A one-column .csv or .npy series to train on instead of the sine.",
        ),
        THREADS,
    )(function)


def bulk_options(function):
    """--ray, --out, --address, --actors: predict and generate over a dataset on Ray Data (toolkit.on_ray.Bulk)."""
    from toolkit.bulk import ACTORS

    return stacked(
        click.option("--ray", is_flag=True, help="Run over every series of the dataset --input on Ray Data."),
        click.option(
            "--out",
            type=click.Path(path_type=Path),
            default=None,
            help="With --ray: the output, a new folder of Parquet files (id and y, or a column per output / the "
            "sampled tokens).",
        ),
        click.option(
            "--address",
            default=None,
            help="With --ray: the Ray cluster to use (ray.init address). Default: a local one started for the run.",
        ),
        click.option(
            "--actors",
            type=click.IntRange(1, 1024),
            default=ACTORS,
            show_default=True,
            help="With --ray: model workers (Ray actors), each loading the folder once.",
        ),
    )(function)


def sampling_options(function):
    """--sample, --temperature, --top-k, --top-p, --seed: how a model that samples its next token draws it."""
    return stacked(
        click.option(
            "--sample",
            type=click.Choice(["greedy", "temperature", "top_k", "top_p"]),
            default=None,
            help="A model that samples its next token: how. Default: top_k or top_p when --top-k or --top-p is "
            "given, temperature when --temperature or --seed is, else greedy.",
        ),
        click.option(
            "--temperature",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="Divides the logits before the draw. Default: 1.",
        ),
        click.option("--top-k", type=click.IntRange(min=1), default=None, help="Keep the k most likely tokens."),
        click.option(
            "--top-p",
            type=click.FloatRange(0, 1, min_open=True),
            default=None,
            help="Keep the most likely tokens up to this mass.",
        ),
        click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="The sampler's seed. Default: 0."),
    )(function)


class StateSpec(click.ParamType):
    """NAME:SIZE[:INITIAL], parsed once, here."""

    name = "NAME:SIZE[:INITIAL]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = value.split(":")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            return parts[0], int(parts[1]), float(parts[2]) if len(parts) > 2 else 0.0
        except ValueError:
            self.fail(f"must be NAME:SIZE or NAME:SIZE:INITIAL, got {value!r}", param, ctx)

"""The `rnn` command line: click options parsed and handed to one library function per command.

Commands that run an exported folder (predict, generate, info) import only torch-free modules
(the runtime, rnn.config, rnn.data); the others import torch when they run, on one intra-op thread unless --threads says
otherwise. Results (tables, CSV, JSON) go to stdout; progress and status lines to stderr. A
user error prints one line and exits 2; a closed stdout (``rnn generate ... | head``) ends the
command quietly.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from rnn.config import MAX_SIZE
from runtime.errors import InputValueError, ToolkitError, UnsupportedError

from .settings import (
    BENCH_BATCHES,
    BENCH_JSON,
    BENCH_KINDS,
    BENCH_PNG,
    BENCH_ROUNDS,
    BENCH_STEPS,
    BENCH_STREAM_COUNTS,
    GENERATE_STEPS,
    listed,
)


class _Group(click.Group):
    """Turns the toolkit's typed errors into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ToolkitError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)
        except BrokenPipeError:
            _quiet_broken_pipe()  # here: click's own main would turn it into exit code 1
        except OSError as error:  # unreadable input or unwritable output
            where = f" {error.filename!r}" if getattr(error, "filename", None) else ""
            click.echo(f"error: {error.strerror or error}{where}", err=True)
            sys.exit(2)


def _needs_torch(command: str, threads: int = 1) -> None:
    """Says which package to install when a torch command runs without torch; then sets torch's
    intra-op threads (1 by default: these models are far too small for more to pay, and on busy
    cores torch's default spins; NOTES.md)."""
    from .extras import require

    require(("torch", "onnx", "matplotlib"), f"'rnn {command}'", "train")
    import torch

    torch.set_num_threads(threads)


_THREADS = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="PyTorch intra-op threads. More only pays for large hidden sizes on idle cores.",
)


def _emit_json(document: Any) -> None:
    """Strict JSON on stdout: NaN and infinity (possible with --allow-nonfinite) become null."""
    click.echo(json.dumps(_finite(document), indent=2, allow_nan=False))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


_EXISTING_FILE = click.Path(dir_okay=False, exists=True, path_type=Path)  # keys, certificates, weights


def _folder_argument(function):
    return click.argument("folder", type=click.Path(file_okay=False, path_type=Path))(function)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=None, version=importlib.import_module("runtime").__version__, prog_name="rnn")
def cli() -> None:
    """Train, export, verify and run small recurrent models (PyTorch -> TorchScript/ONNX -> onnxruntime).

    A typical session: rnn train --out DIR; rnn export DIR; rnn verify DIR; rnn generate DIR --steps 100.
    Or all at once: rnn demo --out DIR.
    """


# ---- train -------------------------------------------------------------------------------


def _train_options(function):
    from rnn.config import HIDDEN_SIZE, MAX_SEED, MAX_SEQ_LENGTH, MAX_SIZE, TRAINER_DEFAULTS, TRAINERS
    from rnn.data import SEQ_LENGTH

    defaults = " / ".join(f"{d['epochs']}" for d in TRAINER_DEFAULTS.values())
    lrs = " / ".join(f"{d['lr']:g}" for d in TRAINER_DEFAULTS.values())
    options = [
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
            help=f"Epochs (reference) or iterations (bptt). Default: the trainer's ({defaults}).",
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
        _THREADS,
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _train_config(trainer, cell, seed, epochs, lr, hidden_size, seq_length, data):
    from rnn.config import TrainConfig

    return TrainConfig(
        trainer=trainer,
        cell=cell,
        seed=seed,
        epochs=epochs,
        lr=lr,
        hidden_size=hidden_size,
        seq_length=seq_length,
        data=str(data.resolve()) if data else None,
    ).resolved()


class _Progress:
    """A one-line progress display on stderr: redrawn in place on a terminal, a line every tenth
    of the work (and at the end) in a log, so long work never runs silent."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def __call__(self, done: int, total: int, text: str = "") -> None:
        tenth = done * 10 // max(total, 1)
        if self.tty:
            width = 30
            filled = width * done // max(total, 1)
            end = "\n" if done >= total else ""
            click.echo(
                f"\r{self.label} [{'#' * filled}{'-' * (width - filled)}] {done}/{total} {text:<40.40}{end}",
                err=True,
                nl=False,
            )
        elif tenth > self.shown or done >= total:
            self.shown = tenth
            click.echo(f"{self.label}: {done}/{total} {text}", err=True)


def _epoch_progress(config):
    """rnn.train's progress callback (epoch, loss), shown as a _Progress over the epochs."""
    show = _Progress(f"training ({config.trainer})")
    return lambda epoch, loss: show(epoch + 1, config.epochs, f"loss {loss:.4g}")


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write weights.pt and config.json into (replaced whole if it exists).",
)
@_train_options
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def train(out, as_json, threads, **options) -> None:
    """Train a step module (the Elman RNN by default) and write weights.pt (a state_dict) and
    config.json into OUT."""
    _needs_torch("train", threads)
    from rnn.train import train_folder
    from runtime.manifest import CONFIG_NAME, WEIGHTS_NAME

    config = _train_config(**options)
    result = train_folder(config, out, _epoch_progress(config))
    if as_json:
        _emit_json({"folder": str(out), "final_loss": result.loss_history[-1], "metrics": result.metrics})
        return
    for epoch in range(0, len(result.loss_history), 10 if config.trainer == "reference" else 100):
        click.echo(f"epoch {epoch:5d}  loss {result.loss_history[epoch]:.6g}")
    click.echo(
        f"final loss {result.loss_history[-1]:.6g}; " + ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
    )
    click.echo(f"wrote {out / WEIGHTS_NAME} and {out / CONFIG_NAME}")


# ---- pinning, signatures, trust ----------------------------------------------------------

_DIGEST = click.option(
    "--digest",
    metavar="SHA256",
    default=None,
    help="Refuse the folder unless its manifest.json has this sha256 (rnn info prints it): a pinned folder.",
)
_PUBLIC_KEY = click.option(
    "--public-key",
    type=_EXISTING_FILE,
    default=None,
    help="Refuse the folder unless its signature (model.sig, rnn sign) verifies with this PEM key (sign extra).",
)
_TRUST = click.option(
    "--trust",
    is_flag=True,
    help="Trust this folder (you made it) though it is neither pinned nor signed: TorchScript is loaded, and "
    "loading TorchScript runs the code inside it.",
)


def _pinned(folder: Path, digest: str | None, public_key: Path | None) -> str | None:
    """The manifest digest the folder must have: --digest, or the one its verified signature gives
    (both: they must agree); None when the caller pins nothing."""
    if public_key is None:
        return digest
    from toolkit.signing import verify_signature

    verified = verify_signature(folder, public_key=public_key)
    if digest is not None and digest != verified:
        raise InputValueError(f"--digest {digest[:12]}... differs from the signed manifest's {verified[:12]}...")
    return verified


def _pin_options(function):
    return _DIGEST(_PUBLIC_KEY(function))


# ---- export, verify, plot -----------------------------------------------------------------

_FACTORY = click.option(
    "--factory",
    default=None,
    metavar="PACKAGE.MODULE:FUNCTION",
    help="For a folder of your own module: the function that builds it (it is imported and run).",
)
_EXPORTER = click.option(
    "--exporter",
    type=click.Choice(["torchscript", "dynamo"]),
    default="torchscript",
    show_default=True,
    help="How step.onnx is made: from the TorchScript module, or through torch.export.",
)
_OPSET = click.option(
    "--opset",
    type=int,
    default=None,
    help="ONNX opset. Default: the exporter's (torchscript 17, dynamo 18); the fused loops need 15 or later, "
    "the dynamo exporter 18 or later.",
)
_ORT = click.option(
    "--ort",
    "ort_format",
    is_flag=True,
    help="Also write every model in onnxruntime's ORT format (<form>.ort) for mobile and minimal builds.",
)


def _list_artifacts(target: Path) -> None:
    from runtime.manifest import MANIFEST_NAME, TEST_DATA_DIR, read_manifest

    for entry in read_manifest(target).files:
        click.echo(f"{str(target / entry.name):<50} {entry.role}")
    click.echo(f"{str(target / TEST_DATA_DIR):<50} self-check data (ONNX model zoo layout)")
    click.echo(f"{str(target / MANIFEST_NAME):<50} manifest")


@cli.command()
@_folder_argument
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the artifact folder here instead of into FOLDER.",
)
@_OPSET
@_ORT
@_EXPORTER
@_FACTORY
@_THREADS
def export(folder, out, opset, ort_format, exporter, factory, threads) -> None:
    """Script the model in FOLDER with TorchScript, export it and its fused loops to ONNX, write
    self-check test data and manifest.json."""
    _needs_torch("export", threads)
    from export import export_folder

    _list_artifacts(export_folder(folder, out, opset, ort_format=ort_format, exporter=exporter, factory=factory))


@cli.command()
@_folder_argument
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@_FACTORY
@_pin_options
@_TRUST
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also check on your own inputs: a .csv (one column per input feature, one row per step) or .npy "
    "of shape (steps,), (steps, input_size) or (steps, batch, input_size); for a model with named or "
    "token inputs an .npz of one array per input name. Default: none, only the built-in checks.",
)
@_THREADS
def verify(folder, as_json, factory, digest, public_key, trust, data_path, threads) -> None:
    """Check TorchScript and ONNX against eager PyTorch; write verify.json. Exit 1 on any failure.

    TorchScript is checked only in a folder you trust (--digest, --public-key or --trust):
    loading it runs the code inside the archive. The report says when it was skipped.

    With --data, every teacher-forced form also runs over your data, and every closed-loop
    form rolls out from its first value (rows "user data ..."); verify.json's user_data
    names the file, its sha256 and the shape checked."""
    _needs_torch("verify", threads)
    from export import verify_folder

    pinned = _pinned(folder, digest, public_key)
    report = verify_folder(
        folder,
        factory=factory,
        progress=_Progress("verifying"),
        digest=pinned,
        trust=trust,
        inputs=data_path,
    )
    _emit_json(report.to_dict()) if as_json else click.echo(report.table())
    if not report.passed:
        sys.exit(1)


@cli.command()
@_folder_argument
@_FACTORY
@_THREADS
def plot(folder, factory, threads) -> None:
    """Draw prediction.png and loss.png (and parity.png after verify) into FOLDER."""
    _needs_torch("plot", threads)
    from rnn.config import read_config
    from toolkit.plots import PREDICTION_NAME, drawable_prediction, plot_folder

    for path in plot_folder(folder, factory=factory):
        click.echo(f"wrote {path}")
    if not drawable_prediction(read_config(folder)):
        click.echo(f"no {PREDICTION_NAME}: it draws a one-column series (models of one input and one output)", err=True)


# ---- running (torch-free) ------------------------------------------------------------------

_DEVICE = click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Execution provider; cuda needs onnxruntime-gpu and never falls back to the CPU.",
)
_NONFINITE = click.option(
    "--allow-nonfinite", is_flag=True, help="Run inputs that hold NaN or infinity instead of refusing them."
)


def _bulk_options(function):
    from toolkit.bulk import ACTORS

    options = [
        click.option("--ray", is_flag=True, help="Run over every series of the dataset --input on Ray Data."),
        click.option(
            "--out",
            type=click.Path(path_type=Path),
            default=None,
            help="With --ray: the output, a new folder of Parquet files (id, y).",
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
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _bulk(folder, kind, steps, input_path, device, digest, public_key, as_json, ray, out, address, actors) -> None:
    """`rnn predict/generate --ray`: toolkit.bulk.run_bulk, its summary line on stderr."""
    from toolkit.bulk import run_bulk

    if not ray:
        raise InputValueError("--out and --address go with --ray")
    if input_path is None or out is None:
        raise InputValueError("--ray needs --input (a Parquet or .npy dataset) and --out (a new folder)")
    if device != "cpu" or as_json:
        raise InputValueError("--ray runs on the CPU and writes Parquet: leave out --device and --json")
    if digest is not None or public_key is not None:
        _load(folder, device, False, digest, public_key)  # the pins, checked once here before the workers load it
    from runtime.manifest import read_manifest

    if not read_manifest(folder).classic:
        raise UnsupportedError(
            "--ray bulk runs take folders of the classic signature (x -> y, format 1); this folder has named or "
            "token inputs (format 2): run it with the Python runtime (runtime.load(...).predict / generate)"
        )
    result = run_bulk(folder, input_path, out, kind=kind, steps=steps, address=address, actors=actors)
    click.echo(f"{kind}: {result.series} series in {result.seconds:.1f} s -> {result.out}", err=True)


def _load(folder: Path, device: str, allow_nonfinite: bool, digest: str | None = None, public_key=None):
    """The folder through the torch-free runtime: its manifest pinned where asked, then the
    sha256 of every file checked."""
    import runtime

    pinned = _pinned(folder, digest, public_key)
    return runtime.load(folder, device=device, allow_nonfinite=allow_nonfinite, digest=pinned)


def _number(value: float) -> float:
    """A float as it should print in JSON: 4.8, not 4.800000000000001."""
    return float(f"{value:.12g}")


@cli.command()
@_folder_argument
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path),
    default=None,
    help="A one-column .csv or .npy series. Default: the series the model was trained on. "
    "A model with named inputs: an .npz of one array per input, (steps, ...) or (steps, batch, ...). "
    "With --ray: the dataset (Parquet or .npy, a file or a folder).",
)
@_DEVICE
@_pin_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of CSV.")
@_bulk_options
def predict(folder, input_path, device, digest, public_key, as_json, ray, out, address, actors) -> None:
    """Teacher-forced one-step predictions over a series, from the exported ONNX model (CSV).

    Each row: the input at t, the prediction the model makes from it for the next point (at
    next_t), and that point's true value (target; empty after the last point of the series).
    A model with several outputs gets one prediction column each and no target.

    With --ray: over every series of the dataset --input (Parquet or .npy) on Ray Data, written
    to the Parquet folder --out (README, "Bulk predict and generate on Ray Data")."""
    from rnn.config import read_config, training_series
    from rnn.data import load_series

    if ray or out is not None or address is not None:
        _bulk(folder, "predict", None, input_path, device, digest, public_key, as_json, ray, out, address, actors)
        return
    model = _load(folder, device, False, digest, public_key)  # a series file never holds NaN (load_series)
    if not model.manifest.classic:  # named inputs, tokens or batch-first sequences
        from toolkit.general_cli import predict_csv, read_sequences

        if input_path is None:
            raise InputValueError("this model has named inputs: give --input FILE.npz (an array per input name)")
        sequences = read_sequences(input_path, model.inputs, model.layout)
        if as_json:
            ys, _ = model.predict(sequences)
            named = ys if isinstance(ys, dict) else {model.output_names[0]: ys}
            _emit_json({"layout": model.layout, **{k: np.asarray(v).tolist() for k, v in named.items()}})
            return
        for text in predict_csv(model, sequences):
            click.echo(text)
        return
    if input_path is not None:
        series = load_series(input_path)
        times, inputs = np.arange(len(series) + 1, dtype=np.float64), series
    else:
        training = training_series(read_config(folder).train, folder)
        times, series, inputs = training.times, training.values, training.values[:-1]
    predictions, _ = model.predict(inputs)  # float64 in: the runtime refuses what float32 cannot hold
    rows = predictions.reshape(len(inputs), -1).astype(float)  # (steps, output_size)
    single = rows.shape[1] == 1
    targets = [float(v) for v in series[1:]] + [None] * (len(inputs) - len(series) + 1)
    if as_json:
        document = {
            "t": [_number(t) for t in times[: len(inputs)]],
            "input": inputs.tolist(),
            "next_t": [_number(t) for t in times[1 : len(inputs) + 1]],
            "prediction": rows[:, 0].tolist() if single else rows.tolist(),
        }
        _emit_json({**document, "target": targets} if single else document)
        return
    columns = ["prediction"] if single else [f"prediction_{i}" for i in range(rows.shape[1])]
    click.echo(",".join(["t", "input", "next_t", *columns, *(["target"] if single else [])]))
    for t, x, t_next, row, target in zip(times, inputs, times[1:], rows, targets):
        values = [f"{t:.6g}", f"{x:.8g}", f"{t_next:.6g}", *(f"{y:.8g}" for y in row)]
        click.echo(",".join(values + (["" if target is None else f"{target:.8g}"] if single else [])))


@cli.command()
@_folder_argument
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=GENERATE_STEPS,
    show_default=True,
    help="Closed-loop steps to generate.",
)
@click.option(
    "--x0",
    type=float,
    default=None,
    help="First input. Default: the first point of the training series (or the last of --warmup).",
)
@click.option(
    "--warmup",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A .csv/.npy series fed teacher-forced first; generation continues from its last point.",
)
@_DEVICE
@_NONFINITE
@_pin_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of CSV.")
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path),
    default=None,
    help="With --ray: the dataset (Parquet or .npy); each series warms the state up, as --warmup does.",
)
@click.option(
    "--start",
    "start_values",
    multiple=True,
    metavar="NAME=VALUES",
    help="A model with named inputs: an input's first value (repeat per input), e.g. --start token=3 "
    "--start category=0,1,0; inputs other than the fed-back one keep it for every step.",
)
@click.option(
    "--sample",
    type=click.Choice(["greedy", "temperature", "top_k", "top_p"]),
    default=None,
    help="A model that samples its next token: how. Default: top_k or top_p when --top-k or --top-p is "
    "given, else temperature.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Divides the logits before the draw. Default: 1.",
)
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Keep the k most likely tokens.")
@click.option(
    "--top-p",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Keep the most likely tokens up to this mass.",
)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="The sampler's seed. Default: 0.")
@_bulk_options
def generate(
    folder,
    steps,
    x0,
    warmup,
    device,
    allow_nonfinite,
    digest,
    public_key,
    as_json,
    input_path,
    start_values,
    sample,
    temperature,
    top_k,
    top_p,
    seed,
    ray,
    out,
    address,
    actors,
) -> None:
    """Run the autoregressive context loop in onnxruntime: each output is the next input (CSV,
    streamed in chunks: any number of steps; --json holds at most a million).

    A model with named or token inputs (format 2): --start NAME=VALUES gives the first inputs
    (or --warmup FILE.npz, teacher-forced, generation going on from its last step); a model that
    samples its next token prints "step,<token input>" rows, seeded (--sample, --temperature,
    --top-k, --top-p, --seed).

    With --ray: --steps from the last point of every series of the dataset --input, each warmed up
    on the points before it, on Ray Data, written to the Parquet folder --out."""
    from rnn.config import read_config
    from rnn.data import load_series
    from toolkit.running import JSON_MAX_STEPS, generate_csv_chunks, start_value

    if ray or out is not None or address is not None or input_path is not None:
        sampling = (start_values, sample, temperature, top_k, top_p, seed)
        if x0 is not None or warmup is not None or allow_nonfinite or any(v not in (None, ()) for v in sampling):
            raise InputValueError(
                "--ray starts each series from its own last point: leave out --x0, --warmup, --allow-nonfinite "
                "(and --start and the sampling options, which --ray does not take)"
            )
        _bulk(folder, "generate", steps, input_path, device, digest, public_key, as_json, ray, out, address, actors)
        return
    if as_json and steps > JSON_MAX_STEPS:
        raise InputValueError(
            f"--json holds at most {JSON_MAX_STEPS} steps in one document, got {steps}; "
            "leave out --json for CSV, which streams any number"
        )
    model = _load(folder, device, allow_nonfinite, digest, public_key)
    if not model.manifest.classic:  # named inputs, tokens or batch-first sequences
        if x0 is not None:
            raise InputValueError("this model has named inputs: give --start NAME=VALUES instead of --x0")
        _generate_general(model, steps, start_values, warmup, (sample, temperature, top_k, top_p, seed), as_json)
        return
    if start_values or sample or top_k or top_p or temperature is not None or seed is not None:
        raise InputValueError(
            "--start, --sample, --temperature, --top-k, --top-p and --seed are for models with named or token inputs"
        )
    state = None
    if warmup is not None:
        series = load_series(warmup)
        _, state = model.predict(series[:-1])
        start = float(series[-1]) if x0 is None else x0
    else:
        start = start_value(read_config(folder), folder) if x0 is None else x0
    if as_json:
        ys, _ = model.generate(start, steps, state)  # a float: the runtime refuses what float32 cannot hold
        _emit_json(
            {"x0": start, "steps": steps, "y": ys.reshape(-1).astype(float).tolist(), "providers": model.providers}
        )
        return
    for text in generate_csv_chunks(model, start, steps, state):
        click.echo(text)


def _generate_general(model, steps, start_values, warmup, sampling, as_json) -> None:
    """`rnn generate` of a format 2 folder (toolkit.general_cli)."""
    from toolkit.general_cli import generate_csv, last_step, make_sampler, parse_start, read_sequences
    from toolkit.running import JSON_MAX_STEPS

    sampler = make_sampler(model, *sampling)
    start, state = {}, None
    if warmup is not None:
        head, start = last_step(read_sequences(warmup, model.inputs, model.layout), model.layout)
        if next(iter(start.values())).shape[0] != 1:
            raise InputValueError("--warmup must hold one stream (arrays of (steps, ...)) for rnn generate")
        if next(iter(head.values())).size:
            _, state = model.predict(head)
    start.update(parse_start(start_values, model.inputs))
    missing = [t.name for t in model.inputs if t.name not in start]
    if missing:
        raise InputValueError(f"give every input's first value: --start {missing[0]}=... (missing: {missing})")
    if as_json:
        if steps > JSON_MAX_STEPS:
            raise InputValueError(f"--json holds at most {JSON_MAX_STEPS} steps, got {steps}; leave out --json")
        ys, _ = model.generate(start, steps, state, sampler=sampler)
        named = {"tokens": ys} if sampler is not None else (ys if isinstance(ys, dict) else {model.output_names[0]: ys})
        axis = 0 if model.layout == "batch_first" else 1
        document = {k: np.take(np.asarray(v), 0, axis=axis).tolist() for k, v in named.items()}
        _emit_json({"steps": steps, **document, "sampler": None if sampler is None else repr(sampler)})
        return
    for text in generate_csv(model, start, steps, state, sampler):
        click.echo(text)


@cli.command()
@_folder_argument
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and checks as JSON.")
@_pin_options
def info(folder, as_json, digest, public_key) -> None:
    """Describe an artifact folder: model, tensors, files (checked against their sha256), versions,
    the manifest's digest (what --digest pins) and whether verify.json verified this manifest.

    An unreadable verify.json is reported, not fatal: "verified unknown (...)" and exit 0 (JSON:
    "verified" null and "verify_error" saying why). A verify.json about another manifest (the
    folder changed since) counts as not verified."""
    from runtime.manifest import TORCHSCRIPT_SKIPPED_KEY, check_files, read_manifest_pinned
    from toolkit.running import read_verify_report

    manifest, manifest_sha256 = read_manifest_pinned(folder, _pinned(folder, digest, public_key))
    try:
        check_files(folder, manifest)
        integrity = "ok"
    except ToolkitError as error:
        integrity = f"FAILED: {error}"
    verified, verify_error, user_data = None, None, None
    try:
        report = read_verify_report(folder)
        if report is not None and report.get("manifest_sha256") != manifest_sha256:
            verify_error = "verify.json is about another manifest: the folder changed since; run rnn verify"
        else:
            verified = None if report is None else report["passed"]
            user_data = None if report is None else report.get("user_data")
    except ToolkitError as error:
        verify_error = str(error)
    if as_json:
        document = {
            **manifest.to_dict(),
            "manifest_sha256": manifest_sha256,
            "integrity": integrity,
            "verified": verified,
            "verified_on_user_data": user_data,
        }
        _emit_json({**document, "verify_error": verify_error} if verify_error else document)
        return
    model = manifest.model
    # hidden_size is the first state's size: it describes a model of one state tensor, or a
    # built-in cell (every state that size); the state lines below give each tensor's own size
    omitted = {"kind", TORCHSCRIPT_SKIPPED_KEY} | ({"hidden_size"} if model.get("kind") == "custom" else set())
    click.echo(f"folder     {folder}")
    click.echo(f"digest     {manifest_sha256}  (sha256 of manifest.json: pin it with --digest)")
    described = "  ".join(f"{key}={value}" for key, value in model.items() if key not in omitted)
    click.echo(f"model      {model.get('kind')}  {described}")
    for label, specs in (("inputs", manifest.inputs), ("outputs", manifest.outputs)):
        click.echo(f"{label:<10} " + ", ".join(f"{t.name} {t.describe()}" for t in specs))
    for spec in manifest.state:  # one line per state tensor, each with its own size
        click.echo(f"state      {spec.name} -> {spec.output} {spec.describe()}")
    if manifest.format_version >= 2:
        closed = manifest.closed_loop
        loop = "none" if closed is None else f"{closed.output} -> {closed.input} ({closed.via})"
        click.echo(f"layout     {manifest.layout}   feedback {loop}")
    if model.get(TORCHSCRIPT_SKIPPED_KEY):
        click.echo(f"torchscript not written: {model[TORCHSCRIPT_SKIPPED_KEY]}")
    click.echo(f"opset      {manifest.opset}   format version {manifest.format_version}")
    for entry in manifest.files:
        click.echo(f"file       {entry.name:<22} {entry.role:<17} {entry.size:>8} B  sha256 {entry.sha256[:16]}")
    click.echo("versions   " + "  ".join(f"{k} {v}" for k, v in sorted(manifest.versions.items())))
    click.echo(f"integrity  {integrity}")
    status = "not yet (run rnn verify)" if verified is None else ("passed" if verified else "FAILED")
    if verified is not None:  # anyone can write verify.json: it is a report, not a proof
        status += " (as verify.json reports for this manifest; not authenticated: rerun rnn verify to know)"
    click.echo(f"verified   {f'unknown ({verify_error})' if verify_error else status}")
    if verified is not None:
        if isinstance(user_data, dict):
            shape = "x".join(str(n) for n in user_data.get("shape", []))
            click.echo(
                f"user data  {user_data.get('source')} (shape {shape}, sha256 {str(user_data.get('sha256'))[:16]})"
            )
        else:
            click.echo("user data  none (rnn verify --data FILE checks the forms on your own inputs)")


def _signature_file(path: Path) -> dict:
    """The keyword arguments of export_module a --signature JSON file gives (inputs, outputs,
    states, layout, feedback); InputValueError naming what is wrong."""
    from runtime.jsonfile import parse_json

    limit = 1 << 20
    with open(path, "rb") as handle:
        raw = handle.read(limit + 1)
    if len(raw) > limit:
        raise InputValueError(f"--signature {path} is larger than 1 MiB")
    document = parse_json(raw, str(path), InputValueError)
    keys = {"inputs", "outputs", "states", "layout", "feedback"}
    if not isinstance(document, dict) or not {"inputs", "outputs", "states"} <= set(document) <= keys:
        raise InputValueError(
            f"--signature {path} must be a JSON object with inputs, outputs and states (and optionally layout, "
            f"feedback), got {sorted(document) if isinstance(document, dict) else type(document).__name__}"
        )
    return document


class _StateSpec(click.ParamType):
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


@cli.command("export-module")
@click.argument("factory", metavar="PACKAGE.MODULE:FUNCTION")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Artifact folder to write (replaced whole if it is an earlier artifact folder).",
)
@click.option(
    "--weights",
    type=_EXISTING_FILE,
    default=None,
    help="A state_dict (.pt) to load into the module (weights_only). Default: the factory's weights.",
)
@click.option("--input-size", type=click.IntRange(1, MAX_SIZE), default=1, show_default=True, help="Size of x.")
@click.option("--output-size", type=click.IntRange(1, MAX_SIZE), default=1, show_default=True, help="Size of y.")
@click.option(
    "--state",
    "states",
    type=_StateSpec(),
    multiple=True,
    help="A state tensor, in forward's order (repeat): its name, size and initial value (default 0).",
)
@click.option(
    "--signature",
    "signature_path",
    type=_EXISTING_FILE,
    default=None,
    help='A JSON file with any other signature: {"inputs": [...], "outputs": [...], "states": [...], '
    '"layout", "feedback"} as export_module takes them (token inputs, several inputs, layered states; '
    "README). Replaces --input-size, --output-size and --state.",
)
@_EXPORTER
@_OPSET
@_THREADS
def export_module_command(
    factory, out, weights, input_size, output_size, states, signature_path, exporter, opset, threads
) -> None:
    """Export your own step module: FACTORY builds a torch.nn.Module whose forward(x, *state)
    returns (y, *state), or with --signature forward(*inputs, *states) -> (*outputs, *states).
    Then verify with: rnn verify OUT --factory FACTORY."""
    _needs_torch("export-module", threads)
    from export import export_module
    from rnn.checkpoint import load_module_weights
    from rnn.factory import resolve_factory

    if signature_path is not None:
        if states:
            raise InputValueError("--signature lists the states: leave out --state")
        shape = _signature_file(signature_path)
    elif not states:
        raise InputValueError("give the module's state tensors: --state NAME:SIZE (repeat), or a --signature file")
    else:
        shape = {"input_size": input_size, "output_size": output_size, "states": states}
    module = resolve_factory(factory)()
    if weights is not None:
        load_module_weights(module, weights)
    target = export_module(module, out, exporter=exporter, opset=opset, factory=factory, **shape)
    click.echo(f"wrote {target} (verify: rnn verify {target} --factory {factory})")


# ---- signing ------------------------------------------------------------------------------


@cli.command()
@_folder_argument
@click.option(
    "--key",
    "private_key",
    type=_EXISTING_FILE,
    required=True,
    help="The private key (PEM, elliptic curve) to sign with.",
)
@click.option(
    "--password-env",
    metavar="VARIABLE",
    default=None,
    help="The environment variable holding the key's password (never a command-line argument).",
)
@click.option(
    "--certificate",
    type=_EXISTING_FILE,
    default=None,
    help="Sign certificate-based: the key's certificate (PEM); its issuers with --chain.",
)
@click.option(
    "--chain",
    "certificate_chain",
    type=_EXISTING_FILE,
    multiple=True,
    help="A certificate of the chain above --certificate (repeat, PEM).",
)
def sign(folder, private_key, password_env, certificate, certificate_chain) -> None:
    """Sign FOLDER (OpenSSF model signing, offline): writes FOLDER/model.sig over manifest.json,
    every listed file and the test data. Then load it with --public-key, or pin the digest printed."""
    from runtime.manifest import manifest_digest
    from toolkit.signing import sign_folder

    password = None
    if password_env is not None:
        if password_env not in os.environ:
            raise InputValueError(f"--password-env {password_env}: that environment variable is not set")
        password = os.environ[password_env]
    path = sign_folder(
        folder, private_key, password=password, certificate=certificate, certificate_chain=certificate_chain
    )
    click.echo(f"wrote {path}")
    click.echo(f"digest {manifest_digest(folder)}")


@cli.command("verify-signature")
@_folder_argument
@click.option(
    "--public-key",
    type=_EXISTING_FILE,
    default=None,
    help="The public key (PEM) of a key-based signature.",
)
@click.option(
    "--chain",
    "certificate_chain",
    type=_EXISTING_FILE,
    multiple=True,
    help="For a certificate-based signature: a trusted certificate of its chain (repeat, PEM).",
)
def verify_signature_command(folder, public_key, certificate_chain) -> None:
    """Check FOLDER/model.sig; print the verified manifest digest (exit 2 if it does not verify)."""
    from toolkit.signing import verify_signature

    digest = verify_signature(folder, public_key=public_key, certificate_chain=certificate_chain)
    click.echo(f"signature ok; digest {digest}")


# ---- bench ---------------------------------------------------------------------------------


@cli.command()
@_folder_argument
@click.option(
    "--batch",
    "batches",
    type=click.IntRange(min=1),
    multiple=True,
    help=f"Batch sizes (repeat the option). Default: {listed(BENCH_BATCHES)}.",
)
@click.option(
    "--steps",
    "steps",
    type=click.IntRange(min=1),
    multiple=True,
    help=f"Sequence lengths (repeat the option). Default: {listed(BENCH_STEPS)}.",
)
@click.option(
    "--kind",
    "kinds",
    type=click.Choice(["generate", "predict"]),
    multiple=True,
    help=f"Which calls to time. Default: {listed(BENCH_KINDS)}.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=BENCH_ROUNDS,
    show_default=True,
    help="Interleaved rounds; each implementation keeps its best time.",
)
@click.option("--no-cold-start", is_flag=True, help="Skip the fresh-process cold-start measurement.")
@click.option(
    "--streams",
    "stream_counts",
    type=click.IntRange(min=1),
    multiple=True,
    help=f"Concurrent stream counts for the StreamPool benchmark (repeat). Default: {listed(BENCH_STREAM_COUNTS)}.",
)
@click.option("--no-streams", is_flag=True, help="Skip the StreamPool benchmark.")
@click.option("--no-one-call", is_flag=True, help="Skip the one-call (batch 1, one step) table.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/bench"),
    show_default=True,
    help="Folder for bench.png and bench.json (the measured folder is left as it is).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
@_FACTORY
@_pin_options
@_TRUST
@_THREADS
def bench(
    folder,
    batches,
    steps,
    kinds,
    rounds,
    no_cold_start,
    stream_counts,
    no_streams,
    no_one_call,
    out,
    as_json,
    factory,
    digest,
    public_key,
    trust,
    threads,
) -> None:
    """Time eager PyTorch, TorchScript, the onnxruntime step loop, every fused form, the runtime's
    automatic choice and a numpy loop on the same machine in one run; print us/step and ratios.

    TorchScript is timed only in a folder you trust (--digest, --public-key or --trust)."""
    _needs_torch("bench", threads)
    from rnn.folders import ensure_parent
    from runtime.manifest import read_manifest
    from toolkit.bench import plot_bench, run_bench, write_json

    if not read_manifest(folder).classic:
        raise UnsupportedError(
            "rnn bench times folders of the classic signature (x -> y, format 1); for a model with named or "
            "token inputs time generate with benchmarks/sampling.py (README, Performance)"
        )

    ensure_parent(out / BENCH_PNG)  # an unwritable output fails before minutes of timing
    report = run_bench(
        folder,
        batches or BENCH_BATCHES,
        steps or BENCH_STEPS,
        kinds or BENCH_KINDS,
        rounds,
        cold_start=not no_cold_start,
        stream_counts=() if no_streams else (stream_counts or BENCH_STREAM_COUNTS),
        factory=factory,
        progress=lambda text: click.echo(f"timing {text}", err=True),
        one_call=not no_one_call,
        digest=_pinned(folder, digest, public_key),
        trust=trust,
    )
    plot_bench(report, out / BENCH_PNG)
    write_json(report, out / BENCH_JSON)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())
    click.echo(f"wrote {out / BENCH_PNG} and {out / BENCH_JSON}", err=True)


# ---- demo ----------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/demo"),
    show_default=True,
    help="Folder for every file of the demo (replaced whole if it exists).",
)
@_train_options
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=GENERATE_STEPS,
    show_default=True,
    help="Closed-loop steps to generate with onnxruntime.",
)
def demo(out, steps, threads, **options) -> None:
    """The whole story into OUT: train -> export -> verify -> generate -> plots.

    Stages and progress go to stderr; the parity table and the list of files to stdout."""
    _needs_torch("demo", threads)
    from toolkit.demo import run_demo

    config = _train_config(**options)
    result = run_demo(
        config,
        out,
        steps,
        say=lambda text: click.echo(text, err=True),
        progress=_epoch_progress(config),
        verify_progress=_Progress("      verifying"),
    )
    click.echo(result.report.table())
    click.echo("")
    for path, text in result.files.items():
        click.echo(f"{path:<40} {text}")
    if not result.report.passed:
        click.echo("error: verification failed (see the table above)", err=True)
        sys.exit(1)


# ---- serve ----------------------------------------------------------------------------------


def _model_specs(specs: tuple[str, ...], repository: Path | None) -> list[tuple[str, Path]]:
    """(name, folder) from FOLDER or NAME=FOLDER arguments and the folders under --repository."""
    from toolkit.serving.core import artifact_folders, check_model_name

    folders = [] if repository is None else artifact_folders(repository)
    for spec in specs:
        name, _, path = spec.partition("=") if "=" in spec else ("", "", spec)  # a name never holds '='

        folder = Path(path)
        folders.append((check_model_name(name or folder.resolve().name), folder))
    if not folders:
        raise click.UsageError("name at least one FOLDER (or NAME=FOLDER), or --repository DIR")
    return folders


@cli.command()
@click.argument("models", nargs=-1, metavar="[FOLDER | NAME=FOLDER]...")
@click.option(
    "--repository",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Serve every artifact folder directly under this folder (named after its folder).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--http-port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: a free port.")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=8001, show_default=True, help="0: a free port.")
@click.option("--no-grpc", is_flag=True, help="Serve HTTP only.")
@click.option(
    "--token",
    envvar="RNN_SERVE_TOKEN",
    default=None,
    help="Require 'Authorization: Bearer TOKEN' on every route but liveness (or set RNN_SERVE_TOKEN).",
)
@click.option(
    "--max-queue-delay-us",
    type=click.IntRange(min=0, max=1_000_000),
    default=0,
    show_default=True,
    help="How long a sequence step may wait for others to share its batched run (0: batch what arrived).",
)
@click.option(
    "--max-batch", type=click.IntRange(min=1, max=65536), default=1024, show_default=True, help="Steps per run."
)
@click.option(
    "--sequence-idle-timeout",
    type=click.FloatRange(min=0.01),
    default=600.0,
    show_default=True,
    help="Seconds after which an idle sequence ends (its id is then refused).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="On SIGTERM write every live sequence here; on start resume the sequences found here.",
)
@click.option("--max-body-bytes", type=click.IntRange(min=1024), default=64 << 20, show_default=True)
@click.option("--max-elements", type=click.IntRange(min=1), default=1 << 22, show_default=True, help="Per tensor.")
@click.option(
    "--max-steps", type=click.IntRange(min=1), default=100_000, show_default=True, help="Per predict/generate request."
)
@click.option(
    "--max-sequences", type=click.IntRange(min=1), default=1 << 20, show_default=True, help="Live ones, per model."
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=4096,
    show_default=True,
    help="Open HTTP connections and concurrent gRPC calls (streams); beyond: 503 / RESOURCE_EXHAUSTED.",
)
@click.option(
    "--workers", type=click.IntRange(min=1, max=64), default=2, show_default=True, help="Threads for multi-step runs."
)
@_DEVICE
@_PUBLIC_KEY
@click.option(
    "--ray",
    "on_ray",
    is_flag=True,
    help="Run the models on Ray Serve replicas (sequence affinity; sequences survive a replica's death "
    "with a client that resends its state, see the README's 'Serving on Ray').",
)
@click.option(
    "--replicas", type=click.IntRange(min=1, max=1024), default=None, help="With --ray: Stepper replicas [2]."
)
@click.option(
    "--min-replicas",
    type=click.IntRange(min=0, max=1024),
    default=None,
    help="With --ray: autoscale between --min-replicas and --max-replicas.",
)
@click.option(
    "--max-replicas", type=click.IntRange(min=1, max=1024), default=None, help="With --ray: see --min-replicas."
)
@click.option(
    "--address",
    default=None,
    help="With --ray: the Ray cluster to join (e.g. 'auto' or 'ray://head:10001'); default: start a local one.",
)
@click.option(
    "--app-name",
    default="rnn",
    show_default=True,
    help="With --ray: the Serve application's name (two servers on one cluster need two names).",
)
def serve(
    models,
    repository,
    host,
    http_port,
    grpc_port,
    no_grpc,
    token,
    device,
    public_key,
    on_ray,
    replicas,
    min_replicas,
    max_replicas,
    address,
    app_name,
    **options,
) -> None:
    """Serve artifact folders over the Open Inference Protocol (KServe v2 / Triton), HTTP and gRPC.

    Each folder NAME offers three models: NAME (one step; with a sequence_id the server holds the
    state), NAME-predict (teacher-forced, x [T, batch, input]) and NAME-generate (closed loop, x and
    steps). Stops on SIGTERM or Ctrl-C after the requests in progress; see the README's "Serving".
    With --ray the same fronts run here and the models on Ray Serve replicas.
    """
    from .extras import require

    require(("uvicorn", "starlette", "grpc", "tritonclient.grpc", "prometheus_client"), "'rnn serve'", "serve")
    ray_options = {"--replicas": replicas, "--min-replicas": min_replicas, "--max-replicas": max_replicas}
    ray_options.update({"--address": address, "--app-name": app_name if app_name != "rnn" else None})
    given = [name for name, value in ray_options.items() if value is not None]
    if given and not on_ray:
        raise click.UsageError(f"{given[0]} needs --ray")
    if on_ray and options["state_dir"] is not None:
        raise click.UsageError(
            "--state-dir does not apply with --ray: the clients hold their sequences' state (see the README)"
        )
    if min_replicas is not None and max_replicas is not None and min_replicas > max_replicas:
        raise click.UsageError(f"--min-replicas {min_replicas} is more than --max-replicas {max_replicas}")
    if on_ray:
        require(("ray", "ray.serve"), "'rnn serve --ray'", "ray")
    import runtime
    from toolkit.serving import Limits, Server, Settings

    folders = _model_specs(models, repository)
    limits = Limits(
        max_body_bytes=options.pop("max_body_bytes"),
        max_elements=options.pop("max_elements"),
        max_steps=options.pop("max_steps"),
        max_sequences=options.pop("max_sequences"),
        max_connections=options.pop("max_connections"),
    )
    settings = Settings(
        limits=limits,
        max_queue_delay_us=options.pop("max_queue_delay_us"),
        max_batch=options.pop("max_batch"),
        sequence_idle_timeout_s=options.pop("sequence_idle_timeout"),
        workers=options.pop("workers"),
    )

    def loader(folder: Path) -> runtime.Model:
        return _load(folder, device, False, None, public_key)

    if on_ray:
        from toolkit.serving.ray_serve import RayServer, Scale

        scale = Scale(replicas=replicas or 2, min_replicas=min_replicas, max_replicas=max_replicas)
        on = RayServer(
            folders,
            scale=scale,
            settings=settings,
            loader=loader,
            device=device,
            address=address,
            app_name=app_name,
            say=lambda message: click.echo(message, err=True),
            host=host,
            http_port=http_port,
            grpc_port=None if no_grpc else grpc_port,
            token=token,
        )
        on.run()
        return
    server = Server(
        folders,
        host=host,
        http_port=http_port,
        grpc_port=None if no_grpc else grpc_port,
        token=token,
        settings=settings,
        state_dir=options.pop("state_dir"),
        loader=loader,
    )
    server.run()


@cli.command()
@_folder_argument
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0: a free port.")
@click.option("--log", is_flag=True, help="Log every request to stderr.")
def web(folder, host, port, log) -> None:
    """Serve the browser page (examples/web: onnxruntime-web) with FOLDER on a loopback port.

    Prints the URL; the page checks every file against the manifest's sha256 in the browser, runs
    the loop there (the fused rollout where the folder has one), draws it and runs the folder's
    self-check. Needs `npm ci --ignore-scripts` in examples/web once. Stops on Ctrl-C.
    """
    from toolkit.web import WebServer

    server = WebServer(folder, host=host, port=port, quiet=not log)
    click.echo(server.url)
    click.echo(f"serving the page and {folder} (Ctrl-C stops)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def main() -> None:
    """The console script: click's usage errors also become one line and exit code 2; a reader
    that closed stdout (``| head``) ends the command quietly, as Unix tools do."""
    try:
        code = cli.main(prog_name="rnn", standalone_mode=False)
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "rnn"
        click.echo(f"error: {error.format_message()} (see '{command} --help')", err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except BrokenPipeError:
        _quiet_broken_pipe()
    sys.exit(code if isinstance(code, int) else 0)


def _quiet_broken_pipe() -> None:
    """stdout's reader is gone: point stdout at /dev/null so that the interpreter's final flush
    does not complain, and exit with the status of a process ended by SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(128 + signal.SIGPIPE)


if __name__ == "__main__":
    main()

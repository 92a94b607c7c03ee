"""The `rnn` command line: a thin click layer that parses options and calls one function per command.

Commands that run an exported folder (predict, generate, info) import only the torch-free
runtime; the others import torch when they run. A user error prints one line and exits 2.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from runtime.errors import MissingDependencyError, ToolkitError


class _Group(click.Group):
    """Turns the toolkit's typed errors into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ToolkitError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)
        except OSError as error:  # unreadable input or unwritable output
            where = f" {error.filename!r}" if getattr(error, "filename", None) else ""
            click.echo(f"error: {error.strerror or error}{where}", err=True)
            sys.exit(2)


def _needs_torch(command: str) -> None:
    """Says which package to install when a torch command runs without torch."""
    for package in ("torch", "onnx", "matplotlib"):
        try:
            importlib.import_module(package)
        except ImportError:
            raise MissingDependencyError(
                f"'rnn {command}' needs {package}, which is not installed; install the training extra: "
                "pip install 'rnn-toolkit[train]' (in a checkout: pip install -c constraints.txt -e '.[train]')"
            ) from None


def _emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2))


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

_TRAIN_OPTIONS = [
    click.option("--trainer", type=click.Choice(["reference", "bptt"]), default="reference", show_default=True,
                 help="reference: the tutorial's one-point-at-a-time SGD; bptt: Adam through whole windows "
                      "with closed-loop loss (keeps the wave going when fed its own outputs)."),
    click.option("--cell", type=click.Choice(["elman", "gru", "lstm"]), default="elman", show_default=True,
                 help="elman: the tutorial's RNN; gru / lstm: torch's GRUCell / LSTMCell with a linear readout."),
    click.option("--seed", type=int, default=0, show_default=True, help="Random seed; the same seed gives bit-identical weights."),
    click.option("--epochs", type=click.IntRange(min=1), default=None,
                 help="Epochs (reference) or iterations (bptt). Default: the trainer's (300 / 1500)."),
    click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Learning rate. Default: the trainer's (0.1 / 0.01)."),
    click.option("--hidden-size", type=click.IntRange(min=1), default=6, show_default=True, help="Context neurons."),
    click.option("--seq-length", type=click.IntRange(min=1), default=20, show_default=True,
                 help="Points of the sine series (t = linspace(2, 10, seq_length + 1))."),
    click.option("--data", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="A one-column .csv or .npy series to train on instead of the sine."),
]


def _train_options(function):
    for option in reversed(_TRAIN_OPTIONS):
        function = option(function)
    return function


def _train(out: Path, trainer, cell, seed, epochs, lr, hidden_size, seq_length, data) -> Any:
    _needs_torch("train")
    from rnn.train import TrainConfig, train_folder

    from rnn.config import training_series
    from rnn.folders import prepare_output

    config = TrainConfig(trainer=trainer, cell=cell, seed=seed, epochs=epochs, lr=lr, hidden_size=hidden_size,
                         seq_length=seq_length, data=str(data.resolve()) if data else None).resolved()
    training_series({"train": {"data": config.data, "seq_length": config.seq_length}})  # bad data fails here
    prepare_output(out)  # an unwritable output fails before the progress bar starts
    with click.progressbar(length=config.epochs, label=f"training ({trainer})", file=sys.stderr,
                           show_pos=True, item_show_func=lambda text: text) as bar:
        def progress(epoch: int, loss: float) -> None:
            bar.update(1, f"loss {loss:.4g}")

        return train_folder(config, out, progress)


@cli.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write weights.pt and config.json into (replaced whole if it exists).")
@_train_options
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def train(out, as_json, **options) -> None:
    """Train a step module (the Elman RNN by default) and write weights.pt (a state_dict) and
    config.json into OUT."""
    result = _train(out, **options)
    if as_json:
        _emit_json({"folder": str(out), "final_loss": result.loss_history[-1], "metrics": result.metrics})
        return
    for epoch in range(0, len(result.loss_history), 10 if options["trainer"] == "reference" else 100):
        click.echo(f"epoch {epoch:5d}  loss {result.loss_history[epoch]:.6g}")
    click.echo(f"final loss {result.loss_history[-1]:.6g}; " +
               ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()))
    click.echo(f"wrote {out / 'weights.pt'} and {out / 'config.json'}")


# ---- export, verify, plot -----------------------------------------------------------------

_FACTORY = click.option("--factory", default=None, metavar="PACKAGE.MODULE:FUNCTION",
                        help="For a folder of your own module: the function that builds it (it is imported and run).")



@cli.command()
@_folder_argument
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the artifact folder here instead of into FOLDER.")
@click.option("--opset", type=click.IntRange(min=13), default=None, help="ONNX opset. Default: the pinned 17.")
@click.option("--ort", "ort_format", is_flag=True,
              help="Also write every model in onnxruntime's ORT format (<form>.ort) for mobile and minimal builds.")
@click.option("--exporter", type=click.Choice(["torchscript", "dynamo"]), default="torchscript", show_default=True,
              help="How step.onnx is made: from the TorchScript module, or through torch.export (opset >= 18).")
@_FACTORY
def export(folder, out, opset, ort_format, exporter, factory) -> None:
    """Script the model in FOLDER with TorchScript, export it and its fused loops to ONNX, write
    self-check test data and manifest.json."""
    _needs_torch("export")
    from export import export_folder
    from export.onnx_export import OPSET
    from runtime.manifest import read_manifest

    target = export_folder(folder, out, opset if opset is not None else OPSET, ort_format=ort_format,
                           exporter=exporter, factory=factory)
    for entry in read_manifest(target).files:
        click.echo(f"{str(target / entry.name):<50} {entry.role}")
    click.echo(f"{str(target / 'test_data'):<50} self-check data (ONNX model zoo layout)")
    click.echo(f"{str(target / 'manifest.json'):<50} manifest")


@cli.command()
@_folder_argument
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@_FACTORY
def verify(folder, as_json, factory) -> None:
    """Check TorchScript and ONNX against eager PyTorch; write verify.json. Exit 1 on any failure."""
    _needs_torch("verify")
    from export import verify_folder

    report = verify_folder(folder, factory=factory)
    _emit_json(report.to_dict()) if as_json else click.echo(report.table())
    if not report.passed:
        sys.exit(1)


@cli.command()
@_folder_argument
@_FACTORY
def plot(folder, factory) -> None:
    """Draw prediction.png and loss.png (and parity.png after verify) into FOLDER."""
    _needs_torch("plot")
    from rnn.plots import plot_folder

    for path in plot_folder(folder, factory=factory):
        click.echo(f"wrote {path}")


# ---- running (torch-free) ------------------------------------------------------------------

_DEVICE = click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
                       help="Execution provider; cuda needs onnxruntime-gpu and never falls back to the CPU.")


@cli.command()
@_folder_argument
@click.option("--input", "input_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A one-column .csv or .npy series. Default: the series the model was trained on.")
@_DEVICE
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of CSV.")
def predict(folder, input_path, device, as_json) -> None:
    """Teacher-forced one-step predictions over a series, from the exported ONNX model (CSV)."""
    import runtime
    from rnn.config import read_config, training_series
    from rnn.data import load_series

    model = runtime.load(folder, device=device)
    if input_path is not None:
        series = load_series(input_path)
        times = np.arange(len(series), dtype=np.float64)
        inputs = series
    else:
        times, series, _ = training_series(read_config(folder))
        inputs = series[:-1]
    predictions, _ = model.predict(inputs.astype(np.float32))
    if as_json:
        _emit_json({"t": times[: len(inputs)].tolist(), "input": inputs.tolist(),
                    "prediction": predictions.astype(float).tolist()})
        return
    click.echo("t,input,prediction")
    for t, x, y in zip(times, inputs, predictions):
        click.echo(f"{t:.6g},{x:.8g},{y:.8g}")


@cli.command()
@_folder_argument
@click.option("--steps", type=int, default=100, show_default=True, help="Closed-loop steps to generate.")
@click.option("--x0", type=float, default=None,
              help="First input. Default: the first point of the training series (or the last of --warmup).")
@click.option("--warmup", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A .csv/.npy series fed teacher-forced first; generation continues from its last point.")
@_DEVICE
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of CSV.")
def generate(folder, steps, x0, warmup, device, as_json) -> None:
    """Run the autoregressive context loop in onnxruntime: each output is the next input (CSV)."""
    import runtime
    from rnn.config import read_config, training_series
    from rnn.data import load_series

    model = runtime.load(folder, device=device)
    state = None
    if warmup is not None:
        series = load_series(warmup)
        _, state = model.predict(series[:-1].astype(np.float32))
        start = float(series[-1]) if x0 is None else x0
    else:
        start = float(training_series(read_config(folder))[1][0]) if x0 is None else x0
    ys, _ = model.generate(np.float32(start), steps, state)
    values = ys.reshape(-1).astype(float)
    if as_json:
        _emit_json({"x0": start, "steps": steps, "y": values.tolist(), "providers": model.providers})
        return
    click.echo("step,y")
    for index, value in enumerate(values, start=1):
        click.echo(f"{index},{value:.8g}")


@cli.command()
@_folder_argument
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and checks as JSON.")
def info(folder, as_json) -> None:
    """Describe an artifact folder: model, tensors, files (checked against their sha256), versions."""
    from runtime.manifest import check_files, read_manifest

    manifest = read_manifest(folder)
    try:
        check_files(folder, manifest)
        integrity = "ok"
    except ToolkitError as error:
        integrity = f"FAILED: {error}"
    verify_path = Path(folder) / "verify.json"
    verified = None
    if verify_path.is_file():
        verified = json.loads(verify_path.read_text(encoding="utf-8")).get("passed")
    if as_json:
        _emit_json({**manifest.to_dict(), "integrity": integrity, "verified": verified})
        return
    model = manifest.model
    click.echo(f"folder     {folder}")
    click.echo(f"model      {model.get('kind')}  " + "  ".join(f"{k}={v}" for k, v in model.items() if k != "kind"))
    for label, specs in (("inputs", manifest.inputs), ("outputs", manifest.outputs)):
        click.echo(f"{label:<10} " + ", ".join(f"{t.name} {t.describe()}" for t in specs))
    click.echo("state      " + ", ".join(f"{s.name} -> {s.output} {s.describe()}" for s in manifest.state))
    click.echo(f"opset      {manifest.opset}   format version {manifest.format_version}")
    for entry in manifest.files:
        click.echo(f"file       {entry.name:<22} {entry.role:<17} {entry.size:>8} B  sha256 {entry.sha256[:16]}")
    click.echo("versions   " + "  ".join(f"{k} {v}" for k, v in sorted(manifest.versions.items())))
    click.echo(f"integrity  {integrity}")
    click.echo(f"verified   {'not yet (run rnn verify)' if verified is None else ('passed' if verified else 'FAILED')}")


@cli.command("export-module")
@click.argument("factory", metavar="PACKAGE.MODULE:FUNCTION")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Artifact folder to write (replaced whole if it is an earlier artifact folder).")
@click.option("--weights", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A state_dict (.pt) to load into the module (weights_only). Default: the factory's weights.")
@click.option("--input-size", type=click.IntRange(min=1), default=1, show_default=True, help="Size of x.")
@click.option("--output-size", type=click.IntRange(min=1), default=1, show_default=True, help="Size of y.")
@click.option("--state", "states", multiple=True, required=True, metavar="NAME:SIZE[:INITIAL]",
              help="A state tensor, in forward's order (repeat): its name, size and initial value (default 0).")
@click.option("--exporter", type=click.Choice(["torchscript", "dynamo"]), default="torchscript", show_default=True,
              help="How step.onnx is made: from the TorchScript module, or through torch.export.")
def export_module_command(factory, out, weights, input_size, output_size, states, exporter) -> None:
    """Export your own step module: FACTORY builds a torch.nn.Module whose forward(x, *state)
    returns (y, *state). Then verify with: rnn verify OUT --factory FACTORY."""
    _needs_torch("export-module")
    from export import export_module
    from rnn.train import load_weights, resolve_factory
    from runtime.errors import InputValueError

    parsed = []
    for text in states:
        parts = text.split(":")
        try:
            parsed.append((parts[0], int(parts[1]), float(parts[2]) if len(parts) > 2 else 0.0))
        except (IndexError, ValueError):
            raise InputValueError(f"--state must be NAME:SIZE or NAME:SIZE:INITIAL, got {text!r}") from None
    module = resolve_factory(factory)()
    if weights is not None:
        try:
            module.load_state_dict(load_weights(weights))
        except (RuntimeError, TypeError) as error:
            raise InputValueError(f"{weights} does not fit the module: {str(error).splitlines()[0]}") from None
    target = export_module(module, out, input_size=input_size, output_size=output_size, states=parsed,
                           exporter=exporter, factory=factory)
    click.echo(f"wrote {target} (verify: rnn verify {target} --factory {factory})")


# ---- bench ---------------------------------------------------------------------------------

@cli.command()
@_folder_argument
@click.option("--batch", "batches", type=click.IntRange(min=1), multiple=True,
              help="Batch sizes (repeat the option). Default: 1, 64, 4096.")
@click.option("--steps", "steps", type=click.IntRange(min=1), multiple=True,
              help="Sequence lengths (repeat the option). Default: 20, 1000.")
@click.option("--kind", "kinds", type=click.Choice(["generate", "predict"]), multiple=True,
              help="Which calls to time. Default: both.")
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Interleaved rounds; each implementation keeps its best time.")
@click.option("--no-cold-start", is_flag=True, help="Skip the fresh-process cold-start measurement.")
@click.option("--streams", "stream_counts", type=click.IntRange(min=1), multiple=True,
              help="Concurrent stream counts for the StreamPool benchmark (repeat). Default: 1, 64, 4096.")
@click.option("--no-streams", is_flag=True, help="Skip the StreamPool benchmark.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Bar chart PNG. Default: FOLDER/bench.png.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
@_FACTORY
def bench(folder, batches, steps, kinds, rounds, no_cold_start, stream_counts, no_streams, plot_path, as_json,
          factory) -> None:
    """Time eager PyTorch, TorchScript, the onnxruntime step loop, every fused form, the runtime's
    automatic choice and a numpy loop on the same machine in one run; print us/step and ratios."""
    _needs_torch("bench")
    from rnn.bench import BATCHES, KINDS, STEPS, STREAM_COUNTS, plot_bench, run_bench, write_json

    report = run_bench(folder, batches or BATCHES, steps or STEPS, kinds or KINDS, rounds,
                       cold_start=not no_cold_start,
                       stream_counts=() if no_streams else (stream_counts or STREAM_COUNTS), factory=factory,
                       progress=lambda text: click.echo(f"timing {text}", err=True))
    plot_path = plot_path or Path(folder) / "bench.png"
    plot_bench(report, plot_path)
    write_json(report, Path(plot_path).with_suffix(".json"))
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())
    click.echo(f"wrote {plot_path} and {Path(plot_path).with_suffix('.json')}", err=True)


# ---- demo ----------------------------------------------------------------------------------

@cli.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out/demo"), show_default=True,
              help="Folder for every file of the demo (replaced whole if it exists).")
@_train_options
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True,
              help="Closed-loop steps to generate with onnxruntime.")
def demo(out, steps, **options) -> None:
    """The whole story into OUT: train -> export -> verify -> generate -> plots."""
    _needs_torch("demo")
    import runtime
    from export import export_folder, verify_folder
    from rnn.config import read_config, training_series
    from rnn.plots import plot_folder

    click.echo(f"[1/5] train ({options['trainer']}, seed {options['seed']})", err=True)
    result = _train(out, **options)
    click.echo("      " + ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()), err=True)
    click.echo("[2/5] export TorchScript + ONNX", err=True)
    export_folder(out)
    click.echo("[3/5] verify against eager PyTorch", err=True)
    report = verify_folder(out)
    click.echo(report.table(), err=True)
    click.echo("[4/5] generate with onnxruntime", err=True)
    model = runtime.load(out)
    start = float(training_series(read_config(out))[1][0])
    ys, _ = model.generate(np.float32(start), steps)
    csv = out / "generate.csv"
    csv.write_text("step,y\n" + "".join(f"{i},{v:.8g}\n" for i, v in enumerate(ys.reshape(-1), start=1)))
    click.echo("[5/5] plots", err=True)
    plot_folder(out)
    click.echo("")
    descriptions = {
        "weights.pt": "trained weights (state_dict)",
        "config.json": "sizes, trainer, seed, loss history, metrics",
        "step.torchscript.pt": "TorchScript step module (torch.jit.load, libtorch)",
        "step.onnx": "ONNX step model (onnxruntime)",
        "manifest.json": "tensors, state, files with sha256, versions",
        "verify.json": "parity report",
        "generate.csv": f"{steps} closed-loop steps from onnxruntime",
        "prediction.png": "actual vs predicted, and the closed-loop rollout",
        "loss.png": "training loss",
        "parity.png": "parity errors against the tolerances",
    }
    for name, text in descriptions.items():
        click.echo(f"{str(out / name):<40} {text}")
    if not report.passed:
        click.echo("error: verification failed (see the table above)", err=True)
        sys.exit(1)


def main() -> None:
    """The console script: click's usage errors also become one line and exit code 2."""
    try:
        code = cli.main(prog_name="rnn", standalone_mode=False)
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "rnn"
        click.echo(f"error: {error.format_message()} (see '{command} --help')", err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

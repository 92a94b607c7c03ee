"""The torch commands as plain functions: train, export, export-module, verify, plot, bench and demo.

Each imports torch (and the export side) only when it runs, after `require_torch` has said which
extra to install where torch is missing. Results are returned as text lines for stdout; progress
goes to the callbacks the caller gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import InputValueError
from runtime.manifest import BATCH_FIRST

from .console import Progress, epoch_progress, json_text, say
from .extras import require_torch
from .settings import BENCH_BATCHES, BENCH_JSON, BENCH_KINDS, BENCH_PNG, BENCH_STEPS, BENCH_STREAM_COUNTS
from .trust import Loading, load_model, pinned_digest

MAX_SIGNATURE_BYTES = 1 << 20  # an export-module --signature file: a few hundred bytes


@dataclass(frozen=True)
class TrainOptions:
    """What `rnn train` and `rnn demo` train: `rnn.config.TrainConfig`'s fields as the options give them."""

    trainer: str
    cell: str
    seed: int
    epochs: int | None
    lr: float | None
    hidden_size: int
    seq_length: int
    data: Path | None

    def config(self):
        from rnn.config import TrainConfig

        fields = {**vars(self), "data": str(self.data.resolve()) if self.data else None}
        return TrainConfig(**fields).resolved()


def train(out: Path, options: TrainOptions, as_json: bool, threads: int) -> list[str]:
    """`rnn train`: weights.pt and config.json into ``out``; the loss every tenth epoch, or JSON."""
    require_torch("train", threads)
    from rnn.train import train_folder
    from runtime.manifest import CONFIG_NAME, WEIGHTS_NAME

    config = options.config()
    result = train_folder(config, out, epoch_progress(config.trainer, config.epochs))
    if as_json:
        return [json_text({"folder": str(out), "final_loss": result.loss_history[-1], "metrics": result.metrics})]
    every = 10 if config.trainer == "reference" else 100
    lines = [f"epoch {e:5d}  loss {result.loss_history[e]:.6g}" for e in range(0, len(result.loss_history), every)]
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
    return [
        *lines,
        f"final loss {result.loss_history[-1]:.6g}; {metrics}",
        f"wrote {out / WEIGHTS_NAME} and {out / CONFIG_NAME}",
    ]


def artifact_lines(target: Path) -> list[str]:
    """Every file of an artifact folder with its role, then the test data and the manifest."""
    from runtime.manifest import MANIFEST_NAME, TEST_DATA_DIR, read_manifest

    lines = [f"{str(target / entry.name):<50} {entry.role}" for entry in read_manifest(target).files]
    lines.append(f"{str(target / TEST_DATA_DIR):<50} self-check data (ONNX model zoo layout)")
    return [*lines, f"{str(target / MANIFEST_NAME):<50} manifest"]


def export(folder: Path, out: Path | None, opset: int | None, ort_format: bool, exporter: str, factory, threads: int):
    """`rnn export`: the artifact folder of a trained folder; its files."""
    require_torch("export", threads)
    from export import export_folder

    return artifact_lines(export_folder(folder, out, opset, ort_format=ort_format, exporter=exporter, factory=factory))


def verify(folder: Path, factory, loading: Loading, trust: bool, data: Path | None, threads: int) -> Any:
    """`rnn verify`: the verification report (verify.json written); progress on stderr."""
    require_torch("verify", threads)
    from export import verify_folder

    pinned = pinned_digest(folder, loading.digest, loading.public_key)
    return verify_folder(
        folder, factory=factory, progress=Progress("verifying"), digest=pinned, trust=trust, inputs=data
    )


def plot(folder: Path, factory, threads: int) -> list[str]:
    """`rnn plot`: the pictures written; a note on stderr where the folder has no prediction picture."""
    require_torch("plot", threads)
    from export.factories import checked_factory
    from rnn.config import read_config
    from toolkit.plots import PREDICTION_NAME, drawable_prediction, plot_folder

    lines = [f"wrote {path}" for path in plot_folder(folder, factory=checked_factory(factory))]
    if not drawable_prediction(read_config(folder)):
        say(f"no {PREDICTION_NAME}: it draws a one-column series (models of one input and one output)")
    return lines


def signature_file(path: Path) -> dict:
    """The keyword arguments of export_module a --signature JSON file gives (inputs, outputs,
    states, layout, feedback); InputValueError naming what is wrong."""
    document = json_file(path, "--signature")
    keys = {"inputs", "outputs", "states", "layout", "feedback"}
    if not isinstance(document, dict) or not {"inputs", "outputs", "states"} <= set(document) <= keys:
        raise InputValueError(
            f"--signature {path} must be a JSON object with inputs, outputs and states (and optionally layout, "
            f"feedback), got {sorted(document) if isinstance(document, dict) else type(document).__name__}"
        )
    return document


def json_file(path: Path, option: str) -> Any:
    """The parsed JSON of an export-module option's file (at most MAX_SIGNATURE_BYTES); InputValueError naming it."""
    from runtime.jsonfile import parse_json

    with open(path, "rb") as handle:
        raw = handle.read(MAX_SIGNATURE_BYTES + 1)
    if len(raw) > MAX_SIGNATURE_BYTES:
        raise InputValueError(f"{option} {path} is larger than 1 MiB")
    return parse_json(raw, str(path), InputValueError)


def vocabulary_file(path: Path) -> tuple[str, ...]:
    """export-module --vocabulary: a JSON list of distinct, non-empty strings, one per token id."""
    from runtime.vocabulary import check_tokens

    return check_tokens(json_file(path, "--vocabulary"), InputValueError, f"--vocabulary {path}")


@dataclass(frozen=True)
class ModuleSignature:
    """A user's module's signature as export-module's options give it: sizes and states, or a file."""

    input_size: int = 1
    output_size: int = 1
    states: tuple[tuple[str, int, float], ...] = ()
    signature_path: Path | None = None
    vocabulary_path: Path | None = None  # the text of each token id (a model with sampled feedback)

    def arguments(self) -> dict:
        path = self.vocabulary_path
        vocabulary = {} if path is None else {"vocabulary": vocabulary_file(path)}
        if self.signature_path is not None:
            if self.states:
                raise InputValueError("--signature lists the states: leave out --state")
            return {**signature_file(self.signature_path), **vocabulary}
        if not self.states:
            raise InputValueError("give the module's state tensors: --state NAME:SIZE (repeat), or a --signature file")
        return {"input_size": self.input_size, "output_size": self.output_size, "states": self.states, **vocabulary}


def export_module(factory: str, out: Path, weights: Path | None, signature: ModuleSignature, exporter, opset, threads):
    """`rnn export-module`: a user's module exported into ``out``; the line saying how to verify it."""
    require_torch("export-module", threads)
    from export import export_module as export_user_module
    from export.factories import build_module
    from rnn.checkpoint import load_module_weights

    shape = signature.arguments()
    module = build_module(factory)
    if weights is not None:
        load_module_weights(module, weights)
    target = export_user_module(module, out, exporter=exporter, opset=opset, factory=factory, **shape)
    return f"wrote {target} (verify: rnn verify {target} --factory {factory})"


@dataclass(frozen=True)
class BenchOptions:
    """What `rnn bench` times (empty: the defaults in toolkit.settings) and where it writes."""

    batches: tuple[int, ...]
    steps: tuple[int, ...]
    kinds: tuple[str, ...]
    rounds: int
    cold_start: bool
    stream_counts: tuple[int, ...]
    streams: bool
    one_call: bool
    out: Path


def bench(folder: Path, options: BenchOptions, factory, loading: Loading, trust: bool, as_json: bool, threads: int):
    """`rnn bench`: the table (or JSON) of one run's timings; bench.png and bench.json into ``options.out``.
    A folder of the seed's signature, time-first, with its eager module gets every table of
    `toolkit.bench.run_bench`; any other folder the runtime loads `toolkit.bench_any.run_bench_any`'s."""
    require_torch("bench", threads)
    from export.factories import checked_factory
    from rnn.folders import ensure_parent
    from toolkit.bench import plot_bench, run_bench, write_json
    from toolkit.bench_any import calls, check_agreement, eager_module, run_bench_any

    model = load_model(folder, loading)
    factory = checked_factory(factory)  # one typed line for a factory that needs arguments, raises or builds no module
    out = options.out
    ensure_parent(out / BENCH_PNG)  # an unwritable output fails before minutes of timing
    shared = dict(
        batches=options.batches or BENCH_BATCHES,
        steps=options.steps or BENCH_STEPS,
        kinds=options.kinds or BENCH_KINDS,
        rounds=options.rounds,
        factory=factory,
        progress=lambda text: say(f"timing {text}"),
        one_call=options.one_call,
        digest=model.manifest_digest if loading.pinned else None,
        trust=trust,
    )
    eager = eager_module(folder, factory)
    if model.classic and model.layout != BATCH_FIRST and eager is not None:
        for call in calls(model, shared["kinds"])[0]:  # silently: the classic bench's stderr stays as it was
            check_agreement(model, {"eager": eager}, call, min(shared["batches"]), min(shared["steps"]), "eager")
        report = run_bench(
            folder,
            cold_start=options.cold_start,
            stream_counts=(options.stream_counts or BENCH_STREAM_COUNTS) if options.streams else (),
            **shared,
        )
    else:
        report = run_bench_any(folder, **shared)
    plot_bench(report, out / BENCH_PNG)
    write_json(report, out / BENCH_JSON)
    say(f"wrote {out / BENCH_PNG} and {out / BENCH_JSON}")
    return json_text(report.to_dict()) if as_json else report.table()


def demo(out: Path, options: TrainOptions, steps: int, threads: int) -> tuple[list[str], bool]:
    """`rnn demo`: the whole story into ``out`` (stages on stderr); (the parity table and the files, passed)."""
    require_torch("demo", threads)
    from toolkit.demo import run_demo

    config = options.config()
    result = run_demo(
        config,
        out,
        steps,
        say=say,
        progress=epoch_progress,
        verify_progress=Progress("      verifying"),
    )
    lines = [result.report.table(), "", *(f"{path:<40} {text}" for path, text in result.files.items())]
    return lines, result.report.passed

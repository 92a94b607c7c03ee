"""The `rnn` command line: click options parsed and handed to one plain function per command.

The plain functions live in modules by job: toolkit.running (generate), toolkit.predicting
(predict), toolkit.info (info), toolkit.making (train, export, export-module, verify, plot,
bench, demo), toolkit.trust (sign, verify-signature), toolkit.launch (serve). Commands that run
an exported folder (predict, generate, info) import only torch-free modules (the runtime,
rnn.config, rnn.data); the others import torch when they run, on one intra-op thread unless
--threads says otherwise. Results (tables, CSV, JSON) go to stdout; progress and status lines to
stderr. A user error prints one line and exits 2; a closed stdout (``rnn generate ... | head``)
ends the command quietly.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from rnn.config import MAX_SIZE
from runtime.errors import InputValueError

from .cli_options import (
    DEVICE,
    EXISTING_FILE,
    EXPORTER,
    FACTORY,
    JSON,
    NONFINITE,
    OPSET,
    ORT,
    PINS,
    PUBLIC_KEY,
    THREADS,
    TRUST,
    ErrorsGroup,
    StateSpec,
    bulk_options,
    folder_argument,
    quiet_broken_pipe,
    sampling_options,
    train_options,
)
from .console import json_text, say
from .settings import BENCH_BATCHES, BENCH_KINDS, BENCH_ROUNDS, BENCH_STEPS, BENCH_STREAM_COUNTS, GENERATE_STEPS, listed


def echo_all(lines) -> None:
    """Each piece of a command's stdout text, as it comes (a stream of CSV pieces included): a line
    each, but for pieces marked ``same_line`` (generated text, `toolkit.running.TextPiece`)."""
    for text in lines:
        click.echo(text, nl=not getattr(text, "same_line", False))


@click.group(cls=ErrorsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=None, version=importlib.import_module("runtime").__version__, prog_name="rnn")
def cli() -> None:
    """Train, export, verify and run small recurrent models (PyTorch -> TorchScript/ONNX -> onnxruntime).

    A typical session: rnn train --out DIR; rnn export DIR; rnn verify DIR; rnn generate DIR --steps 100.
    Or all at once: rnn demo --out DIR.
    """


# ---- train, export, verify, plot -----------------------------------------------------------


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write weights.pt and config.json into (replaced whole if it exists).",
)
@train_options
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def train(out, as_json, threads, **options) -> None:
    """Train a step module (the Elman RNN by default) and write weights.pt (a state_dict) and
    config.json into OUT."""
    from .making import TrainOptions, train

    echo_all(train(out, TrainOptions(**options), as_json, threads))


@cli.command()
@folder_argument
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the artifact folder here instead of into FOLDER.",
)
@OPSET
@ORT
@EXPORTER
@FACTORY
@THREADS
def export(folder, out, opset, ort_format, exporter, factory, threads) -> None:
    """Script the model in FOLDER with TorchScript, export it and its fused loops to ONNX, write
    self-check test data and manifest.json."""
    from .making import export

    echo_all(export(folder, out, opset, ort_format, exporter, factory, threads))


@cli.command()
@folder_argument
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@FACTORY
@PINS
@TRUST
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also check on your own inputs: a .csv (one column per input feature, one row per step) or .npy "
    "of shape (steps,), (steps, input_size) or (steps, batch, input_size); for a model with named or "
    "token inputs an .npz of one array per input name. Default: none, only the built-in checks.",
)
@THREADS
def verify(folder, as_json, factory, digest, public_key, trust, data_path, threads) -> None:
    """Check TorchScript and ONNX against eager PyTorch; write verify.json. Exit 1 on any failure.

    TorchScript is checked only in a folder you trust (--digest, --public-key or --trust):
    loading it runs the code inside the archive. A line on stderr says when it was skipped, before the table.

    With --data, every teacher-forced form also runs over your data, and every closed-loop
    form rolls out from its first value (rows "user data ..."); verify.json's user_data
    names the file, its sha256 and the shape checked."""
    from .making import verify
    from .trust import Loading

    report = verify(folder, factory, Loading(digest=digest, public_key=public_key), trust, data_path, threads)
    untrusted = report.skipped.get("torchscript", "").startswith("not loaded")
    if untrusted:  # said before the table, not only in its "not checked" lines at the end
        say("TorchScript not checked: this folder is not trusted (--digest, --public-key or --trust loads it)")
    click.echo(json_text(report.to_dict()) if as_json else report.table())
    if not report.passed:
        sys.exit(1)


@cli.command()
@folder_argument
@FACTORY
@THREADS
def plot(folder, factory, threads) -> None:
    """Draw prediction.png and loss.png (and parity.png after verify) into FOLDER."""
    from .making import plot

    echo_all(plot(folder, factory, threads))


# ---- running (torch-free) ------------------------------------------------------------------


@cli.command()
@folder_argument
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path),
    default=None,
    help="A one-column .csv or .npy series (a model of one input of one value). Default: the series the "
    "model was trained on. Any model: an .npz of one array per input name, (steps, ...) or (steps, batch, ...). "
    "With --ray: the dataset (Parquet or .npy, a file or a folder).",
)
@DEVICE
@PINS
@JSON
@bulk_options
def predict(folder, input_path, device, digest, public_key, as_json, ray, out, address, actors) -> None:
    """Teacher-forced one-step predictions over a series or named sequences, from the exported ONNX model (CSV).

    A series: each row the input at t, the prediction the model makes from it for the next point
    (at next_t), and that point's true value (target; empty after the last point of the series).
    A model with several output values gets one prediction column each and no target. An .npz of
    sequences: rows "step,stream" and a column per output value.

    With --ray: over every series of the dataset --input (Parquet or .npy) on Ray Data, written
    to the Parquet folder --out (README, "Bulk predict and generate on Ray Data")."""
    from .on_ray import Bulk
    from .predicting import PredictOptions, predict_text
    from .trust import Loading

    loading = Loading(device=device, digest=digest, public_key=public_key)
    bulk = Bulk(ray=ray, input_path=input_path, out=out, address=address, actors=actors)
    echo_all(predict_text(folder, PredictOptions(input_path, loading, as_json, bulk), say))


@cli.command()
@folder_argument
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
    help="A model of one input of one value: its first value. Default: where prediction.png's closed loop "
    "starts (the training series teacher-forced, then its last point), or the last point of --warmup.",
)
@click.option(
    "--warmup",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Inputs fed teacher-forced first, generation going on from their last step: a one-column .csv/.npy "
    "series (a model of one input of one value) or an .npz of one array per input name (one stream).",
)
@DEVICE
@NONFINITE
@PINS
@JSON
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
    help="An input's first value (repeat per input), e.g. --start token=3 --start category=0,1,0; inputs "
    "other than the fed-back one keep it for every step. A model of one input also takes --start VALUES.",
)
@click.option(
    "--prompt",
    default=None,
    metavar="TEXT",
    help="A folder with a vocabulary: TEXT's tokens fed teacher-forced, generation going on from its last "
    "token; other inputs keep their --start value.",
)
@sampling_options
@bulk_options
def generate(folder, steps, x0, warmup, device, allow_nonfinite, digest, public_key, as_json, **options) -> None:
    """Run the autoregressive context loop in onnxruntime: each output is the next input (CSV,
    streamed in chunks: any number of steps; --json holds at most a million).

    The first inputs: --x0 or --start NAME=VALUES (or --warmup FILE, teacher-forced, generation
    going on from its last step). A start that one step leaves unchanged (output fed back equal to
    it, the state too) is a fixed point: a warning says so. A model that samples its next token
    prints "step,token" rows, greedy unless --sample, --temperature, --top-k, --top-p or --seed ask
    for a seeded draw (as the Node and C++ examples); where its folder has a
    vocabulary it prints the generated text instead, and takes --prompt TEXT (--json: the tokens
    and their text).

    With --ray: --steps from the last point of every series of the dataset --input, each warmed up
    on the points before it, on Ray Data, written to the Parquet folder --out (a model that samples
    its next token: greedy unless a sampling option asks for a draw, as without --ray; --seed the
    base of the rows' seeds, row i drawing with seed + i unless its own seed column says)."""
    from .on_ray import Bulk
    from .running import GenerateOptions, Sampling, Start, generate_text
    from .trust import Loading

    sampling = Sampling(**{k: options.pop(k) for k in ("sample", "temperature", "top_k", "top_p", "seed")})
    bulk = Bulk(**{k: options.pop(k) for k in ("ray", "input_path", "out", "address", "actors")})
    generate_options = GenerateOptions(
        steps=steps,
        start=Start(x0=x0, values=options.pop("start_values"), warmup=warmup, prompt=options.pop("prompt")),
        sampling=sampling,
        loading=Loading(device=device, allow_nonfinite=allow_nonfinite, digest=digest, public_key=public_key),
        as_json=as_json,
        bulk=bulk,
    )
    echo_all(generate_text(folder, generate_options, say))


@cli.command()
@folder_argument
@click.option(
    "--json", "as_json", is_flag=True, help="Print the manifest, its digest (manifest_sha256) and checks as JSON."
)
@PINS
def info(folder, as_json, digest, public_key) -> None:
    """Describe an artifact folder: model, tensors, files (checked against their sha256), versions,
    the manifest's digest (what --digest pins; "manifest_sha256" in --json) and whether verify.json
    verified this manifest.

    An unreadable verify.json is reported, not fatal: "verified unknown (...)" and exit 0 (JSON:
    "verified" null and "verify_error" saying why). A verify.json about another manifest (the
    folder changed since) counts as not verified."""
    from .info import describe_folder, info_lines
    from .trust import pinned_digest

    described = describe_folder(folder, pinned_digest(folder, digest, public_key))
    echo_all([json_text(described.to_dict())] if as_json else info_lines(described))


# ---- your own module ------------------------------------------------------------------------


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
    type=EXISTING_FILE,
    default=None,
    help="A state_dict (.pt) to load into the module (weights_only). Default: the factory's weights.",
)
@click.option("--input-size", type=click.IntRange(1, MAX_SIZE), default=1, show_default=True, help="Size of x.")
@click.option("--output-size", type=click.IntRange(1, MAX_SIZE), default=1, show_default=True, help="Size of y.")
@click.option(
    "--state",
    "states",
    type=StateSpec(),
    multiple=True,
    help="A state tensor, in forward's order (repeat): its name, size and initial value (default 0).",
)
@click.option(
    "--signature",
    "signature_path",
    type=EXISTING_FILE,
    default=None,
    help='A JSON file with any other signature: {"inputs": [...], "outputs": [...], "states": [...], '
    '"layout", "feedback"} as export_module takes them (token inputs, several inputs, layered states; '
    "README). Replaces --input-size, --output-size and --state.",
)
@click.option(
    "--vocabulary",
    "vocabulary_path",
    type=EXISTING_FILE,
    default=None,
    help="A JSON list of strings, one per token id of the input that sampled feedback feeds: written into the "
    "manifest, so that rnn generate --prompt takes and prints text.",
)
@EXPORTER
@OPSET
@THREADS
def export_module_command(
    factory, out, weights, input_size, output_size, states, signature_path, vocabulary_path, exporter, opset, threads
) -> None:
    """Export your own step module: FACTORY builds a torch.nn.Module whose forward(x, *state)
    returns (y, *state), or with --signature forward(*inputs, *states) -> (*outputs, *states).
    FACTORY is called with no arguments (a class that needs some: write a function that builds it).
    Then verify with: rnn verify OUT --factory FACTORY."""
    from .making import ModuleSignature, export_module

    signature = ModuleSignature(input_size, output_size, tuple(states), signature_path, vocabulary_path)
    click.echo(export_module(factory, out, weights, signature, exporter, opset, threads))


# ---- signing ------------------------------------------------------------------------------


@cli.command()
@folder_argument
@click.option(
    "--key",
    "private_key",
    type=EXISTING_FILE,
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
    type=EXISTING_FILE,
    default=None,
    help="Sign certificate-based: the key's certificate (PEM); its issuers with --chain.",
)
@click.option(
    "--chain",
    "certificate_chain",
    type=EXISTING_FILE,
    multiple=True,
    help="A certificate of the chain above --certificate (repeat, PEM).",
)
def sign(folder, private_key, password_env, certificate, certificate_chain) -> None:
    """Sign FOLDER (OpenSSF model signing, offline): writes FOLDER/model.sig over manifest.json,
    every listed file and the test data. Then load it with --public-key, or pin the digest printed."""
    from .trust import sign

    path, digest = sign(folder, private_key, password_env, certificate, certificate_chain)
    echo_all([f"wrote {path}", f"digest {digest}"])


@cli.command("verify-signature")
@folder_argument
@click.option(
    "--public-key",
    type=EXISTING_FILE,
    default=None,
    help="The public key (PEM) of a key-based signature.",
)
@click.option(
    "--chain",
    "certificate_chain",
    type=EXISTING_FILE,
    multiple=True,
    help="For a certificate-based signature: a trusted certificate of its chain (repeat, PEM).",
)
def verify_signature_command(folder, public_key, certificate_chain) -> None:
    """Check FOLDER/model.sig; print the verified manifest digest (exit 2 if it does not verify)."""
    from .trust import verify_signature

    click.echo(f"signature ok; digest {verify_signature(folder, public_key, certificate_chain)}")


# ---- bench, demo -----------------------------------------------------------------------------


@cli.command()
@folder_argument
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
@FACTORY
@PINS
@TRUST
@THREADS
def bench(folder, as_json, factory, digest, public_key, trust, threads, **options) -> None:
    """Time eager PyTorch, TorchScript, the onnxruntime step loop, every fused form and the runtime's
    automatic choice on the same machine in one run, for any signature; print us/step and ratios.
    The seed's signature also gets a numpy loop, stream ticks and cold start; a folder of your own
    module needs --factory for the eager columns (without it, ratios are to the step loop).

    TorchScript is timed only in a folder you trust (--digest, --public-key or --trust)."""
    from .making import BenchOptions, bench
    from .trust import Loading

    flags = {key: not options.pop(f"no_{key}") for key in ("cold_start", "streams", "one_call")}
    loading = Loading(digest=digest, public_key=public_key)
    click.echo(bench(folder, BenchOptions(**options, **flags), factory, loading, trust, as_json, threads))


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/demo"),
    show_default=True,
    help="Folder for every file of the demo (replaced whole if it exists).",
)
@train_options
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
    from .making import TrainOptions, demo

    lines, passed = demo(out, TrainOptions(**options), steps, threads)
    echo_all(lines)
    if not passed:
        click.echo("error: verification failed (see the table above)", err=True)
        sys.exit(1)


# ---- serve, web ------------------------------------------------------------------------------


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
    "--serve-unready",
    is_flag=True,
    help="Keep serving when no folder loads, each model answering 'not ready' (a repository whose models come "
    "and go). Default: exit 2 with the reason; a server with at least one loaded folder serves it and reports "
    "the others not ready either way.",
)
@click.option(
    "--token",
    envvar="RNN_SERVE_TOKEN",
    default=None,
    help="Require 'Authorization: Bearer TOKEN' on every route but liveness. On the command line the token is "
    "visible to every user of this machine (ps): prefer --token-file or the environment variable RNN_SERVE_TOKEN.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read the token from this file instead of --token: kept out of the process list. Several tokens, one "
    "per line ('#' lines and blank lines skipped), are several tenants: any one is let in, and each sequence "
    "belongs to the token that started it (another token's requests cannot see it).",
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
    "--refuse-client-sequence-ids",
    is_flag=True,
    help="Every sequence id is the server's: a start that names its own sequence_id is a 400. Default: a "
    "client may name its id, and a start without one gets an unguessable id in the answer's sequence_id.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="On SIGTERM write every live sequence here; on start resume the sequences found here.",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1024),
    default=64 << 20,
    show_default=True,
    help="Largest request or answer in bytes: an HTTP body (after decompression), a gRPC message's tensor "
    "data; beyond: 413 / RESOURCE_EXHAUSTED.",
)
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
    help="HTTP requests in progress and gRPC calls at work at once; beyond: 503 / RESOURCE_EXHAUSTED (liveness "
    "always answers; idle connections are not counted, see --max-open-connections).",
)
@click.option(
    "--max-open-connections",
    type=click.IntRange(min=1, max=1 << 20),
    default=None,
    metavar="COUNT",
    help="HTTP connections open at once, idle or not; one more is answered 503 and closed at once. Keep it under "
    "the open-files limit (ulimit -n; the start warns when it is not). Default: 8192.",
)
@click.option(
    "--max-inflight-bytes",
    type=click.IntRange(min=1024),
    default=None,
    help="Request body bytes held at once across all HTTP requests (at least --max-body-bytes); beyond: 503 "
    "with Retry-After. Default: 4 x --max-body-bytes.",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0, min_open=True, max=3600),
    default=None,
    metavar="SECONDS",
    help="An HTTP connection that has not sent its request's headers this long after it opened (or after the "
    "request's first byte) is closed (408). Default: 10.",
)
@click.option(
    "--idle-timeout",
    type=click.IntRange(min=1, max=3600),
    default=None,
    metavar="SECONDS",
    help="An idle HTTP connection is closed after this many seconds between requests (keep-alive). Default: 5.",
)
@click.option(
    "--workers", type=click.IntRange(min=1, max=64), default=2, show_default=True, help="Threads for multi-step runs."
)
@DEVICE
@PUBLIC_KEY
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
def serve(**options) -> None:
    """Serve artifact folders over the Open Inference Protocol (KServe v2 / Triton), HTTP and gRPC.

    Each folder NAME offers three models: NAME (one step; with a sequence_id the server holds the
    state), NAME-predict (teacher-forced, x [T, batch, input]) and NAME-generate: a closed loop (x
    and steps) where the output feeds back as it is; for a token model whose next token is sampled,
    a prompt as token ids or text_input with strategy/temperature/top_k/top_p/seed/max_tokens/stop
    parameters, also streamed at /v2/models/NAME-generate/generate_stream and over gRPC
    ModelStreamInfer. Stops on SIGTERM or Ctrl-C after the requests in progress; see the README's
    "Serving". With --ray the same fronts (token, limits, timeouts) run here and the models on Ray
    Serve replicas.
    """
    from .launch import ServeOptions, serve

    serve(ServeOptions(**options))


@cli.command()
@folder_argument
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0: a free port.")
@click.option("--log", is_flag=True, help="Log every request to stderr.")
@click.option(
    "--allow-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer requests whose Host header is NAME (repeat), e.g. a name that reaches this machine through a "
    "proxy. Loopback names, IP addresses and --host always pass (with --host 0.0.0.0 this machine's own names "
    "too); any other name is refused (403: DNS rebinding).",
)
def web(folder, host, port, log, allowed_hosts) -> None:
    """Serve the browser page (examples/web: onnxruntime-web) with FOLDER on a loopback port.

    Prints the URL; the page checks every file against the manifest's sha256 in the browser, runs
    the loop there (the fused rollout where the folder has one), draws it and runs the folder's
    self-check. Needs `npm ci --ignore-scripts` in examples/web once. Stops on Ctrl-C.
    """
    from toolkit.web import WebServer

    for name in allowed_hosts:
        if not name or any(c in name for c in ":/ "):
            raise InputValueError(f"--allow-host takes a host name without a scheme or port, got {name!r}")
    server = WebServer(folder, host=host, port=port, quiet=not log, allowed_hosts=allowed_hosts)
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
        quiet_broken_pipe()
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

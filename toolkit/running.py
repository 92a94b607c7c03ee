"""`rnn generate` and `rnn predict` for a model of any signature: read its inputs, run the runtime, write CSV or JSON.

One path per command: the model's inputs, outputs, layout and feedback say what is read and
written. The seed's conveniences (a one-column series, ``--x0``, the training series by default,
``t,input,next_t,prediction,target`` rows) are the case of a model of one input of one value.
Both commands yield their stdout text piece by piece: errors are raised before the first piece.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnn.folders import atomic_path
from runtime.errors import InputValueError
from runtime.manifest import BATCH_FIRST, IDENTITY

from .console import json_text
from .on_ray import Bulk, run_bulk
from .run_inputs import (
    make_sampler,
    nonfinite_hint,
    one_value_input,
    parse_start,
    read_inputs_file,
    split_last_step,
)
from .trust import Loading, load_model

CSV_CHUNK = 100_000  # steps generated at a time: memory stays flat for any --steps
CSV_CHUNK_VALUES = 10**6  # and at most this many output values a chunk, for models of wide outputs
CSV_LINES_PER_WRITE = 1000  # lines written at a time: a reader that closes the pipe is noticed soon
JSON_MAX_STEPS = 10**6  # `generate --json` builds one document in memory; CSV streams any length
GENERATE_NONFINITE_HINT = "pass --allow-nonfinite to run it anyway"


@dataclass(frozen=True)
class Start:
    """Where a closed loop starts: ``--x0`` (a model of one input of one value), ``--start
    NAME=VALUES`` per input, the last step of a ``--warmup`` file fed teacher-forced first, or the
    last token of a ``--prompt`` text (a folder with a vocabulary) fed the same way."""

    x0: float | None = None
    values: tuple[str, ...] = ()
    warmup: Path | None = None
    prompt: str | None = None  # a folder with a vocabulary: text fed teacher-forced, generation going on from its end


@dataclass(frozen=True)
class Sampling:
    """How a model that samples its next token draws it (None: the sampler's default)."""

    sample: str | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None


@dataclass(frozen=True)
class GenerateOptions:
    """Everything `rnn generate` takes, grouped by what it is about."""

    steps: int
    start: Start = field(default_factory=Start)
    sampling: Sampling = field(default_factory=Sampling)
    loading: Loading = field(default_factory=Loading)
    as_json: bool = False
    bulk: Bulk = field(default_factory=Bulk)


def generate_text(folder: Path, options: GenerateOptions, say: Callable[[str], None]) -> Iterator[str]:
    """`rnn generate`: the closed loop of one stream as CSV pieces (streamed: any number of steps)
    or one JSON document; with --ray (or --input, --out, --address) the bulk run, ``say``ing its summary.
    NaN or infinity in a start is refused with the advice of --allow-nonfinite (which --ray does not take)."""
    with nonfinite_hint(GENERATE_NONFINITE_HINT):
        yield from _generate_text(folder, options, say)


def _generate_text(folder: Path, options: GenerateOptions, say: Callable[[str], None]) -> Iterator[str]:
    bulk = options.bulk
    if bulk.ray or bulk.out is not None or bulk.address is not None or bulk.input_path is not None:
        start = options.start
        given = (start.x0, start.warmup, start.prompt)
        if any(v is not None for v in given) or start.values or options.loading.allow_nonfinite:
            raise InputValueError(
                "--ray starts each series from its own last point: leave out --x0, --warmup, --prompt, "
                "--allow-nonfinite (and --start, which --ray does not take)"
            )
        # the sampling options make a sampled model's sampler, --seed the base of the rows' seeds (toolkit.on_ray):
        # greedy unless one asks for a draw, as without --ray (`runtime.sampling.draw_strategy`)
        say(run_bulk(folder, "generate", options.steps, options.loading, options.as_json, bulk, options.sampling))
        return
    if options.as_json and options.steps > JSON_MAX_STEPS:
        raise InputValueError(
            f"--json holds at most {JSON_MAX_STEPS} steps in one document, got {options.steps}; "
            "leave out --json for CSV, which streams any number"
        )
    model = load_model(folder, options.loading)
    s = options.sampling
    sampler = make_sampler(model, s.sample, s.temperature, s.top_k, s.top_p, s.seed)
    x0, state = closed_loop_start(model, folder, options.start)
    if sampler is None and fixed_point(model, x0, state):
        say(fixed_point_warning(model, x0))
    if options.as_json:
        yield json_text(generate_document(model, x0, options.steps, state, sampler, options.start.prompt))
        return
    if model.vocabulary is not None:
        yield from generate_text_pieces(model, x0, options.steps, state, sampler)
        return
    yield from generate_csv_chunks(model, x0, options.steps, state, sampler)


def closed_loop_start(model: Any, folder: Path, start: Start) -> tuple[dict[str, np.ndarray], Any]:
    """(the first inputs by name, the state after the warm-up or None): --warmup's last step, then
    --start's values, then --x0; for the seed's signature when nothing is given, where the demo's
    picture starts its closed loop (`training_warmup`)."""
    if start.prompt is not None:
        return prompt_start(model, start)
    first: dict[str, np.ndarray] = {}
    state = None
    if start.warmup is not None:
        head, first = split_last_step(read_inputs_file(start.warmup, model, "--warmup"), model.layout)
        if next(iter(first.values())).shape[0] != 1:
            raise InputValueError("--warmup must hold one stream (arrays of (steps, ...)) for rnn generate")
        if next(iter(head.values())).size:
            _, state = model.predict(head)
    first.update(parse_start(start.values, model.inputs))
    spec = one_value_input(model)
    if start.x0 is not None:
        if spec is None:
            raise InputValueError("this model has named inputs: give --start NAME=VALUES instead of --x0")
        first[spec.name] = np.full(spec.shape_for(1), start.x0, np.float64)  # float32 range checked by the runtime
    if not first and spec is not None and model.classic:
        return training_warmup(model, folder)
    check_every_input(model, first)
    return first, state


def training_warmup(model: Any, folder: Path) -> tuple[dict[str, np.ndarray], Any]:
    """The seed's default start: the training series config.json records fed teacher-forced but
    its last point, the closed loop going on from that point, as prediction.png draws its rollout
    (`rnn.eager.run_series`): (the first inputs, the state)."""
    from rnn.config import read_config, training_series

    values = np.asarray(training_series(read_config(folder).train, folder).values, np.float32).reshape(-1)
    spec = one_value_input(model)
    state = None
    if values.size > 1:
        head = values[:-1].reshape(1, -1, 1) if model.layout == BATCH_FIRST else values[:-1].reshape(-1, 1, 1)
        _, state = model.predict(head)
    return {spec.name: np.full(spec.shape_for(1), values[-1], np.float32)}, state


def fixed_point(model: Any, x0: dict[str, np.ndarray], state: Any) -> bool:
    """Whether a closed loop that feeds values back never leaves its start: one step returns the
    fed-back input bit for bit (float32) and leaves every state tensor bit for bit as it was. The
    next step then has the same inputs and state, so every step repeats it (e.g. x0 = 0 with a zero
    state in a model without biases)."""
    feedback = model.feedback
    if feedback is None or feedback.via != IDENTITY:
        return False
    before = model.initial_state(1) if state is None else state
    y, after = model.step(x0, before)
    fed_back = y[feedback.output] if isinstance(y, dict) else y
    same_input = np.array_equal(np.asarray(fed_back, np.float32), np.asarray(x0[feedback.input], np.float32))
    return same_input and all(np.array_equal(a, b) for a, b in zip(after, before, strict=True))


def fixed_point_warning(model: Any, x0: dict[str, np.ndarray]) -> str:
    """The one line `rnn generate` says on stderr when its start is a `fixed_point`."""
    name = model.feedback.input
    value = np.asarray(x0[name], np.float32).reshape(-1)
    shown = f"{name} = {float(value[0]):g}" if value.size == 1 else f"input {name!r}"
    return (
        f"warning: the start is a fixed point of the closed loop ({shown}, the state unchanged by a step): "
        "every step repeats it; start elsewhere with --x0, --start or --warmup"
    )


def check_every_input(model: Any, first: dict[str, np.ndarray]) -> None:
    """InputValueError naming the first input without a first value."""
    missing = [t.name for t in model.inputs if t.name not in first]
    if missing:
        raise InputValueError(f"give every input's first value: --start {missing[0]}=... (missing: {missing})")


def prompt_start(model: Any, start: Start) -> tuple[dict[str, np.ndarray], Any]:
    """--prompt: (the first inputs, the state): the text's tokens but the last fed teacher-forced
    (``model.predict``), generation going on from its last token; the model's other inputs hold
    their --start value for every step. InputValueError for a folder without a vocabulary and for
    text no token of it matches."""
    vocabulary = model.vocabulary
    if vocabulary is None:
        raise InputValueError(
            "--prompt needs a folder with a vocabulary (export_module(..., vocabulary=[...]) or rnn export-module "
            "--vocabulary FILE); this one has none: give --start NAME=ID"
        )
    if start.x0 is not None or start.warmup is not None:
        raise InputValueError("--prompt is where generation starts: leave out --x0 and --warmup")
    token = model.feedback.input
    held = parse_start(start.values, model.inputs)
    if token in held:
        raise InputValueError(f"--prompt gives input {token!r} its tokens: leave out --start {token}=")
    try:
        ids = vocabulary.encode(start.prompt)  # (n,) int64
    except InputValueError as error:
        raise InputValueError(f"--prompt: {error}") from None
    if not ids.size:
        raise InputValueError("--prompt must hold at least one token of the vocabulary")
    first = {token: ids[-1:], **held}
    check_every_input(model, first)
    state = None
    if ids.size > 1:  # (steps, 1, ...) time-first: the token ids, each held input repeated
        head = {
            token: ids[:-1].reshape(-1, 1),
            **{k: np.repeat(v[None], ids.size - 1, axis=0) for k, v in held.items()},
        }
        if model.layout == BATCH_FIRST:
            head = {name: np.swapaxes(sequence, 0, 1) for name, sequence in head.items()}
        _, state = model.predict(head)
    return first, state


def output_columns(outputs: tuple) -> list[str]:
    """A CSV column per value of each output: its name for one value, ``name_i`` for several."""
    return [t.name if t.count == 1 else f"{t.name}_{i}" for t in outputs for i in range(t.count)]


def generate_header(model: Any, sampled: bool) -> str:
    """``step,token`` for a sampled model (as the Node and C++ examples print), else ``step`` and a
    column per output value (``step,y``)."""
    return "step,token" if sampled else "step," + ",".join(output_columns(model.outputs))


def stream_rows(model: Any, ys: Any, sampled: bool) -> np.ndarray:
    """The first stream's rows of generated outputs: (steps, columns), token ids or every output's values."""
    batch_first = model.layout == BATCH_FIRST
    if sampled:
        tokens = np.asarray(ys)
        return (tokens[0] if batch_first else tokens[:, 0]).reshape(-1, 1)
    named = ys if isinstance(ys, dict) else {model.outputs[0].name: ys}
    parts = [np.asarray(named[t.name]) for t in model.outputs]
    parts = [(p[0] if batch_first else p[:, 0]).reshape(p.shape[1 if batch_first else 0], -1) for p in parts]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def csv_rows(rows: np.ndarray, first_step: int = 1) -> str:
    """One line per step: its number and its values (token ids as integers), newline-joined."""
    rows = np.asarray(rows)
    rows = rows.reshape(len(rows), -1)
    if rows.dtype.kind in "iu":
        return "\n".join(f"{step},{','.join(map(str, row))}" for step, row in enumerate(rows.tolist(), first_step))
    if rows.shape[1] == 1:  # the common case, kept fast
        return "\n".join(f"{step},{value:.8g}" for step, value in enumerate(rows[:, 0].tolist(), start=first_step))
    return "\n".join(
        f"{step},{','.join(f'{value:.8g}' for value in row)}"
        for step, row in enumerate(rows.tolist(), start=first_step)
    )


def csv_chunk(model: Any) -> int:
    """Steps generated at a time: CSV_CHUNK, fewer for a model whose outputs are wide."""
    values = max(1, sum(t.count for t in model.outputs))
    return max(1, min(CSV_CHUNK, CSV_CHUNK_VALUES // values))


def generate_csv_chunks(model: Any, x0: Any, steps: int, state: Any = None, sampler: Any = None) -> Iterator[str]:
    """The closed loop of one stream as CSV text, header first, in pieces of at most
    ``CSV_LINES_PER_WRITE`` lines, generated `csv_chunk` steps at a time with
    ``model.generate_iter``: any number of steps in bounded memory. Refused inputs raise before
    anything is yielded (the first chunk is run before the header)."""
    chunks = model.generate_iter(x0, steps, state, chunk=csv_chunk(model), sampler=sampler)
    first, _ = next(chunks)
    sampled = sampler is not None
    yield generate_header(model, sampled)
    done = 0
    for ys in itertools.chain([first], (ys for ys, _ in chunks)):
        rows = stream_rows(model, ys, sampled)
        for start in range(0, len(rows), CSV_LINES_PER_WRITE):
            piece = rows[start : start + CSV_LINES_PER_WRITE]
            yield csv_rows(piece, done + 1)
            done += len(piece)


class TextPiece(str):
    """A piece of generated text: printed as it comes, on the line the last piece left off
    (``same_line``; `toolkit.cli.echo_all` ends a line only after other pieces)."""

    same_line = True


def generate_text_pieces(model: Any, x0: Any, steps: int, state: Any, sampler: Any) -> Iterator[str]:
    """The sampled tokens of one stream as text (`runtime.Model.vocabulary`), `csv_chunk` steps
    at a time (any number in bounded memory), then the line's end. Refused inputs raise before
    anything is yielded."""
    decode = model.vocabulary.decode
    for ys, _ in model.generate_iter(x0, steps, state, chunk=csv_chunk(model), sampler=sampler):
        yield TextPiece(decode(stream_rows(model, ys, True)[:, 0]))
    yield ""


def start_document(model: Any, x0: dict[str, np.ndarray]) -> Any:
    """The first inputs as JSON: a number for a model of one input of one value, else lists by name."""
    if one_value_input(model) is not None:
        return float(np.asarray(x0[model.input_names[0]]).reshape(-1)[0])
    return {name: np.asarray(x0[name])[0].tolist() for name in model.input_names}


def generate_document(
    model: Any, x0: dict[str, np.ndarray], steps: int, state: Any, sampler: Any, prompt: str | None = None
) -> dict:
    """`generate --json`: x0, steps, one stream's outputs by name (a number a step for an output of one
    value; ``tokens`` for a sampled model, with their ``text`` where the folder has a vocabulary, and
    the ``prompt`` and its ``prompt_tokens`` where one was given), the sampler and the execution providers."""
    ys, _ = model.generate(x0, steps, state, sampler=sampler)
    document: dict[str, Any] = {"x0": start_document(model, x0), "steps": steps}
    if prompt is not None:
        document.update(prompt=prompt, prompt_tokens=model.vocabulary.encode(prompt).tolist())
    if sampler is not None:
        document["tokens"] = stream_rows(model, ys, True)[:, 0].tolist()
        if model.vocabulary is not None:
            document["text"] = model.vocabulary.decode(document["tokens"])
    else:
        named = ys if isinstance(ys, dict) else {model.outputs[0].name: ys}
        axis = 0 if model.layout == BATCH_FIRST else 1
        for spec in model.outputs:
            values = np.take(np.asarray(named[spec.name]), 0, axis=axis).astype(float)  # (steps, *sizes)
            document[spec.name] = (values.reshape(-1) if spec.count == 1 else values).tolist()
    return {**document, "sampler": None if sampler is None else repr(sampler), "providers": model.providers}


def write_generate_csv(path: str | os.PathLike, ys: np.ndarray) -> Path:
    """generate.csv of a model of one output (``step,y``), written atomically (`rnn.folders.atomic_path`)."""
    rows = np.asarray(ys).reshape(len(ys), -1)
    header = "step,y" if rows.shape[1] == 1 else "step," + ",".join(f"y_{i}" for i in range(rows.shape[1]))
    with atomic_path(path) as temporary:
        temporary.write_text(header + "\n" + csv_rows(rows) + "\n", encoding="utf-8")
    return Path(path)

"""Writes Parquet rows for `rnn predict --ray` / `rnn generate --ray` of any exported folder: an
``id`` column and one column per input of the model, named after it (`toolkit.bulk_rows`).

    python examples/ray/rows.py FOLDER rows.parquet --rows 1000 --steps 20
    python examples/ray/rows.py out/char_generator prompts.parquet --text "ROMEO:" --text "First Citizen:"
    rnn generate out/char_generator --ray --input prompts.parquet --out generated --steps 200

Random rows (seeded by ``--seed``): token ids below each token input's vocabulary, values drawn
from a normal distribution, ``--steps`` steps a row. ``--text`` (repeatable; a folder whose
manifest has a vocabulary): one row per text, encoded by the vocabulary, which generate warms up
on before it samples from the last character; the model's other inputs hold the value each
``--hold NAME=V1,V2,...`` gives at every step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import runtime


def random_rows(model: runtime.Model, rows: int, steps: int, seed: int) -> dict[str, list]:
    """``rows`` rows of ``steps`` steps: per input a list per row (flat: steps x the input's values)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {"id": list(range(rows))}
    for spec in model.inputs:
        if spec.is_tokens:
            columns[spec.name] = list(rng.integers(0, spec.vocabulary, (rows, steps)))
        else:
            columns[spec.name] = list(rng.normal(0, 1, (rows, steps * spec.count)).astype(np.float32))
    return columns


def text_rows(model: runtime.Model, texts: list[str], held: list[str]) -> dict[str, list]:
    """One row per text: its token ids by the folder's vocabulary; every other input holds the
    value ``held`` gives it (NAME=V1,V2,...: one step's values) at every step."""
    if model.vocabulary is None:
        raise runtime.InputValueError("--text needs a folder whose manifest has a vocabulary")
    token = model.feedback.input
    encoded = [model.vocabulary.encode(text) for text in texts]
    columns: dict[str, list] = {"id": list(range(len(texts))), token: encoded}
    values = dict(item.partition("=")[::2] for item in held)
    for spec in model.inputs:
        if spec.name == token:
            continue
        if spec.name not in values:
            raise runtime.InputValueError(f"--text: give input {spec.name!r} its value with --hold {spec.name}=...")
        step = np.array(values[spec.name].split(","), np.int64 if spec.is_tokens else np.float32)
        if step.size != spec.count:
            raise runtime.InputValueError(f"--hold {spec.name} takes {spec.count} values, got {step.size}")
        columns[spec.name] = [np.tile(step, len(ids)) for ids in encoded]
    return columns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="an exported artifact folder")
    parser.add_argument("out", type=Path, help="the Parquet file to write")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text", action="append", default=None, help="a prompt (repeat for more rows)")
    parser.add_argument("--hold", action="append", default=[], help="with --text: NAME=V1,V2 of another input")
    args = parser.parse_args(argv)
    try:
        model = runtime.load(args.folder)
        columns = (
            text_rows(model, args.text, args.hold)
            if args.text
            else random_rows(model, args.rows, args.steps, args.seed)
        )
    except runtime.ToolkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    pq.write_table(pa.table(columns), args.out)
    print(f"wrote {len(columns['id'])} rows of {', '.join(name for name in columns if name != 'id')} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

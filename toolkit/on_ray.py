"""`rnn predict --ray` and `rnn generate --ray`: an exported folder of any signature run over every series
(or every row of named columns) of a dataset on Ray Data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import InputValueError

from .run_inputs import make_sampler
from .trust import Loading, load_model


@dataclass(frozen=True)
class Bulk:
    """``--ray``: run over every series of a dataset on Ray Data into a Parquet folder."""

    ray: bool = False
    input_path: Path | None = None
    out: Path | None = None
    address: str | None = None
    actors: int = 1


def run_bulk(
    folder: Path, kind: str, steps: int | None, loading: Loading, as_json: bool, bulk: Bulk, sampling: Any = None
) -> str:
    """`rnn predict/generate --ray`: toolkit.bulk.run_bulk over a dataset; its summary line.
    ``sampling`` (the --sample, --temperature, --top-k, --top-p and --seed options, an object with
    those attributes; None: none given) makes the sampler of a model that samples its next token:
    --seed is the base of the rows' seeds (a row's own in a ``seed`` column)."""
    from toolkit.bulk import run_bulk as run

    if not bulk.ray:
        raise InputValueError("--out and --address go with --ray")
    if bulk.input_path is None or bulk.out is None:
        raise InputValueError("--ray needs --input (a Parquet or .npy dataset) and --out (a new folder)")
    if loading.device != "cpu" or as_json:
        raise InputValueError("--ray runs on the CPU and writes Parquet: leave out --device and --json")
    model = load_model(folder, loading)  # the pins, checked once here before the workers load it
    sampler = None
    if kind == "generate":
        given = [getattr(sampling, name, None) for name in ("sample", "temperature", "top_k", "top_p", "seed")]
        sampler = make_sampler(model, *given)
    result = run(
        folder,
        bulk.input_path,
        bulk.out,
        kind=kind,
        steps=steps,
        address=bulk.address,
        actors=bulk.actors,
        sampler=sampler,
    )
    return f"{kind}: {result.series} series in {result.seconds:.1f} s -> {result.out}"

"""`rnn predict --ray` and `rnn generate --ray`: an exported folder run over every series of a dataset on Ray Data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.errors import InputValueError, UnsupportedError
from runtime.manifest import BATCH_FIRST

from .trust import Loading, load_model


@dataclass(frozen=True)
class Bulk:
    """``--ray``: run over every series of a dataset on Ray Data into a Parquet folder."""

    ray: bool = False
    input_path: Path | None = None
    out: Path | None = None
    address: str | None = None
    actors: int = 1


def run_bulk(folder: Path, kind: str, steps: int | None, loading: Loading, as_json: bool, bulk: Bulk) -> str:
    """`rnn predict/generate --ray`: toolkit.bulk.run_bulk over a dataset; its summary line."""
    from toolkit.bulk import run_bulk as run

    if not bulk.ray:
        raise InputValueError("--out and --address go with --ray")
    if bulk.input_path is None or bulk.out is None:
        raise InputValueError("--ray needs --input (a Parquet or .npy dataset) and --out (a new folder)")
    if loading.device != "cpu" or as_json:
        raise InputValueError("--ray runs on the CPU and writes Parquet: leave out --device and --json")
    model = load_model(folder, loading)  # the pins, checked once here before the workers load it
    if not model.classic or model.layout == BATCH_FIRST:
        raise UnsupportedError(
            "--ray bulk runs take folders of the seed's signature (one float input and output, time-first); "
            f"this one has inputs {list(model.input_names)}: run it with the Python runtime "
            "(runtime.load(...).predict / generate)"
        )
    result = run(folder, bulk.input_path, bulk.out, kind=kind, steps=steps, address=bulk.address, actors=bulk.actors)
    return f"{kind}: {result.series} series in {result.seconds:.1f} s -> {result.out}"

"""Predict and generate over many series on Ray Data: Parquet or .npy in, Parquet out, streamed.

One series per row: a Parquet dataset (a file or a folder of files) with an ``id`` column and a
``series`` column holding a list of numbers, all of one length (a batch of mixed lengths is
refused), read by the model workers one row group at a time (so a worker holds one row group, not
a file: see `ParquetRunner`), or .npy files (a file or a folder of them), each one
2-D array (n_series, length) whose rows get the ids 0, 1, 2, ... across the files in name order.
Or the long layout: a Parquet dataset with the columns ``series_id`` (int or string), ``t`` (int)
and ``value`` (a number), one row per point, rows in any order and a series' rows in any files.
Ray Data sorts it by ``series_id`` (a shuffle: every row crosses the object store once more,
spilled to disk past its size) and each sorted block becomes wide rows (``id`` = series_id), each
series ordered by ``t``. Two rows at one (series_id, t), or series of different lengths, are
refused (DataError). The rest is the wide path.

Each Ray worker (an actor of `map_batches`) loads the folder with `runtime.load` once and runs
whole batches through the fused forms: ``predict`` is the teacher-forced one-step prediction at
every point of a series (`rnn predict --input`); ``generate`` warms the state up on all points
but the last and runs ``steps`` closed-loop steps from the last (`rnn generate --warmup`).
Every batch runs in the form the runtime picks for a full batch, so a short last batch computes
exactly what it would inside a full one. The output is a folder of Parquet files with ``id`` and
``y`` (a list of float32), in input order.

A model of any other signature (named inputs, token ids, several outputs, states of any rank)
reads Parquet with an ``id`` column and a column per input by name, one stream per row, and
writes a column per output (or the sampled tokens): `toolkit.bulk_rows` says how. Such a file is
told from the wide layout by its columns (every input of the model by name, no ``series``).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import DataError, InputValueError, ShapeError, ToolkitError, UnsupportedError
from runtime.fused import FUSED_MIN_STEPS, choose_form
from runtime.inputs import retell_nonfinite

from .bulk_rows import ID_COLUMN, RowsRunner, check_columns, row_items, sampler_settings
from .extras import require
from .ray_cluster import connect

KINDS = ("predict", "generate")
SERIES_COLUMN = "series"  # Parquet input: a list of numbers per row
LONG_COLUMNS = ("series_id", "t", "value")  # Parquet input, long layout: one row per point
OUTPUT_COLUMN = "y"  # Parquet output: a list of float32 per row (length points, or steps)
BATCH_SIZE = 1024  # series per model call: past the fused forms' knee (rnn bench), well below the parallel split
ACTORS = 2  # model workers (Ray actors)
ACTOR_CPUS = (
    0.5  # Ray's CPUs per actor: two actors leave a CPU to the read and write tasks (at 1 each they starve them)
)
LOCAL_CPUS = 2  # the CPUs of the local Ray instance started when no address is given
READ_CPUS = 0.25  # per read task
STORE_LIMIT = 256 * 2**20  # bytes of Ray's object store the run's blocks may hold at once (see run_bulk)
LONG_ROWS_PER_PARTITION = 2_000_000  # long layout: rows per sort partition (~48 MB of int64, int64, float64)


@dataclass(frozen=True)
class BulkResult:
    """What a bulk run wrote: the output folder, the number of series, the wall time."""

    out: Path
    series: int
    seconds: float


def import_ray() -> Any:
    """The ray module with Ray Data and pyarrow; MissingDependencyError naming the extra if absent."""
    require(("ray", "ray.data", "pyarrow"), "a bulk run on Ray Data", "ray")
    import ray

    return ray


# ---- the model worker ---------------------------------------------------------------------


def load_series_model(folder: str, digest: str | None = None) -> Any:
    """``folder``'s model for series of one value per step (one CPU: no thread split), pinned to
    ``digest`` if given: a folder changed since the digest was read is an IntegrityError, never a
    run of other bytes. UnsupportedError or ShapeError for a model that does not take such series."""
    import runtime

    return check_series_model(runtime.load(folder, workers=1, digest=digest))


def check_series_model(model: Any) -> Any:
    """``model`` if it takes series of one value a step (the classic signature, sizes 1)."""
    if not model.classic:
        raise UnsupportedError(
            "the series layouts (a 'series' column, .npy, series_id/t/value) take the classic signature "
            f"(one float32 input and output); this model has inputs {', '.join(model.input_names)}: give Parquet "
            f"with the columns {ID_COLUMN!r} and one per input by name (README, bulk runs of any model)"
        )
    if model.input_size != 1 or model.output_size != 1:
        raise ShapeError(
            "bulk runs read series of one value per step: the model must have input and output size 1, "
            f"got {model.input_size} and {model.output_size}"
        )
    return model


class SeriesRunner:
    """A Ray Data callable class: one loaded model per actor, one batch of equal-length series in,
    ``id`` and ``y`` out (pyarrow tables). The folder is loaded pinned to ``digest`` (the one the
    driver read); a toolkit error of that load is raised by the first batch, not by the constructor:
    Ray reports a failed actor constructor as an untyped ActorDiedError, a failed batch as itself."""

    def __init__(self, folder: str, kind: str, steps: int | None, batch_size: int, digest: str | None = None) -> None:
        self.kind, self.steps, self.batch_size = kind, steps, batch_size
        self.refused: ToolkitError | None = None
        try:
            self.model = load_series_model(folder, digest)
        except ToolkitError as error:
            self.refused = error
            return
        self.batch_first = self.model.layout == "batch_first"

    def _form(self, kind: str, steps: int) -> str | None:
        """The form of a full batch (None where the runtime goes to the step model by itself)."""
        return None if steps < FUSED_MIN_STEPS else choose_form(kind, self.batch_size, steps, self.model.forms)

    def run(self, series: np.ndarray) -> np.ndarray:
        """(n, length) series -> (n, length) predictions, or (n, steps) generated values. A short
        batch (Ray cuts one at the end of each bundle of blocks) is padded to a full one with
        copies of its last row: onnxruntime's kernels for a few rows (1-3, 15 here) differ from a
        full batch's in the last bit, so a row's result would depend on where the batch was cut."""
        if self.refused is not None:
            raise self.refused
        n = len(series)
        if 0 < n < self.batch_size:
            series = np.concatenate([series, np.repeat(series[-1:], self.batch_size - n, axis=0)])
        return self._run(series)[:n]

    def _sequence(self, values: np.ndarray) -> np.ndarray:
        """(n, length) values as the model's sequence of one-value steps (its layout)."""
        return values[:, :, None] if self.batch_first else values.T[:, :, None]  # (n, length, 1) or (length, n, 1)

    def _series(self, ys: np.ndarray) -> np.ndarray:
        """The model's sequence of one-value outputs as (n, length) float32 series."""
        return np.ascontiguousarray(ys[:, :, 0] if self.batch_first else ys[:, :, 0].T)

    def _run(self, series: np.ndarray) -> np.ndarray:
        length = series.shape[1]
        if self.kind == "predict":
            ys, _ = self.model.predict(self._sequence(series), form=self._form("predict", length))
        else:
            if length < 2:
                raise DataError(f"generate warms up on all points but the last: series need 2 or more, got {length}")
            warm_up = self._sequence(series[:, :-1])
            _, state = self.model.predict(warm_up, form=self._form("predict", length - 1))
            x0 = series[:, -1:]  # (n, 1): the last point of every series
            ys, _ = self.model.generate(x0, self.steps, state, form=self._form("generate", self.steps))
        return self._series(ys)  # (n, length or steps) float32

    def __call__(self, batch: Any) -> Any:
        ids = batch.column(ID_COLUMN)
        return output_table(ids, self.run(series_matrix(batch.column(SERIES_COLUMN), ids)))


class NpyRunner(SeriesRunner):
    """`SeriesRunner` for .npy input: each row of the batch names a file and a slice of its rows,
    read here (memory-mapped), so a batch never mixes files of different lengths."""

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        tables = []
        for path, start, first_id in zip(*(batch.column(name).to_pylist() for name in ("path", "start", "first_id"))):
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            rows = np.asarray(array[start : start + self.batch_size], dtype=np.float64)  # (n, length)
            ids = pa.array(np.arange(first_id, first_id + len(rows), dtype=np.int64))
            tables.append(output_table(ids, self.run(rows)))
        return pa.concat_tables(tables)


class ParquetRunner(SeriesRunner):
    """`SeriesRunner` for wide Parquet: each row of the batch names a file and one row group, read
    here in batches of ``batch_size`` rows. One row group at a time: pyarrow's iter_batches over a
    whole file with a list column keeps every row group read so far allocated until it ends, so
    Ray Data's reader (which does that) grew with the file (~1 GB per read task at 1M series)."""

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = []
        for path, group in zip(*(batch.column(name).to_pylist() for name in ("path", "row_group"))):
            reader = pq.ParquetFile(path)
            for part in reader.iter_batches(self.batch_size, row_groups=[group], columns=[ID_COLUMN, SERIES_COLUMN]):
                ids = part.column(ID_COLUMN)
                tables.append(output_table(ids, self.run(series_matrix(part.column(SERIES_COLUMN), ids))))
        return pa.concat_tables(tables)


def parquet_files(source: Path) -> list[Path]:
    """The .parquet files of ``source`` (a file, or a folder's, in name order)."""
    files = sorted(source.rglob("*.parquet")) if source.is_dir() else [source]
    if not files:
        raise DataError(f"{source} holds no .parquet files")
    return files


def parquet_row_groups(files: list[Path]) -> list[dict[str, Any]]:
    """One item per row group of ``files`` (footers only); DataError unless each has the wide
    columns."""
    import pyarrow.parquet as pq

    items = []
    for path in files:
        try:
            metadata = pq.ParquetFile(path).metadata
        except (OSError, ValueError) as error:
            raise DataError(f"{path} is not a readable Parquet file: {error}") from None
        missing = {ID_COLUMN, SERIES_COLUMN} - set(metadata.schema.to_arrow_schema().names)
        if missing:
            raise DataError(
                f"{path} must have the columns {ID_COLUMN!r} and {SERIES_COLUMN!r} (or {', '.join(LONG_COLUMNS)}); "
                f"missing {sorted(missing)}"
            )
        groups = [group for group in range(metadata.num_row_groups) if metadata.row_group(group).num_rows]
        items += [{"path": str(path.resolve()), "row_group": group} for group in groups]  # an empty one has none
    return items


def series_matrix(column: Any, ids: Any) -> np.ndarray:
    """A pyarrow list column as (n, length) float64; DataError unless every series has the same
    length (and none is null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        raise DataError(f"column {SERIES_COLUMN!r} must hold a list of numbers per row, got {array.type}")
    if array.null_count:
        raise DataError(f"column {SERIES_COLUMN!r} has {array.null_count} null series")
    lengths = pc.list_value_length(array).to_numpy()
    if len(lengths) and (lengths != lengths[0]).any():
        other = int(np.argmax(lengths != lengths[0]))
        raise DataError(
            f"series must all have the same length: {ID_COLUMN} {ids[0].as_py()!r} has {lengths[0]} points, "
            f"{ID_COLUMN} {ids[other].as_py()!r} has {lengths[other]}"
        )
    values = array.flatten()
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise DataError(f"column {SERIES_COLUMN!r} must hold numbers, got lists of {values.type}")
    width = int(lengths[0]) if len(lengths) else 0
    return values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False).reshape(len(array), width)


def output_table(ids: Any, ys: np.ndarray) -> Any:
    """``id`` and ``y`` (a list of float32 per row) from (n, width) outputs."""
    import pyarrow as pa

    n, width = ys.shape
    offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
    return pa.table({ID_COLUMN: ids, OUTPUT_COLUMN: pa.ListArray.from_arrays(offsets, pa.array(ys.reshape(-1)))})


# ---- the long layout ------------------------------------------------------------------------


class LengthRegistry:
    """A Ray actor (no CPU) holding the first series length seen, so that every block of a long
    table is checked against one length: series of different lengths in different blocks are
    refused too, in the same pass."""

    def __init__(self) -> None:
        self.first: tuple[int, Any] | None = None

    def check(self, length: int, series_id: Any) -> tuple[int, Any]:
        if self.first is None:
            self.first = (length, series_id)
        return self.first


def long_to_wide(block: Any, registry: Any = None) -> Any:
    """A block of the long layout holding every row of its series (sorted by series_id) -> one
    wide row per series: ``id`` (the series_id) and ``series`` (the values ordered by ``t``).
    DataError on nulls, two rows at one (series_id, t), or series of different lengths (within
    the block, or against ``registry``'s first length)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    sid_name, t_name, value_name = LONG_COLUMNS
    for name in LONG_COLUMNS:
        if block.column(name).null_count:
            raise DataError(f"column {name!r} has {block.column(name).null_count} nulls")
    if not pa.types.is_integer(block.schema.field(t_name).type):
        raise DataError(f"column {t_name!r} must hold integers, got {block.schema.field(t_name).type}")
    value_type = block.schema.field(value_name).type
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise DataError(f"column {value_name!r} must hold numbers, got {value_type}")
    if block.num_rows == 0:
        empty = pa.array([], pa.list_(pa.float64()))
        return pa.table({ID_COLUMN: block.column(sid_name).combine_chunks(), SERIES_COLUMN: empty})
    table = block.take(pc.sort_indices(block, sort_keys=[(sid_name, "ascending"), (t_name, "ascending")]))
    sid = table.column(sid_name).combine_chunks()
    t = table.column(t_name).to_numpy()
    n = table.num_rows
    same = ~pc.not_equal(sid.slice(1), sid.slice(0, n - 1)).to_numpy(zero_copy_only=False)  # row i+1 continues i
    twice = np.flatnonzero(same & (t[1:] == t[:-1]))
    if len(twice):
        raise DataError(f"series_id {sid[int(twice[0])].as_py()!r} has two rows at t = {t[twice[0]]}")
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    bounds = np.append(starts, n)
    lengths = np.diff(bounds)
    length, first_id = int(lengths[0]), sid[int(starts[0])].as_py()
    if registry is not None:
        import ray

        length, first_id = ray.get(registry.check.remote(length, first_id))
    other = np.flatnonzero(lengths != length)
    if len(other):
        raise DataError(
            f"series must all have the same length: series_id {first_id!r} has {length} points, "
            f"series_id {sid[int(starts[other[0]])].as_py()!r} has {lengths[other[0]]}"
        )
    values = table.column(value_name).to_numpy().astype(np.float64, copy=False)
    series = pa.ListArray.from_arrays(pa.array(bounds.astype(np.int64 if n >= 2**31 else np.int32)), pa.array(values))
    return pa.table({ID_COLUMN: sid.take(pa.array(starts)), SERIES_COLUMN: series})


# ---- the dataset --------------------------------------------------------------------------


def npy_files(source: Path) -> list[Path]:
    """The .npy files of ``source`` (a file, or a folder's, in name order)."""
    files = sorted(source.glob("*.npy")) if source.is_dir() else [source]
    if not files:
        raise DataError(f"{source} holds no .npy files")
    return files


def npy_slices(files: list[Path], batch_size: int) -> list[dict[str, Any]]:
    """One item per batch of rows of each file: path, first row, first id. The headers are read
    here (memory-mapped: no data), so a file that is not a 2-D numeric array is refused at once."""
    items, first_id = [], 0
    for path in files:
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as error:
            raise DataError(f"{path} is not a readable .npy array: {error}") from None
        if array.ndim != 2 or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise DataError(
                f"{path} must hold one 2-D numeric array (n_series, length), got {array.shape} {array.dtype}"
            )
        for start in range(0, array.shape[0], batch_size):
            items.append({"path": str(path.resolve()), "start": start, "first_id": first_id + start})
        first_id += array.shape[0]
    return items


def is_npy(source: Path) -> bool:
    return source.suffix == ".npy" or (source.is_dir() and any(source.glob("*.npy")))


def _dataset(ray: Any, source: Path, worker: WorkerArguments, model: Any) -> tuple[Any, str]:
    """(the input dataset, its kind: "npy" (slices), "parquet" (row groups), "long" (wide rows) or
    "rows" (row groups of named columns)); the model checked against the layout."""
    if not source.exists():
        raise DataError(f"input {str(source)!r} does not exist")
    if is_npy(source):
        check_series_model(model)
        return ray.data.from_items(npy_slices(npy_files(source), worker.batch_size)), "npy"
    files = parquet_files(source)
    names = parquet_columns(files[0])  # the layout, from the first file's footer
    long = set(LONG_COLUMNS) <= names and not {ID_COLUMN, SERIES_COLUMN} <= names
    series_model = model.classic and model.input_size == model.output_size == 1
    if SERIES_COLUMN not in names and not long and (not series_model or set(model.input_names) <= names):
        for path in files:
            check_columns(model, worker.kind, worker.sampling, parquet_columns(path), path)
        return ray.data.from_items(row_items(files)), "rows"
    check_series_model(model)
    if worker.sampling is not None:
        raise InputValueError("a sampler goes only with generate of a model that samples its next token")
    if long:
        dataset = ray.data.read_parquet(str(source), num_cpus=READ_CPUS)
        registry = ray.remote(num_cpus=0)(LengthRegistry).remote()
        rows = count_rows(source)  # from the footers: the sort's partitions (its blocks) by the data's size
        dataset.context.default_hash_shuffle_parallelism = -(-rows // LONG_ROWS_PER_PARTITION)  # its own copy
        wide = dataset.select_columns(list(LONG_COLUMNS)).sort(LONG_COLUMNS[0])  # a series' rows in one block
        return wide.map_batches(
            long_to_wide, fn_kwargs={"registry": registry}, batch_size=None, batch_format="pyarrow", num_cpus=READ_CPUS
        ), "long"
    return ray.data.from_items(parquet_row_groups(files)), "parquet"


def parquet_columns(path: Path) -> set[str]:
    """The column names of a Parquet file, from its footer; DataError if it is not one."""
    import pyarrow.parquet as pq

    try:
        return set(pq.read_schema(path).names)
    except (OSError, ValueError) as error:
        raise DataError(f"{path} is not a readable Parquet file: {error}") from None


def check_unique_ids(source: Path) -> None:
    """DataError naming an id found on two rows of a Parquet input with an ``id`` column (the wide
    layout and named columns), before Ray starts: each output row is labelled by its id alone, so
    two rows of one id could not be told apart. The ids of .npy rows are their row numbers, and the
    long layout's series_id groups its rows: neither is checked here."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not source.exists() or is_npy(source):
        return
    files = [path for path in parquet_files(source) if ID_COLUMN in parquet_columns(path)]
    if not files:  # the long layout: series_id, t, value
        return
    columns = [pq.read_table(path, columns=[ID_COLUMN]).column(ID_COLUMN) for path in files]
    try:
        ids = pa.chunked_array([chunk for column in columns for chunk in column.chunks])
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise DataError(f"the {ID_COLUMN!r} columns of {source} are not all of one type") from None
    if len(pc.unique(ids)) == len(ids):
        return
    first_row: dict[Any, tuple[Path, int]] = {}
    for path, column in zip(files, columns):
        for row, key in enumerate(column.to_pylist()):
            if key in first_row:
                earlier, earlier_row = first_row[key]
                raise DataError(
                    f"{ID_COLUMN} {key!r} is on two rows (counting from 0): row {earlier_row} of {earlier} and "
                    f"row {row} of {path}; ids must be unique (each output row is labelled by its id)"
                )
            first_row[key] = (path, row)


def check_arguments(kind: str, steps: int | None, batch_size: int, actors: int) -> None:
    """InputValueError unless ``kind``, ``steps``, ``batch_size`` and ``actors`` make a run."""
    if kind not in KINDS:
        raise InputValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if kind == "generate" and (type(steps) is not int or steps < 1):
        raise InputValueError(f"generate needs steps >= 1, got {steps!r}")
    if type(batch_size) is not int or batch_size < 1 or type(actors) is not int or actors < 1:
        raise InputValueError(f"batch_size and actors must be integers >= 1, got {batch_size!r} and {actors!r}")


def read_model(folder: Path) -> Any:
    """The folder's errors here, once, before Ray starts; its manifest digest is the one the workers
    are pinned to."""
    import runtime

    return runtime.load(folder, workers=1)


@contextlib.contextmanager
def ray_session(ray: Any, address: str | None, progress: bool) -> Iterator[None]:
    """Ray up (the instance already initialised in this process, else the cluster at ``address``,
    else a local one started and shut down here) with Ray Data set for a bulk run, and every
    setting changed put back after it."""
    started = not ray.is_initialized()
    if started:
        connect(address, cpus=LOCAL_CPUS, logging_level="ERROR")
    context = ray.data.DataContext.get_current()
    options = context.execution_options
    saved = options.preserve_order, context.enable_progress_bars, context.raise_original_map_exception
    saved_limits = options.resource_limits
    # Ray Data lets the reader run ahead of the model workers until its share of the object store
    # (by default a fraction of 30% of the node's RAM) is full: the blocks read and not yet run
    # grew with the data (to ~1 GB at 1M series here). A fixed budget bounds them.
    options.resource_limits = ray.data.ExecutionResources.for_limits(object_store_memory=STORE_LIMIT)
    options.preserve_order = True  # output rows in input order
    context.enable_progress_bars = progress
    context.raise_original_map_exception = True  # a worker's DataError reaches here as itself
    # Ray Data logs a failed worker's traceback before raising; the caller gets the error itself
    # (one line in the CLI), so its loggers are quieted for the run (its log file keeps everything)
    quiet = [logging.getLogger(name) for name in ("ray.data", "ray")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data\.")  # pool-size advice
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", DeprecationWarning)  # no_restarts
            yield
    finally:
        options.preserve_order, context.enable_progress_bars, context.raise_original_map_exception = saved
        options.resource_limits = saved_limits
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
        if started:
            ray.shutdown()


@dataclass(frozen=True)
class WorkerArguments:
    """What each model worker is built from: the folder pinned to the digest the driver read."""

    folder: str
    kind: str
    steps: int | None
    batch_size: int
    digest: str
    sampling: dict[str, Any] | None = None  # a sampler's settings (`bulk_rows.sampler_settings`)
    states: bool = False  # named columns: write each row's final state

    def constructor_args(self, layout: str) -> tuple:
        common = (self.folder, self.kind, self.steps, self.batch_size, self.digest)
        return (*common, self.sampling, self.states) if layout == "rows" else common


def no_restarts(ray: Any) -> dict[str, int]:
    """map_batches' keywords that make the model workers' actors never restart. Ray Data makes its
    actors restartable (max_restarts=-1) and hands each its map function and context by
    object-store reference, which Ray's core cannot promise to restart with: it logs an
    error-level ``core_worker.cc`` line at the first actor of every run, successful or not
    (ray-project/ray issues 53727 and 57733). Without restarts that line is gone, and a worker that
    dies ends the run with its error (run it again) instead of restarting. Ray 2.60 deprecates
    these keywords without a named max_restarts (Ray Data's own code still names them for this):
    none where a later Ray takes them no more."""
    parameters = inspect.signature(ray.data.Dataset.map_batches).parameters.values()
    return {"max_restarts": 0} if any(p.kind is p.VAR_KEYWORD for p in parameters) else {}


RUNNERS = {"npy": NpyRunner, "parquet": ParquetRunner, "long": SeriesRunner, "rows": RowsRunner}


def write_outputs(ray: Any, source: Path, out: Path, worker: WorkerArguments, actors: int, model: Any) -> None:
    """Reads ``source``, runs it on ``actors`` model workers, writes ``out``; a worker's toolkit
    error is raised as itself, in one line."""
    try:
        dataset, layout = _dataset(ray, source, worker, model)
        dataset = dataset.map_batches(
            RUNNERS[layout],
            fn_constructor_args=worker.constructor_args(layout),
            batch_size=worker.batch_size if layout == "long" else 1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=ACTOR_CPUS,
            **no_restarts(ray),
        )
        dataset.write_parquet(str(out))
    except Exception as error:
        cause = _toolkit_cause(ray, error)
        if cause is None:
            raise
        raise cause from None


def run_bulk(
    folder: str | os.PathLike,
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    kind: str = "predict",
    steps: int | None = None,
    address: str | None = None,
    batch_size: int = BATCH_SIZE,
    actors: int = ACTORS,
    progress: bool = True,
    sampler: Any = None,
    states: bool = False,
) -> BulkResult:
    """Runs ``kind`` over every series of ``source`` on Ray Data and writes ``out`` (a folder of
    Parquet files: ``id``, ``y``), streaming: no stage holds more than a few batches.

    Ray: the instance already initialised in this process, else the cluster at ``address``, else a
    local one of `LOCAL_CPUS` CPUs started and shut down here. The model folder and the data must
    be readable at the same paths on every node; the workers load the folder pinned to the
    manifest this call read (a folder changed in between is an IntegrityError). Errors in the data
    (ragged series, NaN, a bad file) come back as the runtime's typed errors, one line each.

    ``sampler`` (a `runtime.Sampler`): generate of a model that samples its next token, from
    named columns; each row draws with its own seed (`toolkit.bulk_rows`). ``states``: named
    columns only, a column per state holds each row's final state (the input of a later run).
    """
    check_arguments(kind, steps, batch_size, actors)
    folder, source, out = Path(folder).resolve(), Path(source).resolve(), Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputValueError(f"output {str(out)!r} already exists; name a new folder")
    model = read_model(folder)
    settings = sampler_settings(sampler)
    worker = WorkerArguments(str(folder), kind, steps, batch_size, model.manifest_digest, settings, states)
    ray = import_ray()
    check_unique_ids(source)  # Ray not started yet
    with ray_session(ray, address, progress):
        begin = time.perf_counter()
        write_outputs(ray, source, out, worker, actors, model)
        out.mkdir(parents=True, exist_ok=True)  # Ray Data writes no folder for a dataset of no rows
    return BulkResult(out, count_rows(out), time.perf_counter() - begin)


def _toolkit_cause(ray: Any, error: BaseException) -> ToolkitError | None:
    """The toolkit error a worker raised, unwrapped from Ray's exceptions (whose text carries
    the worker's traceback) and cut to its own line; None if the failure is not one."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ToolkitError) and not isinstance(current, ray.exceptions.RayError):
            text = str(current).split("\n", 1)[0]  # Ray appends its retry notes on lines below
            return type(current)(retell_nonfinite(text))  # a bulk run has no allow_nonfinite
        following = getattr(current, "cause", None)
        current = following if isinstance(following, BaseException) else (current.__cause__ or current.__context__)
    return None


def count_rows(out: Path) -> int:
    """Rows in the Parquet files of ``out`` (a folder, or one file; from their footers)."""
    import pyarrow.parquet as pq

    paths = sorted(out.rglob("*.parquet")) if out.is_dir() else [out]
    return sum(pq.ParquetFile(path).metadata.num_rows for path in paths)


def read_output(out: str | os.PathLike) -> tuple[np.ndarray, list[np.ndarray]]:
    """(ids, outputs) of a bulk run's output folder, in row order: for tests and small outputs."""
    import pyarrow.parquet as pq

    tables = [pq.read_table(path) for path in sorted(Path(out).glob("*.parquet"))]
    ids = np.concatenate([t.column(ID_COLUMN).to_numpy() for t in tables]) if tables else np.array([])
    ys = [np.asarray(y, dtype=np.float32) for t in tables for y in t.column(OUTPUT_COLUMN).to_pylist()]
    return ids, ys

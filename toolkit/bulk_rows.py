"""Bulk runs of a model of any signature: one row per stream, a Parquet column per input by name.

The input (a Parquet file or a folder of them) has an ``id`` column and one column per input of
the model, named after it: per row a list of the input's values at every step, token ids as
integers (int64 in the run), values as numbers (float32 in the run). An input of several values a
step (``(batch, *sizes)``) takes per row either a flat list of ``steps * count`` numbers (each
step's values in row-major order) or a list of steps each holding ``count`` numbers. Rows may
differ in their number of steps; every input of one row has the same number. Optional:

- a column named after a state holds the row's state to start from (``count`` numbers a row, the
  per-stream tensor in row-major order, the batch axis taken out); a row gets the manifest's
  initial state where the column is absent or its value null;
- ``seed`` (generate of a model that samples its next token): the row's sampler seed, an int >= 0.
  Without the column a row's seed is the base seed (the sampler's) + the row's index in the
  dataset (files in name order, rows in order); a sampler without a seed draws fresh entropy.

``predict`` runs the rows teacher-forced and writes a column per output (a list of float32 per
row, ``steps * count``: flat, row-major). ``generate`` warms each row's state up on all its steps
but the last (teacher-forced), then runs ``steps`` closed-loop steps from the last step's inputs
(the inputs not fed back keep that value), as `runtime.Model.generate` does for the row alone:
a model that samples its next token writes the tokens (a list of int64 per row) in the column of
its token input, with the sampler's settings and the row's seed (`RowSeeds`), and, where the
manifest has a vocabulary, their text in ``text_output``; one that feeds its outputs back writes a
column per output as predict does. With ``states`` (`toolkit.bulk.run_bulk`) both also write a
column per state: each row's final state, as a state column is read, so a later run goes on from it.

Equal to the row alone: a row's values are the runtime's for that row within float32 rounding
(onnxruntime's kernels at a full batch and at batch 1 round differently in the last bit), and its
tokens are the row's own ``generate`` with ``Sampler(..., seed=row_seed)`` except where a draw falls
on a float32 tie of the CDF (from 16 rows the fused sampling form computes GRU layers as Gemm
cells: `runtime.sampled`); measured: 1 row of 2,000 (200,000 draws) parted on the char GRU of
benchmarks/sampling.py, none on the tests' models.

A model worker reads one row group at a time, in batches of ``batch_size`` rows. Within a batch,
rows of one length run together, padded to the full batch with copies of the last row (a row's
result does not depend on which rows shared its batch: onnxruntime's kernels for a few rows
differ from a full batch's in the last bit); the closed loop of generate runs the whole batch at
once. Mixed lengths cost one padded run per length in each batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import DataError, InputValueError, ToolkitError
from runtime.manifest import BATCH_FIRST, SAMPLE
from runtime.sampling import Sampler
from runtime.vocabulary import TEXT_OUTPUT  # generate of a sampled model with a vocabulary: the tokens as text

ID_COLUMN = "id"  # Parquet input and output: the row's id, copied through
SEED_COLUMN = "seed"  # optional, generate of a sampled model: the row's sampler seed
ROW_ITEMS = ("path", "row_group", "first_row")  # what each item of the rows dataset names


# ---- what a bulk run of named columns needs -------------------------------------------------------


def sampler_settings(sampler: Any) -> dict[str, Any] | None:
    """A `runtime.Sampler` as the keyword arguments that rebuild it in a worker (None for None)."""
    if sampler is None:
        return None
    if not isinstance(sampler, Sampler):
        raise InputValueError(f"sampler must be a runtime.Sampler, got {type(sampler).__name__}")
    return {
        "strategy": sampler.strategy,
        "temperature": sampler.temperature,
        "top_k": sampler.top_k,
        "top_p": sampler.top_p,
        "seed": sampler.seed,
    }


def check_columns(model: Any, kind: str, sampler: Any, names: set[str], path: Path) -> None:
    """DataError unless a file's columns ``names`` hold ``id`` and every input of ``model``;
    InputValueError unless a sampler is given exactly where generate samples its tokens."""
    sampled = model.feedback is not None and model.feedback.via == SAMPLE
    if kind == "generate" and sampled and sampler is None:
        raise InputValueError(
            f"this model samples its next {model.feedback.input!r} token: pass sampler=runtime.Sampler(...) "
            "(its seed is the base of the rows' seeds)"
        )
    if sampler is not None and not (kind == "generate" and sampled):
        raise InputValueError("a sampler goes only with generate of a model that samples its next token")
    missing = [name for name in (ID_COLUMN, *model.input_names) if name not in names]
    if missing:
        raise DataError(
            f"{path} must have the columns {ID_COLUMN!r} and one per input of the model "
            f"{list(model.input_names)} (a list of the input's values at every step per row); missing {missing}"
        )


def row_items(files: list[Path]) -> list[dict[str, Any]]:
    """One item per row group of ``files``: its path, number and the index of its first row in
    the dataset (files in name order), from the footers only."""
    import pyarrow.parquet as pq

    items, first = [], 0
    for path in files:
        metadata = pq.ParquetFile(path).metadata
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            if rows:  # an empty file has one row group of no rows: nothing for a worker
                items.append({"path": str(path.resolve()), "row_group": group, "first_row": first})
            first += rows
    return items


# ---- reading list columns ----------------------------------------------------------------------


def list_values(column: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A column of (nested) lists as (its leaf values, the number of leaf values in each row);
    DataError for a column that is not lists of numbers, or holds nulls."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        raise DataError(f"column {name!r} must hold a list per row (the values at every step), got {array.type}")
    counts = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        if array.null_count:
            raise DataError(f"column {name!r} has {array.null_count} null lists")
        child = array.flatten()
        if pa.types.is_list(child.type) or pa.types.is_large_list(child.type):
            inner = np.concatenate(([0], np.cumsum(pc.list_value_length(child).to_numpy(zero_copy_only=False))))
            ends = np.cumsum(counts)
            counts = inner[ends] - inner[ends - counts]  # leaf values per row, summed over its lists
        array = child
    if array.null_count:
        raise DataError(f"column {name!r} has {array.null_count} null values")
    if not (pa.types.is_floating(array.type) or pa.types.is_integer(array.type)):
        raise DataError(f"column {name!r} must hold numbers, got lists of {array.type}")
    return array.to_numpy(zero_copy_only=False), counts.astype(np.int64)


@dataclass
class Rows:
    """One batch of rows read from named columns: each input's and given state's leaf values
    with where each row's start, the rows' numbers of steps, ids and seeds."""

    ids: Any  # the pyarrow id column
    steps: np.ndarray  # (n,) int64: each row's number of steps
    values: dict[str, np.ndarray]  # input or state name -> every row's values, flat
    starts: dict[str, np.ndarray]  # name -> (n,) where each row's values start
    seeds: list[int | None]

    def sequences(self, specs: tuple, rows: np.ndarray, length: int) -> dict[str, np.ndarray]:
        """Steps 0 .. length - 1 of ``rows`` (all of >= length steps): name -> (k, length, *sizes)."""
        return {spec.name: self._take(spec, rows, 0, length) for spec in specs}

    def last_step(self, specs: tuple, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Each row's last step: name -> (k, *sizes)."""
        return {spec.name: self._take(spec, rows, self.steps[rows] - 1, 1)[:, 0] for spec in specs}

    def _take(self, spec: Any, rows: np.ndarray, first: Any, length: int) -> np.ndarray:
        start = self.starts[spec.name][rows] + np.asarray(first) * spec.count  # (k,)
        positions = start[:, None] + np.arange(length * spec.count)  # (k, length * count)
        dtype = np.int64 if spec.is_tokens else np.float32
        return self.values[spec.name][positions].astype(dtype, copy=False).reshape(len(rows), length, *spec.sizes)

    def states(self, model: Any, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """The states of ``rows`` batched as the model keeps them: a row's given state, else the
        manifest's initial one."""
        initial = model.initial_state(len(rows))
        batched = []
        for spec, axis, start in zip(model.states, model.signature.state_axes, initial):
            if spec.name not in self.values:
                batched.append(start)
                continue
            starts = self.starts[spec.name][rows]  # -1 where a row's state is null
            positions = np.maximum(starts, 0)[:, None] + np.arange(spec.count)
            per_row = self.values[spec.name][positions].astype(np.float32).reshape(len(rows), *spec.sizes)
            per_row[starts < 0] = np.moveaxis(start, axis, 0)[starts < 0]
            batched.append(np.ascontiguousarray(np.moveaxis(per_row, 0, axis)))
        return tuple(batched)


def read_rows(model: Any, table: Any, first_row: int, base_seed: int | None) -> Rows:
    """A pyarrow batch of named columns as `Rows`; DataError naming the first row whose steps or
    state do not fit the model."""
    import pyarrow as pa

    names = set(table.schema.names)
    ids = table.column(ID_COLUMN)
    values, starts, steps = {}, {}, None
    for spec in model.inputs:
        flat, counts = list_values(table.column(spec.name), spec.name)
        if spec.is_tokens and flat.dtype.kind not in "iu":
            raise DataError(f"column {spec.name!r} holds token ids: integers, got {flat.dtype}")
        row_steps, extra = np.divmod(counts, spec.count)
        bad = np.flatnonzero((extra != 0) | (row_steps < 1) | ((row_steps != steps) if steps is not None else False))
        if len(bad):
            row = int(bad[0])
            raise DataError(
                f"{ID_COLUMN} {ids[row].as_py()!r}: column {spec.name!r} holds {counts[row]} values, not a "
                f"positive multiple of {spec.count} a step"
                + ("" if steps is None else f" for the {steps[row]} steps of its other inputs")
            )
        values[spec.name], starts[spec.name], steps = flat, np.cumsum(counts) - counts, row_steps
    for spec in model.states:
        if spec.name in names:
            column = table.column(spec.name)
            given = ~column.is_null().to_numpy(zero_copy_only=False)  # a null row starts from the initial state
            flat, counts = list_values(column.filter(pa.array(given)), spec.name)
            bad = np.flatnonzero(given)[counts != spec.count]
            if len(bad):
                raise DataError(
                    f"{ID_COLUMN} {ids[int(bad[0])].as_py()!r}: state {spec.name!r} needs {spec.count} values "
                    f"{spec.sizes} (or null: the initial state), got {counts[np.flatnonzero(given) == bad[0]][0]}"
                )
            values[spec.name] = flat
            starts[spec.name] = np.full(len(given), -1, np.int64)  # -1: not given
            starts[spec.name][given] = np.cumsum(counts) - counts
    return Rows(ids, steps, values, starts, row_seeds(table, first_row, base_seed))


def row_seeds(table: Any, first_row: int, base_seed: int | None) -> list[int | None]:
    """Each row's sampler seed: the ``seed`` column, else ``base_seed`` + the row's index in the
    dataset, else None (fresh entropy) where the base is None."""
    n = table.num_rows
    if SEED_COLUMN not in table.schema.names:
        return [None] * n if base_seed is None else [base_seed + first_row + i for i in range(n)]
    column = table.column(SEED_COLUMN)
    seeds = column.to_pylist()
    bad = [i for i, seed in enumerate(seeds) if type(seed) is not int or seed < 0]
    if bad:
        found = seeds[bad[0]]
        raise DataError(
            f"{ID_COLUMN} {table.column(ID_COLUMN)[bad[0]].as_py()!r}: seed must be an int >= 0, got {found!r}"
        )
    return seeds


# ---- per-row seeds -------------------------------------------------------------------------------


class RowSeeds(Sampler):
    """A `runtime.Sampler` whose uniforms for row b are those ``Sampler(..., seed=seeds[b])``
    draws for that row alone: a batch's tokens are each row's tokens generated by itself."""

    def __init__(self, settings: dict[str, Any], seeds: list[int | None]) -> None:
        super().__init__(**{**settings, "seed": None})
        self.generators = [np.random.default_rng(seed) for seed in seeds]

    def uniforms(self, steps: int, batch: int) -> np.ndarray:
        if batch != len(self.generators):
            raise InputValueError(f"RowSeeds holds {len(self.generators)} rows' seeds, asked for {batch}")
        if self.greedy:
            return super().uniforms(steps, batch)
        columns = [g.random((int(steps), 1), dtype=np.float32) for g in self.generators]  # as batch 1 draws
        return np.concatenate(columns, axis=1) if columns else np.zeros((int(steps), 0), np.float32)


# ---- the model worker ----------------------------------------------------------------------------


def padded(rows: np.ndarray, size: int) -> np.ndarray:
    """``rows`` and copies of its last one up to ``size``."""
    return rows if len(rows) >= size else np.concatenate([rows, np.repeat(rows[-1:], size - len(rows))])


def batch_first(model: Any, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sequences (k, steps, ...) in the model's layout (time-first swaps the two first axes)."""
    return arrays if model.layout == BATCH_FIRST else {k: np.swapaxes(v, 0, 1) for k, v in arrays.items()}


class FlatColumns:
    """The output columns of a batch being filled group by group: per name a flat buffer of
    every row's values, each row's width and where it starts."""

    def __init__(self, widths: dict[str, np.ndarray]) -> None:
        self.offsets = {name: np.concatenate(([0], np.cumsum(w))) for name, w in widths.items()}
        self.buffers: dict[str, np.ndarray] = {}  # made by the first put, of its values' dtype

    def put(self, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        """``values`` (k, ...) of ``rows``, each row's flattened."""
        flat = values.reshape(len(rows), -1)
        if name not in self.buffers:
            self.buffers[name] = np.empty(int(self.offsets[name][-1]), flat.dtype)
        positions = self.offsets[name][rows][:, None] + np.arange(flat.shape[1])
        self.buffers[name][positions] = flat

    def put_states(self, model: Any, rows: np.ndarray, states: tuple[np.ndarray, ...]) -> None:
        """The first ``len(rows)`` streams of batched ``states`` as ``rows``' state columns."""
        for spec, axis, state in zip(model.states, model.signature.state_axes, states):
            self.put(spec.name, rows, np.moveaxis(state, axis, 0)[: len(rows)])

    def table(self, ids: Any) -> Any:
        """``id`` and a list column per name (int32 offsets: a batch holds under 2**31 values)."""
        import pyarrow as pa

        columns = {ID_COLUMN: ids}
        for name in self.offsets:
            buffer = self.buffers[name]
            if self.offsets[name][-1] >= 2**31:
                raise DataError(f"a batch's {name!r} holds {self.offsets[name][-1]} values: use a smaller batch_size")
            offsets = pa.array(self.offsets[name].astype(np.int32))
            columns[name] = pa.ListArray.from_arrays(offsets, pa.array(buffer))
        return pa.table(columns)


class RowsRunner:
    """A Ray Data callable class for named columns: one model per actor, pinned to ``digest``;
    each item of a batch names a row group of a file, read here ``batch_size`` rows at a time
    into an output table (``id`` and the output columns). A toolkit error of the load is raised
    by the first batch (Ray reports a failed constructor untyped)."""

    def __init__(
        self,
        folder: str,
        kind: str,
        steps: int | None,
        batch_size: int,
        digest: str,
        sampling: dict | None,
        states: bool = False,
    ) -> None:
        import runtime

        self.kind, self.steps, self.batch_size, self.sampling = kind, steps, batch_size, sampling
        self.states = states  # whether to write each row's final state
        self.refused: ToolkitError | None = None
        try:
            self.model = runtime.load(folder, workers=1, digest=digest)
        except ToolkitError as error:
            self.refused = error

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.refused is not None:
            raise self.refused
        tables = []
        for path, group, first in zip(*(batch.column(name).to_pylist() for name in ROW_ITEMS)):
            reader = pq.ParquetFile(path)
            wanted = {ID_COLUMN, SEED_COLUMN, *self.model.input_names, *self.model.state_names}
            columns = [name for name in reader.schema_arrow.names if name in wanted]
            for part in reader.iter_batches(self.batch_size, row_groups=[group], columns=columns):
                tables.append(self.run(pa.Table.from_batches([part]), first))
                first += part.num_rows
        return pa.concat_tables(tables)

    def run(self, table: Any, first_row: int = 0) -> Any:
        """A table of named columns (``first_row``: its first row's index in the dataset) -> the
        output table."""
        if table.num_rows == 0:
            raise DataError("a batch of no rows")  # iter_batches yields none; an empty file has no row group
        base = None if self.sampling is None else self.sampling["seed"]
        rows = read_rows(self.model, table, first_row, base)
        if self.kind == "predict":
            return self._predict(rows)
        return self._generate(rows)

    def _columns(self, widths: dict[str, np.ndarray], n: int) -> FlatColumns:
        """The output columns of ``n`` rows: ``widths`` and, if asked, a column per state."""
        if self.states:
            widths = {**widths, **{spec.name: np.full(n, spec.count) for spec in self.model.states}}
        return FlatColumns(widths)

    def _predict(self, rows: Rows) -> Any:
        model = self.model
        outputs = self._columns({spec.name: rows.steps * spec.count for spec in model.outputs}, len(rows.steps))
        for length in np.unique(rows.steps):
            group = np.flatnonzero(rows.steps == length)
            run = padded(group, self.batch_size)
            xs = batch_first(model, rows.sequences(model.inputs, run, int(length)))
            ys, final = model.predict(xs, rows.states(model, run))
            named = batch_first(model, ys if isinstance(ys, dict) else {model.output_names[0]: ys})
            for name, array in named.items():
                outputs.put(name, group, array[: len(group)])
            if self.states:
                outputs.put_states(model, group, final)
        return outputs.table(rows.ids)

    def _warmed_up(self, rows: Rows, run: np.ndarray) -> tuple[np.ndarray, ...]:
        """The states of the padded batch ``run`` after each row's steps but the last."""
        model = self.model
        states = [s.copy() for s in rows.states(model, run)]
        for length in np.unique(rows.steps[run]):
            if length < 2:
                continue
            group = np.flatnonzero(rows.steps[run] == length)  # positions in run
            part = padded(run[group], self.batch_size)
            xs = batch_first(model, rows.sequences(model.inputs, part, int(length) - 1))
            _, warmed = model.predict(xs, rows.states(model, part))
            for state, new, axis in zip(states, warmed, model.signature.state_axes):
                np.moveaxis(state, axis, 0)[group] = np.moveaxis(new, axis, 0)[: len(group)]
        return tuple(states)

    def _generate(self, rows: Rows) -> Any:
        import pyarrow as pa

        model = self.model
        n = len(rows.steps)
        run = padded(np.arange(n), self.batch_size)
        x0 = rows.last_step(model.inputs, run)
        sampler = None if self.sampling is None else RowSeeds(self.sampling, [rows.seeds[i] for i in run])
        ys, final = model.generate(x0, self.steps, self._warmed_up(rows, run), sampler=sampler)
        everything = np.arange(n)
        if sampler is not None:  # the tokens (batch, steps) in the token input's column
            named = {model.feedback.input: ys if model.layout == BATCH_FIRST else ys.T}
            widths = {model.feedback.input: np.full(n, self.steps)}
        else:
            named = batch_first(model, ys if isinstance(ys, dict) else {model.output_names[0]: ys})
            widths = {spec.name: np.full(n, self.steps * spec.count) for spec in model.outputs}
        outputs = self._columns(widths, n)
        for name, array in named.items():
            outputs.put(name, everything, array[:n])
        if self.states:
            outputs.put_states(model, everything, final)
        table = outputs.table(rows.ids)
        words = model.vocabulary
        if sampler is None or words is None:
            return table
        tokens = named[model.feedback.input][:n]
        return table.append_column(TEXT_OUTPUT, pa.array([words.decode(row) for row in tokens], pa.string()))

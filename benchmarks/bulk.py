"""Bulk predict/generate: Ray Data (toolkit.bulk) against a single-process loop over the same runtime.

    .venv/bin/python benchmarks/bulk.py                  # 200k series x 100 steps, about 1 min here
    .venv/bin/python benchmarks/bulk.py --series 1000000 # the issue's million

Both ways read the same Parquet file (written by a child process) one row group at a time in
batches of `BATCH_SIZE`, run the same `toolkit.bulk.SeriesRunner` (one loaded model, fused forms)
and write Parquet. Memory is sampled every 100 ms from /proc (see `PeakMemory`): the driver (this
process), every Ray worker process (``ray::`` in its command line) by kind, and /dev/shm (the
object store). Ray's times include starting and stopping the local instance. Prints one table;
ratios are against the loop. ``task_heap`` in a loop row is Ray workers still exiting from the
previous run.

    .venv/bin/python benchmarks/bulk.py --token-rows 20000   # a token model's sampled generation

runs the char GRU of benchmarks/sampling.py (Embedding(100, 32) -> 2-layer GRU(100) -> logits)
over Parquet rows of named columns (`toolkit.bulk_rows`): a prompt of `PROMPT` token ids a row,
then `STEPS` sampled tokens (temperature 0.8, row i seeded 0 + i), three ways: what a user writes
today (a Python loop of `runtime.Model.generate` row by row, each with its own `Sampler`), the
same `RowsRunner` the workers run in one process (batches of `BATCH_SIZE`), and Ray Data. The rows'
tokens are compared between the three ways (a row differs only at a float32 tie of its draw).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.bulk import ACTORS, BATCH_SIZE, ID_COLUMN, SERIES_COLUMN, SeriesRunner, count_rows, run_bulk  # noqa: E402
from toolkit.bulk_rows import RowsRunner  # noqa: E402

FOLDER = Path(__file__).resolve().parents[1] / "artifacts" / "sine-elman"
SERIES = 200_000
LENGTH = 100  # points per series: predict runs 100 steps, generate warms up on 99 and runs STEPS
STEPS = 100
WRITE_CHUNK = 50_000  # series generated and written at a time
PROMPT = 20  # --token-rows: the prompt's token ids a row
TOKEN_SETTINGS = {"strategy": "temperature", "temperature": 0.8, "top_k": None, "top_p": None, "seed": 0}


def memory_kib(pid: int) -> tuple[int, int]:
    """(heap, shared) resident KiB of a process, from /proc/PID/status: heap is RssAnon, the
    process's own memory; shared is RssShmem, the object store's pages (/dev/shm) it has mapped,
    counted in every process that maps them. (USS from smaps_rollup is no good here: object-store
    pages that only one process has mapped yet, e.g. blocks a read task wrote, count as private.)"""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(("RssShmem:", "RssAnon:")):
                    fields[line.split(":")[0]] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0, 0
    return fields.get("RssAnon", 0), fields.get("RssShmem", 0)


def ray_processes() -> dict[int, str]:
    """Ray's worker processes (``ray::`` titles): pid -> "actor" (a model worker) or "task"."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    title = handle.read(200)
            except OSError:
                continue
            if title.startswith(b"ray::"):
                found[int(entry)] = (
                    "actor"
                    if b"MapWorker" in title
                    else "read"
                    if b"Read" in title
                    else "write"
                    if b"Write" in title
                    else "task"
                )
    return found


def shm_used_kib() -> int:
    """Bytes in use on /dev/shm (KiB): the Ray object store's resident pages."""
    stats = os.statvfs("/dev/shm")
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize // 1024


class PeakMemory:
    """Peaks, sampled every 100 ms until stopped: the driver's heap; per Ray process kind (model
    actors, read tasks, write tasks, other ray:: workers) the largest heap of one process and the
    largest object-store share an actor maps; the object store's pages on /dev/shm (above what was
    there at the start)."""

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        self.shm_base = shm_used_kib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _peak(self, name: str, value: int) -> None:
        self.peaks[name] = max(self.peaks.get(name, 0), value)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak("driver_heap", memory_kib(os.getpid())[0])
            for pid, kind in ray_processes().items():
                heap, shared = memory_kib(pid)
                self._peak(f"{kind}_heap", heap)
                self._peak(f"{kind}_shm", shared)
            self._peak("store", shm_used_kib() - self.shm_base)
            self._stop.wait(0.1)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def mib(self, name: str) -> str:
        return f"{self.peaks[name] / 1024:.0f}" if name in self.peaks else "-"


def write_dataset(path: Path, series: int, row_group: int) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(LENGTH) * 0.4
    schema = pa.schema([(ID_COLUMN, pa.int64()), (SERIES_COLUMN, pa.list_(pa.float64()))])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, series, row_group):
            n = min(row_group, series - start)
            rows = np.sin(rng.uniform(0.5, 1.5, (n, 1)) * t + rng.uniform(0, 2 * np.pi, (n, 1)))
            offsets = pa.array(np.arange(0, n * LENGTH + 1, LENGTH, dtype=np.int32))
            values = pa.ListArray.from_arrays(offsets, pa.array(rows.reshape(-1)))
            writer.write_table(pa.table({ID_COLUMN: np.arange(start, start + n), SERIES_COLUMN: values}, schema=schema))


def single_process(source: Path, out: Path, kind: str) -> int:
    runner = SeriesRunner(str(FOLDER), kind, STEPS if kind == "generate" else None, BATCH_SIZE)
    done, writer = 0, None
    out.mkdir()
    reader = pq.ParquetFile(source)
    for group in range(reader.num_row_groups):  # one row group at a time: see toolkit.bulk.ParquetRunner
        for batch in reader.iter_batches(batch_size=BATCH_SIZE, row_groups=[group]):
            table = runner(pa.Table.from_batches([batch]))
            writer = writer or pq.ParquetWriter(out / "part-0.parquet", table.schema)
            writer.write_table(table)
            done += table.num_rows
    writer.close()
    return done


def token_rows(work: Path, rows: int) -> None:
    """--token-rows: the char GRU's sampled generation over ``rows`` prompts, three ways (module docstring)."""
    import runtime
    from export import export_module

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sampling import SIGNATURE, V, make_model

    folder = export_module(make_model(), work / "char", **SIGNATURE)
    model = runtime.load(folder, workers=1)
    prompts = np.random.default_rng(1).integers(0, V, (rows, PROMPT))
    source = work / "prompts.parquet"
    pq.write_table(pa.table({ID_COLUMN: np.arange(rows), "token": list(prompts)}), source, row_group_size=5000)
    began = time.perf_counter()
    alone = []
    for i, prompt in enumerate(prompts):
        _, state = model.predict(prompt[:-1, None])
        sampler = runtime.Sampler("temperature", temperature=0.8, seed=i)
        alone.append(model.generate(prompt[-1:], STEPS, state, sampler=sampler)[0][:, 0])
    loop_seconds = time.perf_counter() - began
    began = time.perf_counter()
    runner = RowsRunner(str(folder), "generate", STEPS, BATCH_SIZE, model.manifest_digest, TOKEN_SETTINGS)
    reader = pq.ParquetFile(source)
    batched = []
    for group in range(reader.num_row_groups):
        for batch in reader.iter_batches(batch_size=BATCH_SIZE, row_groups=[group]):
            batched += runner.run(pa.Table.from_batches([batch]), len(batched)).column("token").to_pylist()
    runner_seconds = time.perf_counter() - began
    began = time.perf_counter()
    sampler = runtime.Sampler("temperature", temperature=0.8, seed=0)
    run_bulk(folder, source, work / "out", kind="generate", steps=STEPS, sampler=sampler, progress=False)
    ray_seconds = time.perf_counter() - began
    table = pa.concat_tables([pq.read_table(path) for path in sorted((work / "out").glob("*.parquet"))])
    on_ray = table.column("token").to_pylist()
    differ = sum(a.tolist() != b or b != c for a, b, c in zip(alone, batched, on_ray))
    print(f"\n{rows} prompts of {PROMPT} tokens, {STEPS} sampled tokens each; rows whose tokens differ: {differ}")
    print(f"{'way':32} {'seconds':>8} {'tokens/s':>10} {'vs loop':>8}")
    for way, seconds in (
        ("row by row (runtime.generate)", loop_seconds),
        (f"RowsRunner, batch {BATCH_SIZE}", runner_seconds),
        (f"ray data ({ACTORS} actors)", ray_seconds),
    ):
        print(f"{way:32} {seconds:8.1f} {rows * STEPS / seconds:10.0f} {loop_seconds / seconds:7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=SERIES, help=f"series in the dataset (default {SERIES})")
    parser.add_argument(
        "--row-group", type=int, default=WRITE_CHUNK, help=f"series per Parquet row group (default {WRITE_CHUNK})"
    )
    parser.add_argument("--kinds", default="predict,generate", help="comma-separated: predict, generate")
    parser.add_argument("--token-rows", type=int, default=None, help="the token model's rows instead (docstring)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bulk-bench-"))
    try:
        if args.token_rows:
            token_rows(work, args.token_rows)
            return
        source = work / "series.parquet"
        began = time.perf_counter()
        # in a child process, so that the driver's memory below is the run's alone
        child = multiprocessing.get_context("spawn").Process(
            target=write_dataset, args=(source, args.series, args.row_group)
        )
        child.start()
        child.join()
        assert child.exitcode == 0
        size = source.stat().st_size
        print(
            f"dataset: {args.series} series x {LENGTH} points, {size / 2**20:.0f} MiB Parquet, "
            f"written in {time.perf_counter() - began:.1f} s; generate: {STEPS} steps",
            file=sys.stderr,
        )
        rows = []
        for kind in args.kinds.split(","):
            with PeakMemory() as memory:
                began = time.perf_counter()
                done = single_process(source, work / f"{kind}-loop", kind)
                loop_seconds = time.perf_counter() - began
            assert done == args.series
            rows.append((kind, "single process", loop_seconds, loop_seconds, memory))
            with PeakMemory() as memory:
                began = time.perf_counter()
                result = run_bulk(FOLDER, source, work / f"{kind}-ray", kind=kind, steps=STEPS, progress=False)
                seconds = time.perf_counter() - began
            assert result.series == count_rows(work / f"{kind}-ray") == args.series
            rows.append((kind, f"ray data ({ACTORS} actors)", seconds, loop_seconds, memory))
        columns = ("driver_heap", "actor_heap", "read_heap", "write_heap", "task_heap", "actor_shm", "store")
        print(
            f"\n{'kind':9} {'way':20} {'seconds':>8} {'series/s':>10} {'vs loop':>8} "
            + " ".join(f"{name:>11}" for name in columns)
            + "\n(peak MiB; _heap: RssAnon of the largest one process of that kind; "
            + "actor_shm: object-store pages an actor maps; store: object store pages on /dev/shm)"
        )
        for kind, way, seconds, loop_seconds, memory in rows:
            print(
                f"{kind:9} {way:20} {seconds:8.1f} {args.series / seconds:10.0f} {loop_seconds / seconds:7.2f}x "
                + " ".join(f"{memory.mib(name):>11}" for name in columns)
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

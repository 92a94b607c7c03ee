"""Bulk predict/generate: Ray Data (toolkit.bulk) against a single-process loop over the same runtime.

    .venv/bin/python benchmarks/bulk.py                  # 200k series x 100 steps, about 1 min here
    .venv/bin/python benchmarks/bulk.py --series 1000000 # the issue's million

Both ways read the same Parquet file in batches, run the same `toolkit.bulk.SeriesRunner` (one
loaded model, fused forms) and write Parquet. Peak RSS is sampled every 50 ms from /proc: the
driver (this process) and every Ray worker process (``ray::`` in its command line). Ray's times
include starting and stopping the local instance. Prints one table; ratios are against the loop.
"""

from __future__ import annotations

import argparse
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

from toolkit.bulk import BATCH_SIZE, ID_COLUMN, SERIES_COLUMN, SeriesRunner, count_rows, run_bulk  # noqa: E402

FOLDER = Path(__file__).resolve().parents[1] / "artifacts" / "sine-elman"
SERIES = 200_000
LENGTH = 100  # points per series: predict runs 100 steps, generate warms up on 99 and runs STEPS
STEPS = 100
WRITE_CHUNK = 50_000  # series generated and written at a time


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def ray_worker_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if handle.read(5) == b"ray::":
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


class PeakMemory:
    """Samples the driver's RSS and the Ray workers' RSS (largest one, and their sum) until stopped."""

    def __init__(self) -> None:
        self.driver = self.worker = self.workers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.driver = max(self.driver, rss_kib(os.getpid()))
            sizes = [rss_kib(pid) for pid in ray_worker_pids()]
            self.worker = max([self.worker, *sizes])
            self.workers = max(self.workers, sum(sizes))
            self._stop.wait(0.05)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def write_dataset(path: Path, series: int) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(LENGTH) * 0.4
    schema = pa.schema([(ID_COLUMN, pa.int64()), (SERIES_COLUMN, pa.list_(pa.float64()))])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, series, WRITE_CHUNK):
            n = min(WRITE_CHUNK, series - start)
            rows = np.sin(rng.uniform(0.5, 1.5, (n, 1)) * t + rng.uniform(0, 2 * np.pi, (n, 1)))
            offsets = pa.array(np.arange(0, n * LENGTH + 1, LENGTH, dtype=np.int32))
            values = pa.ListArray.from_arrays(offsets, pa.array(rows.reshape(-1)))
            writer.write_table(pa.table({ID_COLUMN: np.arange(start, start + n), SERIES_COLUMN: values}, schema=schema))


def single_process(source: Path, out: Path, kind: str) -> int:
    runner = SeriesRunner(str(FOLDER), kind, STEPS if kind == "generate" else None, BATCH_SIZE)
    done, writer = 0, None
    out.mkdir()
    for batch in pq.ParquetFile(source).iter_batches(batch_size=BATCH_SIZE):
        table = runner(pa.Table.from_batches([batch]))
        writer = writer or pq.ParquetWriter(out / "part-0.parquet", table.schema)
        writer.write_table(table)
        done += table.num_rows
    writer.close()
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=SERIES, help=f"series in the dataset (default {SERIES})")
    parser.add_argument("--kinds", default="predict,generate", help="comma-separated: predict, generate")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bulk-bench-"))
    try:
        source = work / "series.parquet"
        began = time.perf_counter()
        write_dataset(source, args.series)
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
            rows.append((kind, "single process", loop_seconds, loop_seconds, memory.driver, 0, 0))
            with PeakMemory() as memory:
                began = time.perf_counter()
                result = run_bulk(FOLDER, source, work / f"{kind}-ray", kind=kind, steps=STEPS, progress=False)
                seconds = time.perf_counter() - began
            assert result.series == count_rows(work / f"{kind}-ray") == args.series
            rows.append(
                (kind, "ray data (2 actors)", seconds, loop_seconds, memory.driver, memory.worker, memory.workers)
            )
        print(
            f"\n{'kind':9} {'way':20} {'seconds':>8} {'series/s':>10} {'vs loop':>8} "
            f"{'driver MiB':>10} {'max worker MiB':>14} {'all ray:: MiB':>13}"
        )
        for kind, way, seconds, loop_seconds, driver, worker, workers in rows:
            print(
                f"{kind:9} {way:20} {seconds:8.1f} {args.series / seconds:10.0f} {loop_seconds / seconds:7.2f}x "
                f"{driver / 1024:10.0f} {worker / 1024:14.0f} {workers / 1024:13.0f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

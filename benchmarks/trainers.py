"""Measures both trainers over seeds: teacher-forced MSE on the reference data and the max error
of a 100-step closed-loop rollout past the data against sin(t). Prints a table (and --json)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from rnn.train import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0..N-1 (default 8)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    rows = []
    for trainer in ("reference", "bptt"):
        for seed in range(args.seeds):
            start = time.perf_counter()
            result = train(TrainConfig(trainer=trainer, seed=seed))
            rows.append({"trainer": trainer, "seed": seed, **result.metrics, "seconds": time.perf_counter() - start})
    if args.json:
        machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        machine += f", torch {torch.__version__}"
        print(json.dumps({"machine": machine, "rows": rows}, indent=2))
        return
    print(f"{'trainer':<10} {'seed':>4} {'teacher-forced MSE':>19} {'rollout max err':>16} {'time s':>7}")
    for row in rows:
        print(
            f"{row['trainer']:<10} {row['seed']:>4} {row['teacher_forced_mse']:>19.3e} "
            f"{row['rollout_max_error']:>16.4f} {row['seconds']:>7.1f}"
        )
    print()
    for trainer in ("reference", "bptt"):
        mine = [r for r in rows if r["trainer"] == trainer]
        mse = [r["teacher_forced_mse"] for r in mine]
        roll = [r["rollout_max_error"] for r in mine]
        print(
            f"{trainer:<10} MSE median {statistics.median(mse):.2e} (range {min(mse):.2e} - {max(mse):.2e}); "
            f"rollout max error median {statistics.median(roll):.3f} (range {min(roll):.3f} - {max(roll):.3f})"
        )


if __name__ == "__main__":
    main()

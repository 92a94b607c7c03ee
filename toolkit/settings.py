"""The application's defaults and output file names, in one torch-free place (the CLI's help
texts read them without importing torch)."""

from __future__ import annotations

# rnn bench: what it times by default, and what it writes into its output folder.
BENCH_BATCHES = (1, 64, 4096)
BENCH_STEPS = (20, 1000)
BENCH_KINDS = ("generate", "predict")
BENCH_ROUNDS = 5  # interleaved rounds; each implementation keeps its best
BENCH_STREAM_COUNTS = (1, 64, 4096)
BENCH_PNG = "bench.png"
BENCH_JSON = "bench.json"

# rnn generate and rnn demo: closed-loop steps generated with onnxruntime by default.
GENERATE_STEPS = 100
GENERATE_CSV = "generate.csv"  # what rnn demo writes them to


def listed(values: tuple) -> str:
    """``(1, 64, 4096)`` as ``1, 64, 4096`` for a help text."""
    return ", ".join(map(str, values))

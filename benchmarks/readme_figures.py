"""The README's figures, rendered from the files the benchmarks wrote (one place for every number).

Each figure in README.md sits in a block between ``<!-- figures: NAME -->`` and ``<!-- /figures -->``.
``FIGURES`` maps each block's name to the function that renders it from its committed source under
docs/ (named by the constant above the function); the ``parity-checks`` block is rendered from the
verifier's own constants instead. Nothing is measured here: refresh a figure by re-running its
benchmark into its docs/ file (the command is in the file, or in the README beside the block), then
``--write``.

Usage:
    python benchmarks/readme_figures.py --check   # exit 1 naming every stale block (or a missing source)
    python benchmarks/readme_figures.py --write   # rewrite every block from its sources
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_NAME = "README.md"
BLOCK = re.compile(r"^(<!-- figures: (?P<name>[\w-]+) -->\n)(?P<body>.*?)^(<!-- /figures -->)$", re.S | re.M)


STALE = "stale (the README differs from what its sources give)"


class FigureError(Exception):
    """A figure that cannot be rendered: a source file missing or not in the shape expected."""


class Sources:
    """The committed benchmark outputs under ``root``, read once each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._text: dict[str, str] = {}

    def text(self, name: str) -> str:
        if name not in self._text:
            path = self.root / name
            if not path.is_file():
                raise FigureError(f"source {name} is missing")
            self._text[name] = path.read_text(encoding="utf-8")
        return self._text[name]

    def json(self, name: str) -> dict:
        try:
            return json.loads(self.text(name))
        except json.JSONDecodeError as error:
            raise FigureError(f"source {name} is not JSON: {error}") from None

    def pipe_tables(self, name: str) -> list[list[dict[str, str]]]:
        """Every markdown table of the file, each a list of rows by header (``**`` stripped)."""
        tables, lines = [], self.text(name).splitlines()
        index = 0
        while index < len(lines):
            if lines[index].startswith("|") and index + 1 < len(lines) and lines[index + 1].startswith("|---"):
                header = _cells(lines[index])
                rows, index = [], index + 2
                while index < len(lines) and lines[index].startswith("|"):
                    rows.append(dict(zip(header, _cells(lines[index]))))
                    index += 1
                tables.append(rows)
            index += 1
        if not tables:
            raise FigureError(f"source {name} holds no table")
        return tables

    def space_tables(self, name: str, first: str, columns: tuple[str, ...]) -> list[list[dict[str, str]]]:
        """The printed tables whose header line starts with ``first``: rows of ``columns`` up to a blank line."""
        tables, lines = [], self.text(name).splitlines()
        for index, line in enumerate(lines):
            if not line.startswith(first + " "):
                continue
            rows = []
            for row in lines[index + 1 :]:
                if not row.strip() or row.startswith("("):
                    break
                values = row.split()
                if len(values) != len(columns):
                    raise FigureError(f"source {name}: a row of {len(values)} values, {len(columns)} expected: {row}")
                rows.append(dict(zip(columns, values)))
            tables.append(rows)
        if not tables:
            raise FigureError(f"source {name} holds no table headed {first!r}")
        return tables

    def lines(self, name: str, prefix: str, section_end: str | None = None) -> list[str]:
        """The file's lines that start with ``prefix`` (before the first ``section_end`` line, if given)."""
        text = self.text(name)
        if section_end is not None:
            text = text.split(section_end)[0]
        found = [line for line in text.splitlines() if line.startswith(prefix)]
        if not found:
            raise FigureError(f"source {name} has no line starting {prefix!r}")
        return found

    def search(self, name: str, pattern: str) -> re.Match:
        match = re.search(pattern, self.text(name))
        if match is None:
            raise FigureError(f"source {name} does not match {pattern!r}")
        return match


def _cells(line: str) -> list[str]:
    return [cell.strip().replace("**", "") for cell in line.strip().strip("|").split("|")]


# ---- formatting ------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def num(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def x(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}x"


def thousands(value: float) -> str:
    return f"{value:,.0f}"


def span(values: list[float], digits: int = 1, unit: str = "x") -> str:
    """``lo-hi`` with the unit, or one value where they agree at that precision."""
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"


def number(text: str) -> float:
    return float(text.replace(",", "").rstrip("x"))


# ---- docs/bench.json: rnn bench artifacts/sine-elman -------------------------------------------

BENCH = "docs/bench.json"
BENCH_CALLS = (("generate", 1), ("predict", 1), ("generate", 64), ("generate", 4096), ("predict", 4096))
BENCH_STEPS = 1000


def bench_calls(sources: Sources) -> str:
    bench = sources.json(BENCH)
    by_key = {(r["kind"], r["batch"], r["steps"], r["implementation"]): r for r in bench["rows"]}

    def cell(kind: str, batch: int, implementation: str, bold: bool = False) -> str:
        row = by_key.get((kind, batch, BENCH_STEPS, implementation))
        if row is None:
            raise FigureError(f"source {BENCH} has no row {kind} B={batch} T={BENCH_STEPS} {implementation}")
        if implementation == "eager":
            return num(row["us_per_step"])
        ratio = x(row["ratio_vs_eager"])
        return f"{num(row['us_per_step'])} ({f'**{ratio}**' if bold else ratio})"

    rows = [
        [
            f"{kind} B={batch} T={BENCH_STEPS}",
            cell(kind, batch, "eager"),
            cell(kind, batch, "onnx step loop"),
            cell(kind, batch, "auto", bold=True),
            cell(kind, batch, "numpy loop"),
        ]
        for kind, batch in BENCH_CALLS
    ]
    header = ["call", "eager", "onnx step loop", "auto (the form `choose_form` picks)", "numpy loop"]
    return f"Machine: {bench['machine']}.\n\n" + table(header, rows)


def bench_one_call(sources: Sources) -> str:
    rows = sources.json(BENCH)["one_call"]
    header = [f"`{r['implementation']}`" for r in rows]
    values = [f"{num(r['us_per_call'])} ({x(r['ratio_vs_eager_step'], 2)})" for r in rows]
    return table(header, [values])


def bench_streams(sources: Sources) -> str:
    rows = sources.json(BENCH)["streams"]
    implementations = list(dict.fromkeys(r["implementation"] for r in rows))
    counts = list(dict.fromkeys(r["streams"] for r in rows))
    by_key = {(r["streams"], r["implementation"]): r for r in rows}
    body = []
    for count in counts:
        cells = [str(count)]
        for index, implementation in enumerate(implementations):
            row = by_key[(count, implementation)]
            rate = thousands(row["stream_steps_per_second"])
            cells.append(rate if index == 0 else f"{rate} ({x(row['ratio_vs_per_stream_run'])})")
        body.append(cells)
    return table(["streams", *(f"`{name}`" for name in implementations)], body)


def bench_cold_start(sources: Sources) -> str:
    cold = sources.json(BENCH)["cold_start"]
    imported = "imported" if cold["torch_imported"] else "never imported"
    return (
        "Cold start (a fresh process imports the runtime, loads the folder with its sha256 checks and "
        f"generates 20 steps): **{num(cold['in_process_s'], 3)} s** inside the process, "
        f"{num(cold['process_wall_s'], 3)} s including interpreter start-up; torch is {imported}."
    )


# ---- docs/fused-cells-bench.txt: benchmarks/fused_cells.py --------------------------------------

FUSED_CELLS = "docs/fused-cells-bench.txt"


def fused_cells(sources: Sources) -> str:
    rows = sources.pipe_tables(FUSED_CELLS)[0]
    auto = [r for r in rows if r["implementation"].startswith("runtime auto")]

    def ratios(**where: str) -> list[float]:
        found = [number(r["x step loop"]) for r in auto if all(r[k] == v for k, v in where.items())]
        if not found:
            raise FigureError(f"source {FUSED_CELLS} has no runtime auto row {where}")
        return found

    fused_b1 = [number(r["x step loop"]) for r in auto if r["B"] == "1" and "(step)" not in r["implementation"]]
    lstm = ratios(cell="lstm", H="16", B="1", T="1000", call="generate")
    return (
        f"At batch 1 the form the runtime picks runs {span(fused_b1)} faster than the step loop (LSTM "
        f"hidden 16, a 1000-step rollout: {span(lstm)}), at batch 64 hidden 16 {span(ratios(H='16', B='64'))}; "
        f"at batch 64 hidden 100 the fused forms stop paying and the runtime runs the step loop "
        f"({span(ratios(H='100', B='64'), 2)}). Machine and command: `{FUSED_CELLS}`."
    )


# ---- docs/gpu-bench-h200.txt: benchmarks/gpu.py on a lent H200 ---------------------------------

GPU = "docs/gpu-bench-h200.txt"


def gpu(sources: Sources) -> str:
    rows = next(t for t in sources.pipe_tables(GPU) if "ms / call" in t[0])

    def pick(model: str, batch: str, implementation: str, key: str) -> list[float]:
        found = [
            number(r[key])
            for r in rows
            if r["model"] == model and r["batch"] == batch and r["implementation"].startswith(implementation)
        ]
        if not found:
            raise FigureError(f"source {GPU} has no row {model} batch {batch} {implementation}")
        return found

    machine = sources.text(GPU).splitlines()[0].lstrip("# ").split(";")[:2]
    char, elman = "char GRU", "sine-elman"
    elman_256 = pick(elman, "256", "runtime CUDA", "x runtime CPU")
    return (
        f"Measured on {', '.join(part.strip() for part in machine)} (`benchmarks/gpu.py`, `{GPU}`). "
        f"1000 tokens of the char GRU (hidden 100, 2 layers), the runtime's fused form: batch 1 takes "
        f"{span(pick(char, '1', 'runtime CPU', 'ms / call'), 0, ' ms')} on the CPU and "
        f"{span(pick(char, '1', 'runtime CUDA (fused)', 'ms / call'), 0, ' ms')} on CUDA; batch 64 is still "
        f"faster on the CPU ({span(pick(char, '64', 'runtime CUDA (fused)', 'x runtime CPU'), 2)} on CUDA); "
        f"at batch 1024 CUDA is {span(pick(char, '1024', 'runtime CUDA (fused)', 'x runtime CPU'), 2)} the CPU. "
        f"The Elman model: at batch 256 CUDA runs {span(elman_256, 2)} the CPU's speed; at batch 16384 "
        f"CUDA's `rollout_rnn` is {span(pick(elman, '16384', 'runtime CUDA, rollout_rnn', 'x runtime CPU'), 2)}."
    )


# ---- docs/sampling-bench.txt: benchmarks/sampling.py --------------------------------------------

SAMPLING = "docs/sampling-bench.txt"


def sampling(sources: Sources) -> str:
    rows = sources.pipe_tables(SAMPLING)[0]

    def ratio(strategy: str, batch: str, implementation: str) -> float:
        for row in rows:
            if (row["sampling"], row["batch"], row["implementation"]) == (strategy, batch, implementation):
                return number(row["x eager"])
        raise FigureError(f"source {SAMPLING} has no row {strategy} batch {batch} {implementation}")

    both = ("temperature", "greedy")
    step_loop_64 = [
        number(r["x eager"]) for r in rows if r["batch"] == "64" and r["implementation"].startswith("runtime step loop")
    ]
    return (
        f"Speed, 1000 tokens of an Embedding + 2-layer GRU (hidden 100, vocabulary 100) on the 2-core VM "
        f"(`benchmarks/sampling.py`, `{SAMPLING}`): the fused form is "
        f"{x(ratio('temperature', '1', 'fused, workers 1'), 2)} eager PyTorch's sampling loop at batch 1 with "
        f"temperature, {x(ratio('greedy', '1', 'fused, workers 1'), 2)} greedy, "
        f"{span([ratio(s, '64', 'fused, workers 2') for s in both], 2)} at batch 64 (split over the two cores' "
        f"workers; {span([ratio(s, '64', 'fused, workers 1') for s in both], 2)} on one); the Python step loop "
        f"{span([ratio(s, '1', 'runtime step loop') for s in both], 2)} at batch 1 and {span(step_loop_64, 2)} "
        "at batch 64."
    )


# ---- docs/issue22-token-streaming.txt: benchmarks/token_streaming.py ----------------------------

STREAMING = "docs/issue22-token-streaming.txt"
STREAMING_COLUMNS = (
    "transport", "conc", "gens", "tokens", "range", "ttft50", "ttft99", "itl50", "itl99",
    "events", "x", "client", "server", "other", "srv_us",
)  # fmt: skip
STREAMING_NAMES = {
    "baseline-sse": "baseline (FastAPI, SSE)",
    "ours-sse": "`rnn serve`, `/generate_stream` (SSE)",
    "ours-grpc": "`rnn serve`, gRPC decoupled stream",
}
CURRENT_RUN_END = "# Earlier runs"  # the file keeps older runs below this line


def token_streaming(sources: Sources) -> str:
    rows = sources.space_tables(STREAMING, "transport", STREAMING_COLUMNS)[0]
    top = max(int(r["conc"]) for r in rows)
    body = [
        [
            STREAMING_NAMES[r["transport"]],
            thousands(number(r["tokens"])),
            "1.00" if r["x"] == "-" else f"**{r['x']}**",
            f"{r['ttft50']} / {r['ttft99']}",
            r["itl99"],
            f"{r['srv_us']} us",
        ]
        for r in rows
        if int(r["conc"]) == top
    ]
    header = [f"{top} concurrent generations", "tokens/s", "x baseline", "time to first token p50 / p99 ms"]
    header += ["inter-token p99 ms", "server CPU a token"]
    first = {r["transport"]: r for r in rows if r["conc"] == "1"}
    events = [int(r["events"]) for r in rows if r["transport"].startswith("ours") and int(r["conc"]) == top]
    verdicts = sources.lines(STREAMING, "target ", CURRENT_RUN_END)
    return (
        table(header, body)
        + f"\n\nTime to first token at 1 concurrent generation: {first['ours-sse']['ttft50']} ms (SSE) and "
        f"{first['ours-grpc']['ttft50']} ms (gRPC). At {top} generations a stream sent "
        f"{span(events, 0, '')} messages per 200 tokens. The issue's targets, as the run judged them:\n\n"
        + targets(verdicts)
    )


# ---- docs/issue22-served-steps-quiet.txt and docs/serve-bench.txt: benchmarks/serve.py ------------

SERVED_STEPS_CHAR = "docs/issue22-served-steps-quiet.txt"
SERVE = "docs/serve-bench.txt"
SERVE_COLUMNS = (
    "transport", "conc", "delay", "steps", "p50", "p99", "batch", "x_thru", "x_p99",
    "client", "server", "other", "srv_us", "x_cpu",
)  # fmt: skip


TRANSPORTS = {"ours-sse": "SSE", "ours-grpc": "gRPC", "ours-http": "HTTP"}


def targets(lines: list[str]) -> str:
    """The benchmark's own verdict lines (``target ours-sse: ...: met``) as a list, transports by name."""
    items = []
    for line in lines:
        item = line.removeprefix("target ")
        for key, name in TRANSPORTS.items():
            item = item.replace(key, name)
        items.append(f"- {item}")
    return "\n".join(items)


def _spot_checks(sources: Sources, name: str) -> str:
    checks = sources.lines(name, "spot check")
    return "bit-identical" if all(line.count("bit-identical") == 3 for line in checks) else "NOT all bit-identical"


def served_steps_char(sources: Sources) -> str:
    tables = sources.space_tables(SERVED_STEPS_CHAR, "transport", SERVE_COLUMNS)
    rows = [row for rows in tables for row in rows]

    def ratios(transport: str) -> list[float]:
        return [number(r["x_thru"]) for r in rows if r["transport"] == transport]

    return (
        f"Served steps of the same model (`python benchmarks/serve.py --model char`, 256 sequences, "
        f"{len(tables)} runs, `{SERVED_STEPS_CHAR}`): HTTP {span(ratios('ours-http'), 2)} the baseline's "
        f"steps/s, gRPC {span(ratios('ours-grpc'), 2)}, {_spot_checks(sources, SERVED_STEPS_CHAR)} to "
        "`runtime.Stream`."
    )


def serve(sources: Sources) -> str:
    rows = sources.space_tables(SERVE, "transport", SERVE_COLUMNS)[0]
    names = {"baseline-http": "baseline (FastAPI, HTTP)", "ours-http": "`rnn serve`, HTTP"}
    names["ours-grpc"] = "`rnn serve`, gRPC streaming"
    body = [
        [
            names[r["transport"]],
            thousands(number(r["steps"])),
            r["p99"],
            "1.00" if r["x_thru"] == "-" else f"**{r['x_thru']}**",
            r["batch"],
        ]
        for r in rows
        if r["conc"] == "256" and r["delay"] in ("0", "-") and r["transport"] in names
    ]
    header = ["256 concurrent sequences", "steps/s", "p99 ms", "x baseline throughput", "mean batch"]
    verdicts = sources.lines(SERVE, "target ")
    return (
        table(header, body)
        + "\n\nThe issue's targets at 256 sequences, as the run judged them:\n\n"
        + targets(verdicts)
        + f"\n\nOutputs are {_spot_checks(sources, SERVE)} to `runtime.Stream`."
    )


# ---- docs/ray-serve-bench.txt: benchmarks/ray_serve.py -------------------------------------------

RAY_SERVE = "docs/ray-serve-bench.txt"


def ray_serve(sources: Sources) -> str:
    rows = sources.pipe_tables(RAY_SERVE)[0]
    columns = ["server", "steps/s", "x 1 replica", "p50 ms", "p99 ms", "busy cores"]
    body = [[r[c] for c in columns] for r in rows]
    one_process = next(r for r in rows if "one process" in r["server"])
    one_replica = next(r for r in rows if "1 replica" in r["server"])
    cost = number(one_replica["steps/s"]) / number(one_process["steps/s"])
    return table(columns, body) + (
        f"\n\nOne replica on Ray serves {x(cost, 2)} the steps/s of the one-process server here."
    )


# ---- docs/bulk-bench.txt: benchmarks/bulk.py -----------------------------------------------------

BULK = "docs/bulk-bench.txt"
BULK_HEAPS = ("driver heap", "actor heap", "write-task heap", "other ray:: heap")


def bulk(sources: Sources) -> str:
    rows = sources.pipe_tables(BULK)[0]
    columns = ["series x 100", "kind", "way", "s", "series/s", "x loop", "driver heap", "actor heap", "object store"]
    header = ["series x 100 steps", "kind", "way", "seconds", "series/s", "x loop"]
    header += ["driver MiB", "model actor MiB", "object store MiB"]
    heaps = [number(r[c]) for r in rows for c in BULK_HEAPS if r[c] != "-"]
    ray = [r for r in rows if r["way"].startswith("Ray")]
    smallest, largest = ray[0]["series x 100"], ray[-1]["series x 100"]

    def ratios(size: str) -> list[float]:
        return [number(r["x loop"]) for r in ray if r["series x 100"] == size]

    return table(header, [[r[c] for c in columns] for r in rows]) + (
        f"\n\nEvery process's heap stays at {span(heaps, 0, ' MiB')} from {smallest} to {largest} series. "
        f"On one 2-core machine Ray Data is slower than the plain loop ({span(ratios(smallest), 2)} at "
        f"{smallest}, {span(ratios(largest), 2)} at {largest}: the model is tiny and Ray's fixed and "
        "per-block costs dominate); use it where the data or compute outgrow one machine."
    )


def bulk_long(sources: Sources) -> str:
    match = sources.search(BULK, r"= ([\d,]+) series/s \(the wide layout: ~([\d,]+) series/s")
    return f"100,000 series x 100 points in long form, predict: {match[1]} series/s against ~{match[2]} wide."


# ---- docs/trainers.json: benchmarks/trainers.py --json -------------------------------------------

TRAINERS = "docs/trainers.json"
MSE, ROLLOUT = "teacher_forced_mse", "rollout_max_error"


def _trainer_rows(sources: Sources) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for row in sources.json(TRAINERS)["rows"]:
        rows.setdefault(row["trainer"], []).append(row)
    for trainer in ("reference", "bptt"):
        if trainer not in rows or rows[trainer][0]["seed"] != 0:
            raise FigureError(f"source {TRAINERS} has no seed-0 row of the {trainer} trainer")
    return rows


def sci(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}e}".replace("e-0", "e-")


def trainers(sources: Sources) -> str:
    rows = _trainer_rows(sources)
    body = []
    for trainer, runs in rows.items():
        mse, err = [r[MSE] for r in runs], [r[ROLLOUT] for r in runs]
        body.append(
            [
                trainer,
                sci(mse[0]),
                f"{err[0]:.3g}",
                f"{sci(statistics.median(mse))} ({sci(min(mse))} - {sci(max(mse))})",
                f"{statistics.median(err):.3g} ({min(err):.3g} - {max(err):.3g})",
            ]
        )
    last = len(next(iter(rows.values()))) - 1
    header = ["trainer", "seed 0 (default) MSE", "seed 0 rollout max err", f"MSE over seeds 0-{last} (median, range)"]
    header.append(f"rollout max err over seeds 0-{last} (median, range)")
    machine = sources.json(TRAINERS).get("machine", "")
    return f"Machine: {machine} (`{TRAINERS}`).\n\n" + table(header, body)


def trainers_demo(sources: Sources) -> str:
    rows = _trainer_rows(sources)
    reference, bptt = rows["reference"][0], rows["bptt"][0]
    return (
        "On the left is the picture the tutorial is known for: the reference trainer's actual and "
        f"one-step teacher-forced points (seed 0, teacher-forced MSE {sci(reference[MSE])}). That trainer's "
        f"closed loop does not hold (max error {reference[ROLLOUT]:.3g} over 100 steps), so it is not drawn. "
        "On the right, the same cell trained by the stable `bptt` trainer (trained beside it by the demo, "
        f"not saved) continues the wave 100 steps past the data with max error {bptt[ROLLOUT]:.2g} "
        f'(`benchmarks/trainers.py`, `{TRAINERS}`; the section "Trainers" has every seed).'
    )


# ---- the checks `rnn verify` runs: from the verifier's constants ----------------------------------


def parity_checks(_: Sources) -> str:
    from export import verify_cases as cases
    from export import verify_report as report
    from export import verify_sampling as sampled
    from export.sampling_reference import TIE_ULPS

    def batches(values: tuple[int, ...]) -> str:
        return ", ".join(map(str, values))

    sequences = "; ".join(f"batch {b} T={t}" for t, b in cases.SEQUENCES_RANDOM)
    short_steps, short_batch = cases.SHORT_SEQUENCE
    rollout = cases.VERIFY_ROLLOUT_STEPS
    kinds = f"greedy, temperature {sampled.SAMPLING_TEMPERATURE:g}, top-k {sampled.SAMPLING_TOP_K}, "
    kinds += f"top-p {sampled.SAMPLING_TOP_P:g}"
    wide = sampled.SAMPLING_BATCHES[1:]
    rows = [
        [
            "single step, random inputs and states",
            f"batch {batches(cases.STEP_BATCHES)}",
            f"`STEP_ATOL` {sci(report.STEP_ATOL, 0)}",
        ],
        [
            "teacher-forced sequence",
            f"the training series (a model of one one-value input); random inputs, {sequences}; "
            f"{short_steps} step at batch {short_batch} (every sequence form's shortest call)",
            f"`SEQUENCE_ATOL` {sci(report.SEQUENCE_ATOL, 0)}",
        ],
        [
            "closed-loop rollout (an output fed back as it is)",
            f"{rollout} steps from the training series' first point; {rollout} steps from "
            f"{batches(cases.ROLLOUT_BATCHES)} random starts",
            f"`ROLLOUT_ATOL` {sci(report.ROLLOUT_ATOL, 0)}",
        ],
        [
            "token inputs",
            f"every id of each vocabulary: one step at batch V (in parts of at most {cases.MAX_COVERAGE_STEP_BATCH}), "
            f"and a teacher-forced sequence of up to {cases.COVERAGE_BATCH} streams over ceil(V / "
            f"{cases.COVERAGE_BATCH}) steps",
            "`STEP_ATOL`, `SEQUENCE_ATOL`",
        ],
        [
            "your data (`--data`)",
            f"teacher-forced over it, and a {rollout}-step rollout from its first value where the loop is closed",
            "`SEQUENCE_ATOL`, `ROLLOUT_ATOL`",
        ],
        [
            "sampled rollouts (an output sampled into a token input)",
            f"{kinds} at batch {sampled.SAMPLING_BATCHES[0]}, temperature at batch {batches(wide)}; "
            f"{sampled.SAMPLING_STEPS} tokens each, against eager fed the same uniforms",
            f"token for token (a parting within {TIE_ULPS} float32 ulps of a boundary is a tie, listed)",
        ],
        [
            "divergence horizon (reported, not a pass/fail check)",
            f"a {report.HORIZON_STEPS}-step rollout from the data's first point against float64 eager",
            f"the first step off by more than {sci(report.DIVERGENCE_ATOL, 0)}",
        ],
    ]
    return table(["check", "sizes", "tolerance (max abs)"], rows)


# ---- the blocks ----------------------------------------------------------------------------------


# Each block's name and the function that renders it from the sources.
# ---- docs/hostile-bench.txt: benchmarks/hostile.py ----------------------------------------------

HOSTILE = "docs/hostile-bench.txt"
HOSTILE_ROW = re.compile(r"^(?P<attack>[a-z] [\w-]+) +\|")


def hostile(sources: Sources) -> str:
    """Each attack's liveness p99 and the server's peak memory over every run in the file."""
    runs = sources.lines(HOSTILE, "run at ")
    live: dict[str, list[float]] = {}
    peak: dict[str, list[float]] = {}
    up: dict[str, set[str]] = {}
    for line in sources.text(HOSTILE).splitlines():
        match = HOSTILE_ROW.match(line)
        if match is None:
            continue
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) != 8:
            raise FigureError(f"source {HOSTILE}: a row of {len(cells)} cells, 8 expected: {line}")
        attack = match["attack"]
        live.setdefault(attack, []).append(number(cells[2].split("/")[1]))
        peak.setdefault(attack, []).append(number(cells[5].split("/")[1].split()[0]))
        up.setdefault(attack, set()).add(cells[7])
    if not live:
        raise FigureError(f"source {HOSTILE} holds no attack rows")
    header = ["attack (one at a time, fresh server)", "liveness p99 ms", "server peak RSS MiB", "server after"]
    body = [[a, span(live[a], 1, ""), span(peak[a], 0, ""), "/".join(sorted(up[a]))] for a in live]
    verdicts = sources.lines(HOSTILE, "target ")[-2:]
    machine = sources.lines(HOSTILE, "machine: ")[0].removeprefix("machine: ").split("; Python")[0]
    return (
        table(header, body)
        + f"\n\nOver {len(runs)} runs ({machine}; a normal client sent liveness and a one-step infer during "
        "every attack). The last run's verdicts:\n\n" + "\n".join(f"- {line}" for line in verdicts)
    )


FIGURES: dict[str, Callable[[Sources], str]] = {
    "trainers-demo": trainers_demo,
    "parity-checks": parity_checks,
    "fused-cells": fused_cells,
    "gpu": gpu,
    "bench-calls": bench_calls,
    "bench-one-call": bench_one_call,
    "bench-streams": bench_streams,
    "bench-cold-start": bench_cold_start,
    "sampling": sampling,
    "token-streaming": token_streaming,
    "served-steps-char": served_steps_char,
    "serve": serve,
    "ray-serve": ray_serve,
    "bulk-long": bulk_long,
    "bulk": bulk,
    "trainers": trainers,
    "hostile": hostile,
}


def render(name: str, sources: Sources) -> str:
    """The block's body: blank lines around the rendered text (markdown needs them by the comments)."""
    try:
        return "\n" + FIGURES[name](sources).strip() + "\n\n"
    except FigureError as error:
        raise FigureError(f"figure {name}: {error}") from None


def problems(readme: str, root: Path = ROOT) -> tuple[str, list[str]]:
    """The README with every block rendered, and what is wrong with the given one (empty: up to date)."""
    sources, found, seen = Sources(root), [], []

    def rewrite(match: re.Match) -> str:
        name = match["name"]
        seen.append(name)
        if name not in FIGURES:
            found.append(f"block {name}: no such figure (FIGURES in benchmarks/readme_figures.py)")
            return match[0]
        try:
            body = render(name, sources)
        except FigureError as error:
            found.append(str(error))
            return match[0]
        if body != match["body"]:
            found.append(f"block {name}: {STALE}")
        return match[1] + body + match[4]

    updated = BLOCK.sub(rewrite, readme)
    found += [f"block {name}: appears {seen.count(name)} times" for name in FIGURES if seen.count(name) > 1]
    found += [f"figure {name}: no block in the README" for name in FIGURES if name not in seen]
    return updated, found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="exit 1 naming every stale block")
    action.add_argument("--write", action="store_true", help="rewrite every block from its sources")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout (README.md and docs/)")
    args = parser.parse_args(argv)
    path = args.root / README_NAME
    readme = path.read_text(encoding="utf-8")
    updated, found = problems(readme, args.root)
    if args.write:  # every block that renders is rewritten; one that does not is kept and named
        if updated != readme:
            path.write_text(updated, encoding="utf-8")
        found = [line for line in found if not line.endswith(STALE)]
    for line in found:
        print(f"readme_figures: {line}", file=sys.stderr)
    if not found and args.check:
        print(f"readme_figures: {len(FIGURES)} blocks up to date")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

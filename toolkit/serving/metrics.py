"""What `rnn serve` counts, in Prometheus' text format at ``/metrics`` (prometheus-client). Each
server has its own registry, so several servers (or tests) in one process do not share counts.

The counts are kept in plain Python numbers by the server's event loop (every request and batch
is counted there, on one thread; a sampled generation's ticks, tokens, first token and end by its
model's scheduler thread, the only writer of those series) and handed to prometheus-client's exposition as metric
families when scraped: an observation costs a bisect and two additions instead of the client
library's locked child objects (about 3 us each, several per request on the hot path).

The same calls keep what Triton's statistics extension reports per served name (`Stats`, read by
`statistics`): what the Prometheus series already hold is read from them (successes and their
time from ``rnn_request_seconds``, failures from ``rnn_request_failures``), the rest is kept beside
them (inferences, executions by batch size, queue and compute time, failures' time, last request).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TIME_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds, self.counts, self.sum = bounds, [0] * (len(bounds) + 1), 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le-buckets: value <= bound
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        total, buckets = 0, []
        for bound, count in zip((*map(str, map(float, self.bounds)), "+Inf"), self.counts):
            total += count
            buckets.append((bound, total))
        return buckets


class Stats:
    """What Triton's statistics extension reports of one served name that the Prometheus series
    do not hold: inferences (batch items of successful requests), executions (model runs; by batch
    size: [runs, seconds]), queue and compute time of the requests they ran ([count, seconds]),
    failed requests' time and the last request's time (ms since the epoch)."""

    __slots__ = ("batches", "compute", "executions", "failed_seconds", "items", "last_ms", "queue")

    def __init__(self) -> None:
        self.items = self.executions = self.last_ms = 0
        self.failed_seconds = 0.0
        self.queue, self.compute = [0, 0.0], [0, 0.0]
        self.batches: dict[int, list] = {}

    def executed(self, size: int, seconds: float, requests: int, queued: float | None) -> None:
        """One model run of ``size`` batch items for ``requests`` requests (each is counted with the
        run's whole time, as Triton does), which waited ``queued`` seconds in all before it (None:
        not known, not counted)."""
        self.executions += 1
        batch = self.batches.get(size)
        if batch is None:
            batch = self.batches[size] = [0, 0.0]
        batch[0] += 1
        batch[1] += seconds
        self.compute[0] += requests
        self.compute[1] += seconds * requests
        if queued is not None:
            self.queue[0] += requests
            self.queue[1] += queued


# name -> (kind, help, label names, histogram bounds)
FAMILIES: dict[str, tuple[str, str, tuple[str, ...], tuple[float, ...]]] = {
    "rnn_requests": ("counter", "Inference requests answered, by model and protocol", ("model", "protocol"), ()),
    "rnn_request_failures": (
        "counter",
        "Inference requests that failed, by HTTP status",
        ("model", "protocol", "status"),
        (),
    ),
    "rnn_request_seconds": ("histogram", "Time from a decoded request to its answer", ("model",), TIME_BUCKETS),
    "rnn_batch_size": ("histogram", "Sequence steps per batched run", ("model",), BATCH_BUCKETS),
    "rnn_queue_seconds": ("histogram", "Time the oldest step of a batched run waited for it", ("model",), TIME_BUCKETS),
    "rnn_compute_seconds": (
        "histogram",
        "Time of one onnxruntime run (a batched tick or a request's run)",
        ("model",),
        TIME_BUCKETS,
    ),
    "rnn_live_sequences": ("gauge", "Sequences holding state on the server", ("model",), ()),
    "rnn_sequences_expired": ("counter", "Sequences ended by the idle timeout", ("model",), ()),
    "rnn_generations_started": ("counter", "Sampled generations started (NAME-generate)", ("model",), ()),
    "rnn_generations_finished": (
        "counter",
        "Sampled generations ended, by why: length, stop, cancelled (the client went away) or error",
        ("model", "reason"),
        (),
    ),
    "rnn_generated_tokens": ("counter", "Tokens drawn by sampled generations", ("model",), ()),
    "rnn_generation_tick_size": (
        "histogram",
        "Generations stepped together in one tick of the generation scheduler",
        ("model",),
        BATCH_BUCKETS,
    ),
    "rnn_time_to_first_token_seconds": (
        "histogram",
        "Time from a sampled generation's start to its first token drawn",
        ("model",),
        TIME_BUCKETS,
    ),
}


class Metrics:
    def __init__(self) -> None:
        self._values: dict[str, dict[tuple[str, ...], Any]] = {name: {} for name in FAMILIES}
        self.stats: dict[str, Stats] = {}  # served name -> what the statistics extension adds
        self.registry = CollectorRegistry()
        self.registry.register(self)  # prometheus-client calls collect() when it scrapes

    def _histogram(self, name: str, labels: tuple[str, ...]) -> _Histogram:
        series = self._values[name]
        histogram = series.get(labels)
        if histogram is None:
            histogram = series[labels] = _Histogram(FAMILIES[name][3])
        return histogram

    def _add(self, name: str, labels: tuple[str, ...], amount: float = 1) -> None:
        series = self._values[name]
        series[labels] = series.get(labels, 0) + amount

    def _stats(self, model: str) -> Stats:
        stats = self.stats.get(model)
        if stats is None:
            stats = self.stats[model] = Stats()
        return stats

    # ---- what the server records ----

    def request(self, model: str, protocol: str, status: int, seconds: float, items: int = 1) -> None:
        """One answered request of served name ``model`` ("": an unknown name) of ``items`` batch items."""
        self._add("rnn_requests", (model, protocol))
        stats = self._stats(model) if model else None
        if stats is not None:
            stats.last_ms = time.time_ns() // 1_000_000
        if status != 200:
            self._add("rnn_request_failures", (model, protocol, str(status)))
            if stats is not None:
                stats.failed_seconds += seconds
        else:
            self._histogram("rnn_request_seconds", (model,)).observe(seconds)
            if stats is not None:
                stats.items += items

    def batch(self, model: str, size: int, seconds: float, waited: float, queued: float | None = None) -> None:
        """One batched run of ``size`` sequence steps of served name ``model``; ``waited``: how long
        its oldest step queued; ``queued``: how long its steps queued in all (None: not known, the
        statistics' queue leaves the run out)."""
        self._histogram("rnn_batch_size", (model,)).observe(size)
        self._histogram("rnn_compute_seconds", (model,)).observe(seconds)
        self._histogram("rnn_queue_seconds", (model,)).observe(waited)
        self._stats(model).executed(size, seconds, size, queued)

    def compute(self, model: str, seconds: float, size: int = 1) -> None:
        """One request's own run (not batched with others) of ``size`` batch items of served name ``model``."""
        self._histogram("rnn_compute_seconds", (model,)).observe(seconds)
        self._stats(model).executed(size, seconds, 1, 0.0)

    def live_sequences(self, model: str, count: int) -> None:
        self._values["rnn_live_sequences"][(model,)] = count

    def expired(self, model: str, count: int) -> None:
        self._add("rnn_sequences_expired", (model,), count)

    # sampled generations: `started` on the event loop, the rest in the model's scheduler thread
    # (one writer per series; a dict's item assignment is atomic)

    def generation_started(self, model: str) -> None:
        self._add("rnn_generations_started", (model,))

    def generation_finished(self, model: str, reason: str) -> None:
        self._add("rnn_generations_finished", (model, reason))

    def generation_tick(self, model: str, size: int, tokens: int) -> None:
        """One tick of ``size`` generations that drew ``tokens`` tokens."""
        self._histogram("rnn_generation_tick_size", (model,)).observe(size)
        self._add("rnn_generated_tokens", (model,), tokens)

    def first_token(self, model: str, seconds: float) -> None:
        self._histogram("rnn_time_to_first_token_seconds", (model,)).observe(seconds)

    # ---- exposition ----

    def collect(self) -> Iterator[Any]:
        for name, (kind, text, label_names, _) in FAMILIES.items():
            series = list(self._values[name].items())  # a copy: the loop may add a series meanwhile
            if kind == "counter":
                family = CounterMetricFamily(name, text, labels=label_names)
                for labels, value in series:
                    family.add_metric(labels, value)
            elif kind == "gauge":
                family = GaugeMetricFamily(name, text, labels=label_names)
                for labels, value in series:
                    family.add_metric(labels, value)
            else:
                family = HistogramMetricFamily(name, text, labels=label_names)
                for labels, histogram in series:
                    family.add_metric(labels, histogram.cumulative(), histogram.sum)
            yield family

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def successes(self, model: str) -> tuple[int, float]:
        """(count, seconds) of the successful requests of served name ``model``."""
        histogram = self._values["rnn_request_seconds"].get((model,))
        return (sum(histogram.counts), histogram.sum) if histogram is not None else (0, 0.0)

    def failures(self, model: str) -> int:
        """How many requests of served name ``model`` failed (every protocol and status)."""
        return sum(count for labels, count in list(self._values["rnn_request_failures"].items()) if labels[0] == model)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's value (for tests and the benchmark), e.g. ``value("rnn_batch_size_sum", {"model": "m"})``."""
        return self.registry.get_sample_value(name, labels or {})

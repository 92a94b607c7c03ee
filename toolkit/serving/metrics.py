"""What `rnn serve` counts, in Prometheus' text format at ``/metrics`` (prometheus-client). Each
server has its own registry, so several servers (or tests) in one process do not share counts.

The counts are kept in plain Python numbers by the server's event loop (every request and batch
is counted there, on one thread; a sampled generation's ticks, tokens, first token and end by its
model's scheduler thread, the only writer of those series) and handed to prometheus-client's exposition as metric
families when scraped: an observation costs a bisect and two additions instead of the client
library's locked child objects (about 3 us each, several per request on the hot path).
"""

from __future__ import annotations

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

    # ---- what the server records ----

    def request(self, model: str, protocol: str, status: int, seconds: float) -> None:
        self._add("rnn_requests", (model, protocol))
        if status != 200:
            self._add("rnn_request_failures", (model, protocol, str(status)))
        else:
            self._histogram("rnn_request_seconds", (model,)).observe(seconds)

    def batch(self, model: str, size: int, seconds: float, waited: float) -> None:
        """One batched run of ``size`` steps; ``waited``: how long its oldest step queued."""
        self._histogram("rnn_batch_size", (model,)).observe(size)
        self._histogram("rnn_compute_seconds", (model,)).observe(seconds)
        self._histogram("rnn_queue_seconds", (model,)).observe(waited)

    def compute(self, model: str, seconds: float) -> None:
        self._histogram("rnn_compute_seconds", (model,)).observe(seconds)

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

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's value (for tests and the benchmark), e.g. ``value("rnn_batch_size_sum", {"model": "m"})``."""
        return self.registry.get_sample_value(name, labels or {})

"""What `rnn serve` counts, in Prometheus' text format at ``/metrics`` (prometheus-client). Each
server has its own registry, so several servers (or tests) in one process do not share counts."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TIME_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._requests = Counter(
            "rnn_requests",
            "Inference requests answered, by model, protocol and status",
            ["model", "protocol"],
            registry=r,
        )
        self._failures = Counter(
            "rnn_request_failures",
            "Inference requests that failed, by HTTP status",
            ["model", "protocol", "status"],
            registry=r,
        )
        self._latency = Histogram(
            "rnn_request_seconds",
            "Time from a decoded request to its answer",
            ["model"],
            buckets=TIME_BUCKETS,
            registry=r,
        )
        self._batch = Histogram(
            "rnn_batch_size", "Sequence steps per batched run", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self._queue = Histogram(
            "rnn_queue_seconds",
            "Time the oldest step of a batched run waited for it",
            ["model"],
            buckets=TIME_BUCKETS,
            registry=r,
        )
        self._compute = Histogram(
            "rnn_compute_seconds",
            "Time of one onnxruntime run (a batched tick or a request's run)",
            ["model"],
            buckets=TIME_BUCKETS,
            registry=r,
        )
        self._live = Gauge("rnn_live_sequences", "Sequences holding state on the server", ["model"], registry=r)
        self._expired = Counter("rnn_sequences_expired", "Sequences ended by the idle timeout", ["model"], registry=r)

        self._children: dict[tuple, Any] = {}  # labels() looks its child up under a lock: once per label set

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, model: str, protocol: str, status: int, seconds: float) -> None:
        self._child(self._requests, model, protocol).inc()
        if status != 200:
            self._child(self._failures, model, protocol, str(status)).inc()
        else:
            self._child(self._latency, model).observe(seconds)

    def batch(self, model: str, size: int, seconds: float, waited: float) -> None:
        """One batched run of ``size`` steps; ``waited``: how long its oldest step queued (one
        observation per run: a histogram observation costs microseconds, a run may hold 1000 steps)."""
        self._child(self._batch, model).observe(size)
        self._child(self._compute, model).observe(seconds)
        self._child(self._queue, model).observe(waited)

    def compute(self, model: str, seconds: float) -> None:
        self._child(self._compute, model).observe(seconds)

    def live_sequences(self, model: str, count: int) -> None:
        self._live.labels(model).set(count)

    def expired(self, model: str, count: int) -> None:
        self._expired.labels(model).inc(count)

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's value (for tests and the benchmark), e.g. ``value("rnn_batch_size_sum", {"model": "m"})``."""
        return self.registry.get_sample_value(name, labels or {})

"""What `rnn serve` counts, in Prometheus' text format at ``/metrics`` (prometheus-client). Each
server has its own registry, so several servers (or tests) in one process do not share counts."""

from __future__ import annotations

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
            "Time a sequence step waited for its batched run",
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

    def request(self, model: str, protocol: str, status: int, seconds: float) -> None:
        self._requests.labels(model, protocol).inc()
        if status != 200:
            self._failures.labels(model, protocol, str(status)).inc()
        else:
            self._latency.labels(model).observe(seconds)

    def batch(self, model: str, size: int, seconds: float, waits: list[float]) -> None:
        self._batch.labels(model).observe(size)
        self._compute.labels(model).observe(seconds)
        queue = self._queue.labels(model)
        for wait in waits:
            queue.observe(wait)

    def compute(self, model: str, seconds: float) -> None:
        self._compute.labels(model).observe(seconds)

    def live_sequences(self, model: str, count: int) -> None:
        self._live.labels(model).set(count)

    def expired(self, model: str, count: int) -> None:
        self._expired.labels(model).inc(count)

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's value (for tests and the benchmark), e.g. ``value("rnn_batch_size_sum", {"model": "m"})``."""
        return self.registry.get_sample_value(name, labels or {})

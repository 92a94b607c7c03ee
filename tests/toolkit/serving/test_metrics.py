"""The server's metrics as Prometheus scrapes them: counters, gauges and le-bucket histograms."""

from __future__ import annotations

import pytest

pytest.importorskip("prometheus_client", reason="the serve extra is not installed")

from toolkit.serving.metrics import BATCH_BUCKETS, Metrics  # noqa: E402


def test_counts_gauges_and_histograms_as_prometheus_reads_them():
    metrics = Metrics()
    metrics.request("m", "http", 200, 3e-5)
    metrics.request("m", "grpc", 200, 1e-3)
    metrics.request("m", "http", 400, 0.0)
    for size in (1, 2, 3, 64, 2000):
        metrics.batch("m", size, 1e-5, 0.0)
    metrics.live_sequences("m", 5)
    metrics.live_sequences("m", 4)
    metrics.expired("m", 2)
    value = metrics.value
    assert value("rnn_requests_total", {"model": "m", "protocol": "http"}) == 2
    assert value("rnn_request_failures_total", {"model": "m", "protocol": "http", "status": "400"}) == 1
    assert value("rnn_request_seconds_count", {"model": "m"}) == 2  # failures are not timed
    assert value("rnn_batch_size_count", {"model": "m"}) == 5 and value("rnn_batch_size_sum", {"model": "m"}) == 2070
    # le buckets are cumulative and a value equal to a bound counts in that bound's bucket
    assert value("rnn_batch_size_bucket", {"model": "m", "le": "1.0"}) == 1
    assert value("rnn_batch_size_bucket", {"model": "m", "le": "2.0"}) == 2
    assert value("rnn_batch_size_bucket", {"model": "m", "le": "4.0"}) == 3
    assert value("rnn_batch_size_bucket", {"model": "m", "le": "64.0"}) == 4
    assert value("rnn_batch_size_bucket", {"model": "m", "le": f"{float(BATCH_BUCKETS[-1])}"}) == 4
    assert value("rnn_batch_size_bucket", {"model": "m", "le": "+Inf"}) == 5
    assert value("rnn_live_sequences", {"model": "m"}) == 4
    assert value("rnn_sequences_expired_total", {"model": "m"}) == 2
    text = metrics.text().decode()
    assert "# TYPE rnn_batch_size histogram" in text and 'rnn_live_sequences{model="m"} 4.0' in text

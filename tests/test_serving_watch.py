"""What the Deploy tab plots live: a deployment's /metrics read as Prometheus text (the serving application's own
metrics), samples compared a minute apart, and the page's two sources (live and stored) made plot frames."""

from __future__ import annotations

import http.server
import threading

import pytest

from studio.serving.metrics import ServingMetrics
from studio.serving.watch import LiveMetrics, WatchError, between, fetch, metrics_url, parse_metrics, \
    quantile


def served(metrics: ServingMetrics, requests: list[tuple[str, int, float]], hits: int = 0, misses: int = 0) -> None:
    """``requests``: (route, status, seconds) answered by model "base"."""
    for route, status, seconds in requests:
        metrics.answered("base", route, status, seconds, None if status < 400 else "invalid_request_error")
    for _ in range(hits):
        metrics.cache("base", "/v1/completions", hit=True)
    for _ in range(misses):
        metrics.cache("base", "/v1/completions", hit=False)


def test_a_sample_sums_the_counters_and_leaves_out_the_watching_itself():
    metrics = ServingMetrics()
    served(metrics, [("/v1/completions", 200, 0.02)] * 3 + [("/v1/chat/completions", 400, 0.001),
                                                           ("/metrics", 200, 0.001)], hits=2, misses=1)
    metrics.batch("base", size=3, tokens=24, seconds=0.5)
    sample = parse_metrics(metrics.text().decode(), at=100.0)
    assert (sample.requests, sample.errors, sample.cache_hits, sample.cache_misses) == (4, 1, 2, 1)
    assert sample.batches == 1
    assert sample.latency[-1] == (float("inf"), 4)  # cumulative buckets, the /metrics call left out
    assert dict(sample.latency)[0.025] == 4 and dict(sample.latency)[0.01] == 1


def test_quantiles_are_interpolated_inside_their_bucket_as_prometheus_does():
    buckets = ((0.1, 0.0), (0.2, 10.0), (0.5, 20.0), (float("inf"), 20.0))
    assert quantile(0.5, buckets) == pytest.approx(0.2)
    assert quantile(0.25, buckets) == pytest.approx(0.15)
    assert quantile(0.75, buckets) == pytest.approx(0.35)
    assert quantile(0.5, ((1.0, 0.0), (float("inf"), 0.0))) is None
    assert quantile(0.99, ((1.0, 1.0), (float("inf"), 5.0))) == 1.0  # in the +Inf bucket: the highest bound


def test_between_two_samples_gives_the_rates_of_what_happened_in_between():
    metrics = ServingMetrics()
    served(metrics, [("/v1/completions", 200, 3.0)] * 5)
    old = parse_metrics(metrics.text().decode(), at=0.0)
    served(metrics, [("/v1/completions", 200, 0.02)] * 9 + [("/v1/completions", 429, 0.001)], hits=3, misses=1)
    new = parse_metrics(metrics.text().decode(), at=30.0)
    point = between(old, new)
    assert point["requests_per_minute"] == pytest.approx(20.0)  # 10 in 30 s
    assert point["error_rate"] == pytest.approx(0.1) and point["cache_hit_rate"] == pytest.approx(0.75)
    assert 10 < point["p50_ms"] <= 25 and point["p95_ms"] <= 25  # the 3 s requests were before: not in these
    quiet = between(new, parse_metrics(metrics.text().decode(), at=60.0))
    assert quiet["requests_per_minute"] == 0 and quiet["p50_ms"] is None and quiet["error_rate"] is None


def test_metrics_are_read_on_loopback_when_the_deployment_listens_there():
    assert metrics_url({"url": None, "host": "127.0.0.1"}) is None  # not answering yet
    assert metrics_url({"url": "http://127.0.0.1:8123", "host": "127.0.0.1"}) == "http://127.0.0.1:8123/metrics"
    assert metrics_url({"url": "http://box.lan:8123", "host": "0.0.0.0"}) == "http://127.0.0.1:8123/metrics"
    assert metrics_url({"url": "http://10.0.0.5:8123", "host": "10.0.0.5"}) == "http://10.0.0.5:8123/metrics"


class MetricsServer:
    """A stand-in deployment that answers /metrics with what ``metrics`` holds (or ``status``)."""

    def __init__(self, metrics: ServingMetrics):
        outer = self
        self.metrics, self.status = metrics, 200

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                body = outer.metrics.text() if outer.status == 200 else b"no"
                self.send_response(outer.status)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_live_metrics_follow_the_deployment_and_start_over_when_it_restarts(monkeypatch):
    import studio.serving.watch as watch

    metrics = ServingMetrics()
    stand_in = MetricsServer(metrics)
    clock = [1000.0]
    monkeypatch.setattr(watch.time, "time", lambda: clock[0])
    live = LiveMetrics(window=60, min_interval=1)
    try:
        live.sample(7, stand_in.url)
        for minute in range(1, 4):  # 30 requests a minute, sampled every 30 s
            served(metrics, [("/v1/completions", 200, 0.02)] * 15)
            clock[0] += 30
            live.sample(7, stand_in.url)
            live.sample(7, stand_in.url)  # a second page asking at once: not read again
            served(metrics, [("/v1/completions", 200, 0.02)] * 15)
            clock[0] += 30
            live.sample(7, stand_in.url)
        points = live.series(7)
        assert len(points) == 6 and [p["time"] for p in points] == [1000.0 + 30 * n for n in range(1, 7)]
        assert all(p["requests_per_minute"] == pytest.approx(30.0) for p in points)
        assert live.latest(7)[0].requests == 90 and live.latest(7)[1] is None

        stand_in.status = 500
        clock[0] += 5
        live.sample(7, stand_in.url)
        assert live.latest(7)[0].requests == 90 and "answered HTTP 500" in live.latest(7)[1]

        stand_in.status, stand_in.metrics = 200, ServingMetrics()  # restarted: its counters start again
        clock[0] += 5
        live.sample(7, stand_in.url)
        latest, error = live.latest(7)
        assert live.series(7) == [] and latest.requests == 0 and latest.at == clock[0] and error is None
    finally:
        stand_in.close()


def test_a_deployment_that_does_not_answer_is_said_so():
    with pytest.raises(WatchError, match="did not answer"):
        fetch("http://127.0.0.1:9/metrics", timeout=1)

"""A deployment's Prometheus metrics, on a registry of its own (so two applications in one process, as in the tests,
count apart). The Deploy tab plots them; ``bench/serve.py`` reads the batch counter. Names:

- ``studio_serving_requests_total{model,route,status}``: every request answered or refused
- ``studio_serving_errors_total{model,route,type}``: the refused and failed ones, by OpenAI error type
- ``studio_serving_request_seconds{model,route}``: latency histogram (to the last byte for a stream)
- ``studio_serving_generated_tokens_total{model}`` and ``studio_serving_tokens_per_second{model}`` (the last batch's)
- ``studio_serving_cache_hits_total{model,route}``, ``studio_serving_cache_misses_total{model,route}``
- ``studio_serving_queue_length``: sequences waiting for a text batch
- ``studio_serving_batches_total{model}``, ``studio_serving_batch_size{model}``: text batches run, and their sizes
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServingMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("studio_serving_requests", "Requests, by served model, route and HTTP status",
                                ["model", "route", "status"], registry=r)
        self.errors = Counter("studio_serving_errors", "Refused or failed requests, by OpenAI error type",
                              ["model", "route", "type"], registry=r)
        self.latency = Histogram("studio_serving_request_seconds", "Request latency (seconds)", ["model", "route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("studio_serving_generated_tokens", "Tokens generated", ["model"], registry=r)
        self.tokens_per_second = Gauge("studio_serving_tokens_per_second", "Tokens per second of the last batch",
                                       ["model"], registry=r)
        self.cache_hits = Counter("studio_serving_cache_hits", "Seeded requests answered from the response cache",
                                  ["model", "route"], registry=r)
        self.cache_misses = Counter("studio_serving_cache_misses", "Seeded requests the cache could not answer",
                                    ["model", "route"], registry=r)
        self.queue_length = Gauge("studio_serving_queue_length", "Sequences waiting for a text batch", registry=r)
        self.batches = Counter("studio_serving_batches", "Text batches run", ["model"], registry=r)
        self.batch_size = Histogram("studio_serving_batch_size", "Sequences per text batch", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)

    def answered(self, model: str, route: str, status: int, seconds: float, error_type: str | None = None) -> None:
        self.requests.labels(model, route, str(status)).inc()
        self.latency.labels(model, route).observe(seconds)
        if status >= 400:
            self.errors.labels(model, route, error_type or "server_error").inc()

    def batch(self, model: str, size: int, tokens: int, seconds: float) -> None:
        self.batches.labels(model).inc()
        self.batch_size.labels(model).observe(size)
        self.tokens.labels(model).inc(tokens)
        if seconds > 0:
            self.tokens_per_second.labels(model).set(tokens / seconds)

    def cache(self, model: str, route: str, hit: bool) -> None:
        (self.cache_hits if hit else self.cache_misses).labels(model, route).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)

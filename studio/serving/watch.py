"""A running deployment watched from the outside, as the Deploy tab shows it live: its ``/metrics`` (Prometheus text,
read with ``prometheus_client.parser``) sampled now and then, and each sample compared with the one about a minute
before it, since the counters only ever grow: requests per minute, p50/p95 latency (from the latency histogram's
buckets, as Prometheus' ``histogram_quantile`` does), error rate and cache hit rate.

The web process only makes a short HTTP call to the deployment (no model work); the samples are kept in memory for
half an hour. The metric names are the serving application's (``studio.serving.metrics``)."""

from __future__ import annotations

import math
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

REQUESTS = "studio_serving_requests"
LATENCY = "studio_serving_request_seconds"
CACHE_HITS = "studio_serving_cache_hits"
CACHE_MISSES = "studio_serving_cache_misses"
QUEUE = "studio_serving_queue_length"
BATCHES = "studio_serving_batches"
UNCOUNTED_ROUTES = {"/metrics"}  # the watching itself: counted by the deployment, but nobody's traffic
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::", ""}  # reachable here on loopback
FETCH_TIMEOUT = 2.0     # seconds: a deployment that does not answer this fast is shown as not answering
WINDOW_SECONDS = 60.0   # each point compares a sample with the one about this long before it
KEEP_SECONDS = 1800.0   # samples kept per deployment
MIN_INTERVAL = 1.0      # seconds between two samples of one deployment, however many pages ask


class WatchError(RuntimeError):
    """The deployment's metrics could not be read; the message says why, for people."""


@dataclass(frozen=True)
class Sample:
    """The deployment's counters at one moment (summed over its models and routes)."""
    at: float
    requests: float = 0.0
    errors: float = 0.0
    cache_hits: float = 0.0
    cache_misses: float = 0.0
    queue: float = 0.0
    batches: float = 0.0  # text batches run
    latency: tuple = ()  # (upper bound in seconds, requests at most that slow so far), bounds ascending, +Inf last


def metrics_url(deployment: dict) -> str | None:
    """Where this machine reads the deployment's ``/metrics``: on loopback when it listens there or on every
    interface (a keyless call is served only from loopback), else at its url. None until it has a url."""
    url = deployment.get("url")
    if not url:
        return None
    port = urlsplit(url).port
    host = str(deployment.get("host") or "")
    if host in LOOPBACK_HOSTS and port:
        return f"http://{'[::1]' if ':' in host else '127.0.0.1'}:{port}/metrics"
    return url.rstrip("/") + "/metrics"


def parse_metrics(text: str, at: float | None = None) -> Sample:
    """The ``Sample`` that Prometheus exposition ``text`` holds; a ValueError when it is not that format."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = {"requests": 0.0, "errors": 0.0, "cache_hits": 0.0, "cache_misses": 0.0, "queue": 0.0, "batches": 0.0}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("route") in UNCOUNTED_ROUTES:
                continue
            if sample.name == f"{REQUESTS}_total":
                totals["requests"] += sample.value
                if int(sample.labels.get("status", "0") or 0) >= 400:
                    totals["errors"] += sample.value
            elif sample.name == f"{CACHE_HITS}_total":
                totals["cache_hits"] += sample.value
            elif sample.name == f"{CACHE_MISSES}_total":
                totals["cache_misses"] += sample.value
            elif sample.name == QUEUE:
                totals["queue"] += sample.value
            elif sample.name == f"{BATCHES}_total":
                totals["batches"] += sample.value
            elif sample.name == f"{LATENCY}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return Sample(at=time.time() if at is None else at, latency=tuple(sorted(buckets.items())), **totals)


def fetch(url: str, timeout: float = FETCH_TIMEOUT) -> Sample:
    """One sample of the deployment's ``/metrics`` at ``url``; a WatchError saying why when there is none."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read(4 * 2**20).decode("utf-8", errors="replace")
    except urllib.error.HTTPError as error:
        raise WatchError(f"{url} answered HTTP {error.code}") from None
    except (OSError, ValueError) as error:
        raise WatchError(f"{url} did not answer ({getattr(error, 'reason', None) or error})") from None
    try:
        return parse_metrics(text)
    except ValueError as error:
        raise WatchError(f"{url} did not answer with Prometheus metrics ({error})") from None


def quantile(q: float, buckets: tuple) -> float | None:
    """The ``q`` quantile of a cumulative histogram ``(upper bound, count)``, interpolated linearly inside its
    bucket as Prometheus does (the highest finite bound when it falls in the +Inf bucket); None when empty."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank, below, below_count = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return below
            inside = count - below_count
            return bound if inside <= 0 else below + (bound - below) * (rank - below_count) / inside
        below, below_count = bound, count
    return below


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def between(old: Sample, new: Sample) -> dict:
    """What happened from ``old`` to ``new``: ``requests_per_minute``, ``p50_ms`` / ``p95_ms`` (None without
    requests), ``error_rate`` and ``cache_hit_rate`` (None when there is nothing to divide by)."""
    seconds = max(new.at - old.at, 1e-9)
    requests = new.requests - old.requests
    earlier = dict(old.latency)
    slower = tuple((bound, count - earlier.get(bound, 0.0)) for bound, count in new.latency)
    p50, p95 = quantile(0.5, slower), quantile(0.95, slower)
    hits = new.cache_hits - old.cache_hits
    return {"requests_per_minute": requests / seconds * 60, "p50_ms": None if p50 is None else p50 * 1000,
            "p95_ms": None if p95 is None else p95 * 1000, "error_rate": _share(new.errors - old.errors, requests),
            "cache_hit_rate": _share(hits, hits + new.cache_misses - old.cache_misses)}


@dataclass
class _Watched:
    url: str
    samples: deque = field(default_factory=deque)
    error: str | None = None


class LiveMetrics:
    """The samples of every deployment the pages watch, taken when a page asks (at most one a ``MIN_INTERVAL``)."""

    def __init__(self, window: float = WINDOW_SECONDS, keep: float = KEEP_SECONDS, min_interval: float = MIN_INTERVAL):
        self.window, self.keep, self.min_interval = window, keep, min_interval
        self._lock = threading.Lock()
        self._watched: dict[int, _Watched] = {}

    def sample(self, deployment_id: int, url: str, timeout: float = FETCH_TIMEOUT) -> None:
        """Reads the deployment's metrics now (unless it was read less than ``min_interval`` ago). A restarted
        deployment (its counters went down, or another url) starts a new history. Never raises: ``error`` says."""
        with self._lock:
            watched = self._watched.get(deployment_id)
            if watched is None or watched.url != url:
                watched = self._watched[deployment_id] = _Watched(url)
            if watched.samples and time.time() - watched.samples[-1].at < self.min_interval:
                return
        try:
            found, error = fetch(url, timeout), None
        except WatchError as failure:
            found, error = None, str(failure)
        with self._lock:
            watched.error = error
            if found is None:
                return
            if watched.samples and found.requests < watched.samples[-1].requests:
                watched.samples.clear()
            watched.samples.append(found)
            while watched.samples and found.at - watched.samples[0].at > self.keep:
                watched.samples.popleft()

    def latest(self, deployment_id: int) -> tuple[Sample | None, str | None]:
        """(the newest sample, why the last read failed or None)."""
        with self._lock:
            watched = self._watched.get(deployment_id)
            if watched is None:
                return None, None
            return (watched.samples[-1] if watched.samples else None), watched.error

    def series(self, deployment_id: int) -> list[dict]:
        """One point per sample after the first: ``between`` the sample about ``window`` seconds earlier (the
        first one, while there is less history) and it, with its ``time`` (epoch seconds)."""
        with self._lock:
            watched = self._watched.get(deployment_id)
            samples = list(watched.samples) if watched else []
        points, start = [], 0
        for new in samples[1:]:
            while new.at - samples[start + 1].at >= self.window:
                start += 1
            points.append({"time": new.at, **between(samples[start], new)})
        return points

    def forget(self, deployment_id: int) -> None:
        with self._lock:
            self._watched.pop(deployment_id, None)

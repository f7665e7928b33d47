"""What the Deploy tab shows of a deployment's served outputs, read from the store (``served_requests``), so it is
there after a restart and for a stopped deployment too: a quality panel over the last requests (diversity,
blocklist hits, thumbs-down share, counts) and a per-minute series (requests, p50/p95 latency, error rate, cache
hit rate) for the plots beside the live ones of the deployment's ``/metrics``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import select

from studio.serving.service import DeployError, deployment_modality
from studio.store import Store
from studio.store.tables import Deployment, ServedRequest

MEDIA_DIVERSITY_MOST = 50  # the newest outputs compared pairwise (50 → 1225 pairs of small pictures)
THUMBNAIL = (32, 32)       # images are compared as thumbnails: cheap, and what differs at a glance


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # SQLite gives back naive UTC times


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _ok(row: ServedRequest) -> bool:
    return row.status_code < 400


def _recent(store: Store, deployment_id: int, *conditions, limit: int | None = None) -> list[ServedRequest]:
    with store.session() as session:
        if session.get(Deployment, int(deployment_id)) is None:
            raise DeployError(f"no deployment {deployment_id} (see `studio deploy list`)")
        query = (select(ServedRequest).where(ServedRequest.deployment_id == int(deployment_id), *conditions)
                 .order_by(ServedRequest.created_at.desc(), ServedRequest.id.desc()))
        return list(session.scalars(query.limit(limit) if limit else query))


def _image_thumbnail(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize(THUMBNAIL), dtype=np.float64) / 255.0


def media_diversity(store: Store, paths: list[str], modality: str) -> float | None:
    """The mean pairwise RMS distance of the outputs' cheap pictures (image thumbnails, the audio starter's
    spectrogram pictures, as Evaluate's diversity); unreadable files are left out; None for fewer than two."""
    from studio.evaluation.metrics_media import audio_picture, diversity

    picture = _image_thumbnail if modality == "image" else audio_picture
    arrays = []
    for relative in paths[:MEDIA_DIVERSITY_MOST]:
        try:
            arrays.append(picture(store.path(relative)))
        except Exception:  # noqa: BLE001 - a file purged or damaged meanwhile is not a reason to show nothing
            continue
    return diversity([arrays])


def _diversity(store: Store, rows: list[ServedRequest], modality: str) -> dict:
    outputs = [output for row in rows if _ok(row) for output in row.outputs or [] if isinstance(output, dict)]
    if modality == "text":
        from studio.evaluation.metrics_text import distinct_n

        texts = [output["text"] for output in outputs if output.get("text")]
        return {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2), "outputs": len(texts)}
    paths = [output["path"] for output in outputs if output.get("path")]
    return {"pairwise_distance": media_diversity(store, paths, modality),
            "outputs": min(len(paths), MEDIA_DIVERSITY_MOST)}


def _percentile(values: list[float], q: float) -> float | None:
    import numpy as np

    return float(np.percentile(values, q)) if values else None


def request_series(store: Store, deployment_id: int, minutes: int = 60, now: datetime | None = None) -> list[dict]:
    """One point per minute of the last ``minutes`` (oldest first, quiet minutes included): ``minute`` (ISO),
    ``requests``, ``p50_ms`` / ``p95_ms`` (latency; None without requests), ``error_rate`` (status 400 and up) and
    ``cache_hit_rate`` (of the answered)."""
    end = (now or datetime.now(timezone.utc)).replace(second=0, microsecond=0)
    start = end - timedelta(minutes=max(1, int(minutes)) - 1)
    buckets: dict[datetime, list[ServedRequest]] = {start + timedelta(minutes=n): [] for n in range(int(minutes))}
    for row in _recent(store, deployment_id, ServedRequest.created_at >= start):
        minute = _aware(row.created_at).replace(second=0, microsecond=0)
        if minute in buckets:
            buckets[minute].append(row)
    series = []
    for minute, rows in buckets.items():
        answered = [row for row in rows if _ok(row)]
        latencies = [row.latency_ms for row in rows]
        series.append({"minute": minute.isoformat(), "requests": len(rows), "p50_ms": _percentile(latencies, 50),
                       "p95_ms": _percentile(latencies, 95), "error_rate": _share(len(rows) - len(answered), len(rows)),
                       "cache_hit_rate": _share(sum(row.cache_hit for row in answered), len(answered))})
    return series


def quality_panel(store: Store, deployment_id: int, window: int = 200, minutes: int = 60,
                  now: datetime | None = None) -> dict:
    """The last ``window`` requests of the deployment: ``counts`` (requests, answered, errors, cache hits, rated,
    up, down), ``diversity`` (text: distinct-1/2 of the answers' words; images and audio: the mean pairwise distance
    of cheap pictures of the outputs), ``blocklist_share`` (answered requests whose output had a blocked word),
    ``thumbs_down_share`` (of the rated) and ``series`` (``request_series`` of the last ``minutes``). A share is
    None when there is nothing to divide by."""
    rows = _recent(store, deployment_id, limit=max(1, int(window)))
    answered = [row for row in rows if _ok(row)]
    rated = [row for row in rows if row.rating in ("up", "down")]
    down = sum(row.rating == "down" for row in rated)
    return {"deployment_id": int(deployment_id), "window": len(rows),
            "counts": {"requests": len(rows), "answered": len(answered), "errors": len(rows) - len(answered),
                       "cache_hits": sum(row.cache_hit for row in answered), "rated": len(rated),
                       "up": len(rated) - down, "down": down},
            "diversity": _diversity(store, rows, deployment_modality(store, deployment_id)),
            "blocklist_share": _share(sum(row.blocklist_hits > 0 for row in answered), len(answered)),
            "thumbs_down_share": _share(down, len(rated)),
            "series": request_series(store, deployment_id, minutes, now)}

"""How long served requests are kept: the setting ``served_keep_days`` (0: forever). Older requests go with their
output files and the feedback on them; the serving processes purge their own every few minutes, and the studio's
dispatcher every deployment's (``housekeeping``), so stopped deployments are purged too."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select

from studio.store import Store
from studio.store.projects import remove_folders
from studio.store.tables import ServedRequest

PURGE_EVERY = 600.0  # seconds between two purges of one process
BATCH = 500  # rows per transaction: a long backlog is deleted without holding the database for long
_last_purge: dict[int, float] = {}  # per store (id): when this process last purged


def purge_served(store: Store, deployment_id: int | None = None, keep_days: float | None = None,
                 now: datetime | None = None) -> int:
    """Deletes the served requests (of ``deployment_id``, else of every deployment) older than ``keep_days``
    (default: the setting), and their output files; returns how many went."""
    days = store.settings.served_keep_days if keep_days is None else keep_days
    if not days:
        return 0
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=days)
    query = select(ServedRequest.id, ServedRequest.outputs).where(ServedRequest.created_at < cutoff)
    if deployment_id is not None:
        query = query.where(ServedRequest.deployment_id == deployment_id)
    removed = 0
    while True:
        with store.session() as session:
            batch = session.execute(query.order_by(ServedRequest.id).limit(BATCH)).all()
            if not batch:
                return removed
            session.execute(delete(ServedRequest).where(ServedRequest.id.in_([row.id for row in batch])))
        remove_folders(store, [output["path"] for row in batch for output in (row.outputs or [])
                               if isinstance(output, dict) and output.get("path")])
        removed += len(batch)


def purge_when_due(store: Store, deployment_id: int | None = None) -> int:
    """``purge_served`` at most every ``PURGE_EVERY`` seconds in this process (callers ask every few seconds)."""
    if time.monotonic() - _last_purge.get(id(store), -PURGE_EVERY) < PURGE_EVERY:
        return 0
    _last_purge[id(store)] = time.monotonic()
    return purge_served(store, deployment_id)


def housekeeping(store: Store) -> None:
    """The studio dispatcher's round for deployments: dead serving processes marked failed, old requests purged."""
    from studio.serving.service import reap_deployments

    reap_deployments(store)
    purge_when_due(store)

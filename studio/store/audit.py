"""The audit trail: every write records who did it (``actions`` rows), read back as recent activity.

``record_action`` takes either a :class:`Store` (its own short transaction) or an open SQLAlchemy session, so a
service can record the action in the same transaction as the write it describes: both are kept, or neither.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from studio.store.engine import Store
from studio.store.tables import Action

ACTOR_MAX = 200  # the column width; a longer name is cut rather than refused (the action still happened)


def record_action(session_or_store: Session | Store, actor: str | None, action: str, target: str,
                  project: str | None = None, details: dict | None = None) -> None:
    """Record that ``actor`` (None: sign-in is off) did ``action`` (``run.create``) to ``target`` (``run:12``)."""
    row = Action(actor=(actor or None) and str(actor)[:ACTOR_MAX], action=action, target=target,
                 project=project, details=details or {})
    if isinstance(session_or_store, Store):
        with session_or_store.session() as session:
            session.add(row)
    else:
        session_or_store.add(row)


def list_actions(store: Store, project: str | None = None, limit: int = 50) -> list[dict]:
    """The newest ``limit`` actions, newest first; only ``project``'s when it is given."""
    query = select(Action).order_by(Action.id.desc()).limit(max(1, int(limit)))
    if project:
        query = query.where(Action.project == project)
    with store.session() as session:
        return [{"id": a.id, "at": a.at.isoformat(timespec="seconds"), "actor": a.actor, "action": a.action,
                 "target": a.target, "project": a.project, "details": a.details or {}}
                for a in session.scalars(query)]

"""Ended sign-ins (``ended_sessions``): written when someone signs out, read by every web process."""

from __future__ import annotations

import time

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from studio.store.engine import Store
from studio.store.tables import EndedSession


def end_session(store: Store, session_id: str, until: float) -> None:
    """Record ``session_id`` as ended; rows of sessions that have expired by now go (the table stays small)."""
    try:
        with store.session() as session:
            session.execute(delete(EndedSession).where(EndedSession.until < time.time()))
            if session.get(EndedSession, session_id) is None:
                session.add(EndedSession(id=session_id, until=until))
    except IntegrityError:
        pass  # another web process ended the same session at the same moment


def ended_sessions(store: Store) -> set[str]:
    """The ids of ended sessions that would otherwise still be valid."""
    with store.session() as session:
        return set(session.scalars(select(EndedSession.id).where(EndedSession.until >= time.time())))

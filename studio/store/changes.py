"""A cheap "has anything a page lists changed?" answer, so pages can follow new runs, checkpoints, sample sets,
dataset versions and deployments by polling without re-reading the lists themselves."""

from __future__ import annotations

import hashlib

from sqlalchemy import func, literal, select, union_all

from studio.store.engine import Store
from studio.store.tables import Checkpoint, DatasetVersion, Deployment, Project, RatingVote, Run, SampleSet


def listing_signature(store: Store) -> str:
    """A digest that changes whenever a project, dataset version, run, checkpoint, sample set or deployment is added
    or deleted, or a run, sample set or deployment changes status (the lists' labels show it). One small query: per
    table (and status), the row count and the highest id. A digest, so a page that polls it learns nothing from it (counts included)."""
    def per_status(table, name: str):
        return select(literal(name), table.status, func.count(), func.max(table.id)).group_by(table.status)

    def whole(table, name: str):
        return select(literal(name), literal(""), func.count(), func.max(table.id))

    query = union_all(per_status(Run, "run"), per_status(SampleSet, "set"), whole(Checkpoint, "checkpoint"),
                      whole(DatasetVersion, "version"), whole(Project, "project"), per_status(Deployment, "deployment"))
    with store.session() as session:
        rows = session.execute(query).all()
    text = ";".join(sorted(f"{kind}/{status}/{count}/{last}" for kind, status, count, last in rows))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def votes_signature(store: Store, set_id: int) -> str:
    """Changes whenever a vote or score is cast on sample set ``set_id`` (votes go only with their set): the count
    and the highest id, so that a board on show can follow the votes by polling."""
    query = select(func.count(), func.max(RatingVote.id)).where(RatingVote.set_id == set_id)
    with store.session() as session:
        count, last = session.execute(query).one()
    return f"{count}/{last}"

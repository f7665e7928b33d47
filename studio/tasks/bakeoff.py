"""Moves bake-offs on (``studio.evaluation.bakeoff``): once a bake-off's runs have all ended, its sampling and scoring
goes to a background task; a task that failed fails the bake-off with its reason. Every dispatcher calls ``advance``
each round (the web process's thread, and ``studio bakeoff`` while it waits), so a bake-off goes on after the studio
was closed and opened again: its state is its row, its runs' and its task's.
"""

from __future__ import annotations

from studio.evaluation.bakeoff import active_ids, bakeoff_row, project_of, runs_of, set_state, training_state
from studio.status import BakeoffStatus, TaskStatus
from studio.store import Store
from studio.store.tables import Task
from studio.tasks.service import submit


def advance(store: Store) -> list[int]:
    """One round over the bake-offs not ended; returns those whose state changed."""
    changed = []
    for bakeoff_id in active_ids(store):
        if _advance_one(store, bakeoff_id):
            changed.append(bakeoff_id)
    return changed


def _advance_one(store: Store, bakeoff_id: int) -> bool:
    row = bakeoff_row(store, bakeoff_id)
    if row.task_id is None:
        state = training_state(runs_of(store, row))
        if state is not None:  # still training (or queued)
            if state != row.status:
                set_state(store, bakeoff_id, state)
            return state != row.status
        task_id = submit(store, "bakeoff", {"bakeoff_id": bakeoff_id}, project=project_of(store, row),
                         created_by=row.created_by)
        set_state(store, bakeoff_id, BakeoffStatus.SAMPLING, task_id=task_id)
        return True
    with store.session() as session:
        task = session.get(Task, row.task_id)
        status, error = (task.status, task.error) if task else (TaskStatus.FAILED, "its task was deleted")
    if status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        set_state(store, bakeoff_id, BakeoffStatus.FAILED,
                  error=error or f"sampling and scoring was {status} (task {row.task_id})")
        return True
    if status == TaskStatus.COMPLETED and row.status != BakeoffStatus.DONE:  # ended without writing its table
        set_state(store, bakeoff_id, BakeoffStatus.FAILED, error=f"task {row.task_id} ended without a table")
        return True
    return False

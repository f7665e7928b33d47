"""Projects as rows: finding, creating (recorded in the audit trail) and naming them, inside a session.

The project services (list, create, delete with everything in it) live in ``studio.projects``; these are the
small queries every service that writes into a project shares.
"""

from __future__ import annotations

import shutil

from sqlalchemy import select
from sqlalchemy.orm import Session

from studio.store.audit import record_action
from studio.store.engine import Store
from studio.store.tables import Project

DEFAULT_PROJECT = "default"
NAME_MAX = 200  # the column width



class ProjectError(ValueError):
    """A project cannot be created, found or deleted as asked; the message says why and what to do."""


class DeleteRefused(ValueError):
    """Deleting would break something still in use (a running run, a run trained on the data); nothing was
    deleted, and the message says what to stop or delete first."""


def check_project_name(name) -> str:
    """The name as stored (trimmed), or a clear refusal."""
    cleaned = " ".join(str(name or "").split())
    if not cleaned:
        raise ProjectError("a project needs a name: type one in the Project box (or pass --project NAME)")
    if len(cleaned) > NAME_MAX:
        raise ProjectError(f"a project name has at most {NAME_MAX} characters (this one has {len(cleaned)})")
    return cleaned


def find_project(session: Session, name: str) -> Project | None:
    return session.scalar(select(Project).where(Project.name == name))


def ensure_project(session: Session, name: str, actor: str | None) -> Project:
    """The project called ``name``, created (and the creation recorded) when there is none yet."""
    name = check_project_name(name)
    project = find_project(session, name)
    if project is None:
        project = Project(name=name)
        session.add(project)
        session.flush()
        record_action(session, actor, "project.create", f"project:{name}", project=name)
    return project


def project_name(session: Session, project_id: int | None) -> str | None:
    project = session.get(Project, project_id) if project_id is not None else None
    return project.name if project else None


def remove_folders(store: Store, relative_paths) -> None:
    """Remove folders and files under STUDIO_HOME after their rows are gone (a missing one is already what we
    want). A path may be a glob pattern (``exports/run5-*``: every export of run 5, folders and zips)."""
    home = store.home.resolve()
    for relative in relative_paths:
        relative = relative or ""
        for match in home.glob(relative) if "*" in relative else [store.path(relative)]:
            target = match.resolve()
            if target == home or not target.is_relative_to(home):  # a bad row must never remove the home or outside
                continue
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            elif target.exists():
                target.unlink(missing_ok=True)

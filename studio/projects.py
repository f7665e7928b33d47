"""Projects: create, list, and delete one with everything in it; and who did what in it (the activity).

A project holds datasets (their versions and uploads), runs (metrics, checkpoints, samples) and sample sets
(samples and their ratings). Deleting it removes those rows and their files under STUDIO_HOME in one go, and
is refused while something in it is still running, so a live worker never loses its folder.
"""

from __future__ import annotations

from sqlalchemy import func, select

from studio.data.lexicons import purge_lexicons
from studio.data.service import purge_versions
from studio.evaluation.bakeoff import purge_bakeoffs
from studio.generation.service import purge_set, reap_sets
from studio.serving.service import purge_deployments, stop_project_deployments
from studio.status import RUN_ACTIVE, TASK_ACTIVE, SetStatus
from studio.store import Store, list_actions, record_action
from studio.store.projects import (DEFAULT_PROJECT, DeleteRefused, ProjectError, check_project_name, ensure_project,
                                   find_project, remove_folders)
from studio.store.tables import Dataset, DatasetVersion, Deployment, Project, Run, SampleSet, Task, Upload
from studio.tasks.kinds import KINDS
from studio.tasks.service import reap as reap_tasks
from studio.training.jobs import purge_run, trained_from

__all__ = ["DEFAULT_PROJECT", "DeleteRefused", "ProjectError", "create_project", "delete_project",
           "list_projects", "project_activity", "project_names"]


def _count(session, column, project_id: int) -> int:
    return session.scalar(select(func.count()).select_from(column.class_).where(column == project_id))


def list_projects(store: Store) -> list[dict]:
    """Every project, by name, with how many datasets, runs and sample sets it holds."""
    with store.session() as session:
        return [{"project_id": p.id, "name": p.name, "created_at": p.created_at.isoformat(),
                 "datasets": _count(session, Dataset.project_id, p.id), "runs": _count(session, Run.project_id, p.id),
                 "sample_sets": _count(session, SampleSet.project_id, p.id)}
                for p in session.scalars(select(Project).order_by(Project.name))]


def project_names(store: Store) -> list[str]:
    """The names to choose from: every project, and the default one even before anything is in it."""
    with store.session() as session:
        names = set(session.scalars(select(Project.name)))
    return sorted(names | {DEFAULT_PROJECT})


def create_project(store: Store, name: str, actor: str | None = None) -> dict:
    """A new, empty project; refused when the name is empty, too long or taken."""
    name = check_project_name(name)
    with store.session() as session:
        if find_project(session, name) is not None:
            raise ProjectError(f"a project named '{name}' exists already: pick it in the Project list, or choose "
                               "another name")
        project = ensure_project(session, name, actor)
        return {"project_id": project.id, "name": project.name}


def _refuse_if_in_use(store: Store, session, project: Project) -> None:
    """Refuses while a run is active, a set is generating or a background task is at work in it (sets and tasks
    whose process died were marked so by ``reap_sets`` and ``reap_tasks`` before this is asked)."""
    busy = session.scalars(select(Run).where(Run.project_id == project.id, Run.status.in_(RUN_ACTIVE))
                           .order_by(Run.id)).first()
    if busy is not None:
        raise DeleteRefused(f"run {busy.id} in project '{project.name}' is {busy.status}: stop it first (Train tab, "
                            f"or `studio runs stop {busy.id}`), then delete the project")
    generating = session.scalars(select(SampleSet).where(SampleSet.project_id == project.id,
                                                         SampleSet.status == SetStatus.RUNNING)).first()
    if generating is not None:
        raise DeleteRefused(f"sample set {generating.id} in project '{project.name}' is still being generated: "
                            "cancel it first (Generate tab), then delete the project")
    task = session.scalars(select(Task).where(Task.project == project.name, Task.status.in_(TASK_ACTIVE))
                           .order_by(Task.id)).first()
    if task is not None:
        raise DeleteRefused(f"task {task.id} in project '{project.name}' ({KINDS[task.kind].label.lower()}) is "
                            f"{task.status}: wait for it to end or cancel it, then delete the project")
    versions = select(DatasetVersion.id).join(Dataset).where(Dataset.project_id == project.id)
    outsider = session.scalars(select(Run).where(Run.dataset_version_id.in_(versions),
                                                 Run.project_id != project.id)).first()
    if outsider is not None:  # only databases from before runs were kept inside their dataset's project
        raise DeleteRefused(f"run {outsider.id} of another project was trained on a dataset of '{project.name}': "
                            "delete that run first")
    own_runs = set(session.scalars(select(Run.id).where(Run.project_id == project.id)))
    if child := trained_from(store, session, own_runs):
        raise DeleteRefused(f"run {child[0]} of another project was trained from a checkpoint of run {child[1]} in "
                            f"'{project.name}': delete run {child[0]} first")


def _purge_project(session, project: Project) -> dict:
    """Delete every row of the project; returns what went (counts) and the folders to remove."""
    sets = session.scalars(select(SampleSet).where(SampleSet.project_id == project.id)).all()
    runs = session.scalars(select(Run).where(Run.project_id == project.id)).all()
    datasets = session.scalars(select(Dataset).where(Dataset.project_id == project.id)).all()
    folders = [folder for row in sets for folder in purge_set(session, row)]
    folders += [folder for run in runs for folder in purge_run(session, run)]
    deployments = session.scalars(select(Deployment).where(Deployment.project == project.name)).all()
    folders += purge_deployments(session, deployments)
    session.flush()  # the runs go before the dataset versions they point at
    versions = [v for d in datasets for v in d.versions]
    folders += purge_versions(session, versions)
    folders += [f"datasets/{d.id}" for d in datasets]
    for dataset in datasets:
        session.delete(dataset)
    for upload in session.scalars(select(Upload).where(Upload.project_id == project.id)):  # ones no version used
        folders.append(upload.path)
        session.delete(upload)
    purge_lexicons(session, project.id)
    purge_bakeoffs(session, project.id)
    session.delete(project)
    return {"datasets": len(datasets), "versions": len(versions), "runs": len(runs), "sample_sets": len(sets),
            "deployments": len(deployments), "folders": folders}


def delete_project(store: Store, name: str, actor: str | None = None) -> dict:
    """Delete the project and everything in it (rows and files; its deployments are stopped first). Refused for the
    default project, and while a run in it is queued or running, a sample set is being generated or a background
    task is at work."""
    name = check_project_name(name)
    if name == DEFAULT_PROJECT:
        raise ProjectError(f"the '{DEFAULT_PROJECT}' project cannot be deleted (new work lands there); delete "
                           "what is in it one by one instead")
    reap_sets(store)
    reap_tasks(store)
    with store.session() as session:
        project = find_project(session, name)
        if project is None:
            raise ProjectError(f"no project named '{name}' (see `studio projects list`)")
        _refuse_if_in_use(store, session, project)
        stop_project_deployments(store, name, actor)  # their processes end before their rows go
        removed = _purge_project(session, project)
        folders = removed.pop("folders")
        record_action(session, actor, "project.delete", f"project:{name}", project=name, details=removed)
    remove_folders(store, folders)
    return {"name": name, **removed}


def project_activity(store: Store, project: str | None = None, limit: int = 50) -> list[dict]:
    """Who did what, when: the newest actions (of ``project`` when given), newest first."""
    return list_actions(store, project=project or None, limit=limit)

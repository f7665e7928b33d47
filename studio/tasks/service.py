"""Background tasks as rows: submit, start in a worker process, follow, cancel, and mark the ones whose worker died.

The pattern is the training runs' (``studio.training.jobs``): the web process writes a queued row; its dispatcher
starts ``python -m studio.tasks.worker TASK_ID`` detached (a few at a time; they never wait for the training device);
the worker writes its heartbeat, progress and result to the row and reads ``cancel_requested`` from it; the page
polls the row. With a Ray cluster (``STUDIO_RAY_ADDRESS``) the heavy kinds (metrics, exports: ``Kind.on_cluster``)
go to it as Ray jobs through the runs' launcher, asking for what they need, and Ray queues them; the rest stay here. Files uploaded through the page are staged under ``STUDIO_HOME/tasks/inputs`` first, so the worker
reads them whatever becomes of the web server's upload cache; they go when the task ends.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypedDict

from sqlalchemy import func, or_, select, update

from studio import processes
from studio.status import TASK_ACTIVE, TaskStatus
from studio.store import Store
from studio.store.tables import Task
from studio.tasks.kinds import KINDS
from studio.training.launchers import LOCAL, RAY, LaunchError, RayLauncher, entrypoint_resources

MAX_RUNNING = 2  # tasks at once here: each is a process holding its data in memory, next to the web process and
# training (Ray queues those it runs itself)
HEARTBEAT_TIMEOUT = timedelta(seconds=120)
INPUTS = "tasks/inputs"
_dispatching = threading.Lock()  # the dispatcher thread and a page that starts its task at once take turns


class TaskView(TypedDict):
    """What a page shows of a task."""
    task_id: int
    kind: str
    label: str  # what the page says while it runs: "Importing"
    status: str  # a TaskStatus's word
    progress: float  # 0 … 1
    message: str | None  # what it is doing now
    result: dict | None  # a completed task's: its service function's JSON-ready result
    error: str | None  # a failed task's, for the person
    cancel_requested: bool
    pid: int | None


class TaskError(ValueError):
    """No such task, or it cannot be changed as asked; the message says why."""


class Cancelled(Exception):
    """Raised by a task's progress callback once someone asked to cancel it: the service stops where it stands and
    cleans up as for any failure (services call progress only where stopping leaves nothing half-written)."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def log_path(store: Store, task_id: int) -> Path:
    return store.path(f"tasks/{int(task_id)}.log")


def stage_files(store: Store, paths: list[str | Path]) -> list[str]:
    """Each file in a folder of its own under ``STUDIO_HOME/tasks/inputs/<random>`` (its name kept: it names the
    dataset), linked when the upload cache is on the same disk, else copied; returns the paths relative to
    STUDIO_HOME."""
    folder = store.path(f"{INPUTS}/{uuid.uuid4().hex}")
    staged = []
    for number, raw in enumerate(paths):
        source = Path(raw)
        target = folder / str(number) / source.name
        target.parent.mkdir(parents=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        staged.append(str(target.relative_to(store.home)))
    return staged


def submit(store: Store, kind: str, params: dict, *, project: str | None = None,
           created_by: str | None = None) -> int:
    """A queued task of ``kind`` with ``params`` (the keyword arguments of its service function, JSON-ready)."""
    if kind not in KINDS:
        raise TaskError(f"kind must be one of {', '.join(KINDS)} (got '{kind}')")
    with store.session() as session:
        task = Task(kind=kind, params=params, project=project, status=TaskStatus.QUEUED, created_by=created_by)
        session.add(task)
    return task.id


def dispatch(store: Store) -> list[int]:
    """One round: mark tasks whose worker died, then start queued tasks, oldest first, while fewer than
    ``MAX_RUNNING`` run here (a kind that goes to the Ray cluster starts whatever). Returns the ids started."""
    with _dispatching:
        reap(store)
        started = []
        while (task := _claim(store)) is not None:
            _start_worker(store, task)
            started.append(task.id)
        return started


def _goes_to_cluster(store: Store, kind: str) -> bool:
    return bool(store.settings.ray_address) and KINDS[kind].on_cluster is not None


def _claim(store: Store) -> Task | None:
    with store.session() as session:
        here = session.scalar(select(func.count(Task.id)).where(
            Task.status == TaskStatus.RUNNING, or_(Task.launcher.is_(None), Task.launcher != RAY)))
        kinds = [kind for kind in KINDS if here < MAX_RUNNING or _goes_to_cluster(store, kind)]
        task = session.scalars(select(Task).where(Task.status == TaskStatus.QUEUED, Task.kind.in_(kinds))
                               .order_by(Task.id)).first()
        if task is None:
            return None
        launcher = RAY if _goes_to_cluster(store, task.kind) else LOCAL
        claimed = session.execute(update(Task).where(Task.id == task.id, Task.status == TaskStatus.QUEUED).values(
            status=TaskStatus.RUNNING, started_at=_now(), heartbeat_at=_now(), launcher=launcher)).rowcount
    return task if claimed == 1 else None  # another dispatcher took it


def _start_worker(store: Store, task: Task) -> None:
    command = [sys.executable, "-m", "studio.tasks.worker", str(task.id)]
    try:
        if _goes_to_cluster(store, task.kind):
            needs = KINDS[task.kind].on_cluster
            started = RayLauncher(store.settings).submit(
                store, f"task-{task.id}", command, {}, log_path(store, task.id),
                entrypoint_resources(needs.get("CPU", 1), needs.get("GPU", 0), store.settings))
        else:
            started = {"pid": processes.start_detached(command, log_path(store, task.id), store.settings),
                       "host": processes.this_host()}
    except (OSError, LaunchError) as error:
        finish(store, task.id, TaskStatus.FAILED, error=f"could not start the worker: {error}")
        return
    with store.session() as session:
        session.execute(update(Task).where(Task.id == task.id).values(**started))


def finish(store: Store, task_id: int, status: TaskStatus, *, result: dict | None = None, error: str | None = None,
           was: tuple[TaskStatus, ...] = TASK_ACTIVE) -> bool:
    """Ends the task if its status is one of ``was`` (False when it is not: it ended already, or was claimed) and
    then removes the files staged for it: the worker has copied what it kept into ``uploads/``."""
    with store.session() as session:
        ended = session.execute(update(Task).where(Task.id == task_id, Task.status.in_(was)).values(
            status=status, result=result, error=error, ended_at=_now(),
            **({"progress": 1.0} if status == TaskStatus.COMPLETED else {}))).rowcount == 1
        params = session.get(Task, task_id).params
    if ended:
        for folder in _staged_folders(params):
            shutil.rmtree(store.path(folder), ignore_errors=True)
    return ended


def _staged_folders(params: dict) -> set[str]:
    """The ``tasks/inputs/<random>`` folders of the files ``stage_files`` staged for a task."""
    prefix = INPUTS + "/"
    return {prefix + p[len(prefix):].split("/")[0] for p in params.get("paths", []) if p.startswith(prefix)}


def reap(store: Store) -> list[int]:
    """Marks failed the running tasks whose worker died or stopped sending heartbeats, with their log's end."""
    processes.reap_children()  # workers that ended by themselves too: none stays a zombie of this process
    with store.session() as session:
        running = session.scalars(select(Task).where(Task.status == TaskStatus.RUNNING)).all()
    failed = []
    for task in running:
        if task.launcher == RAY:
            gone = _ray_task_gone(store, task)
        else:
            gone = processes.worker_gone(task.pid, task.heartbeat_at, HEARTBEAT_TIMEOUT, log_path(store, task.id),
                                         host=task.host)
        if gone and finish(store, task.id, TaskStatus.FAILED, error=gone):
            failed.append(task.id)
    return failed


def _ray_task_gone(store: Store, task: Task) -> str | None:
    """A task on the Ray cluster: gone as a run's job is; while Ray holds it back for resources, the dispatcher
    vouches for it (its heartbeat counts from when it runs) and says what it waits for, and a cancel stops it."""
    launcher = RayLauncher(store.settings)
    gone = launcher.job_gone(store, task.job_id, log_path(store, task.id), task.heartbeat_at, task.host,
                             HEARTBEAT_TIMEOUT)
    if gone or not task.job_id or launcher.job_state(task.job_id)[0] != "PENDING":
        return gone
    if task.cancel_requested:
        launcher.stop_job(task.job_id)
        finish(store, task.id, TaskStatus.CANCELLED)
        return None
    needs = KINDS[task.kind].on_cluster or {}
    with store.session() as session:
        session.execute(update(Task).where(Task.id == task.id, Task.status == TaskStatus.RUNNING).values(
            heartbeat_at=_now(), message=f"waits for Ray to free {needs.get('GPU', 0)} GPU(s) and "
                                         f"{needs.get('CPU', 1)} CPU(s) (job {task.job_id})"))
    return None


def cancel(store: Store, task_id: int) -> str:
    """Asks a task to stop: a queued one never starts; a running one stops at its next safe point, leaving nothing
    half-written. Returns the task's status after the request."""
    with store.session() as session:
        if session.get(Task, task_id) is None:
            raise TaskError(f"no task {task_id}")
        session.execute(update(Task).where(Task.id == task_id, Task.status.in_(TASK_ACTIVE))
                        .values(cancel_requested=True))
    # not if a dispatcher claimed it meanwhile: its worker stops
    finish(store, task_id, TaskStatus.CANCELLED, was=(TaskStatus.QUEUED,))
    return view(store, task_id)["status"]


def view(store: Store, task_id: int) -> TaskView:
    with store.session() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise TaskError(f"no task {task_id}")
        return TaskView(task_id=task.id, kind=task.kind, label=KINDS[task.kind].label, status=task.status,
                        progress=task.progress, message=task.message, result=task.result, error=task.error,
                        cancel_requested=task.cancel_requested, pid=task.pid)

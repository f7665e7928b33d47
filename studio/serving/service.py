"""Deployments as rows with a process each: start, wait until it answers, stop, restart, list, show, delete, and
bring back after a studio restart.

The pattern is the training runs' (``studio.training.jobs``): the row is the control plane. ``start_deployment``
checks the checkpoints, writes a ``starting`` row and starts ``python -m studio.serving.process ID`` detached (its
log: ``STUDIO_HOME/deployments/<id>/server.log``); the process loads the models, listens, and writes its url and
``running`` once ``/health`` answers, then a heartbeat. A stop writes ``stopped`` before it signals the process, so
nothing the process writes afterwards turns it back. A process that dies or goes silent is marked ``failed`` with
its log's last lines (``reap_deployments``, every dispatcher round, and before every listing). At the studio's
start ``recover_deployments`` starts again the ones that were serving when their process went away (a reboot);
one that had not answered yet is marked failed instead, so a deployment that cannot start is never started over
and over.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import delete, select, update

from studio import placement, processes
from studio.generation.variants import VariantError, resolve_variants
from studio.status import DEPLOY_ACTIVE, DeployStatus
from studio.store import Store, record_action
from studio.store.projects import DEFAULT_PROJECT, check_project_name, project_name, remove_folders
from studio.store.tables import Deployment, Run, ServedRequest, as_utc

HEARTBEAT_TIMEOUT = timedelta(seconds=60)  # the process beats every few seconds, from before it loads its models
START_TIMEOUT = 900.0  # seconds ``wait`` gives a deployment to load (and quantise) its models and answer
STOP_GRACE = 10.0      # seconds a stopped process has to finish its open requests before it is killed
LOG_MARK = "--- deployment process started at "  # each start's first line in the log: its tail starts there
NAME_MAX = 200


class DeployError(ValueError):
    """A deployment cannot be started, stopped or found as asked; the message says why and what to do."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def folder(deployment_id: int) -> str:
    """The deployment's folder, relative to STUDIO_HOME (its log; the serving process's outputs go under it)."""
    return f"deployments/{int(deployment_id)}"


def log_path(store: Store, deployment_id: int) -> Path:
    return store.path(f"{folder(deployment_id)}/server.log")


def log_tail(store: Store, deployment_id: int, lines: int = 30) -> str:
    """The end of the log of the deployment's latest start (earlier starts' lines are left out)."""
    tail = processes.log_tail(log_path(store, deployment_id), lines=lines, most_bytes=256 * 1024)
    return tail[tail.rfind(LOG_MARK):].partition("\n")[2] if LOG_MARK in tail else tail


def served_name(variant) -> str:
    """The name clients ask for: ``base``, or ``run-3-step-40`` (a checkpoint's, the same at every start)."""
    return "base" if variant.ref == "base" else f"run-{variant.run_id}-step-{variant.step}"


def _resolve(store: Store, refs: list[str]) -> list:
    try:
        return resolve_variants(store, [str(ref) for ref in refs], most=None)
    except VariantError as error:
        raise DeployError(str(error)) from None


def _check_quantize(quantize: str) -> str:
    quantize = str(quantize or "none").strip().lower()
    if quantize == "none":
        return quantize
    from studio.serving.quantize import QUANTIZE_MODES  # which modes there are; imports no model library
    if quantize not in QUANTIZE_MODES:
        raise DeployError(f"quantize must be one of {', '.join(QUANTIZE_MODES)} (got '{quantize}')")
    return quantize


def _check_address(host: str, port: int | None) -> tuple[str, int | None]:
    host = str(host or "").strip()
    if not host:
        raise DeployError("a deployment needs a host to listen on: 127.0.0.1 (this machine only) or 0.0.0.0 (every "
                          "interface)")
    if port is not None and not 0 <= int(port) <= 65535:
        raise DeployError(f"port {port} is not a port: give 1-65535, or none (0) for a free one")
    return host, (int(port) or None) if port is not None else None


def _project_of_runs(store: Store, variants: list, asked: str | None) -> str:
    """The runs' project (a deployment sits in the project of what it serves); ``asked`` must be that one."""
    with store.session() as session:
        owners = {project_name(session, session.get(Run, v.run_id).project_id) for v in variants if v.run_id}
    owners.discard(None)
    if len(owners) > 1:
        raise DeployError(f"the checkpoints come from runs of several projects ({', '.join(sorted(owners))}): deploy "
                          "the runs of one project together")
    owner = owners.pop() if owners else (check_project_name(asked) if asked else DEFAULT_PROJECT)
    if asked is not None and check_project_name(asked) != owner:
        raise DeployError(f"the runs are in project '{owner}', not '{asked}': deploy them in '{owner}'")
    return owner


def _unique_name(session, name: str | None, variants: list) -> str:
    """``name`` when given (refused when taken); else ``run-3`` after the first run, ``run-3-2`` if that is taken."""
    taken = set(session.scalars(select(Deployment.name)))
    if name is not None:
        name = " ".join(str(name).split())
        if not name or len(name) > NAME_MAX:
            raise DeployError(f"a deployment name has 1 to {NAME_MAX} characters")
        if name in taken:
            raise DeployError(f"a deployment named '{name}' exists already: pick another name (or delete that one)")
        return name
    first = next((v for v in variants if v.run_id is not None), None)
    stem = f"run-{first.run_id}" if first else "base"
    number = 1
    while (candidate := stem if number == 1 else f"{stem}-{number}") in taken:
        number += 1
    return candidate


def start_deployment(store: Store, refs: list[str], name: str | None = None, quantize: str = "none",
                     host: str = "127.0.0.1", port: int | None = None, project: str | None = None,
                     actor: str | None = None, settings: dict | None = None, wait: bool = True,
                     timeout: float = START_TIMEOUT) -> dict:
    """A new deployment of ``refs`` (``RUN_ID[:STEP]`` or ``base``, as Generate takes them: one base model and its
    checkpoints), started in a process of its own. Every reference is checked first: a bad one is a DeployError
    and no row. ``wait``: return once it answers (DeployError if it failed, with its log's end); else at once,
    ``starting``. Returns ``describe``'s view."""
    variants = _resolve(store, refs)
    quantize = _check_quantize(quantize)
    host, port = _check_address(host, port)
    owner = _project_of_runs(store, variants, project)
    models = [{"name": served_name(v), "ref": v.ref} for v in variants]
    with store.session() as session:
        row = Deployment(name=_unique_name(session, name, variants), project=owner, models=models,
                         quantize=quantize, host=host, port=port, settings=dict(settings or {}),
                         status=DeployStatus.STARTING, created_by=actor)
        session.add(row)
        session.flush()
        record_action(session, actor, "deployment.start", f"deployment:{row.id}", project=owner,
                      details={"name": row.name, "models": models, "quantize": quantize})
    _launch(store, row.id)
    return wait_until_answered(store, row.id, timeout) if wait else get_deployment(store, row.id)


def _launch(store: Store, deployment_id: int) -> None:
    """Starts the deployment's process; its row says ``starting`` with the new pid (``failed`` if it could not)."""
    log = log_path(store, deployment_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"{LOG_MARK}{_now().isoformat(timespec='seconds')}\n")
    with store.session() as session:
        session.execute(update(Deployment).where(Deployment.id == deployment_id).values(
            status=DeployStatus.STARTING, error=None, url=None, pid=None, heartbeat_at=_now(), stopped_at=None))
    # Its GPU is claimed like a run's, so no run is placed on the GPU its models fill (none free: it shares one)
    placement.release_claims(store, "deployment", deployment_id)
    device = placement.claim_one(store, "deployment", deployment_id)
    try:
        pid = processes.start_detached([sys.executable, "-m", "studio.serving.process", str(deployment_id)], log,
                                       store.settings, **placement.cuda_visible([device] if device else []))
    except OSError as error:
        _mark_failed(store, deployment_id, f"could not start the serving process: {error}")
        return
    with store.session() as session:
        session.execute(update(Deployment).where(Deployment.id == deployment_id,
                                                 Deployment.status == DeployStatus.STARTING).values(pid=pid))


def _mark_failed(store: Store, deployment_id: int, error: str, was=DEPLOY_ACTIVE) -> bool:
    """Ends the deployment as failed with ``error`` if its status is still one of ``was`` (a stop wins)."""
    with store.session() as session:
        return session.execute(update(Deployment).where(Deployment.id == deployment_id, Deployment.status.in_(was))
                               .values(status=DeployStatus.FAILED, error=error, stopped_at=_now())).rowcount == 1


def wait_until_answered(store: Store, deployment_id: int, timeout: float = START_TIMEOUT) -> dict:
    """Waits until the deployment answers (returns its view) or fails (DeployError with the reason); a process
    that died without a word is found here too."""
    deadline = time.monotonic() + timeout
    while True:
        reap_deployments(store, only=deployment_id)
        view = get_deployment(store, deployment_id)
        if view["status"] == DeployStatus.RUNNING:
            return view
        if view["status"] != DeployStatus.STARTING:
            raise DeployError(f"deployment {deployment_id} ({view['name']}) {view['status']}"
                              + (f": {view['error']}" if view["error"] else ""))
        if time.monotonic() > deadline:
            raise DeployError(f"deployment {deployment_id} ({view['name']}) did not answer within {timeout:.0f} s; it "
                              f"is still starting (see `studio deploy show {deployment_id}`, or stop it)")
        time.sleep(0.5)


def _ours(pid: int | None, deployment_id: int) -> bool:
    """Whether ``pid`` is alive and is this deployment's serving process (not another process that was given the
    number of one that ended long ago)."""
    if not processes.process_alive(pid):
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (not Linux): alive is all we can tell
    return b"studio.serving.process" in command and str(deployment_id).encode() in command


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _end_process(pid: int | None, deployment_id: int, grace: float = STOP_GRACE) -> None:
    """SIGTERM (the process finishes its open requests), then SIGKILL after ``grace`` seconds."""
    if not _ours(pid, deployment_id):
        return
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not processes.process_alive(pid):
            return
        time.sleep(0.1)
    _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while processes.process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _row(session, deployment_id) -> Deployment:
    row = session.get(Deployment, int(deployment_id))
    if row is None:
        raise DeployError(f"no deployment {deployment_id} (see `studio deploy list`)")
    return row


def stop_deployment(store: Store, deployment_id: int, actor: str | None = None, grace: float = STOP_GRACE) -> dict:
    """Stops the deployment: ``stopped`` first (whatever its process writes from then on changes nothing), then
    its process is asked to end and killed after ``grace`` seconds. Returns its view."""
    with store.session() as session:
        row = _row(session, deployment_id)
        pid, was = row.pid, row.status
        if was not in DEPLOY_ACTIVE and not _ours(pid, row.id):
            raise DeployError(f"deployment {row.id} ({row.name}) is {was} already")
        if was in DEPLOY_ACTIVE:
            row.status, row.stopped_at = DeployStatus.STOPPED, _now()
        record_action(session, actor, "deployment.stop", f"deployment:{row.id}", project=row.project,
                      details={"name": row.name, "was": was})
    _end_process(pid, int(deployment_id), grace)
    placement.release_claims(store, "deployment", int(deployment_id))
    return get_deployment(store, deployment_id)


def restart_deployment(store: Store, deployment_id: int, actor: str | None = None, wait: bool = True,
                       timeout: float = START_TIMEOUT) -> dict:
    """Starts a stopped or failed deployment again, as it was (its checkpoints checked again first)."""
    with store.session() as session:
        row = _row(session, deployment_id)
        if row.status in DEPLOY_ACTIVE:
            raise DeployError(f"deployment {row.id} ({row.name}) is {row.status}: stop it first")
        refs = [m["ref"] for m in row.models]
    _resolve(store, refs)  # a checkpoint deleted since: said here, not in the log of a process that failed
    with store.session() as session:
        row = _row(session, deployment_id)
        record_action(session, actor, "deployment.restart", f"deployment:{row.id}", project=row.project,
                      details={"name": row.name, "was": row.status})
    _launch(store, int(deployment_id))
    return wait_until_answered(store, deployment_id, timeout) if wait else get_deployment(store, deployment_id)


def reap_deployments(store: Store, only: int | None = None) -> list[int]:
    """Marks failed the active deployments whose process died or stopped beating, with their log's end (a silent
    one that still runs is ended: it must not serve as a failed deployment). Returns their ids."""
    processes.reap_children()
    query = select(Deployment).where(Deployment.status.in_(DEPLOY_ACTIVE))
    if only is not None:
        query = query.where(Deployment.id == only)
    with store.session() as session:
        active = session.scalars(query).all()
    failed = []
    for row in active:
        if row.pid is None:  # being started right now, unless that was long ago
            reason = "its serving process was never started" if _stale(row) else None
        elif not _ours(row.pid, row.id):
            reason = "its serving process died"
        else:
            reason = "its serving process stopped sending heartbeats" if _stale(row) else None
        if reason and _mark_failed(store, row.id, f"{reason}. Last lines of its log:\n{log_tail(store, row.id)}"):
            _end_process(row.pid, row.id, grace=2.0)
            failed.append(row.id)
    with store.session() as session:
        placement.release_ended(session)  # stopped, failed or deleted deployments hold no GPU
    return failed


def _stale(row: Deployment) -> bool:
    beat = as_utc(row.heartbeat_at)
    return beat is not None and _now() - beat > HEARTBEAT_TIMEOUT


def recover_deployments(store: Store) -> dict:
    """At the studio's start: a deployment that was serving when its process went away (the machine restarted) is
    started again; one whose process had not answered yet is marked failed with its log's end (it is not started
    over and over). Processes that outlived the studio are left serving. Returns ``{restarted, failed}``."""
    processes.reap_children()
    with store.session() as session:
        active = session.scalars(select(Deployment).where(Deployment.status.in_(DEPLOY_ACTIVE))).all()
    restarted, failed = [], []
    for row in active:
        if row.pid is not None and _ours(row.pid, row.id):
            continue
        if row.status == DeployStatus.RUNNING:
            record_action(store, None, "deployment.recover", f"deployment:{row.id}", project=row.project,
                          details={"name": row.name})
            _launch(store, row.id)
            restarted.append(row.id)
        elif _mark_failed(store, row.id, "its serving process went away before it answered (the studio restarted). "
                                         f"Last lines of its log:\n{log_tail(store, row.id)}"):
            failed.append(row.id)
    return {"restarted": restarted, "failed": failed}


def _weight_bytes(report: dict) -> int | None:
    """The served weights' bytes as the process reported them (after quantisation when there was one)."""
    quantized = (report or {}).get("quantize") or {}
    return quantized.get("weight_bytes_after") or (report or {}).get("weight_bytes")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def describe(row: Deployment) -> dict:
    """A deployment as the CLI prints it and the Deploy tab shows it."""
    return {"deployment_id": row.id, "name": row.name, "project": row.project, "status": row.status,
            "url": row.url, "models": [dict(m) for m in row.models], "quantize": row.quantize,
            "weight_bytes": _weight_bytes(row.report), "report": dict(row.report or {}), "host": row.host,
            "port": row.port, "settings": dict(row.settings or {}), "error": row.error, "pid": row.pid,
            "created_by": row.created_by, "created_at": _iso(row.created_at), "started_at": _iso(row.started_at),
            "stopped_at": _iso(row.stopped_at), "heartbeat_at": _iso(row.heartbeat_at)}


def get_deployment(store: Store, deployment_id: int) -> dict:
    with store.session() as session:
        return describe(_row(session, deployment_id))


def list_deployments(store: Store, project: str | None = None) -> list[dict]:
    """Every deployment (of ``project`` when given), newest first; dead processes found first."""
    reap_deployments(store)
    query = select(Deployment).order_by(Deployment.id.desc())
    if project:
        query = query.where(Deployment.project == project)
    with store.session() as session:
        return [describe(row) for row in session.scalars(query)]


def deployment_modality(store: Store, deployment_id: int) -> str:
    """What the deployment makes (text, image or audio): its runs' modality (all of one, as Generate's)."""
    with store.session() as session:
        row = _row(session, deployment_id)
        run_ids = [int(m["ref"].split(":")[0]) for m in row.models if m["ref"] != "base"]
        run = session.get(Run, run_ids[0]) if run_ids else None
        return run.modality if run else "text"


def purge_deployments(session, rows: list[Deployment]) -> list[str]:
    """Deletes the rows of these (ended) deployments and their served requests; returns their folders (logs and
    outputs) to remove once the transaction is committed."""
    files = []
    for row in rows:
        served = select(ServedRequest.outputs).where(ServedRequest.deployment_id == row.id)
        files += [output["path"] for outputs in session.scalars(served) for output in outputs or []
                  if isinstance(output, dict) and output.get("path")]
        session.execute(delete(ServedRequest).where(ServedRequest.deployment_id == row.id))
        session.delete(row)
    return [folder(row.id) for row in rows] + files


def delete_deployment(store: Store, deployment_id: int, actor: str | None = None) -> None:
    """Deletes an ended deployment with everything it served (requests, outputs, feedback) and its log."""
    with store.session() as session:
        row = _row(session, deployment_id)
        if row.status in DEPLOY_ACTIVE:
            raise DeployError(f"deployment {row.id} ({row.name}) is {row.status}: stop it first")
        record_action(session, actor, "deployment.delete", f"deployment:{row.id}", project=row.project,
                      details={"name": row.name, "models": row.models})
        folders = purge_deployments(session, [row])
    remove_folders(store, folders)


def stop_project_deployments(store: Store, project: str, actor: str | None = None) -> list[int]:
    """Stops every active deployment of ``project`` (a project being deleted); returns their ids."""
    with store.session() as session:
        ids = list(session.scalars(select(Deployment.id).where(Deployment.project == project,
                                                               Deployment.status.in_(DEPLOY_ACTIVE))))
    for deployment_id in ids:
        stop_deployment(store, deployment_id, actor)
    return ids

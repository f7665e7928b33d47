"""The device pool: which devices the studio places work on, who holds which, and which queued runs start next.

The pool is ``STUDIO_GPUS`` (GPU ids), else every GPU ``nvidia-smi`` lists, else one ``cpu`` slot (a CPU-only
machine trains one run at a time, as it always did). A run asks for ``num_processes`` devices (one slot on the CPU
pool: its processes share the cores). Holding a device is a ``DeviceClaim`` row per device: the primary key lets
one holder have it, so two dispatchers (the web process and a CLI) never hand one GPU to two runs. Deployments and
Generate claim the GPU they use the same way, so a run is not placed on a GPU a served model fills.

Ids that no CUDA device answers to are allowed (``STUDIO_GPUS=0,1`` on a laptop): runs then train on the CPU but
hold their slot, which is how the placement is tested on machines without GPUs.

``plan`` is the policy, a pure function: oldest queued first; a run that does not fit lets later, smaller runs use
the free devices (backfill) only for ``STUDIO_BACKFILL_SECONDS`` after it joined the queue — after that the free
devices are kept for it as they come free, so a large request is never starved by a stream of small ones.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from studio.settings import Settings
from studio.store import Store
from studio.status import DEPLOY_ACTIVE, RUN_WORKING, SetStatus
from studio.store.tables import Deployment, DeviceClaim, Run, SampleSet

CPU = "cpu"
HOLDERS = ("run", "deployment", "generation")


def pool(settings: Settings) -> list[str]:
    """The devices runs are placed on: ``STUDIO_GPUS``, else the GPUs nvidia-smi lists, else ``["cpu"]``."""
    declared = [gpu.strip() for gpu in settings.gpus.split(",") if gpu.strip()]
    return list(dict.fromkeys(declared)) or visible_gpus() or [CPU]


@functools.lru_cache(maxsize=1)
def visible_gpus() -> list[str]:
    """The GPU indices nvidia-smi lists (none without it): asked once per process, without importing torch."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip().isdigit()] if done.returncode == 0 \
        else []


def devices_wanted(num_processes: int, devices: list[str]) -> int:
    """How many devices of ``devices`` a run with ``num_processes`` processes holds."""
    return 1 if devices == [CPU] else max(1, num_processes)


def cuda_visible(devices: list[str]) -> dict[str, str]:
    """The environment that pins a process to ``devices`` (nothing for the CPU slot)."""
    return {} if devices in ([], [CPU]) else {"CUDA_VISIBLE_DEVICES": ",".join(devices)}


@dataclass
class Waiting:
    """A queued run as the planner sees it."""
    run_id: int
    wants: int
    queued_at: datetime


@dataclass
class Plan:
    start: dict[int, list[str]]      # run id → the devices it gets now
    waits: dict[int, str]            # run id → what it waits for, in people's words


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # SQLite gives back naive UTC times


def plan(queue: list[Waiting], free: list[str], devices: list[str], now: datetime, backfill: timedelta) -> Plan:
    """Which of ``queue`` (oldest first) start now on the ``free`` devices, and what each other one waits for."""
    free, start, waits = list(free), {}, {}
    blocker: Waiting | None = None  # the oldest run that waited past the backfill window: no later run jumps it
    for run in queue:
        if run.wants > len(devices):
            waits[run.run_id] = (
                f"asks for {run.wants} GPUs; this studio has {len(devices)} ({', '.join(devices)}): lower "
                f"num_processes, or list more GPUs in STUDIO_GPUS")
            continue  # it can never start here, so it holds no one up
        if blocker is not None:
            waits[run.run_id] = f"waits behind run #{blocker.run_id}, which has waited longest for {blocker.wants} GPUs"
            continue
        if run.wants <= len(free):
            start[run.run_id], free = free[:run.wants], free[run.wants:]
            continue
        busy = len(devices) - len(free)
        waits[run.run_id] = (f"waits for {run.wants} free {'slot' if devices == [CPU] else 'GPUs'} "
                             f"({busy} of {len(devices)} busy)")
        if now - _aware(run.queued_at) >= backfill:
            blocker = run
    return Plan(start, waits)


def held(session) -> dict[str, tuple[str, int]]:
    """Every claimed device → (holder kind, holder id)."""
    return {claim.device: (claim.holder, claim.holder_id) for claim in session.scalars(select(DeviceClaim))}


def free_devices(session, devices: list[str]) -> list[str]:
    taken = held(session)
    return [device for device in devices if device not in taken]


def claim(session, holder: str, holder_id: int, devices: list[str]) -> None:
    """Claims ``devices`` for the holder in ``session``'s transaction: an IntegrityError at its flush means another
    holder was faster (the caller's transaction is then rolled back)."""
    session.add_all(DeviceClaim(device=device, holder=holder, holder_id=holder_id) for device in devices)
    session.flush()


def release(session, holder: str, holder_id: int) -> None:
    session.execute(delete(DeviceClaim).where(DeviceClaim.holder == holder, DeviceClaim.holder_id == holder_id))


def release_ended(session) -> None:
    """Frees the devices of runs, deployments and sample sets that have ended, however they ended (a worker killed
    before it could say so included)."""
    working = {"run": select(Run.id).where(Run.status.in_(RUN_WORKING)),
               "deployment": select(Deployment.id).where(Deployment.status.in_(DEPLOY_ACTIVE)),
               "generation": select(SampleSet.id).where(SampleSet.status == SetStatus.RUNNING)}
    for holder, alive in working.items():
        session.execute(delete(DeviceClaim).where(DeviceClaim.holder == holder, DeviceClaim.holder_id.not_in(alive)))


def claim_device(store: Store, holder: str, holder_id: int, device: str) -> bool:
    """Claims ``device`` when it is a free GPU of the pool (Generate in the web process uses the first visible GPU,
    whichever it is): False when it is not in the pool or another holder has it (the work then shares it)."""
    if device not in pool(store.settings) or device == CPU:
        return False
    try:
        with store.session() as session:
            if device in held(session):
                return False
            claim(session, holder, holder_id, [device])
            return True
    except IntegrityError:
        return False


def claim_one(store: Store, holder: str, holder_id: int) -> str | None:
    """Claims one free GPU of the pool for a deployment or a generation; None on the CPU pool (the CPU is shared,
    not placed) or when every GPU is held (the work then shares one, as before: it is not refused)."""
    devices = pool(store.settings)
    if devices == [CPU]:
        return None
    for device in devices:
        try:
            with store.session() as session:
                if device in held(session):
                    continue
                claim(session, holder, holder_id, [device])
                return device
        except IntegrityError:
            continue
    return None


def release_claims(store: Store, holder: str, holder_id: int) -> None:
    with store.session() as session:
        release(session, holder, holder_id)


def usage(store: Store) -> dict:
    """``{"devices": [...], "busy": {device: "run 3"}, "free": [...]}`` for /metrics and the status page."""
    devices = pool(store.settings)
    with store.session() as session:
        taken = held(session)
    busy = {device: f"{taken[device][0]} {taken[device][1]}" for device in devices if device in taken}
    return {"devices": devices, "busy": busy, "free": [device for device in devices if device not in busy]}

"""The statuses of training runs, background tasks and sample sets, and the groups of them people ask about.

``StrEnum``s: a status is its word (``RunStatus.RUNNING == "running"``, ``f"{status}"`` gives ``running``), so the
database holds, and the JSON and the pages show, the same words as ever. This module imports nothing: the CLI's
parser and every layer, from the store's tables up to the pages, read it.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"        # waiting for its devices (studio.placement)
    STARTING = "starting"    # claimed: its worker is being started
    RUNNING = "running"      # its worker trains
    COMPLETED = "completed"  # trained every step (or stopped early by early stopping)
    FAILED = "failed"        # its worker raised, died or went silent
    STOPPED = "stopped"      # someone asked it to stop (a queued run never starts)


RUN_WORKING = (RunStatus.STARTING, RunStatus.RUNNING)  # a worker was started for it and has not ended
RUN_ACTIVE = (RunStatus.QUEUED, *RUN_WORKING)  # not ended: it still needs its data and its folder
RUN_ENDED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED)  # may be resumed or deleted


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TASK_ACTIVE = (TaskStatus.QUEUED, TaskStatus.RUNNING)
TASK_ENDED_WITHOUT_RESULT = (TaskStatus.FAILED, TaskStatus.CANCELLED)


class SetStatus(StrEnum):
    """A sample set's: it is written while it is generated, so one that did not complete keeps what it made."""
    RUNNING = "running"          # being generated
    COMPLETED = "completed"
    FAILED = "failed"            # nothing was made, or an error nobody foresaw ended it
    CANCELLED = "cancelled"      # someone cancelled it (or interrupted `studio generate`)
    INTERRUPTED = "interrupted"  # the process generating it died (a restart mid-generation)


class DeployStatus(StrEnum):
    """A deployment's (issue 15): its serving process is started by the studio and runs detached, as a worker."""
    STARTING = "starting"  # its process was started; it has not answered yet (loading models, quantising)
    RUNNING = "running"    # it answers on its url
    STOPPED = "stopped"    # someone stopped it; a restart of the studio leaves it stopped
    FAILED = "failed"      # its process exited or never answered; ``error`` holds its log's last lines


DEPLOY_ACTIVE = (DeployStatus.STARTING, DeployStatus.RUNNING)  # brought back after a studio restart


class BakeoffStatus(StrEnum):
    """A bake-off's (issue 19): its runs train, then one task samples every architecture and scores them."""
    QUEUED = "queued"        # its runs wait in the queue: none has started
    TRAINING = "training"    # a run of it has started; some may still wait
    SAMPLING = "sampling"    # every run ended: the sample set of all of them is being made
    SCORING = "scoring"      # the automatic metrics of each run are being computed
    DONE = "done"            # the table is ready, and the sample set can be rated
    FAILED = "failed"        # no run trained, or sampling or scoring failed (``error`` says why)


BAKEOFF_ACTIVE = (BakeoffStatus.QUEUED, BakeoffStatus.TRAINING, BakeoffStatus.SAMPLING, BakeoffStatus.SCORING)

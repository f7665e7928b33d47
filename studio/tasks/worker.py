"""The background-task worker: ``python -m studio.tasks.worker TASK_ID``, started detached by the dispatcher.

It reads its task, runs the kind's service function and writes the result (or the refusal, or the error) to the
row. A beat thread writes the heartbeat and the latest progress once a second and reads whether someone asked to
cancel; the progress callback the service calls then raises ``Cancelled``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import traceback
from datetime import datetime, timezone

from sqlalchemy import update

from studio.settings import load_settings
from studio.status import TaskStatus
from studio.store import Store, open_store
from studio.store.tables import Task
from studio.tasks.kinds import KINDS
from studio.tasks.service import Cancelled, finish, log_path

BEAT_SECONDS = 1.0


class Beat:
    """The worker's line to its row: ``report`` (the service's progress callback) only notes the progress; the
    thread writes it with the heartbeat, so a service reporting often costs no database writes."""

    def __init__(self, store: Store, task_id: int):
        self.store, self.task_id = store, task_id
        self.progress, self.message = 0.0, "starting"
        self.cancel_requested = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="beat", daemon=True)

    def report(self, fraction: float, message: str) -> None:
        self.progress, self.message = max(0.0, min(1.0, float(fraction))), message
        if self.cancel_requested.is_set():
            raise Cancelled(f"cancelled while {message}")

    def start(self) -> None:
        self.write()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(BEAT_SECONDS):
            self.write()

    def write(self) -> None:
        with self.store.session() as session:
            session.execute(update(Task).where(Task.id == self.task_id, Task.status == TaskStatus.RUNNING).values(
                heartbeat_at=datetime.now(timezone.utc), progress=self.progress, message=self.message))
            if session.get(Task, self.task_id).cancel_requested:
                self.cancel_requested.set()


def run_task(store: Store, task_id: int) -> TaskStatus:
    """Runs the task and ends its row; returns the status it ended with."""
    with store.session() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise SystemExit(f"no task {task_id}")
        kind, params, actor = KINDS[task.kind], task.params, task.created_by
    beat = Beat(store, task_id)
    beat.start()
    try:
        result = kind.run(store, params, beat.report, actor)
    except Cancelled:
        status, outcome = TaskStatus.CANCELLED, {}
    except kind.refusals as refused:  # a bad file, a wrong setting: the message says it all
        status, outcome = TaskStatus.FAILED, {"error": str(refused)}
    except BaseException as error:  # noqa: BLE001 - whatever stops the task is written down for the person
        traceback.print_exc()
        status, outcome = TaskStatus.FAILED, {"error": f"{type(error).__name__}: {error} (the details are in "
                                              f"{log_path(store, task_id)})"}
    else:
        status, outcome = TaskStatus.COMPLETED, {"result": result}
    finally:
        beat.stop()
    finish(store, task_id, status, **outcome)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Gen Studio background-task worker (started by the dispatcher)")
    parser.add_argument("task_id", type=int)
    args = parser.parse_args(argv)
    status = run_task(open_store(load_settings()), args.task_id)
    print(f"task {args.task_id} {status}", flush=True)
    return 0 if status != TaskStatus.FAILED else 1


if __name__ == "__main__":
    sys.exit(main())

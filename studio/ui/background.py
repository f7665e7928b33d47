"""A tab's long work run as a background task (``studio.tasks``): the handler submits it and follows it, showing its
progress in the tab's status line until it ends, then the result exactly as when the work ran in the handler. A
Cancel button asks it to stop. The web process only polls a row meanwhile, so every other page stays quick."""

from __future__ import annotations

import gradio as gr  # at module level: a handler's "request: gr.Request" hint must resolve, or Gradio passes no request
import html
import time
from typing import Callable, Iterator

from studio.status import TASK_ENDED_WITHOUT_RESULT, TaskStatus
from studio.store import Store
from studio.tasks.service import TaskView, cancel, dispatch, submit, view

POLL_SECONDS = 0.5


def progress_text(found: TaskView) -> str:
    """The status line of a task that has not ended."""
    head = f"**{found['label']}**"
    if found["status"] == TaskStatus.QUEUED:
        return f"{head} · waiting for a free background worker"
    line = f"{head} · {html.escape(found['message'] or 'starting')} · {found['progress']:.0%}"
    if found["cancel_requested"]:
        return line + " · cancelling at the next safe point…"
    return line + " · in a background process: the studio stays usable meanwhile"


def ended_text(found: TaskView) -> str:
    """Why a task ended without a result (as written: the tab shows it with ``error_message``, which escapes it)."""
    return "Cancelled: nothing was changed." if found["status"] == TaskStatus.CANCELLED else (found["error"] or "")


class BackgroundTask:
    """The Cancel button of one tab's task and the id of the task it cancels. A handler lists ``outputs`` after its
    own and yields ``idle()`` after its own values when it submits nothing."""

    def __init__(self, store: Store, elem_id: str):
        self.store = store
        self.task_id = gr.State(None)
        self.cancel = gr.Button("Cancel", visible=False, size="sm", variant="stop", elem_id=elem_id)
        self.cancel.click(self.on_cancel, self.task_id, self.cancel)
        self.outputs = [self.task_id, self.cancel]

    def on_cancel(self, task_id):
        if task_id is not None:
            cancel(self.store, int(task_id))
        return gr.Button("Cancelling…", interactive=False)

    @staticmethod
    def idle() -> tuple:
        return None, gr.Button("Cancel", visible=False, interactive=True)

    def run(self, kind: str, params: dict, *, project: str | None, actor: str | None,
            working: Callable[[str], tuple], done: Callable[[dict], tuple],
            failed: Callable[[str], tuple]) -> Iterator[tuple]:
        """Submits the task and follows it: yields ``working(status line)`` while it waits or runs, then
        ``done(result)``, or ``failed(why)`` when it failed or was cancelled (each followed by this panel's two)."""
        task_id = submit(self.store, kind, params, project=project, created_by=actor)
        dispatch(self.store)  # start it now when a worker is free, rather than at the dispatcher's next round
        shown = None
        while True:
            found = view(self.store, task_id)
            if found["status"] == TaskStatus.COMPLETED:
                yield *done(found["result"]), *self.idle()
                return
            if found["status"] in TASK_ENDED_WITHOUT_RESULT:
                yield *failed(ended_text(found)), *self.idle()
                return
            text = progress_text(found)
            if text != shown:
                asked = found["cancel_requested"]
                yield *working(text), task_id, gr.Button("Cancelling…" if asked else "Cancel", visible=True,
                                                         interactive=not asked)
                shown = text
            time.sleep(POLL_SECONDS)

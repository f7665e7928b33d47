"""Background tasks (studio.tasks): an import, a re-clean, an export and metrics each run by a worker process of their
own, with progress and result in the store; a cancel at any safe point leaves nothing half-written; a worker that
ended, whatever its task's record says, leaves no zombie behind in the process that started it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import gradio as gr
import pytest
from sqlalchemy import select, update

from studio.data.service import get_version, import_dataset, reclean
from studio.projects import DeleteRefused, delete_project
from studio.store.tables import Task
from studio.tasks.service import Cancelled, cancel, dispatch, log_path, stage_files, submit, view
from studio.ui import data_tab, evaluate_tab
from leftovers import stored, wait_until_exited, zombie_children
from test_generation import lab  # noqa: F401 - a module-scoped fixture: a store with a tiny LoRA run
from test_text_backend import rows, tiny_folder  # noqa: F401 - what it needs

ENDED = ("completed", "failed", "cancelled")


def corpus(folder: Path, name: str = "tales.txt", paragraphs: int = 30) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n\n".join(f"Tale {i}: the {i % 7} fox met hen number {i} and they spoke of {i * 13} things."
                                for i in range(paragraphs)))
    return path


def wait_for(store, task_id: int, timeout: float = 240) -> dict:
    """Dispatcher rounds, as the web process runs them, until the task has ended."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        dispatch(store)
        found = view(store, task_id)
        if found["status"] in ENDED:
            return found
        time.sleep(0.3)
    raise AssertionError(f"task {task_id} did not end in {timeout}s: {view(store, task_id)}\n"
                         + store.path(f"tasks/{task_id}.log").read_text())


def test_an_import_runs_in_a_worker_process_and_its_staged_files_go_when_it_ends(store, tmp_path):
    source = corpus(tmp_path / "in")
    task_id = submit(store, "import", {"paths": stage_files(store, [source]), "name": "tales", "project": "default"})
    assert view(store, task_id)["status"] == "queued"
    found = wait_for(store, task_id)
    assert found["status"] == "completed", found["error"]
    assert found["pid"] not in (None, os.getpid())  # another process did the work
    assert found["progress"] == 1.0 and found["result"]["items_kept"] == 30
    version = get_version(store, f"{found['result']['dataset_id']}:1")
    assert version.dataset.name == "tales" and version.source["files"] == ["tales.txt"]
    assert list(store.path("tasks/inputs").iterdir()) == []  # the staged copy went; the upload keeps the file
    assert source.exists()  # and the original was only read


def test_a_refused_import_fails_with_its_reason_and_a_queued_task_cancelled_never_starts(store, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    refused = wait_for(store, submit(store, "import", {"paths": stage_files(store, [empty]), "project": "default"}))
    assert refused["status"] == "failed" and "nothing usable found" in refused["error"]
    assert "Traceback" not in refused["error"]  # a refusal is its message, not a crash report

    waiting = submit(store, "import", {"paths": stage_files(store, [corpus(tmp_path / "in")]), "project": "default"})
    assert cancel(store, waiting) == "cancelled"
    assert dispatch(store) == [] and view(store, waiting)["pid"] is None
    assert stored(store)["dataset_versions"] == 0 and list(store.path("tasks/inputs").iterdir()) == []


def test_cancelling_at_any_progress_point_of_an_import_or_reclean_leaves_nothing_half_written(store, tmp_path):
    kept = import_dataset(store, [corpus(tmp_path / "in", "kept.txt")], name="kept")
    before = stored(store)
    manifest = (Path(kept["path"]) / "manifest.jsonl").read_bytes()
    for service in ("import", "reclean"):
        point = 0
        while True:  # cancel at the first progress call, then the second, ... until one runs to its end
            calls = []

            def progress(fraction, message):
                calls.append(message)
                if len(calls) > point:
                    raise Cancelled(f"cancelled while {message}")

            try:
                if service == "import":
                    import_dataset(store, [corpus(tmp_path / "more", paragraphs=40)], name="more", progress=progress)
                else:
                    reclean(store, kept["version_id"], steps={"length": {"min_length": 3}}, progress=progress)
            except Cancelled:
                assert stored(store) == before, f"{service} cancelled at '{calls[-1]}' left something behind"
                point += 1
                continue
            break
        assert point >= 5, calls  # reading, each cleaning step, writing: each was a place to stop
        assert stored(store) != before  # the run that was not cancelled did write its version
        before = stored(store)
    assert (Path(kept["path"]) / "manifest.jsonl").read_bytes() == manifest


def test_a_running_task_asked_to_cancel_stops_in_its_worker(store, tmp_path):
    before = stored(store)
    task_id = submit(store, "import", {"paths": stage_files(store, [corpus(tmp_path / "in")]), "project": "default"})
    with store.session() as session:  # as a dispatcher claims it; the cancel comes before the worker's first step
        session.execute(update(Task).where(Task.id == task_id).values(status="running"))
    assert cancel(store, task_id) == "running"  # a running task is asked, not stopped from outside
    done = subprocess.run([sys.executable, "-m", "studio.tasks.worker", str(task_id)], capture_output=True, text=True,
                          env={**os.environ, **store.settings.as_env()}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert view(store, task_id)["status"] == "cancelled"
    assert stored(store) == before  # no upload, no dataset, no version, no staged copy


def test_a_task_whose_worker_died_is_marked_failed_with_its_log_and_its_staged_files_go(store, tmp_path):
    task_id = submit(store, "import", {"paths": stage_files(store, [corpus(tmp_path / "in")]), "project": "default"})
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()  # a process that ended: as a worker the OOM killer took
    log_path(store, task_id).parent.mkdir(parents=True, exist_ok=True)
    log_path(store, task_id).write_text("reading 1 file(s)\nKilled\n")
    with store.session() as session:
        session.execute(update(Task).where(Task.id == task_id).values(status="running", pid=gone.pid,
                                                                      heartbeat_at=datetime.now(timezone.utc)))
    dispatch(store)
    found = view(store, task_id)
    assert found["status"] == "failed" and found["error"].startswith("the worker process died")
    assert found["error"].endswith("reading 1 file(s)\nKilled")
    assert list(store.path("tasks/inputs").iterdir()) == []


def test_a_project_with_a_task_at_work_is_not_deleted(store, tmp_path):
    task_id = submit(store, "import", {"paths": stage_files(store, [corpus(tmp_path / "in")]), "project": "lab"},
                     project="lab")
    found = wait_for(store, task_id)
    with store.session() as session:
        session.execute(update(Task).where(Task.id == task_id).values(status="running", pid=os.getpid()))
    with pytest.raises(DeleteRefused, match=f"task {task_id} in project 'lab' \\(importing\\) is running"):
        delete_project(store, "lab")
    with store.session() as session:
        session.execute(update(Task).where(Task.id == task_id).values(status=found["status"]))
    assert delete_project(store, "lab")["versions"] == 1


def test_a_worker_that_ended_is_reaped_by_the_next_dispatcher_round(store, tmp_path):
    task_id = submit(store, "import", {"paths": stage_files(store, [corpus(tmp_path / "in")]), "project": "default"})
    assert dispatch(store) == [task_id]
    pid = view(store, task_id)["pid"]
    deadline = time.time() + 120
    while view(store, task_id)["status"] not in ENDED and time.time() < deadline:
        time.sleep(0.2)  # no dispatcher round meanwhile: the worker ends its task itself
    wait_until_exited(pid)
    dispatch(store)  # a round with no task running: it still collects the worker that ended
    assert pid not in zombie_children()
    assert view(store, task_id)["status"] == "completed"


def handlers(store, build) -> dict:
    """A tab's event handlers by name, and the default values of each one's inputs, from the page as built."""
    with gr.Blocks() as page:
        project, version = gr.Dropdown(["default"], value="default"), gr.Dropdown([], value=None)
        build(store, project, version)
    return {fn.name: (fn.fn, [block.value for block in fn.inputs]) for fn in page.fns.values()}


def last(outputs):
    """What the page shows once a handler that follows a task has finished."""
    return list(outputs)[-1]


def test_the_data_tabs_reclean_runs_as_a_task_and_selects_the_new_version(store, tmp_path):
    first = import_dataset(store, [corpus(tmp_path / "in")], name="tales")
    page = handlers(store, data_tab.build)
    on_reclean, defaults = page["on_reclean"]
    status, version, task_id, cancel_button = last(on_reclean(f"{first['dataset_id']}:1", "default", None,
                                                              *defaults[2:]))
    assert status.startswith("### Done: tales v2") and version.value == f"{first['dataset_id']}:2"
    assert task_id is None and cancel_button.visible is False
    with store.session() as session:
        [task] = session.scalars(select(Task)).all()
    assert (task.kind, task.status, task.params["version_id"]) == ("reclean", "completed", first["version_id"])
    assert task.pid not in (None, os.getpid())


@pytest.mark.slow
def test_automatic_metrics_run_as_a_task_and_their_table_shows(lab):  # noqa: F811
    store = lab["store"]
    on_compute, _ = handlers(store, lambda s, project, version: evaluate_tab.build(s, project))["on_compute"]
    shown = list(on_compute(lab["run"], "default", None))
    assert shown[0][0].startswith("**Computing metrics**")  # progress first, in the status line
    text, _curve, chart, table, task_id, _cancel = shown[-1]
    assert chart is not None and "perplexity" in table.headers and task_id is None
    with store.session() as session:
        task = session.scalars(select(Task).where(Task.kind == "metrics")).one()
    assert task.status == "completed" and task.pid not in (None, os.getpid())
    assert task.result["ref"] == f"{lab['run']}:4"

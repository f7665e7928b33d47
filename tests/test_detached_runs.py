"""A run goes on if the command that started it is interrupted: closing the browser or restarting the studio does
not stop it. The studio (killed with everything in its process group) and a `studio train` (interrupted as Ctrl-C
does: SIGINT to its whole process group) each leave a run that completes by itself, and a studio started again on
the same STUDIO_HOME shows it completed with its metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

from conftest import StudioProcess
from studio import processes
from studio.settings import load_settings
from studio.status import RUN_ENDED
from studio.store import open_store
from studio.store.tables import Run
from studio.training import jobs
from studio.training.runs import run_summary
from test_jobs import FAST, text_config
from test_web_train import home_with_corpus  # noqa: F401 - a fixture

STEPS = 40
SETTINGS = {**FAST, "max_steps": STEPS, "eval_steps": 20, "save_steps": STEPS, "sample_steps": 0}


def worker_pid(store, run_id: int) -> int | None:
    with store.session() as session:
        run = session.get(Run, run_id)
        return run.pid if run else None


def watch(store, run_id: int, predicate, timeout: float = 600) -> dict:
    """Polls the run's record, without dispatching (nothing here starts or reaps a worker), until ``predicate``
    holds. Fails at once when the run ends first, or when its worker is gone and nothing would ever end it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # (often: on an idle machine the whole run takes a few seconds)
        try:
            summary = run_summary(store, run_id)
        except ValueError:  # not made yet
            summary = None
        if summary and predicate(summary):
            return summary
        assert not (summary and ended(summary)), f"run {run_id} ended before that: {summary}"
        if summary and summary["status"] == "running" and not processes.process_alive(worker_pid(store, run_id)):
            again = run_summary(store, run_id)  # (it may have ended between the two reads)
            assert predicate(again) or ended(again), \
                f"the worker of run {run_id} died: {again}\n{jobs.log_tail(store, run_id)}"
            continue
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not get there in {timeout:.0f} s: {run_summary(store, run_id)}\n"
                         f"{jobs.log_tail(store, run_id)}")


def mid_run(summary: dict) -> bool:
    return summary["status"] == "running" and summary["steps"] >= 1


def ended(summary: dict) -> bool:
    return summary["status"] in RUN_ENDED


@contextmanager
def held_still(store, run_id: int):
    """The run's worker (accelerate's launcher and the processes under it) paused while the command that started it
    is killed, so that the kill lands mid-run however fast the machine trains. Signals sent meanwhile wait for it."""
    import psutil

    launcher = psutil.Process(worker_pid(store, run_id))
    worker = [launcher] + launcher.children(recursive=True)
    for process in worker:
        process.suspend()
    try:
        paused = run_summary(store, run_id)
        assert paused["status"] == "running" and paused["steps"] < STEPS, paused
        yield paused
    finally:
        for process in worker:
            try:
                process.resume()
            except psutil.NoSuchProcess:
                pass  # killed with the command: the test fails on that


def end_worker(store, run_id: int) -> None:
    """After a failed test: a detached worker outlives it, so end it here."""
    pid = worker_pid(store, run_id)
    if pid and processes.process_alive(pid):
        os.killpg(pid, signal.SIGKILL)


def assert_completed(done: dict) -> None:
    assert done["status"] == "completed" and done["steps"] == STEPS, done
    assert done["val_loss"]["best"] is not None and done["checkpoints"], done


@pytest.mark.slow
@pytest.mark.browser
def test_a_run_started_by_the_studio_completes_after_the_studio_is_killed(home_with_corpus, tmp_path,
                                                                          browser_page):
    store = open_store(load_settings(home=home_with_corpus))
    studio = StudioProcess(tmp_path / "studio.log", home_with_corpus, own_session=True)
    restarted, run_id = None, None
    try:
        studio.wait_until_up()
        # what the Train button does; the studio's dispatcher then starts the worker
        run_id = jobs.create_run(store, "1", "starter-text", "scratch", text_config(**SETTINGS))
        watch(store, run_id, mid_run, timeout=300)
        with held_still(store, run_id):
            os.killpg(studio.process.pid, signal.SIGKILL)  # the studio and everything in its process group
            studio.process.wait(timeout=30)
        assert_completed(watch(store, run_id, ended))

        restarted = StudioProcess(tmp_path / "restarted.log", home_with_corpus)
        page = browser_page
        page.goto(restarted.wait_until_up())
        page.get_by_role("tab", name="Train").click()
        page.locator("#run-select input").click()
        page.locator("li[data-testid=dropdown-option]").filter(has_text=f"#{run_id} ").first.click()
        page.wait_for_function(f"/completed · step {STEPS} \\/ {STEPS}.*best validation loss/"
                               ".test(document.querySelector('#train-progress')?.innerText || '')", timeout=60_000)
        page.wait_for_function("document.querySelectorAll('#loss-plot .mark-line path').length >= 2",
                               timeout=60_000)  # the train and validation curves, read back from the record
    finally:
        if run_id:
            end_worker(store, run_id)
        if studio.process.poll() is None:
            studio.stop()
        if restarted:
            restarted.stop()
        store.close()


@pytest.mark.slow
def test_a_run_completes_after_its_studio_train_command_is_interrupted(home_with_corpus, tmp_path):
    store = open_store(load_settings(home=home_with_corpus))
    settings = [f"{key}={str(value).lower() if isinstance(value, bool) else value}"
                for key, value in SETTINGS.items() if key != "max_steps"] + ["max_length=32"]
    home = {**os.environ, "STUDIO_HOME": str(home_with_corpus)}
    with open(tmp_path / "train.out", "w") as output:
        command = subprocess.Popen(
            [sys.executable, "-m", "studio.cli", "train", "--dataset", "1", "--model", "starter-text", "--method",
             "scratch", "--max-steps", str(STEPS)] + [arg for pair in settings for arg in ("--set", pair)],
            env=home, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True)  # a terminal's foreground job: a process group of its own
    try:
        watch(store, 1, mid_run, timeout=300)
        with held_still(store, 1):
            os.killpg(command.pid, signal.SIGINT)  # Ctrl-C: the terminal sends it to the job's whole process group
            assert command.wait(timeout=60) != 0  # the command was interrupted...
        assert_completed(watch(store, 1, ended))  # ...and its run was not
    finally:
        if command.poll() is None:
            command.kill()
        end_worker(store, 1)
        store.close()
    shown = subprocess.run([sys.executable, "-m", "studio.cli", "runs", "show", "1", "--json"], capture_output=True,
                           text=True, env=home, timeout=120)
    assert '"status": "completed"' in shown.stdout, shown.stdout + shown.stderr

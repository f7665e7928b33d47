"""Imports through the web page run in a background worker process (studio.tasks): the page shows their progress and
answers other requests meanwhile, a cancel leaves nothing half-written (the versions already stored untouched), and the
web process's memory does not grow with what is imported."""

from __future__ import annotations

import random
import re
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import StudioProcess
from leftovers import stored
from studio.data.service import import_dataset
from studio.settings import load_settings
from studio.store import open_store
from studio.store.tables import Task

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # slow: real-browser walkthroughs


def big_corpus(path: Path, paragraphs: int = 100_000) -> Path:
    """About 17 MB of text paragraphs: seconds of cleaning in the worker, and 250+ MB in whichever process reads it
    (so an import in the web process shows in its memory)."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]
    with open(path, "w") as out:
        for _ in range(paragraphs):
            out.write(" ".join(rng.choices(words, k=30)) + "\n\n")
    return path


def small_corpus(path: Path) -> Path:
    path.write_text("\n\n".join(f"Note {i}: the fox {i} and the hen {i * 3} walked to the barn." for i in range(20)))
    return path


@pytest.fixture
def web_store(web_home, tmp_path):
    """The studio's store, with one dataset version stored before the studio starts."""
    store = open_store(load_settings(home=web_home))
    kept = import_dataset(store, [small_corpus(tmp_path / "kept.txt")], name="kept")
    yield store, kept
    store.close()


@pytest.fixture
def studio(tmp_path, web_home, web_store):
    process = StudioProcess(tmp_path / "studio.log", web_home)
    process.wait_until_up()
    yield process
    process.stop()


def start_import(page, url: str, path: Path) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Data").click()
    page.locator("#data-upload input[type=file]").set_input_files(str(path))
    page.get_by_text("looks like").wait_for(timeout=60_000)  # uploaded and inspected
    page.locator("#data-import").click()


def summary_shows(page, pattern: str, timeout: float) -> str:
    page.wait_for_function(f"/{pattern}/.test(document.querySelector('#data-summary')?.innerText || '')",
                           timeout=timeout)
    return page.locator("#data-summary").inner_text()


def peak_memory_mb(pid: int) -> float:
    """The most memory the process has held since it started (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def test_an_import_runs_in_a_worker_shows_progress_and_a_cancel_leaves_nothing(studio, web_store, browser_page,
                                                                             tmp_path):
    store, kept = web_store
    before = stored(store)
    page = browser_page
    start_import(page, studio.url, big_corpus(tmp_path / "big.txt"))
    shown = summary_shows(page, "in a background process", 120_000)
    assert re.search(r"Importing · .+ · \d+%", shown)
    with store.session() as session:
        task = session.scalars(select(Task)).one()
    assert task.kind == "import" and task.status == "running"
    assert task.pid not in (None, studio.process.pid)  # the worker, not the web process

    urllib.request.urlopen(f"{studio.url}/config", timeout=30).read()  # the page's other requests are answered...
    with store.session() as session:
        assert session.get(Task, task.id).status == "running"  # ...while the import goes on, not after it

    page.locator("#data-import-cancel").click()
    assert "Cancelled: nothing was changed" in summary_shows(page, "Cancelled", 120_000)
    with store.session() as session:
        assert session.get(Task, task.id).status == "cancelled"
    assert stored(store) == before  # no upload, dataset, version, staged copy or scratch folder was left
    assert page.locator("#data-import-cancel").is_hidden()


def test_a_big_import_leaves_the_web_process_memory_flat(studio, browser_page, tmp_path):
    page = browser_page
    start_import(page, studio.url, small_corpus(tmp_path / "warm.txt"))  # the page's handlers run once first
    summary_shows(page, "items kept", 60_000)
    page.wait_for_function("/warm v1/.test(document.querySelector('#version-info')?.innerText || '')",
                           timeout=60_000)
    before = peak_memory_mb(studio.process.pid)

    start_import(page, studio.url, big_corpus(tmp_path / "big.txt"))
    assert "items kept" in summary_shows(page, "items kept", 300_000)
    page.wait_for_function("/big v1/.test(document.querySelector('#version-info')?.innerText || '')",
                           timeout=60_000)  # the new version is shown too (a preview, not 100,000 rows)
    grown = peak_memory_mb(studio.process.pid) - before
    assert grown < 60, f"the web process's peak memory grew by {grown:.0f} MB for a 17 MB import"

"""A bake-off started from the Model tab's panel in a real browser: the panel shows it queued or training at once,
then follows it, through the studio's own dispatcher, to its table and who won on what."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.data.service import import_dataset
from studio.settings import load_settings
from studio.store import open_store
from test_web_generate import pick
from test_web_walkthrough import MINUTES, assert_calm, press, wait_for_text

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(1200)]

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"


@pytest.fixture
def home_with_shapes(web_home, monkeypatch):
    # the studio started after this inherits it: one thread per worker, as on a busy two-core machine two threads
    # each wait for the other (see one_torch_thread)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    store = open_store(load_settings(home=web_home))
    import_dataset(store, [EXAMPLES / "shapes.zip"])
    store.close()


def test_a_bakeoff_started_in_the_page_shows_its_table(home_with_shapes, running_studio, browser_page):
    page = browser_page
    page.goto(running_studio)
    page.get_by_role("tab", name="Model").click()
    pick(page, "model-dataset", "shapes v1")
    page.locator("#model-working-on").get_by_text("shapes v1").wait_for(timeout=MINUTES)
    page.get_by_text("Bake-off: settle the choice on your data").click()
    models = page.locator("#bakeoff-models")
    models.get_by_label("starter-image-gan", exact=True).wait_for(timeout=MINUTES)  # the image architectures
    press(page, "#bakeoff-start")  # nothing ticked: refused, saying why
    wait_for_text(page, "#bakeoff-status", "compares 2 to 4 architectures \\(got 0\\)", MINUTES)
    models.get_by_label("starter-image", exact=True).check()
    models.get_by_label("starter-image-gan", exact=True).check()
    # a few seconds of training each (the recommended settings' steps are more: the budget ends them)
    page.locator("#bakeoff-minutes textarea, #bakeoff-minutes input").first.fill("0.1")
    press(page, "#bakeoff-start")
    # at once, not a stale view: the new bake-off, its runs queued or training
    shown = wait_for_text(page, "#bakeoff-status", "Bake-off #1 · (queued|training)", MINUTES)
    assert "starter-image: run #1" in shown and "starter-image-gan: run #2" in shown
    assert_calm(page, "the bake-off started")
    result = wait_for_text(page, "#bakeoff-result", "Which won on what", 15 * MINUTES)
    assert "seconds per sample (lower is better)" in result and "diversity (higher is better)" in result
    assert "won on seconds per sample (lower is better)" in result
    status = page.locator("#bakeoff-status").inner_text()
    assert "done" in status and "Sample set #1" in status and "Evaluate" in status
    assert_calm(page, "the bake-off's table")

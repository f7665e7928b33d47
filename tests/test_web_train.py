"""In a real browser: pick a dataset, start a starter-text run in the Train tab, and watch the loss plot
and the progress update while the run trains in its own process."""

from __future__ import annotations

import pytest

from studio.data.service import import_dataset
from studio.settings import load_settings
from studio.store import open_store


@pytest.fixture
def home_with_corpus(web_home, tmp_path):
    corpus = tmp_path / "tales.txt"
    corpus.write_text("\n\n".join(f"The {a} fox met the {b} hen by the {c} barn." for a in ("red", "quick", "old")
                                  for b in ("white", "brown", "tiny") for c in ("big", "green", "far", "old")))
    store = open_store(load_settings(home=web_home))
    import_dataset(store, [corpus], name="tales")
    store.close()
    return web_home


@pytest.mark.browser
def test_train_tab_starts_a_run_and_the_loss_plot_updates(home_with_corpus, running_studio, browser_page):
    page = browser_page
    page.goto(running_studio)
    page.locator("#dataset-version input").click()
    page.locator("li[data-testid=dropdown-option]").first.click()
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-intro").get_by_text("tales v1").wait_for(timeout=20_000)
    page.get_by_text("Training settings", exact=True).click()
    steps = page.get_by_label("max steps", exact=True)
    for _ in range(5):  # the model's recommended settings may still be arriving and overwrite a value typed early
        steps.fill("150")  # long enough (~10 s on an idle machine) to be seen running, not only completed
        steps.press("Tab")
        page.wait_for_timeout(1500)
        if steps.input_value() == "150":
            break
    assert steps.input_value() == "150"
    page.locator("#train-start").click()
    page.locator("#train-message").get_by_text("queued").wait_for(timeout=30_000)
    progress = page.locator("#train-progress")
    page.wait_for_function("/running · step [1-9]/.test(document.querySelector('#train-progress')?.innerText || '')",
                           timeout=180_000)
    first = progress.inner_text()
    plot_before = page.locator("#loss-plot").inner_html()
    page.wait_for_function(f"(document.querySelector('#train-progress')?.innerText || '') !== {first!r}",
                           timeout=120_000)
    page.wait_for_timeout(2500)  # one more refresh tick for the plot
    assert page.locator("#loss-plot").inner_html() != plot_before
    assert page.locator("#loss-plot canvas, #loss-plot svg").count() > 0
    page.wait_for_function("/completed/.test(document.querySelector('#train-progress')?.innerText || '')",
                           timeout=240_000)
    assert "best validation loss" in progress.inner_text()
    assert "checkpoint saved" in page.locator("#run-log textarea").input_value()


@pytest.mark.browser
def test_a_run_made_after_the_studio_started_is_listed_when_a_page_loads(home_with_corpus, running_studio,
                                                                         browser_page):
    from studio.training import jobs
    from studio.training.config import TrainConfig

    store = open_store(load_settings(home=home_with_corpus))  # e.g. a teammate's `studio train`, after start-up
    run = jobs.create_run(store, "1", "starter-text", "scratch", TrainConfig(max_steps=1))
    store.close()
    page = browser_page
    page.goto(running_studio)
    page.get_by_role("tab", name="Train").click()
    page.locator("#run-select input").click()
    page.locator("li[data-testid=dropdown-option]").filter(has_text=f"#{run} ").first.wait_for(timeout=20_000)

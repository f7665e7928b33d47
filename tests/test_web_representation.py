"""In a real browser: the Data tab's representation report shows its warnings and the items behind them, and an
edited word list changes the counts."""

from __future__ import annotations

import pytest

from studio.data.service import import_dataset
from studio.settings import load_settings
from studio.store import open_store

pytestmark = pytest.mark.slow  # a studio process and a browser


@pytest.fixture
def home_with_stories(web_home, tmp_path):
    corpus = tmp_path / "stories.txt"
    corpus.write_text("\n\n".join([f"Story {i}: he went to work as an engineer." for i in range(9)]
                                  + [f"Story {i}: she stayed at home." for i in range(9, 12)]))
    store = open_store(load_settings(home=web_home))
    import_dataset(store, [corpus], name="stories")
    store.close()
    return web_home


def wait_for_text(page, selector: str, text: str, timeout: float = 30_000) -> None:
    """Until the element's text holds ``text`` (a table's cells included, which Playwright counts as hidden)."""
    page.wait_for_function("([selector, text]) => (document.querySelector(selector)?.innerText || '').includes(text)",
                           arg=[selector, text], timeout=timeout)


@pytest.mark.browser
def test_the_data_tab_report_lists_warnings_the_items_behind_them_and_follows_an_edited_list(
        home_with_stories, running_studio, browser_page):
    page = browser_page
    page.goto(running_studio)
    page.locator("#dataset-version input").click()
    page.locator("li[data-testid=dropdown-option]").first.click()
    page.locator("#bias-panel").get_by_text("Representation report").first.click()
    page.locator("#bias-build").click()
    wait_for_text(page, "#bias-summary", "1 warning")
    wait_for_text(page, "#bias-warnings", "'male' is mentioned in 9 of the 12 items")
    assert page.locator("#bias-chart").locator("img, svg, canvas").count() > 0  # the bar chart was drawn

    page.locator("#bias-behind input").click()
    page.locator("li[data-testid=dropdown-option]").filter(has_text="warning").first.click()
    wait_for_text(page, "#bias-items", "Story 0: he went to work as an engineer.")

    page.locator("#lexicon-editor").get_by_text("Lexicons (word lists)").first.click()
    text = page.locator("#lexicon-text textarea")
    page.wait_for_function("() => (document.querySelector('#lexicon-text textarea')?.value || '').includes('[female]')")
    text.fill("[stories]\nstory\n[home]\nhome")
    page.locator("#lexicon-save").click()
    wait_for_text(page, "#lexicon-state", "Saved for this project: 2 group(s), 2 term(s)")
    page.locator("#bias-build").click()
    wait_for_text(page, "#bias-warnings", "'stories' is mentioned in 12 of the 12 items")
    page.locator("#lexicon-reset").click()
    wait_for_text(page, "#lexicon-state", "Back to the shipped list")
    assert "[female]" in text.input_value()

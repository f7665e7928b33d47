"""Projects in a real browser: typing a new name in the header creates the project, the dataset versions follow
the selected project, and a project is deleted only after its name is typed."""

from __future__ import annotations

import pytest

from studio.data.service import import_dataset
from studio.projects import create_project, list_projects
from studio.settings import load_settings
from studio.store import list_actions, open_store

pytestmark = pytest.mark.slow  # browser walkthroughs, studio processes: -m "not slow" leaves them out


def _notes(folder, name):
    path = folder / f"{name}.txt"
    path.write_text("\n\n".join(f"{name} paragraph {i} with some distinct words {i * 3}." for i in range(10)))
    return path


@pytest.fixture
def web_home_with_two_projects(web_home, tmp_path):
    store = open_store(load_settings(home=web_home))
    import_dataset(store, [_notes(tmp_path, "defaultnotes")], name="defaultnotes")
    import_dataset(store, [_notes(tmp_path, "teamnotes")], name="teamnotes", project="team")
    store.close()
    return web_home


def _pick_project(page, name: str) -> None:
    box = page.locator("#project input")
    box.click()
    box.fill(name)
    box.press("Enter")


@pytest.mark.browser
def test_projects_are_created_followed_and_deleted_from_the_header(web_home_with_two_projects, running_studio,
                                                                   browser_page):
    from test_web_lists import wait_for_option

    page = browser_page
    page.goto(running_studio)
    page.locator("#project input").wait_for(timeout=30_000)
    # each list read once it shows the project's own dataset, so that the other's absence means something
    assert "teamnotes" not in wait_for_option(page, "dataset-version", "defaultnotes")

    _pick_project(page, "team")
    assert "defaultnotes" not in wait_for_option(page, "dataset-version", "teamnotes")

    _pick_project(page, "lab")
    page.locator("#project-message").get_by_text("created").wait_for(timeout=30_000)
    store = open_store(load_settings(home=web_home_with_two_projects))
    assert "lab" in [p["name"] for p in list_projects(store)]

    page.get_by_text("Delete this project").click()
    page.locator("#project-delete").click()  # without the name typed: nothing happens
    page.locator("#project-message").get_by_text("Nothing was deleted").wait_for(timeout=30_000)
    assert "lab" in [p["name"] for p in list_projects(store)]
    page.locator("#project-delete-name textarea, #project-delete-name input").first.fill("lab")
    page.locator("#project-delete").click()
    page.locator("#project-message").get_by_text("deleted with").wait_for(timeout=30_000)
    assert [p["name"] for p in list_projects(store)] == ["default", "team"]
    assert [a["action"] for a in list_actions(store, project="lab")] == ["project.delete", "project.create"]
    store.close()


@pytest.mark.browser
def test_a_page_opened_later_lists_projects_made_since_the_studio_started(running_studio, browser_page, web_home):
    store = open_store(load_settings(home=web_home))
    create_project(store, "made-after-start")
    store.close()
    page = browser_page
    page.goto(running_studio)
    page.locator("#project input").click()
    page.get_by_role("option", name="made-after-start").wait_for(timeout=30_000)

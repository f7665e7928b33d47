"""The Share tab's handlers on a real tiny LoRA run (test_generation's lab) and a local Hub stand-in: export with
the card shown and a zip to download, push with the token and private by default, readable failures."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import gradio as gr
import pytest
from sqlalchemy import select

from hub_standin import HubStandIn, keep_the_client_local
from studio.store.tables import Task
from studio.sharing.export import export_checkpoint
from studio.ui import export_tab
from test_generation import lab  # noqa: F401 - a store with a tiny LoRA run (checkpoints at steps 2 and 4)
from test_web_generate import home_with_run, pick  # noqa: F401 - a STUDIO_HOME with a tiny LoRA run
from test_text_backend import rows, tiny_folder  # noqa: F401 - module-scoped fixtures

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # slow: a real-browser walkthrough


@pytest.fixture
def hub_store(lab, monkeypatch):  # noqa: F811
    """The lab's store pointed at a Hub stand-in."""
    from studio.settings import load_settings
    from studio.store import open_store

    keep_the_client_local(monkeypatch)
    with HubStandIn() as hub:
        store = open_store(load_settings(home=lab["home"], hub_endpoint=hub.url))
        yield store, hub
        store.close()


def handlers(store) -> dict:
    """The tab's event handlers by name, from the page as the app builds it."""
    with gr.Blocks() as page:
        project, version = gr.Dropdown(["default"], value="default"), gr.Dropdown([], value=None)
        export_tab.build(store, project, version)
    return {fn.name: fn.fn for fn in page.fns.values()}


def export(page: dict, ref, fmt: str, license: str, previous: dict | None = None) -> tuple:
    """The Share tab's export as the page shows it once its background task has ended: (export, status, zip,
    card); the task was run by a worker process."""
    *shown, task_id, cancel = list(page["on_export"](ref, fmt, license, "default", previous, None))[-1]
    assert task_id is None and cancel.visible is False  # nothing left to cancel
    return tuple(shown)


def test_export_shows_the_card_and_a_zip_then_pushes_privately(lab, hub_store):  # noqa: F811
    store, hub = hub_store
    run = lab["run"]
    assert (f"run {run} · lora · step 4 (last) · text · tiny-llama", f"{run}:4") in export_tab.checkpoint_choices(store)
    assert export_tab.checkpoint_choices(store, "another-project") == []  # the list follows the chosen project
    page = handlers(store)
    found, status, download, card = export(page, f"{run}:4", "peft", "mit")
    assert status.startswith("Exported") and found["format"] == "peft"
    with zipfile.ZipFile(download) as zipped:
        assert {"README.md", "loss.png", "adapter_model.safetensors"} <= set(zipped.namelist())
    assert "```yaml" in card and "license: mit" in card and "---\n" not in card[:4]
    assert f"](/gradio_api/file={Path(found['path']) / 'loss.png'})" in card
    assert Path(found["path"]).is_relative_to(store.path("exports"))
    with store.session() as session:
        task = session.scalars(select(Task).where(Task.kind == "export")).one()
    assert task.status == "completed" and task.pid not in (None, os.getpid())  # a worker process exported it

    pushed = page["on_push"](found, "ana/tiny", "hf_typed", True, None, None)
    assert pushed.startswith(f"Pushed {len(found['files'])} files to [ana/tiny]({hub.url}/ana/tiny) (private model")
    assert hub.received.repos[0]["visibility"] == "private" and set(hub.received.tokens) == {"hf_typed"}
    assert hub.received.files["models/ana/tiny"]["README.md"] == (Path(found["path"]) / "README.md").read_bytes()


def test_the_tab_says_what_is_missing_or_wrong_in_words(lab, hub_store):  # noqa: F811
    store, hub = hub_store
    page = handlers(store)
    assert export(page, None, "merged", "other")[1].startswith("**Could not do it:** choose a run")
    refused = export(page, f"{lab['run']}:4", "diffusers-lora", "other")[1]
    assert "diffusers-lora is for image LoRA runs" in refused
    assert "Export first" in page["on_push"](None, "ana/tiny", "hf_x", True, None, None)
    found = export_checkpoint(store, f"{lab['run']}:2", "peft", "other")
    assert "A token is needed" in page["on_push"](found, "ana/tiny", "", True, None, None)
    hub.mode = "401"
    failed = page["on_push"](found, "ana/tiny", "hf_bad", True, None, None)
    assert "did not accept the token (HTTP 401" in failed and f"kept in {found['path']}" in failed
    assert "Pick a dataset version first" in page["on_push_version"](None, "ana/data", "hf_x", True, "other", None,
                                                                     None)


def test_a_refused_push_shows_what_was_typed_as_text_not_html(lab, hub_store):  # noqa: F811
    store, _hub = hub_store
    found = export_checkpoint(store, f"{lab['run']}:2", "peft", "other")
    refused = handlers(store)["on_push"](found, "<img src=x onerror=alert(1)>", "hf_x", True, None, None)
    assert "is not a Hub repository id" in refused and "&lt;img src=x" in refused and "<img" not in refused


def test_a_dataset_version_is_pushed_from_the_shared_selector(lab, hub_store):  # noqa: F811
    store, hub = hub_store
    page = handlers(store)
    status = page["on_push_version"](f"{lab['dataset']}:1", "ana/stories", "hf_x", False, "cc-by-4.0", None, None)
    assert status.startswith("Pushed") and "(public dataset repository)" in status
    arrived = hub.received.files["datasets/ana/stories"]
    assert "license: cc-by-4.0" in arrived["README.md"].decode() and "train.jsonl" in arrived


def test_the_studio_has_a_share_tab_after_evaluate(lab):  # noqa: F811
    from studio.ui.app import build_app

    app = build_app(lab["store"])
    tabs = [block.label for block in app.blocks.values() if isinstance(block, gr.Tab)]
    assert tabs.index("Share") == tabs.index("Evaluate") + 1


@pytest.fixture
def studio_hub(monkeypatch):
    """A Hub stand-in the studio subprocess pushes to (request it before running_studio)."""
    with HubStandIn() as hub:
        for name, value in (("STUDIO_HUB_ENDPOINT", hub.url), ("HF_ENDPOINT", hub.url), ("HF_HUB_DISABLE_XET", "1")):
            monkeypatch.setenv(name, value)  # HF_ENDPOINT: the client's own side requests stay local too
        yield hub


@pytest.mark.browser
def test_share_tab_exports_shows_the_card_and_pushes(home_with_run, studio_hub, running_studio, browser_page):
    page = browser_page
    page.goto(running_studio)
    page.get_by_role("tab", name="Share").click()
    pick(page, "share-checkpoint", "step 2")
    pick(page, "share-format", "PEFT adapter")
    page.locator("#share-export").click()
    page.locator("#share-card").get_by_text("How to use").wait_for(timeout=60_000)
    assert "license: other" in page.locator("#share-card").inner_text()
    page.wait_for_function("document.querySelector('#share-card img')?.naturalWidth > 0", timeout=20_000)
    assert ".zip" in page.locator("#share-download").inner_text()
    page.locator("#share-repo input, #share-repo textarea").first.fill("ana/tiny")
    page.locator("#share-token input, #share-token textarea").first.fill("hf_typed")
    page.locator("#share-push").click()
    page.locator("#share-push-status").get_by_text("Pushed").wait_for(timeout=60_000)
    assert "private model repository" in page.locator("#share-push-status").inner_text()
    assert studio_hub.received.repos[0]["visibility"] == "private"
    assert "hf_typed" in studio_hub.received.tokens
    assert {"README.md", "adapter_model.safetensors", "loss.png"} <= set(studio_hub.received.files["models/ana/tiny"])

    # A refused export says why beside the last good one, which stays to download (and is what a push sends).
    pick(page, "share-format", "diffusers LoRA")
    page.locator("#share-export").click()
    status = page.locator("#share-export-status")
    status.get_by_text("diffusers-lora is for image LoRA runs").wait_for(timeout=120_000)
    assert "Could not do it" in status.inner_text() and "The last export is kept below" in status.inner_text()
    assert ".zip" in page.locator("#share-download").inner_text()
    assert "How to use" in page.locator("#share-card").inner_text()


def test_two_exports_of_one_checkpoint_within_a_second_get_two_folders(lab, hub_store, monkeypatch):  # noqa: F811
    import datetime as real

    class Frozen(real.datetime):  # both exports in the same second, as a fast machine makes them
        @classmethod
        def now(cls, tz=None):
            return real.datetime(2026, 12, 3, 23, 0, 0, tzinfo=tz)

    monkeypatch.setattr("studio.sharing.export.datetime", Frozen)
    store, _hub = hub_store
    first = export_checkpoint(store, f"{lab['run']}:2", "peft", "other")
    second = export_checkpoint(store, f"{lab['run']}:2", "peft", "other")
    assert first["path"] != second["path"] and Path(first["path"]).is_dir() and Path(second["path"]).is_dir()

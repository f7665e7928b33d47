"""Settings forms in a real browser: an image starter run made before the studio starts, generated in the
Generate tab with its default settings (guidance left empty: the model's default), then with a value the field
does not take, which must come back as one readable line, not a pydantic dump."""

from __future__ import annotations

import pytest

from studio.data.service import import_dataset
from studio.settings import load_settings
from studio.store import open_store
from studio.training.config import TrainConfig
from test_generation import run_in_process
from test_web_generate import pick

pytestmark = pytest.mark.slow  # browser walkthroughs, studio processes: -m "not slow" leaves them out


@pytest.fixture
def image_run(web_home, tmp_path):
    """An image starter run (one step, one checkpoint) in the studio's home; returns the home."""
    from studio.examples.shapes import make_shapes

    make_shapes(tmp_path / "shapes", 1, 0)
    store = open_store(load_settings(home=web_home))
    dataset = str(import_dataset(store, [tmp_path / "shapes"], name="shapes")["dataset_id"])
    run_in_process(store, dataset, "starter-image", "scratch",
                   TrainConfig(max_steps=1, save_steps=1, eval_steps=1, warmup_steps=0, per_device_train_batch_size=4,
                               use_cpu=True, image={"resolution": 16}))
    store.close()
    return web_home


@pytest.mark.browser
def test_image_generation_with_default_settings_and_a_readable_bad_value(image_run, running_studio, browser_page):
    from studio.generation.service import get_set

    page = browser_page
    page.goto(running_studio)
    page.get_by_role("tab", name="Generate").click()
    pick(page, "gen-base", "starter-image")
    page.locator("#gen-prompts textarea").fill("a red circle")
    page.locator("#gen-settings").get_by_text("Settings", exact=True).first.click()
    image_settings = page.locator("#gen-settings-image").first  # (Gradio gives a group's id to two nested divs)
    image_settings.wait_for(state="visible", timeout=30_000)
    guidance = image_settings.get_by_label("guidance scale")
    assert guidance.input_value() == ""  # empty: the model's default, not 0 (which would ignore the prompt)
    status = page.locator("#gen-status")
    page.locator("#gen-start").click()
    page.wait_for_function("/Done|Failed|Could not do it/.test(document.querySelector('#gen-status')?.innerText || '')",
                           timeout=180_000)
    assert "Done" in status.inner_text(), status.inner_text()
    store = open_store(load_settings(home=image_run))
    try:
        assert get_set(store, 1)["settings"]["guidance_scale"] is None
    finally:
        store.close()

    guidance.fill("lots")
    page.locator("#gen-start").click()
    page.wait_for_function("/must be/.test(document.querySelector('#gen-status')?.innerText || '')",
                           timeout=60_000)
    assert status.inner_text().strip() == ("Could not do it: guidance scale (guidance_scale): must be a number between 0 and 50, or "
                                           "empty for the default (got 'lots')")
    body = page.locator("body").inner_text()
    assert "input_value" not in body and "pydantic" not in body

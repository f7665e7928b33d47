"""The Generate tab in a real browser, and its Gradio API endpoint through gradio_client: a tiny Llama with a
LoRA run (checkpoints at steps 2 and 4) trained by the worker's code before the studio starts."""

from __future__ import annotations

import pytest

from studio.data.service import import_dataset
from studio.examples.text import make_corpus
from studio.settings import load_settings
from studio.store import open_store
from studio.training.config import TrainConfig
from test_generation import run_in_process
from test_text_backend import rows, tiny_folder  # noqa: F401 - module-scoped fixtures

pytestmark = pytest.mark.slow  # browser walkthroughs, studio processes: -m "not slow" leaves them out


@pytest.fixture
def home_with_run(web_home, tmp_path, tiny_folder):  # noqa: F811
    corpus = tmp_path / "stories.txt"
    corpus.write_text(make_corpus(size_kb=12, seed=3))
    store = open_store(load_settings(home=web_home))
    dataset = str(import_dataset(store, [corpus], name="stories")["dataset_id"])
    config = TrainConfig(max_steps=4, save_steps=2, eval_steps=100, learning_rate=5e-2, warmup_steps=0,
                         per_device_train_batch_size=4, seed=0, use_cpu=True, text={"max_length": 64})
    run = run_in_process(store, dataset, str(tiny_folder), "lora", config)
    store.close()
    return {"run": run, "model": str(tiny_folder)}


def pick(page, field: str, text: str) -> None:
    page.locator(f"#{field} input").click()
    page.locator("li[data-testid=dropdown-option]").filter(has_text=text).first.click()


@pytest.mark.browser
def test_generate_tab_shows_two_variants_side_by_side(home_with_run, running_studio, browser_page):
    page = browser_page
    page.goto(running_studio)
    page.get_by_role("tab", name="Generate").click()
    pick(page, "gen-base", "tiny-llama")
    pick(page, "gen-variants", "step 2")  # the last checkpoint (step 4) is picked already
    page.locator("#gen-prompts textarea").fill("Once upon a time\nMia found")
    page.locator("#gen-seed input").fill("7")
    page.locator("#gen-start").click()
    page.wait_for_function("/Done/.test(document.querySelector('#gen-status')?.innerText || '')", timeout=120_000)
    headers = page.locator("#gen-grid th").all_inner_texts()
    assert headers[0] == "prompt" and len(headers) == 4  # base, step 4, step 2
    assert any("step 2" in h for h in headers) and any("base" in h.lower() for h in headers)
    outputs = page.locator("#gen-grid td .text").all_inner_texts()
    assert len(outputs) == 6 and all(text.strip() for text in outputs)  # 2 prompts x 3 variants, none empty
    assert "sample set #1" in page.locator("#gen-status").inner_text()


def test_generate_api_endpoint_through_gradio_client(home_with_run, running_studio):
    from gradio_client import Client

    client = Client(running_studio, verbose=False)
    result = client.predict(["base", str(home_with_run["run"])], ["Once upon a time"], 3, 2,
                            {"max_new_tokens": 8, "temperature": 0}, None, api_name="/generate")  # greedy: a tiny model's
    # near-even logits let one seed's sampling noise pick the same tokens, trained or not
    assert result["status"] == "completed" and result["sample_set_id"] == 1
    run = str(home_with_run["run"])
    by_variant = {}
    for sample in result["samples"]:
        by_variant.setdefault(sample["variant"].split(":")[0], []).append(sample)
    assert sorted(by_variant) == sorted(["base", run]) and all(len(v) == 2 for v in by_variant.values())
    assert [s["seed"] for s in by_variant["base"]] == [s["seed"] for s in by_variant[run]]  # same seeds
    assert by_variant["base"][0]["seed"] == 3
    assert by_variant["base"][0]["text"] != by_variant[run][0]["text"]  # training made the difference

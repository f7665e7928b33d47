"""The Deploy tab: what it shows of a deployment (memory, quality check, plots' frames, the example) from its parts,
and in a real browser a tiny LoRA run (test_web_generate's) deployed, followed from starting to running without a
refresh, called with the official openai client through a key made in the tab, its live metrics going up while the
page is open, its feedback made a dataset version the pickers offer, the key revoked, and the deployment stopped."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from studio.serving.service import DeployError
from studio.ui import deploy_tab
from test_web_generate import home_with_run, pick  # noqa: F401 - a STUDIO_HOME with a tiny LoRA run
from test_web_lists import wait_for_option
from test_web_walkthrough import TROUBLE, assert_calm, wait_for_text
from test_text_backend import rows, tiny_folder  # noqa: F401 - module-scoped fixtures

MINUTE = 60_000


def test_empty_address_fields_are_the_defaults_and_a_bad_port_is_said_in_words():
    assert deploy_tab.address("", "") == ("127.0.0.1", None)
    assert deploy_tab.address(" 0.0.0.0 ", " 8080 ") == ("0.0.0.0", 8080)
    for typed in ("80a", "0", "70000", "-1", "1.5"):
        with pytest.raises(DeployError, match=r"^port: a whole number from 1 to 65535, or empty for a free one"):
            deploy_tab.address(None, typed)


def test_memory_and_quality_are_shown_once_the_deployment_reported_them():
    assert deploy_tab.weight_text({}) == "" and deploy_tab.quality_text({}) == ""
    plain = {"quantize": {"mode": "none", "weight_bytes_before": 3 * 2**20, "weight_bytes_after": 3 * 2**20}}
    assert deploy_tab.weight_text(plain) == "3.0 MiB" and deploy_tab.quality_text(plain) == ""
    int8 = {"quantize": {"mode": "int8", "weight_bytes_before": 4 * 2**20, "weight_bytes_after": 2 * 2**20},
            "quality": {"metric": "perplexity", "before": 31.2, "after": 31.456, "rows": 12}}
    assert deploy_tab.weight_text(int8) == "4.0 MiB → 2.0 MiB (0.50×)"
    assert deploy_tab.quality_text(int8) == "perplexity 31.20 → 31.46 (12 rows)"


def test_the_quality_panel_says_its_numbers_and_what_it_cannot_tell_yet():
    counts = {"requests": 6, "answered": 5, "errors": 1, "cache_hits": 2, "rated": 4, "up": 3, "down": 1}
    text = deploy_tab.panel_markdown({"window": 6, "counts": counts, "blocklist_share": 0.2, "thumbs_down_share": 0.25,
                                      "diversity": {"distinct_1": 0.5, "distinct_2": None, "outputs": 5}})
    assert "6 requests, 5 answered, 1 refused or failed, 2 from the cache" in text
    assert "distinct-1 0.50, distinct-2 –" in text and "blocklist hits: 20% of the answers" in text
    assert "thumbs down: 25% of 4 rated (3 up, 1 down)" in text
    media = deploy_tab.panel_markdown({"window": 0, "counts": {**counts, "rated": 0, "up": 0, "down": 0},
                                       "blocklist_share": None, "thumbs_down_share": None,
                                       "diversity": {"pairwise_distance": 0.1234, "outputs": 2}})
    assert "mean pairwise distance 0.123" in media and "thumbs down: – of 0 rated" in media


def test_nf4_is_offered_only_with_a_gpu():
    assert [value for _, value in deploy_tab.quantize_choices(False)] == ["none", "int8"]
    assert [value for _, value in deploy_tab.quantize_choices(True)] == ["none", "int8", "nf4"]


def test_the_plots_draw_live_and_stored_points_as_lines_of_their_own():
    live = [{"time": 1_700_000_000.0, "requests_per_minute": 12.0, "p50_ms": 8.0, "p95_ms": 20.0, "error_rate": 0.0,
             "cache_hit_rate": None}]
    stored = [{"minute": "2023-11-14T22:12:00+00:00", "requests": 3, "p50_ms": 7.0, "p95_ms": 9.0,
               "error_rate": 0.25, "cache_hit_rate": 0.5},
              {"minute": "2023-11-14T22:13:00+00:00", "requests": 0, "p50_ms": None, "p95_ms": None,
               "error_rate": None, "cache_hit_rate": None}]
    frames = deploy_tab.plot_frames(live, stored)
    assert list(frames["requests"]["series"]) == ["live", "stored", "stored"]  # a quiet minute: 0 requests
    assert list(frames["requests"]["requests per minute"]) == [12.0, 3.0, 0.0]
    assert sorted(frames["latency"]["series"]) == ["live p50", "live p95", "stored p50", "stored p95"]
    assert list(frames["cache"]["series"]) == ["stored"]  # no value, no point
    times = list(frames["errors"]["time"])  # both sources on one time axis, in UTC
    assert [str(t) for t in times] == ["2023-11-14 22:13:20", "2023-11-14 22:12:00"]


def test_the_example_calls_the_first_model_with_a_key_from_the_environment():
    found = {"url": "http://127.0.0.1:8123", "models": [{"name": "run-1-step-4", "ref": "1:4"}]}
    curl, python = deploy_tab.example_code(found, "text")
    assert "curl http://127.0.0.1:8123/v1/chat/completions" in curl and '"model": "run-1-step-4"' in curl
    assert 'OpenAI(base_url="http://127.0.0.1:8123/v1", api_key=os.environ["STUDIO_API_KEY"])' in python
    compile(python, "example.py", "exec")  # what people paste runs
    assert json.loads(re.search(r"-d '(.*)'", curl).group(1))["max_tokens"] == 48
    for modality, route in (("image", "images/generations"), ("audio", "audio/speech")):
        curl, python = deploy_tab.example_code(found, modality)
        assert f"/v1/{route}" in curl
        compile(python, "example.py", "exec")


def test_the_studio_has_a_deploy_tab_after_share(store):
    import gradio as gr

    from studio.ui.app import build_app

    tabs = [block.label for block in build_app(store).blocks.values() if isinstance(block, gr.Tab)]
    assert tabs.index("Deploy") == tabs.index("Share") + 1


# ----------------------------------------------------------------------------- in a real browser

def live_count(page) -> int:
    """The request count of the live line ("N requests since it started")."""
    text = wait_for_text(page, "#deploy-live", r"[0-9,]+ requests since it started", MINUTE)
    return int(re.search(r"([0-9,]+) requests since it started", text).group(1).replace(",", ""))


def wait_for_lines(page, plot: str, names: list[str]) -> None:
    """Waits until the plot draws (Vega's SVG legend names) every line of ``names``."""
    page.wait_for_function(f"""() => {{
        const shown = [...document.querySelectorAll('#deploy-plot-{plot} .role-legend-label text')]
            .map(t => t.textContent);
        return {json.dumps(names)}.every(name => shown.includes(name));
    }}""", timeout=MINUTE)


@pytest.fixture
def no_deployment_left(web_home):
    """Whatever the test does, every deployment it started is stopped at its end: their processes run detached and
    would outlive the studio and the test."""
    yield
    from studio.serving.service import list_deployments, stop_deployment
    from studio.settings import load_settings
    from studio.status import DEPLOY_ACTIVE
    from studio.store import open_store

    store = open_store(load_settings(home=web_home))
    try:
        for found in list_deployments(store):
            if found["status"] in DEPLOY_ACTIVE:
                stop_deployment(store, found["deployment_id"])
    finally:
        store.close()


def post_feedback(url: str, key: str, response_id: str, rating: str) -> dict:
    request = urllib.request.Request(f"{url}/v1/feedback", method="POST",
                                     data=json.dumps({"id": response_id, "rating": rating}).encode(),
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.usefixtures("one_torch_thread", "no_deployment_left")
def test_deploy_tab_serves_a_checkpoint_watches_it_and_turns_its_feedback_into_data(home_with_run, running_studio,
                                                                                 browser_page):
    from openai import AuthenticationError, OpenAI

    page = browser_page
    page.goto(running_studio)
    page.get_by_role("tab", name="Deploy").click()
    pick(page, "deploy-checkpoint", "step 4")
    wait_for_option(page, "deploy-variants", "step 2")  # the same run's other checkpoint may be served beside it
    page.locator("#deploy-start").click()
    wait_for_text(page, "#deploy-message", r"is starting in its own process", MINUTE)
    assert "starting" in page.locator("#deploy-table").inner_text()
    # No button is pressed from here on: the list and the picked deployment follow it to running.
    wait_for_text(page, "#deploy-table", r"\brunning\b", 5 * MINUTE)
    details = wait_for_text(page, "#deploy-details", r"Serving at", MINUTE)
    url = re.search(r"Serving at (http://\S+)/v1", details).group(1)
    assert page.locator("#deploy-details a", has_text="try-it page").get_attribute("href") == f"{url}/"
    assert "MiB" in page.locator("#deploy-table").inner_text()  # the weight memory it reported
    page.get_by_text("Call it from your code").click()
    page.locator("#deploy-python").get_by_text(f'base_url="{url}/v1"').wait_for(timeout=MINUTE)

    page.locator("#deploy-key-name input").fill("content-team")
    page.locator("#deploy-key-add").click()
    wait_for_text(page, "#deploy-key-message", r"Key content-team made", MINUTE)
    key = page.locator("#deploy-key-shown textarea, #deploy-key-shown input").first.input_value()
    assert key.startswith("gs-") and "content-team" in page.locator("#deploy-keys").inner_text()

    client = OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)
    model = client.models.list().data[0].id
    before = live_count(page)
    asked = {"model": model, "messages": [{"role": "user", "content": "Once upon a time"}], "max_tokens": 8}
    liked = client.chat.completions.create(**asked, seed=1)
    disliked = client.chat.completions.create(**asked, seed=2)
    assert liked.choices[0].message.content and liked.id != disliked.id
    page.wait_for_function(f"""() => {{
        const m = /([0-9,]+) requests since it started/.exec(document.querySelector('#deploy-live')?.innerText || '');
        return m && parseInt(m[1].replace(/,/g, '')) >= {before + 2};
    }}""", timeout=MINUTE)  # live: the count rose while the page was open
    wait_for_lines(page, "requests", ["live", "stored"])
    wait_for_lines(page, "latency", ["live p50", "live p95", "stored p50", "stored p95"])

    assert post_feedback(url, key, liked.id, "up")["rating"] == "up"
    post_feedback(url, key, disliked.id, "down")
    wait_for_text(page, "#deploy-quality", r"thumbs down: 50% of 2 rated", MINUTE)
    assert re.search(r"\b2 answered\b", page.locator("#deploy-quality").inner_text())
    page.locator("#deploy-feedback").click()
    made = wait_for_text(page, "#deploy-feedback-message", r"made from the feedback", 2 * MINUTE)
    assert "1 liked answers (SFT), 1 liked-vs-disliked pairs (DPO), 2 thumbs rows (KTO)" in made
    version = re.search(r"Dataset (\S+ v\d+)", made).group(1)
    wait_for_option(page, "dataset-version", version)  # the pickers offer it, no refresh

    pick(page, "deploy-key-pick", "content-team")
    page.locator("#deploy-key-revoke").click()
    wait_for_text(page, "#deploy-key-message", r"Key content-team revoked", MINUTE)
    with pytest.raises(AuthenticationError):
        client.chat.completions.create(**asked, seed=3)

    page.locator("#deploy-stop").click()
    wait_for_text(page, "#deploy-control-message", r"stopped", MINUTE)
    wait_for_text(page, "#deploy-table", r"\bstopped\b", MINUTE)
    wait_for_text(page, "#deploy-live", r"Not serving \(stopped\)", MINUTE)
    assert_calm(page, "deploy")
    assert not TROUBLE.search(page.locator("#deploy-details").inner_text())


def test_the_list_refresh_leaves_the_picked_deployment_alone_unless_it_is_gone(tmp_path):
    """The lists-changed handler gets the pick as it was when the lists changed; writing it back would undo a pick
    made since. Only a deployment no longer listed is unpicked."""
    from studio.settings import load_settings
    from studio.status import DeployStatus
    from studio.store import open_store
    from studio.store.tables import Deployment
    from studio.ui.app import build_app

    store = open_store(load_settings(home=tmp_path / "home"))
    with store.session() as session:
        rows = [Deployment(name=name, project="default", models=[{"name": "base", "ref": "base"}],
                           status=DeployStatus.STOPPED)
                for name in ("tales", "poems")]
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
    app = build_app(store)
    picker = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "deploy-pick")
    [on_lists] = [f.fn for f in app.fns.values() if f.fn is not None and f.fn.__name__ == "on_lists"
                  and picker in f.outputs]
    table, dropdown = on_lists("default", ids[0])
    assert "value" not in dropdown.constructor_args and [c[1] for c in dropdown.constructor_args["choices"]] == ids[::-1]
    with store.session() as session:
        session.delete(session.get(Deployment, ids[0]))
    table, dropdown = on_lists("default", ids[0])
    assert dropdown.constructor_args["value"] is None
    store.close()

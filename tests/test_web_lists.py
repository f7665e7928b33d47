"""In a real browser: the lists follow what just happened (a run, checkpoint or sample set made anywhere shows in every
list without a click), each tab says which dataset version it works on and changes it in place, stale messages go,
and the page reads right (counts people use, headers on one line, short distinct chart labels, one A and one B, no
emoji, which a machine without an emoji font shows as empty boxes). A refused export: test_web_share."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from media_factory import make_zip, photo
from studio.data.service import import_dataset
from studio.generation.cache import ModelCache
from studio.generation.service import generate_set
from studio.settings import load_settings
from studio.store import open_store
from studio.training.config import TrainConfig
from studio.training.runs import run_summary
from test_generation import add_run, run_in_process
from test_text_backend import rows, tiny_folder  # noqa: F401 - module-scoped fixtures
from test_web_generate import home_with_run, pick  # noqa: F401 - a STUDIO_HOME with a tiny LoRA run
from test_web_train import home_with_corpus  # noqa: F401 - a STUDIO_HOME with the "tales" text dataset

pytestmark = pytest.mark.slow  # browser walkthroughs, studio processes: -m "not slow" leaves them out

STUDIO = Path(__file__).resolve().parents[1] / "studio"
# Emoji and pictographs: U+2300-23FF (⏳ ⏹), U+2600-27BF (⚠ ✅ ❌), U+2B00-2BFF, U+1F000-1FAFF and the emoji
# variation selector. Plain arrows, dots and block elements (→ · ▌) are in every font and allowed.
EMOJI = re.compile("[\u2300-\u23ff\u2600-\u27bf\u2b00-\u2bff\U0001f000-\U0001faff\ufe0f]")

# Every character of the page's text (hidden tabs included), not scripts or styles.
PAGE_TEXT = """() => {
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const parts = [];
    while (walker.nextNode()) {
        const parent = walker.currentNode.parentElement;
        if (parent && !['SCRIPT', 'STYLE'].includes(parent.tagName)) parts.push(walker.currentNode.textContent);
    }
    return parts.join(' ');
}"""


def assert_no_emoji(page) -> None:
    found = sorted(set(EMOJI.findall(page.evaluate(PAGE_TEXT))))
    assert not found, f"emoji in the page: {found}"


def wait_for_option(page, field: str, text: str, timeout: float = 60_000) -> str:
    """Opens the ``field`` dropdown and waits until it offers an option containing ``text`` (the list updates while
    open); closes it again (leaving the field, as a person does: Escape may leave it open, and the next click shut).
    Returns the text of every option then offered: what is missing from it is missing from the loaded list."""
    box = page.locator(f"#{field} input")
    box.click()
    options = page.locator("li[data-testid=dropdown-option]")
    options.filter(has_text=text).first.wait_for(timeout=timeout)
    offered = " ".join(options.all_inner_texts())
    box.blur()
    return offered


def image_zip(path: Path, count: int, copies: int) -> Path:
    """``count`` distinct pictures and ``copies`` long-named copies of some, each with a same-name caption file: twice
    as many files as items. The copies' removal fills the cleaning report's examples column with long text."""
    members = {}
    for index in range(count + copies):
        picture = io.BytesIO()
        photo(128, seed=index % count).save(picture, format="PNG")
        name = f"picture_{index}" if index < count else f"a_copy_of_picture_{index % count}_kept_under_a_long_name"
        members[f"pics/{name}.png"] = picture.getvalue()
        members[f"pics/{name}.txt"] = f"picture number {index % count}"
    return make_zip(path, members)


# ----------------------------------------------------------------------------- lists follow what happened

@pytest.mark.browser
def test_a_run_and_a_sample_set_made_elsewhere_appear_in_every_list_without_a_click(home_with_run, web_home,
                                                                                    running_studio, browser_page):
    store = open_store(load_settings(home=web_home))
    config = TrainConfig(max_steps=4, save_steps=2, eval_steps=100, learning_rate=5e-2, warmup_steps=0,
                         per_device_train_batch_size=4, seed=0, use_cpu=True, text={"max_length": 64})
    page = browser_page
    try:
        # A run made after start-up: listed once the page has loaded (what the page load refreshes)...
        loaded = add_run(store, home_with_run["run"])
        page.goto(running_studio)
        page.get_by_role("tab", name="Train").click()
        wait_for_option(page, "run-select", f"#{loaded} ")
        # ...and one made while the page is open (a teammate's `studio train`): no page load, no refresh button.
        dataset = run_summary(store, home_with_run["run"])["dataset"]
        fresh = run_in_process(store, dataset, home_with_run["model"], "lora", config)
        wait_for_option(page, "run-select", f"#{fresh} ")
        page.get_by_role("tab", name="Generate").click()
        wait_for_option(page, "gen-variants", f"run {fresh} · lora · step 4")  # the base was picked by itself
        page.get_by_role("tab", name="Share").click()
        wait_for_option(page, "share-checkpoint", f"run {fresh} · lora · step 2")
        page.get_by_role("tab", name="Evaluate").click()
        page.get_by_text("Across a run's checkpoints").click()
        wait_for_option(page, "eval-run", f"#{fresh} ")

        made = generate_set(store, ["base", str(fresh)], ["Once upon a time"], seed=1,
                            settings={"max_new_tokens": 4}, cache=ModelCache(2**34))
        wait_for_option(page, "rate-set", f"#{made} ")
        wait_for_option(page, "board-set", f"#{made} ")
        page.get_by_role("tab", name="Generate").click()
        page.get_by_text("Sample sets", exact=True).click()
        wait_for_option(page, "gen-set", f"#{made} ")
    finally:
        store.close()

    # Picking a set on the leaderboard shows its board: no "Show" button to find.
    page.get_by_role("tab", name="Evaluate").click()
    pick(page, "board-set", f"#{made} ")
    page.locator("#board-summary").get_by_text("counted votes").wait_for(timeout=30_000)

    # Rating: one "A" and one "B" beside the outputs, not a heading and a label each.
    page.locator("#rate-name textarea, #rate-name input").first.fill("ana")
    pick(page, "rate-set", f"#{made} ")
    page.locator("#rate-start").click()
    page.get_by_text("item 1 of 1").wait_for(timeout=30_000)
    for side in ("A", "B"):
        shown = page.locator("#rate-sides").get_by_text(side, exact=True).filter(visible=True)
        assert shown.count() == 1, f"{side} is shown {shown.count()} times: " + " | ".join(
            shown.nth(i).evaluate("e => e.outerHTML.slice(0, 300)") for i in range(shown.count()))
    assert_no_emoji(page)


# ----------------------------------------------------------------------------- which dataset a tab works on

def header_lines(page, table: str) -> list[tuple[str, int]]:
    """Each header's text with the number of lines it is broken into (a Range's rects: one per line)."""
    return page.evaluate(f"""() => [...document.querySelectorAll('#{table} thead th .header')].map(th => {{
        const range = document.createRange();
        range.selectNodeContents(th);
        const lines = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
        return [th.innerText.trim(), lines.size];
    }})""")


@pytest.mark.browser
def test_an_image_import_is_counted_then_followed_by_the_model_and_train_tabs(home_with_corpus, running_studio,
                                                                             browser_page, tmp_path):
    page = browser_page
    page.goto(running_studio)
    page.get_by_role("tab", name="Model").click()
    page.locator("#model-working-on").get_by_text("No dataset version picked").wait_for(timeout=30_000)

    page.get_by_role("tab", name="Data").click()
    page.locator("#data-upload input[type=file]").set_input_files(str(image_zip(tmp_path / "pics.zip", 6, 3)))
    inspection = page.get_by_text("looks like")
    inspection.wait_for(timeout=60_000)
    assert "9 images with captions" in inspection.inner_text() and "18 file" not in inspection.inner_text()
    page.locator("#data-import").click()
    page.locator("#data-summary").get_by_text("6 of 9 items kept").wait_for(timeout=120_000)
    page.wait_for_function("document.querySelector('#data-report')?.innerText.includes('Exact duplicates')",
                           timeout=30_000)
    headers = header_lines(page, "data-report")
    assert len([text for text, _ in headers if text]) >= 3, headers  # the table's headers are there to be measured
    broken = [(text, lines) for text, lines in headers if text and lines > 1]
    assert not broken, f"headers broken over several lines: {broken}"

    page.get_by_role("tab", name="Model").click()
    line = page.locator("#model-working-on")
    line.get_by_text("pics v1").wait_for(timeout=30_000)
    assert "image" in line.inner_text()
    page.wait_for_function("document.querySelector('#model-choice input[value=starter-image]')?.checked === true",
                           timeout=30_000)
    assert "pics v1" in page.locator("#model-dataset input").input_value()
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-intro").get_by_text("pics v1").wait_for(timeout=30_000)
    assert "image" in page.locator("#train-intro").inner_text()
    assert "pics v1" in page.locator("#train-dataset input").input_value()

    # Changed in the Model tab: the header and every tab follow.
    page.get_by_role("tab", name="Model").click()
    pick(page, "model-dataset", "tales v1")
    line.get_by_text("tales v1").wait_for(timeout=30_000)
    assert "text" in line.inner_text()
    page.wait_for_function("document.querySelector('#model-choice input[value=starter-text]')?.checked === true",
                           timeout=30_000)
    page.wait_for_function("document.querySelector('#dataset-version input')?.value.includes('tales v1')",
                           timeout=30_000)
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-intro").get_by_text("tales v1").wait_for(timeout=30_000)
    assert_no_emoji(page)


@pytest.mark.browser
def test_pick_a_dataset_version_first_goes_once_one_is_picked(home_with_corpus, running_studio, browser_page):
    page = browser_page
    page.goto(running_studio)
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-start").click()
    message = page.locator("#train-message")
    message.get_by_text("Pick a dataset version first").wait_for(timeout=30_000)
    pick(page, "train-dataset", "tales v1")
    page.locator("#train-intro").get_by_text("tales v1").wait_for(timeout=30_000)
    page.wait_for_function("!(document.querySelector('#train-message')?.innerText || '').includes('Pick a dataset')",
                           timeout=30_000)
    assert_no_emoji(page)


# ----------------------------------------------------------------------------- looks

def test_leaderboard_matrices_name_each_variant_distinctly_with_the_full_names_in_a_legend():
    from studio.ui.evaluate_tab import short_label
    from studio.ui.plots import matrix

    refs = ["base", "1:40", "2:40", "1:80"]
    names = ["base (tiny-llama)", "run 1 · scratch · step 40", "run 2 · scratch · step 40", "run 1 · scratch · step 80"]
    short = [short_label(ref) for ref in refs]
    figure = matrix([[None] * 4] * 4, short, "Votes", names=names)
    ticks = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert ticks == ["base", "run 1 step 40", "run 2 step 40", "run 1 step 80"]  # distinct, whole
    legend = " ".join(text.get_text() for text in figure.texts)
    assert all(f"{s}: {n}" in legend for s, n in zip(short, names))


def test_the_strength_chart_names_each_variant_distinctly_with_the_full_names_in_a_legend():
    from studio.ui.evaluate_tab import short_label
    from studio.ui.plots import intervals

    rows = [{"variant": f"12:{step}", "label": f"run 12 · scratch · step {step}", "strength": float(n),
             "ci_low": n - 0.5, "ci_high": n + 0.5} for n, step in enumerate((12000, 12001))]
    figure = intervals(rows, "Preference", "strength", short=lambda row: short_label(row["variant"]))
    ticks = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert ticks == ["run 12 step 12001", "run 12 step 12000"]  # best on top; distinct, whole (not cut at 28)
    legend = " ".join(text.get_text() for text in figure.texts)
    assert "run 12 step 12000: run 12 · scratch · step 12000" in legend


# Beyond ASCII, the pages' text uses only punctuation and signs that every text font has (WGL4): no icon drawn with
# a character (↻ ✓ ⚠), which needs a font that has it and is an empty box where none does. Words say it.
PAGE_CHARACTERS = set("·—–…→×≈’▌")


def test_the_pages_say_things_in_words_and_plain_punctuation():
    import tokenize

    found = []
    for path in sorted((STUDIO / "ui").rglob("*.py")):
        with open(path, "rb") as source:
            found += [f"{path.name}:{token.start[0]}: {sorted(odd)}" for token in tokenize.tokenize(source.readline)
                      if token.type == tokenize.STRING
                      and (odd := {c for c in token.string if ord(c) > 127} - PAGE_CHARACTERS)]
    assert not found, f"symbols in: {found}"


def test_no_message_the_studio_writes_uses_an_emoji():
    """The browser tests see the messages their steps show; this reads every string the pages can show (the string
    literals of the studio's code, f-strings included; comments may say what they like)."""
    import tokenize

    found = []
    for path in sorted(STUDIO.rglob("*.py")):
        with open(path, "rb") as source:
            found += [f"{path.name}:{token.start[0]}" for token in tokenize.tokenize(source.readline)
                      if token.type == tokenize.STRING and EMOJI.search(token.string)]
    assert not found, f"emoji in: {found}"


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_listing_signature_changes_with_what_the_lists_show_and_only_then(home, tmp_path, database, request):
    from studio.store.changes import listing_signature
    from datetime import datetime, timezone

    from sqlalchemy import select

    from studio.store.tables import Checkpoint, Deployment, Run, SampleSet
    from studio.training import jobs

    url = request.getfixturevalue("postgres_url") if database == "postgresql" else None
    store = open_store(load_settings(home=home, database_url=url))
    seen = [listing_signature(store)]

    def changed() -> bool:
        seen.append(listing_signature(store))
        return seen[-1] != seen[-2]

    try:
        corpus = tmp_path / "notes.txt"
        corpus.write_text("\n\n".join(f"Note {i}: the fox {i} met the hen {i * 3}." for i in range(20)))
        import_dataset(store, [corpus], name="notes")
        assert changed()  # a dataset version
        assert not changed()  # nothing happened: the same answer
        run = jobs.create_run(store, "1", "starter-text", "scratch", TrainConfig(max_steps=1))
        assert changed()
        with store.session() as session:
            session.get(Run, run).status = "running"
        assert changed()  # the run's label shows its status
        with store.session() as session:
            session.get(Run, run).steps_done = 1  # progress is not a list's business
        assert not changed()
        with store.session() as session:
            session.add(Checkpoint(run_id=run, step=1, path=f"runs/{run}/checkpoints/step-1"))
        assert changed()
        with store.session() as session:
            session.add(SampleSet(modality="text", base_model="starter-text"))
        assert changed()
        with store.session() as session:  # the Deploy tab's list follows a deployment from starting to running
            session.add(Deployment(name="run-1", models=[{"name": "base", "ref": "base"}], status="starting"))
        assert changed()
        with store.session() as session:
            session.scalars(select(Deployment)).one().status = "running"
        assert changed()
        with store.session() as session:
            session.scalars(select(Deployment)).one().heartbeat_at = datetime.now(timezone.utc)
        assert not changed()  # a heartbeat is not a list's business
    finally:
        store.close()

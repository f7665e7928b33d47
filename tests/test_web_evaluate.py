"""Rating in a real browser on the rater-only page, the leaderboard changing in the Evaluate tab, and the rating
endpoints of the Gradio API used by several raters at once. The sample set is real: base and a tiny LoRA run
(test_generation's) on three prompts."""

from __future__ import annotations

import functools
import threading
import time

import pytest

from studio.generation.cache import ModelCache
from studio.generation.service import generate_set
from studio.settings import load_settings
from studio.store import open_store
from test_evaluation import make_set
from test_text_backend import rows, tiny_folder  # noqa: F401 - module-scoped fixtures
from test_web_generate import home_with_run  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow  # browser walkthroughs, studio processes: -m "not slow" leaves them out


@pytest.fixture
def home_with_set(web_home, home_with_run):
    store = open_store(load_settings(home=web_home))
    set_id = generate_set(store, ["base", str(home_with_run["run"])], ["Once upon a time", "Mia found", "The old fox"],
                          seed=1, settings={"max_new_tokens": 8}, cache=ModelCache(2**34))
    store.close()
    return {**home_with_run, "set_id": set_id}


def wait_for_board(page, votes: int) -> None:
    """Refresh the leaderboard until it counts ``votes`` votes."""
    page.locator("#board-show").click()
    page.wait_for_function(f"/\\b{votes} counted votes/.test(document.querySelector('#board-summary')?.innerText"
                           " || '')", timeout=30_000)


@pytest.fixture
def quick_reading_studio(tmp_path, web_home):
    """A studio that counts every vote, however fast (STUDIO_EVAL_MIN_DECISION_SECONDS=0): a test clicks sooner
    than a person reads, and its votes are to count without the test waiting out the threshold."""
    yield from studio_flagging_votes_under(0, tmp_path, web_home)


@pytest.mark.browser
def test_a_rater_votes_blind_and_the_leaderboard_changes(home_with_set, quick_reading_studio, browser_page):
    running_studio = quick_reading_studio
    page = browser_page
    page.goto(running_studio)
    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#board-set input").click()
    page.locator("li[data-testid=dropdown-option]").first.click()
    wait_for_board(page, 0)

    rater = page.context.browser.new_page()
    rater.goto(running_studio + "/rate")
    rater.locator("#rate-start").wait_for(timeout=30_000)  # the page has rendered: what is not there now, it lacks
    assert page.get_by_role("tab", name="Train").count() == 1  # (as the editors' page shows it)
    assert rater.get_by_role("tab", name="Train").count() == 0  # the rater page offers rating only
    rater.locator("#rate-name textarea, #rate-name input").first.fill("ana")
    rater.locator("#rate-set input").click()
    rater.locator("li[data-testid=dropdown-option]").first.click()
    rater.locator("#rate-start").click()
    rater.get_by_text("item 1 of 3").wait_for(timeout=20_000)
    page_text = rater.locator("body").inner_text()
    assert "run 1" not in page_text and "base (" not in page_text  # no variant names before the vote
    for number in range(3):
        rater.locator("#vote-a").click()
        rater.wait_for_function("/ was /.test(document.querySelector('#rate-result')?.innerText || '')",
                                timeout=20_000)
        if number < 2:
            rater.get_by_text(f"item {number + 2} of 3").wait_for(timeout=20_000)
    rater.get_by_text("Nothing left for you to rate").wait_for(timeout=20_000)
    assert "run 1" in rater.locator("#rate-result").inner_text()  # revealed after the vote
    wait_for_board(page, 3)
    assert page.locator("#board-table").inner_text().count("run 1") >= 1


def studio_flagging_votes_under(seconds: float, tmp_path, web_home):
    """A studio (its URL yielded) that flags as too fast every vote decided in under ``seconds``."""
    from conftest import StudioProcess

    studio = StudioProcess(tmp_path / "studio.log", web_home, STUDIO_EVAL_MIN_DECISION_SECONDS=str(seconds))
    yield studio.wait_until_up()
    studio.stop()


@pytest.fixture
def slow_reading_studio(tmp_path, web_home):
    """A studio where every vote faster than a minute is flagged too fast: the API's votes are, however loaded
    the machine (at the default 1.5 s a busy CI machine let one through)."""
    yield from studio_flagging_votes_under(60, tmp_path, web_home)


def test_many_raters_vote_through_the_api_each_vote_lands_once(home_with_set, slow_reading_studio):
    from gradio_client import Client

    running_studio = slow_reading_studio

    set_id, errors, recorded = home_with_set["set_id"], [], []

    def rate(name: str) -> None:
        try:
            client = Client(running_studio, verbose=False)
            while True:
                pair = client.predict(set_id, name, api_name="/rating_next_pair")
                if not pair:
                    return
                first = client.predict(set_id, name, pair["pair_id"], "a", "", api_name="/rating_vote")
                again = client.predict(set_id, name, pair["pair_id"], "b", "", api_name="/rating_vote")
                assert first["status"] == "recorded" and again["status"] == "already_voted"
                recorded.append(first["vote_id"])
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=rate, args=(f"rater{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not errors, errors
    assert len(recorded) == len(set(recorded)) == 6 * 3  # every rater judged each of the 3 pairs exactly once
    client = Client(running_studio, verbose=False)
    assert client.predict(set_id, False, api_name="/leaderboard")["votes"] == 0  # all faster than a person reads
    board = client.predict(set_id, True, api_name="/leaderboard")
    assert board["votes"] == 6 * 3
    assert sum(v["votes"] for v in board["variants"]) == 2 * 6 * 3  # each vote counts for both of its variants


def test_the_run_view_says_how_well_a_metric_orders_checkpoints_like_people():
    from studio.ui.evaluate_tab import agreement_lines

    points = [{"step": 0, "strength": -1.0}, {"step": 2, "strength": 0.1}, {"step": 4, "strength": 0.5},
              {"step": 6, "strength": 0.9}]
    rows = [{"step": 2, "perplexity": 30.0}, {"step": 4, "perplexity": 20.0}, {"step": 6, "perplexity": 25.0}]
    [line] = agreement_lines(points, rows)
    assert line.startswith("perplexity") and "Spearman 0.50 over 3 checkpoints" in line  # lower is better


@pytest.mark.browser
def test_a_set_generated_after_start_up_is_offered_on_the_rating_page(home_with_run, running_studio, web_home,
                                                                     browser_page):
    store = open_store(load_settings(home=web_home))
    set_id = generate_set(store, ["base", str(home_with_run["run"])], ["Once upon a time"], seed=1,
                          settings={"max_new_tokens": 4}, cache=ModelCache(2**34))
    store.close()
    rater = browser_page
    rater.goto(running_studio + "/rate")
    rater.locator("#rate-set input").click()
    rater.locator("li[data-testid=dropdown-option]").filter(has_text=f"#{set_id}").first.wait_for(timeout=20_000)


def answer_late(blocks, event: str, seconds: float) -> None:
    """Every handler of ``event`` in ``blocks`` answers ``seconds`` late, as on a busy server."""
    def late(handler):
        @functools.wraps(handler)
        def answer(*args):
            done = handler(*args)
            time.sleep(seconds)  # after the work: the answer is late, not the time it measured
            return done
        return answer

    for function in blocks.fns.values():
        if any(name == event for _, name in function.targets):
            function.fn = late(function.fn)


@pytest.mark.browser
def test_voting_on_audio_opens_once_both_clips_were_played_to_their_end(tmp_path, browser_page):
    """The listen gate: the vote buttons stay shut until each clip has played 3 s or to its end (these are 1 s).
    At a clip's end the player reports a pause and an end at once; here the pause is answered late, as on a busy
    server, and must not undo what the end did."""
    from playwright.sync_api import expect

    from conftest import ServedHere
    from studio.ui.server import RATE, _mounted, build_server

    store = open_store(load_settings(home=tmp_path / "home"))
    make_set(store, variants=("base", "7:2"), prompts=1, audio_seconds=1.0)
    server = build_server(store)
    answer_late(_mounted(server, RATE).get_blocks(), "pause", seconds=2)
    served = ServedHere(server)
    try:
        page = browser_page
        page.goto(served.url + "/rate/")
        page.locator("#rate-name textarea, #rate-name input").first.fill("ana")
        page.locator("#rate-set input").click()
        page.locator("li[data-testid=dropdown-option]").first.click()
        page.locator("#rate-start").click()
        page.get_by_text("item 1 of 1").wait_for(timeout=30_000)
        votes = page.locator("#vote-a, #vote-b, #vote-tie, #vote-both_bad")
        players = [page.locator(f"#rate-audio-{side} .play-pause-button") for side in "ab"]
        players[1].wait_for(timeout=30_000)  # both clips shown: the pair's buttons came in the same answer
        for number in range(votes.count()):
            expect(votes.nth(number)).to_be_disabled()
        for player in players:
            player.click()
            expect(player).to_have_attribute("aria-label", "Pause")  # playing...
            expect(player).to_have_attribute("aria-label", "Play", timeout=30_000)  # ...to its end
        for number in range(votes.count()):
            expect(votes.nth(number)).to_be_enabled(timeout=30_000)
    finally:
        served.stop()
        store.close()


# Each visible piece of text under an element (hidden components left out), counted: a label shown twice counts 2.
VISIBLE_TEXTS = """(root) => {
    const counts = {};
    const walker = document.createTreeWalker(document.querySelector(root), NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
        const text = walker.currentNode.textContent.trim();
        const parent = walker.currentNode.parentElement;
        if (text && parent && parent.checkVisibility({visibilityProperty: true})) counts[text] = (counts[text] || 0) + 1;
    }
    return counts;
}"""


@pytest.mark.browser
def test_each_output_is_named_once_a_and_b_in_pairs_and_output_n_when_scoring(home_with_set, running_studio,
                                                                            browser_page):
    rater = browser_page
    rater.goto(running_studio + "/rate")
    rater.locator("#rate-name textarea, #rate-name input").first.fill("ana")
    rater.locator("#rate-set input").click()
    rater.locator("li[data-testid=dropdown-option]").first.click()
    rater.locator("#rate-start").click()
    rater.get_by_text("item 1 of 3").wait_for(timeout=20_000)
    shown = rater.evaluate(VISIBLE_TEXTS, "#rate-sides")
    assert shown.get("A") == 1 and shown.get("B") == 1, shown  # each side named once, by its label

    rater.get_by_label("1-5 scores").check()
    rater.locator("#rate-start").click()
    rater.locator("#rate-sides").get_by_text("Output 1", exact=True).wait_for(timeout=20_000)
    shown = rater.evaluate(VISIBLE_TEXTS, "#rate-sides")
    assert shown.get("Output 1") == 1 and "A" not in shown and "B" not in shown, shown  # one output, one name
    rater.locator("#rate-score label").filter(has_text="4").first.click()
    rater.locator("#vote-score").click()
    rater.wait_for_function("/ was /.test(document.querySelector('#rate-result')?.innerText || '')", timeout=20_000)
    result = rater.locator("#rate-result").inner_text()
    assert "Output 1 was " in result and "SAMPLE" not in result, result  # revealed under the name it had
    rater.locator("#rate-sides").get_by_text("Output 2", exact=True).wait_for(timeout=20_000)

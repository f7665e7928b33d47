"""Blind human rating: Bradley-Terry and Krippendorff's alpha against hand-computed and textbook values,
simulated raters with known preferences, what a vote records, idempotent and concurrent voting (SQLite, and
PostgreSQL when a server is given), exports that import back, and one real generated set end to end.

Most tests insert sample sets with text outputs directly (fast); ``test_a_real_generated_set_end_to_end``
generates one with the tiny LoRA run of test_generation and drives it through the CLI."""

from __future__ import annotations

import csv
import json
import math
import random
import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import func, select

from studio.evaluation import pairs as choosing
from studio.evaluation.agreement import krippendorff_alpha, raw_agreement, units_from_matrix
from studio.evaluation.ranking import Battles, fit, rank
from studio.evaluation.service import (EvaluationError, assigned_pairs, cast_score, cast_vote, export_votes,
                                       leaderboard, next_item, next_pair, run_preference, score_scale)
from studio.settings import load_settings
from studio.store import open_store
from studio.store.tables import (Dataset, DatasetVersion, GeneratedSample, Project, RatingAssignment,
                                 RatingVote, Run, SampleSet)

from media_factory import tone, write_audio
from test_generation import lab  # noqa: F401 - a module-scoped fixture: a store with a tiny LoRA run
from test_text_backend import rows, tiny_folder  # noqa: F401 - what it needs

# simulated raters decide at once: no fast-vote flags and no repeated items unless a test asks for them
SLOW = {"eval_min_decision_seconds": 0, "eval_repeat_share": 0}


def seed_choices(monkeypatch, seed: int) -> None:
    """The pair chooser's draws (items, sides, repeats) from ``seed``, for this test only."""
    monkeypatch.setattr(choosing, "_random", random.Random(seed))


def long_ago() -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=30)


def make_set(store, variants=("base", "7:2", "7:4"), prompts: int = 3, samples: int = 1, references=None,
             run_id: int | None = None, media: bool = False, audio_seconds: float | None = None) -> int:
    """A completed sample set with one text (or file) sample per variant, prompt and seed; a sample's text names its
    variant so simulated raters know what they judge (real raters never see it: the pair shows no names). ``media``:
    image files (bytes naming the variant); ``audio_seconds``: playable WAV clips of that length."""
    modality = "audio" if audio_seconds else "image" if media else "text"
    with store.session() as db:
        row = SampleSet(modality=modality, base_model="tiny",
                        variants=[{"ref": v, "label": f"label of {v}"} for v in variants],
                        prompts=[f"prompt number {i}" for i in range(prompts)],
                        references=references or [None] * prompts, settings={"temperature": 0.7},
                        seeds=[[100 + i * 10 + k for k in range(samples)] for i in range(prompts)],
                        samples_per_prompt=samples, source="cli", status="completed", report={})
        db.add(row)
        db.flush()
        for variant in variants:
            run, step = (None, None) if variant == "base" else (int(variant.split(":")[0]), int(variant.split(":")[1]))
            for i in range(prompts):
                for k in range(samples):
                    path = None
                    if modality != "text":
                        slug = "base" if variant == "base" else f"run{run}-step{step}"
                        file = store.path(f"samples/{row.id}/{slug}/p{i:03d}-s{k:02d}"
                                          + (".wav" if audio_seconds else ".png"))
                        file.parent.mkdir(parents=True, exist_ok=True)
                        if audio_seconds:
                            write_audio(file, tone(seconds=audio_seconds))
                        else:
                            file.write_bytes(f"{variant} {i} {k}".encode())
                        path = str(file.relative_to(store.home))
                    db.add(GeneratedSample(set_id=row.id, variant=variant, run_id=run_id if run else None,
                                           checkpoint_step=step, prompt_index=i, prompt=f"prompt number {i}",
                                           sample_index=k, seed=100 + i * 10 + k,
                                           text=None if path else f"{variant}|{i}|{k}", path=path))
        return row.id


def variant_of(side: dict, store=None) -> str:
    if "text" in side:
        return side["text"].split("|")[0]
    return open(side["path"], "rb").read().decode().split()[0]


def fake_run(store, run_id: int = 7) -> int:
    """A completed run row (id ``run_id``): its checkpoints are known to ratings through their samples."""
    with store.session() as db:
        for row in (Project(id=1, name="p"), Dataset(id=1, project_id=1, name="d", modality="text"),
                    DatasetVersion(id=1, dataset_id=1, version=1, path="datasets/1/v1"),
                    Run(id=run_id, project_id=1, dataset_version_id=1, model_ref="tiny", method="lora",
                        modality="text", status="completed")):
            db.add(row)
            db.flush()  # in this order: each row's foreign key names the one before
    return run_id


def simulate(store, set_id: int, raters: list[str], strengths: dict[str, float], seed: int = 0,
             votes: int | None = None) -> int:
    """Raters who prefer variant i over j with the Bradley-Terry probability of ``strengths``; returns votes cast."""
    rng = random.Random(seed)
    cast = 0
    for rater in raters:
        while votes is None or cast < votes:
            shown = next_pair(store, set_id, rater)
            if shown is None:
                break
            a, b = variant_of(shown["a"]), variant_of(shown["b"])
            p = 1 / (1 + math.exp(-(strengths[a] - strengths[b])))
            cast_vote(store, shown["pair_id"], rater, "a" if rng.random() < p else "b", shown_at=long_ago())
            cast += 1
    return cast


@pytest.fixture
def rating_store(stores):
    return stores(**SLOW)


# ----------------------------------------------------------------------------- the statistics

def test_bradley_terry_matches_a_hand_computed_case():
    # A beat B 3 times and lost once. With the prior of half a win each way P(A > B) = 3.5 / 5 = 0.7, so the
    # strengths (centred) are ±ln(7/3)/2.
    theta = fit(Battles.of(["A", "B"], [("A", "B", 1.0)] * 3 + [("B", "A", 1.0)]).wins())
    assert theta[0] - theta[1] == pytest.approx(math.log(7 / 3), abs=1e-8)
    assert theta[0] == pytest.approx(-theta[1])
    # one win alone: (1 + 0.5) / 2 = 0.75, a lead of ln 3, not infinity
    single = fit(Battles.of(["A", "B"], [("A", "B", 1.0)]).wins())
    assert single[0] - single[1] == pytest.approx(math.log(3), abs=1e-8)
    # a tie is half a win each way: 2 wins + 1 tie against 1 win → (2.5 + .5) / (4 + 1) = 0.6
    tied = fit(Battles.of(["A", "B"], [("A", "B", 1.0), ("B", "A", 0.0), ("A", "B", 0.5), ("B", "A", 1.0)]).wins())
    assert tied[0] - tied[1] == pytest.approx(math.log(1.5), abs=1e-8)
    # three players: at the maximum, each player's expected wins equal its observed wins (prior included)
    battles = Battles.of(["A", "B", "C"], [("A", "B", 1), ("A", "B", 1), ("B", "C", 1), ("C", "A", 0.5),
                                           ("A", "C", 1), ("B", "C", 0), ("C", "B", 1)])
    theta = fit(battles.wins())
    wins = battles.wins() + 0.5 * (1 - np.eye(3))
    p = 1 / (1 + np.exp(-(theta[:, None] - theta[None, :])))
    np.testing.assert_allclose(((wins + wins.T) * p).sum(axis=1) - np.diag((wins + wins.T) * p), wins.sum(axis=1),
                               atol=1e-8)


def test_bootstrap_intervals_order_and_matrices():
    rng = np.random.default_rng(3)
    true = {"x": 0.0, "y": 1.5}
    sides = [("x", "y") if rng.random() < 0.5 else ("y", "x") for _ in range(200)]
    games = [(a, b, float(rng.random() < 1 / (1 + math.exp(-(true[a] - true[b]))))) for a, b in sides]
    ranked = rank(Battles.of(["x", "y", "never"], games), rounds=100, seed=1)
    assert [v["variant"] for v in ranked["variants"]] == ["y", "x", "never"]
    best, other, never = ranked["variants"]
    assert best["ci_low"] > other["ci_high"]
    assert best["ci_low"] <= best["strength"] <= best["ci_high"]
    assert never["strength"] is None and never["votes"] == 0  # no votes: no strength, not a zero-width interval
    assert rank(Battles.of(["x", "y", "never"], games), rounds=100, seed=1)["variants"] == ranked["variants"]  # seeded
    matrix = ranked["matrices"]
    assert matrix["variants"] == ["y", "x", "never"]
    assert matrix["votes"][0][1] == matrix["votes"][1][0] == 200 and matrix["votes"][2] == [0, 0, 0]
    assert matrix["win_rate"][0][1] + matrix["win_rate"][1][0] == pytest.approx(1.0)
    assert matrix["win_rate"][0][1] == pytest.approx(best["wins"] / 200)


def test_krippendorffs_alpha_matches_textbook_values():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", example C: 4 coders, 12 units, missing data.
    example_c = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
                 [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
                 [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
                 [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    units = units_from_matrix(example_c)
    assert round(krippendorff_alpha(units, "nominal"), 3) == 0.743
    assert round(krippendorff_alpha(units, "interval"), 3) == 0.849
    # Wikipedia's computational example (3 coders, 15 units): nominal 0.691, interval 0.811
    nan = float("nan")
    wiki = [[nan, nan, nan, nan, nan, 3, 4, 1, 2, 1, 1, 3, 3, nan, 3],
            [1, nan, 2, 1, 3, 3, 4, 3, nan, nan, nan, nan, nan, nan, nan],
            [nan, nan, 2, 1, 3, 4, 4, nan, 2, 1, 1, 3, 3, nan, 4]]
    assert round(krippendorff_alpha(units_from_matrix(wiki), "nominal"), 3) == 0.691
    assert round(krippendorff_alpha(units_from_matrix(wiki), "interval"), 3) == 0.811
    assert krippendorff_alpha([["a", "a"], ["b", "b"], ["a", "a"]]) == 1.0
    assert krippendorff_alpha([["a"], ["b"]]) is None  # nothing pairable
    assert krippendorff_alpha([["a", "a"], ["a", "a"]]) is None  # no variation: undefined


def test_raw_agreement_with_and_without_ties():
    units = [["first", "first", "tie"], ["second", "second"], ["tie", "first"]]
    # pairs: (f,f) (f,t) (f,t) | (s,s) | (t,f): 2 of 5 agree
    assert raw_agreement(units) == pytest.approx(2 / 5)
    # without ties: (f,f) | (s,s): 2 of 2
    assert raw_agreement(units, ignore={"tie"}) == 1.0
    assert raw_agreement([["x"]]) is None


# ----------------------------------------------------------------------------- pairs, sides, votes

def test_the_next_pair_is_the_least_settled_comparison():
    from studio.evaluation.ranking import pair_uncertainty

    samples = [{"id": 10 * p + v, "variant": name, "prompt_index": p, "sample_index": 0}
               for p in range(4) for v, name in enumerate(("A", "B", "C"))]
    items = choosing.pair_items(samples)
    assert len(items) == 12 and items[0].key == "0-1" and items[0].variants == ("A", "B")
    # A and B have met 40 times, C never: every comparison with C is wider, so C is shown next
    settled = Battles.of(["A", "B", "C"], [("A", "B", float(k % 2)) for k in range(40)])
    uncertainty = pair_uncertainty(settled)
    assert uncertainty[("A", "C")] > 2 * uncertainty[("A", "B")]
    rng = random.Random(0)
    picks = [choosing.choose_pair(items, uncertainty, {}, rng) for _ in range(50)]
    assert all("C" in item.variants for item in picks)
    # within a comparison, the items with the fewest votes so far
    votes = {item.key: 3 for item in items if item.prompt_index != 2}
    assert {choosing.choose_pair(items, uncertainty, votes, rng).prompt_index for _ in range(20)} == {2}


@pytest.mark.slow
def test_simulated_raters_with_known_preferences_rank_the_better_variant_first(rating_store, monkeypatch):
    seed_choices(monkeypatch, 11)
    set_id = make_set(rating_store, prompts=8, samples=2)  # 16 items per variant pair, 48 pairs
    truth = {"base": 0.0, "7:2": 1.2, "7:4": 2.4}
    cast = simulate(rating_store, set_id, [f"rater{i}" for i in range(5)], truth, seed=5)
    assert cast == 5 * 48
    board = leaderboard(rating_store, set_id, rounds=150)
    order = [v["variant"] for v in board["variants"]]
    assert order == ["7:4", "7:2", "base"]
    best, middle, last = board["variants"]
    assert best["ci_low"] > middle["ci_high"] and middle["ci_low"] > last["ci_high"]
    assert board["votes"] == cast and not board["preliminary"]
    assert sum(v["votes"] for v in board["variants"]) == 2 * cast
    assert board["agreement"]["pairwise"]["units"] == 48  # every pair judged by several raters
    assert all(r["votes"] == 48 for r in board["raters"])


def test_sides_are_randomised_recorded_and_balanced(rating_store, monkeypatch):
    seed_choices(monkeypatch, 5)  # the same draws every run: the balance check below cannot fail by chance
    set_id = make_set(rating_store, variants=("base", "7:2"), prompts=10, samples=4)  # 40 pairs
    lefts = []
    for rater in range(10):
        for shown in assigned_pairs(rating_store, set_id, f"r{rater}", limit=40):
            lefts.append(variant_of(shown["a"]))
            assert variant_of(shown["a"]) != variant_of(shown["b"])
    assert len(lefts) == 400
    # a fair coin per showing: 400 draws land within 4.5 standard deviations of 200 (these seeded ones: 207)
    assert abs(lefts.count("base") - 200) < 4.5 * math.sqrt(100)
    with rating_store.session() as db:
        shown = db.scalars(select(RatingAssignment)).all()
        samples = {s.id: s.variant for s in db.scalars(select(GeneratedSample))}
    assert [samples[a.left_sample_id] for a in shown] == lefts  # the side each variant was on is stored


def test_each_rater_sees_each_pair_once_then_is_done(rating_store):
    set_id = make_set(rating_store, prompts=2)  # 3 variant pairs × 2 prompts
    seen = []
    while (shown := next_pair(rating_store, set_id, "ann")) is not None:
        assert shown["progress"] == {"done": len(seen), "total": 6}
        seen.append(frozenset((variant_of(shown["a"]), variant_of(shown["b"]), shown["prompt_index"])))
        cast_vote(rating_store, shown["pair_id"], "ann", "tie", shown_at=long_ago())
    assert len(seen) == len(set(seen)) == 6
    assert next_pair(rating_store, set_id, "bob") is not None  # another rater starts afresh


def test_a_vote_records_what_was_shown_and_reveals_the_variants_only_afterwards(stores):
    store = stores()  # the default 1.5 s threshold
    set_id = make_set(store, prompts=2, references=[{"text": "the reference"}, None], media=True)
    shown = next_pair(store, set_id, "ann", session="browser-1")
    blob = json.dumps({k: v for k, v in shown.items() if k != "shown_at"})  # a time like 15:47:43 holds "7:4"
    for hidden in ("base", "7:2", "7:4", "run7", "label of", "step"):
        assert hidden not in blob  # not in the payload, not in the file names either
    assert shown["a"]["path"].startswith(str(store.path("blind")))
    assert shown["origin"] == ("test_split" if shown["prompt_index"] == 0 else "typed")
    again = next_pair(store, set_id, "ann")  # a reload shows the same unanswered pair
    assert again["pair_id"] == shown["pair_id"] and again["a"] == shown["a"]

    result = cast_vote(store, shown["pair_id"], "ann", "b", comment="crisper", session="browser-1",
                       shown_at=long_ago(), played={"a": 3.5, "b": 4})
    assert result["status"] == "recorded" and result["flags"] == {}
    sides = {side: variant_of(shown[side]) for side in ("a", "b")}
    assert result["revealed"] == {side: {"variant": name, "label": f"label of {name}"} for side, name in sides.items()}
    assert 29 < result["decision_seconds"] < 60
    [event] = [json.loads(line) for line in export_votes(store, set_id, "events").read_text().splitlines()]
    assert event["rater"] == "ann" and event["session"] == "browser-1" and event["comment"] == "crisper"
    assert event["choice"] == "b" and event["played"] == {"a": 3.5, "b": 4.0}
    assert event["left"]["variant"] == variant_of(shown["a"]) and event["right"]["variant"] == variant_of(shown["b"])
    assert event["left"]["seed"] == event["right"]["seed"] == 100 + 10 * shown["prompt_index"]
    assert event["settings"] == {"temperature": 0.7} and event["origin"] == shown["origin"]
    assert event["winner_sample_id"] == event["right"]["sample_id"]
    assert datetime.fromisoformat(event["decided_at"]) > datetime.fromisoformat(event["shown_at"])


def test_a_double_click_does_not_vote_twice(rating_store):
    set_id = make_set(rating_store)
    shown = next_pair(rating_store, set_id, "ann")
    first = cast_vote(rating_store, shown["pair_id"], "ann", "a", shown_at=long_ago())
    second = cast_vote(rating_store, shown["pair_id"], "ann", "b", shown_at=long_ago())
    assert first["status"] == "recorded" and second["status"] == "already_voted"
    assert second["choice"] == "a" and second["vote_id"] == first["vote_id"]
    assert "already voted" in second["message"]
    with rating_store.session() as db:
        assert db.scalar(select(func.count()).select_from(RatingVote)) == 1


def test_bad_input_gets_a_clear_message(rating_store):
    set_id = make_set(rating_store)
    shown = next_pair(rating_store, set_id, "ann")
    with pytest.raises(EvaluationError, match="no sample set 999"):
        next_pair(rating_store, 999, "ann")
    with pytest.raises(EvaluationError, match="no sample set 999"):
        leaderboard(rating_store, 999)
    with pytest.raises(EvaluationError, match="not assigned to rater 'bob'"):
        cast_vote(rating_store, shown["pair_id"], "bob", "a")
    with pytest.raises(EvaluationError, match="not assigned"):
        cast_vote(rating_store, 12345, "ann", "a")
    with pytest.raises(EvaluationError, match="not a choice"):
        cast_vote(rating_store, shown["pair_id"], "ann", "maybe")
    with pytest.raises(EvaluationError, match="rater name"):
        next_pair(rating_store, set_id, "  ")
    with pytest.raises(EvaluationError, match="shown_at"):
        cast_vote(rating_store, shown["pair_id"], "ann", "a", shown_at="yesterday-ish")
    item = next_item(rating_store, set_id, "ann")
    for bad in (0, 6, "five", 2.5, None):
        with pytest.raises(EvaluationError, match="whole number from 1 to 5"):
            cast_score(rating_store, item["item_id"], "ann", bad)
    with pytest.raises(EvaluationError, match="not assigned"):
        cast_score(rating_store, shown["pair_id"], "ann", 3)  # a pair is not a scoring item
    lonely = make_set(rating_store, variants=("base",))
    with pytest.raises(EvaluationError, match="one variant"):
        next_pair(rating_store, lonely, "ann")
    with rating_store.session() as db:
        assert db.scalar(select(func.count()).select_from(RatingVote)) == 0


def test_fast_votes_are_flagged_kept_and_left_out_by_default(stores):
    store = stores(eval_min_decision_seconds=1.5)
    set_id = make_set(store)
    fast = next_pair(store, set_id, "ann")
    result = cast_vote(store, fast["pair_id"], "ann", "a")  # decided at once
    assert result["status"] == "recorded" and "faster than 1.5 s" in result["flags"]["fast"]
    slow = next_pair(store, set_id, "ann")
    cast_vote(store, slow["pair_id"], "ann", "b", shown_at=long_ago())
    skipped = next_pair(store, set_id, "ann")
    cast_vote(store, skipped["pair_id"], "ann", "skip")  # can't judge: a skip, never flagged, never a tie
    board = leaderboard(store, set_id, rounds=100)
    assert board["votes"] == 1 and board["excluded"] == {"flagged": 1, "skipped": 1, "repeats": 0}
    assert board["flagged"][0]["reason"].startswith("decided") and board["flagged"][0]["rater"] == "ann"
    assert sum(v["ties"] for v in board["variants"]) == 0
    assert leaderboard(store, set_id, include_flagged=True, rounds=100)["votes"] == 2
    assert board["raters"][0] == {"rater": "ann", "votes": 3, "skips": 1, "flagged": 1, "repeats": 0,
                                  "self_consistency": None, "score_repeat_mean_difference": None}


def test_ties_and_both_bad_are_counted_apart(rating_store):
    set_id = make_set(rating_store, variants=("base", "7:2"), prompts=4)
    for choice in ("tie", "both_bad", "both_bad", "a"):
        shown = next_pair(rating_store, set_id, "ann")
        cast_vote(rating_store, shown["pair_id"], "ann", choice, shown_at=long_ago())
    by_variant = {v["variant"]: v for v in leaderboard(rating_store, set_id, rounds=100)["variants"]}
    assert by_variant["base"]["ties"] == by_variant["7:2"]["ties"] == 1
    assert by_variant["base"]["both_bad"] == by_variant["7:2"]["both_bad"] == 2
    assert by_variant["base"]["wins"] + by_variant["7:2"]["wins"] == 1 and by_variant["base"]["votes"] == 4


def test_repeated_items_measure_self_consistency_and_are_not_counted_twice(stores, monkeypatch):
    store = stores(eval_min_decision_seconds=0, eval_repeat_share=0.5)
    seed_choices(monkeypatch, 3)
    set_id = make_set(store, variants=("base", "7:2"), prompts=12)
    firsts, repeats = {}, 0
    while (shown := next_pair(store, set_id, "steady")) is not None:
        a, b = variant_of(shown["a"]), variant_of(shown["b"])
        key = (shown["prompt_index"], min(a, b))
        if key in firsts:
            repeats += 1
            assert firsts[key] == (b, a)  # shown again with the sides swapped
        firsts[key] = (a, b)
        cast_vote(store, shown["pair_id"], "steady", "a" if a == "7:2" else "b", shown_at=long_ago())
    board = leaderboard(store, set_id, rounds=100)
    [rater] = board["raters"]
    assert repeats > 0 and rater["repeats"] == repeats and rater["votes"] == 12
    assert rater["self_consistency"] == 1.0
    assert board["votes"] == 12 and board["excluded"]["repeats"] == repeats


def test_absolute_scores_with_meanings_intervals_and_agreement(rating_store):
    set_id = make_set(rating_store, variants=("base", "7:2"), prompts=3)
    assert [p["value"] for p in score_scale("audio")] == [1, 2, 3, 4, 5]
    assert score_scale("audio")[4]["label"] == "Excellent" and score_scale("text")[0]["meaning"]
    wanted = {"base": [2, 3], "7:2": [4, 5]}
    for n, rater in enumerate(("ann", "bob")):
        while (item := next_item(rating_store, set_id, rater)) is not None:
            assert "variant" not in json.dumps(item) and len(item["scale"]) == 5
            result = cast_score(rating_store, item["item_id"], rater, str(wanted[variant_of(item["sample"])][n]),
                                shown_at=long_ago())
            assert result["status"] == "recorded" and result["revealed"]["sample"]["variant"] in wanted
    board = leaderboard(rating_store, set_id, rounds=100)
    scores = {s["variant"]: s for s in board["scores"]["variants"]}
    assert scores["7:2"]["mean"] == 4.5 and scores["base"]["mean"] == 2.5 and scores["7:2"]["n"] == 6
    assert scores["7:2"]["ci_low"] < 4.5 < scores["7:2"]["ci_high"]
    assert scores["7:2"]["counts"] == {"1": 0, "2": 0, "3": 0, "4": 3, "5": 3}
    assert board["scores"]["variants"][0]["variant"] == "7:2"
    agreement = board["agreement"]["scores"]
    assert agreement["units"] == 6 and agreement["level"] == "interval" and agreement["alpha"] > 0.5


# ----------------------------------------------------------------------------- reliability

def _vote_everything(store, set_id: int, rater: str, double_click: bool = True) -> int:
    """One rater judging every pair, each vote sent twice at once (a double click)."""
    cast = 0
    while (shown := next_pair(store, set_id, rater)) is not None:
        results = []
        clicks = [threading.Thread(target=lambda: results.append(
            cast_vote(store, shown["pair_id"], rater, random.choice("ab"), shown_at=long_ago())))
            for _ in range(2 if double_click else 1)]
        for click in clicks:
            click.start()
        for click in clicks:
            click.join()
        assert sorted(r["status"] for r in results) == (["already_voted", "recorded"] if double_click else ["recorded"])
        cast += 1
    return cast


def _concurrent_raters_land_exactly_once(store):
    set_id = make_set(store, prompts=2)  # 6 pairs
    counts, errors = {}, []

    def rater(name: str) -> None:
        try:
            counts[name] = _vote_everything(store, set_id, name)
        except Exception as error:  # noqa: BLE001 - reported below with the rater's name
            errors.append(f"{name}: {error!r}")

    threads = [threading.Thread(target=rater, args=(f"rater{i:02d}",)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not errors, errors
    assert counts == {f"rater{i:02d}": 6 for i in range(20)}
    with store.session() as db:
        votes = db.scalars(select(RatingVote)).all()
    assert len(votes) == 120 and len({v.assignment_id for v in votes}) == 120
    assert {(v.rater, v.details["item_key"]) for v in votes} == {(f"rater{i:02d}", key) for i in range(20)
                                                                   for key in {v.details["item_key"] for v in votes}}
    assert leaderboard(store, set_id, rounds=100)["votes"] == 120


def test_twenty_raters_voting_at_once_all_land_exactly_once_on_sqlite(rating_store):
    _concurrent_raters_land_exactly_once(rating_store)


def test_twenty_raters_voting_at_once_all_land_exactly_once_on_postgresql(tmp_path, postgres_url):
    store = open_store(load_settings(home=tmp_path / "home", database_url=postgres_url, **SLOW))
    try:
        _concurrent_raters_land_exactly_once(store)
    finally:
        store.close()


def test_a_restart_in_the_middle_keeps_every_vote(stores):
    first = stores(**SLOW)
    set_id = make_set(first, prompts=2)
    done = []
    for _ in range(3):
        shown = next_pair(first, set_id, "ann")
        cast_vote(first, shown["pair_id"], "ann", "a", shown_at=long_ago())
        done.append(shown["pair_id"])
    waiting = next_pair(first, set_id, "ann")  # shown, not yet answered, when the studio stops
    first.close()

    again = stores(**SLOW)  # a new process would do exactly this
    assert next_pair(again, set_id, "ann")["pair_id"] == waiting["pair_id"]
    assert cast_vote(again, done[0], "ann", "b")["status"] == "already_voted"
    assert _vote_everything(again, set_id, "ann", double_click=False) == 3
    assert leaderboard(again, set_id, rounds=100)["votes"] == 6


# ----------------------------------------------------------------------------- training, export

@pytest.mark.slow
def test_preference_against_training_step_and_significance(rating_store, monkeypatch):
    seed_choices(monkeypatch, 7)
    run = fake_run(rating_store)
    set_id = make_set(rating_store, variants=("base", f"{run}:2", f"{run}:4"), prompts=8, samples=2, run_id=run)
    simulate(rating_store, set_id, [f"r{i}" for i in range(4)], {"base": 0.0, f"{run}:2": 0.1, f"{run}:4": 2.0})
    found = run_preference(rating_store, run, rounds=150)
    assert found["sets"] == [set_id] and found["votes"] == 4 * 48
    assert [(p["variant"], p["step"]) for p in found["points"]] == [("base", 0), (f"{run}:2", 2), (f"{run}:4", 4)]
    base, two, four = found["points"]
    assert "vs_base" not in base and two["vs_previous"] is None
    assert four["vs_base"]["significant"] and four["vs_previous"]["significant"]
    assert four["vs_previous"]["against"] == f"{run}:2" and four["vs_base"]["prob_better"] > 0.97
    assert four["vs_base"]["head_to_head"]["wins"] > four["vs_base"]["head_to_head"]["losses"]
    assert four["vs_base"]["head_to_head"]["p_value"] < 0.01
    assert not two["vs_base"]["significant"]  # 0.1 apart: not shown to be preferred
    with pytest.raises(EvaluationError, match="no run 999"):
        run_preference(rating_store, 999)


def test_exports_battles_events_and_preference_pairs_that_import_back(rating_store, tmp_path):
    from studio.data.service import get_version, import_dataset, read_manifest

    set_id = make_set(rating_store, prompts=4)
    with pytest.raises(EvaluationError, match="no pair with a decided preference"):
        export_votes(rating_store, set_id, "preferences")
    simulate(rating_store, set_id, ["ann"], {"base": 0.0, "7:2": 1.0, "7:4": 2.0})
    shown = next_pair(rating_store, set_id, "bob")
    cast_vote(rating_store, shown["pair_id"], "bob", "skip", shown_at=long_ago())

    events = [json.loads(line) for line in export_votes(rating_store, set_id, "events").read_text().splitlines()]
    assert len(events) == 13 and {e["rater"] for e in events} == {"ann", "bob"}
    with open(export_votes(rating_store, set_id, "battles", tmp_path / "battles.csv"), newline="") as handle:
        battles = list(csv.DictReader(handle))
    assert len(battles) == 13 and battles[0]["left_variant"] and battles[-1]["outcome"] == "skip"
    assert {b["counted"] for b in battles} == {"True", "False"}
    decided = [b for b in battles if b["outcome"] in ("left", "right")]
    assert all(b["winner_variant"] == (b["left_variant"] if b["outcome"] == "left" else b["right_variant"])
               for b in decided)

    path = export_votes(rating_store, set_id, "preferences", tmp_path / "dpo.jsonl")
    pairs_out = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(pairs_out) == 12 and set(pairs_out[0]) == {"prompt", "chosen", "rejected"}
    for row in pairs_out:
        assert row["chosen"] != row["rejected"] and row["prompt"].startswith("prompt number")
    with pytest.raises(EvaluationError, match="not an export"):
        export_votes(rating_store, set_id, "zip")

    imported = import_dataset(rating_store, [path], name="preferences", split="1,0,0")
    assert imported["items_kept"] == 12 and imported["errors"] == []
    manifest = read_manifest(rating_store, get_version(rating_store, str(imported["dataset_id"])))
    assert {(r["prompt"], r["response"], r["rejected"]) for r in manifest} == \
        {(r["prompt"], r["chosen"], r["rejected"]) for r in pairs_out}


def test_deleting_a_sample_set_deletes_its_ratings(rating_store):
    from studio.generation.service import delete_set

    set_id = make_set(rating_store, media=True)
    shown = next_pair(rating_store, set_id, "ann")
    cast_vote(rating_store, shown["pair_id"], "ann", "a")
    delete_set(rating_store, set_id)
    with rating_store.session() as db:
        assert db.scalar(select(func.count()).select_from(RatingVote)) == 0
        assert db.scalar(select(func.count()).select_from(RatingAssignment)) == 0
    assert not rating_store.path(f"blind/{set_id}").exists()


# ----------------------------------------------------------------------------- a real set, through the CLI

@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.slow
def test_a_real_generated_set_end_to_end(lab):  # noqa: F811
    from studio.generation.cache import ModelCache
    from studio.generation.service import generate_set
    from test_cli import studio

    store, run, home = lab["store"], lab["run"], lab["home"]
    set_id = generate_set(store, ["base", f"{run}:2", f"{run}:4"], ["Once upon a time", "Mia"], seed=3,
                          settings={"max_new_tokens": 6}, cache=ModelCache(2**34))
    env = ("--eval-min-decision-seconds", "0")
    listed = json.loads(studio(home, "eval", "pairs", str(set_id), "--rater", "ann", "--limit", "6", "--json",
                               *env).stdout)
    assert len(listed["pairs"]) == 6
    assert set(listed["pairs"][0]) >= {"pair_id", "prompt", "a", "b"} and "text" in listed["pairs"][0]["a"]
    assert "variant" not in json.dumps(listed)
    first = listed["pairs"][0]
    done = json.loads(studio(home, "eval", "vote", str(set_id), "--rater", "ann", "--pair", str(first["pair_id"]),
                             "--choice", "b", "--json", *env).stdout)
    assert done["status"] == "recorded" and set(done["revealed"]) == {"a", "b"}
    for pair in listed["pairs"][1:]:  # the same service, without a process start per vote
        assert cast_vote(store, pair["pair_id"], "ann", "b", set_id=set_id, shown_at=long_ago())["status"] == "recorded"
    again = json.loads(studio(home, "eval", "vote", str(set_id), "--rater", "ann", "--pair",
                              str(listed["pairs"][0]["pair_id"]), "--choice", "a", "--json", *env).stdout)
    assert again["status"] == "already_voted"
    refused = studio(home, "eval", "vote", str(set_id), "--rater", "bob", "--pair", str(listed["pairs"][0]["pair_id"]),
                     "--choice", "a", "--json", check=False)
    assert refused.returncode != 0 and "not assigned to rater 'bob'" in json.loads(refused.stdout)["error"]
    missing = studio(home, "eval", "leaderboard", "999", "--json", check=False)
    assert missing.returncode != 0 and "no sample set 999" in json.loads(missing.stdout)["error"]

    board = json.loads(studio(home, "eval", "leaderboard", str(set_id), "--json", *env).stdout)
    assert {v["variant"] for v in board["variants"]} == {"base", f"{run}:2", f"{run}:4"}
    assert {"variant", "strength", "ci_low", "ci_high", "wins", "losses", "ties", "votes"} <= set(board["variants"][0])
    assert sum(v["votes"] for v in board["variants"]) == 12 and "agreement" in board
    assert board["preliminary"]
    text_board = studio(home, "eval", "leaderboard", str(set_id)).stdout
    assert "6 counted votes (preliminary)" in text_board
    curve = run_preference(store, run, rounds=100)
    assert [p["step"] for p in curve["points"]] == [0, 2, 4] and curve["votes"] == 6

"""The preference loop through the `studio` command: SFT a text starter, generate base against it, vote for the run,
`studio eval preferences` → `studio train --model RUN:STEP --set objective=dpo` → generate the new run beside its
start → vote for it → it leads `studio eval leaderboard`, and the rounds line up base → SFT → round 1."""

from __future__ import annotations

import json

import pytest

from studio.evaluation.service import preference_rounds
from studio.examples.text import make_corpus
from studio.settings import load_settings
from studio.store import open_store
from test_cli import studio
from test_preference_rounds import prefer

pytestmark = pytest.mark.slow  # three training runs' worth of worker processes

PROMPTS = ["Once upon a time", "The little fox", "Mia found a", "In the morning"]


def as_json(done) -> dict:
    return json.loads(done.stdout)


def generate(home, out, *variants: str) -> int:
    args = [a for v in variants for a in ("--variant", v)] + [a for p in PROMPTS for a in ("--prompt", p)]
    made = as_json(studio(home, "generate", *args, "--seed", "3", "--set", "max_new_tokens=12", "--out", str(out),
                          "--json"))
    assert made["status"] == "completed", made
    return made["sample_set_id"]


def vote(home, set_id: int, winner: str) -> None:
    """Two raters vote every pair of the set for ``winner``'s outputs (in process, as the rating API would)."""
    store = open_store(load_settings(home=home, eval_min_decision_seconds=0, eval_repeat_share=0))
    try:
        for rater in ("ann", "bob"):
            assert prefer(store, set_id, winner, rater) == len(PROMPTS)
    finally:
        store.close()


@pytest.mark.timeout(1800)
def test_the_preference_loop_round_trip_through_the_cli(tmp_path):
    home = tmp_path / "home"
    corpus = tmp_path / "stories.txt"
    corpus.write_text(make_corpus(size_kb=12, seed=3))
    data = as_json(studio(home, "data", "import", str(corpus), "--name", "stories", "--json"))
    sft = as_json(studio(home, "train", "--dataset", f"{data['dataset_id']}:{data['version']}", "--model",
                         "starter-text", "--method", "scratch", "--max-steps", "20", "--json"))
    assert sft["status"] == "completed", sft

    first = generate(home, tmp_path / "round1", "base", f"{sft['run_id']}:20")
    vote(home, first, f"{sft['run_id']}:20")
    pairs = as_json(studio(home, "eval", "preferences", str(first), "--json"))
    assert pairs["items_kept"] >= 2, pairs
    dpo = as_json(studio(home, "train", "--dataset", f"{pairs['dataset_id']}:{pairs['version']}", "--model",
                         f"{sft['run_id']}:20", "--method", "full", "--set", "objective=dpo", "--max-steps", "6",
                         "--json"))
    assert dpo["status"] == "completed" and dpo["objective"] == "dpo", dpo
    shown = as_json(studio(home, "runs", "show", str(dpo["run_id"]), "--json"))
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"} <= \
        {h["name"] for h in shown["history"]}

    new = f"{dpo['run_id']}:6"
    second = generate(home, tmp_path / "round2", f"{sft['run_id']}:20", new)  # the new run beside its start
    vote(home, second, new)
    board = as_json(studio(home, "eval", "leaderboard", str(second), "--json"))
    assert board["variants"][0]["variant"] == new, board["variants"]  # the new run leads

    store = open_store(load_settings(home=home))
    try:
        rounds = preference_rounds(store, dpo["run_id"])
    finally:
        store.close()
    assert [p["variant"] for p in rounds["points"]] == [f"{sft['run_id']}:0", f"{sft['run_id']}:20", new]
    assert [p["round"] for p in rounds["points"]] == [0, 0, 1]
    assert rounds["points"][-1]["strength"] > rounds["points"][0]["strength"]

"""Human preference across the rounds of the preference loop (SFT → round 1 → round 2): the checkpoints that
started one another, rated in several sample sets, on one Bradley-Terry scale — and the chart of it."""

from __future__ import annotations

import pytest

from studio.evaluation.service import EvaluationError, cast_vote, next_pair, preference_rounds
from studio.generation.service import get_set
from studio.store.tables import Dataset, DatasetVersion, GeneratedSample, Project, Run, SampleSet
from test_evaluation import SLOW, long_ago, simulate

STRENGTHS = {"base": 0.0, "1:0": 0.0, "1:60": 1.5, "1:30": 0.5, "1:4": 1.0, "2:20": 3.0, "3:10": 4.5, "9:0": 0.0, "9:5": 9.0}


def runs(store, *rows: tuple[int, str, str, str | None]) -> None:
    """Run rows ``(id, model, method, objective)`` in one text project (the first also makes the project); a model
    ``RUN_ID:STEP`` is that checkpoint's folder, as a run started from it records it."""
    with store.session() as db:
        if db.get(Project, 1) is None:
            for row in (Project(id=1, name="p"), Dataset(id=1, project_id=1, name="d", modality="text"),
                        DatasetVersion(id=1, dataset_id=1, version=1, path="datasets/1/v1")):
                db.add(row)
                db.flush()
        for run_id, model, method, objective in rows:
            if ":" in model:
                start, step = model.split(":")
                model = str(store.path(f"runs/{start}/checkpoints/step-{int(step):07d}/model"))
            db.add(Run(id=run_id, project_id=1, dataset_version_id=1, model_ref=model, method=method,
                       modality="text", status="completed", config={"objective": objective} if objective else {}))
            db.flush()


def rated_set(store, variants: dict[str, str], prompts: int = 6) -> int:
    """A completed text set whose variant names map to checkpoints (``{"base": "1:0", "1:60": "1:60"}``: the base
    of a starter is its run's step 0), each sample's text naming its variant for the simulated raters, rated by
    three raters who prefer the later rounds (``STRENGTHS``)."""
    with store.session() as db:
        row = SampleSet(modality="text", base_model="starter-text",
                        variants=[{"ref": v, "label": f"label of {v}"} for v in variants],
                        prompts=[f"prompt {i}" for i in range(prompts)], references=[None] * prompts, settings={},
                        seeds=[[i] for i in range(prompts)], samples_per_prompt=1, source="cli", status="completed",
                        report={})
        db.add(row)
        db.flush()
        for variant, checkpoint in variants.items():
            run, step = (int(part) for part in checkpoint.split(":")) if checkpoint else (None, None)
            for i in range(prompts):
                db.add(GeneratedSample(set_id=row.id, variant=variant, run_id=run, checkpoint_step=step,
                                       prompt_index=i, prompt=f"prompt {i}", sample_index=0, seed=i,
                                       text=f"{checkpoint or variant}|{i}|0"))
        set_id = row.id
    simulate(store, set_id, ["ann", "bob", "cy"], STRENGTHS)
    return set_id


def prefer(store, set_id: int, winner: str, rater: str) -> int:
    """``rater`` votes every pair of a generated set for variant ``winner``'s sample (a tie when both read the
    same); returns the votes cast."""
    made = get_set(store, set_id)["samples"]
    cast = 0
    while (shown := next_pair(store, set_id, rater)) is not None:
        sides = {side: {s["variant"] for s in made if s["prompt_index"] == shown["prompt_index"]
                        and s["text"] == shown[side]["text"]} for side in "ab"}
        choice = "tie" if winner in sides["a"] & sides["b"] else "a" if winner in sides["a"] else "b"
        cast_vote(store, shown["pair_id"], rater, choice, shown_at=long_ago())
        cast += 1
    return cast


@pytest.fixture
def rating_store(stores):
    return stores(**SLOW)


def test_the_rounds_of_a_starter_run_line_up_base_sft_round_1_round_2_on_one_scale(rating_store):
    store = rating_store
    runs(store, (1, "starter-text", "scratch", None), (2, "1:60", "scratch", "dpo"), (3, "2:20", "scratch", "dpo"),
         (9, "starter-text", "scratch", None))
    first = rated_set(store, {"base": "1:0", "1:30": "1:30", "1:60": "1:60"})
    second = rated_set(store, {"base": "1:0", "1:60": "1:60", "2:20": "2:20"})
    third = rated_set(store, {"2:20": "2:20", "3:10": "3:10"})
    rated_set(store, {"base": "9:0", "9:5": "9:5"})  # another line: none of its votes count here

    found = preference_rounds(store, 3, rounds=120)
    assert found["runs"] == [1, 2, 3] and found["sets"] == [first, second, third]
    # the base, the checkpoint each run started from, then the run's rated one: 1:30 is not on the line
    assert [(p["variant"], p["objective"], p["round"]) for p in found["points"]] == [
        ("1:0", None, 0), ("1:60", "sft", 0), ("2:20", "dpo", 1), ("3:10", "dpo", 2)]
    strengths = [p["strength"] for p in found["points"]]
    assert strengths == sorted(strengths) and strengths[-1] - strengths[0] > 2  # one scale, later rounds preferred
    assert all(p["ci_low"] <= p["strength"] <= p["ci_high"] and p["votes"] > 0 for p in found["points"])
    # votes between two checkpoints of the line only: each set's pairs with 1:30 are left out
    assert found["votes"] == 3 * 6 + 3 * 6 * 3 + 3 * 6

    middle = preference_rounds(store, 2, rounds=120)  # the line up to round 1; round 2's votes on 2:20 still count
    assert [p["variant"] for p in middle["points"]] == ["1:0", "1:60", "2:20"]
    with pytest.raises(EvaluationError, match="no run 77"):
        preference_rounds(store, 77)


def test_a_run_with_no_rated_checkpoint_has_no_points_and_a_pretrained_base_is_base(rating_store):
    store = rating_store
    runs(store, (1, "tiny-llama", "lora", None), (2, "1:4", "lora", "dpo"))
    assert preference_rounds(store, 2, rounds=120)["points"] == []
    rated_set(store, {"base": None, "1:4": "1:4"})
    found = preference_rounds(store, 2, rounds=120)
    assert [p["variant"] for p in found["points"]] == ["base", "1:4"]  # round 1 is not rated yet


def test_the_rounds_chart_draws_one_point_per_round_with_its_interval():
    from studio.ui.plots import rounds_chart

    points = [{"variant": "1:0", "run_id": 1, "step": 0, "objective": None, "round": 0, "strength": -1.0,
               "ci_low": -1.5, "ci_high": -0.5, "votes": 10},
              {"variant": "1:60", "run_id": 1, "step": 60, "objective": "sft", "round": 0, "strength": 0.2,
               "ci_low": -0.1, "ci_high": 0.6, "votes": 20},
              {"variant": "2:20", "run_id": 2, "step": 20, "objective": "dpo", "round": 1, "strength": 0.8,
               "ci_low": 0.4, "ci_high": 1.3, "votes": 10}]
    figure = rounds_chart(points)
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["base\n(untrained)", "SFT\nrun 1 step 60",
                                                             "round 1 · dpo\nrun 2 step 20"]
    [line] = [line for line in axes.get_lines() if len(line.get_xdata()) == 3]
    assert list(line.get_ydata()) == [-1.0, 0.2, 0.8]
    gan_start = {**points[1], "objective": "adversarial"}  # a GAN's first run is not supervised fine-tuning
    figure = rounds_chart([points[0], gan_start, points[2]])
    assert figure.axes[0].get_xticklabels()[1].get_text() == "adversarial\nrun 1 step 60"

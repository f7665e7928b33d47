"""A bake-off (studio.evaluation.bakeoff): two architectures trained on the shipped shapes.zip through `studio
bakeoff`, sampled on the test prompts into one sample set that can be rated, scored into one table with a winner per
metric; and the requests it refuses, with a message and no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.data.service import import_dataset
from studio.evaluation.bakeoff import BakeoffError, build_table, check_request, held_out_prompts
from studio.generation.service import get_set
from studio.models.catalog import architectures
from studio.settings import load_settings
from studio.store import open_store
from test_cli import one_line_error, studio

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
# Runs of seconds: the recommended settings, cut to 3 steps at 16 pixels (the time budget is tested in test_loop.py)
SHORT = ["max_steps=3", "resolution=16", "eval_steps=3", "save_steps=3", "sample_steps=0", "per_device_train_batch_size=4"]


@pytest.fixture
def shapes(store):
    return import_dataset(store, [EXAMPLES / "shapes.zip"])["dataset_id"]


@pytest.mark.parametrize("models, minutes, says", [
    (["starter-image", "starter-imagen"], 5, "unknown architecture 'starter-imagen': a bake-off trains the catalog's "
                                             "starters; for image data: starter-image, starter-image+flow-matching, "
                                             "starter-image-gan"),
    (["starter-image"], 5, "a bake-off compares 2 to 4 architectures (got 1)"),
    (["starter-image", "starter-image-gan", "starter-image+flow-matching", "starter-image", "starter-image-gan"], 5,
     "a bake-off compares 2 to 4 architectures (got 5)"),
    (["starter-image", "starter-image"], 5, "starter-image given more than once"),
    (["starter-image", "starter-audio"], 5, "starter-audio is an audio model but dataset 'shapes' is image"),
    (["starter-image", "starter-image-gan"], 0, "minutes must be above 0"),
    (["starter-image", "starter-image-gan"], -1, "minutes must be above 0"),
    (["starter-image", "starter-image-gan"], "soon", "minutes must be a number above 0 (got 'soon')"),
])
def test_a_request_that_cannot_be_run_is_refused_naming_why(store, shapes, models, minutes, says):
    with pytest.raises(BakeoffError, match=None) as refused:
        check_request(store, str(shapes), models, minutes)
    assert says in str(refused.value)


def test_any_starter_of_the_datasets_kind_is_accepted(store, shapes):
    from studio.models.catalog import architectures

    offered = [a.key for a in architectures("image")]
    _version, chosen = check_request(store, str(shapes), offered[:4], 1)
    assert [a.key for a in chosen] == offered[:4] and {a.entry.modality for a in chosen} == {"image"}


def test_the_prompts_are_the_test_splits_different_captions(store, shapes):
    prompts, references, split = held_out_prompts(store, str(shapes))
    assert split == "test" and len(prompts) == len(set(prompts)) >= 2
    assert all(Path(r["path"]).is_file() for r in references)


def test_the_table_names_a_winner_per_metric_with_its_direction():
    runs = [{"model": "a", "run_id": 1, "status": "completed", "steps": 3, "prediction_type": "auto"},
            {"model": "b", "run_id": 2, "status": "completed", "steps": 3, "prediction_type": None}]
    found = {1: {"metrics": {"diversity": {"value": 0.2}, "heldout_loss": {"value": 0.5, "kind": "diffusion"}}},
             2: {"metrics": {"diversity": {"value": 0.3}, "heldout_loss": {"value": None, "kind": "none"}}}}
    table = build_table(runs, found, {1: 0.5, 2: 0.01}, "test")
    won = {w["metric"]: (w["model"], w["direction"]) for w in table["winners"]}
    # held-out loss: one value only (a GAN has none), so no winner on it
    assert won == {"diversity": ("b", "higher is better"), "sample_seconds": ("b", "lower is better")}
    assert [r["heldout_kind"] for r in table["rows"]] == ["diffusion (auto)", None]


def test_a_bakeoff_whose_runs_all_failed_fails_saying_so(store, shapes):
    from studio.evaluation.bakeoff import start, view
    from studio.status import RunStatus
    from studio.tasks.bakeoff import advance
    from studio.tasks.worker import run_task
    from studio.training.jobs import finish_run

    bakeoff_id = start(store, str(shapes), ["starter-image", "starter-image-gan"], 1)
    found = view(store, bakeoff_id)
    assert found["status"] == "queued" and [r["status"] for r in found["runs"]] == ["queued", "queued"]
    first, second = (r["run_id"] for r in found["runs"])
    finish_run(store, first, RunStatus.RUNNING, was=(RunStatus.QUEUED,))
    assert advance(store) == [bakeoff_id] and view(store, bakeoff_id)["status"] == "training"
    finish_run(store, first, RunStatus.FAILED, "out of disk")
    finish_run(store, second, RunStatus.FAILED, "killed", was=(RunStatus.QUEUED,))
    advance(store)  # every run ended: its sampling and scoring task is queued
    task_id = view(store, bakeoff_id)["task_id"]
    assert task_id is not None and view(store, bakeoff_id)["status"] == "sampling"
    run_task(store, task_id)  # as its worker would (a dispatcher would start it)
    advance(store)
    ended = view(store, bakeoff_id)
    assert ended["status"] == "failed" and ended["table"] == []
    assert ended["error"] == (f"no run of the bake-off trained: starter-image (run {first}) failed: out of disk; "
                              f"starter-image-gan (run {second}) failed: killed")


def test_deleting_the_project_deletes_its_bakeoffs(store):
    from studio.evaluation.bakeoff import list_bakeoffs, start, view
    from studio.projects import delete_project
    from studio.training.jobs import request

    dataset = import_dataset(store, [EXAMPLES / "shapes.zip"], project="lab")["dataset_id"]
    bakeoff_id = start(store, str(dataset), ["starter-image", "starter-image-gan"], 1, project="lab")
    for run in view(store, bakeoff_id)["runs"]:
        request(store, run["run_id"], "stop")
    assert [b["bakeoff_id"] for b in list_bakeoffs(store, "lab")] == [bakeoff_id] and not list_bakeoffs(store, "default")
    delete_project(store, "lab")
    assert list_bakeoffs(store) == []


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_bakeoff_of_two_architectures_through_the_cli(tmp_path):
    home = tmp_path / "home"
    dataset = json.loads(studio(home, "data", "import", str(EXAMPLES / "shapes.zip"), "--json").stdout)["dataset_id"]
    refused = studio(home, "bakeoff", "--dataset", str(dataset), "--model", "starter-image", "--model",
                     "starter-audio", "--minutes", "2", check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    offered = ", ".join(a.key for a in architectures("image"))  # every image architecture of the catalog
    assert "starter-image-gan" in offered and "starter-image+flow-matching" in offered
    assert one_line_error(refused) == ("error: starter-audio is an audio model but dataset 'shapes' is image: pick "
                                       f"among {offered}")
    args = ["bakeoff", "--dataset", str(dataset), "--model", "starter-image", "--model", "starter-image-gan",
            "--minutes", "2", *[f"--set={pair}" for pair in SHORT], "--json"]
    # one thread per worker: on a busy two-core machine two threads each wait for the other (see one_torch_thread)
    done = json.loads(studio(home, *args, extra_env={"OMP_NUM_THREADS": "1"}, timeout=1200).stdout)
    assert {"runs", "sample_set_id", "table", "winners", "status"} <= set(done)
    assert done["status"] == "done"
    assert [(r["model"], r["status"], r["steps"]) for r in done["runs"]] == [("starter-image", "completed", 3),
                                                                             ("starter-image-gan", "completed", 3)]
    store = open_store(load_settings(home=home))
    try:
        made = get_set(store, done["sample_set_id"])
        prompts, _references, _split = held_out_prompts(store, str(dataset))
        by_run = {}
        for sample in made["samples"]:
            by_run.setdefault(sample["run_id"], set()).add(sample["prompt"])
        assert by_run == {r["run_id"]: set(prompts) for r in done["runs"]}  # both models, every prompt, nothing else
        assert made["source"] == f"bakeoff:{done['bakeoff_id']}"
        from studio.ui.evaluate_tab import rateable_set_choices

        assert done["sample_set_id"] in [value for _, value in rateable_set_choices(store)]
    finally:
        store.close()
    rows = {row["model"]: row for row in done["table"]}
    for row in rows.values():
        assert isinstance(row["diversity"], float) and isinstance(row["sample_seconds"], float)
    assert isinstance(rows["starter-image"]["heldout_loss"], float)
    assert rows["starter-image-gan"]["heldout_loss"] is None  # a GAN has no loss of the held-out data
    assert {w["metric"] for w in done["winners"]} >= {"diversity", "sample_seconds"}
    pairs = json.loads(studio(home, "eval", "pairs", str(done["sample_set_id"]), "--rater", "ana", "--json").stdout)
    assert pairs["pairs"] and all(p["a"] != p["b"] for p in pairs["pairs"])  # blind pairs of the two architectures
    shown = studio(home, "bakeoff", "show", str(done["bakeoff_id"]))
    assert "won on sample_seconds (lower is better)" in shown.stdout
    # people's blind votes join the table as they come (here every vote for the left side: a winner either way)
    from studio.evaluation.service import cast_vote

    voting = open_store(load_settings(home=home, eval_min_decision_seconds=0))  # votes this quick still count
    try:
        for pair in pairs["pairs"]:
            cast_vote(voting, pair["pair_id"], "ana", "a")
    finally:
        voting.close()
    people = json.loads(studio(home, "bakeoff", "show", str(done["bakeoff_id"]), "--json").stdout)["people"]
    assert people["votes"] == len(pairs["pairs"])
    assert sorted(a["model"] for a in people["architectures"]) == ["starter-image", "starter-image-gan"]
    assert people["winner"]["metric"] == "human_preference" and people["winner"]["direction"] == "higher is better"
    assert one_line_error(studio(home, "bakeoff", "show", "99", check=False)) == \
        "error: no bake-off 99 (see `studio bakeoff list`)"


def test_each_run_gets_its_architectures_recommended_settings_the_budget_then_the_overrides():
    from studio.evaluation.bakeoff import run_config
    from studio.models.catalog import find_architecture

    flow = run_config(find_architecture("starter-image+flow-matching"), 3, ["max_steps=5"])
    assert (flow.diffusion.prediction_type, flow.max_minutes, flow.max_steps, flow.learning_rate) == \
        ("flow_matching", 3.0, 5, 3e-3)
    gan = run_config(find_architecture("starter-image-gan"), 0.5, [])
    assert (gan.max_minutes, gan.max_steps, gan.lr_scheduler_type) == (0.5, 300, "constant")
    with pytest.raises(BakeoffError, match="starter-image-gan: unknown setting 'speed'"):
        run_config(find_architecture("starter-image-gan"), 1, ["speed=3"])

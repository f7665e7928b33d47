"""What a deployment served, read back from the store: feedback made a dataset version (the preference training of
issue 14 accepts it), the quality panel's numbers, retention, and a project's deletion taking its deployments. The
served requests are inserted as rows, as the deployment's application writes them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from studio.cli import main as cli_main
from studio.data.service import get_version, read_manifest
from studio.projects import delete_project
from studio.serving.feedback import FeedbackError, feedback_to_dataset
from studio.serving.quality import quality_panel
from studio.serving.retention import purge_served
from studio.status import DeployStatus
from studio.store.tables import Dataset, DatasetVersion, Deployment, Project, Run, ServedRequest
from studio.training import jobs
from studio.training.config import TrainConfig
from test_text_backend import rows, tiny_folder  # noqa: F401 - module-scoped fixtures

NOW = datetime(2025, 5, 1, 12, 30, 30, tzinfo=timezone.utc)


def deployment(store, name: str = "chat", project: str = "default", models=None) -> int:
    with store.session() as session:
        row = Deployment(name=name, project=project, models=models or [{"name": "base", "ref": "base"}],
                         status=DeployStatus.STOPPED)
        session.add(row)
    return row.id


def served(store, deployment_id: int, prompt: str, *outputs, rating: str | None = None, status: int = 200,
           messages: list | None = None, at: datetime = NOW, **fields) -> str:
    """One served request; ``outputs``: texts, or Paths (files, stored relative to STUDIO_HOME)."""
    with store.session() as session:
        number = session.scalar(select(func.count(ServedRequest.id))) + 1
        stored = [{"path": str(o.relative_to(store.home))} if isinstance(o, Path) else {"text": o} for o in outputs]
        request = {"messages": messages} if messages else {"prompt": prompt}
        session.add(ServedRequest(response_id=f"resp-{number}", deployment_id=deployment_id, model="base",
                                  route="/v1/chat/completions" if messages else "/v1/completions", prompt=prompt,
                                  request=request, outputs=stored, status_code=status, rating=rating,
                                  created_at=at, **fields))
    return f"resp-{number}"


def manifest(store, made: dict) -> list[dict]:
    return read_manifest(store, get_version(store, f"{made['dataset_id']}:{made['version']}"))


# ----------------------------------------------------------------------------- feedback → dataset

def rated_text(store) -> int:
    """Two prompts and a chat: liked, disliked and unrated answers, an answer cached and rated twice, a failure."""
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    found = deployment(store)
    served(store, found, "Once upon a time", "a dragon slept", rating="up")
    served(store, found, "Once upon a time", "the the the", rating="down")
    served(store, found, "Once upon a time", "a fox ran", rating="up")
    served(store, found, "Once upon a time", "a fox ran", rating="up", cache_hit=True)  # the same answer, cached
    served(store, found, "Mia", "Mia Mia Mia", rating="down")  # no liked answer: a thumb only
    served(store, found, "Mia", "Mia laughed")  # not rated: not used
    served(store, found, "Name a colour.", "Blue.", rating="up", messages=chat)
    served(store, found, "Name a colour.", "I like turtles and also", rating="down", messages=chat)
    served(store, found, "Once upon a time", rating="down", status=500)
    return found


def test_feedback_becomes_examples_pairs_and_thumbs_in_one_new_version(store):
    found = rated_text(store)

    made = feedback_to_dataset(store, found, actor="ana")

    assert (made["dataset"], made["version"]) == ("feedback-chat", 1)
    assert made["counts"] == {"example": 3, "pair": 3, "thumbs": 6}
    assert made["skipped"] == {"the request failed (no answer)": 1}
    rows = manifest(store, made)
    examples = [r for r in rows if "rejected" not in r and "label" not in r]
    assert {(r.get("prompt"), r.get("response")) for r in examples} == {
        ("Once upon a time", "a dragon slept"), ("Once upon a time", "a fox ran"), (None, None)}
    chat_example = next(r for r in examples if "messages" in r)
    assert chat_example["messages"][-1] == {"role": "assistant", "content": "Blue."}
    assert chat_example["messages"][0] == {"role": "system", "content": "Be brief."}
    pairs = sorted((r.get("response") or r["messages"][-1]["content"], r["rejected"]) for r in rows if "rejected" in r)
    assert pairs == [("Blue.", "I like turtles and also"), ("a dragon slept", "the the the"),
                     ("a fox ran", "the the the")]
    thumbs = sorted((r.get("response") or r["messages"][-1]["content"], r["label"]) for r in rows if "label" in r)
    assert thumbs == [("Blue.", True), ("I like turtles and also", False), ("Mia Mia Mia", False),
                      ("a dragon slept", True), ("a fox ran", True), ("the the the", False)]
    assert {r["split"] for r in rows} == {"train"}  # too few rows to hold some out

    again = feedback_to_dataset(store, found)
    assert (again["dataset"], again["version"]) == ("feedback-chat", 2)  # a new version: versions never change


def test_nothing_rated_is_a_clear_error_and_stores_nothing(store):
    found = deployment(store)
    served(store, found, "Mia", "Mia laughed")
    with pytest.raises(FeedbackError, match="has no rated answer yet"):
        feedback_to_dataset(store, found)
    served(store, found, "Mia", rating="up", status=429)
    with pytest.raises(FeedbackError, match=r"none of the 1 rated answers .* \(1 the request failed"):
        feedback_to_dataset(store, found)
    with store.session() as session:
        assert session.scalar(select(func.count(DatasetVersion.id))) == 0


def test_a_feedback_dataset_is_accepted_by_dpo_and_kto_training(store, tiny_folder):  # noqa: F811
    made = feedback_to_dataset(store, rated_text(store))
    ref = f"{made['dataset_id']}:{made['version']}"
    for objective in ("dpo", "kto"):
        config = TrainConfig(max_steps=1, use_cpu=True, objective=objective, text={"max_length": 32})
        run_id = jobs.create_run(store, ref, str(tiny_folder), "lora", config)
        with store.session() as session:
            assert session.get(Run, run_id).config["objective"] == objective


@pytest.mark.slow
def test_a_dpo_run_trains_on_a_feedback_dataset(store, tiny_folder, one_torch_thread):  # noqa: F811
    from test_generation import run_in_process

    made = feedback_to_dataset(store, rated_text(store))
    config = TrainConfig(max_steps=2, save_steps=2, eval_steps=100, warmup_steps=0, per_device_train_batch_size=2,
                         use_cpu=True, objective="dpo", text={"max_length": 32})
    run_id = run_in_process(store, f"{made['dataset_id']}:{made['version']}", str(tiny_folder), "lora", config)
    with store.session() as session:
        assert session.get(Run, run_id).status == "completed"


def image_run(store) -> int:
    """A completed image run row: it makes the deployment an image one."""
    with store.session() as session:
        for row in (Project(id=1, name="pictures"), Dataset(id=1, project_id=1, name="d", modality="image"),
                    DatasetVersion(id=1, dataset_id=1, version=1, path="datasets/1/v1"),
                    Run(id=5, project_id=1, dataset_version_id=1, model_ref="tiny", method="lora",
                        modality="image", status="completed")):
            session.add(row)
            session.flush()
    return 5


def picture(store, name: str, colour: int) -> Path:
    path = store.path(f"deployments/outputs/{name}.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), colour, dtype=np.uint8)).save(path)
    return path


def test_image_feedback_copies_the_files_into_the_version(store):
    run = image_run(store)
    found = deployment(store, "pics", "pictures", [{"name": "run-5-step-2", "ref": "5:2"}])
    served(store, found, "a red square", picture(store, "liked", 200), rating="up")
    served(store, found, "a red square", picture(store, "disliked", 20), rating="down")
    gone = picture(store, "gone", 90)
    served(store, found, "a red square", gone, rating="down")
    gone.unlink()  # purged, or removed by hand: skipped, named

    made = feedback_to_dataset(store, found)

    assert run and made["counts"] == {"example": 1, "pair": 1, "thumbs": 2}
    assert made["skipped"] == {"its file is gone or unreadable": 1}
    version = get_version(store, f"{made['dataset_id']}:{made['version']}")
    assert version.dataset.modality == "image" and version.dataset.name == "feedback-pics"
    pair = next(r for r in read_manifest(store, version) if "rejected_file" in r)
    folder = store.path(version.path)
    assert pair["caption"] == "a red square"
    assert np.asarray(Image.open(folder / pair["file"]))[0, 0, 0] == 200  # copies: the version keeps its files
    assert np.asarray(Image.open(folder / pair["rejected_file"]))[0, 0, 0] == 20


def test_cli_deploy_feedback_to_dataset_prints_json(store, capsys):
    found = rated_text(store)
    code = cli_main(["--home", str(store.home), "deploy", "feedback", str(found), "--to-dataset", "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and printed["counts"] == {"example": 3, "pair": 3, "thumbs": 6}
    assert set(printed) == {"deployment_id", "dataset", "dataset_id", "version", "version_id", "counts", "skipped",
                            "path"}
    code = cli_main(["--home", str(store.home), "deploy", "feedback", str(found), "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and (printed["requests"], printed["up"], printed["down"]) == (9, 4, 4)


# ----------------------------------------------------------------------------- the quality panel

def test_quality_panel_numbers_over_the_window(store):
    found = deployment(store)
    served(store, found, "p", "a b c", rating="up", latency_ms=10, at=NOW - timedelta(minutes=2))
    served(store, found, "p", "a b d", rating="down", latency_ms=30, blocklist_hits=1, at=NOW - timedelta(minutes=2))
    served(store, found, "p", "a b c", latency_ms=20, cache_hit=True, at=NOW - timedelta(minutes=2, seconds=-20))
    served(store, found, "p", status=429, latency_ms=1, at=NOW)
    served(store, found, "old", "x y z", at=NOW - timedelta(hours=2))  # outside a window of 4

    panel = quality_panel(store, found, window=4, minutes=5, now=NOW)

    assert panel["counts"] == {"requests": 4, "answered": 3, "errors": 1, "cache_hits": 1, "rated": 2, "up": 1,
                               "down": 1}
    # words a b c / a b d / a b c: 4 different of 9; pairs (a b)(b c)(a b)(b d)(a b)(b c): 3 of 6
    assert panel["diversity"] == {"distinct_1": 4 / 9, "distinct_2": 3 / 6, "outputs": 3}
    assert panel["blocklist_share"] == pytest.approx(1 / 3) and panel["thumbs_down_share"] == 0.5
    series = panel["series"]
    assert [point["requests"] for point in series] == [0, 0, 3, 0, 1]  # 12:26 ... 12:30, quiet minutes included
    busy = series[2]
    assert busy["minute"] == "2025-05-01T12:28:00+00:00"
    assert (busy["p50_ms"], busy["error_rate"], busy["cache_hit_rate"]) == (20, 0, pytest.approx(1 / 3))
    assert busy["p95_ms"] == pytest.approx(29)  # linear between 20 and 30
    assert (series[-1]["error_rate"], series[-1]["cache_hit_rate"], series[0]["p50_ms"]) == (1, None, None)


def test_image_diversity_is_zero_for_copies_and_grows_with_difference(store):
    image_run(store)
    same = deployment(store, "same", "pictures", [{"name": "m", "ref": "5:2"}])
    for n in range(3):
        served(store, same, "p", picture(store, f"same{n}", 100))
    varied = deployment(store, "varied", "pictures", [{"name": "m", "ref": "5:2"}])
    for n, colour in enumerate((0, 255)):
        served(store, varied, "p", picture(store, f"varied{n}", colour))
    assert quality_panel(store, same)["diversity"] == {"pairwise_distance": 0.0, "outputs": 3}
    assert quality_panel(store, varied)["diversity"]["pairwise_distance"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- retention and deletion

def test_retention_purges_old_requests_with_their_files_and_zero_keeps_them(stores):
    store = stores(served_keep_days=30)
    image_run(store)
    found = deployment(store, "pics", "pictures", [{"name": "m", "ref": "5:2"}])
    now = datetime.now(timezone.utc)
    old_file, new_file = picture(store, "old", 1), picture(store, "new", 2)
    served(store, found, "p", old_file, rating="up", at=now - timedelta(days=31))
    served(store, found, "p", new_file, at=now - timedelta(days=29))

    assert purge_served(store, keep_days=0) == 0  # 0: forever
    assert purge_served(store) == 1

    with store.session() as session:
        assert [r.response_id for r in session.scalars(select(ServedRequest))] == ["resp-2"]
    assert not old_file.exists() and new_file.exists()


def test_deleting_a_project_stops_and_removes_its_deployments(store):
    image_run(store)
    stopped = deployment(store, "pics", "pictures", [{"name": "m", "ref": "5:2"}])
    served(store, stopped, "p", picture(store, "kept-until-now", 3))
    with store.session() as session:
        running = Deployment(name="still-running", project="pictures", models=[{"name": "m", "ref": "5:2"}],
                             status=DeployStatus.RUNNING)  # its process is gone: nothing to signal
        session.add(running)
    log = store.path(f"deployments/{stopped}/server.log")
    log.parent.mkdir(parents=True)
    log.write_text("served\n")

    removed = delete_project(store, "pictures", actor="ana")

    assert removed["deployments"] == 2
    with store.session() as session:
        assert session.scalar(select(func.count(Deployment.id))) == 0
        assert session.scalar(select(func.count(ServedRequest.id))) == 0
    assert not log.exists() and not store.path("deployments/outputs/kept-until-now.png").exists()

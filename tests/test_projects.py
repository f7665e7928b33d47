"""Projects: what belongs to one, deleting one (rows and files, nothing of another project), refusals while
something runs, lists that follow the project, and the audit trail of who did what."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from studio.data.service import delete_dataset, delete_version, import_dataset, list_datasets, reclean
from studio.evaluation.service import cast_vote, next_pair
from studio.generation.service import delete_prompt_set, delete_set, generate_set, list_sets, save_prompt_set
from studio.projects import (DeleteRefused, ProjectError, create_project, delete_project, list_projects,
                             project_activity, project_names)
from studio.settings import load_settings
from studio.store import list_actions, open_store
from studio.store.tables import (Checkpoint, Dataset, DatasetVersion, GeneratedSample, Metric, Project, RatingVote,
                                 Run, SampleSet, Upload)
from studio.training import jobs
from studio.training.config import TrainConfig
from studio.training.runs import list_runs
from studio.ui.state import run_choices, version_choices

from test_generation import lab  # noqa: F401 - a module-scoped fixture: a store with a tiny LoRA run
from test_text_backend import rows, tiny_folder  # noqa: F401 - what it needs


def _corpus(folder, name: str = "notes.txt"):
    path = folder / name
    path.write_text("\n\n".join(f"Paragraph {i} of {name} talks about topic {i} with distinct words {i * 7}."
                                for i in range(12)))
    return path


def _finished_run(store, dataset_ref: str, actor: str | None = None) -> int:
    """A run created like the Train tab does, then finished with one checkpoint on disk and a metric."""
    run_id = jobs.create_run(store, dataset_ref, "starter-text", "scratch", TrainConfig(max_steps=1), created_by=actor)
    checkpoint = store.path(f"runs/{run_id}/checkpoints/step-1/model")
    checkpoint.mkdir(parents=True)
    (checkpoint / "adapter_model.safetensors").write_bytes(b"weights")
    with store.session() as session:
        session.get(Run, run_id).status = "completed"
        session.add(Checkpoint(run_id=run_id, step=1, path=f"runs/{run_id}/checkpoints/step-1", is_adapter=True))
        session.add(Metric(run_id=run_id, step=1, name="train_loss", value=1.0))
    return run_id


def _rated_set(store, run_id: int, project_id: int) -> int:
    """A finished sample set of the base and the run's checkpoint, with its files and one real vote."""
    with store.session() as session:
        row = SampleSet(project_id=project_id, modality="text", base_model="starter-text", prompts=["hi"],
                        variants=[{"ref": "base", "label": "base"}, {"ref": f"{run_id}:1", "label": "run",
                                                                      "run_id": run_id}],
                        references=[None], settings={}, seeds=[[1]], samples_per_prompt=1, status="completed")
        session.add(row)
        session.flush()
        for variant in ("base", f"{run_id}:1"):
            file = store.path(f"samples/{row.id}/{variant.replace(':', '-')}/p000.txt")
            file.parent.mkdir(parents=True)
            file.write_text(variant)
            session.add(GeneratedSample(set_id=row.id, variant=variant, prompt_index=0, prompt="hi", sample_index=0,
                                        seed=1, text=variant, path=str(file.relative_to(store.home))))
        set_id = row.id
    pair = next_pair(store, set_id, "rater")
    cast_vote(store, pair["pair_id"], "rater", "a")
    return set_id


def _project_id(store, name: str) -> int:
    with store.session() as session:
        return session.scalar(select(Project.id).where(Project.name == name))


def _world(store, tmp_path, name: str) -> dict:
    """A project with a dataset (two versions), a finished run on it and a rated sample set."""
    imported = import_dataset(store, [_corpus(tmp_path, f"{name}.txt")], name=name, project=name, created_by="ana")
    reclean(store, imported["version_id"], created_by="ana")
    run_id = _finished_run(store, f"{imported['dataset_id']}:1")
    set_id = _rated_set(store, run_id, _project_id(store, name))
    with store.session() as session:
        uploads = [u.path for u in session.scalars(select(Upload).join(Project).where(Project.name == name))]
    return {"dataset": imported["dataset_id"], "run": run_id, "set": set_id, "uploads": uploads,
            "folders": [f"datasets/{imported['dataset_id']}", f"runs/{run_id}", f"samples/{set_id}", *uploads]}


def _rows(store, world: dict) -> dict:
    with store.session() as session:
        def count(table, column, value):
            return session.scalar(select(func.count()).select_from(table).where(column == value))
        return {"dataset": count(Dataset, Dataset.id, world["dataset"]),
                "versions": count(DatasetVersion, DatasetVersion.dataset_id, world["dataset"]),
                "run": count(Run, Run.id, world["run"]), "metrics": count(Metric, Metric.run_id, world["run"]),
                "checkpoints": count(Checkpoint, Checkpoint.run_id, world["run"]),
                "set": count(SampleSet, SampleSet.id, world["set"]),
                "samples": count(GeneratedSample, GeneratedSample.set_id, world["set"]),
                "votes": count(RatingVote, RatingVote.set_id, world["set"]),
                "uploads": sum(count(Upload, Upload.path, path) for path in world["uploads"])}


def test_deleting_a_project_removes_its_rows_and_files_and_leaves_other_projects_untouched(store, tmp_path):
    _delete_one_of_two_projects(store, tmp_path)


def test_deleting_a_project_on_postgresql(tmp_path, postgres_url):
    store = open_store(load_settings(home=tmp_path / "home", database_url=postgres_url))
    _delete_one_of_two_projects(store, tmp_path)
    store.close()


def _delete_one_of_two_projects(store, tmp_path) -> None:
    team, other = _world(store, tmp_path, "team"), _world(store, tmp_path, "other")
    assert _rows(store, team) == {"dataset": 1, "versions": 2, "run": 1, "metrics": 1, "checkpoints": 1, "set": 1,
                                  "samples": 2, "votes": 1, "uploads": 1}
    before = _rows(store, other)

    removed = delete_project(store, "team", actor="ana")

    assert removed == {"name": "team", "datasets": 1, "versions": 2, "runs": 1, "sample_sets": 1, "deployments": 0}
    assert set(_rows(store, team).values()) == {0}
    assert not any(store.path(folder).exists() for folder in team["folders"])
    assert _rows(store, other) == before
    assert all(store.path(folder).exists() for folder in other["folders"])
    assert "team" not in project_names(store) and "other" in project_names(store)
    assert list_actions(store, project="team")[0] | {"at": None, "id": None, "details": None} == {
        "at": None, "id": None, "details": None, "actor": "ana", "action": "project.delete",
        "target": "project:team", "project": "team"}


def test_a_project_with_a_queued_or_running_run_is_not_deleted(store, tmp_path):
    imported = import_dataset(store, [_corpus(tmp_path)], name="notes", project="team")
    run_id = jobs.create_run(store, f"{imported['dataset_id']}:1", "starter-text", "scratch", TrainConfig(max_steps=1))
    for status in ("queued", "running"):
        with store.session() as session:
            session.get(Run, run_id).status = status
        with pytest.raises(DeleteRefused, match=f"run {run_id} in project 'team' is {status}: stop it first"):
            delete_project(store, "team")
        assert [d["name"] for d in list_datasets(store)] == ["notes"]
        assert store.path(f"runs/{run_id}").is_dir() and store.path(f"datasets/{imported['dataset_id']}").is_dir()


def test_project_names_are_checked_and_the_default_project_stays(store):
    assert create_project(store, "  team  a ", actor="ana")["name"] == "team a"
    with pytest.raises(ProjectError, match="exists already"):
        create_project(store, "team a")
    with pytest.raises(ProjectError, match="needs a name"):
        create_project(store, "   ")
    with pytest.raises(ProjectError, match="at most 200"):
        create_project(store, "x" * 201)
    with pytest.raises(ProjectError, match="cannot be deleted"):
        delete_project(store, "default")
    with pytest.raises(ProjectError, match="no project named 'nope'"):
        delete_project(store, "nope")
    assert [(p["name"], p["datasets"], p["runs"]) for p in list_projects(store)] == [("team a", 0, 0)]
    assert project_names(store) == ["default", "team a"]
    assert [(a["actor"], a["action"]) for a in project_activity(store, "team a")] == [("ana", "project.create")]


def test_a_dataset_version_a_run_was_trained_on_is_kept_and_an_unused_one_is_deleted_with_its_files(store, tmp_path):
    imported = import_dataset(store, [_corpus(tmp_path)], name="notes")
    second = reclean(store, imported["version_id"])
    run_id = _finished_run(store, f"{imported['dataset_id']}:1")
    with pytest.raises(DeleteRefused, match=f"was used to train run {run_id}: delete that run first"):
        delete_version(store, f"{imported['dataset_id']}:1", actor="bo")
    with pytest.raises(DeleteRefused, match="delete that run first"):
        delete_dataset(store, imported["dataset_id"])
    with store.session() as session:
        session.get(Run, run_id).status = "running"
    with pytest.raises(DeleteRefused, match="running: stop it first"):
        delete_version(store, f"{imported['dataset_id']}:1")
    assert store.path(imported["path"]).is_dir()

    delete_version(store, f"{imported['dataset_id']}:{second['version']}", actor="bo")
    assert not store.path(second["path"]).exists() and store.path(imported["path"]).is_dir()
    assert [v["version"] for v in list_datasets(store)[0]["versions"]] == [1]
    assert list_actions(store)[0]["action"] == "dataset.delete_version" and list_actions(store)[0]["actor"] == "bo"


def test_deleting_the_last_version_deletes_the_dataset_and_its_upload(store, tmp_path):
    imported = import_dataset(store, [_corpus(tmp_path)], name="notes")
    with store.session() as session:
        upload = session.scalars(select(Upload)).one().path
    assert delete_version(store, f"{imported['dataset_id']}:1")["dataset_deleted"] is True
    assert list_datasets(store) == []
    assert not store.path(upload).exists() and not store.path(f"datasets/{imported['dataset_id']}").exists()


def test_run_and_set_lists_follow_the_selected_project(store, tmp_path):
    team, other = _world(store, tmp_path, "team"), _world(store, tmp_path, "other")
    assert [r["run_id"] for r in list_runs(store, "team")] == [team["run"]]
    assert [r["project"] for r in list_runs(store)] == ["other", "team"]
    assert [value for _, value in run_choices(store, "other")] == [other["run"]]
    assert [s["set_id"] for s in list_sets(store, "team")] == [team["set"]]
    assert [ref for _, ref in version_choices(store, "other")] == [f"{other['dataset']}:2", f"{other['dataset']}:1"]


def test_a_run_stays_in_its_datasets_project(store, tmp_path):
    imported = import_dataset(store, [_corpus(tmp_path)], name="notes", project="team")
    with pytest.raises(jobs.RunError, match="is in project 'team', not 'other'"):
        jobs.create_run(store, str(imported["dataset_id"]), "starter-text", "scratch", TrainConfig(), project="other")
    run_id = jobs.create_run(store, str(imported["dataset_id"]), "starter-text", "scratch", TrainConfig(), project="team")
    assert list_runs(store, "team")[0]["run_id"] == run_id


def test_every_write_records_who_did_it(store, tmp_path):
    imported = import_dataset(store, [_corpus(tmp_path)], name="notes", project="team", created_by="ana")
    reclean(store, imported["version_id"], created_by="bo")
    ref = f"{imported['dataset_id']}:1"
    queued = jobs.create_run(store, ref, "starter-text", "scratch", TrainConfig(), created_by="ana")
    jobs.request(store, queued, "stop", actor="bo")
    finished = _finished_run(store, ref, actor="cy")
    jobs.resume(store, finished, actor="cy")
    jobs.request(store, finished, "stop", actor="cy")  # it was queued again: the stop ends it before it starts
    jobs.delete_run(store, queued, actor="ana")
    set_id = _rated_set(store, finished, _project_id(store, "team"))
    delete_set(store, set_id, actor="bo")
    save_prompt_set(store, "greetings", ["hello"], actor="cy")
    delete_prompt_set(store, "greetings", actor="cy")

    done = [(a["actor"], a["action"], a["target"], a["project"]) for a in reversed(list_actions(store))]
    assert done == [
        ("ana", "project.create", "project:team", "team"),
        ("ana", "dataset.import", f"dataset:{imported['dataset_id']}", "team"),
        ("bo", "dataset.reclean", f"dataset:{imported['dataset_id']}", "team"),
        ("ana", "run.create", f"run:{queued}", "team"),
        ("bo", "run.stop", f"run:{queued}", "team"),
        ("cy", "run.create", f"run:{finished}", "team"),
        ("cy", "run.resume", f"run:{finished}", "team"),
        ("cy", "run.stop", f"run:{finished}", "team"),
        ("ana", "run.delete", f"run:{queued}", "team"),
        ("bo", "samples.delete", f"sample_set:{set_id}", "team"),
        ("cy", "prompts.save", "prompt_set:greetings", None),
        ("cy", "prompts.delete", "prompt_set:greetings", None)]
    with store.session() as session:
        assert session.get(Run, finished).created_by == "cy"
        assert session.scalars(select(DatasetVersion.created_by).order_by(DatasetVersion.id)).all() == ["ana", "bo"]


# ----------------------------------------------------------------------------- the UI's handlers, as wired

def _handler(app, elem_id: str, event: str = "click"):
    """The function the page calls when ``event`` happens on the component with ``elem_id``."""
    block = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == elem_id)
    return next(f.fn for f in app.fns.values() if (block._id, event) in [tuple(t) for t in f.targets])


@pytest.fixture
def app(store):
    from studio.ui.app import build_app

    return build_app(store)


def test_the_ui_deletes_a_project_only_when_its_name_is_typed(store, tmp_path, app):
    import gradio as gr

    team = _world(store, tmp_path, "team")
    delete = _handler(app, "project-delete")
    for typed in ("", "tea", "other"):
        message, *_ = delete("team", typed, False, gr.Request(username="ana"))
        assert message.startswith("Nothing was deleted")
    assert _rows(store, team)["run"] == 1 and store.path(f"runs/{team['run']}").is_dir()
    message, project, _, activity = delete("team", "team", False, gr.Request(username="ana"))
    assert "deleted" in message and project.value == "default"
    assert _rows(store, team)["run"] == 0 and not store.path(f"runs/{team['run']}").exists()
    assert list_actions(store, project="team")[0]["actor"] == "ana"


def test_typing_a_new_project_name_in_the_header_creates_the_project(store, app):
    import gradio as gr

    select_project = _handler(app, "project", "change")
    chosen, versions, activity, message = select_project("  lab two ", False, gr.Request(username="bo"))
    assert chosen.value == "lab two" and "lab two" in [c[0] for c in chosen.choices]
    assert "created" in message and [p["name"] for p in list_projects(store)] == ["lab two"]
    assert [row[1:4] for row in activity] == [["bo", "project.create", "project:lab two"]]
    assert select_project("x" * 300, False, None)[0].value == "default"  # refused with a message, nothing made


def test_the_ui_deletes_runs_sets_and_versions_only_after_the_second_button(store, tmp_path, app):
    import gradio as gr

    world = _world(store, tmp_path, "default")
    ref = f"{world['dataset']}:2"
    delete_run, delete_set_ = _handler(app, "run-delete-yes"), _handler(app, "gen-set-delete-yes")
    delete_version_ = _handler(app, "version-delete-yes")
    user = gr.Request(username="cy")
    for armed in (None, world["run"] + 1):  # never armed, or armed for another run than the one selected
        assert delete_run(armed, world["run"], "default", user)[0].startswith("Nothing was deleted")
        assert delete_set_(armed, world["set"], "default", user)[0].startswith("Nothing was deleted")
    assert delete_version_(None, ref, "default", user)[0].startswith("Nothing was deleted")
    assert _rows(store, world)["run"] == 1 and _rows(store, world)["set"] == 1 and _rows(store, world)["versions"] == 2

    assert "deleted" in delete_set_(world["set"], world["set"], "default", user)[0]
    assert "deleted" in delete_run(world["run"], world["run"], "default", user)[0]
    assert "deleted" in delete_version_(ref, ref, "default", user)[0]
    assert (_rows(store, world)["run"], _rows(store, world)["set"], _rows(store, world)["versions"]) == (0, 0, 1)
    assert not store.path(f"samples/{world['set']}").exists() and not store.path(f"runs/{world['run']}").exists()
    assert [a["action"] for a in list_actions(store, limit=3)] == ["dataset.delete_version", "run.delete",
                                                                   "samples.delete"]
    assert {a["actor"] for a in list_actions(store, limit=3)} == {"cy"}


# ----------------------------------------------------------------------------- the command line

@pytest.mark.slow
def test_cli_projects_create_import_activity_and_delete_with_yes(tmp_path):
    import getpass
    import json

    from test_cli import studio

    home = tmp_path / "home"
    assert "created" in studio(home, "projects", "create", "team").stdout
    assert studio(home, "projects", "create", "team", check=False).returncode != 0
    imported = json.loads(studio(home, "data", "import", str(_corpus(tmp_path)), "--project", "team", "--json").stdout)
    listed = json.loads(studio(home, "projects", "list", "--json").stdout)["projects"]
    assert [(p["name"], p["datasets"]) for p in listed] == [("team", 1)]
    actions = json.loads(studio(home, "projects", "activity", "team", "--json").stdout)["actions"]
    assert [(a["actor"], a["action"]) for a in actions] == [(getpass.getuser(), "dataset.import"),
                                                            (getpass.getuser(), "project.create")]

    refused = studio(home, "projects", "delete", "team", check=False)
    assert refused.returncode != 0 and "1 datasets, 0 runs and 0 sample sets" in refused.stderr
    assert "Nothing was deleted; run again with --yes" in refused.stderr
    assert (home / f"datasets/{imported['dataset_id']}").is_dir()
    gone = json.loads(studio(home, "projects", "delete", "team", "--yes", "--json").stdout)
    assert (gone["datasets"], gone["versions"]) == (1, 1) and not (home / f"datasets/{imported['dataset_id']}").exists()
    assert json.loads(studio(home, "projects", "list", "--json").stdout)["projects"] == []


@pytest.mark.slow
def test_a_generated_set_belongs_to_its_runs_project_or_the_one_asked_and_records_who_made_it(lab):
    store = lab["store"]
    made = generate_set(store, ["base", str(lab["run"])], ["Once upon a time"], seed=1,
                        settings={"max_new_tokens": 4}, created_by="dee")
    asked = generate_set(store, [str(lab["run"])], ["Mia"], seed=1, settings={"max_new_tokens": 4}, project="elsewhere")
    assert made in [s["set_id"] for s in list_sets(store, "default")]
    assert [s["set_id"] for s in list_sets(store, "elsewhere")] == [asked]
    actions = {a["target"]: a for a in list_actions(store)}
    assert (actions[f"sample_set:{made}"]["actor"], actions[f"sample_set:{made}"]["project"]) == ("dee", "default")
    assert actions[f"sample_set:{asked}"]["project"] == "elsewhere" and actions["project:elsewhere"]


def test_a_run_another_run_was_trained_from_is_kept(store, tmp_path):
    team, other = _world(store, tmp_path, "team"), _world(store, tmp_path, "other")
    parent_model = str(store.path(f"runs/{team['run']}/checkpoints/step-1/model"))
    child = jobs.create_run(store, f"{other['dataset']}:1", parent_model, "lora", TrainConfig(max_steps=1))
    with pytest.raises(jobs.RunError, match=f"run {child} was trained from a checkpoint of run {team['run']}"):
        jobs.delete_run(store, team["run"])
    with pytest.raises(DeleteRefused, match=f"run {child} of another project was trained from a checkpoint"):
        delete_project(store, "team")
    assert store.path(f"runs/{team['run']}").is_dir() and _rows(store, team)["run"] == 1
    jobs.delete_run(store, child)
    delete_project(store, "team")
    assert _rows(store, team)["run"] == 0


def test_a_run_a_running_deployment_serves_is_kept_until_the_deployment_stops(store, tmp_path):
    from studio.status import DeployStatus
    from studio.store.tables import Deployment

    team = _world(store, tmp_path, "team")
    with store.session() as session:
        served = Deployment(name="tales", project="team", models=[{"name": "base", "ref": "base"},
                                                                  {"name": "m", "ref": f"{team['run']}:1"}],
                            status=DeployStatus.RUNNING)
        session.add(served)
        session.flush()
        served_id = served.id
    with pytest.raises(jobs.RunError, match=f"deployment 'tales' serves a checkpoint of run {team['run']}: stop it"):
        jobs.delete_run(store, team["run"])
    assert store.path(f"runs/{team['run']}").is_dir() and _rows(store, team)["run"] == 1
    with store.session() as session:
        session.get(Deployment, served_id).status = DeployStatus.STOPPED
    jobs.delete_run(store, team["run"])  # a stopped deployment's start will say the run is gone
    assert _rows(store, team)["run"] == 0


def test_deleting_a_run_removes_its_share_tab_exports_and_no_other_runs(store, tmp_path):
    from studio.data.service import import_dataset

    dataset = str(import_dataset(store, [_corpus(tmp_path)], name="notes")["dataset_id"])
    first, second = _finished_run(store, dataset), _finished_run(store, dataset)
    exports = store.path("exports")
    mine = [exports / f"run{first}-step1-peft-20261201-120000", exports / f"run{first}-step1-peft-20261201-120000.zip"]
    other = exports / f"run{second}-step1-peft-20261201-120000"
    unrelated = exports / f"run{first}0-step1-peft-20261201-120000"  # run 10 when deleting run 1: kept
    for folder in (mine[0], other, unrelated):
        folder.mkdir(parents=True)
        (folder / "README.md").write_text("card")
    mine[1].write_bytes(b"zip")
    jobs.delete_run(store, first)
    assert not any(path.exists() for path in mine)
    assert other.exists() and unrelated.exists()


def test_a_set_left_running_by_a_dead_process_is_marked_interrupted_and_no_longer_blocks_deletion(store, tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from studio.generation.service import delete_set, reap_sets
    from studio.projects import create_project, delete_project
    from studio.store.tables import SampleSet

    create_project(store, "lab")
    with store.session() as session:
        lab = session.scalars(select(Project).where(Project.name == "lab")).one()
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()  # a process that has ended
        for pid in (int(dead), os.getpid()):
            session.add(SampleSet(modality="text", base_model="m", project_id=lab.id, status="running",
                                  report={"owner": {"pid": pid, "host": socket.gethostname()}}))
    with store.session() as session:
        left_behind, alive = [s.id for s in session.scalars(select(SampleSet).order_by(SampleSet.id))]
    assert reap_sets(store) == [left_behind]
    with store.session() as session:
        assert session.get(SampleSet, left_behind).status == "interrupted"
        assert "samples it made are kept" in session.get(SampleSet, left_behind).note
        assert session.get(SampleSet, alive).status == "running"  # its process (this test) still works on it
    with pytest.raises(DeleteRefused, match=f"sample set {alive} in project 'lab' is still being generated"):
        delete_project(store, "lab")
    with store.session() as session:
        session.get(SampleSet, alive).report = {"owner": {"pid": int(dead), "host": socket.gethostname()}}
    delete_set(store, left_behind)
    delete_project(store, "lab")  # the other set's process is gone now too: nothing blocks the project


def test_a_deleted_runs_id_is_never_given_to_a_new_run(store, tmp_path):
    """SQLite would hand the newest deleted row's id to the next row; a new run #2 would then meet the old run
    #2's cached model, loss history and activity records."""
    dataset = str(import_dataset(store, [_corpus(tmp_path)], name="notes")["dataset_id"])
    first = _finished_run(store, dataset)
    newest = _finished_run(store, dataset)
    jobs.delete_run(store, newest)
    assert _finished_run(store, dataset) == newest + 1
    jobs.delete_run(store, first)
    dataset_row = import_dataset(store, [_corpus(tmp_path, "other.txt")], name="other")["dataset_id"]
    delete_dataset(store, dataset_row)
    assert import_dataset(store, [_corpus(tmp_path, "third.txt")], name="third")["dataset_id"] == dataset_row + 1

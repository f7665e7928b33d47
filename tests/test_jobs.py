"""Runs as detached jobs, end to end with the real worker (accelerate launch) and the starter-text model:
the queue, stop and resume, a killed worker, the CLI contract, and two gloo ranks on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from studio.data.service import import_dataset
from studio.status import RUN_ENDED, RunStatus
from studio.store.tables import Run
from studio.training import jobs
from studio.training.config import TrainConfig
from studio.training.runs import metric_rows, run_summary
from leftovers import wait_until_exited, zombie_children
from test_loop import stopped_on_a_plateau

FAST = dict(per_device_train_batch_size=4, eval_steps=2, save_steps=2, logging_steps=1, learning_rate=3e-3,
            warmup_steps=0, use_cpu=True)


@pytest.fixture
def corpus_store(store, tmp_path):
    corpus = tmp_path / "tales.txt"
    corpus.write_text("\n\n".join(f"The {a} fox saw the {b} hen near the {c} barn and ran home."
                                  for a in ("red", "quick", "old", "small") for b in ("white", "brown", "tiny")
                                  for c in ("big", "green", "far")))
    result = import_dataset(store, [corpus], name="tales")
    return store, f"{result['dataset_id']}"


def text_config(**changes) -> TrainConfig:
    config = TrainConfig(**{**FAST, **changes})
    config.text.max_length = 32
    return config


def wait_until(store, run_id, predicate, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs.dispatch(store)
        summary = run_summary(store, run_id)
        if predicate(summary):
            return summary
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not get there in {timeout}s: {run_summary(store, run_id)}\n"
                         f"{jobs.log_tail(store, run_id)}")


def ended(summary):
    return summary["status"] in RUN_ENDED


@pytest.mark.slow
def test_queue_runs_one_at_a_time_in_order(corpus_store):
    store, dataset = corpus_store
    first = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=2))
    second = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=2))
    jobs.dispatch(store)
    assert run_summary(store, second)["status"] == "queued"  # waits while the first holds the device
    wait_until(store, second, ended)
    with store.session() as session:
        one, two = session.get(Run, first), session.get(Run, second)
        assert (one.status, two.status) == ("completed", "completed")
        assert two.started_at >= one.ended_at
    for pid in (one.pid, two.pid):
        wait_until_exited(pid)
    jobs.dispatch(store)  # a round with no run active still collects the workers that ended by themselves
    assert not {one.pid, two.pid} & set(zombie_children())


@pytest.mark.slow
def test_stop_saves_a_checkpoint_and_resume_continues_the_curve(corpus_store):
    store, dataset = corpus_store
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=400))
    wait_until(store, run_id, lambda s: s["steps"] >= 6)  # the loss has fallen well below the untrained model's
    jobs.request(store, run_id, "stop")
    stopped = wait_until(store, run_id, ended)
    assert stopped["status"] == "stopped" and stopped["checkpoints"]
    stopped_at = stopped["steps"]
    assert stopped["checkpoints"][-1].endswith(f"step-{stopped_at:07d}")

    jobs.resume(store, run_id)
    wait_until(store, run_id, lambda s: s["status"] == "running" and s["steps"] >= stopped_at + 2)
    jobs.request(store, run_id, "stop")
    wait_until(store, run_id, ended)
    history, _ = metric_rows(store, run_id)
    train_steps = [h["step"] for h in history if h["name"] == "train_loss"]
    assert train_steps == list(range(1, train_steps[-1] + 1))  # one curve, no restart at step 1
    assert [h["step"] for h in history if h["name"] == "val_loss"].count(0) == 1
    # The resumed attempt trains the checkpoint's weights: its first loss is near the last one before the stop,
    # far from the untrained model's (step 1's).
    loss = {h["step"]: h["value"] for h in history if h["name"] == "train_loss"}
    untrained, last_before, first_after = loss[1], loss[stopped_at], loss[stopped_at + 1]
    assert last_before < untrained - 1.0, loss
    assert abs(first_after - last_before) < abs(first_after - untrained) / 3, loss


def record_attempt(store, run_id, steps):
    """What a worker records for ``steps``: loss and learning rate each step, validation and a sample every 50."""
    from studio.models.base import Sample
    from studio.training.worker import StoreHooks

    hooks = StoreHooks(store, run_id)
    for step in steps:
        hooks.metric(step, "train_loss", 1.0 / (step + 1))
        hooks.metric(step, "learning_rate", 1e-3)
        if step % 50 == 0:
            hooks.metric(step, "val_loss", 2.0 / (step + 1))
            hooks.samples(step, [Sample(prompt="The red fox", seed=0, text=f"at {step}")])
    hooks.flush()


def test_resume_forgets_what_the_abandoned_attempt_recorded_after_its_checkpoint(corpus_store):
    from studio.store.tables import Checkpoint
    from studio.training.runs import samples
    from studio.ui.state import MetricCache
    from studio.ui.train_tab import loss_frame

    store, dataset = corpus_store
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=400))
    record_attempt(store, run_id, range(0, 185))  # died at step 184, its last checkpoint at step 100
    for step in (100, 150):  # resumed from 100 by choice: 150 is the abandoned attempt's too
        store.path(f"runs/{run_id}/checkpoints/step-{step:07d}").mkdir(parents=True)
    with store.session() as session:
        for step in (100, 150):
            session.add(Checkpoint(run_id=run_id, step=step, path=f"runs/{run_id}/checkpoints/step-{step:07d}",
                                   val_loss=0.5))
        run = session.get(Run, run_id)
        run.status, run.steps_done = "failed", 184
    page = MetricCache()
    assert len(page.history(store, run_id)) > 2 * 184  # a page showing the dead attempt's curve

    jobs.resume(store, run_id, checkpoint_step=100)
    assert run_summary(store, run_id)["steps"] == 100
    with store.session() as session:  # a later resume must not start from the abandoned attempt's checkpoint
        assert [c.step for c in session.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id))] == [100]
    assert not store.path(f"runs/{run_id}/checkpoints/step-0000150").exists()
    record_attempt(store, run_id, range(101, 161))  # the resumed attempt
    history, _ = metric_rows(store, run_id)
    for name in ("train_loss", "learning_rate", "val_loss"):
        steps = [h["step"] for h in history if h["name"] == name]
        assert len(steps) == len(set(steps)), name  # one value per step
    assert [h["step"] for h in history if h["name"] == "train_loss"] == list(range(0, 161))
    assert [s["step"] for s in samples(store, run_id)] == [0, 50, 100, 150]
    plotted = loss_frame(page.history(store, run_id))  # the open page's curve, read incrementally
    train = plotted[plotted["series"] == "train"]
    assert list(train["step"]) == list(range(0, 161))


@pytest.mark.slow
def test_a_killed_worker_marks_its_run_failed_with_its_log(corpus_store):
    store, dataset = corpus_store
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=5000))
    wait_until(store, run_id, lambda s: s["status"] == "running" and s["steps"] >= 1)
    with store.session() as session:
        pid = session.get(Run, run_id).pid
    os.killpg(pid, signal.SIGKILL)  # the worker and accelerate's launcher, as an OOM killer would
    failed = wait_until(store, run_id, ended, timeout=60)
    assert failed["status"] == "failed"
    assert "died" in failed["error"]
    last_log_line = jobs.log_tail(store, run_id, lines=1)
    assert last_log_line and last_log_line in failed["error"]  # the log tail rides along
    nxt = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=1))
    assert wait_until(store, nxt, ended)["status"] == "completed"  # the device set was freed


def test_a_run_the_dispatcher_ended_leaves_no_request_for_the_worker_of_its_resume(corpus_store):
    """Ending a run is one function, however it ends: a request its dead worker never handled is closed, or the
    worker a resume starts would obey it (a stop asked of the run that died would stop the resumed run at once)."""
    from datetime import datetime, timedelta, timezone

    from studio.store.tables import ControlFlag

    store, dataset = corpus_store
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=5))
    with store.session() as session:  # a worker that went silent an hour ago
        run = session.get(Run, run_id)
        run.status, run.heartbeat_at = RunStatus.RUNNING, datetime.now(timezone.utc) - timedelta(hours=1)
    jobs.request(store, run_id, "stop")
    assert jobs.reap(store) == [run_id]
    assert run_summary(store, run_id)["status"] == "failed"
    with store.session() as session:
        assert [f.handled_at is not None for f in session.scalars(select(ControlFlag))] == [True]


def cli_train(store, dataset: str, max_steps: int, *settings: str) -> dict:
    """`studio train --json` of the starter-text from scratch, small and on the CPU, with ``settings`` (KEY=VALUE)."""
    env = {**os.environ, "STUDIO_HOME": str(store.home)}
    pairs = ["per_device_train_batch_size=4", "max_length=32", "use_cpu=true", *settings]
    done = subprocess.run([sys.executable, "-m", "studio.cli", "train", "--dataset", dataset, "--model", "starter-text",
                           "--method", "scratch", "--max-steps", str(max_steps), "--json"]
                          + [arg for pair in pairs for arg in ("--set", pair)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_train_cli_json_contract(corpus_store):
    store, dataset = corpus_store
    env = {**os.environ, "STUDIO_HOME": str(store.home)}
    result = cli_train(store, dataset, 4, "eval_steps=2", "learning_rate=3e-3", "sample_prompts=The red fox",
                       "sample_steps=2")
    assert result["status"] == "completed" and result["steps"] == 4
    assert set(result["train_loss"]) == {"last", "best"} and result["val_loss"]["best"] <= result["val_loss"]["last"]
    assert result["checkpoints"] and all(os.path.isdir(p) for p in result["checkpoints"])
    shown = json.loads(subprocess.run([sys.executable, "-m", "studio.cli", "runs", "show", str(result["run_id"]),
                                       "--json"], capture_output=True, text=True, env=env, timeout=60).stdout)
    assert shown["config"]["text"]["max_length"] == 32 and shown["config"]["learning_rate"] == 3e-3
    assert shown["history"][0] == {"step": 0, "name": "val_loss", "value": shown["history"][0]["value"]}
    assert [(s["step"], s["prompt"]) for s in shown["samples"]] == [(2, "The red fox"), (4, "The red fox")]
    assert all(s["text"] for s in shown["samples"])  # samples during training, stored with the run
    log = jobs.log_tail(store, result["run_id"], 200)
    for line in ("step 1/4 · loss ", "step 4/4 · loss ", "checkpoint saved at step 4", "samples made at step 2"):
        assert line in log, log  # what a person watching needs, a line each
    for noise in ("were not passed to `accelerate launch`", "Removed shared tensor", "Writing model shards", "\r"):
        assert noise not in log, log  # no warning about what is expected, no progress bars
    listed = json.loads(subprocess.run([sys.executable, "-m", "studio.cli", "runs", "list", "--json"],
                                       capture_output=True, text=True, env=env, timeout=60).stdout)
    assert [r["run_id"] for r in listed["runs"]] == [result["run_id"]]

    bad = subprocess.run([sys.executable, "-m", "studio.cli", "train", "--dataset", dataset, "--model", "starter-text",
                          "--method", "scratch", "--set", "learning_rat=1", "--json"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode != 0 and "learning_rat" in json.loads(bad.stdout)["error"]


def test_samples_are_on_by_default_with_prompts_from_the_validation_split(corpus_store):
    from studio.data.service import get_version, read_manifest

    store, dataset = corpus_store
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch", TrainConfig())
    with store.session() as session:
        config = TrainConfig.model_validate(session.get(Run, run_id).config)
    validation = [r["text"] for r in read_manifest(store, get_version(store, dataset), "validation")]
    assert config.sample_steps > 0 and len(config.sample_prompts) == 3
    assert all(any(text.startswith(prompt) for text in validation) for prompt in config.sample_prompts)
    # Without prompts there is nothing to sample: asking says so, rather than promising samples that never come.
    quiet = jobs.create_run(store, dataset, "starter-text", "scratch", TrainConfig(sample_steps=0))
    with store.session() as session:
        session.get(Run, quiet).status = "running"
    with pytest.raises(jobs.RunError, match="no sample prompts"):
        jobs.request(store, quiet, "sample")


def test_the_sample_prompts_differ_when_captions_repeat(tmp_path):
    from studio.data.prompts import prompts_of

    # The shapes example's validation split starts with three blue circles: three samples of one prompt showed it.
    captions = ["a blue circle"] * 3 + ["a blue square", "a green circle", "a red square"]
    rows = [{"file": f"{number}.png", "caption": caption} for number, caption in enumerate(captions)]
    assert prompts_of(rows, tmp_path, 3) == ["a blue circle", "a blue square", "a green circle"]


@pytest.mark.slow
def test_early_stopping_after_the_warm_up_is_reported(corpus_store):
    store, dataset = corpus_store
    env = {**os.environ, "STUDIO_HOME": str(store.home)}
    # A rate far too high: once the warm-up (10 steps, the default) is over, the validation loss only gets worse.
    result = cli_train(store, dataset, 40, "eval_steps=1", "early_stopping_patience=1", "learning_rate=0.5",
                       "sample_steps=0")
    assert result["status"] == "completed" and 10 < result["steps"] < 40  # not at step 1, which ran at rate 0
    history, _ = metric_rows(store, result["run_id"])
    reason = stopped_on_a_plateau(history, 1, result["steps"])
    assert result["stopped_early"] == {"step": result["steps"], "reason": reason}
    shown = subprocess.run([sys.executable, "-m", "studio.cli", "runs", "show", str(result["run_id"])],
                           capture_output=True, text=True, env=env, timeout=60).stdout
    assert f"stopped early at step {result['steps']} because {reason}" in shown
    from studio.ui.train_tab import progress_html

    page_line = progress_html(run_summary(store, result["run_id"]), [])
    assert f"stopped early at step {result['steps']} because {reason}" in page_line
    assert [h["value"] for h in history if h["name"] == "learning_rate"][0] == 0.0  # the rate step 1 ran at


@pytest.mark.slow
def test_two_gloo_ranks_on_the_cpu(corpus_store):
    store, dataset = corpus_store
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=3, num_processes=2))
    summary = wait_until(store, run_id, ended, timeout=300)
    assert summary["status"] == "completed", summary["error"]
    log = jobs.log_tail(store, run_id, 200)
    assert "2 process(es)" in log
    history, _ = metric_rows(store, run_id)
    assert [h["step"] for h in history if h["name"] == "train_loss"] == [1, 2, 3]  # written once, by rank 0


def test_copyable_launch_commands(corpus_store):
    store, dataset = corpus_store
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(num_processes=2))
    commands = jobs.copyable_commands(store, run_id)
    single, multi = commands["single_node"], commands["multi_node"]
    assert f"STUDIO_HOME={store.home}" in single and "ACCELERATE_USE_CPU=1" in single
    assert "accelerate launch" in single and "--num_processes 2" in single and "--multi_gpu" in single
    assert single.endswith(f"-m studio.training.worker {run_id}")
    assert "--machine_rank $MACHINE_RANK" in multi and "--num_machines $NUM_MACHINES" in multi
    assert commands["secrets"] == []


def test_copyable_launch_commands_never_show_the_database_password(corpus_store):
    store, dataset = corpus_store
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(num_processes=2))
    store.settings = store.settings.model_copy(
        update={"database_url": "postgresql+psycopg2://studio:Pa55-w0rd@db.example:5432/studio"})
    commands = jobs.copyable_commands(store, run_id)
    for command in (commands["single_node"], commands["multi_node"]):
        assert "Pa55-w0rd" not in command and "db.example" not in command
        assert 'STUDIO_DATABASE_URL="$STUDIO_DATABASE_URL"' in command  # the worker still gets the database
    assert commands["secrets"] == ["STUDIO_DATABASE_URL"]


def test_deepspeed_or_fsdp_config_is_passed_to_accelerate(corpus_store, tmp_path):
    store, dataset = corpus_store
    accelerate_yaml = tmp_path / "fsdp.yaml"
    accelerate_yaml.write_text("distributed_type: FSDP\n")
    config = text_config(accelerate_config_file=str(accelerate_yaml))
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch", config)
    command = jobs.launch_command(run_id, config)
    assert command[command.index("--config_file") + 1] == str(accelerate_yaml)
    with pytest.raises(ValueError, match="does not exist"):
        text_config(accelerate_config_file=str(tmp_path / "missing.yaml"))


@pytest.mark.slow
def test_preflight_measures_time_and_memory_in_a_child_process(corpus_store):
    from studio.training.preflight import preflight

    store, dataset = corpus_store
    result = preflight(store, dataset, "starter-text", "scratch", text_config(num_train_epochs=2))
    assert result["seconds_per_step"] > 0 and result["total_steps"] > 0
    assert result["estimated_seconds"] == pytest.approx(result["seconds_per_step"] * result["total_steps"])
    assert result["peak_memory_bytes"] > 10 * 2**20 and result["verdict"] == "fits"
    with pytest.raises(jobs.RunError, match="starter models are trained from scratch"):  # refused before the child
        preflight(store, dataset, "starter-text", "lora", text_config())


def test_resume_from_an_earlier_checkpoint_is_refused_while_a_run_was_trained_from_a_later_one(corpus_store):
    from studio.store.tables import Checkpoint

    store, dataset = corpus_store
    parent = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=400))
    folders = {step: f"runs/{parent}/checkpoints/step-{step:07d}" for step in (100, 150)}
    with store.session() as session:
        for step, folder in folders.items():
            store.path(folder).mkdir(parents=True)
            session.add(Checkpoint(run_id=parent, step=step, path=folder))
        session.get(Run, parent).status = "stopped"
    child = jobs.create_run(store, dataset, str(store.path(folders[150]) / "model"), "full", text_config())
    with pytest.raises(jobs.RunError, match=f"run {child} was trained from a later checkpoint of run {parent}"):
        jobs.resume(store, parent, checkpoint_step=100)
    assert store.path(folders[150]).exists()  # nothing changed
    with store.session() as session:
        assert session.get(Run, parent).status == "stopped"

"""The training loop's logic on a tiny real model: learning, validation at step 0, checkpoints, resume,
stop, save-now, samples, early stopping, out-of-memory recovery, and two gloo ranks on the CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from studio.training.config import TrainConfig
from studio.training.loop import Hooks, train
from toy_backend import FakeClock, ToyBackend, make_rows


def rows():
    data = make_rows(64)
    validation = [dict(r, split="validation") for r in make_rows(16, seed=1)]
    return {"train": data, "validation": validation}


def config(**changes) -> TrainConfig:
    base = dict(learning_rate=0.2, max_steps=40, per_device_train_batch_size=8, eval_steps=10, save_steps=10,
                save_total_limit=2, warmup_steps=0, lr_scheduler_type="constant", use_cpu=True)
    return TrainConfig(**{**base, **changes})


def run(tmp_path, backend=None, hooks=None, resume_from=None, method="scratch", **changes):
    backend = backend or ToyBackend()
    handle = backend.load("toy", method, None)
    result = train(backend, handle, rows(), tmp_path, config(**changes), tmp_path / "out", hooks or Hooks(log=lambda m: None),
                   resume_from=resume_from)
    return result, backend, handle


def values(history, name):
    return [(h["step"], h["value"]) for h in history if h["name"] == name]


def test_loss_falls_and_validation_starts_at_step_zero(tmp_path):
    result, _, _ = run(tmp_path)
    val = values(result.history, "val_loss")
    assert val[0][0] == 0 and [s for s, _ in val] == [0, 10, 20, 30, 40]
    assert val[-1][1] < val[0][1] * 0.1
    assert result.status == "completed" and result.steps == 40
    for name in ("train_loss", "learning_rate", "grad_norm", "items_per_second", "eta_seconds"):
        assert values(result.history, name), name


def test_keeps_the_last_k_checkpoints_with_everything_needed_to_resume(tmp_path):
    result, _, _ = run(tmp_path)
    kept = sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir())
    assert kept == ["step-0000000", "step-0000030", "step-0000040"]  # and a run from scratch's untrained start
    last = tmp_path / "out" / "checkpoints" / "step-0000040"
    assert json.loads((last / "trainer_state.json").read_text())["step"] == 40
    assert (last / "model" / "model.safetensors").exists() and any((last / "state").iterdir())


def test_only_a_run_from_scratch_keeps_its_untrained_start(tmp_path):
    scratch, _, _ = run(tmp_path / "scratch", max_steps=3, save_steps=10)
    tuned, _, _ = run(tmp_path / "full", max_steps=3, save_steps=10, method="full")
    assert [Path(c).name for c in scratch.checkpoints] == ["step-0000000", "step-0000003"]
    assert [Path(c).name for c in tuned.checkpoints] == ["step-0000003"]  # its base is the model it started from


def test_resume_continues_the_step_count_and_the_curve(tmp_path):
    first, _, _ = run(tmp_path, max_steps=20)
    resumed, _, _ = run(tmp_path, max_steps=40, resume_from=tmp_path / "out" / "checkpoints" / "step-0000020")
    steps = [s for s, _ in values(resumed.history, "train_loss")]
    assert steps[0] == 21 and steps[-1] == 40
    assert values(resumed.history, "val_loss")[0][0] == 30  # no second step-0 evaluation
    # the resumed curve carries on where the first ended rather than starting from an untrained model
    assert values(resumed.history, "train_loss")[0][1] < values(first.history, "train_loss")[0][1] * 0.5


def test_stop_request_finishes_the_step_and_saves(tmp_path):
    asked = {"n": 0}

    def should_stop():
        asked["n"] += 1
        return asked["n"] >= 5

    result, _, _ = run(tmp_path, hooks=Hooks(log=lambda m: None, should_stop=should_stop))
    assert result.status == "stopped" and result.steps == 5
    assert (tmp_path / "out" / "checkpoints" / "step-0000005" / "trainer_state.json").exists()


def test_save_now_and_sample_now(tmp_path):
    seen = []
    flags = iter([False, False, True] + [False] * 100)
    result, _, _ = run(tmp_path, sample_prompts=["ab"], hooks=Hooks(
        log=lambda m: None, should_save=lambda: next(flags), should_sample=lambda: True,
        samples=lambda step, samples: seen.append((step, samples[0].text))))
    assert (tmp_path / "out" / "checkpoints").exists()
    assert "step-0000003" in result.checkpoints[1]  # after the untrained start
    assert len(seen) == 40 and seen[0][0] == 1


def stopped_on_a_plateau(history: list[dict], patience: int, stopped_at: int) -> str:
    """Checks that the run stopped at the evaluation ending ``patience`` evaluations that improved on none before
    them; returns the reason it must give, with the best validation loss before those and its step."""
    val = values(history, "val_loss")
    assert val[-1][0] == stopped_at  # the evaluation that ended it was the last
    before, plateau = val[:-patience], val[-patience:]
    best_step, best = min(before, key=lambda step_loss: step_loss[1])  # the first of equals, as the loop keeps
    assert all(loss >= best for _, loss in plateau), val
    return (f"the validation loss did not improve in {patience} evaluation(s) since its best, {best:.4f} at step "
            f"{best_step} (early_stopping_patience)")


def test_early_stopping(tmp_path):
    logs = []
    result, _, _ = run(tmp_path, hooks=Hooks(log=logs.append), max_steps=400, eval_steps=1, early_stopping_patience=2,
                       learning_rate=0.5, optim="sgd")
    assert result.status == "completed" and result.steps < 400
    reason = stopped_on_a_plateau(result.history, 2, result.steps)
    assert f"stopped early at step {result.steps} because {reason}" in logs
    assert values(result.history, "early_stopped") == [(result.steps, 2)]


def test_early_stopping_waits_for_the_warm_up_and_says_why(tmp_path):
    logs = []
    result, _, _ = run(tmp_path, hooks=Hooks(log=logs.append), max_steps=400, eval_steps=1, early_stopping_patience=1,
                       warmup_steps=10, lr_scheduler_type="cosine")
    # The first step runs at rate 0, so its validation cannot improve: that must not end the run.
    assert 10 < result.steps < 400 and result.status == "completed"
    assert [h["step"] for h in result.history if h["name"] == "early_stopped"] == [result.steps]
    reason = stopped_on_a_plateau(result.history, 1, result.steps)
    assert f"stopped early at step {result.steps} because {reason}" in logs


def test_the_logged_learning_rate_is_the_one_the_step_used(tmp_path):
    result, _, _ = run(tmp_path, max_steps=6, warmup_steps=2, lr_scheduler_type="cosine")
    rates = values(result.history, "learning_rate")
    assert rates[:3] == [(1, 0.0), (2, pytest.approx(0.1)), (3, pytest.approx(0.2))]  # warm-up from 0 to the peak


def test_speed_leaves_out_the_samples_and_the_eta_a_slow_first_step(tmp_path, monkeypatch):
    # On a clock that moves only by what the work takes: a step 0.01 s, the first 6 s more, sampling after every
    # step 1 s.
    clock = FakeClock()
    monkeypatch.setattr("studio.training.loop.time", clock)
    backend = ToyBackend(first_step_seconds=6.0, step_seconds=0.01, sample_seconds=1.0, clock=clock)
    result, _, _ = run(tmp_path, backend=backend, max_steps=10, sample_steps=1, sample_prompts=["ab"], eval_steps=100,
                       save_steps=100)
    speeds = [v for step, v in values(result.history, "items_per_second") if step > 1]
    assert speeds == [pytest.approx(800)] * 9  # 8 items in 0.01 s: the speed of training, not of training and sampling
    eta = dict(values(result.history, "eta_seconds"))
    assert eta[5] == pytest.approx(5 * 1.01), eta  # 5 steps of 1.01 s (with their samples) left; not 5 x 10.05 s / 5


def test_a_time_budget_ends_the_run_as_completed_with_a_checkpoint_and_says_why(tmp_path, monkeypatch):
    # Each step takes 6 s on a clock that moves only by the work: a budget of half a minute is spent at step 5.
    clock = FakeClock()
    monkeypatch.setattr("studio.training.loop.time", clock)
    logs = []
    backend = ToyBackend(step_seconds=6.0, clock=clock)
    result, _, _ = run(tmp_path, backend=backend, hooks=Hooks(log=logs.append), max_minutes=0.5)
    assert result.status == "completed" and result.steps == 5
    assert "stopped at step 5 of 40 because its time budget of 0.5 minute(s) was spent (max_minutes)" in logs
    assert values(result.history, "time_budget_stopped") == [(5, 0.5)]
    from studio.training.runs import stopped_early  # what `studio runs show` and the Train tab say of it

    assert stopped_early(result.history, result.status, result.steps) == {
        "step": 5, "reason": "its time budget of 0.5 minute(s) was spent (max_minutes)"}
    assert values(result.history, "val_loss")[-1][0] == 5  # the last step is validated, as a run's end is
    saved = tmp_path / "out" / "checkpoints" / "step-0000005" / "trainer_state.json"
    assert json.loads(saved.read_text())["trained_seconds"] == pytest.approx(30.0)
    # resumed with more steps, the budget counts the first attempt's time: it is spent after the first new step
    again, _, _ = run(tmp_path, backend=ToyBackend(step_seconds=6.0, clock=clock), hooks=Hooks(log=logs.append),
                      max_minutes=0.5, resume_from=saved.parent)
    assert again.steps == 6 and again.status == "completed"


def test_out_of_memory_halves_the_micro_batch_and_goes_on(tmp_path):
    logs = []
    result, _, _ = run(tmp_path, backend=ToyBackend(oom_above_batch=4), hooks=Hooks(log=logs.append))
    assert result.status == "completed" and result.steps == 40
    assert any("micro-batch halved to 4" in line for line in logs)
    assert values(result.history, "val_loss")[-1][1] < 0.05


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        TrainConfig(learning_rate=-1)


def test_tensorboard_logging_through_accelerate(tmp_path):
    result, _, _ = run(tmp_path, report_to=["tensorboard"], max_steps=5)
    events = list((tmp_path / "out" / "tensorboard").rglob("events.out.tfevents.*"))
    assert result.status == "completed" and events and events[0].stat().st_size > 0


def test_a_run_saved_with_the_tensorboard_switch_still_reads():
    assert TrainConfig.model_validate({"report_to_tensorboard": True}).report_to == ["tensorboard"]
    assert TrainConfig.model_validate({"report_to_tensorboard": False}).report_to == []
    assert TrainConfig.from_yaml("report_to: wandb, trackio").report_to == ["wandb", "trackio"]
    assert TrainConfig.from_yaml("report_to: none").report_to == []


def test_wandb_and_trackio_offline_write_their_files_with_the_whole_config(tmp_path):
    """No network, no account: wandb goes offline without WANDB_API_KEY; trackio writes its local database. In a
    process of its own, as a run's worker: trackio reads TRACKIO_DIR when Accelerate imports it."""
    pytest.importorskip("wandb")
    pytest.importorskip("trackio")
    import sqlite3

    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY", "TRACKIO_SPACE_ID")}
    env.update(TRACKIO_DIR=str(tmp_path / "trackio"), WANDB_SILENT="true")
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("loop_in_ranks.py")),
                           config(report_to=["wandb", "trackio"], max_steps=3).model_dump_json(), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    offline = list((tmp_path / "out" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert offline, list((tmp_path / "out").rglob("*"))
    written = offline[0].read_bytes()
    assert b"train_loss" in written and b"lora.r" in written  # the metrics, and the whole config (sections flat)
    databases = list((tmp_path / "trackio").glob("*.db"))
    assert [d.name for d in databases] == ["gen-studio.db"], list((tmp_path / "trackio").rglob("*"))
    with sqlite3.connect(databases[0]) as db:
        tables = [row[0] for row in db.execute("select name from sqlite_master where type='table'")]
        rows_written = [str(row) for table in tables for row in db.execute(f"select * from {table}")]
    assert any("train_loss" in row for row in rows_written) and any("lora.r" in row for row in rows_written), tables


def run_in_two_ranks(tmp_path, script: str = "loop_in_ranks.py", settings: TrainConfig | None = None,
                     **changes) -> dict:
    """The loop under ``accelerate launch`` with two gloo ranks on the CPU (the worker's multi-process path): ``script``
    (``SCRIPT CONFIG_JSON OUT_DIR``, by default the toy backend's) with ``settings`` (by default ``config(**changes)``),
    which writes the main process's history to OUT_DIR/history.json."""
    root = Path(__file__).resolve().parents[1]
    with socket.socket() as sock:  # a free port: other runs of the suite may use accelerate's default one
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
               "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
               str(root / "tests" / script), (settings or config(**changes)).model_dump_json(), str(tmp_path)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads((tmp_path / "history.json").read_text())


@pytest.mark.slow  # two accelerate ranks in two processes
@pytest.mark.parametrize("changes", [
    dict(max_steps=12, warmup_steps=4, lr_scheduler_type="linear"),
    dict(max_steps=-1, num_train_epochs=3, gradient_accumulation_steps=2, warmup_steps=3, lr_scheduler_type="cosine"),
], ids=["max-steps", "epochs"])
def test_two_processes_follow_the_one_process_learning_rate_curve(tmp_path, changes):
    # The batch size is per process: one process with 8 and two with 4 take the same 8 x accumulation items per
    # optimizer step, so an epoch is the same number of optimizer steps (64 items: 8 batches, 4 per process each).
    import torch

    torch.manual_seed(0)  # the start loop_in_ranks.py builds too
    one, _, _ = run(tmp_path / "one", per_device_train_batch_size=8, **changes)
    two = run_in_two_ranks(tmp_path / "two", per_device_train_batch_size=4, **changes)
    expected_steps = 12 if changes["max_steps"] > 0 else 3 * 8 // 2
    assert one.steps == two["steps"] == expected_steps
    one_curve, two_curve = values(one.history, "learning_rate"), values(two["history"], "learning_rate")
    assert [s for s, _ in two_curve] == [s for s, _ in one_curve] == list(range(1, expected_steps + 1))
    assert [v for _, v in two_curve] == pytest.approx([v for _, v in one_curve])
    # and the training loss recorded is that of the whole step's items, both ranks', as in one process
    one_loss, two_loss = values(one.history, "train_loss"), values(two["history"], "train_loss")
    assert [v for _, v in two_loss] == pytest.approx([v for _, v in one_loss], rel=1e-4)
    assert max(v for _, v in one_curve) == pytest.approx(0.2, rel=0.1)  # the warm-up reaches the peak ...
    assert one_curve[-1][1] < 0.05  # ... and the decay runs to the end, not half-way


def test_8bit_adamw_off_cuda_says_what_it_needs():
    import torch

    from studio.training.loop import make_optimizer

    config = TrainConfig(optim="adamw_8bit", use_cpu=True)
    with pytest.raises(ValueError, match=r"8-bit AdamW \(optim adamw_8bit\) needs a CUDA GPU and the bitsandbytes"):
        make_optimizer([torch.nn.Parameter(torch.zeros(2))], config)


def test_ema_weights_are_saved_validated_and_resumed_while_training_goes_on_raw(tmp_path):
    from safetensors.torch import load_file

    trained = []  # the raw weights after each step, as training has them

    def progress(step, total):
        trained.append(torch.cat([p.detach().flatten().clone() for p in handle.module.parameters()]))

    import torch

    backend = ToyBackend()
    handle = backend.load("toy", "scratch", None)
    start = torch.cat([p.detach().flatten().clone() for p in handle.module.parameters()])
    settings = config(max_steps=6, save_steps=3, eval_steps=3, diffusion={"ema_decay": 0.8})
    result = train(backend, handle, rows(), tmp_path, settings, tmp_path / "out", Hooks(log=lambda m: None,
                                                                                          progress=progress))
    average = start.clone()
    for n, weights in enumerate(trained):
        decay = min(0.8, (1 + n) / (10 + n))
        average = decay * average + (1 - decay) * weights
    saved = load_file(str(tmp_path / "out" / "checkpoints" / "step-0000006" / "model" / "model.safetensors"))
    assert torch.allclose(torch.cat([saved["linear.weight"].flatten(), saved["linear.bias"]]), average, atol=1e-6)
    assert torch.allclose(torch.cat([p.detach().flatten() for p in handle.module.parameters()]), trained[-1])
    assert not torch.allclose(average, trained[-1], atol=1e-3)  # the average is not the last weights
    xs = [r["x"] for r in rows()["validation"]]
    loss_with = lambda w: float(sum(((3 * x + 0.5) - float(w[0] * x + w[1])) ** 2 for x in xs) / len(xs))  # noqa: E731
    assert dict(values(result.history, "val_loss"))[6] == pytest.approx(loss_with(average), rel=1e-4)

    resumed = train(backend, backend.load("toy", "scratch", None), rows(), tmp_path, settings, tmp_path / "again",
                    Hooks(log=lambda m: None), resume_from=tmp_path / "out" / "checkpoints" / "step-0000003")
    assert resumed.steps == 6
    again = load_file(str(tmp_path / "again" / "checkpoints" / "step-0000006" / "model" / "model.safetensors"))
    assert all(torch.allclose(again[k], saved[k], atol=1e-6) for k in saved)

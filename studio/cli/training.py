"""``studio train`` and ``studio runs``: training runs, from start to end."""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass

from studio.cli.app import RUN_ID, Commands, arg
from studio.cli.shared import fail, os_user, report, store_of
from studio.status import RUN_ENDED, RunStatus
from studio.training.config import METHODS

commands = Commands()
commands.group("runs", "list, show, stop and resume training runs")


def _train_config(args, model_ref: str, job=None):
    """(the run's config, the recommended settings it started from): a job file's or a YAML file's settings as they
    are, else the settings recommended for the model and the objective (``--set objective=...``); then ``--set``."""
    from pathlib import Path

    from studio.models.registry import recommended_for
    from studio.training.config import TrainConfig, apply_overrides

    objective = next((value.strip() for key, _, value in (p.partition("=") for p in args.set)
                      if key.strip() == "objective"), "sft")
    recommended = [] if args.config or job else recommended_for(model_ref, objective)
    if job is not None:
        config = job.config  # a file is taken as it is
    else:
        config = TrainConfig.from_yaml(Path(args.config).read_text()) if args.config else \
            apply_overrides(TrainConfig(), recommended)
    pairs = list(args.set)
    if args.max_steps is not None:
        pairs.append(f"max_steps={args.max_steps}")
    return apply_overrides(config, pairs), recommended


def _job_of(args):
    """``args``' job file read (None without one), with ``--dataset``, ``--model`` and ``--method`` filled from it
    where not given; one of the three missing everywhere is an error naming it."""
    from pathlib import Path

    from studio.training.job_file import read_job

    job = None
    if args.job:
        if args.config:
            raise ValueError("a job file holds the settings: give it or --config, not both")
        job = read_job(Path(args.job).expanduser().read_text(), args.job)
        args.dataset, args.model, args.method = (args.dataset or job.dataset, args.model or job.model,
                                                 args.method or job.method)
    missing = [f"--{name}" for name in ("dataset", "model", "method") if not getattr(args, name)]
    if missing:
        raise ValueError(f"{', '.join(missing)} missing: give them, or a job file (studio train job.yaml)")
    return job


WORKER_LINE = re.compile(r"\[\d\d:\d\d:\d\d\] (?P<message>.*)")  # what the worker itself logs (hooks.log)
STEP_LINE = re.compile(r"step \d+/\d+ · ")  # the worker's step lines: the bar says the same
TRAINING_STARTS = "training "  # loop.py's line before the first step
WAITING = {RunStatus.QUEUED: "waiting in the queue", RunStatus.STARTING: "starting the worker"}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 90 * 60 else f"{seconds // 3600:.0f} h {seconds % 3600 / 60:.0f} min"


@dataclass
class _Following:
    """What ``studio train`` knows of its run between two looks: where its reading of the metrics and the log
    stopped, the last loss and time left, what the worker said it does, and whether a step of this attempt came."""
    last_metric: int
    log_offset: int
    loss: float | None = None
    eta: float | None = None
    doing: str = ""
    training: bool = False

    def take(self, found: dict) -> list[str]:
        """Notes what ``run_progress`` found; returns the worker's lines to show (its step lines left to the bar)."""
        self.last_metric, self.log_offset = found["last_metric"], found["log_offset"]
        for metric in found["metrics"]:
            if metric["name"] == "train_loss":
                self.loss, self.training = metric["value"], True
            elif metric["name"] == "eta_seconds":
                self.eta = metric["value"]
        shown = []
        for line in found["log_lines"]:
            said = WORKER_LINE.match(line)
            if said and not STEP_LINE.match(said["message"]):
                shown.append(line)
                self.doing = said["message"]
                # the loop's "training N steps: ..." comes just before the first step (a loss may come only every
                # logging_steps)
                self.training = self.training or self.doing.startswith(TRAINING_STARTS)
        return shown

    def update(self, shown, found: dict) -> None:
        status = found["status"]
        # Until this attempt's first step (the row's steps may still be an earlier attempt's): what the worker says
        if status in WAITING or not (self.training and found["total_steps"]):
            what = WAITING.get(status) or (self.doing if status == RunStatus.RUNNING else status)
            shown.update(0, None, textwrap.shorten(what or "starting", 70, placeholder="…"))
            return
        details = [f"loss {self.loss:.4f}" if self.loss is not None else "",
                   f"about {_duration(self.eta)} left" if self.eta and found["steps"] < found["total_steps"] else ""]
        shown.update(found["steps"], found["total_steps"], "step", details)


def _wait_for(args, store, run_id: int) -> dict:
    """Dispatch until this run has ended (it may wait in the queue behind others), showing its progress (a bar on a
    terminal: step, loss, time left) and the worker's own lines (resumed, out of memory, stopped early) as they
    come; the metrics and the log are read from where the last look stopped."""
    import time

    from studio.cli.progress import Progress
    from studio.training.jobs import dispatch
    from studio.training.runs import progress_marks, run_progress, run_summary

    following = _Following(*progress_marks(store, run_id))  # a resumed run's earlier attempt is not shown again
    with Progress(args, label=f"run {run_id}", unit="step") as shown:
        while True:
            dispatch(store)
            found = run_progress(store, run_id, following.last_metric, following.log_offset)
            for line in following.take(found):
                shown.say(line)
            following.update(shown, found)
            if found["status"] in RUN_ENDED:
                return run_summary(store, run_id)
            time.sleep(1)


def _report_when_ended(args, store, run_id: int) -> int:
    """Waits for the run to end and reports it; a run that failed is exit code 1."""
    summary = _wait_for(args, store, run_id)
    report(args, summary, _run_text(summary))
    return 1 if summary["status"] == RunStatus.FAILED else 0


def _run_text(summary: dict) -> str:
    from studio.training.runs import early_stop_note, method_text, where_text

    loss = summary["val_loss"]["best"]
    text = (f"run {summary['run_id']}: {summary['status']} after {summary['steps']} steps "
            f"({method_text(summary)} {summary['model']} on {summary['dataset_name']})"
            + (f", best validation loss {loss:.4f}" if loss is not None else ""))
    if note := early_stop_note(summary):
        text += f"; {note}"
    if summary["status"] not in RUN_ENDED and (where := where_text(summary)):
        text += f" [{where}]"  # the GPUs it holds, its Ray job, or what a queued run waits for
    if "config" in summary:  # `runs show`: what the training items went through
        from studio.training.config import TrainConfig, describe_augmentation

        text += "\naugmentation: " + describe_augmentation(TrainConfig.model_validate(summary["config"]),
                                                          summary["modality"])
    if summary.get("error"):
        text += "\n" + summary["error"]
    return text


@commands.command(
    "train",
    arg("job", nargs="?", metavar="JOB_YAML", help="a job file: dataset, model, method and every setting (the Train "
                                                  "tab's 'Show config as YAML'); the options below override it"),
    arg("--dataset", help="DATASET_ID[:VERSION]"),
    arg("--model", help="starter-text|starter-image|starter-image-gan|starter-image-vae|starter-audio|"
                    "starter-audio-gan, a Hub id, a folder, or RUN_ID[:STEP] (a run's checkpoint: its last without "
                    "STEP)"),
    arg("--method", choices=METHODS),
    arg("--config", help="a YAML training config (as shown with every run)"),
    arg("--max-steps", type=int),
    arg("--project", metavar="NAME", help="check that the dataset is in this project (a run always belongs to its "
                                          "dataset's project)"),
    arg("--set", action="append", default=[], metavar="KEY=VALUE",
        help="a config value by its TrainingArguments/PEFT name, e.g. learning_rate=1e-4 r=16"),
    help="train a model on a dataset version (waits until the run ends)", progress=True)
def cmd_train(args) -> int:
    from pydantic import ValidationError

    from studio.data.items import ImportRefused
    from studio.data.service import get_version
    from studio.training.jobs import START, RunError, create_run, start_folder

    store = store_of(args)
    try:
        job = _job_of(args)
        model_ref = args.model  # a run's checkpoint (RUN_ID[:STEP]) recommends what suits its model
        if START.fullmatch(model_ref):
            model_ref = start_folder(store, model_ref, get_version(store, args.dataset).dataset.modality)
        config, recommended = _train_config(args, model_ref, job)
        run_id = create_run(store, args.dataset, args.model, args.method, config, project=args.project,
                            created_by=os_user())
    except (RunError, ImportRefused, ValueError, ValidationError, OSError) as error:
        return fail(args, str(error))
    if not (args.json or args.quiet):
        if recommended:
            print(f"started from the settings recommended for {args.model} ({config.objective}), under your --set: "
                  f"{' '.join(recommended)}", file=sys.stderr)
        print(f"run {run_id} queued; it goes on if this command is interrupted (studio runs show {run_id})",
              file=sys.stderr)
    return _report_when_ended(args, store, run_id)


@commands.command("runs list", arg("--project", metavar="NAME", help="only this project's runs"))
def cmd_runs_list(args) -> int:
    from studio.training.runs import list_runs

    runs = list_runs(store_of(args), args.project)
    report(args, {"runs": runs}, "\n".join(_run_text(r) for r in runs) or "no runs yet")
    return 0


@commands.command("runs show", RUN_ID)
def cmd_runs_show(args) -> int:
    from studio.training.runs import run_summary

    try:
        summary = run_summary(store_of(args), args.run_id, with_history=True)
    except ValueError as error:
        return fail(args, str(error))
    report(args, summary, _run_text(summary))
    return 0


def _requested(args, what: str) -> int:
    report(args, {"run_id": args.run_id, "requested": what}, f"run {args.run_id}: {what} requested")
    return 0


@commands.command("runs stop", RUN_ID)
def cmd_runs_stop(args) -> int:
    from studio.training.jobs import RunError, request

    try:
        request(store_of(args), args.run_id, "stop", actor=os_user())
    except RunError as error:
        return fail(args, str(error))
    return _requested(args, "stop")


@commands.command("runs resume", RUN_ID,
                  arg("--checkpoint", type=int, help="the step of the checkpoint (default: the last)"),
                  arg("--wait", action="store_true", help="wait until the run ends"), progress=True)
def cmd_runs_resume(args) -> int:
    from studio.training.jobs import RunError, resume

    store = store_of(args)
    try:
        resume(store, args.run_id, args.checkpoint, actor=os_user())
    except RunError as error:
        return fail(args, str(error))
    return _report_when_ended(args, store, args.run_id) if args.wait else _requested(args, "resume")

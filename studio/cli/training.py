"""``studio train`` and ``studio runs``: training runs, from start to end."""

from __future__ import annotations

import sys

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


def _wait_for(store, run_id: int, quiet: bool) -> dict:
    """Dispatch until this run has ended (it may wait in the queue behind others)."""
    import time

    from studio.training.jobs import dispatch
    from studio.training.runs import run_summary

    last = None
    while True:
        dispatch(store)
        summary = run_summary(store, run_id)
        if not quiet and (summary["status"], summary["steps"]) != last:
            last = (summary["status"], summary["steps"])
            loss = summary["train_loss"]["last"]
            print(f"run {run_id}: {summary['status']} step {summary['steps']}/{summary['total_steps']}"
                  + (f" train loss {loss:.4f}" if loss is not None else ""), file=sys.stderr)
        if summary["status"] in RUN_ENDED:
            return summary
        time.sleep(1)


def _report_when_ended(args, store, run_id: int) -> int:
    """Waits for the run to end and reports it; a run that failed is exit code 1."""
    summary = _wait_for(store, run_id, quiet=args.json)
    report(args, summary, _run_text(summary))
    return 1 if summary["status"] == RunStatus.FAILED else 0


def _run_text(summary: dict) -> str:
    from studio.training.runs import early_stop_note, where_text

    loss = summary["val_loss"]["best"]
    text = (f"run {summary['run_id']}: {summary['status']} after {summary['steps']} steps "
            f"({summary['method']} {summary['model']} on {summary['dataset_name']})"
            + (f", best validation loss {loss:.4f}" if loss is not None else ""))
    if note := early_stop_note(summary):
        text += f"; {note}"
    if summary["status"] not in RUN_ENDED and (where := where_text(summary)):
        text += f" [{where}]"  # the GPUs it holds, its Ray job, or what a queued run waits for
    if summary.get("error"):
        text += "\n" + summary["error"]
    return text


@commands.command(
    "train",
    arg("job", nargs="?", metavar="JOB_YAML", help="a job file: dataset, model, method and every setting (the Train "
                                                  "tab's 'Show config as YAML'); the options below override it"),
    arg("--dataset", help="DATASET_ID[:VERSION]"),
    arg("--model", help="starter-text|starter-image|starter-audio, a Hub id, a folder, or RUN_ID[:STEP] "
                    "(a run's checkpoint: its last without STEP)"),
    arg("--method", choices=METHODS),
    arg("--config", help="a YAML training config (as shown with every run)"),
    arg("--max-steps", type=int),
    arg("--project", metavar="NAME", help="check that the dataset is in this project (a run always belongs to its "
                                          "dataset's project)"),
    arg("--set", action="append", default=[], metavar="KEY=VALUE",
        help="a config value by its TrainingArguments/PEFT name, e.g. learning_rate=1e-4 r=16"),
    help="train a model on a dataset version (waits until the run ends)")
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
    if not args.json:
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
                  arg("--wait", action="store_true", help="wait until the run ends"))
def cmd_runs_resume(args) -> int:
    from studio.training.jobs import RunError, resume

    store = store_of(args)
    try:
        resume(store, args.run_id, args.checkpoint, actor=os_user())
    except RunError as error:
        return fail(args, str(error))
    return _report_when_ended(args, store, args.run_id) if args.wait else _requested(args, "resume")

"""``studio bakeoff``: several architectures trained on one dataset for a time budget each, then compared on one
sample set and one table of automatic metrics (``studio.evaluation.bakeoff``); ``studio bakeoff show ID`` and
``studio bakeoff list`` read them back."""

from __future__ import annotations

import time

from studio.cli.app import Commands, arg
from studio.cli.shared import fail, os_user, report, store_of

commands = Commands()
USAGE = "give --dataset, two to four --model and --minutes; or `show ID`; or `list`"


def table_text(found: dict) -> str:
    """The bake-off in words: its state, its runs, the table and who won on what."""
    from studio.evaluation.bakeoff import column_about, winners_in_words

    lines = [f"bake-off {found['bakeoff_id']}: {found['status']} · {found['dataset_name']} ({found['dataset']}) · "
             f"{found['minutes']:g} min each"]
    lines += [f"  {r['model']}: run {r['run_id']} {r['status']}, {r['steps']} steps"
              + (f" ({r['error']})" if r["error"] else "") for r in found["runs"]]
    if found["table"]:
        columns = [key for key in ("fd", "prompt_score", "diversity", "heldout_loss", "sample_seconds")
                   if any(row.get(key) is not None for row in found["table"])]
        lines.append("  " + "model".ljust(32) + "".join(key.rjust(16) for key in columns))
        for row in found["table"]:
            lines.append("  " + row["model"].ljust(32) + "".join(
                (f"{row[key]:.4g}" if row.get(key) is not None else "-").rjust(16) for key in columns))
        lines += [f"  ({key}: {column_about(key)[0]})" for key in columns]
        lines += winners_in_words(found["winners"]) + found["notes"]
    if found["sample_set_id"] is not None:
        lines.append(f"sample set {found['sample_set_id']}: rate it blind in the Evaluate tab, or "
                     f"`studio eval pairs {found['sample_set_id']} --rater NAME`")
    if found["error"]:
        lines.append(f"error: {found['error']}")
    return "\n".join(lines)


def _wait(args, store, bakeoff_id: int) -> dict:
    """Dispatches runs, the bake-off and its task until it ends, showing which stage it is in."""
    from studio.cli.progress import Progress
    from studio.evaluation.bakeoff import view
    from studio.status import BAKEOFF_ACTIVE
    from studio.tasks.bakeoff import advance
    from studio.tasks.service import dispatch as dispatch_tasks
    from studio.training.jobs import dispatch as dispatch_runs

    with Progress(args, label=f"bake-off {bakeoff_id}", unit="step") as shown:
        while True:
            dispatch_runs(store)
            advance(store)
            dispatch_tasks(store)
            found = view(store, bakeoff_id)
            done = sum(r["steps"] for r in found["runs"])
            planned = sum(max(r["total_steps"], r["steps"]) for r in found["runs"])
            shown.update(done, planned or None, f"{found['status']}", [
                ", ".join(f"{r['model']} {r['status']}" for r in found["runs"])])
            if found["status"] not in BAKEOFF_ACTIVE:
                return found
            time.sleep(1)


@commands.command(
    "bakeoff",
    arg("request", nargs="*", metavar="show ID | list",
        help="`show ID`: a bake-off's state, table and winners; `list`: every bake-off"),
    arg("--dataset", help="DATASET_ID[:VERSION]"),
    arg("--model", action="append", default=[], metavar="ARCHITECTURE",
        help="an architecture of the dataset's kind, two to four times: a catalog starter (starter-image, "
             "starter-image-gan, ...) or one with an option (starter-image+flow-matching)"),
    arg("--minutes", type=float, help="each architecture's training time budget (max_minutes)"),
    arg("--project", metavar="NAME", help="check that the dataset is in this project"),
    arg("--set", action="append", default=[], metavar="KEY=VALUE",
        help="a training setting for every run, over the recommended ones (e.g. max_steps=50)"),
    help="train 2-4 architectures on a dataset for a time budget each, then sample and score them side by side "
         "(waits until the table is ready)", progress=True)
def cmd_bakeoff(args) -> int:
    from studio.evaluation.bakeoff import BakeoffError, list_bakeoffs, start, view

    store = store_of(args)
    if args.request:
        words = args.request
        if words == ["list"]:
            found = list_bakeoffs(store, args.project)
            report(args, {"bakeoffs": found}, "\n".join(
                f"bake-off {b['bakeoff_id']}: {b['status']} · {', '.join(b['models'])} on {b['dataset_name']}"
                for b in found) or "no bake-offs yet")
            return 0
        if len(words) != 2 or words[0] != "show" or not words[1].isdigit():
            return fail(args, f"unknown request '{' '.join(words)}': {USAGE}")
        try:
            found = view(store, int(words[1]))
        except BakeoffError as error:
            return fail(args, str(error))
        report(args, found, table_text(found))
        return 0
    if not args.dataset or args.minutes is None:
        return fail(args, f"{'--dataset' if not args.dataset else '--minutes'} missing: {USAGE}")
    try:
        bakeoff_id = start(store, args.dataset, args.model, args.minutes, args.set, project=args.project,
                           created_by=os_user())
    except BakeoffError as error:
        return fail(args, str(error))
    if not (args.json or args.quiet):
        import sys

        print(f"bake-off {bakeoff_id} queued; it goes on if this command is interrupted "
              f"(studio bakeoff show {bakeoff_id})", file=sys.stderr)
    found = _wait(args, store, bakeoff_id)
    report(args, found, table_text(found))
    return 0 if found["status"] == "done" else 1

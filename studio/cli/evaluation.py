"""``studio eval``: blind human rating of sample sets, leaderboards and automatic metrics."""

from __future__ import annotations

import json

from studio.cli.app import RUN_ID, SET_ID, Commands, arg
from studio.cli.data import REPORT_FLAGS, report_options
from studio.cli.shared import export_file, fail, os_user, report, store_of
from studio.evaluation.choices import CHOICES, EXPORT_KINDS

commands = Commands()
commands.group("eval", "blind human rating of sample sets, leaderboards, metrics")

RATER = arg("--rater", required=True, metavar="NAME")


def _ci(row: dict) -> str:
    if row.get("strength") is None:
        return "no votes yet"
    return f"{row['strength']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"


def _leaderboard_text(board: dict) -> str:
    lines = [f"sample set {board['set_id']}: {board['votes']} counted votes"
             + (" (preliminary)" if board["preliminary"] else "")
             + (f", {board['excluded']['flagged']} flagged left out" if board["excluded"]["flagged"] else "")]
    lines += [f"{(str(v['rank']) if v['rank'] else '-'):>3}  {v['label']:<34} {_ci(v):<26} {v['wins']}W {v['losses']}L "
              f"{v['ties']}T {v['both_bad']}BB  {v['votes']} votes" for v in board["variants"]]
    scored = [s for s in board["scores"]["variants"] if s["n"]]
    lines += [f"     score {s['label']:<28} {s['mean']:.2f}" + (f" [{s['ci_low']:.2f}, {s['ci_high']:.2f}]"
                                                                 if s["ci_low"] is not None else "") + f"  n={s['n']}"
              for s in scored]
    pairwise = board["agreement"]["pairwise"]
    if pairwise["alpha"] is not None or pairwise["raw"] is not None:
        def number(x):
            return "n/a" if x is None else f"{x:.2f}"

        lines.append(f"agreement: Krippendorff's alpha {number(pairwise['alpha'])}, raw {number(pairwise['raw'])} "
                     f"({number(pairwise['raw_without_ties'])} without ties) over {pairwise['units']} shared pairs")
    return "\n".join(lines)


@commands.command("eval leaderboard", SET_ID,
                  arg("--include-flagged", action="store_true", help="count votes flagged as too fast"),
                  arg("--rounds", type=int, default=200, help="bootstrap rounds (at least 100)"),
                  help="Bradley-Terry ranking with 95 %% intervals, scores and rater agreement")
def cmd_eval_leaderboard(args) -> int:
    from studio.evaluation.service import EvaluationError, leaderboard

    try:
        board = leaderboard(store_of(args), args.set_id, include_flagged=args.include_flagged, rounds=args.rounds)
    except EvaluationError as error:
        return fail(args, str(error))
    report(args, board, _leaderboard_text(board))
    return 0


def _side_text(side: dict) -> str:
    return side["path"] if "path" in side else repr(side["text"])


@commands.command("eval pairs", SET_ID, RATER,
                  arg("--limit", type=int, default=10, help="how many unjudged pairs to list (and assign)"),
                  help="the pairs assigned to a rater, blind (variants are revealed after the vote)")
def cmd_eval_pairs(args) -> int:
    from studio.evaluation.service import EvaluationError, assigned_pairs

    try:
        shown = assigned_pairs(store_of(args), args.set_id, args.rater, limit=args.limit, session="cli")
    except EvaluationError as error:
        return fail(args, str(error))
    pairs = [{k: p[k] for k in ("pair_id", "prompt", "prompt_index", "origin", "reference", "a", "b")} for p in shown]
    human = "\n".join(f"pair {p['pair_id']}: {p['prompt']!r}\n  a: {_side_text(p['a'])}\n  b: {_side_text(p['b'])}"
                      for p in pairs) or f"rater '{args.rater}' has judged every pair of sample set {args.set_id}"
    report(args, {"set_id": args.set_id, "rater": args.rater, "pairs": pairs}, human)
    return 0


@commands.command("eval vote", SET_ID, RATER,
                  arg("--pair", required=True, type=int, metavar="PAIR_ID"),
                  arg("--choice", required=True, choices=CHOICES, help="skip: can't judge (not a tie)"),
                  arg("--comment"),
                  help="judge a pair: a or b better, tie, both bad")
def cmd_eval_vote(args) -> int:
    from studio.evaluation.service import EvaluationError, cast_vote

    try:
        result = cast_vote(store_of(args), args.pair, args.rater, args.choice, comment=args.comment, session="cli",
                           set_id=args.set_id)
    except EvaluationError as error:
        return fail(args, str(error))
    revealed = ", ".join(f"{side} was {who['label']}" for side, who in result["revealed"].items())
    report(args, result, f"{result['message']}: {revealed}")
    return 0


@commands.command("eval export", SET_ID, arg("--kind", choices=tuple(EXPORT_KINDS), default="events"),
                  arg("--out", metavar="FILE"),
                  help="votes as events (JSONL), battles (CSV) or preference pairs for DPO (JSONL)")
def cmd_eval_export(args) -> int:
    from studio.evaluation.service import EvaluationError, export_votes

    return export_file(args, lambda store, set_id, out: export_votes(store, set_id, args.kind, out), args.set_id,
                       EvaluationError)


@commands.command("eval preferences", SET_ID, arg("--include-flagged", action="store_true"),
                  arg("--name", help="the dataset to add the version to (default votes-set-SET_ID)"),
                  help="turn a rated set's votes into a preference dataset version (pairs for DPO)")
def cmd_eval_preferences(args) -> int:
    from studio.cli.data import import_text
    from studio.data.items import ImportRefused
    from studio.evaluation.service import EvaluationError, preference_dataset

    try:
        result = preference_dataset(store_of(args), args.set_id, include_flagged=args.include_flagged,
                                    name=args.name, actor=os_user())
    except (EvaluationError, ImportRefused) as error:  # ImportRefused: e.g. --name is a dataset of another kind
        return fail(args, str(error))
    report(args, result, import_text(result))
    return 0


@commands.command("eval preference", RUN_ID, arg("--include-flagged", action="store_true"),
                  help="human preference against training step across a run's checkpoints")
def cmd_eval_preference(args) -> int:
    from studio.evaluation.service import EvaluationError, run_preference

    try:
        found = run_preference(store_of(args), args.run_id, include_flagged=args.include_flagged)
    except EvaluationError as error:
        return fail(args, str(error))

    def significance(point: dict, key: str) -> str:
        test = point.get(key)
        if not test:
            return ""
        verdict = "preferred" if test["significant"] else "not significantly preferred"
        return f"; {verdict} over {test['against']} (P={test['prob_better']:.2f})"

    lines = [f"run {found['run_id']}: {found['votes']} counted votes in sample sets "
             f"{', '.join(map(str, found['sets'])) or '(none)'}" + (" (preliminary)" if found["preliminary"] else "")]
    lines += [f"step {p['step']:>6} {p['variant']:<10} {_ci(p)}{significance(p, 'vs_base')}"
              f"{significance(p, 'vs_previous')}" for p in found["points"]]
    report(args, found, "\n".join(lines))
    return 0


@commands.command("eval metrics", arg("ref", metavar="RUN_ID[:CHECKPOINT]"),
                  help="automatic metrics of a run's checkpoint", progress=True)
def cmd_eval_metrics(args) -> int:
    from studio.cli.progress import Progress
    from studio.evaluation.metrics import run_metrics

    try:
        with Progress(args, label=f"metrics of {args.ref}", unit="%") as shown:  # each metric as it starts
            result = run_metrics(store_of(args), args.ref, progress=shown.fraction())
    except (ValueError, OSError) as error:
        return fail(args, str(error))
    report(args, result, json.dumps(result, indent=1, default=str))
    return 0


def _comparison_text(found: dict) -> str:
    from studio.cli.data import share_text, filtering_text, representation_text

    def share(s: dict) -> str:
        return "—" if s["share"] is None else share_text(s["share"], s["ci_low"], s["ci_high"]).strip()

    lines = [f"sample set {found['set_id']} ({found['modality']}: its {found['counted']} counted) beside "
             f"{found['dataset']['label']}", "dataset:", representation_text(found["dataset"])]
    for variant in found["variants"]:
        lines += [f"{variant['label']}:", representation_text(variant["report"])]
    lines.append("share of the items that mention each category: dataset → each variant (verdict)")
    for row in found["comparison"]:
        if not row["dataset"]["items"] and not any(v["items"] for v in row["variants"]):
            continue
        lines.append(f"  {row['category']}/{row['group']}: dataset {share(row['dataset'])}; "
                     + "; ".join(f"{v['label']} {share(v)} ({v['verdict']})" for v in row["variants"]))
    lines += [f"amplified: {a['message']}" for a in found["amplified"]]
    lines.append(filtering_text(found["filtering"]))
    return "\n".join(lines)


@commands.command("eval bias", SET_ID,
                  arg("--dataset", metavar="DATASET_ID[:VERSION]",
                      help="the dataset version to compare with (default: the one the set's first run was trained on)"),
                  *REPORT_FLAGS,
                  help="representation report of a sample set's outputs (image/audio: prompts) beside its dataset, "
                       "with intervals, flagging where training amplified a skew")
def cmd_eval_bias(args) -> int:
    from studio.data.lexicons import LexiconError
    from studio.evaluation.representation import RepresentationError, set_report

    try:
        found = set_report(store_of(args), args.set_id, args.dataset, args.lexicon, report_options(args),
                           limit=args.limit)
    except (RepresentationError, LexiconError, ValueError) as error:
        return fail(args, str(error))
    report(args, found, _comparison_text(found))
    return 0

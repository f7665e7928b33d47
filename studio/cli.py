"""The `studio` command: serve the web studio, and script the same services the UI uses."""

from __future__ import annotations

import argparse
import json
import sys

from studio.settings import Settings, load_settings, settings_table


def _settings(args) -> Settings:
    """Settings from the environment, overridden by any ``--<setting>`` flag given."""
    return load_settings(**{name: getattr(args, name, None) for name in Settings.model_fields})


def _store(args):
    from studio.store import open_store

    return open_store(_settings(args))


def _add_settings_flags(parser: argparse.ArgumentParser, top_level: bool) -> None:
    # One flag per settings field, generated from the model so the CLI and the settings never disagree.
    # On subcommands an absent flag must not hide one given before the subcommand, hence SUPPRESS.
    group = parser.add_argument_group("settings (each also an environment variable STUDIO_<NAME>)")
    for name, field in Settings.model_fields.items():
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar=name.upper(), help=field.description,
                           default=None if top_level else argparse.SUPPRESS)


def _print(args, payload: dict, human: str) -> None:
    print(json.dumps(payload, indent=None if args.json else 1, default=str) if args.json else human)


def _fail(args, message: str, code: int = 2, details: dict | None = None) -> int:
    """``details``: what else a script needs to see why (a refused import's ``errors`` and ``removed``)."""
    if getattr(args, "json", False):
        print(json.dumps({"error": message, **(details or {})}, default=str))
    print(f"error: {message}", file=sys.stderr)
    return code


def _details_log(args, error: BaseException):
    """Appends ``error``'s traceback to the CLI's log (STUDIO_HOME/logs/cli.log; the temporary folder when the
    settings themselves failed) and returns its path, so the terminal gets one line and the details stay."""
    import tempfile
    import traceback
    from datetime import datetime
    from pathlib import Path

    try:
        folder = _settings(args).home / "logs"
        folder.mkdir(parents=True, exist_ok=True)
    except Exception:  # noqa: BLE001 - wherever the settings point, the details must be written somewhere
        folder = Path(tempfile.gettempdir())
    path = folder / "cli.log"
    # The command's name only: its arguments may hold a token.
    heading = f"--- {datetime.now().isoformat(timespec='seconds')} {getattr(args.run, '__name__', 'studio')}\n"
    with open(path, "a", encoding="utf-8") as log:
        log.write(heading + "".join(traceback.format_exception(error)))
    return path


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _os_user() -> str | None:
    """Who runs the command, for the audit trail: the OS account (None when the system cannot tell)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no such user in the passwd database (some containers)
        return None


def cmd_serve(args) -> int:
    from studio.ui.server import serve

    serve(_settings(args))
    return 0


def _parse_steps(pairs: list[str]) -> dict:
    """``--step length.min_length=5 --step pii.enabled=true`` → ``{"length": {"min_length": 5}, ...}``."""
    steps: dict[str, dict] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        step, _, param = key.partition(".")
        if not param or not raw:
            raise ValueError(f"--step takes STEP.PARAM=VALUE (got {pair!r})")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        steps.setdefault(step, {})[param] = value
    return steps


def cmd_data_import(args) -> int:
    from studio.data.clean import StepsConfigError
    from studio.data.items import ImportRefused
    from studio.data.mapping import ColumnMapping
    from studio.data.service import import_dataset

    try:
        mapping = ColumnMapping(**json.loads(args.mapping)) if args.mapping else None
        result = import_dataset(_store(args), args.paths, name=args.name, modality=args.modality, split=args.split,
                                seed=args.seed, steps=_parse_steps(args.step), mapping=mapping,
                                text_split=args.text_split, project=args.project, created_by=_os_user(),
                                progress=None if args.json else lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr))
    except (ImportRefused, StepsConfigError, ValueError) as error:
        return _fail(args, str(error), details=getattr(error, "details", None))
    lines = [f"dataset {result['dataset_id']} '{result['name']}' version {result['version']} ({result['modality']}): "
             f"{result['items_kept']} of {result['items_in']} items kept",
             "removed: " + ", ".join(f"{k} {v}" for k, v in result["removed"].items() if v),
             "splits: " + ", ".join(f"{k} {v}" for k, v in result["splits"].items())]
    lines += [f"error: {e['file']}: {e['reason']}" for e in result["errors"]]
    lines += [f"warning: {w['file']}: {w['reason']}" if "file" in w else f"warning: {w['reason']}"
              for w in result["warnings"]]
    _print(args, result, "\n".join(lines))
    return 0


def cmd_data_list(args) -> int:
    from studio.data.service import list_datasets

    datasets = list_datasets(_store(args))
    def versions(d: dict) -> str:
        return ", ".join(f"v{v['version']} ({v['items_kept']} items)" for v in d["versions"])

    human = "\n".join(f"{d['dataset_id']:>4}  {d['name']:<30} {d['modality']:<6} versions: {versions(d)}"
                      for d in datasets) or "no datasets yet"
    _print(args, {"datasets": datasets}, human)
    return 0


def _export(args, export, ref, refused: type[Exception]) -> int:
    """``export(store, ref, out or None) -> path`` for the ``export`` commands; ``refused`` is its clear error."""
    from pathlib import Path

    try:
        path = export(_store(args), ref, Path(args.out) if args.out else None)
    except refused as error:
        return _fail(args, str(error))
    _print(args, {"path": str(path)}, str(path))
    return 0


def cmd_data_export(args) -> int:
    from studio.data.export import export_zip
    from studio.data.items import ImportRefused

    return _export(args, export_zip, args.dataset, ImportRefused)


def _train_config(args):
    from pathlib import Path

    from studio.training.config import TrainConfig, apply_overrides

    from studio.models.catalog import recommended_overrides

    config = TrainConfig.from_yaml(Path(args.config).read_text()) if args.config else \
        apply_overrides(TrainConfig(), recommended_overrides(args.model))  # a YAML file is taken as it is
    pairs = list(args.set)
    if args.max_steps is not None:
        pairs.append(f"max_steps={args.max_steps}")
    return apply_overrides(config, pairs)


def _wait_for(store, run_id: int, quiet: bool) -> dict:
    """Dispatch until this run has ended (it may wait in the queue behind others)."""
    import time

    from studio.training.jobs import TERMINAL, dispatch
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
        if summary["status"] in TERMINAL:
            return summary
        time.sleep(1)


def cmd_train(args) -> int:
    from pydantic import ValidationError

    from studio.data.items import ImportRefused
    from studio.training.jobs import RunError, create_run

    store = _store(args)
    try:
        config = _train_config(args)
        run_id = create_run(store, args.dataset, args.model, args.method, config, project=args.project,
                            created_by=_os_user())
    except (RunError, ImportRefused, ValueError, ValidationError, OSError) as error:
        return _fail(args, str(error))
    if not args.json:
        print(f"run {run_id} queued; it goes on if this command is interrupted (studio runs show {run_id})",
              file=sys.stderr)
    summary = _wait_for(store, run_id, quiet=args.json)
    _print(args, summary, _run_text(summary))
    return 0 if summary["status"] in ("completed", "stopped") else 1


def _run_text(summary: dict) -> str:
    from studio.training.runs import early_stop_note

    loss = summary["val_loss"]["best"]
    text = (f"run {summary['run_id']}: {summary['status']} after {summary['steps']} steps "
            f"({summary['method']} {summary['model']} on {summary['dataset_name']})"
            + (f", best validation loss {loss:.4f}" if loss is not None else ""))
    if note := early_stop_note(summary):
        text += f"; {note}"
    if summary.get("error"):
        text += "\n" + summary["error"]
    return text


def cmd_runs_list(args) -> int:
    from studio.training.runs import list_runs

    runs = list_runs(_store(args), args.project)
    _print(args, {"runs": runs}, "\n".join(_run_text(r) for r in runs) or "no runs yet")
    return 0


def cmd_runs_show(args) -> int:
    from studio.training.runs import run_summary

    try:
        summary = run_summary(_store(args), args.run_id, with_history=True)
    except ValueError as error:
        return _fail(args, str(error))
    _print(args, summary, _run_text(summary))
    return 0


def cmd_runs_control(args) -> int:
    from studio.training.jobs import RunError, request, resume

    store = _store(args)
    try:
        if args.runs_command == "resume":
            resume(store, args.run_id, args.checkpoint, actor=_os_user())
        else:
            request(store, args.run_id, "stop", actor=_os_user())
    except RunError as error:
        return _fail(args, str(error))
    if args.runs_command == "resume" and args.wait:
        summary = _wait_for(store, args.run_id, quiet=args.json)
        _print(args, summary, _run_text(summary))
        return 0 if summary["status"] in ("completed", "stopped") else 1
    _print(args, {"run_id": args.run_id, "requested": args.runs_command},
           f"run {args.run_id}: {args.runs_command} requested")
    return 0


def _sample_line(sample: dict) -> str:
    blocked = (sample.get("flags") or {}).get("blocked")
    return (f"{sample['label']} | seed {sample['seed']} | {sample['prompt']!r} -> "
            f"{sample.get('text') or sample.get('path')!r}" + (f" [blocked: {', '.join(blocked)}]" if blocked else ""))


def cmd_generate(args) -> int:
    from pathlib import Path

    from studio.data.items import ImportRefused
    from studio.generation.options import parse_settings
    from studio.generation.service import export_set_folder, generate_set, get_set, read_prompts_file
    from studio.generation.variants import resolve_variants

    store = _store(args)
    started: list[int] = []  # the set's id once it exists: a failure after that still reports the set
    failure = None
    try:
        prompts = read_prompts_file(Path(args.prompts_file)) if args.prompts_file else args.prompt
        modality = resolve_variants(store, args.variant, args.model)[0].modality
        settings = parse_settings(modality, args.set)
        progress = None if args.json else lambda done, total, message: print(f"[{done}/{total}] {message}",
                                                                             file=sys.stderr)
        set_id = generate_set(store, args.variant, prompts, args.seed, args.samples, settings,
                              base_model=args.model, source="cli", on_progress=progress, project=args.project,
                              created_by=_os_user(), on_start=started.append)
    except KeyboardInterrupt:
        return _fail(args, "interrupted: the samples made so far are kept (see `studio samples list`)", 130)
    except Exception as error:  # noqa: BLE001 - a set that failed midway is reported below, with what failed
        if not started and isinstance(error, (ValueError, ImportRefused, OSError)):
            return _fail(args, str(error))  # a request refused before anything was made
        if not started:
            raise
        set_id, failure = started[0], f"the details are in {_details_log(args, error)}"
    found = get_set(store, set_id)
    copies = export_set_folder(store, set_id, Path(args.out))
    samples = []
    for sample in copies:
        item = {"variant": sample["variant"], "label": sample["label"], "prompt": sample["prompt"],
                "prompt_index": sample["prompt_index"], "sample_index": sample["sample_index"], "seed": sample["seed"],
                "seconds": round(sample["seconds"], 3)}
        item.update({"path": sample["path"]} if sample.get("path") else {"text": sample["text"]})
        if sample.get("flags"):
            item["flags"] = sample["flags"]
        samples.append(item)
    report = found["report"]
    payload = {"sample_set_id": set_id, "status": found["status"], "samples": samples, "out": str(Path(args.out)),
               "notes": report.get("notes", []), "errors": [e["message"] for e in report.get("errors", [])],
               "refused": report.get("refused", []), "flagged": report.get("flagged", [])}
    lines = [f"sample set {set_id}: {found['status']}, {len(samples)} samples in {args.out}"]
    lines += [f"note: {n}" for n in payload["notes"]]
    lines += [f"refused prompt {r['prompt_index'] + 1} (blocked: {', '.join(r['words'])})" for r in payload["refused"]]
    lines += [_sample_line(s) for s in samples]
    lines += [f"error: {e}" for e in payload["errors"]]
    if failure:
        payload["details"] = failure
        lines.append(failure)
    _print(args, payload, "\n".join(lines))
    return 0 if found["status"] == "completed" and not payload["errors"] else 1


def cmd_samples_list(args) -> int:
    from studio.generation.service import list_sets

    sets = list_sets(_store(args), args.project)
    human = "\n".join(f"{s['set_id']:>4}  {s['created_at'][:19]}  {s['status']:<10} {s['modality']:<6} "
                      f"{s['samples']} samples of {s['prompts']} prompts: {', '.join(s['variants'])}"
                      for s in sets) or "no sample sets yet"
    _print(args, {"sample_sets": sets}, human)
    return 0


def cmd_samples_show(args) -> int:
    from studio.generation.service import GenerationError, get_set

    try:
        found = get_set(_store(args), args.set_id)
    except GenerationError as error:
        return _fail(args, str(error))
    found.pop("grid")
    human = "\n".join([f"sample set {found['set_id']}: {found['status']} ({found['modality']}, base "
                       f"{found['base_model']})"] +
                      [_sample_line(s) for s in found["samples"]])
    _print(args, found, human)
    return 0


def cmd_samples_export(args) -> int:
    from studio.generation.service import GenerationError, export_set_zip

    return _export(args, export_set_zip, args.set_id, GenerationError)


def cmd_export(args) -> int:
    from studio.generation.variants import VariantError
    from studio.sharing.hub import PushError, push_export
    from studio.training.export import ExportError, export_run

    store = _store(args)
    try:
        found = export_run(store, args.ref, args.format, args.out, make_zip=args.zip, license=args.license,
                           actor=_os_user())
    except (ExportError, VariantError) as error:
        return _fail(args, str(error))
    human = (f"{found['format']} export of run {found['run_id']} step {found['step']}: {found['path']}"
             + (f" (and {found['zip']})" if found["zip"] else ""))
    if args.push:
        try:
            found["pushed"] = push_export(store, found, args.push, private=not args.public, token=args.token,
                                          progress=_progress_printer(args), actor=_os_user())
        except PushError as error:
            return _fail(args, str(error))
        human += f"\npushed to {found['pushed']['url']} ({'private' if not args.public else 'public'})"
    _print(args, found, human)
    return 0


def _progress_printer(args):
    return None if args.json else lambda fraction, message: print(f"[{fraction:4.0%}] {message}", file=sys.stderr)


def cmd_data_push(args) -> int:
    from studio.data.items import ImportRefused
    from studio.sharing.hub import PushError, push_dataset

    try:
        pushed = push_dataset(_store(args), args.dataset, args.repo, private=not args.public, token=args.token,
                              license=args.license, progress=_progress_printer(args), actor=_os_user())
    except (PushError, ImportRefused) as error:
        return _fail(args, str(error))
    _print(args, pushed, f"dataset {pushed['dataset']} pushed to {pushed['url']} "
                         f"({'private' if pushed['private'] else 'public'}, {len(pushed['files'])} files)")
    return 0


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


def cmd_eval_leaderboard(args) -> int:
    from studio.evaluation.service import EvaluationError, leaderboard

    try:
        board = leaderboard(_store(args), args.set_id, include_flagged=args.include_flagged, rounds=args.rounds)
    except EvaluationError as error:
        return _fail(args, str(error))
    _print(args, board, _leaderboard_text(board))
    return 0


def _side_text(side: dict) -> str:
    return side["path"] if "path" in side else repr(side["text"])


def cmd_eval_pairs(args) -> int:
    from studio.evaluation.service import EvaluationError, assigned_pairs

    try:
        shown = assigned_pairs(_store(args), args.set_id, args.rater, limit=args.limit, session="cli")
    except EvaluationError as error:
        return _fail(args, str(error))
    pairs = [{k: p[k] for k in ("pair_id", "prompt", "prompt_index", "origin", "reference", "a", "b")} for p in shown]
    human = "\n".join(f"pair {p['pair_id']}: {p['prompt']!r}\n  a: {_side_text(p['a'])}\n  b: {_side_text(p['b'])}"
                      for p in pairs) or f"rater '{args.rater}' has judged every pair of sample set {args.set_id}"
    _print(args, {"set_id": args.set_id, "rater": args.rater, "pairs": pairs}, human)
    return 0


def cmd_eval_vote(args) -> int:
    from studio.evaluation.service import EvaluationError, cast_vote

    try:
        result = cast_vote(_store(args), args.pair, args.rater, args.choice, comment=args.comment, session="cli",
                           set_id=args.set_id)
    except EvaluationError as error:
        return _fail(args, str(error))
    revealed = ", ".join(f"{side} was {who['label']}" for side, who in result["revealed"].items())
    _print(args, result, f"{result['message']}: {revealed}")
    return 0


def cmd_eval_export(args) -> int:
    from studio.evaluation.service import EvaluationError, export_votes

    return _export(args, lambda store, set_id, out: export_votes(store, set_id, args.kind, out), args.set_id,
                   EvaluationError)


def cmd_eval_preference(args) -> int:
    from studio.evaluation.service import EvaluationError, run_preference

    try:
        found = run_preference(_store(args), args.run_id, include_flagged=args.include_flagged)
    except EvaluationError as error:
        return _fail(args, str(error))

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
    _print(args, found, "\n".join(lines))
    return 0


def cmd_eval_metrics(args) -> int:
    from studio.evaluation.metrics import run_metrics

    try:
        result = run_metrics(_store(args), args.ref)
    except (ValueError, OSError) as error:
        return _fail(args, str(error))
    _print(args, result, json.dumps(result, indent=1, default=str))
    return 0


def _users_file(args):
    """The users file a ``studio users`` command edits: ``--file``, else the one ``STUDIO_USERS`` names."""
    from studio.auth import Users

    path = Users.file_of(args.file or _settings(args).users)
    if path is None:
        raise ValueError("name the users file with --file FILE (or set STUDIO_USERS to its path); then start the "
                         "studio with STUDIO_USERS=FILE to turn sign-in on")
    return path


def _new_password(args) -> str:
    import getpass

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise ValueError("the two passwords differ")
    return first


def cmd_users(args) -> int:
    from studio.auth import AuthError, Users, hash_password, remove_user, write_user

    try:
        if args.users_command == "hash":
            print(hash_password(_new_password(args)))
            return 0
        path = _users_file(args)
        if args.users_command == "add":
            write_user(path, args.name, args.role, _new_password(args))
            print(f"{args.name} ({args.role}) saved in {path}")
        elif args.users_command == "remove":
            if not remove_user(path, args.name):
                return _fail(args, f"no user {args.name} in {path}")
            print(f"{args.name} removed from {path}: their next request signs them out")
        else:
            users = Users(str(path))
            found = [{"name": u.name, "role": u.role} for u in users.all()]
            _print(args, {"users": found}, "\n".join(f"{u['name']:<24} {u['role']}" for u in found) or "no users")
    except (AuthError, ValueError) as error:
        return _fail(args, str(error))
    return 0


def _activity_line(action: dict) -> str:
    where = f" [{action['project']}]" if action["project"] else ""
    return (f"{action['at'][:19].replace('T', ' ')}  {action['actor'] or '(unknown)':<16} {action['action']:<24} "
            f"{action['target']}{where}")


def _what_deleting_removes(projects: list[dict], name: str) -> str:
    found = next((p for p in projects if p["name"] == name), None)
    if found is None:
        return f"no project named '{name}' (see `studio projects list`)"
    return (f"deleting project '{name}' removes everything in it: {found['datasets']} datasets, {found['runs']} runs "
            f"and {found['sample_sets']} sample sets, with their versions, checkpoints, samples, ratings and files. "
            "Nothing was deleted; run again with --yes to confirm")


def cmd_projects(args) -> int:
    from studio.projects import (DeleteRefused, ProjectError, create_project, delete_project, list_projects,
                                 project_activity)

    store, command = _store(args), args.projects_command
    try:
        if command == "list":
            found = list_projects(store)
            _print(args, {"projects": found}, "\n".join(
                f"{p['name']:<30} {p['datasets']} datasets, {p['runs']} runs, {p['sample_sets']} sample sets"
                for p in found) or "no projects yet")
        elif command == "create":
            made = create_project(store, args.name, actor=_os_user())
            _print(args, made, f"project '{made['name']}' created")
        elif command == "delete":
            if not args.yes:
                return _fail(args, _what_deleting_removes(list_projects(store), args.name))
            gone = delete_project(store, args.name, actor=_os_user())
            _print(args, gone, f"project '{gone['name']}' deleted: {gone['datasets']} datasets ({gone['versions']} "
                               f"versions), {gone['runs']} runs, {gone['sample_sets']} sample sets")
        else:
            actions = project_activity(store, args.name, args.limit)
            _print(args, {"actions": actions}, "\n".join(map(_activity_line, actions)) or "no activity yet")
    except (ProjectError, DeleteRefused) as error:
        return _fail(args, str(error))
    return 0


def _add_project_commands(commands) -> None:
    projects = commands.add_parser("projects", help="list, create and delete projects; who did what (activity)")
    projects = projects.add_subparsers(dest="projects_command", required=True)
    leaves = [projects.add_parser("list", help="every project with what it holds")]
    leaves.append(projects.add_parser("create", help="a new, empty project"))
    leaves[-1].add_argument("name")
    leaves.append(projects.add_parser("delete", help="a project and everything in it, files included "
                                                     "(refused while one of its runs is queued or running)"))
    leaves[-1].add_argument("name")
    leaves[-1].add_argument("--yes", action="store_true", help="confirm: nothing is deleted without it")
    leaves.append(projects.add_parser("activity", help="who did what, when (newest first)"))
    leaves[-1].add_argument("name", nargs="?", help="only this project's actions")
    leaves[-1].add_argument("--limit", type=int, default=50)
    for leaf in leaves:
        leaf.add_argument("--json", action="store_true")
        leaf.set_defaults(run=cmd_projects)
        _add_settings_flags(leaf, top_level=False)


def cmd_settings(_args) -> int:
    print(settings_table())
    return 0


def _leaf(commands, name: str, run, id_name: str | None = None, help: str | None = None) -> argparse.ArgumentParser:
    """A subcommand taking an optional numeric id (``run_id``, ``set_id``) and ``--json``."""
    leaf = commands.add_parser(name, help=help)
    if id_name:
        leaf.add_argument(id_name, type=int)
    leaf.add_argument("--json", action="store_true")
    leaf.set_defaults(run=run)
    return leaf


def _add_push_flags(parser: argparse.ArgumentParser, repo_flag: str, repo_help: str, required: bool = False) -> None:
    parser.add_argument(repo_flag, metavar="REPO_ID", required=required, help=repo_help)
    parser.add_argument("--public", action="store_true", help="create the repository public (default: private)")
    parser.add_argument("--token", help="a Hugging Face access token with write access (default: HF_TOKEN)")
    parser.add_argument("--license", help="the card's licence (a Hub licence id, e.g. apache-2.0; default: other)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description="Gen Studio: adapt generative models without code.")
    _add_settings_flags(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the web studio (same as python studio_app.py)")
    serve.set_defaults(run=cmd_serve)

    commands.add_parser("settings", help="list every setting and its environment variable").set_defaults(run=cmd_settings)

    users = commands.add_parser("users", help="sign-in: add, remove and list the people of a users file")
    users = users.add_subparsers(dest="users_command", required=True)
    users_add = users.add_parser("add", help="add a person (or change their role or password)")
    users_add.add_argument("name")
    users_add.add_argument("--role", choices=["editor", "rater"], required=True,
                           help="editor: everything; rater: the rating page only")
    users_remove = users.add_parser("remove", help="remove a person")
    users_remove.add_argument("name")
    users_list = users.add_parser("list", help="the people and their roles")
    users_list.add_argument("--json", action="store_true")
    users_hash = users.add_parser("hash", help="print a password hash, for a NAME:ROLE:HASH entry in STUDIO_USERS")
    for leaf in (users_add, users_remove, users_list, users_hash):
        leaf.set_defaults(run=cmd_users)
        if leaf is not users_list:
            leaf.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
        if leaf is not users_hash:
            leaf.add_argument("--file", metavar="FILE", help="the users file (default: the one STUDIO_USERS names)")
        _add_settings_flags(leaf, top_level=False)

    data = commands.add_parser("data", help="import, list and export datasets").add_subparsers(dest="data_command",
                                                                                                required=True)
    imp = data.add_parser("import", help="import files, folders or zips with the default cleaning steps")
    imp.add_argument("paths", nargs="+")
    imp.add_argument("--name")
    imp.add_argument("--modality", choices=["text", "image", "audio"])
    imp.add_argument("--split", default="0.8,0.1,0.1", help="train,validation,test fractions")
    imp.add_argument("--seed", type=int, default=0)
    imp.add_argument("--step", action="append", default=[], metavar="STEP.PARAM=VALUE",
                     help="tune a cleaning step, e.g. length.min_length=5 or pii.enabled=true")
    imp.add_argument("--mapping", help='column mapping as JSON, e.g. {"format":"pair","prompt":"q","response":"a"}')
    imp.add_argument("--text-split", default="auto", choices=["auto", "file", "blank_lines", "lines"])
    imp.add_argument("--project", default="default", metavar="NAME", help="the project (created if new)")
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(run=cmd_data_import)

    lst = data.add_parser("list", help="list datasets and their versions")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(run=cmd_data_list)

    exp = data.add_parser("export", help="export a dataset version as a zip")
    exp.add_argument("dataset", help="DATASET_ID[:VERSION]")
    exp.add_argument("--out")
    exp.add_argument("--json", action="store_true")
    exp.set_defaults(run=cmd_data_export)

    push = data.add_parser("push", help="push a dataset version (loader-ready files + dataset card) to the Hub")
    push.add_argument("dataset", help="DATASET_ID[:VERSION]")
    _add_push_flags(push, "--repo", "the Hub dataset repository (OWNER/NAME)", required=True)
    push.add_argument("--json", action="store_true")
    push.set_defaults(run=cmd_data_push)
    train = commands.add_parser("train", help="train a model on a dataset version (waits until the run ends)")
    train.add_argument("--dataset", required=True, help="DATASET_ID[:VERSION]")
    train.add_argument("--model", required=True, help="starter-text|starter-image|starter-audio, a Hub id or a folder")
    train.add_argument("--method", required=True, choices=["lora", "full", "scratch"])
    train.add_argument("--config", help="a YAML training config (as shown with every run)")
    train.add_argument("--max-steps", type=int)
    train.add_argument("--project", metavar="NAME", help="check that the dataset is in this project (a run always "
                                                         "belongs to its dataset's project)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="a config value by its TrainingArguments/PEFT name, e.g. learning_rate=1e-4 r=16")
    train.add_argument("--json", action="store_true")
    train.set_defaults(run=cmd_train)

    runs = commands.add_parser("runs", help="list, show, stop and resume training runs").add_subparsers(
        dest="runs_command", required=True)
    runs_list = _leaf(runs, "list", cmd_runs_list)
    runs_show = _leaf(runs, "show", cmd_runs_show, "run_id")
    runs_stop = _leaf(runs, "stop", cmd_runs_control, "run_id")
    runs_resume = _leaf(runs, "resume", cmd_runs_control, "run_id")
    runs_resume.add_argument("--checkpoint", type=int, help="the step of the checkpoint (default: the last)")
    runs_resume.add_argument("--wait", action="store_true", help="wait until the run ends")
    runs_list.add_argument("--project", metavar="NAME", help="only this project's runs")

    generate = commands.add_parser("generate", help="generate with the base model and trained variants side by side "
                                                    "(the same prompts, seeds and settings for each)")
    generate.add_argument("--variant", action="append", required=True, metavar="base|RUN_ID[:STEP]",
                          help="base, a run (its last checkpoint) or a run's checkpoint; repeat for each variant")
    generate.add_argument("--model", help="the base model when no run names it (a catalog id or a model folder)")
    given = generate.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt; repeat for more")
    given.add_argument("--prompts-file", metavar="FILE", help="one prompt per line, or JSONL with a 'prompt' field")
    generate.add_argument("--seed", type=int, help="seed of each prompt's first sample (the next ones +1); "
                                                   "default: random, stored with the set")
    generate.add_argument("--samples", type=int, default=1, help="samples per prompt")
    generate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="a generation setting, e.g. temperature=0.7 max_new_tokens=64 steps=30 "
                               "guidance_scale=5")
    generate.add_argument("--out", required=True, metavar="DIR", help="where to copy the samples (and samples.jsonl)")
    generate.add_argument("--project", metavar="NAME", help="the project the sample set belongs to (default: the "
                                                            "first run's project, else 'default')")
    generate.add_argument("--json", action="store_true")
    generate.set_defaults(run=cmd_generate)

    samples = commands.add_parser("samples", help="list, show and export sample sets").add_subparsers(
        dest="samples_command", required=True)
    samples_list = _leaf(samples, "list", cmd_samples_list)
    samples_show = _leaf(samples, "show", cmd_samples_show, "set_id")
    samples_export = _leaf(samples, "export", cmd_samples_export, "set_id",
                           help="a zip with set.json, samples.jsonl and the media files")
    samples_export.add_argument("--out", metavar="FILE.zip")
    samples_list.add_argument("--project", metavar="NAME", help="only this project's sample sets")
    _add_project_commands(commands)

    export = commands.add_parser("export", help="a run or checkpoint as a PEFT adapter, a diffusers LoRA file or "
                                                "a merged full model, loadable without the studio")
    export.add_argument("ref", metavar="RUN_ID[:CHECKPOINT]")
    export.add_argument("--format", required=True, choices=["peft", "diffusers-lora", "merged"])
    export.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder")
    export.add_argument("--zip", action="store_true", help="also write DIR.zip")
    _add_push_flags(export, "--push", "also push the export to this Hub model repository (OWNER/NAME)")
    export.add_argument("--json", action="store_true")
    export.set_defaults(run=cmd_export)

    evaluate = commands.add_parser("eval", help="blind human rating of sample sets, leaderboards, metrics")
    evaluate = evaluate.add_subparsers(dest="eval_command", required=True)
    eval_board = _leaf(evaluate, "leaderboard", cmd_eval_leaderboard, "set_id",
                       help="Bradley-Terry ranking with 95 %% intervals, scores and rater agreement")
    eval_board.add_argument("--include-flagged", action="store_true", help="count votes flagged as too fast")
    eval_board.add_argument("--rounds", type=int, default=200, help="bootstrap rounds (at least 100)")
    eval_pairs = _leaf(evaluate, "pairs", cmd_eval_pairs, "set_id",
                       help="the pairs assigned to a rater, blind (variants are revealed after the vote)")
    eval_pairs.add_argument("--rater", required=True, metavar="NAME")
    eval_pairs.add_argument("--limit", type=int, default=10, help="how many unjudged pairs to list (and assign)")
    eval_vote = _leaf(evaluate, "vote", cmd_eval_vote, "set_id", help="judge a pair: a or b better, tie, both bad")
    eval_vote.add_argument("--rater", required=True, metavar="NAME")
    eval_vote.add_argument("--pair", required=True, type=int, metavar="PAIR_ID")
    eval_vote.add_argument("--choice", required=True, choices=["a", "b", "tie", "both_bad", "skip"],
                           help="skip: can't judge (not a tie)")
    eval_vote.add_argument("--comment")
    eval_export = _leaf(evaluate, "export", cmd_eval_export, "set_id",
                        help="votes as events (JSONL), battles (CSV) or preference pairs for DPO (JSONL)")
    eval_export.add_argument("--kind", choices=["events", "battles", "preferences"], default="events")
    eval_export.add_argument("--out", metavar="FILE")
    eval_pref = _leaf(evaluate, "preference", cmd_eval_preference, "run_id",
                      help="human preference against training step across a run's checkpoints")
    eval_pref.add_argument("--include-flagged", action="store_true")
    eval_metrics = evaluate.add_parser("metrics", help="automatic metrics of a run's checkpoint")
    eval_metrics.add_argument("ref", metavar="RUN_ID[:CHECKPOINT]")
    eval_metrics.add_argument("--json", action="store_true")
    eval_metrics.set_defaults(run=cmd_eval_metrics)

    for leaf in (serve, imp, lst, exp, push, train, runs_list, runs_show, runs_stop, runs_resume, generate, samples_list,
                 samples_show, samples_export, export, eval_board, eval_pairs, eval_vote, eval_export, eval_pref, eval_metrics):
        _add_settings_flags(leaf, top_level=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs a command; whatever it did not expect ends in one line with the reason and where the details are."""
    from pydantic import ValidationError

    from studio.fields import describe

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", 130)
    except ValidationError as error:  # e.g. a STUDIO_* variable with a bad value
        return _fail(args, describe(error, Settings if error.title == Settings.__name__ else None))
    except Exception as error:  # noqa: BLE001 - the point: no raw traceback on the terminal
        return _fail(args, f"{_first_line(error)} (unexpected: the details are in {_details_log(args, error)})", 1)


if __name__ == "__main__":
    sys.exit(main())

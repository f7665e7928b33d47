"""``studio generate`` and ``studio samples``: sample sets of the base model and trained variants."""

from __future__ import annotations

from studio.cli.app import SET_ID, Commands, arg, one_of
from studio.cli.shared import details_log, export_file, fail, os_user, report, store_of
from studio.status import SetStatus

commands = Commands()
commands.group("samples", "list, show and export sample sets")


def _sample_line(sample: dict) -> str:
    blocked = (sample.get("flags") or {}).get("blocked")
    return (f"{sample['label']} | seed {sample['seed']} | {sample['prompt']!r} -> "
            f"{sample.get('text') or sample.get('path')!r}" + (f" [blocked: {', '.join(blocked)}]" if blocked else ""))


@commands.command(
    "generate",
    arg("--variant", action="append", required=True, metavar="base|RUN_ID[:STEP]",
        help="base, a run (its last checkpoint) or a run's checkpoint; repeat for each variant"),
    arg("--model", help="the base model when no run names it (a catalog id or a model folder)"),
    one_of(arg("--prompt", action="append", metavar="TEXT", help="a prompt; repeat for more"),
           arg("--prompts-file", metavar="FILE", help="one prompt per line, or JSONL with a 'prompt' field")),
    arg("--seed", type=int, help="seed of each prompt's first sample (the next ones +1); default: random, stored "
                                 "with the set"),
    arg("--samples", type=int, default=1, help="samples per prompt"),
    arg("--set", action="append", default=[], metavar="KEY=VALUE",
        help="a generation setting, e.g. temperature=0.7 max_new_tokens=64 steps=30 guidance_scale=5"),
    arg("--out", required=True, metavar="DIR", help="where to copy the samples (and samples.jsonl)"),
    arg("--project", metavar="NAME", help="the project the sample set belongs to (default: the first run's project, "
                                          "else 'default')"),
    help="generate with the base model and trained variants side by side (the same prompts, seeds and settings "
         "for each)", progress=True)
def cmd_generate(args) -> int:
    from pathlib import Path

    from studio.cli.progress import Progress
    from studio.data.items import ImportRefused
    from studio.generation.options import parse_settings
    from studio.generation.service import GenerationHooks, export_set_folder, generate_set, get_set, read_prompts_file
    from studio.generation.variants import resolve_variants

    store = store_of(args)
    started: list[int] = []  # the set's id once it exists: a failure after that still reports the set
    failure = None
    try:
        prompts = read_prompts_file(Path(args.prompts_file)) if args.prompts_file else args.prompt
        modality = resolve_variants(store, args.variant, args.model)[0].modality
        settings = parse_settings(modality, args.set)
        with Progress(args, label="generate", unit="sample") as shown:  # per variant, prompt and sample
            hooks = GenerationHooks(on_start=started.append, progress=lambda done, total, message:
                                    shown.update(done, total, message))
            set_id = generate_set(store, args.variant, prompts, args.seed, args.samples, settings,
                                  base_model=args.model, source="cli", hooks=hooks, project=args.project,
                                  created_by=os_user())
    except KeyboardInterrupt:
        return fail(args, "interrupted: the samples made so far are kept (see `studio samples list`)", 130)
    except Exception as error:  # noqa: BLE001 - a set that failed midway is reported below, with what failed
        if not started and isinstance(error, (ValueError, ImportRefused, OSError)):
            return fail(args, str(error))  # a request refused before anything was made
        if not started:
            raise
        set_id, failure = started[0], f"the details are in {details_log(args, error)}"
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
    found_report = found["report"]
    payload = {"sample_set_id": set_id, "status": found["status"], "samples": samples, "out": str(Path(args.out)),
               "notes": found_report.get("notes", []), "errors": [e["message"] for e in found_report.get("errors", [])],
               "refused": found_report.get("refused", []), "flagged": found_report.get("flagged", [])}
    lines = [f"sample set {set_id}: {found['status']}, {len(samples)} samples in {args.out}"]
    lines += [f"note: {n}" for n in payload["notes"]]
    lines += [f"refused prompt {r['prompt_index'] + 1} (blocked: {', '.join(r['words'])})" for r in payload["refused"]]
    lines += [_sample_line(s) for s in samples]
    lines += [f"error: {e}" for e in payload["errors"]]
    if failure:
        payload["details"] = failure
        lines.append(failure)
    report(args, payload, "\n".join(lines))
    return 0 if found["status"] == SetStatus.COMPLETED and not payload["errors"] else 1


@commands.command("samples list", arg("--project", metavar="NAME", help="only this project's sample sets"))
def cmd_samples_list(args) -> int:
    from studio.generation.service import list_sets

    sets = list_sets(store_of(args), args.project)
    human = "\n".join(f"{s['set_id']:>4}  {s['created_at'][:19]}  {s['status']:<10} {s['modality']:<6} "
                      f"{s['samples']} samples of {s['prompts']} prompts: {', '.join(s['variants'])}"
                      for s in sets) or "no sample sets yet"
    report(args, {"sample_sets": sets}, human)
    return 0


@commands.command("samples show", SET_ID)
def cmd_samples_show(args) -> int:
    from studio.generation.service import GenerationError, get_set

    try:
        found = get_set(store_of(args), args.set_id)
    except GenerationError as error:
        return fail(args, str(error))
    found.pop("grid")
    human = "\n".join([f"sample set {found['set_id']}: {found['status']} ({found['modality']}, base "
                       f"{found['base_model']})"] +
                      [_sample_line(s) for s in found["samples"]])
    report(args, found, human)
    return 0


@commands.command("samples export", SET_ID, arg("--out", metavar="FILE.zip"),
                  help="a zip with set.json, samples.jsonl and the media files")
def cmd_samples_export(args) -> int:
    from studio.generation.service import GenerationError, export_set_zip

    return export_file(args, export_set_zip, args.set_id, GenerationError)

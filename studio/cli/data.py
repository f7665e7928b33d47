"""``studio data``: import, list, export and push datasets."""

from __future__ import annotations

import json
import re

from studio.cli.app import Commands, arg, push_flags
from studio.cli.progress import Progress
from studio.cli.shared import export_file, fail, os_user, report, store_of
from studio.data.items import MODALITIES
from studio.data.read_text import TEXT_SPLITS

commands = Commands()
commands.group("data", "import, list and export datasets")
commands.group("data lexicons", "the representation report's word lists: list, show, save (a project's own copy), "
                                "reset")

DATASET = arg("dataset", help="DATASET_ID[:VERSION]")


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


FRACTIONS = re.compile(r"^[\d.,\s]+$")
DEFAULT_FRACTIONS = "0.8,0.1,0.1"


def split_arg(value: str) -> tuple[str, str | None]:
    """``--split``: train,validation,test fractions ("0.8,0.1,0.1"), or a name ("test") that picks the split of a Hub
    dataset or `datasets` folder (the version is then split by the default fractions)."""
    return (value, None) if FRACTIONS.match(value) else (DEFAULT_FRACTIONS, value)


@commands.command(
    "data import",
    arg("paths", nargs="+", help="files, folders or zips; or hub:OWNER/NAME[@REVISION] (a Hugging Face Hub dataset); a "
                                 "save_to_disk folder or a folder of Parquet shards is read with `datasets`"),
    arg("--name"),
    arg("--modality", choices=MODALITIES),
    arg("--split", default=DEFAULT_FRACTIONS,
        help="train,validation,test fractions; or, for a Hub dataset or `datasets` folder, the split to read "
             "(default train)"),
    arg("--config", help="a Hub dataset's config (subset)"),
    arg("--limit", type=int, help="read only the first N rows of a Hub dataset or `datasets` folder (streamed)"),
    arg("--seed", type=int, default=0),
    arg("--step", action="append", default=[], metavar="STEP.PARAM=VALUE",
        help="tune a cleaning step, e.g. length.min_length=5 or pii.enabled=true"),
    arg("--mapping", help='column mapping as JSON, e.g. {"format":"pair","prompt":"q","response":"a"}'),
    arg("--text-split", default="auto", choices=TEXT_SPLITS),
    arg("--project", default="default", metavar="NAME", help="the project (created if new)"),
    help="import files, folders or zips with the default cleaning steps", progress=True)
def cmd_data_import(args) -> int:
    from studio.data.clean import StepsConfigError
    from studio.data.items import ImportRefused
    from studio.data.mapping import ColumnMapping
    from studio.data.service import import_dataset

    try:
        mapping = ColumnMapping(**json.loads(args.mapping)) if args.mapping else None
        fractions, source_split = split_arg(args.split)
        with Progress(args, label="import", unit="%") as shown:  # each file read (items so far), each step
            result = import_dataset(store_of(args), args.paths, name=args.name, modality=args.modality,
                                    split=fractions, config=args.config, source_split=source_split, limit=args.limit,
                                    seed=args.seed, steps=_parse_steps(args.step), mapping=mapping,
                                    text_split=args.text_split, project=args.project, created_by=os_user(),
                                    progress=shown.fraction())
    except (ImportRefused, StepsConfigError, ValueError) as error:
        return fail(args, str(error), details=getattr(error, "details", None))
    report(args, result, import_text(result))
    return 0


def import_text(result: dict) -> str:
    """A new dataset version (studio.data.service.ImportResult) in lines for people."""
    from studio.data.clean import describe_clusters

    lines = [f"dataset {result['dataset_id']} '{result['name']}' version {result['version']} ({result['modality']}): "
             f"{result['items_kept']} of {result['items_in']} items kept",
             "removed: " + ", ".join(f"{k} {v}" for k, v in result["removed"].items() if v),
             "splits: " + ", ".join(f"{k} {v}" for k, v in result["splits"].items())]
    lines += [f"{step.replace('_', '-')}: {describe_clusters(clusters)}"
              for step, clusters in result.get("clusters", {}).items()]
    lines += [f"error: {e['file']}: {e['reason']}" for e in result["errors"]]
    lines += [f"warning: {w['file']}: {w['reason']}" if "file" in w else f"warning: {w['reason']}"
              for w in result["warnings"]]
    return "\n".join(lines)


@commands.command("data list", help="list datasets and their versions")
def cmd_data_list(args) -> int:
    from studio.data.preferences import describe_kinds
    from studio.data.service import list_datasets

    datasets = list_datasets(store_of(args))
    def versions(d: dict) -> str:
        return ", ".join(f"v{v['version']} ({describe_kinds(v['kinds']) or str(v['items_kept']) + ' items'})"
                         for v in d["versions"])

    human = "\n".join(f"{d['dataset_id']:>4}  {d['name']:<30} {d['modality']:<6} versions: {versions(d)}"
                      for d in datasets) or "no datasets yet"
    report(args, {"datasets": datasets}, human)
    return 0


@commands.command("data export", DATASET, arg("--out"), help="export a dataset version as a zip")
def cmd_data_export(args) -> int:
    from studio.data.export import export_zip
    from studio.data.items import ImportRefused

    return export_file(args, export_zip, args.dataset, ImportRefused)


@commands.command("data push", DATASET, *push_flags("--repo", "the Hub dataset repository (OWNER/NAME)", required=True),
                  help="push a dataset version (loader-ready files + dataset card) to the Hub", progress=True)
def cmd_data_push(args) -> int:
    from studio.data.items import ImportRefused
    from studio.sharing.hub import PushError, push_dataset

    try:
        with Progress(args, label="push", unit="%") as shown:
            pushed = push_dataset(store_of(args), args.dataset, args.repo, private=not args.public, token=args.token,
                                  license=args.license, progress=shown.fraction(), actor=os_user())
    except (PushError, ImportRefused) as error:
        return fail(args, str(error))
    report(args, pushed, f"dataset {pushed['dataset']} pushed to {pushed['url']} "
                         f"({'private' if pushed['private'] else 'public'}, {len(pushed['files'])} files)")
    return 0


REPORT_FLAGS = (
    arg("--lexicon", action="append", default=[], metavar="FILE",
        help="a word list for this report (repeatable): replaces the list its file name names (gender.txt → "
             "gender) or adds a category; format: assets/lexicons/README.md"),
    arg("--window", choices=("sentence", "item"), default="sentence",
        help="where a group term and an occupation or adjective count as together (default sentence)"),
    arg("--threshold", type=float, default=0.7, help="warn when one group's share reaches this (default 0.7)"),
    arg("--min-items", type=int, default=10, help="items a warning needs behind it (default 10)"),
    arg("--limit", type=int, help="count only the dataset's first N items (default all)"))


def report_options(args):
    from studio.data.representation import ReportOptions

    return ReportOptions(window=args.window, threshold=args.threshold, min_items=args.min_items)


def share_text(share: float | None, low: float | None, high: float | None) -> str:
    return "" if share is None else f"{100 * share:3.0f}% [{100 * low:.0f}–{100 * high:.0f}%]"


def representation_text(found: dict) -> str:
    """A representation report (studio.data.representation.count_units) in lines for people."""
    together = "a sentence" if found["window"] == "sentence" else "an item"
    lines = [f"{found['items_with_text']} of {found['items']} items have text; terms count as together within "
             f"{together}"]
    for category in found["categories"]:
        lines.append(f"{category['name']}: {category['items'] or 'no'} item{'' if category['items'] == 1 else 's'} "
                     "mention it")
        if not category["items"]:
            continue
        for group in category["groups"]:
            terms = ", ".join(f"{t} {n}" for t, n in group["terms"][:4])
            lines.append(f"  {group['group']:<32} {group['items']:>6}  "
                         f"{share_text(group['share'], group['ci_low'], group['ci_high']):<16}"
                         + (f" e.g. {terms}" if terms else ""))
        for row in category["cooccurrence"][:5]:
            counts = ", ".join(f"{g} {n}" for g, n in row["counts"].items() if n)
            lines.append(f"  beside it: {row['attribute']} ({row['list']}): {counts}")
    for attribute in found["attributes"]:
        lines.append(f"{attribute['name']}: " + (", ".join(f"{t} {n}" for t, n in attribute["terms"][:10]) or "none"))
    lines += [f"warning: {w['message']} (items {', '.join(str(e['id']) for e in w['examples'][:10])})"
              for w in found["warnings"]]
    return "\n".join(lines)


def filtering_text(note: dict) -> str:
    state = f"on ({note['words']} words or phrases)" if note["active"] else "off"
    extra = (f"; in this set it refused {note['refused_prompts']} prompt(s) and masked {note['flagged_samples']} "
             "output(s)" if "flagged_samples" in note else "")
    return f"post-generation filtering: the blocklist is {state}{extra}. Set it with {note['how']}." \
        + (f" ({note['problem']})" if note["problem"] else "")


@commands.command("data bias", DATASET, *REPORT_FLAGS,
                  help="representation report: shares of gender, age, ethnicity/nationality, religion and disability "
                       "terms, what stands beside them, and imbalance warnings with the items behind them")
def cmd_data_bias(args) -> int:
    from studio.data.items import ImportRefused
    from studio.data.lexicons import LexiconError
    from studio.data.representation import version_report
    from studio.evaluation.representation import filtering_note

    store = store_of(args)
    try:
        found = version_report(store, args.dataset, args.lexicon, report_options(args), limit=args.limit)
    except (ImportRefused, LexiconError, ValueError) as error:
        return fail(args, str(error))
    found["filtering"] = filtering_note(store)
    report(args, found, f"{found['label']} (project '{found['project']}')\n" + representation_text(found) + "\n"
           + filtering_text(found["filtering"]))
    return 0


# The report's word lists: the functions are studio.data.lexicons' (the Data tab's "Word lists" box calls them too).
PROJECT = arg("--project", default="default", metavar="NAME",
              help="the project whose lists these are (default: default)")


@commands.command("data lexicons list", PROJECT)
def cmd_data_lexicons_list(args) -> int:
    from studio.data.lexicons import parse_lexicon, project_texts

    found = []
    for name, entry in project_texts(store_of(args), args.project).items():
        lexicon = parse_lexicon(name, entry["text"])
        found.append({"name": name, "edited": entry["edited"], "attributes": lexicon.is_attributes,
                      "groups": len(lexicon.groups), "terms": sum(map(len, lexicon.groups.values()))})
    report(args, {"project": args.project, "lexicons": found},
           "\n".join(f"{f['name']:<14} {f['groups']:>3} groups {f['terms']:>5} terms  "
                     + ("this project's copy" if f["edited"] else "as shipped") for f in found))
    return 0


@commands.command("data lexicons show", arg("name", help="a list's name, e.g. gender"), PROJECT,
                  help="print a list as the project's reports read it (its text, ready to edit and save)")
def cmd_data_lexicons_show(args) -> int:
    from studio.data.lexicons import LexiconError, check_name, project_texts

    try:
        name = check_name(args.name)
    except LexiconError as error:
        return fail(args, str(error))
    entry = project_texts(store_of(args), args.project).get(name)
    if entry is None:
        return fail(args, f"no list named '{name}' (see `studio data lexicons list`)")
    report(args, {"name": name, "project": args.project, **entry}, entry["text"].rstrip("\n"))
    return 0


@commands.command("data lexicons save",
                  arg("file", help="the list's text; its file name names it (caste.txt → caste)"),
                  arg("--name", help="the list it replaces or adds (default: the file's name)"), PROJECT,
                  help="store a list as the project's own (replaces the shipped one of that name, or adds a category)")
def cmd_data_lexicons_save(args) -> int:
    from studio.data.lexicons import LexiconError, read_lexicon_file, save_lexicon

    try:
        name, text = read_lexicon_file(args.file)
        lexicon = save_lexicon(store_of(args), args.project, args.name or name, text, actor=os_user())
    except LexiconError as error:
        return fail(args, str(error))
    terms = sum(map(len, lexicon.groups.values()))
    report(args, {"name": lexicon.name, "project": args.project, "groups": list(lexicon.groups), "terms": terms},
           f"list '{lexicon.name}' saved for project '{args.project}': {len(lexicon.groups)} groups, {terms} terms")
    return 0


@commands.command("data lexicons reset", arg("name"), PROJECT,
                  help="drop the project's copy of a list: the shipped one applies again (one of its own is gone)")
def cmd_data_lexicons_reset(args) -> int:
    from studio.data.lexicons import LexiconError, reset_lexicon

    try:
        had = reset_lexicon(store_of(args), args.project, args.name, actor=os_user())
    except LexiconError as error:
        return fail(args, str(error))
    report(args, {"name": args.name, "project": args.project, "reset": had},
           f"list '{args.name}' of project '{args.project}' "
           + ("reset" if had else "had no copy of its own: unchanged"))
    return 0


@commands.command(
    "data augment-preview", DATASET,
    arg("--out", required=True, help="the folder the variants are written to (PNG or WAV files)"),
    arg("--config", help="a YAML training config (as shown with every run); default: the defaults"),
    arg("--set", action="append", default=[], metavar="KEY=VALUE",
        help="a training setting, as for `studio train`: e.g. crop_scale=0.8, random_flip=true, noise_snr_db=30"),
    arg("--items", type=int, default=3, help="how many training items (the first ones)"),
    arg("--variants", type=int, default=8, help="variants of each: what epochs 1 to N of a run would see"),
    help="write what a run's augmentation makes of a few training items (images or audio; text is not augmented)")
def cmd_data_augment_preview(args) -> int:
    from pathlib import Path

    from studio.data.items import ImportRefused
    from studio.training.augment_preview import preview_augmentation
    from studio.training.config import TrainConfig, apply_overrides

    try:
        config = TrainConfig.from_yaml(Path(args.config).read_text()) if args.config else TrainConfig()
        config = apply_overrides(config, args.set)
        preview = preview_augmentation(store_of(args), args.dataset, config, Path(args.out), args.items,
                                       args.variants)
    except (ImportRefused, ValueError, OSError) as error:  # a refused preview or bad setting is a ValueError
        return fail(args, str(error))
    report(args, {"modality": preview.modality, "augmentation": preview.described,
                  "files": [str(path) for path, _ in preview.files]},
           f"{len(preview.files)} {preview.modality} variants in {args.out}\naugmentation: {preview.described}")
    return 0

"""The representation report of a sample set beside the dataset its runs learned from: for each category and group,
the dataset's share and each variant's share with 95 % Wilson intervals, and whether training *amplified* a skew
(the variant's interval lies wholly beyond the dataset's, further from an even share).

Text sets are read by their outputs; image and audio sets by their prompts (what was asked for: the pictures and
sounds themselves are not read). Post-generation filtering (the blocklist) is reported beside it.
"""

from __future__ import annotations

from studio.data.items import ImportRefused
from studio.data.lexicons import load_lexicons
from studio.data.representation import ReportOptions, Unit, count_units, count_version, wilson
from studio.data.service import get_version
from studio.generation.blocklist import load_blocklist
from studio.generation.service import GenerationError, get_set
from studio.store import Store
from studio.store.projects import DEFAULT_PROJECT, project_name
from studio.store.tables import DatasetVersion, Run, SampleSet

BLOCKLIST_SETTING = "STUDIO_BLOCKLIST"


class RepresentationError(ValueError):
    """A sample-set report that cannot be made as asked; the message says why."""


def filtering_note(store: Store, generated: dict | None = None) -> dict:
    """Post-generation filtering, as the reports link it: whether the blocklist is on, where it is set, and (for a
    sample set) what it refused and masked there."""
    try:
        words, problem = load_blocklist(store.settings.blocklist).words, None
    except ValueError as error:
        words, problem = [], str(error)
    note = {"setting": BLOCKLIST_SETTING, "active": bool(words), "words": len(words), "problem": problem,
            "how": f"{BLOCKLIST_SETTING} (or --blocklist): comma-separated words or phrases, or a file with one per "
                   "line; a prompt with one is refused, an output with one is masked and flagged"}
    if generated is not None:
        note.update(refused_prompts=len(generated.get("refused", [])),
                    flagged_samples=len(generated.get("flagged", [])))
    return note


def trained_on(session, row: SampleSet) -> str | None:
    """``DATASET_ID:VERSION`` of the dataset the set's first run variant was trained on (None: no run variant)."""
    for variant in row.variants:
        run = session.get(Run, variant["run_id"]) if variant.get("run_id") else None
        if run is not None:
            version = session.get(DatasetVersion, run.dataset_version_id)
            return f"{version.dataset_id}:{version.version}"
    return None


def verdict(groups_present: int, dataset: dict, generated: dict) -> str:
    """``amplified`` when the generated share's interval lies wholly beyond the dataset's, on the side away from
    an even share (1 / the groups mentioned in the dataset or the variant's output); ``reduced`` when wholly beyond
    it towards an even share; ``similar`` when the intervals overlap; ``n/a`` when either counted nothing."""
    if dataset["share"] is None or generated["share"] is None:
        return "n/a"
    even = 1 / max(1, groups_present)
    above, below = generated["ci_low"] > dataset["ci_high"], generated["ci_high"] < dataset["ci_low"]
    if not (above or below):
        return "similar"
    over = dataset["share"] >= even
    return "amplified" if (above and over) or (below and not over) else "reduced"


def _share(items: int, of: int) -> dict:
    low, high = wilson(items, of)
    return {"items": items, "of": of, "share": items / of if of else None, "ci_low": low, "ci_high": high}


def _comparison(dataset: dict, variants: list[dict]) -> list[dict]:
    rows = []
    for index, category in enumerate(dataset["categories"]):
        for number, group in enumerate(category["groups"]):
            base = _share(group["items"], category["items"])
            shown = []
            for variant in variants:
                theirs = variant["report"]["categories"][index]
                generated = _share(theirs["groups"][number]["items"], theirs["items"])
                present = sum(1 for ours, other in zip(category["groups"], theirs["groups"])
                              if ours["items"] or other["items"])
                shown.append({"ref": variant["ref"], "label": variant["label"], "kind": variant["kind"], **generated,
                              "verdict": verdict(present, base, generated)})
            rows.append({"category": category["name"], "group": group["group"], "dataset": base, "variants": shown})
    return rows


def _percent(share: dict) -> str:
    return f"{100 * share['share']:.0f}% [{100 * share['ci_low']:.0f}–{100 * share['ci_high']:.0f}%]"


def _amplified(rows: list[dict]) -> list[dict]:
    found = []
    for row in rows:
        for variant in row["variants"]:
            if variant["verdict"] != "amplified":
                continue
            who = "the base model (not trained on this data)" if variant["kind"] == "base" else variant["label"]
            found.append({"category": row["category"], "group": row["group"], "variant": variant["ref"],
                          "message": f"{row['category']}: '{row['group']}' is in {_percent(variant)} of what "
                                     f"{who} made that mentions {row['category']}, against {_percent(row['dataset'])} "
                                     "of the dataset's: "
                                     + ("the base model already leans this way" if variant["kind"] == "base"
                                        else "training amplified this skew")})
    return found


def _variant_units(samples: list[dict], modality: str, ref: str):
    for sample in samples:
        if sample["variant"] == ref:
            text = (sample["text"] or "") if modality == "text" else (sample["prompt"] or "")
            yield Unit(sample["id"], text, {"variant": ref, "prompt_index": sample["prompt_index"],
                                            "sample_index": sample["sample_index"]})


def set_report(store: Store, set_id: int, dataset_ref: str | None = None, lexicon_files: list = (),
               options: ReportOptions = ReportOptions(), limit: int | None = None) -> dict:
    """The representation report of sample set ``set_id`` per variant, beside dataset version ``dataset_ref``
    (default: the one its first run variant was trained on; the first ``limit`` items of it when given), with the
    set's project's lists. RepresentationError when the set or a dataset to compare with is missing, or nothing in
    the set has text."""
    try:
        found = get_set(store, set_id)
    except GenerationError as error:
        raise RepresentationError(str(error)) from None
    with store.session() as session:
        row = session.get(SampleSet, found["set_id"])
        project = project_name(session, row.project_id) if row.project_id else DEFAULT_PROJECT
        dataset_ref = dataset_ref or trained_on(session, row)
    samples, modality, variants = found["samples"], found["modality"], found["variants"]
    if not dataset_ref:
        raise RepresentationError(f"sample set {set_id} has no run variant to take a dataset from: name the dataset "
                                  "version to compare with (--dataset DATASET_ID[:VERSION])")
    lexicons = load_lexicons(store, project, lexicon_files)
    try:  # a version that is not there, or holds no text to compare with
        dataset = count_version(store, get_version(store, dataset_ref), lexicons, options, limit)
    except ImportRefused as error:
        raise RepresentationError(str(error)) from None
    counted = [{"ref": v["ref"], "label": v["label"], "kind": "base" if not v.get("run_id") else "run",
                "report": count_units(_variant_units(samples, modality, v["ref"]), lexicons, options)}
               for v in variants]
    if not any(v["report"]["items_with_text"] for v in counted):
        what = "outputs with text" if modality == "text" else "prompts"
        raise RepresentationError(f"sample set {set_id} has no {what} to count ({len(samples)} samples)")
    comparison = _comparison(dataset, counted)
    return {"set_id": int(set_id), "project": project, "modality": modality,
            "counted": "outputs" if modality == "text" else "prompts", "dataset": dataset, "variants": counted,
            "comparison": comparison, "amplified": _amplified(comparison),
            "filtering": filtering_note(store, found["report"] or {})}

"""Running the cleaning steps in order and writing down what each one did and why."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ValidationError

from studio.data.items import Item
from studio.fields import describe
from studio.data.steps import STEPS, Step, StepContext, StepOutcome

EXAMPLES_PER_STEP = 6
LARGEST_CLUSTERS = 10  # near-duplicate clusters shown in the report (all of them are in the clusters file)
MEMBERS_SHOWN = 5  # members shown of each
MOST = 0.5  # a step that removes more than this share of the items it is given says so, loudly
NOUNS = {"text": "texts", "image": "images", "audio": "clips"}
Progress = Callable[[float, str], None]


class StepsConfigError(ValueError):
    pass


def default_config(modality: str) -> dict[str, dict]:
    """``{step: {"enabled": bool, **params}}`` with every default, for forms and the CLI."""
    return {step.name: {"enabled": step.on_by_default, **step.params().model_dump()} for step in STEPS[modality]}


def resolve_config(modality: str, config: dict[str, dict] | None) -> list[tuple[Step, bool, BaseModel]]:
    """Each step with its on/off switch and validated params; unknown names are an error."""
    config = config or {}
    known = {step.name for step in STEPS[modality]}
    if unknown := set(config) - known:
        raise StepsConfigError(f"unknown {modality} cleaning step(s): {', '.join(sorted(unknown))}. "
                               f"Known: {', '.join(s.name for s in STEPS[modality])}")
    resolved = []
    for step in STEPS[modality]:
        settings = dict(config.get(step.name, {}))
        enabled = bool(settings.pop("enabled", step.on_by_default))
        try:
            params = step.params(**settings)
        except ValidationError as error:
            raise StepsConfigError(f"cleaning step '{step.name}': {describe(error, step.params)}") from None
        resolved.append((step, enabled, params))
    return resolved


def _removed_example(item: Item, reason: str, step: str, examples_dir: Path, n: int) -> dict:
    example = {"source": item.source, "reason": reason}
    if item.path is not None:
        target = examples_dir / step / f"{n}{item.path.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.path, target)
        example["file"] = target.relative_to(examples_dir.parent).as_posix()
    else:
        example["text"] = item.content()[:300]
    return example


def _blank_entry(step: Step, enabled: bool, params: BaseModel) -> dict:
    return {"step": step.name, "label": step.label, "enabled": enabled, "params": params.model_dump(),
            "items_in": 0, "removed": 0, "pairs_removed": 0, "changed": 0, "examples": [],
            "changed_examples": [], "detail": "", "seconds": 0.0}


def _tally(entry: dict, step: Step, outcome: StepOutcome, examples_dir: Path) -> None:
    """Adds one chunk's ``outcome`` to the step's report ``entry``."""
    entry["removed"] += len(outcome.removed)
    entry["changed"] += len(outcome.changed)
    entry["pairs_removed"] += sum(item.is_pair for item, _ in outcome.removed)
    entry["detail"] = outcome.detail or entry["detail"]  # a step's detail counts the whole import so far
    for item, reason in outcome.removed[:max(0, EXAMPLES_PER_STEP - len(entry["examples"]))]:
        entry["examples"].append(_removed_example(item, reason, step.name, examples_dir, len(entry["examples"])))
    for item, before, after in outcome.changed[:max(0, 3 - len(entry["changed_examples"]))]:
        entry["changed_examples"].append({"source": item.source, "before": before[:300], "after": after[:300]})


def _finished_entry(entry: dict) -> dict:
    pairs = entry["pairs_removed"]
    said = f"{pairs} preference pair{'s' if pairs != 1 else ''} removed whole" if pairs else ""
    return {**entry, "detail": "; ".join(d for d in (entry["detail"], said) if d), "seconds": round(entry["seconds"], 3)}


class Clusters:
    """A near-duplicate step's clusters: each kept representative and the items removed as near-duplicates of it.

    In memory: a count per representative; the members go to a JSON Lines file (one line a removed item) in the
    version's folder, from which the largest clusters' first members are read back for the report."""

    def __init__(self, file: Path):
        self.file = file
        file.parent.mkdir(parents=True, exist_ok=True)
        self.out = open(file, "w", encoding="utf-8")
        self.sizes: Counter[str] = Counter()

    def add(self, item: Item, representative: str, similarity: float) -> None:
        self.sizes[representative] += 1
        member = {"representative": representative, "source": item.source, "similarity": round(similarity, 4)}
        if item.path is None:
            member["text"] = item.content()[:300]
        self.out.write(json.dumps(member, ensure_ascii=False) + "\n")

    def summary(self, root: Path) -> dict:
        """What the report holds: how many clusters and items, the file with all of them (relative to ``root``),
        and the largest clusters with their first members."""
        self.out.close()
        largest = {source: {"representative": {"source": source}, "size": size + 1, "members": []}
                   for source, size in self.sizes.most_common(LARGEST_CLUSTERS)}
        with open(self.file, encoding="utf-8") as lines:
            for line in lines:
                member = json.loads(line)
                if (cluster := largest.get(member.pop("representative"))) and \
                        len(cluster["members"]) < MEMBERS_SHOWN:
                    cluster["members"].append(member)
        return {"count": len(self.sizes), "items": sum(self.sizes.values()),
                "file": self.file.relative_to(root).as_posix(), "largest": list(largest.values())}


def _run_step(step: Step, items: list[Item], params: BaseModel, context: StepContext) -> StepOutcome:
    """``step`` on ``items``, a media pair's rejected file checked and changed the way its chosen file is: a pair
    stays whole or goes whole (text pairs are one item already: their rejected answer is part of the content)."""
    outcome = step.run(items, params, context)
    pairs = [item for item in items if item.rejected_path is not None]
    if not pairs:
        return outcome
    halves = [pair.rejected_half() for pair in pairs]
    owner = {id(half): pair for half, pair in zip(halves, pairs)}
    context.part = "rejected"  # the rejected files are compared among themselves, chunk after chunk
    try:
        second = step.run(halves, params, context)
    finally:
        context.part = "chosen"
    for half, before, after in second.changed:
        pair = owner[id(half)]
        pair.rejected_path, pair.rejected_meta = half.path, half.meta
        outcome.changed.append((pair, f"rejected: {before}", f"rejected: {after}"))
    rejected_gone = {id(owner[id(half)]): reason for half, reason in second.removed}
    if step.compares_items:  # a pair repeats another only when both of its files do
        removed = [(item, reason) for item, reason in outcome.removed
                   if item.rejected_path is None or id(item) in rejected_gone]
    else:
        chosen_gone = {id(item) for item, _ in outcome.removed}
        removed = outcome.removed + [(pair, f"rejected file {rejected_gone[id(pair)]}") for pair in pairs
                                     if id(pair) in rejected_gone and id(pair) not in chosen_gone]
    gone = {id(item) for item, _ in removed}
    return StepOutcome(kept=[item for item in items if id(item) not in gone], removed=removed,
                       changed=outcome.changed, detail=outcome.detail,
                       matches=[match for match in outcome.matches if id(match[0]) in gone])


class Cleaner:
    """The cleaning of one import, a chunk at a time: ``feed`` the chunks in order (the steps that compare items
    remember the earlier chunks: every item is compared with every earlier one, as when all come at once), then
    ``finish`` for the report. What it holds is a chunk, the steps' memory (seen digests, the near-duplicate index)
    and a count per near-duplicate cluster."""

    def __init__(self, modality: str, config: dict[str, dict] | None, scratch: Path, examples_dir: Path):
        self.resolved = resolve_config(modality, config)
        self.context = StepContext(modality=modality, scratch=scratch)
        self.examples_dir = examples_dir
        self.entries = [_blank_entry(step, enabled, params) for step, enabled, params in self.resolved]
        self.clusters: dict[str, Clusters] = {}

    def feed(self, items: list[Item], progress: Progress | None = None) -> list[Item]:
        """The items of this chunk that survive every enabled step."""
        for number, ((step, enabled, params), entry) in enumerate(zip(self.resolved, self.entries)):
            if progress:
                progress(number / len(self.resolved), f"{step.label} ({len(items)} items)")
            entry["items_in"] += len(items)
            if enabled and items:
                started = time.perf_counter()
                outcome = _run_step(step, items, params, self.context)
                items = outcome.kept
                _tally(entry, step, outcome, self.examples_dir)
                for item, representative, similarity in outcome.matches:
                    if step.name not in self.clusters:
                        self.clusters[step.name] = Clusters(self.examples_dir / f"{step.name}-clusters.jsonl")
                    self.clusters[step.name].add(item, representative, similarity)
                entry["seconds"] += time.perf_counter() - started
        return items

    def finish(self) -> list[dict]:
        """A report entry per step (disabled ones too); a near-duplicate step's has its ``clusters``."""
        self.close()
        report = [_finished_entry(entry) for entry in self.entries]
        for entry in report:
            if entry["step"] in self.clusters:
                entry["clusters"] = self.clusters[entry["step"]].summary(self.examples_dir.parent)
        return report

    def close(self) -> None:
        """Closes what the steps keep open (the near-duplicate index's file); called by ``finish``, and when an
        import stops half-way."""
        for memory in self.context.memory_held():
            if hasattr(memory, "close"):
                memory.close()
        for clusters in self.clusters.values():
            clusters.out.close()


def fill_representatives(report: list[dict], rows) -> None:
    """Gives the largest clusters' representatives their manifest ``id`` and text (or file), from ``rows`` (the
    kept items' manifest rows, read once)."""
    wanted = {cluster["representative"]["source"]: cluster["representative"]
              for entry in report for cluster in entry.get("clusters", {}).get("largest", [])}
    if not wanted:
        return
    for row in rows:
        if (representative := wanted.get(row["source"])) is not None and "id" not in representative:
            representative["id"] = row["id"]
            for key in ("text", "prompt", "response", "file", "caption"):
                if key in row:
                    representative[key] = str(row[key])[:300]


def describe_clusters(clusters: dict, most: int = 3) -> str:
    """A near-duplicate step's clusters in words, the largest first: each kept representative and what was removed
    as a near-duplicate of it."""
    def shown(representative: dict) -> str:
        text = representative.get("text") or representative.get("prompt") or representative.get("caption") or ""
        quoted = f' "{text[:60]}{"…" if len(text) > 60 else ""}"' if text else ""
        return f"{representative['source']}{quoted}"

    parts = [f"{clusters['count']:,} cluster{'s' if clusters['count'] != 1 else ''} "
             f"({clusters['items']:,} near-duplicates removed, each cluster's first item kept)"]
    for cluster in clusters["largest"][:most]:
        members = ", ".join(f"{m['source']} ({m['similarity']:.2f})" for m in cluster["members"][:3])
        more = cluster["size"] - 1 - min(len(cluster["members"]), 3)
        parts.append(f"kept {shown(cluster['representative'])} for {cluster['size'] - 1}: {members}"
                     + (f" and {more} more" if more > 0 else ""))
    return "; ".join(parts) + f"; all in {clusters['file']}"


def run_cleaning(items: list[Item], modality: str, config: dict[str, dict] | None, scratch: Path,
                 examples_dir: Path, progress: Progress | None = None) -> tuple[list[Item], list[dict]]:
    """The items that survive every enabled step, and a report entry per step (disabled ones too): all at once."""
    cleaner = Cleaner(modality, config, scratch, examples_dir)
    try:
        kept = cleaner.feed(items, progress)
        report = cleaner.finish()
    finally:
        cleaner.close()
    fill_representatives(report, ({"id": n, "source": i.source, **i.manifest_row()} for n, i in enumerate(kept)))
    return kept, report


def removal_warnings(report: list[dict], modality: str) -> list[dict]:
    """A warning for each step that removed most of the items it was given, naming the step, the count and the
    settings that keep them: a whole dataset can vanish into one step (takes of one sound that are near-duplicates
    of each other, small images under min_size) and nobody should learn that from the item count alone."""
    steps = {step.name: step for step in STEPS[modality]}
    warnings = []
    for entry in report:
        removed, given = entry["removed"], entry["items_in"]
        if not removed or removed <= MOST * given:
            continue
        step = steps[entry["step"]]
        keep = f"{step.keep_more.format(**entry['params'])}, or " if step.keep_more else ""
        reason = (f"{step.name} removed {removed} of {given} {NOUNS[modality]} ({removed / given:.0%}). If they "
                  f"should stay, {keep}turn the step off (--step {step.name}.enabled=false; on the Data tab: Cleaning "
                  f"steps → {step.label})")
        warnings.append({"step": step.name, "label": step.label, "removed": removed, "of": given, "reason": reason})
    return warnings

"""Running the cleaning steps in order and writing down what each one did and why."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ValidationError

from studio.data.items import Item
from studio.fields import describe
from studio.data.steps import STEPS, Step, StepContext, StepOutcome

EXAMPLES_PER_STEP = 6
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


def _report_entry(step: Step, enabled: bool, params: BaseModel, outcome: StepOutcome | None,
                  seconds: float, examples_dir: Path, items_in: int) -> dict:
    entry = {"step": step.name, "label": step.label, "enabled": enabled, "params": params.model_dump(),
             "items_in": items_in, "removed": 0, "pairs_removed": 0, "changed": 0, "examples": [],
             "changed_examples": [], "detail": "",
             "seconds": round(seconds, 3)}
    if outcome is None:
        return entry
    pairs = sum(item.is_pair for item, _ in outcome.removed)
    said = f"{pairs} preference pair{'s' if pairs != 1 else ''} removed whole" if pairs else ""
    entry.update(removed=len(outcome.removed), changed=len(outcome.changed), pairs_removed=pairs,
                 detail="; ".join(d for d in (outcome.detail, said) if d))
    entry["examples"] = [_removed_example(item, reason, step.name, examples_dir, n)
                         for n, (item, reason) in enumerate(outcome.removed[:EXAMPLES_PER_STEP])]
    entry["changed_examples"] = [{"source": item.source, "before": before[:300], "after": after[:300]}
                                 for item, before, after in outcome.changed[:3]]
    return entry


def _run_step(step: Step, items: list[Item], params: BaseModel, context: StepContext) -> StepOutcome:
    """``step`` on ``items``, a media pair's rejected file checked and changed the way its chosen file is: a pair
    stays whole or goes whole (text pairs are one item already: their rejected answer is part of the content)."""
    outcome = step.run(items, params, context)
    pairs = [item for item in items if item.rejected_path is not None]
    if not pairs:
        return outcome
    halves = [pair.rejected_half() for pair in pairs]
    owner = {id(half): pair for half, pair in zip(halves, pairs)}
    second = step.run(halves, params, context)
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
                       changed=outcome.changed, detail=outcome.detail)


def run_cleaning(items: list[Item], modality: str, config: dict[str, dict] | None, scratch: Path,
                 examples_dir: Path, progress: Progress | None = None) -> tuple[list[Item], list[dict]]:
    """The items that survive every enabled step, and a report entry per step (disabled ones too)."""
    resolved = resolve_config(modality, config)
    context = StepContext(modality=modality, scratch=scratch)
    report = []
    for number, (step, enabled, params) in enumerate(resolved):
        if progress:
            progress(number / len(resolved), f"{step.label} ({len(items)} items)")
        outcome, started, items_in = None, time.perf_counter(), len(items)
        if enabled and items:
            outcome = _run_step(step, items, params, context)
            items = outcome.kept
        report.append(_report_entry(step, enabled, params, outcome, time.perf_counter() - started, examples_dir,
                                    items_in))
    return items, report


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

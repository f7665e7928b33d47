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
                  seconds: float, examples_dir: Path) -> dict:
    entry = {"step": step.name, "label": step.label, "enabled": enabled, "params": params.model_dump(),
             "removed": 0, "changed": 0, "examples": [], "changed_examples": [], "detail": "",
             "seconds": round(seconds, 3)}
    if outcome is None:
        return entry
    entry.update(removed=len(outcome.removed), changed=len(outcome.changed), detail=outcome.detail)
    entry["examples"] = [_removed_example(item, reason, step.name, examples_dir, n)
                         for n, (item, reason) in enumerate(outcome.removed[:EXAMPLES_PER_STEP])]
    entry["changed_examples"] = [{"source": item.source, "before": before[:300], "after": after[:300]}
                                 for item, before, after in outcome.changed[:3]]
    return entry


def run_cleaning(items: list[Item], modality: str, config: dict[str, dict] | None, scratch: Path,
                 examples_dir: Path, progress: Progress | None = None) -> tuple[list[Item], list[dict]]:
    """The items that survive every enabled step, and a report entry per step (disabled ones too)."""
    resolved = resolve_config(modality, config)
    context = StepContext(modality=modality, scratch=scratch)
    report = []
    for number, (step, enabled, params) in enumerate(resolved):
        if progress:
            progress(number / len(resolved), f"{step.label} ({len(items)} items)")
        outcome, started = None, time.perf_counter()
        if enabled and items:
            outcome = step.run(items, params, context)
            items = outcome.kept
        report.append(_report_entry(step, enabled, params, outcome, time.perf_counter() - started, examples_dir))
    return items, report

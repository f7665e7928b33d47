"""Which models a Generate request compares: ``base``, ``RUN_ID`` (its last checkpoint) or ``RUN_ID:STEP``.

Every variant is resolved to what the model cache needs to load it: a LoRA checkpoint is an adapter on its
run's base model (loaded once and shared), a full or from-scratch checkpoint is a model folder of its own.
All variants must come from one base model: a run whose model is a folder saved by another run is followed
back to that run's model, so a LoRA on a fine-tuned starter and the starter's own run compare fine, while
adapters of two different bases do not. Runs from scratch have no pretrained base: theirs is the untrained start
(the step-0 checkpoint) of the first one given.

No model library is imported here.
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from studio.models.registry import family_for, is_starter, modality_of
from studio.status import RUN_ACTIVE, RunStatus
from studio.store import Store
from studio.store.tables import Run
from studio.training.runs import checkpoint_of_folder, checkpoints, in_project, run_of_folder

MAX_VARIANTS = 5  # the base and up to four trained variants, side by side


class VariantError(ValueError):
    """A variant cannot be used as asked; the message says why and what to do."""


@dataclass
class Variant:
    ref: str                  # canonical: "base" or "RUN_ID:STEP"
    label: str                # for people: "base (tiny-llama)", "run 3 · lora · step 40"
    modality: str
    kind: str                 # base | lora (an adapter on ``base_ref``) | full (the model folder ``weights``)
    base_ref: str | None      # the base model (base), or the model the run was trained from (an adapter's base)
    weights: str | None = None  # the checkpoint's model folder (lora, full)
    run_id: int | None = None
    step: int | None = None
    method: str | None = None  # the run's training method
    config: dict = field(default_factory=dict)  # the run's training config (resolution, clip length, ...)
    from_starter: bool = False  # it descends from a starter (which changes generation defaults)
    note: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "config"}

    @property
    def model_source(self) -> str:
        """What loads this variant: its checkpoint's folder when it is a model of its own, else the base model
        (a LoRA checkpoint's adapter goes on it)."""
        return str(self.base_ref if self.kind in ("base", "lora") else self.weights)

    @functools.cached_property
    def family(self):
        """The model family (``studio.models.registry.Family``) of what loads this variant, picked once."""
        return family_for(self.model_source, self.modality)

    @property
    def slug(self) -> str:
        """A file-name-safe name: ``base`` or ``run3-step40``."""
        return "base" if self.ref == "base" else f"run{self.run_id}-step{self.step}"


def parse_ref(ref: str) -> tuple[int, int | None] | None:
    """``"base"`` → None; ``"3"`` → (3, None); ``"3:40"`` → (3, 40); anything else is an error."""
    text = str(ref).strip()
    if text.lower() == "base":
        return None
    found = re.fullmatch(r"(\d+)(?::(\d+))?", text)
    if not found:
        raise VariantError(f"'{ref}' is not a variant: use base, RUN_ID (its last checkpoint) or RUN_ID:STEP")
    return int(found.group(1)), int(found.group(2)) if found.group(2) else None


def normalise_model_ref(ref: str) -> str:
    """A local folder as its absolute path (so two spellings of one folder compare equal); a Hub id as given."""
    folder = Path(ref).expanduser()
    return str(folder.resolve()) if folder.is_dir() else ref


def origin(store: Store, model_ref: str, seen: frozenset = frozenset()) -> tuple[str, list[int]]:
    """The model a reference ultimately comes from, following folders saved by runs back to those runs'
    models; with the runs passed on the way."""
    run_id = run_of_folder(store, model_ref)
    if run_id is None or run_id in seen:
        return normalise_model_ref(model_ref), []
    with store.session() as session:
        run = session.get(Run, run_id)
    if run is None:
        return normalise_model_ref(model_ref), []
    found, via = origin(store, run.model_ref, seen | {run_id})
    return found, [run_id, *via]


def adapted_model(folder: str, run: Run) -> str:
    """What a checkpoint's weights go on: the run's model, except for a LoRA run that started from a LoRA
    checkpoint, whose adapter adapts what its folder says (its start's base, when it went on with that adapter)."""
    from studio.models.common import ADAPTER_CONFIG, adapter_base

    if run.method != "lora" or not (Path(run.model_ref).expanduser() / ADAPTER_CONFIG).is_file():
        return run.model_ref
    try:
        return adapter_base(Path(folder), run.model_ref) or run.model_ref
    except (OSError, ValueError):
        return run.model_ref


def _describe(model_ref: str, via: list[int]) -> str:
    return f"'{model_ref}'" + (f" (through run {', run '.join(map(str, via))})" if via else "")


def _resolve_run(store: Store, run_id: int, step: int | None) -> tuple[Run, dict, str | None]:
    with store.session() as session:
        run = session.get(Run, run_id)
    if run is None:
        raise VariantError(f"no run {run_id} (see `studio runs list`)")
    saved = [c for c in checkpoints(store, run_id) if Path(c["model_path"]).is_dir()]
    steps = ", ".join(str(c["step"]) for c in saved)
    if step is not None:
        chosen = next((c for c in saved if c["step"] == step), None)
        if chosen is None:
            raise VariantError(f"run {run_id} has no checkpoint at step {step}"
                               + (f"; its checkpoints are at steps {steps}" if saved else "; it has no checkpoint yet"))
        return run, chosen, None
    if not saved:
        if run.status in RUN_ACTIVE:
            raise VariantError(f"run {run_id} is {run.status} and has not saved a checkpoint yet; wait for its first "
                               f"checkpoint (every save_steps steps) or ask it to save now")
        raise VariantError(f"run {run_id} ({run.status}) has no checkpoint to generate with")
    chosen = saved[-1]
    note = None
    if run.status in RUN_ACTIVE:
        note = (f"run {run_id} is still training ({run.status}): using its last checkpoint so far (step "
                f"{chosen['step']}; {run.steps_done} of {run.total_steps} steps done)")
    elif run.status == RunStatus.FAILED:
        note = f"run {run_id} failed: using its last checkpoint (step {chosen['step']})"
    return run, chosen, note


def resolve_variants(store: Store, refs: list[str], base_model: str | None = None,
                     most: int | None = MAX_VARIANTS, one_base: bool = True) -> list[Variant]:
    """Resolves ``base`` / ``RUN_ID`` / ``RUN_ID:STEP`` references (in the order given), checking that they can
    be compared.

    ``base_model`` names the base when no run is given (or states it explicitly); otherwise the base is the
    model the runs were trained from. ``one_base=False`` compares runs of different models (a bake-off of
    architectures, each trained from scratch), which leaves no one base to compare with. Raises ``VariantError``
    with a message for people."""
    refs = [str(r).strip() for r in refs if str(r).strip()]
    if not refs:
        raise VariantError("choose at least one variant: base, RUN_ID or RUN_ID:STEP")
    if most is not None and len(refs) > most:  # side by side; a deployment (most=None) serves any number
        raise VariantError(f"{len(refs)} variants: compare at most {most} (the base and four trained ones)")
    parsed = [parse_ref(r) for r in refs]
    if parsed.count(None) > 1:
        raise VariantError("'base' is given more than once")
    variants: list[Variant] = []
    given: dict[str, str] = {}
    for ref, spec in zip(refs, parsed):
        if spec is None:
            continue
        run, checkpoint, note = _resolve_run(store, *spec)
        variant = Variant(
            ref=f"{run.id}:{checkpoint['step']}", label=f"run {run.id} · {run.method} · step {checkpoint['step']}",
            modality=run.modality, kind="lora" if run.method == "lora" else "full",
            base_ref=normalise_model_ref(adapted_model(checkpoint["model_path"], run)), weights=checkpoint["model_path"],
            run_id=run.id,
            step=checkpoint["step"], method=run.method, config=dict(run.config or {}), note=note,
            from_starter=is_starter(origin(store, run.model_ref)[0]))
        if variant.ref in given:
            raise VariantError(f"'{ref}' and '{given[variant.ref]}' are the same checkpoint ({variant.ref})")
        given[variant.ref] = ref
        variants.append(variant)
    if one_base:
        _check_one_family(store, variants)
    elif None in parsed:
        raise VariantError("'base' has no meaning across different models: give only runs' checkpoints")
    if None in parsed:
        variants.insert(parsed.index(None), _base_variant(store, variants, base_model))
    modalities = {v.modality for v in variants}
    if len(modalities) > 1:
        raise VariantError(f"the variants mix modalities ({', '.join(sorted(modalities))}); compare one at a time")
    return variants


def _check_one_family(store: Store, variants: list[Variant]) -> None:
    first: tuple[Variant, str, list[int]] | None = None
    for variant in variants:
        found, via = origin(store, variant.base_ref)
        if first is None:
            first = (variant, found, via)
        elif found != first[1]:
            other, other_found, other_via = first
            raise VariantError(
                f"variant {variant.ref} was trained from {_describe(found, via)} but {other.ref} from "
                f"{_describe(other_found, other_via)}: variants must share one base model")


def _base_variant(store: Store, variants: list[Variant], base_model: str | None) -> Variant:
    adapted = [v for v in variants if v.method != "scratch"]
    if base_model is not None:
        base_ref = normalise_model_ref(base_model)
        if variants:
            wanted, _ = origin(store, base_ref)
            found, via = origin(store, variants[0].base_ref)
            if wanted != found:
                raise VariantError(f"base model '{base_model}' is not the base of run {variants[0].run_id}, which "
                                   f"was trained from {_describe(found, via)}")
    elif adapted:
        bases = {v.base_ref: v.ref for v in reversed(adapted)}
        if len(bases) > 1:
            listed = "; ".join(f"{ref} from '{base}'" for base, ref in bases.items())
            raise VariantError(f"'base' is ambiguous: the runs start from different models ({listed}). Pick "
                               "variants fine-tuned from the same model, or leave 'base' out")
        base_ref = adapted[0].base_ref
    elif variants:
        return _untrained_start(store, variants)
    else:
        raise VariantError("'base' alone needs a base model: name it (--model NAME_OR_PATH), or add a run")
    if is_starter(base_ref):
        if variants:
            return _untrained_start(store, variants)
        raise VariantError(f"'{base_ref}' is built from scratch: it has no pretrained base to generate with. "
                           "Compare the checkpoints of a run instead")
    modality = variants[0].modality if variants else modality_of(base_ref)
    if modality is None:
        raise VariantError(f"'{base_ref}' is not a model the studio knows (a catalog id or a local model folder)")
    config = next((v.config for v in adapted if v.base_ref == base_ref), {})
    name = Path(base_ref).name if Path(base_ref).is_dir() else base_ref
    return Variant(ref="base", label=f"base ({name})", modality=modality, kind="base", base_ref=base_ref,
                   config=config, from_starter=is_starter(origin(store, base_ref)[0]))


def _untrained_start(store: Store, variants: list[Variant]) -> Variant:
    """The base of runs from scratch: the first one's untrained start, its step-0 checkpoint."""
    scratch = next(v for v in variants if v.method == "scratch")
    start = next((c for c in checkpoints(store, scratch.run_id) if c["step"] == 0), None)
    if start is None or not Path(start["model_path"]).is_dir():
        raise VariantError(f"run {scratch.run_id} was trained from scratch and kept no untrained start (runs made "
                           "before the studio kept one), so it has no base to compare with. Compare its checkpoints "
                           f"instead, e.g. --variant {scratch.run_id}:STEP --variant {scratch.run_id}:ANOTHER_STEP")
    if any(v.step == 0 and v.run_id == scratch.run_id for v in variants):
        raise VariantError(f"'base' is run {scratch.run_id}'s untrained start, {scratch.run_id}:0, which is also "
                           "listed: give it once")
    return Variant(ref="base", label=f"base (run {scratch.run_id} untrained, step 0)", modality=scratch.modality,
                   kind="full", base_ref=scratch.base_ref, weights=start["model_path"], run_id=scratch.run_id, step=0,
                   method="scratch", config=scratch.config, from_starter=scratch.from_starter)


def variant_choices(store: Store, modality: str | None = None, project: str | None = None) -> list[dict]:
    """What can be picked, newest run first: each run's checkpoints as ``{"ref": "RUN_ID:STEP", "label", "run_id",
    "step", "last", "method", "modality", "model", "status", "start"}`` (``last``: its newest checkpoint, what
    ``RUN_ID`` alone means). ``model`` is where the run comes from, so a page can offer only runs of one base;
    ``start``, the checkpoint (``RUN_ID:STEP``) the run started from, if it did. ``project``: only that project's
    runs."""
    from sqlalchemy import select

    query = in_project(select(Run).order_by(Run.id.desc()), project)
    with store.session() as session:
        runs = session.scalars(query.where(Run.modality == modality) if modality else query).all()
    choices = []
    for run in runs:
        saved = [c for c in checkpoints(store, run.id) if Path(c["model_path"]).is_dir()]
        model = origin(store, run.model_ref)[0]
        start = checkpoint_of_folder(store, run.model_ref)
        for checkpoint in reversed(saved):
            choices.append({"ref": f"{run.id}:{checkpoint['step']}", "run_id": run.id, "step": checkpoint["step"],
                            "label": f"run {run.id} · {run.method} · step {checkpoint['step']}"
                                     + (" (last)" if checkpoint is saved[-1] else "")
                                     + (" (untrained)" if checkpoint["step"] == 0 else ""),
                            "last": checkpoint is saved[-1], "method": run.method, "modality": run.modality,
                            "model": model, "status": run.status,
                            "start": f"{start[0]}:{start[1]}" if start else None})
    return choices

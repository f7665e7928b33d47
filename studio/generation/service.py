"""The Generate workspace's services, used by both the UI and the CLI.

``generate_set`` gives every variant (the base model, runs, checkpoints) the same prompts with the same seed
per (prompt, sample) and the same settings, so differences between their outputs come from training alone.
Each sample is stored as soon as it exists (a ``generated_samples`` row; media under
``samples/<set id>/<variant>/``), so a cancelled or failed request keeps what it made. Sample sets are what
the Evaluate tab asks people to rate.

No model library is imported at module import: the model cache and the backends import them when a model
is loaded.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from sqlalchemy import delete, func, select

from studio import placement
from studio.data.items import ImportRefused
from studio.data.prompts import prompt_and_reference
from studio.data.service import get_version, read_manifest
from studio.fields import label
from studio.generation.blocklist import load_blocklist
from studio.generation.cache import LoadError, ModelCache, shared_cache
from studio.generation.options import GenerationSettings, parse_settings
from studio.generation.variants import Variant, VariantError, resolve_variants
from studio.models.common import is_out_of_memory
from studio.models.registry import backend_for
from studio.processes import process_alive
from studio.status import SetStatus
from studio.store import Store, record_action
from studio.store.projects import DEFAULT_PROJECT, ensure_project, project_name, remove_folders
from studio.store.tables import GeneratedSample, Project, PromptSet, RatingAssignment, RatingVote, Run, SampleSet

MAX_SAMPLES_PER_PROMPT = 16
Progress = Callable[[int, int, str], None]  # (samples done, samples in all, what is happening)


class GenerationError(ValueError):
    """A request that cannot be generated as asked; the message says why."""


def _noop(*_args) -> None:
    return None


def _never() -> bool:
    return False


@dataclass
class GenerationHooks:
    """How a caller follows and steers ``generate_set`` (as the training loop's ``Hooks``): ``progress(done, total,
    message)`` hears each step; ``should_cancel()`` is asked before each sample and while text is generated (a
    cancel keeps the samples made so far); ``on_text({"variant", "prompt_index", "sample_index", "text"})``, when
    given, hears text as it is generated; ``on_start(set_id)`` hears the new set's id before the first sample."""
    progress: Progress = _noop
    should_cancel: Callable[[], bool] = _never
    on_text: Callable[[dict], None] | None = None
    on_start: Callable[[int], None] = _noop


def _now() -> datetime:
    return datetime.now(timezone.utc)


# ----------------------------------------------------------------------------- checking a request

def check_prompts(prompts: list[str]) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = [p if isinstance(p, str) else "" for p in prompts or []]
    if not prompts:
        raise GenerationError("give at least one prompt")
    empty = [str(i + 1) for i, p in enumerate(prompts) if not p.strip()]
    if empty:
        raise GenerationError(f"prompt {', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty: "
                              "type some text or remove it")
    return prompts


def choose_seeds(prompts: int, samples: int, seed: int | list[int] | None) -> list[list[int]]:
    """One seed per (prompt, sample index), the same for every variant: ``seed`` (an int: ``seed + k`` for sample
    k of every prompt; a list: one starting seed per prompt) or, when None, drawn at random once (and stored)."""
    if seed is None:
        return [[secrets.randbelow(2**31) for _ in range(samples)] for _ in range(prompts)]
    starts = list(seed) if isinstance(seed, (list, tuple)) else [seed] * prompts
    if len(starts) != prompts:
        raise GenerationError(f"{len(starts)} seeds for {prompts} prompts: give one seed, or one per prompt")
    if any(not isinstance(s, int) or s < 0 or s + samples > 2**32 for s in starts):
        raise GenerationError("seeds are whole numbers from 0 to 4294967295")
    return [[start + k for k in range(samples)] for start in starts]


def check_image_size(variants: list[Variant], options: GenerationSettings) -> None:
    """A width or height that a variant's model cannot make, refused before anything is stored (in the model it
    would fail halfway through the set): SD-class models draw in their VAE's blocks of 8 pixels."""
    if variants[0].modality != "image":
        return
    from studio.models.image import size_multiple  # a backend module: imported when first needed

    for variant in variants:
        multiple = size_multiple(variant.weights if variant.kind == "full" else variant.base_ref)
        for name in ("width", "height"):
            value = getattr(options, name)
            if multiple and value % multiple:
                below = value // multiple * multiple
                nearest = " or ".join(str(size) for size in (below, below + multiple) if size)
                raise GenerationError(f"{label(name, type(options).model_fields[name])}: must be a multiple of "
                                      f"{multiple} for {variant.label}, whose VAE draws in blocks of {multiple} "
                                      f"pixels: {nearest}, or 0 for the training resolution (got {value})")


# ----------------------------------------------------------------------------- generating

def generate_set(store: Store, variants: list[str], prompts: list[str], seed: int | list[int] | None = None,
                 samples_per_prompt: int = 1, settings: GenerationSettings | dict | None = None, *,
                 references: list | None = None, base_model: str | None = None, name: str | None = None,
                 source: str | None = None, cache: ModelCache | None = None, hooks: GenerationHooks | None = None,
                 created_by: str | None = None, project: str | None = None, one_base: bool = True) -> int:
    """Generates ``samples_per_prompt`` samples of every prompt with every variant; returns the sample set's id.

    ``variants``: ``"base"``, ``"RUN_ID"`` (its last checkpoint) or ``"RUN_ID:STEP"``; ``base_model`` names the
    base when no run does. ``references``: per prompt, ``{"text": ...}`` or ``{"path": ...}`` or None (see
    ``prompts_from_test_split``). ``hooks`` follow and may cancel it: a cancel keeps the samples made so far and
    marks the set cancelled. The set belongs to ``project`` (default: the first run variant's project, else the
    default project). ``one_base=False``: runs of different models side by side (a bake-off). Bad input raises
    ``GenerationError``/``VariantError`` before anything is stored; an out-of-memory error stops only its variant,
    and is reported in the set."""
    prompts = check_prompts(prompts)
    if not 1 <= int(samples_per_prompt) <= MAX_SAMPLES_PER_PROMPT:
        raise GenerationError(f"samples per prompt must be 1 to {MAX_SAMPLES_PER_PROMPT}")
    samples_per_prompt = int(samples_per_prompt)
    if references is not None and len(references) != len(prompts):
        raise GenerationError(f"{len(references)} references for {len(prompts)} prompts")
    chosen = resolve_variants(store, variants, base_model, one_base=one_base)
    modality = chosen[0].modality
    values = settings.model_dump() if isinstance(settings, GenerationSettings) else settings
    options = parse_settings(modality, values=values)
    check_image_size(chosen, options)
    blocklist = load_blocklist(store.settings.blocklist)
    refused = [{"prompt_index": i, "prompt": p, "words": blocklist.found(p)} for i, p in enumerate(prompts)
               if blocklist.found(p)]
    if len(refused) == len(prompts):
        raise GenerationError("every prompt contains a blocked word (" + ", ".join(
            sorted({w for r in refused for w in r["words"]})) + "); nothing to generate")
    seeds = choose_seeds(len(prompts), samples_per_prompt, seed)
    base = ", ".join(dict.fromkeys(v.base_ref for v in chosen if v.base_ref))[:500] if not one_base else \
        next((v.base_ref for v in chosen if v.base_ref), "")
    report = {"notes": [v.note for v in chosen if v.note], "errors": [], "refused": refused, "flagged": [],
              "blocklist": bool(blocklist),
              "owner": {"pid": os.getpid(), "host": socket.gethostname()}}  # who generates it: see reap_sets
    with store.session() as session:
        owner = _owning_project(session, project, chosen, created_by)
        row = SampleSet(name=name, modality=modality, base_model=base, variants=[v.as_dict() for v in chosen],
                        prompts=prompts, references=list(references or [None] * len(prompts)),
                        settings=options.model_dump(), seeds=seeds, samples_per_prompt=samples_per_prompt,
                        source=source, status=SetStatus.RUNNING, report=report, created_by=created_by,
                        project_id=owner.id)
        session.add(row)
        session.flush()
        record_action(session, created_by, "samples.generate", f"sample_set:{row.id}", project=owner.name,
                      details={"variants": [v.ref for v in chosen], "prompts": len(prompts), "source": source})
    set_id = row.id
    hooks = hooks or GenerationHooks()
    hooks.on_start(set_id)  # a page can now follow the set's samples as they are stored
    cache = cache if cache is not None else shared_cache(store.settings)
    _claim_gpu(store, set_id, cache)
    try:
        status = _generate(store, set_id, chosen, prompts, seeds, options, blocklist, report, cache, hooks)
    except BaseException as error:
        interrupted = isinstance(error, KeyboardInterrupt)
        _finish(store, set_id, SetStatus.CANCELLED if interrupted else SetStatus.FAILED, report,
                "interrupted" if interrupted else f"{type(error).__name__}: {error}")
        raise
    finally:
        placement.release_claims(store, "generation", set_id)
    _finish(store, set_id, status, report)
    return set_id


def _claim_gpu(store: Store, set_id: int, cache: ModelCache) -> None:
    """Declares the GPU this set generates on (the first visible one) while it runs, so the dispatcher places no new
    run there meanwhile; a run already holding it is shared with, as before."""
    if cache.device_name() == "cuda":
        first = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip()
        placement.claim_device(store, "generation", set_id, first)


def _owning_project(session, project: str | None, variants: list[Variant], actor: str | None) -> Project:
    if project is None:
        run = next((session.get(Run, v.run_id) for v in variants if v.run_id), None)
        if run is not None:
            return session.get(Project, run.project_id)
    return ensure_project(session, project or DEFAULT_PROJECT, actor)


def _generate(store: Store, set_id: int, variants: list[Variant], prompts: list[str], seeds: list[list[int]],
              options: GenerationSettings, blocklist, report: dict, cache: ModelCache,
              hooks: GenerationHooks) -> SetStatus:
    refused = {r["prompt_index"] for r in report["refused"]}
    todo = [(i, k) for i in range(len(prompts)) if i not in refused for k in range(len(seeds[i]))]
    total, done, made = len(todo) * len(variants), 0, 0
    say, cancelled, on_text = hooks.progress, hooks.should_cancel, hooks.on_text
    backend = backend_for(variants[0].modality)
    for number, variant in enumerate(variants):
        if cancelled():
            return SetStatus.CANCELLED
        say(done, total, f"loading {variant.label}")
        folder = store.path(f"samples/{set_id}/{variant.slug}")
        try:
            with cache.lock:
                handle = cache.handle_for(variant)
                for prompt_index, sample_index in todo:
                    if cancelled():
                        return SetStatus.CANCELLED
                    say(done, total, f"{variant.label}: prompt {prompt_index + 1}, sample {sample_index + 1}")
                    seed = seeds[prompt_index][sample_index]
                    runtime = {**options.backend_settings(), "should_stop": cancelled}
                    if on_text is not None:  # what streams is filtered too
                        runtime["on_text"] = lambda _n, text, p=prompt_index, s=sample_index: on_text(
                            {"variant": variant.ref, "prompt_index": p, "sample_index": s,
                             "text": blocklist.mask(text)})
                    [sample] = backend.generate(handle, [prompts[prompt_index]], [seed], runtime, folder)
                    if cancelled() and sample.text is not None:
                        return SetStatus.CANCELLED  # the text was cut short: not a sample of these settings
                    _store_sample(store, set_id, variant, prompt_index, sample_index, sample, folder, blocklist,
                                  report)
                    done, made = done + 1, made + 1
        except Exception as error:  # noqa: BLE001 - a model that fails to load or runs out of memory stops
            # only its variant; anything else is raised
            if is_out_of_memory(error):
                cache.clear()
                message = (f"{variant.label}: out of memory, so it was skipped (the other variants went on). Try "
                           "fewer samples, shorter outputs or a smaller size, or generate when no training run "
                           "holds the GPU.")
            elif isinstance(error, LoadError):
                message = f"{error} It was skipped (the other variants went on)."
            else:  # a failure nobody foresaw ends the set; its report still says what failed
                report["errors"].append({"variant": variant.ref, "label": variant.label,
                                         "message": f"{variant.label}: {type(error).__name__}: {error}"})
                raise
            report["errors"].append({"variant": variant.ref, "label": variant.label, "message": message})
            done = (number + 1) * len(todo)
            _save_report(store, set_id, report)
    say(total, total, "done")
    return SetStatus.FAILED if made == 0 and report["errors"] else SetStatus.COMPLETED


def _store_sample(store: Store, set_id: int, variant: Variant, prompt_index: int, sample_index: int, sample,
                  folder: Path, blocklist, report: dict) -> None:
    relative = None
    if sample.path is not None:
        final = folder / f"p{prompt_index:03d}-s{sample_index:02d}-seed{sample.seed}{Path(sample.path).suffix}"
        Path(sample.path).replace(final)
        relative = str(final.relative_to(store.home))
    text, flags = sample.text, None
    words = blocklist.found(text)
    if words:
        text, flags = blocklist.mask(text), {"blocked": words}
        report["flagged"].append({"variant": variant.ref, "prompt_index": prompt_index, "sample_index": sample_index,
                                  "words": words})
    with store.session() as session:
        session.add(GeneratedSample(set_id=set_id, variant=variant.ref, run_id=variant.run_id,
                                    checkpoint_step=variant.step, prompt_index=prompt_index, prompt=sample.prompt,
                                    sample_index=sample_index, seed=sample.seed, text=text, path=relative,
                                    seconds=float(sample.seconds), flags=flags))
        if words:
            session.get(SampleSet, set_id).report = json.loads(json.dumps(report))


def _save_report(store: Store, set_id: int, report: dict) -> None:
    with store.session() as session:
        session.get(SampleSet, set_id).report = json.loads(json.dumps(report))


def _finish(store: Store, set_id: int, status: SetStatus, report: dict, note: str | None = None) -> None:
    with store.session() as session:
        row = session.get(SampleSet, set_id)
        row.status, row.ended_at, row.report = status, _now(), json.loads(json.dumps(report))
        if note:
            row.note = note


# ----------------------------------------------------------------------------- reading sets back

def _sample_dict(store: Store, sample: GeneratedSample, labels: dict[str, str]) -> dict:
    return {"id": sample.id, "variant": sample.variant, "label": labels.get(sample.variant, sample.variant),
            "run_id": sample.run_id, "checkpoint_step": sample.checkpoint_step, "prompt_index": sample.prompt_index,
            "prompt": sample.prompt, "sample_index": sample.sample_index, "seed": sample.seed, "text": sample.text,
            "path": str(store.path(sample.path)) if sample.path else None, "seconds": sample.seconds,
            "flags": sample.flags}


def get_set(store: Store, set_id: int) -> dict:
    """A sample set with its samples, flat (``samples``) and as a prompt × variant grid (``grid``: per prompt,
    its reference and, per variant ref, the samples in sample-index order)."""
    with store.session() as session:
        row = session.get(SampleSet, int(set_id))
        if row is None:
            raise GenerationError(f"no sample set {set_id} (see `studio samples list`)")
        samples = session.scalars(select(GeneratedSample).where(GeneratedSample.set_id == row.id)
                                  .order_by(GeneratedSample.id)).all()
    labels = {v["ref"]: v["label"] for v in row.variants}
    flat = [_sample_dict(store, s, labels) for s in samples]
    refused = {r["prompt_index"]: r["words"] for r in (row.report or {}).get("refused", [])}
    grid = []
    for index, prompt in enumerate(row.prompts):
        reference = row.references[index] if index < len(row.references or []) else None
        cells = {v["ref"]: sorted([s for s in flat if s["variant"] == v["ref"] and s["prompt_index"] == index],
                                  key=lambda s: s["sample_index"]) for v in row.variants}
        grid.append({"prompt_index": index, "prompt": prompt, "reference": _reference(store, reference),
                     "seeds": row.seeds[index], "refused": refused.get(index), "cells": cells})
    return {"set_id": row.id, "name": row.name, "created_at": row.created_at.isoformat(),
            "ended_at": row.ended_at.isoformat() if row.ended_at else None, "status": row.status,
            "modality": row.modality, "base_model": row.base_model, "variants": row.variants, "prompts": row.prompts,
            "references": [g["reference"] for g in grid],
            "settings": row.settings, "seeds": row.seeds, "samples_per_prompt": row.samples_per_prompt,
            "source": row.source, "report": row.report, "note": row.note, "samples": flat, "grid": grid}


def _reference(store: Store, reference: dict | None) -> dict | None:
    if not reference or not reference.get("path"):
        return reference
    return {**reference, "path": str(store.path(reference["path"]))}


def list_sets(store: Store, project: str | None = None) -> list[dict]:
    """Every sample set (of ``project`` when given), newest first, with its sample count."""
    query = select(SampleSet).order_by(SampleSet.id.desc())
    if project:
        query = query.join(Project, Project.id == SampleSet.project_id).where(Project.name == project)
    with store.session() as session:
        rows = session.scalars(query).all()
        counts = dict(session.execute(select(GeneratedSample.set_id, func.count())
                                      .group_by(GeneratedSample.set_id)).all())
        projects = dict(session.execute(select(Project.id, Project.name)).all())  # one query, not one per set
    return [{"set_id": r.id, "name": r.name, "created_at": r.created_at.isoformat(), "status": r.status,
             "project": projects.get(r.project_id),
             "modality": r.modality, "base_model": r.base_model, "variants": [v["label"] for v in r.variants],
             "prompts": len(r.prompts), "samples": counts.get(r.id, 0), "source": r.source,
             "errors": len((r.report or {}).get("errors", []))} for r in rows]


def purge_set(session, row: SampleSet) -> list[str]:
    """Delete a finished set's rows (ratings, samples, the set); returns its folders, to remove once committed."""
    for table in (RatingVote, RatingAssignment):
        session.execute(delete(table).where(table.set_id == row.id))
    session.execute(delete(GeneratedSample).where(GeneratedSample.set_id == row.id))
    session.delete(row)
    return [f"samples/{row.id}", f"blind/{row.id}"]


def reap_sets(store: Store) -> list[int]:
    """Marks ``interrupted`` the sets still ``running`` whose generating process (the web studio or a `studio
    generate` on this machine) has died — a restart mid-generation — keeping what they made. Without this such a
    set would refuse deletion, and its project's, for good."""
    host = socket.gethostname()
    with store.session() as session:
        running = session.scalars(select(SampleSet).where(SampleSet.status == SetStatus.RUNNING)).all()
    reaped = []
    for row in running:
        owner = (row.report or {}).get("owner") or {}
        if owner.get("host") == host and not process_alive(owner.get("pid")):
            _finish(store, row.id, SetStatus.INTERRUPTED, row.report or {},
                    note="the process generating it stopped (the studio restarted?); the samples it made are kept")
            reaped.append(row.id)
    return reaped


def delete_set(store: Store, set_id: int, actor: str | None = None) -> None:
    """Deletes the set, its samples and files, and the ratings of its samples (export them first to keep them)."""
    reap_sets(store)
    with store.session() as session:
        row = session.get(SampleSet, int(set_id))
        if row is None:
            raise GenerationError(f"no sample set {set_id}")
        if row.status == SetStatus.RUNNING:
            raise GenerationError(f"sample set {set_id} is still being generated: cancel it first")
        record_action(session, actor, "samples.delete", f"sample_set:{row.id}",
                      project=project_name(session, row.project_id), details={"prompts": len(row.prompts)})
        folders = purge_set(session, row)
    remove_folders(store, folders)


# ----------------------------------------------------------------------------- export

def _export_entries(store: Store, set_id: int) -> tuple[dict, list[dict], list[tuple[Path, str]]]:
    """(set.json content, samples.jsonl rows with files relative to the export, files to copy as (source, name))."""
    found = get_set(store, set_id)
    rows, files = [], []
    for sample in found["samples"]:
        row = {k: sample[k] for k in ("variant", "label", "run_id", "checkpoint_step", "prompt_index", "prompt",
                                      "sample_index", "seed", "text", "seconds", "flags")}
        if sample["path"]:
            source = Path(sample["path"])
            name = f"files/{source.parent.name}/{source.name}"
            files.append((source, name))
            row["path"] = name
        rows.append(row)
    meta = {k: v for k, v in found.items() if k not in ("samples", "grid")}
    return meta, rows, files


def export_set_zip(store: Store, set_id: int, out: Path | None = None) -> Path:
    """A zip of the set: ``set.json`` (variants, prompts, references, settings, seeds, report),
    ``samples.jsonl`` (one row per sample, media as ``files/<variant>/<name>``) and the media files."""
    meta, rows, files = _export_entries(store, set_id)
    out = Path(out) if out else store.path(f"exports/sample-set-{int(set_id)}.zip")
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("set.json", json.dumps(meta, indent=1, ensure_ascii=False))
        archive.writestr("samples.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        for source, name in files:
            archive.write(source, name)
    return out


def export_set_folder(store: Store, set_id: int, folder: Path) -> list[dict]:
    """The same as the zip, written into ``folder``; returns the sample rows with their paths in ``folder``."""
    meta, rows, files = _export_entries(store, set_id)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for source, name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / name)
    (folder / "set.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    (folder / "samples.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                          encoding="utf-8")
    return [{**r, "path": str(folder / r["path"])} if r.get("path") else r for r in rows]


# ----------------------------------------------------------------------------- prompts

def read_prompts_file(path: Path) -> list[str]:
    """Prompts from a file: ``.jsonl``/``.json`` (strings, or objects with a ``prompt`` field), anything else one
    prompt per non-empty line."""
    path = Path(path)
    if not path.is_file():
        raise GenerationError(f"no prompts file at '{path}'")
    text = path.read_text(encoding="utf-8", errors="replace")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif suffix == ".json":
            items = json.loads(text)
            items = items.get("prompts", []) if isinstance(items, dict) else items
        else:
            items = [line for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise GenerationError(f"'{path.name}' is not valid JSON: {error}") from error
    prompts = [item.get("prompt") if isinstance(item, dict) else item for item in items]
    prompts = [p for p in prompts if isinstance(p, str) and p.strip()]
    if not prompts:
        raise GenerationError(f"'{path.name}' holds no prompts (one per line, or JSON with a 'prompt' field)")
    return prompts


def prompts_from_test_split(store: Store, dataset_ref: str, n: int = 8) -> list[dict]:
    """The first ``n`` items of a dataset version's held-out test split as ``{"prompt", "reference"}``: a
    prompt/response pair or a conversation gives its prompt and the reference answer; plain text its first
    words and the rest as the reference continuation; images and audio their caption and the file."""
    try:
        version = get_version(store, dataset_ref)
    except ImportRefused as error:
        raise GenerationError(str(error)) from error
    rows = read_manifest(store, version, "test")
    name = f"'{version.dataset.name}' v{version.version}"
    if not rows:
        raise GenerationError(f"dataset {name} has no test items; import it again with a test share "
                              "(e.g. split 0.8,0.1,0.1)")
    folder = store.path(version.path)
    prompts = [p for p in (prompt_and_reference(row, folder) for row in rows) if p][:max(1, int(n))]
    if not prompts:
        raise GenerationError(f"the test items of dataset {name} have no text to prompt with (captions or text)")
    return prompts


def save_prompt_set(store: Store, name: str, prompts: list[str], actor: str | None = None) -> int:
    """Saves (or replaces) a named prompt list."""
    name = (name or "").strip()
    if not name:
        raise GenerationError("a prompt set needs a name")
    prompts = check_prompts(prompts)
    with store.session() as session:
        row = session.scalar(select(PromptSet).where(PromptSet.name == name))
        if row is None:
            row = PromptSet(name=name, prompts=prompts)
            session.add(row)
        else:
            row.prompts = prompts
        session.flush()
        record_action(session, actor, "prompts.save", f"prompt_set:{name}", details={"prompts": len(prompts)})
        return row.id


def list_prompt_sets(store: Store) -> list[dict]:
    with store.session() as session:
        rows = session.scalars(select(PromptSet).order_by(PromptSet.name)).all()
    return [{"id": r.id, "name": r.name, "prompts": r.prompts, "created_at": r.created_at.isoformat()} for r in rows]


def get_prompt_set(store: Store, name: str) -> list[str]:
    with store.session() as session:
        row = session.scalar(select(PromptSet).where(PromptSet.name == name))
    if row is None:
        raise GenerationError(f"no prompt set named '{name}'")
    return list(row.prompts)


def delete_prompt_set(store: Store, name: str, actor: str | None = None) -> None:
    with store.session() as session:
        if not session.execute(delete(PromptSet).where(PromptSet.name == name)).rowcount:
            raise GenerationError(f"no prompt set named '{name}'")
        record_action(session, actor, "prompts.delete", f"prompt_set:{name}")


__all__ = ["GenerationError", "GenerationHooks", "VariantError", "check_prompts", "choose_seeds", "delete_prompt_set", "delete_set",
           "export_set_folder", "export_set_zip", "generate_set", "get_prompt_set", "get_set", "list_prompt_sets",
           "list_sets", "prompts_from_test_split", "read_prompts_file", "resolve_variants", "save_prompt_set"]

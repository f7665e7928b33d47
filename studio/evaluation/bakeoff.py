"""A bake-off: several architectures trained on one dataset version for a time budget each, then compared.

``start`` checks the request and queues one run per architecture (a catalog starter of the dataset's modality, or
one of its options such as flow matching) with the settings the catalog recommends for it, under a time budget
(``max_minutes``). Once every run has ended, ``sample_and_score`` (a background task: ``studio.tasks.bakeoff``
submits it) makes one sample set of all of them — the same held-out prompts and seeds for each, nothing else in
it, so the Evaluate tab can have it rated blind — and measures each run with the automatic metrics
(``evaluation.metrics.run_metrics``: held-out loss, diversity, FID/FAD and CLIP/CLAP score with local encoders)
plus the set's seconds per sample, into one table that says which architecture won on what.

No model library is imported at module import.
"""

from __future__ import annotations

import math
import statistics
from datetime import datetime, timezone

from sqlalchemy import select

from studio.data.items import ImportRefused
from studio.data.prompts import prompt_and_reference
from studio.data.service import get_version, read_manifest
from studio.evaluation.metrics import METRICS, MetricsParams, run_metrics
from studio.generation.service import GenerationHooks, generate_set
from studio.models.catalog import architectures, find_architecture
from studio.status import BAKEOFF_ACTIVE, RUN_ENDED, BakeoffStatus, RunStatus
from studio.store import Store, record_action
from studio.store.projects import check_project_name, project_name
from studio.store.tables import Bakeoff, GeneratedSample, Project, RatingVote, Run
from studio.training.config import TrainConfig, apply_overrides
from studio.training.jobs import RunError, create_run, delete_run, request
from studio.training.runs import checkpoints

MIN_MODELS, MAX_MODELS = 2, 4
PROMPTS = 8  # held-out prompts the set asks every architecture
SAMPLES_PER_PROMPT = 2  # seeds per prompt: a blind pair compares two architectures on one prompt and seed
SEED = 0
# What scoring measures on (Evaluate's metrics with fewer samples: a bake-off scores several runs at once).
METRICS_PARAMS = MetricsParams(max_items=64, prompts=PROMPTS, samples=4)
SAMPLE_SECONDS = ("sample_seconds", "seconds per item", False,
                  "mean seconds to make one sample in the bake-off's set (loading the model not counted)")
# The table's columns that decide a winner, in the order shown: (key, metric names it reads, higher is better?).
# fd and prompt_score are the encoders' (FID/FAD, CLIP/CLAP score): only with local encoder folders.
COLUMNS = (("fd", ("fid", "fad")), ("prompt_score", ("clip_score", "clap_score")), ("diversity", ("diversity",)),
           ("heldout_loss", ("heldout_loss",)), ("sample_seconds", ()))


class BakeoffError(ValueError):
    """A bake-off cannot be started or read as asked; the message says why."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


# ----------------------------------------------------------------------------- starting one

def check_request(store: Store, dataset_ref: str, models: list[str], minutes) -> tuple[object, list]:
    """The dataset version and the architectures asked for, or ``BakeoffError`` naming what is wrong."""
    try:
        minutes = float(minutes)
    except (TypeError, ValueError):
        raise BakeoffError(f"minutes must be a number above 0 (got {minutes!r})") from None
    if not math.isfinite(minutes) or minutes <= 0:
        raise BakeoffError(f"minutes must be above 0: each architecture's time budget (got {minutes:g})")
    try:
        version = get_version(store, str(dataset_ref or "").strip())
    except (ImportRefused, ValueError) as error:
        raise BakeoffError(str(error) or f"no dataset '{dataset_ref}'") from None
    modality = version.dataset.modality
    offered = ", ".join(a.key for a in architectures(modality)) or "none"
    models = [str(m).strip() for m in models or [] if str(m).strip()]
    if not MIN_MODELS <= len(models) <= MAX_MODELS:
        raise BakeoffError(f"a bake-off compares {MIN_MODELS} to {MAX_MODELS} architectures (got {len(models)}); "
                           f"for {modality} data: {offered}")
    twice = sorted({m for m in models if models.count(m) > 1})
    if twice:
        raise BakeoffError(f"{', '.join(twice)} given more than once: name each architecture once")
    chosen = []
    for model in models:
        found = find_architecture(model)
        if found is None:
            raise BakeoffError(f"unknown architecture '{model}': a bake-off trains the catalog's starters; for "
                               f"{modality} data: {offered}")
        if found.entry.modality != modality:
            article = "an" if found.entry.modality[0] in "aeiou" else "a"
            raise BakeoffError(f"{model} is {article} {found.entry.modality} model but dataset "
                               f"'{version.dataset.name}' is {modality}: pick among {offered}")
        chosen.append(found)
    return version, chosen


def run_config(architecture, minutes: float, overrides: list[str]) -> TrainConfig:
    """The catalog's recommended settings for ``architecture``, its option's, the time budget, then ``overrides``."""
    from studio.models.registry import recommended_for

    pairs = [*recommended_for(architecture.entry.id), *architecture.overrides, f"max_minutes={minutes:g}",
             *overrides]
    try:
        return apply_overrides(TrainConfig(), pairs)
    except ValueError as error:
        raise BakeoffError(f"{architecture.key}: {error}") from None


def start(store: Store, dataset_ref: str, models: list[str], minutes, overrides: list[str] | None = None,
          project: str | None = None, created_by: str | None = None) -> int:
    """Queues one run per architecture and the bake-off's row; returns its id. ``overrides``: ``--set`` pairs over
    every run's recommended settings (tests shorten runs with them). Nothing is queued when one run is refused."""
    version, chosen = check_request(store, dataset_ref, models, minutes)
    minutes, overrides = float(minutes), list(overrides or [])
    configs = [run_config(a, minutes, overrides) for a in chosen]
    dataset = f"{version.dataset_id}:{version.version}"
    run_ids: list[int] = []
    try:
        for architecture, config in zip(chosen, configs):
            run_ids.append(create_run(store, dataset, architecture.entry.id, "scratch", config, project=project,
                                      created_by=created_by))
    except (RunError, ValueError) as error:
        _withdraw(store, run_ids, created_by)
        raise BakeoffError(f"{chosen[len(run_ids)].key}: {error}") from None
    with store.session() as session:
        row = Bakeoff(project_id=version.dataset.project_id, dataset=dataset, models=[a.key for a in chosen],
                      minutes=minutes, overrides=overrides, run_ids=run_ids, status=BakeoffStatus.QUEUED,
                      created_by=created_by)
        session.add(row)
        session.flush()
        record_action(session, created_by, "bakeoff.start", f"bakeoff:{row.id}",
                      project=project_name(session, version.dataset.project_id),
                      details={"dataset": dataset, "models": row.models, "minutes": minutes, "runs": run_ids})
        return row.id


def _withdraw(store: Store, run_ids: list[int], actor: str | None) -> None:
    """The runs a refused bake-off had queued already: stopped before they start, and deleted."""
    for run_id in run_ids:
        request(store, run_id, "stop", actor)
        delete_run(store, run_id, actor)


# ----------------------------------------------------------------------------- following one

def runs_of(store: Store, row: Bakeoff) -> list[dict]:
    """The bake-off's (``row``, as ``bakeoff_row`` reads it) runs: model, status, steps done of the planned ones, the
    last error line."""
    with store.session() as session:
        runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(row.run_ids)))}
    found = []
    for model, run_id in zip(row.models, row.run_ids):
        run = runs.get(run_id)
        found.append({"model": model, "run_id": run_id, "status": run.status if run else "deleted",
                      "steps": run.steps_done if run else 0, "total_steps": run.total_steps if run else 0,
                      "error": _last_line(run.error_tail) if run else None,
                      "prediction_type": ((run.config or {}).get("diffusion") or {}).get("prediction_type")
                      if run else None})
    return found


def _last_line(text: str | None) -> str | None:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else None


def training_state(runs: list[dict]) -> BakeoffStatus | None:
    """queued / training while runs train; None once every run has ended (sampling can start)."""
    if all(r["status"] in (*RUN_ENDED, "deleted") for r in runs):
        return None
    started = any(r["status"] != RunStatus.QUEUED for r in runs)
    return BakeoffStatus.TRAINING if started else BakeoffStatus.QUEUED


def bakeoff_row(store: Store, bakeoff_id: int) -> Bakeoff:
    with store.session() as session:
        row = session.get(Bakeoff, int(bakeoff_id))
        if row is None:
            raise BakeoffError(f"no bake-off {bakeoff_id} (see `studio bakeoff list`)")
        session.expunge(row)
    return row


def project_of(store: Store, row: Bakeoff) -> str:
    """The name of the project the bake-off belongs to."""
    with store.session() as session:
        return project_name(session, row.project_id)


def set_state(store: Store, bakeoff_id: int, status: BakeoffStatus, **values) -> None:
    """Moves the bake-off to ``status`` (with ``values``: its task, set, table or error), unless it ended already."""
    ended = {"ended_at": _now()} if status in (BakeoffStatus.DONE, BakeoffStatus.FAILED) else {}
    with store.session() as session:
        row = session.get(Bakeoff, int(bakeoff_id))
        if row is not None and row.status in BAKEOFF_ACTIVE:
            row.status = status
            for key, value in {**values, **ended}.items():
                setattr(row, key, value)


def active_ids(store: Store) -> list[int]:
    with store.session() as session:
        return list(session.scalars(select(Bakeoff.id).where(Bakeoff.status.in_(BAKEOFF_ACTIVE))
                                    .order_by(Bakeoff.id)))


def dataset_name(store: Store, dataset_ref: str) -> str:
    """"shapes v1" for ``DATASET_ID:VERSION`` (the reference itself once the version is gone)."""
    try:
        version = get_version(store, dataset_ref)
    except (ImportRefused, ValueError):
        return dataset_ref
    return f"{version.dataset.name} v{version.version}"


def view(store: Store, bakeoff_id: int) -> dict:
    """What the CLI's JSON and the page show: the request, its state, its runs, the set, the table and winners."""
    row = bakeoff_row(store, bakeoff_id)
    table = row.table or {}
    runs = runs_of(store, row)
    people = preference(store, row.sample_set_id, runs) if row.status == BakeoffStatus.DONE else None
    return {"bakeoff_id": row.id, "project": project_of(store, row), "dataset": row.dataset,
            "dataset_name": dataset_name(store, row.dataset), "models": row.models,
            "minutes": row.minutes, "status": row.status, "runs": runs,
            "sample_set_id": row.sample_set_id, "task_id": row.task_id, "table": table.get("rows", []),
            "winners": table.get("winners", []) + ([people["winner"]] if people and people["winner"] else []),
            "people": people, "notes": table.get("notes", []), "error": row.error,
            "created_at": row.created_at.isoformat(), "ended_at": row.ended_at and row.ended_at.isoformat()}


def preference(store: Store, set_id: int | None, runs: list[dict]) -> dict | None:
    """What people's blind votes on the bake-off's set say so far (Bradley-Terry, ``evaluation.service.leaderboard``):
    each architecture's strength with its 95 % interval, and the winner once one has a strength; None before the
    first vote."""
    from studio.evaluation.service import leaderboard

    if set_id is None:
        return None
    with store.session() as session:
        if session.scalar(select(RatingVote.id).where(RatingVote.set_id == set_id).limit(1)) is None:
            return None
    board = leaderboard(store, set_id, rounds=100)
    model_of = {r["run_id"]: r["model"] for r in runs}
    ranked = [{"model": model_of.get(int(v["variant"].split(":")[0]), v["label"]), "strength": v["strength"],
               "ci_low": v["ci_low"], "ci_high": v["ci_high"], "votes": v["votes"]}
              for v in board["variants"] if v["variant"] != "base"]
    best = ranked[0] if ranked and ranked[0]["strength"] is not None else None
    winner = best and {"metric": "human_preference", "unit": "Bradley-Terry strength", "higher_is_better": True,
                       "direction": "higher is better", "model": best["model"], "value": best["strength"],
                       "about": f"blind pairwise votes ({board['votes']} counted"
                                + ("; preliminary: few votes yet)" if board["preliminary"] else ")"),
                       "others": {r["model"]: r["strength"] for r in ranked[1:] if r["strength"] is not None}}
    return {"votes": board["votes"], "preliminary": board["preliminary"], "architectures": ranked, "winner": winner}


def list_bakeoffs(store: Store, project: str | None = None) -> list[dict]:
    """Every bake-off (of ``project`` when given), newest first, in brief."""
    query = select(Bakeoff).order_by(Bakeoff.id.desc())
    if project:
        query = query.join(Project, Project.id == Bakeoff.project_id).where(
            Project.name == check_project_name(project))
    with store.session() as session:
        rows = session.scalars(query).all()
        found = [{"bakeoff_id": r.id, "dataset": r.dataset, "models": list(r.models), "minutes": r.minutes,
                  "status": r.status, "sample_set_id": r.sample_set_id} for r in rows]
    return [{**b, "dataset_name": dataset_name(store, b["dataset"])} for b in found]


def purge_bakeoffs(session, project_id: int) -> int:
    """Deletes a project's bake-off rows (its runs and set go with the project's); returns how many."""
    rows = session.scalars(select(Bakeoff).where(Bakeoff.project_id == project_id)).all()
    for row in rows:
        session.delete(row)
    return len(rows)


# ----------------------------------------------------------------------------- sampling and scoring

def held_out_prompts(store: Store, dataset_ref: str, how_many: int = PROMPTS) -> tuple[list[str], list, str]:
    """Up to ``how_many`` different prompts of the version's test split with their references, falling back to the
    validation split (as the metrics do); and which split they came from."""
    version = get_version(store, dataset_ref)
    folder = store.path(version.path)
    for split in ("test", "validation"):
        asked: dict[str, object] = {}
        for row in read_manifest(store, version, split):
            found = prompt_and_reference(row, folder)
            if found and found["prompt"].strip() and found["prompt"] not in asked:
                asked[found["prompt"]] = found["reference"]
            if len(asked) == how_many:
                break
        if asked:
            return list(asked), list(asked.values()), split
    raise BakeoffError(f"dataset {dataset_ref} has no test or validation items with a prompt (a caption or text) "
                       "to sample the architectures on")


def _trained(store: Store, run: dict) -> bool:
    """Whether the run saved a checkpoint past its untrained start (a run that failed at once did not)."""
    return any(c["step"] > 0 for c in checkpoints(store, run["run_id"]))


def sample_and_score(store: Store, bakeoff_id: int, progress=None, actor: str | None = None) -> dict:
    """The bake-off's sample set and table (the ``bakeoff`` task's work): every trained run on the same held-out
    prompts and seeds, then each run's metrics. ``progress(fraction, message)`` hears each stage."""
    say = progress or (lambda _fraction, _message: None)
    row = bakeoff_row(store, bakeoff_id)
    runs = runs_of(store, row)
    trained = [r for r in runs if _trained(store, r)]
    if not trained:
        raise BakeoffError("no run of the bake-off trained: " + "; ".join(
            f"{r['model']} (run {r['run_id']}) {r['status']}" + (f": {r['error']}" if r["error"] else "")
            for r in runs))
    prompts, references, split = held_out_prompts(store, row.dataset)
    set_state(store, bakeoff_id, BakeoffStatus.SAMPLING)
    say(0.05, f"sampling {len(trained)} architectures on {len(prompts)} {split} prompts")

    def sampled(done: int, total: int, message: str) -> None:
        say(0.05 + 0.45 * done / max(total, 1), message)

    set_id = generate_set(store, [str(r["run_id"]) for r in trained], prompts, seed=SEED,
                          samples_per_prompt=SAMPLES_PER_PROMPT, references=references, name=f"bake-off {bakeoff_id}",
                          source=f"bakeoff:{bakeoff_id}", created_by=actor, project=project_of(store, row),
                          one_base=False,
                          hooks=GenerationHooks(progress=sampled,
                                                on_start=lambda made: set_state(store, bakeoff_id,
                                                                                BakeoffStatus.SAMPLING,
                                                                                sample_set_id=made)))
    set_state(store, bakeoff_id, BakeoffStatus.SCORING, sample_set_id=set_id)
    seconds = _seconds_per_sample(store, set_id)
    found = {}
    for number, run in enumerate(trained):
        say(0.5 + 0.5 * number / len(trained), f"metrics of {run['model']} (run {run['run_id']})")
        found[run["run_id"]] = run_metrics(store, str(run["run_id"]), METRICS_PARAMS)
    table = build_table(runs, found, seconds, split)
    set_state(store, bakeoff_id, BakeoffStatus.DONE, table=table)
    return {"bakeoff_id": bakeoff_id, "sample_set_id": set_id}


def _seconds_per_sample(store: Store, set_id: int) -> dict[int, float]:
    with store.session() as session:
        rows = session.execute(select(GeneratedSample.run_id, GeneratedSample.seconds)
                               .where(GeneratedSample.set_id == set_id)).all()
    by_run: dict[int, list[float]] = {}
    for run_id, seconds in rows:
        by_run.setdefault(run_id, []).append(float(seconds))
    return {run_id: statistics.mean(values) for run_id, values in by_run.items()}


def _loss_kind(found: dict, run: dict) -> str | None:
    """What a held-out loss measures: losses compare only between runs of one kind (a diffusion model's noise
    prediction error and a flow model's velocity error are different quantities)."""
    loss = (found.get("metrics") or {}).get("heldout_loss") or {}
    if loss.get("value") is None:
        return None
    prediction = run.get("prediction_type")
    return f"{loss.get('kind')}" + (f" ({prediction})" if prediction and loss.get("kind") == "diffusion" else "")


def column_about(key: str) -> tuple[str, bool, str]:
    """(unit, higher is better, what it is) of a table column."""
    if key == "sample_seconds":
        return SAMPLE_SECONDS[1:]
    names = dict(COLUMNS)[key]
    unit, higher, about = METRICS[names[0]]
    return unit, higher, about if len(names) == 1 else f"{about} (audio: {METRICS[names[1]][2]})"


def build_table(runs: list[dict], found: dict[int, dict], seconds: dict[int, float], split: str) -> dict:
    """One row per run (``None`` where a metric was not measured) and, per column, the best run with the
    direction stated."""
    rows = []
    for run in runs:
        result = found.get(run["run_id"])
        metrics = (result or {}).get("metrics") or {}
        row = {"model": run["model"], "run_id": run["run_id"], "run_status": run["status"], "steps": run["steps"],
               "sampled": result is not None}
        for key, names in COLUMNS:
            if key != "sample_seconds":
                row[key] = next((metrics[n]["value"] for n in names if n in metrics), None)
        row["sample_seconds"] = seconds.get(run["run_id"])
        row["heldout_kind"] = _loss_kind(result, run) if result else None
        rows.append(row)
    notes = [f"prompts from the {split} split; every architecture sampled with the same prompts and seeds"]
    return {"rows": rows, "winners": winners(rows, notes), "notes": notes}


def winners(rows: list[dict], notes: list[str]) -> list[dict]:
    """Per column: the best run among those that have a value (at least two needed), with the direction."""
    found = []
    for key, _names in COLUMNS:
        unit, higher, about = column_about(key)
        valued = [r for r in rows if isinstance(r.get(key), (int, float))]
        if key == "heldout_loss" and len({r["heldout_kind"] for r in valued}) > 1:
            notes.append("held-out losses of different kinds (" + ", ".join(sorted({r["heldout_kind"] for r in
                         valued})) + ") measure different things: no winner on held-out loss")
            valued = []
        if len(valued) < 2:
            continue
        best = (max if higher else min)(valued, key=lambda r: r[key])
        found.append({"metric": key, "unit": unit, "higher_is_better": higher, "about": about,
                      "direction": "higher is better" if higher else "lower is better", "model": best["model"],
                      "run_id": best["run_id"], "value": best[key],
                      "others": {r["model"]: r[key] for r in valued if r is not best}})
    return found


def winners_in_words(winners_found: list[dict], names: dict[str, str] | None = None) -> list[str]:
    """"starter-image-gan won on sample_seconds (lower is better): 0.0021 against starter-image 0.12" (a metric named
    as ``names`` says, else by its key)."""
    names = names or {}
    return [f"{w['model']} won on {names.get(w['metric'], w['metric'])} ({w['direction']}): {w['value']:.4g} against "
            + ", ".join(f"{model} {value:.4g}" for model, value in w["others"].items())
            for w in winners_found]


__all__ = ["BakeoffError", "MAX_MODELS", "MIN_MODELS", "active_ids", "bakeoff_row", "build_table", "check_request",
           "list_bakeoffs", "project_of", "purge_bakeoffs", "runs_of", "sample_and_score", "set_state", "start",
           "training_state", "view", "winners", "winners_in_words"]

"""Reading runs back: summaries for the CLI and the Train tab, and metrics read incrementally."""

from __future__ import annotations

from pathlib import Path
from typing import NotRequired, TypedDict

from sqlalchemy import func, select

from studio.models.registry import objective_trained
from studio.status import RunStatus
from studio.store import Store
from studio.store.projects import project_name
from studio.store.tables import Checkpoint, Dataset, DatasetVersion, Metric, Project, Run, RunSample


class LossSummary(TypedDict):
    last: float | None
    best: float | None


class EarlyStop(TypedDict):
    step: int
    reason: str  # in people's words, as the log says it


class Placement(TypedDict):
    """Where a run runs, or what a queued one waits for (``studio.placement``, ``training.launchers``)."""
    devices: list[str]  # the GPU ids it holds (["cpu"]: the CPU slot; [] with a cluster that places it, or queued)
    launcher: str | None  # local | ray
    job_id: str | None  # its Ray job
    host: str | None  # the machine that started it ("ray:ADDRESS" for a Ray job)
    wait_reason: str | None  # a queued run: what it waits for


def placement_of(run: Run) -> Placement:
    devices = [d for d in (run.devices or "").split(",") if d and d != run.launcher]
    return Placement(devices=devices, launcher=run.launcher, job_id=run.job_id, host=run.host,
                     wait_reason=run.wait_reason)


def where_text(summary: "RunSummary") -> str:
    """The Train tab's "where / waits for" cell."""
    found = summary["placement"]
    if summary["status"] == RunStatus.QUEUED or found["wait_reason"]:
        return found["wait_reason"] or "queued"
    if not found["launcher"]:
        return ""
    where = ("GPU " if found["devices"] != ["cpu"] else "") + ",".join(found["devices"])
    return f"Ray job {found['job_id']}" if found["launcher"] == "ray" else where


def method_text(summary: "RunSummary") -> str:
    """The run's method, and its objective where that is not SFT ("scratch · adversarial"): how run lists say it."""
    objective = summary.get("objective") or "sft"
    return summary["method"] + ("" if objective == "sft" else f" · {objective}")


class RunSummary(TypedDict):
    """A run as `studio train --json`, `studio runs show` and `runs list` print it and the pages read it."""
    run_id: int
    status: str  # a RunStatus's word
    steps: int  # done so far
    total_steps: int
    model: str
    method: str
    objective: str  # what it trains with (training/objectives.py): sft | dpo | orpo | kto, or a family's own step for
    #                 sft (adversarial: a GAN), as registry.objective_trained says
    modality: str
    dataset: str  # DATASET_ID:VERSION
    dataset_name: str
    train_loss: LossSummary
    val_loss: LossSummary
    checkpoints: list[str]  # their folders, oldest first
    error: str | None  # why it failed, with its log's last lines
    stopped_early: EarlyStop | None
    created_at: str  # ISO 8601
    created_by: str | None
    project: str
    output_dir: str
    placement: Placement
    adapter_path: NotRequired[str]  # a LoRA run with a checkpoint: its last adapter
    config: NotRequired[dict]  # with_history: the TrainConfig as saved
    history: NotRequired[list[dict]]  # with_history: every metric, {"step", "name", "value"}
    samples: NotRequired[list[dict]]  # with_history: the samples made during training


def _loss_summary(values: list[float]) -> LossSummary:
    return {"last": values[-1] if values else None, "best": min(values) if values else None}


def stopped_early(history: list[dict], status: str, steps_done: int) -> EarlyStop | None:
    """``{"step", "reason"}`` when early stopping or the time budget (``max_minutes``) ended the run (its last
    attempt), else None."""
    from studio.training.loop import budget_reason, early_stop_reason

    event = next((h for h in reversed(history) if h["name"] in ("early_stopped", "time_budget_stopped")), None)
    if event is None or status != RunStatus.COMPLETED or event["step"] != steps_done:
        return None
    if event["name"] == "time_budget_stopped":
        return {"step": event["step"], "reason": budget_reason(event["value"])}
    validation = [h for h in history if h["name"] == "val_loss" and h["step"] <= event["step"]]
    best = min(validation, key=lambda h: h["value"], default=None)
    reason = early_stop_reason(int(event["value"]), best and best["value"], best and best["step"])
    return {"step": event["step"], "reason": reason}


def early_stop_note(summary: RunSummary) -> str:
    """``stopped early at step N because ...`` for a run that early stopping ended, else ""."""
    early = summary.get("stopped_early")
    return f"stopped early at step {early['step']} because {early['reason']}" if early else ""


def metric_rows(store: Store, run_id: int, after_id: int = 0) -> tuple[list[dict], int]:
    """Metrics written since ``after_id`` (so a page polling every 2 s reads only what is new)."""
    with store.session() as session:
        rows = session.scalars(select(Metric).where(Metric.run_id == run_id, Metric.id > after_id)
                               .order_by(Metric.id)).all()
    last = rows[-1].id if rows else after_id
    return [{"step": m.step, "name": m.name, "value": m.value} for m in rows], last


def metric_count(store: Store, run_id: int, up_to_id: int) -> int:
    """How many of the run's metrics have an id up to ``up_to_id``: fewer than a reader holds means some were
    dropped since (a resume forgets what the abandoned attempt recorded after its checkpoint)."""
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(Metric)
                              .where(Metric.run_id == run_id, Metric.id <= up_to_id))


# what a summary reads row by row: one per evaluation at most
SUMMARY_METRICS = ("val_loss", "early_stopped", "time_budget_stopped")


def _summary_rows(store: Store, run_id: int) -> list[dict]:
    """The rows a summary needs (validation losses, early stopping), not the whole history: the Train tab lists
    every run's summary every 2 s, and a long run has a row per metric per step."""
    with store.session() as session:
        rows = session.execute(select(Metric.step, Metric.name, Metric.value)
                               .where(Metric.run_id == run_id, Metric.name.in_(SUMMARY_METRICS))
                               .order_by(Metric.id)).all()
    return [{"step": step, "name": name, "value": value} for step, name, value in rows]


def _train_loss(store: Store, run_id: int, history: list[dict]) -> LossSummary:
    """The last and lowest training loss: from ``history`` when it is the whole history, else two small queries."""
    if any(h["name"] == "train_loss" for h in history):
        return _loss_summary([h["value"] for h in history if h["name"] == "train_loss"])
    losses = (Metric.run_id == run_id, Metric.name == "train_loss")
    with store.session() as session:
        last = session.scalar(select(Metric.value).where(*losses).order_by(Metric.id.desc()).limit(1))
        best = session.scalar(select(func.min(Metric.value)).where(*losses))
    return {"last": last, "best": best}


class RunProgress(TypedDict):
    """What changed in a run since a reader last looked (``run_progress``): its state now, the metrics written
    after ``after_metric`` and the complete log lines after ``log_offset``, with the marks to pass next time."""
    status: str
    steps: int
    total_steps: int
    metrics: list[dict]  # {"step", "name", "value"}, oldest first
    last_metric: int  # the id of the last metric read: the next call's ``after_metric``
    log_lines: list[str]
    log_offset: int  # the byte where the next call's log reading starts


LOG_READ_MOST = 1024 * 1024  # one call reads at most this much of the log; the rest comes with the next


def log_path(store: Store, run_id: int) -> Path:
    """The run's worker log (``runs/<id>/train.log``): what the worker and the libraries it runs wrote."""
    return store.path(f"runs/{int(run_id)}/train.log")


def new_log_lines(path: Path, offset: int) -> tuple[list[str], int]:
    """The complete lines of ``path`` after byte ``offset`` and the offset after them; a line still being written
    waits for the next call. A log shorter than ``offset`` (a new one) is read from its start."""
    try:
        with open(path, "rb") as log:
            size = log.seek(0, 2)
            offset = 0 if size < offset else offset
            log.seek(offset)
            chunk = log.read(min(size - offset, LOG_READ_MOST))
    except FileNotFoundError:  # the worker has not started yet
        return [], offset
    end = chunk.rfind(b"\n") + 1
    if end == 0 and len(chunk) == LOG_READ_MOST:  # one line longer than a whole read: take it as it is
        end = len(chunk)
    return chunk[:end].decode(errors="replace").splitlines(), offset + end


def progress_marks(store: Store, run_id: int) -> tuple[int, int]:
    """``(after_metric, log_offset)`` for a ``run_progress`` that shows only what comes from now on: the run's last
    metric id and its log's size (0, 0 for a run that has not started)."""
    with store.session() as session:
        last = session.scalar(select(func.max(Metric.id)).where(Metric.run_id == run_id)) or 0
    path = log_path(store, run_id)
    return last, path.stat().st_size if path.is_file() else 0


def run_progress(store: Store, run_id: int, after_metric: int = 0, log_offset: int = 0) -> RunProgress:
    """A run followed incrementally (``studio train``): its row, and only the metrics and log lines that are new
    since the marks a previous call returned."""
    with store.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise ValueError(f"no run {run_id} (see `studio runs list`)")
        status, steps, total = run.status, run.steps_done, run.total_steps
    metrics, last_metric = metric_rows(store, run_id, after_metric)
    lines, log_offset = new_log_lines(log_path(store, run_id), log_offset)
    return RunProgress(status=status, steps=steps, total_steps=total, metrics=metrics, last_metric=last_metric,
                       log_lines=lines, log_offset=log_offset)


def checkpoints(store: Store, run_id: int) -> list[dict]:
    with store.session() as session:
        found = session.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(Checkpoint.step)).all()
    return [{"step": c.step, "path": str(store.path(c.path)), "model_path": str(store.path(c.path) / "model"),
             "is_adapter": c.is_adapter, "val_loss": c.val_loss} for c in found if store.path(c.path).exists()]


def samples(store: Store, run_id: int) -> list[dict]:
    with store.session() as session:
        found = session.scalars(select(RunSample).where(RunSample.run_id == run_id).order_by(RunSample.id)).all()
    return [{"step": s.step, "prompt": s.prompt, "seed": s.seed, "text": s.text,
             "path": str(store.path(s.path)) if s.path else None} for s in found]


def run_summary(store: Store, run_id: int, with_history: bool = False) -> RunSummary:
    """The run's ``RunSummary``: with its config, metrics and samples when ``with_history``."""
    with store.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise ValueError(f"no run {run_id} (see `studio runs list`)")
        version = session.get(DatasetVersion, run.dataset_version_id)
        dataset = session.get(Dataset, version.dataset_id)
        project = project_name(session, run.project_id)
    history = metric_rows(store, run_id)[0] if with_history else _summary_rows(store, run_id)
    val = [h["value"] for h in history if h["name"] == "val_loss"]
    saved = checkpoints(store, run_id)
    summary = RunSummary(run_id=run.id, status=run.status, steps=run.steps_done, total_steps=run.total_steps,
                         model=run.model_ref, method=run.method,
                         objective=objective_trained(run.model_ref, (run.config or {}).get("objective")),
                         modality=run.modality,
                         dataset=f"{dataset.id}:{version.version}", dataset_name=dataset.name,
                         train_loss=_train_loss(store, run_id, history), val_loss=_loss_summary(val),
                         checkpoints=[c["path"] for c in saved], error=run.error_tail,
                         stopped_early=stopped_early(history, run.status, run.steps_done),
                         created_at=run.created_at.isoformat(), created_by=run.created_by, project=project,
                         output_dir=str(store.path(run.output_dir)), placement=placement_of(run))
    if run.method == "lora" and saved:
        summary["adapter_path"] = saved[-1]["model_path"]
    if with_history:
        summary["config"] = run.config
        summary["history"] = history
        summary["samples"] = samples(store, run_id)
    return summary


def in_project(query, project: str | None):
    """``query`` over runs narrowed to ``project``'s runs when one is given."""
    return query.join(Project, Project.id == Run.project_id).where(Project.name == project) if project else query


def run_of_folder(store: Store, model_ref: str) -> int | None:
    """The run that saved ``model_ref``, when it is a folder under ``STUDIO_HOME/runs/<id>/``."""
    try:
        relative = Path(model_ref).expanduser().resolve().relative_to(store.path("runs").resolve())
    except ValueError:
        return None
    first = relative.parts[0] if relative.parts else ""
    return int(first) if first.isdigit() else None


def checkpoint_of_folder(store: Store, model_ref: str) -> tuple[int, int] | None:
    """The run and step whose checkpoint ``model_ref`` is (``runs/<id>/checkpoints/step-N/model`` under
    STUDIO_HOME): where a run that started from a checkpoint started."""
    try:
        parts = Path(model_ref).expanduser().resolve().relative_to(store.path("runs").resolve()).parts
    except ValueError:
        return None
    if len(parts) == 4 and parts[0].isdigit() and parts[1] == "checkpoints" and parts[2].startswith("step-") \
            and parts[2][5:].isdigit() and parts[3] == "model":
        return int(parts[0]), int(parts[2][5:])
    return None


def run_ids(store: Store, project: str | None = None) -> list[int]:
    """Every run's id (of ``project`` when given), newest first."""
    query = in_project(select(Run.id).order_by(Run.id.desc()), project)
    with store.session() as session:
        return list(session.scalars(query).all())


def list_runs(store: Store, project: str | None = None) -> list[RunSummary]:
    ids = run_ids(store, project)
    return [run_summary(store, run_id) for run_id in ids]


def _has_settings(config: dict, pairs: tuple[str, ...]) -> bool:
    """Whether a run's saved config holds each ``KEY=VALUE`` of ``pairs`` (flat ``--set`` keys)."""
    import yaml

    from studio.training.config import flat_keys

    keys = flat_keys()
    for pair in pairs:
        key, _, raw = pair.partition("=")
        section = keys.get(key.strip())
        saved = (config.get(section) or {}) if section else config
        if saved.get(key.strip()) != yaml.safe_load(raw):
            return False
    return True


def training_speed(store: Store, model_ref: str, having: tuple[str, ...] = (),
                   lacking: tuple[tuple[str, ...], ...] = (),
                   look_at: int = 20) -> dict | None:
    """How fast this studio trained ``model_ref`` here: the newest completed run of it whose config has the settings
    ``having`` and none of the groups ``lacking`` (flow matching is another architecture of the same starter), as
    ``{"run_id", "items_per_second"}`` (the median over its logged steps; training only); None when none did."""
    import statistics

    with store.session() as session:
        runs = session.scalars(select(Run).where(Run.model_ref == model_ref, Run.status == RunStatus.COMPLETED,
                                                 Run.steps_done > 0).order_by(Run.id.desc()).limit(look_at)).all()
        for run in runs:
            config = run.config or {}
            if not _has_settings(config, having) or any(_has_settings(config, group) for group in lacking):
                continue
            speeds = session.scalars(select(Metric.value).where(Metric.run_id == run.id,
                                                                Metric.name == "items_per_second")).all()
            if speeds:
                return {"run_id": run.id, "items_per_second": statistics.median(speeds)}
    return None

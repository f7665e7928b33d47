"""The studio's records. Files live under STUDIO_HOME; rows point at them with relative paths.

Every change to these tables comes with an Alembic migration in ``migrations/versions`` so an
upgrade keeps existing data (``tests/test_store.py`` checks the two never drift apart).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from studio.status import BakeoffStatus, DeployStatus, RunStatus, SetStatus, TaskStatus


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime | None) -> datetime | None:
    """A time read back from a row, made aware: SQLite gives back naive UTC times, PostgreSQL aware ones."""
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Upload(Base):
    """The raw files a person gave us, kept as they came so a dataset can be cleaned again."""
    __tablename__ = "uploads"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    path: Mapped[str] = mapped_column(String(500))
    files: Mapped[list] = mapped_column(JSON, default=list)
    refused: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(200))
    modality: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    versions: Mapped[list["DatasetVersion"]] = relationship(
        back_populates="dataset", order_by="DatasetVersion.version")


class DatasetVersion(Base):
    """An immutable, cleaned and split dataset. Its folder is never written again once created."""
    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    version: Mapped[int] = mapped_column(Integer)
    upload_id: Mapped[int | None] = mapped_column(ForeignKey("uploads.id"), nullable=True)
    source: Mapped[dict] = mapped_column(JSON, default=dict)
    steps: Mapped[list] = mapped_column(JSON, default=list)
    report: Mapped[dict] = mapped_column(JSON, default=dict)
    splits: Mapped[dict] = mapped_column(JSON, default=dict)
    path: Mapped[str] = mapped_column(String(500))
    items_in: Mapped[int] = mapped_column(Integer, default=0)
    items_kept: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    dataset: Mapped[Dataset] = relationship(back_populates="versions")


class Run(Base):
    """A training run. The row is the control plane between the UI/CLI and the detached worker."""
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"))
    model_ref: Mapped[str] = mapped_column(String(500))
    method: Mapped[str] = mapped_column(String(16))
    modality: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.QUEUED, index=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error_tail: Mapped[str | None] = mapped_column(Text, nullable=True)
    output_dir: Mapped[str] = mapped_column(String(500), default="")
    resume_from: Mapped[str | None] = mapped_column(String(500), nullable=True)
    steps_done: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    best_val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Placement (studio/placement.py): the devices it holds ("0,1"; "cpu"; "ray"), which launcher started it, its
    # job there (a Ray job id), the machine the dispatcher started it from, what a queued run waits for, and when it
    # joined the queue (created, or resumed): the queue's order.
    devices: Mapped[str | None] = mapped_column(String(200), nullable=True)
    launcher: Mapped[str | None] = mapped_column(String(16), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    host: Mapped[str | None] = mapped_column(String(200), nullable=True)
    wait_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, default=utcnow)


class Metric(Base):
    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(500))
    is_adapter: Mapped[bool] = mapped_column(Boolean, default=False)
    val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ControlFlag(Base):
    """A request to a running worker (stop / save / sample), written by the UI or CLI, handled once."""
    __tablename__ = "control_flags"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    handled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RunSample(Base):
    """Outputs for the run's sample prompts during training, so quality can be seen, not only loss."""
    __tablename__ = "run_samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(Integer)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    path: Mapped[str | None] = mapped_column(String(500), nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeviceClaim(Base):
    """One device of the pool (a GPU id, or "cpu") held by a run, a deployment or a generation: inserting the rows is
    the claim, so two dispatchers never give one device to two holders (the primary key refuses the second)."""
    __tablename__ = "device_claims"
    device: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(16))       # run | deployment | generation
    holder_id: Mapped[int] = mapped_column(Integer, index=True)
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SampleSet(Base):
    """One Generate request: the same prompts, seeds and settings given to each variant (base, runs,
    checkpoints), so differences come from training alone. The Evaluate tab rates its samples."""
    __tablename__ = "sample_sets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Nullable only because SQLite cannot add a NOT NULL foreign key to a table with rows (migration 0005
    # backfills every row, and the services always set it).
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    modality: Mapped[str] = mapped_column(String(16))
    base_model: Mapped[str] = mapped_column(String(500))
    variants: Mapped[list] = mapped_column(JSON, default=list)     # resolved variants (ref, label, run, step, note)
    prompts: Mapped[list] = mapped_column(JSON, default=list)
    references: Mapped[list] = mapped_column(JSON, default=list)   # per prompt: {"text"} | {"path"} | null
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    seeds: Mapped[list] = mapped_column(JSON, default=list)        # per prompt, one seed per sample index
    samples_per_prompt: Mapped[int] = mapped_column(Integer, default=1)
    source: Mapped[str | None] = mapped_column(String(200), nullable=True)  # e.g. the dataset of test prompts
    status: Mapped[str] = mapped_column(String(16), default=SetStatus.RUNNING, index=True)
    report: Mapped[dict] = mapped_column(JSON, default=dict)       # notes, per-variant errors, refused prompts
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class GeneratedSample(Base):
    """One output of one variant for one prompt and seed; media files live under ``samples/<set id>/``."""
    __tablename__ = "generated_samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("sample_sets.id"), index=True)
    variant: Mapped[str] = mapped_column(String(64))               # base | RUN_ID:STEP
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    checkpoint_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    prompt_index: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    sample_index: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    path: Mapped[str | None] = mapped_column(String(500), nullable=True)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    flags: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # e.g. {"blocked": ["word"]}
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PromptSet(Base):
    """A named list of prompts people reuse in the Generate tab."""
    __tablename__ = "prompt_sets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    prompts: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Lexicon(Base):
    """A project's own copy of a word list of the representation report (``studio.data.lexicons``), as text; without
    one the shipped list (``assets/lexicons``) applies (migration 0012)."""
    __tablename__ = "lexicons"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(40))                   # gender, occupations, a category of one's own
    text: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class Bakeoff(Base):
    """Several architectures trained on one dataset version for a time budget each, then sampled on its held-out
    prompts into one sample set and scored side by side (``studio.evaluation.bakeoff``, migration 0013). The
    dispatcher moves it on: runs ended → a ``bakeoff`` task samples and scores → ``table``."""
    __tablename__ = "bakeoffs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    dataset: Mapped[str] = mapped_column(String(64))                  # "DATASET_ID:VERSION"
    models: Mapped[list] = mapped_column(JSON)                        # catalog ids, in the order given
    minutes: Mapped[float] = mapped_column(Float)                     # each run's time budget (max_minutes)
    overrides: Mapped[list] = mapped_column(JSON, default=list)       # --set pairs over every run's recommended ones
    run_ids: Mapped[list] = mapped_column(JSON, default=list)         # one per model, in the same order
    task_id: Mapped[int | None] = mapped_column(Integer, nullable=True)        # the task that samples and scores
    sample_set_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=BakeoffStatus.QUEUED, index=True)
    table: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # rows, winners, notes
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RatingAssignment(Base):
    """One item shown to one rater for blind rating: two samples of the same prompt and seed (``pairwise``, left
    shown as "A") or one sample (``absolute``). The unique key shows a rater an item once, plus at most one
    repeat (``repeat`` 1, sides swapped) that measures the rater's self-consistency."""
    __tablename__ = "rating_assignments"
    __table_args__ = (UniqueConstraint("set_id", "mode", "rater", "item_key", "repeat"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("sample_sets.id"), index=True)
    mode: Mapped[str] = mapped_column(String(16))                  # pairwise | absolute
    rater: Mapped[str] = mapped_column(String(200))
    session: Mapped[str | None] = mapped_column(String(200), nullable=True)
    item_key: Mapped[str] = mapped_column(String(64))              # "12-15" (sample ids, smaller first) | "12"
    prompt_index: Mapped[int] = mapped_column(Integer)
    sample_index: Mapped[int] = mapped_column(Integer)
    left_sample_id: Mapped[int] = mapped_column(ForeignKey("generated_samples.id"))
    right_sample_id: Mapped[int | None] = mapped_column(ForeignKey("generated_samples.id"), nullable=True)
    repeat: Mapped[int] = mapped_column(Integer, default=0)
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    shown_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)  # the latest showing


class RatingVote(Base):
    """A rater's decision on one assignment (one vote per assignment: a double click finds the first). ``details``
    keeps what was shown, with each side's variant, seed and the set's settings, so an export stands alone."""
    __tablename__ = "rating_votes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("rating_assignments.id"), unique=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("sample_sets.id"), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    rater: Mapped[str] = mapped_column(String(200))
    session: Mapped[str | None] = mapped_column(String(200), nullable=True)
    choice: Mapped[str] = mapped_column(String(16))                # a | b | tie | both_bad | skip | score
    score: Mapped[int | None] = mapped_column(Integer, nullable=True)
    winner_sample_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    shown_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decision_seconds: Mapped[float] = mapped_column(Float)
    played: Mapped[dict | None] = mapped_column(JSON, nullable=True)   # seconds each side was played (client)
    flags: Mapped[dict | None] = mapped_column(JSON, nullable=True)    # e.g. {"fast": "decided in 0.4 s ..."}
    repeat: Mapped[int] = mapped_column(Integer, default=0)
    details: Mapped[dict] = mapped_column(JSON, default=dict)


class Action(Base):
    """The audit trail: who did what, when, to what (``dataset.import`` on ``dataset:3``). The project is kept
    by name, not by key, so the record of a deleted project (and of its deletion) stays readable."""
    __tablename__ = "actions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)   # None: sign-in was off
    action: Mapped[str] = mapped_column(String(64))                         # e.g. run.create, project.delete
    target: Mapped[str] = mapped_column(String(200))                        # e.g. run:12, sample_set:4
    project: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    details: Mapped[dict] = mapped_column(JSON, default=dict)


class Task(Base):
    """Work that runs in a background worker process rather than in the web process (migration 0008): a dataset
    import or re-clean, an export, automatic metrics. The row is the control plane, as a run's is: the worker writes
    its progress and result here, and reads ``cancel_requested``."""
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))                        # import | reclean | export | metrics
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    project: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)  # by name, as actions
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.QUEUED, index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)          # 0 … 1
    message: Mapped[str | None] = mapped_column(Text, nullable=True)     # what it is doing now
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    host: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the machine its pid is on (0010)
    launcher: Mapped[str | None] = mapped_column(String(16), nullable=True)  # local | ray (0011)
    job_id: Mapped[str | None] = mapped_column(String(200), nullable=True)  # its Ray job (0011)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class IdWatermark(Base):
    """The highest id ever given in a table (migration 0006): SQLite gives a deleted newest row's id to the next
    row, and a new run #5 would meet the old run #5's cached model and loss history, blind copies or activity."""
    __tablename__ = "id_watermarks"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer)


def _never_reuse_ids(mapper, connection, target) -> None:
    """Before a new row of a watermarked table is inserted on SQLite: the next id above any ever given."""
    from sqlalchemy import func, select
    from sqlalchemy.dialects.sqlite import insert

    if target.id is not None or connection.dialect.name != "sqlite":
        return
    name, table = mapper.local_table.name, mapper.local_table
    highest = connection.execute(select(func.max(table.c.id))).scalar() or 0
    mark = connection.execute(select(IdWatermark.last_id).where(IdWatermark.name == name)).scalar() or 0
    target.id = max(highest, mark) + 1
    connection.execute(insert(IdWatermark).values(name=name, last_id=target.id)
                       .on_conflict_do_update(index_elements=["name"], set_={"last_id": target.id}))


for _model in (Run, SampleSet, Dataset):
    event.listen(_model, "before_insert", _never_reuse_ids)


class EndedSession(Base):
    """A sign-in ended before its time (signing out; migration 0007): its cookie is refused from then on, by every
    web process and after restarts. Kept only ``until`` the session would have expired anyway (epoch seconds)."""
    __tablename__ = "ended_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    until: Mapped[float] = mapped_column(Float, index=True)


class Deployment(Base):
    """A serving process (migration 0009): one base model and any number of its family's checkpoints, each under a
    name, behind an OpenAI-compatible API. The row is the control plane, as a run's is: the studio starts the
    process, the process writes its url and status, and a studio restart brings back the ones that were active."""
    __tablename__ = "deployments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    project: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)  # by name, as actions
    models: Mapped[list] = mapped_column(JSON, default=list)       # [{"name": served name, "ref": "RUN[:STEP]"|base}]
    quantize: Mapped[str] = mapped_column(String(16), default="none")  # none | int8 | nf4
    host: Mapped[str] = mapped_column(String(200), default="127.0.0.1")
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)    # asked for; None: a free one
    url: Mapped[str | None] = mapped_column(String(300), nullable=True)  # where it answers, once it does
    settings: Mapped[dict] = mapped_column(JSON, default=dict)     # batching window, cache size, limits, retention
    report: Mapped[dict] = mapped_column(JSON, default=dict)       # weight bytes before/after, quality check
    status: Mapped[str] = mapped_column(String(16), default=DeployStatus.STARTING, index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # a failed one's reason and log tail
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ApiKey(Base):
    """A Bearer token for the deployments' API, made by an editor (migration 0009). Only its SHA-256 is kept: the
    key itself is shown once. A revoked key stays listed (who had it) but opens nothing."""
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))                # the key's first characters, to recognise it
    rate_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: the deployment's default
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ServedRequest(Base):
    """One request a deployment answered, its response and what a user said of it (migration 0009): the source of
    the quality panel and of the datasets made from feedback. Kept for the deployment's retention period."""
    __tablename__ = "served_requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    response_id: Mapped[str] = mapped_column(String(64), unique=True)  # the id the API returned (chatcmpl-..., ...)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(200))                 # the served name asked for
    route: Mapped[str] = mapped_column(String(64))                  # /v1/chat/completions, ...
    key_name: Mapped[str | None] = mapped_column(String(200), nullable=True)  # None: a local request without a key
    prompt: Mapped[str] = mapped_column(Text)                       # the input as text (a chat: its last user turn)
    request: Mapped[dict] = mapped_column(JSON, default=dict)       # the request's parameters (messages, seed, ...)
    outputs: Mapped[list] = mapped_column(JSON, default=list)       # one per choice: {"text"} or {"path"} (relative)
    status_code: Mapped[int] = mapped_column(Integer, default=200)
    cache_hit: Mapped[bool] = mapped_column(Boolean, default=False)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    tokens: Mapped[int] = mapped_column(Integer, default=0)         # generated tokens (text)
    blocklist_hits: Mapped[int] = mapped_column(Integer, default=0)
    rating: Mapped[str | None] = mapped_column(String(8), nullable=True)   # up | down
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    rated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)

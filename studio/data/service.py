"""The Data workspace's services: import, clean again, list, read and export dataset versions.

A dataset version is built in a private folder under ``STUDIO_HOME/tmp`` and moved into
``datasets/<dataset id>/v<version>`` in one rename, after its row is written: a version folder is
complete or absent, and never written again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from datetime import datetime
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, TypedDict

from sqlalchemy import func, select

from studio.data.archive import StagedFile, stage_inputs
from studio.data.clean import Cleaner, Progress, fill_representatives, removal_warnings, resolve_config
from studio.data.items import (AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, MODALITIES, ImportRefused, Item, Problem)
from studio.data.mapping import ColumnMapping
from studio.data.read_datasets import (DatasetsSource, describe_datasets_source, hub_commit, hub_token, is_hub_ref,
                                      local_source, open_source, parse_hub_ref, write_rows)
from studio.data.read_media import METADATA_NAMES, read_media_files
from studio.data.preferences import count_kinds, row_kind
from studio.data.read_text import ReadResult, Reading, iter_text_items, preview_tables
from studio.data.split import SPLITS, assign_splits, parse_fractions
from studio.data.stats import StatsTally
from studio.settings import Settings
from studio.store import Store
from studio.store.audit import record_action
from studio.status import RUN_ACTIVE
from studio.store.disk import low_space
from studio.store.projects import DEFAULT_PROJECT, DeleteRefused, ensure_project, project_name, remove_folders
from studio.store.tables import Dataset, DatasetVersion, Project, Run, Upload


class ImportResult(TypedDict):
    """A new dataset version, as `studio data import --json` prints it, the import task stores it and the Data tab
    shows it."""
    dataset_id: int
    version: int
    version_id: int
    name: str
    modality: str
    items_in: int  # items read from the files
    items_kept: int  # after cleaning
    removed: dict[str, int]  # per enabled cleaning step, the items it removed (and what was set aside before)
    errors: list[dict]  # files not used: {"file", "reason"}
    warnings: list[dict]  # a step that removed most of its items (with the setting that keeps more), a reader's note
    splits: dict[str, int]  # items per split
    path: str  # the version's folder
    clusters: dict[str, dict]  # per near-duplicate step: its clusters (clean.Clusters.summary), the largest shown


@dataclass(frozen=True)
class Recipe:
    """How a version is made of its upload: cleaning ``steps``, the table columns' ``mapping``, how plain text
    becomes documents (``text_split``), and the split ``fractions`` with their ``seed``. A version stores it, and
    cleaning again starts from the stored one."""
    steps: dict | None
    mapping: ColumnMapping | None
    text_split: str
    fractions: tuple[float, ...]
    seed: int


@dataclass(frozen=True)
class StagedUpload:
    """The files of an ``Upload`` row, ready to read, and those refused while staging them."""
    upload_id: int
    files: list[StagedFile]
    refused: list[Problem]


def detect_modality(files: list[StagedFile]) -> str:
    counts = Counter()
    for staged in files:
        suffix = staged.path.suffix.lower()
        counts["image"] += suffix in IMAGE_EXTENSIONS
        counts["audio"] += suffix in AUDIO_EXTENSIONS
    if counts["image"] or counts["audio"]:
        return "image" if counts["image"] >= counts["audio"] else "audio"
    return "text"


def default_name(paths: list) -> str:
    """One folder or zip names the dataset; several loose files get a dated name."""
    if len(paths) == 1:
        return Path(paths[0]).stem
    return datetime.now().strftime("upload-%Y-%m-%d-%H%M")


def _safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", PurePosixPath(name).stem)[:40] or "item"


@contextmanager
def _workspace(store: Store):
    folder = store.home / "tmp" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _copy_into(folder: Path, source: Path, name: str) -> str:
    relative = f"files/{name}{source.suffix.lower()}"
    (folder / "files").mkdir(exist_ok=True)
    shutil.copyfile(source, folder / relative)
    return relative


class VersionWriter:
    """The kept items of a version written as they come (media files copied in), a chunk at a time, into a rows file
    in the workspace; ``finish`` writes the manifest with each row's split, once the count is known. Held in memory:
    the version's numbers (``StatsTally``, the kinds)."""

    def __init__(self, folder: Path, work: Path, modality: str):
        self.folder, self.modality = folder, modality
        self.rows_path = work / "rows.jsonl"
        self.rows = open(self.rows_path, "w", encoding="utf-8")
        self.count = 0
        self.stats = StatsTally(modality)
        self.kinds = count_kinds([])

    def add(self, items: list[Item]) -> None:
        lines = []
        for item in items:
            number = self.count
            row = {"id": number, **item.manifest_row()}
            if item.path is not None:
                row["file"] = _copy_into(self.folder, item.path, f"{number:06d}_{_safe_stem(item.source)}")
                row.update({k: v for k, v in item.meta.items() if k in ("width", "height", "duration", "sample_rate",
                                                                              "repeats")})
            if item.rejected_path is not None:
                row["rejected_file"] = _copy_into(self.folder, item.rejected_path,
                                                  f"{number:06d}_{_safe_stem(item.source)}_rejected")
            self.kinds[row_kind(row)] += 1
            self.stats.add(item)
            lines.append(json.dumps(row, ensure_ascii=False) + "\n")
            self.count += 1
        self.rows.writelines(lines)

    def finish(self, labels: list[str], report: list[dict]) -> None:
        """manifest.jsonl: the rows with their ``split`` after their ``id``; the largest near-duplicate clusters'
        representatives are found on the way (``fill_representatives``)."""
        self.rows.close()
        wanted = {json.dumps(cluster["representative"]["source"], ensure_ascii=False)
                  for entry in report for cluster in entry.get("clusters", {}).get("largest", [])}
        found = []
        with open(self.rows_path, encoding="utf-8") as rows, \
                open(self.folder / "manifest.jsonl", "w", encoding="utf-8") as out:
            for number, (line, split) in enumerate(zip(rows, labels)):
                head = f'{{"id": {number}'
                out.write(f'{head}, "split": "{split}"{line[len(head):]}')
                if wanted and any(f'"source": {source}' in line for source in wanted):
                    found.append(json.loads(line))
        fill_representatives(report, found)
        self.rows_path.unlink()

    def close(self) -> None:
        self.rows.close()


READING_SHARE = 0.3  # of a media import's progress: reading the files; cleaning and writing the version take the rest


def _part(progress: Progress | None, start: float, end: float) -> Progress | None:
    """``progress`` for one part of the work: its fractions 0..1 told as ``start``..``end``."""
    return progress and (lambda fraction, message: progress(start + (end - start) * fraction, message))


def _nothing_usable(problems: list[Problem]) -> ImportRefused:
    reasons = "; ".join(f"{p.file}: {p.reason}" for p in problems[:10]) or "no files were given"
    return ImportRefused(f"nothing usable found ({reasons})",
                         details={"errors": [p.as_dict() for p in problems], "removed": {}})


def _build_version(store: Store, upload: StagedUpload, recipe: Recipe, *, name: str, project: str, modality: str,
                   created_by: str | None, progress: Progress | None, action: str,
                   origin: dict | None = None) -> ImportResult:
    """Text streams: its items are read as they are cleaned and written, progress following the bytes read. Media
    files are listed first (a record a file: a path and a few numbers), then cleaned and written a chunk at a time."""
    # ``progress`` may raise to cancel (studio.tasks): it is called only before anything is stored
    if progress:
        progress(0.0, f"reading {len(upload.files)} file(s)")
    read = ReadResult(problems=list(upload.refused))
    source = {"files": [s.name for s in upload.files],
              "mapping": recipe.mapping.model_dump() if recipe.mapping else None,
              "text_split": recipe.text_split, "upload_id": upload.upload_id, **(origin or {})}
    version_origin = VersionOrigin(source, action, upload.upload_id)
    if modality == "text":
        reading = Reading([_size(s.path) for s in upload.files])
        stream = StreamProgress(progress, reading.fraction)
        items = iter_text_items(upload.files, recipe.mapping, recipe.text_split, store.settings, read, reading,
                                whole_files=False, progress=stream.step if progress else None)
        return store_version(store, read, recipe, version_origin, name=name, project=project, modality=modality,
                             created_by=created_by, progress=progress, items=items, stream=stream)
    media = read_media_files(upload.files, modality, store.settings, _part(progress, 0.0, READING_SHARE))
    media.problems[:0] = read.problems
    if not media.items:
        raise _nothing_usable(media.problems)
    return store_version(store, media, recipe, version_origin, name=name, project=project, modality=modality,
                         created_by=created_by, progress=_part(progress, READING_SHARE, 1.0))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass(frozen=True)
class VersionOrigin:
    """Where a version's items came from: its stored ``source``, the ``action`` the activity log records, the
    ``upload`` it was read from (None: items made by the studio, such as votes), and what was ``set_aside``
    before cleaning (reason → count; it joins the steps' counts in ``removed``)."""
    source: dict
    action: str
    upload_id: int | None = None
    set_aside: dict | None = None


CHUNK_ITEMS = 5000  # items read, cleaned and written at a time
WRITING_SHARE = 0.97  # of a version's progress: reading, cleaning and writing the rows; the manifest takes the rest


def _chunks(items: Iterable[Item]) -> Iterator[list[Item]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, CHUNK_ITEMS)):
        yield chunk


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


class StreamProgress:
    """What a streaming import tells ``progress`` after each chunk: how far the reading is (``fraction``), items read
    and kept, the rate and the time left (from the rate so far)."""

    def __init__(self, progress: Progress | None, fraction: Callable[[], float]):
        self.progress, self.fraction = progress, fraction
        self.started = time.monotonic()

        self.status = ""  # after the first chunk: items read and kept, the rate, the time left

    def __call__(self, items_in: int, kept: int) -> None:
        if not self.progress:
            return
        done, elapsed = self.fraction(), time.monotonic() - self.started
        rate = f", {items_in / elapsed:,.0f} items/s" if elapsed > 0.5 else ""
        left = f", about {_duration(elapsed * (1 - done) / done)} left" if done > 0.02 and elapsed > 2 else ""
        self.status = f"{items_in:,} items read, {kept:,} kept{rate}{left}"
        self.progress(WRITING_SHARE * done, f"reading and cleaning: {self.status}")

    def step(self, _fraction: float, message: str) -> None:
        """Within a chunk (each step of it, each file begun): a place to stop, and what is done now."""
        if self.progress:
            self.progress(WRITING_SHARE * self.fraction(), f"{message} — {self.status}" if self.status else message)


def store_version(store: Store, read: ReadResult, recipe: Recipe, origin: VersionOrigin, *, name: str,
                  project: str, modality: str, created_by: str | None, progress: Progress | None = None,
                  items: Iterable[Item] | None = None, stream: StreamProgress | None = None) -> ImportResult:
    """Cleans the items by ``recipe``, splits them and stores them as the next version of dataset ``name`` in
    ``project`` (created when new); ImportRefused when cleaning leaves nothing.

    The items are ``items`` when given (an iterator: read as they are cleaned, ``read`` gathering the problems,
    warnings and notes on the way; ``stream`` tells the progress, knowing how far the reading has come), else
    ``read.items``. They are
    read, cleaned and written ``CHUNK_ITEMS`` at a time, so memory holds a chunk and the cleaning's memory
    (``clean.Cleaner``), whatever the size. ``progress`` may raise to cancel between chunks: the version is built
    in a workspace that is removed, so nothing is left."""
    set_aside = dict(origin.set_aside or {})
    if items is None:
        consumed = [0]
        items = _counted(read.items, consumed)
        stream = StreamProgress(progress, lambda: consumed[0] / max(len(read.items), 1))
    tell = stream or StreamProgress(progress, lambda: 0.0)
    with _workspace(store) as work:
        version_dir = work / "version"
        version_dir.mkdir()
        cleaner = Cleaner(modality, recipe.steps, work / "scratch", version_dir / "removed")
        writer = VersionWriter(version_dir, work, modality)
        read_count = 0
        try:
            for chunk in _chunks(items):
                read_count += len(chunk)
                writer.add(cleaner.feed(chunk, tell.step if progress else None))
                tell(read_count, writer.count)
            step_report = cleaner.finish()
        finally:
            cleaner.close()
            writer.close()
        items_in = read_count + sum(set_aside.values())
        removed = {**set_aside, **{entry["step"]: entry["removed"] for entry in step_report if entry["enabled"]}}
        warnings = removal_warnings(step_report, modality) + [w.as_dict() for w in read.warnings]
        errors = [p.as_dict() for p in read.problems]
        if not read_count and not set_aside:
            raise _nothing_usable(read.problems)
        if not writer.count:
            raise ImportRefused(f"cleaning removed all {items_in} items ("
                                + ", ".join(f"{k}: {v}" for k, v in removed.items() if v) + "). "
                                + " ".join(w["reason"] + "." for w in warnings if "step" in w),
                                details={"errors": errors, "removed": removed, "warnings": warnings,
                                         "items_in": items_in})
        labels = assign_splits(writer.count, recipe.fractions, recipe.seed)
        if progress:
            progress(WRITING_SHARE, f"writing the dataset version ({writer.count:,} items)")
        writer.finish(labels, step_report)
        kept = writer.count
        splits = {s: labels.count(s) for s in SPLITS}
        report = {"steps": step_report, "removed": removed, "items_in": items_in, "items_kept": kept,
                  "errors": errors, "warnings": warnings, "notes": read.notes, "splits": splits,
                  "stats": {**writer.stats.result(), "kinds": writer.kinds}}
        (version_dir / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1))
        with store.session() as session:
            owner = ensure_project(session, project, created_by)
            dataset = session.scalar(select(Dataset).where(Dataset.project_id == owner.id, Dataset.name == name))
            if dataset is None:
                dataset = Dataset(project_id=owner.id, name=name, modality=modality)
                session.add(dataset)
                session.flush()
            elif dataset.modality != modality:
                raise ImportRefused(f"dataset '{name}' holds {dataset.modality}; this import is {modality}. "
                                    "Choose another name.")
            number = (session.scalar(select(func.max(DatasetVersion.version))
                                     .where(DatasetVersion.dataset_id == dataset.id)) or 0) + 1
            relative = f"datasets/{dataset.id}/v{number}"
            row = DatasetVersion(dataset_id=dataset.id, version=number, upload_id=origin.upload_id,
                                 source=origin.source,
                                 steps=[{"step": e["step"], "enabled": e["enabled"], **e["params"]} for e in step_report],
                                 report=report,
                                 splits={"fractions": list(recipe.fractions), "seed": recipe.seed, **splits},
                                 path=relative, items_in=items_in, items_kept=kept, created_by=created_by)
            session.add(row)
            session.flush()  # the unique (dataset, version) constraint speaks before the folder moves
            final = store.path(relative)
            final.parent.mkdir(parents=True, exist_ok=True)
            record_action(session, created_by, origin.action, f"dataset:{dataset.id}", project=owner.name,
                          details={"name": name, "version": number, "items_kept": kept,
                                   **({} if origin.upload_id else {"source": origin.source})})
            os.rename(version_dir, final)  # fails rather than overwrite an existing version folder
    return ImportResult(dataset_id=dataset.id, version=number, version_id=row.id, name=name, modality=modality,
                        items_in=items_in, items_kept=kept, removed=removed, errors=report["errors"],
                        warnings=report["warnings"], splits=splits, path=str(final),
                        clusters={e["step"]: e["clusters"] for e in step_report if "clusters" in e})


def _counted(items: list[Item], consumed: list[int]) -> Iterator[Item]:
    for item in items:
        consumed[0] += 1
        yield item


def import_dataset(store: Store, paths: list[str | Path], *, name: str | None = None, modality: str | None = None,
                   split="0.8,0.1,0.1", seed: int = 0, steps: dict | None = None,
                   mapping: ColumnMapping | None = None, text_split: str = "auto",
                   project: str = DEFAULT_PROJECT, created_by: str | None = None,
                   progress: Progress | None = None, config: str | None = None, source_split: str | None = None,
                   limit: int | None = None) -> ImportResult:
    """Import files, folders or zips as a new dataset version (JSON-ready summary returned).

    ``paths`` may instead be one ``datasets`` source: ``hub:OWNER/NAME[@REVISION]`` or a ``save_to_disk`` / Parquet
    shards folder, of which ``config``, ``source_split`` and the first ``limit`` rows are read.
    Raises ImportRefused when nothing usable was found; bad files otherwise only land in ``errors``.
    """
    fractions = parse_fractions(split)
    if message := low_space(store, "import a dataset"):
        raise ImportRefused(message)
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}")
    source = datasets_source(paths, config=config, split=source_split, limit=limit)
    upload_dir = store.home / "uploads" / uuid.uuid4().hex
    origin = None
    if source is None:
        staged, problems = stage_inputs([Path(p) for p in paths], upload_dir / "files", store.settings)
        modality = modality or detect_modality(staged)
    else:
        staged, problems, modality, origin = _stage_source(store, source, upload_dir / "files", modality, progress)
        if source.kind == "hub":  # a folder names the dataset as every folder does (default_name)
            name = name or source.location.split("/")[-1]
    try:
        resolve_config(modality, steps)  # a typo in the settings fails before any work
    except Exception:
        shutil.rmtree(upload_dir, ignore_errors=True)  # the files were staged already: don't leave them
        raise
    if not staged:
        shutil.rmtree(upload_dir, ignore_errors=True)
        raise _nothing_usable(problems)
    with store.session() as session:
        owner = ensure_project(session, project, created_by)
        upload = Upload(project_id=owner.id, path=str(upload_dir.relative_to(store.home)),
                        files=[{"name": s.name, "path": str(s.path.relative_to(upload_dir))} for s in staged],
                        refused=[p.as_dict() for p in problems], created_by=created_by)
        session.add(upload)
    name = name or default_name(paths)
    try:
        return _build_version(store, StagedUpload(upload.id, staged, problems),
                              Recipe(steps, mapping, text_split, fractions, seed), name=name, project=project,
                              modality=modality, created_by=created_by, progress=progress, action="dataset.import",
                              origin=origin)
    except Exception:
        with store.session() as session:  # an upload no version uses is of no value to anyone
            session.delete(session.get(Upload, upload.id))
        shutil.rmtree(upload_dir, ignore_errors=True)
        raise


def datasets_source(paths: list[str | Path], *, config: str | None = None, split: str | None = None,
                    limit: int | None = None) -> DatasetsSource | None:
    """The ``datasets`` source ``paths`` name (a ``hub:`` id, a ``save_to_disk`` or Parquet shards folder), or None
    for plain files; ImportRefused when such a source is mixed with other paths, or ``config``/``split``/``limit``
    are given for plain files."""
    sources = [parse_hub_ref(p, config=config, split=split, limit=limit) if is_hub_ref(str(p))
               else local_source(Path(p), config=config, split=split, limit=limit) for p in paths]
    found = [s for s in sources if s is not None]
    if found and len(paths) > 1:
        raise ImportRefused(f"{found[0].label} is a dataset of its own: import it alone, not with other files")
    if not found and (config or split or limit):
        raise ImportRefused("a config, a dataset split and a row limit apply to a Hub dataset (hub:OWNER/NAME) or a "
                            "`datasets` folder (save_to_disk, Parquet shards), not to plain files")
    return found[0] if found else None


def _stage_source(store: Store, source: DatasetsSource, folder: Path, modality: str | None,
                  progress: Progress | None) -> tuple[list[StagedFile], list[Problem], str, dict]:
    """The rows of ``source`` written under ``folder`` (removed again when anything fails or is cancelled): the
    files, the rows not used, the modality and what the version's source records."""
    token = hub_token() if source.kind == "hub" else None
    try:
        if progress:
            progress(0.0, f"opening {source.label}")
        written = write_rows(source, open_source(source, token), folder, progress)
        if modality and modality != written.modality:
            raise ImportRefused(f"{source.label} holds {written.modality}, not {modality}: choose {written.modality} "
                                "(Preview sets it)")
        commit = hub_commit(source, token)
    except BaseException:
        shutil.rmtree(folder.parent, ignore_errors=True)
        raise
    return written.files, written.problems, written.modality, {"datasets": source.recorded(commit)}


def reclean(store: Store, version_id: int, *, steps: dict | None = None, split=None, seed: int | None = None,
            mapping: ColumnMapping | None = None, created_by: str | None = None,
            progress: Progress | None = None) -> ImportResult:
    """A new version of the same dataset from the same upload, with other cleaning settings."""
    with store.session() as session:
        old = session.get(DatasetVersion, version_id)
        if old is None:
            raise ImportRefused(f"no dataset version with id {version_id}")
        upload = session.get(Upload, old.upload_id) if old.upload_id else None
        dataset, project = old.dataset, project_name(session, old.dataset.project_id)
    if upload is None:
        raise ImportRefused(f"version {version_id} has no stored upload to clean again")
    base = store.path(upload.path)
    staged = [StagedFile(f["name"], base / f["path"]) for f in upload.files]
    resolve_config(dataset.modality, steps)
    fractions = parse_fractions(split) if split is not None else tuple(old.splits["fractions"])
    stored_mapping = old.source.get("mapping")
    mapping = mapping or (ColumnMapping(**stored_mapping) if stored_mapping else None)
    recipe = Recipe(steps, mapping, old.source.get("text_split", "auto"), fractions,
                    old.splits["seed"] if seed is None else seed)
    return _build_version(store, StagedUpload(upload.id, staged, [Problem(**p) for p in upload.refused]), recipe,
                          name=dataset.name, project=project, modality=dataset.modality, created_by=created_by,
                          progress=progress, action="dataset.reclean",
                          origin={k: old.source[k] for k in ("datasets",) if k in old.source})


def describe_source(source: dict | None, most: int = 8) -> str:
    """Where a version came from, for people (the card, the Data tab): its files, or the votes it was made of."""
    source = source or {}
    if "sample_set" in source:
        raters = source.get("raters")
        return (f"the votes of sample set {source['sample_set']}: {source.get('votes', 0)} votes"
                + (f" by {raters} rater{'s' if raters != 1 else ''}" if raters else "")
                + f" deciding {source.get('pairs', 0)} pairs"
                + (" (flagged votes included)" if source.get("include_flagged") else ""))
    if found := source.get("datasets"):
        return describe_datasets_source(found)
    files = source.get("files", [])
    return ", ".join(f"`{f}`" for f in files[:most]) + (" …" if len(files) > most else "") or "not recorded"


def list_datasets(store: Store) -> list[dict]:
    with store.session() as session:
        datasets = session.scalars(select(Dataset).order_by(Dataset.id)).all()
        projects = {p.id: p.name for p in session.scalars(select(Project))}
        return [{"dataset_id": d.id, "name": d.name, "modality": d.modality, "project": projects[d.project_id],
                 "versions": [{"version": v.version, "version_id": v.id, "items_in": v.items_in,
                               "items_kept": v.items_kept, "splits": {s: v.splits.get(s, 0) for s in SPLITS},
                               "kinds": (v.report or {}).get("stats", {}).get("kinds"),
                               "created_at": v.created_at.isoformat(), "path": v.path}
                              for v in d.versions]}
                for d in datasets]


def refuse_if_trained_on(session, versions: list[DatasetVersion], what: str) -> None:
    """Raise DeleteRefused when a run uses one of ``versions``: its config and resume need the data."""
    runs = session.scalars(select(Run).where(Run.dataset_version_id.in_([v.id for v in versions]))
                           .order_by(Run.id)).all()
    active = [r for r in runs if r.status in RUN_ACTIVE]
    if active:
        raise DeleteRefused(f"{what} is used by run {active[0].id}, which is {active[0].status}: stop it first "
                            f"(Train tab, or `studio runs stop {active[0].id}`), then delete the run")
    if runs:
        ids = ", ".join(str(r.id) for r in runs)
        those = "that run" if len(runs) == 1 else "those runs"
        raise DeleteRefused(f"{what} was used to train run {ids}: delete {those} first (Train tab → Delete run), "
                            "or delete the whole project")


def purge_versions(session, versions: list[DatasetVersion]) -> list[str]:
    """Delete the rows of ``versions`` and of uploads no other version uses; returns the folders to remove once
    the transaction is committed."""
    folders = [v.path for v in versions]
    upload_ids = {v.upload_id for v in versions if v.upload_id}
    for version in versions:
        session.delete(version)
    session.flush()
    for upload_id in upload_ids:
        if not session.scalar(select(func.count(DatasetVersion.id)).where(DatasetVersion.upload_id == upload_id)):
            upload = session.get(Upload, upload_id)
            folders.append(upload.path)
            session.delete(upload)
    return folders


def delete_version(store: Store, ref: str, actor: str | None = None) -> dict:
    """Delete one version (``DATASET_ID:VERSION``) and its files; the dataset goes too when it was the last."""
    if ":" not in str(ref):
        raise ImportRefused(f"say which version to delete: DATASET_ID:VERSION (got '{ref}')")
    version_id = get_version(store, ref).id
    with store.session() as session:
        version = session.get(DatasetVersion, version_id)
        dataset = version.dataset
        refuse_if_trained_on(session, [version], f"dataset '{dataset.name}' v{version.version}")
        project, number = project_name(session, dataset.project_id), version.version
        folders = purge_versions(session, [version])
        left = select(func.count(DatasetVersion.id)).where(DatasetVersion.dataset_id == dataset.id)
        dataset_gone = not session.scalar(left)
        if dataset_gone:
            folders.append(f"datasets/{dataset.id}")
            session.delete(dataset)
        record_action(session, actor, "dataset.delete_version", f"dataset:{dataset.id}", project=project,
                      details={"name": dataset.name, "version": number, "dataset_deleted": dataset_gone})
    remove_folders(store, folders)
    return {"dataset_id": dataset.id, "version": number, "dataset_deleted": dataset_gone}


def delete_dataset(store: Store, dataset_id: int, actor: str | None = None) -> dict:
    """Delete a dataset, every version of it, its uploads and their files."""
    with store.session() as session:
        dataset = session.get(Dataset, int(dataset_id))
        if dataset is None:
            raise ImportRefused(f"no dataset {dataset_id} (see `studio data list`)")
        versions = list(dataset.versions)
        refuse_if_trained_on(session, versions, f"dataset '{dataset.name}'")
        folders = purge_versions(session, versions) + [f"datasets/{dataset.id}"]
        project, name = project_name(session, dataset.project_id), dataset.name
        session.delete(dataset)
        record_action(session, actor, "dataset.delete", f"dataset:{dataset.id}", project=project,
                      details={"name": name, "versions": [v.version for v in versions]})
    remove_folders(store, folders)
    return {"dataset_id": int(dataset_id), "name": name, "versions": len(versions)}


def get_version(store: Store, ref: str) -> DatasetVersion:
    """A version by ``DATASET_ID[:VERSION]`` (the newest version when none is given)."""
    dataset_id, _, number = str(ref).partition(":")
    try:
        query = select(DatasetVersion).where(DatasetVersion.dataset_id == int(dataset_id))
        query = query.where(DatasetVersion.version == int(number)) if number else \
            query.order_by(DatasetVersion.version.desc())
    except ValueError:
        raise ImportRefused(f"'{ref}' is not a dataset reference; use DATASET_ID or DATASET_ID:VERSION") from None
    with store.session() as session:
        found = session.scalars(query).first()
        if found is None:
            raise ImportRefused(f"no dataset version '{ref}' (see `studio data list`)")
        found.dataset  # load the relationship while the session is open
        return found


def read_manifest(store: Store, version: DatasetVersion, split: str | None = None,
                  limit: int | None = None) -> list[dict]:
    """The version's items (of ``split``); only the first ``limit`` are read when given (a page's preview)."""
    with open(store.path(version.path) / "manifest.jsonl", encoding="utf-8") as handle:
        rows = (json.loads(line) for line in handle)
        return list(islice((r for r in rows if split is None or r["split"] == split), limit))


def inspect_upload(paths: list[str | Path]) -> dict:
    """Before importing: the likely modality and, for loose tables, their columns, guessed mapping and first
    rows (only those are read). Zips are only listed (not extracted) here, so this stays quick for big uploads."""
    import zipfile

    names: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names += [m for m in archive.namelist() if not m.endswith("/")]
        elif path.is_dir():
            names += [str(p) for p in path.rglob("*") if p.is_file()]
        else:
            names.append(path.name)
    pseudo = [StagedFile(n, Path(n)) for n in names]
    loose = [StagedFile(Path(p).name, Path(p)) for p in paths if Path(p).is_file()]
    modality = detect_modality(pseudo)
    return {"modality": modality, "files": len(names), "tables": preview_tables(loose),
            **(media_counts(names, modality) if modality != "text" else {})}


def media_counts(names: list[str], modality: str) -> dict:
    """What an image or audio upload holds, by name alone, as the import will pair them: ``items`` (the media
    files), ``captioned`` (those with a same-name ``.txt``), ``metadata`` (a metadata.jsonl/csv is there to caption
    them) and ``other`` (files that are neither media, captions nor metadata)."""
    extensions = IMAGE_EXTENSIONS if modality == "image" else AUDIO_EXTENSIONS
    paths = [PurePosixPath(n) for n in names]
    captions = {str(p.with_suffix("")) for p in paths if p.suffix.lower() == ".txt"}
    media = [p for p in paths if p.suffix.lower() in extensions]
    metadata = sum(p.name.lower() in METADATA_NAMES for p in paths)
    return {"items": len(media), "captioned": sum(str(p.with_suffix("")) in captions for p in media),
            "metadata": metadata > 0, "other": len(paths) - len(media) - len(captions) - metadata}

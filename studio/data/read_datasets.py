"""`datasets` sources → files the studio's readers read.

A source is a Hugging Face Hub dataset (``hub:OWNER/NAME[@REVISION]``), a folder ``Dataset.save_to_disk`` wrote, or
a folder of Parquet shards whose schema declares ``Image``/``Audio`` features (``Dataset.to_parquet``, the Hub's
own shards). Its rows are written, a row at a time, into the upload folder: text columns as one JSON Lines table
(the same column-mapping guess as an uploaded table then applies), ``Image``/``Audio`` columns as files with a
``metadata.jsonl`` holding their captions (read as an uploaded imagefolder/audiofolder is). So what is held in
memory is one row, the version is cleaned and split as any upload is, and cleaning again reads the same files.

Media are copied as stored (``decode=False``): nothing is decoded here, the image and audio checks do it once, and
audio needs no ``torchcodec``. ``datasets`` is imported inside the functions: the studio starts without it.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable

from studio.data.archive import StagedFile
from studio.data.items import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, ImportRefused, Problem
from studio.data.mapping import guess_mapping, mapping_problem
from studio.data.read_media import CAPTION_COLUMNS
from studio.data.sniff import sniff

HUB_PREFIX = "hub:"
# NAME or OWNER/NAME, as the Hub spells repository ids; @REVISION a branch, tag or commit
HUB_REF = re.compile(r"^(?P<repo>(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95})(?:@(?P<revision>[\w./-]+))?$")
# A Hub set whose chosen split is larger than this (or of unknown size) is streamed rather than downloaded first.
STREAM_ABOVE_BYTES = 1 << 30
PROGRESS_EVERY_SECONDS = 1.0
# Rows are read a batch at a time (`datasets` formats a row alone at twice the cost); a media row holds its file's
# bytes, so its batches are small.
TEXT_ROWS_PER_BATCH, MEDIA_ROWS_PER_BATCH = 1000, 8
EXTENSION_OF_KIND = {"PNG image": ".png", "JPEG image": ".jpg", "WEBP image": ".webp", "WAV audio": ".wav",
                     "FLAC audio": ".flac", "OGG audio": ".ogg", "MP3 audio": ".mp3"}
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class DatasetsSource:
    """Where the rows come from: ``kind`` "hub" (``location`` a repo id), "save_to_disk" or "parquet" (a folder);
    the ``revision`` (Hub only), ``config``, ``split`` and the first ``limit`` rows asked for."""
    kind: str
    location: str
    revision: str | None = None
    config: str | None = None
    split: str | None = None
    limit: int | None = None

    @property
    def label(self) -> str:
        """How a person names it: ``hub:OWNER/NAME@REVISION`` or the folder's name."""
        if self.kind == "hub":
            return HUB_PREFIX + self.location + (f"@{self.revision}" if self.revision else "")
        return Path(self.location).name

    def recorded(self, commit: str | None = None) -> dict:
        """What the version's source keeps of it (a local folder by its name: the path is the machine's)."""
        found = {k: v for k, v in asdict(self).items() if v is not None}
        if self.kind != "hub":
            found["location"] = self.label
        return {**found, **({"commit": commit} if commit else {})}


def is_hub_ref(text: str) -> bool:
    return str(text).startswith(HUB_PREFIX)


def parse_hub_ref(text: str, *, config: str | None = None, split: str | None = None,
                  limit: int | None = None) -> DatasetsSource:
    """``hub:OWNER/NAME[@REVISION]`` (the prefix may be left out) as a source; ImportRefused naming the form."""
    raw = str(text).strip()
    found = HUB_REF.match(raw[len(HUB_PREFIX):] if is_hub_ref(raw) else raw)
    if not found:
        raise ImportRefused(f"'{raw}' is not a Hub dataset id: write hub:OWNER/NAME, optionally @REVISION "
                            "(a branch, tag or commit), e.g. hub:stanfordnlp/imdb@main")
    if limit is not None and limit < 1:
        raise ImportRefused(f"the row limit must be at least 1 (got {limit})")
    return DatasetsSource("hub", found["repo"], found["revision"], config or None, split or None, limit)


def folder_kind(path: Path) -> str | None:
    """"save_to_disk" or "parquet" when ``path`` is a folder only ``datasets`` reads whole, else None. A folder of
    Parquet shards of plain columns is not one: the table reader reads those a batch at a time already."""
    if not path.is_dir():
        return None
    if (path / "dataset_dict.json").is_file() or ((path / "state.json").is_file()
                                                  and (path / "dataset_info.json").is_file()):
        return "save_to_disk"
    shards = sorted(path.rglob("*.parquet"))
    others = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() not in (".parquet", ".md")
              and not p.name.startswith(".")]
    if shards and not others and any(_media_features(_parquet_features(s)) for s in shards[:1]):
        return "parquet"
    return None


def _parquet_features(path: Path) -> dict:
    """The ``datasets`` features a Parquet file's schema declares (``{}`` when it declares none)."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
        return json.loads(metadata.get(b"huggingface", b"{}")).get("info", {}).get("features", {})
    except Exception:  # an unreadable shard: the table reader names it
        return {}


def _media_features(features: dict) -> dict[str, str]:
    """Columns holding an image or an audio clip (by their declared ``_type``) → "image" / "audio"."""
    kinds = {"Image": "image", "Audio": "audio"}
    found = {}
    for column, feature in features.items():
        kind = feature.get("_type") if isinstance(feature, dict) else getattr(feature, "_type", None)
        if kind in kinds:
            found[column] = kinds[kind]
    return found


def local_source(path: Path, *, config: str | None = None, split: str | None = None,
                 limit: int | None = None) -> DatasetsSource | None:
    """A local folder as a ``datasets`` source, or None when it is not one."""
    kind = folder_kind(path)
    return DatasetsSource(kind, str(path), None, config, split, limit) if kind else None


def hub_token() -> str | None:
    """The user's Hugging Face token: HF_TOKEN, else the one ``hf auth login`` saved (never logged or stored)."""
    from huggingface_hub import get_token

    return get_token()


def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()  # a worker's log has lines, not bars
    datasets.logging.set_verbosity_error()
    return datasets


def _hub_split_bytes(source: DatasetsSource, split: str, token: str | None) -> int | None:
    """The chosen split's size as the set's card declares it; None when unknown or unreachable."""
    datasets = _quiet_datasets()
    try:
        info = datasets.load_dataset_builder(source.location, source.config, revision=source.revision,
                                             token=token).info
        return info.splits[split].num_bytes if info.splits and split in info.splits else None
    except Exception:
        return None


def _refusal(source: DatasetsSource, error: Exception, token: str | None) -> ImportRefused:
    """What went wrong loading ``source``, in words, naming it; the token never appears."""
    from datasets.exceptions import DatasetNotFoundError

    said = str(error).replace(token, "***") if token else str(error)
    said = said.splitlines()[0][:300] if said else type(error).__name__
    if isinstance(error, DatasetNotFoundError):
        why = ("not found on the Hub, or it is private or gated and no token with access to it was given (set "
               f"HF_TOKEN, or run `hf auth login`, with an account that accepted its terms). The Hub said: {said}")
    elif _is_network_error(error):
        why = f"the Hub could not be reached (no network?): {said}"
    elif isinstance(error, ValueError) and "split" in said.lower():
        why = f"no such split: {said}"
    elif isinstance(error, ValueError) and "config" in said.lower():
        why = f"a config must be chosen (--config): {said}"
    else:
        why = said
    return ImportRefused(f"could not load {source.label}: {why}. Nothing was imported.")


def _is_network_error(error: Exception) -> bool:
    module = type(error).__module__.split(".")[0]
    return isinstance(error, (ConnectionError, TimeoutError)) or module in ("httpx", "httpx2", "httpcore", "requests") \
        or "offline" in type(error).__name__.lower() or "offline mode" in str(error).lower()


def _refuse_a_local_namesake(source: DatasetsSource) -> None:
    """``load_dataset`` reads a local folder or file before it asks the Hub: a Hub id that also names a path here
    (relative to the working folder) would read this machine's files, which a page must never reach; so would one
    of its own loaders' names (``csv``, ``imagefolder``...), which read the working folder."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    if "/" not in source.location and source.location.lower() in _PACKAGED_DATASETS_MODULES:
        raise ImportRefused(f"{source.label} is the name of one of the `datasets` library's own loaders, not of a "
                            "Hub dataset: write hub:OWNER/NAME")
    if Path(source.location).exists() or Path(source.location.split("/")[0]).is_symlink():
        raise ImportRefused(f"{source.label} also names a folder on this machine, which would be read instead of the "
                            "Hub's set: run the studio from another folder, or import the folder by its path with "
                            "`studio data import`")


def _choose_split(found, source: DatasetsSource):
    """One split of a ``DatasetDict``: the one asked for, else "train", else the only one."""
    if not hasattr(found, "keys"):
        return found
    names = list(found.keys())
    wanted = source.split or ("train" if "train" in names or len(names) != 1 else names[0])
    if wanted not in names:
        raise ImportRefused(f"{source.label} has no split '{wanted}'; its splits: {', '.join(names)} "
                            "(choose one with --split)")
    return found[wanted]


def open_source(source: DatasetsSource, token: str | None = None, *, preview: bool = False):
    """The rows of ``source`` (a ``Dataset`` or ``IterableDataset``, media columns undecoded, the first ``limit``
    only); ImportRefused naming the set and the reason when it cannot be loaded. ``preview``: streamed, whatever
    the size, since only a few rows are read."""
    try:
        rows = _undecoded(_load(source, token, preview))
    except ImportRefused:
        raise
    except Exception as error:  # datasets, fsspec and the HTTP client raise many kinds
        raise _refusal(source, error, token) from None
    return rows if source.limit is None else rows.take(source.limit)


def _load(source: DatasetsSource, token: str | None, preview: bool):
    datasets = _quiet_datasets()
    if source.kind == "save_to_disk":
        return _choose_split(datasets.load_from_disk(source.location), source)
    if source.kind == "parquet":  # streamed: no copy of the shards into the datasets cache
        return _choose_split(datasets.load_dataset("parquet", data_dir=source.location, streaming=True), source)
    _refuse_a_local_namesake(source)
    split = source.split or "train"
    size = None if preview or source.limit else _hub_split_bytes(source, split, token)
    streaming = preview or source.limit is not None or size is None or size > STREAM_ABOVE_BYTES
    return datasets.load_dataset(source.location, source.config, split=split, revision=source.revision,
                                 token=token, streaming=streaming)


def _undecoded(rows):
    """``rows`` with every Image/Audio column cast to ``decode=False``: {"bytes", "path"} as stored."""
    import datasets

    for column, kind in _media_features(rows.features or {}).items():
        rows = rows.cast_column(column, datasets.Image(decode=False) if kind == "image"
                                else datasets.Audio(decode=False))
    return rows


def modality_of(features) -> str:
    """image or audio when a column holds them (images first), else text."""
    kinds = set(_media_features(features or {}).values())
    return "image" if "image" in kinds else "audio" if "audio" in kinds else "text"


def caption_column(features) -> str | None:
    """The column a media set's captions come from: the first of the usual names (``read_media.CAPTION_COLUMNS``),
    else the only plain text column."""
    features = features or {}
    media = _media_features(features)
    plain = [c for c in features if c not in media]
    for name in CAPTION_COLUMNS:
        if found := next((c for c in plain if c.lower() == name), None):
            return found
    texts = [c for c in plain if getattr(features[c], "dtype", None) in ("string", "large_string")]
    return texts[0] if len(texts) == 1 else None


def _caption(row: dict, column: str | None, features) -> str | None:
    value = row.get(column) if column else None
    if value is None:
        return None
    names = getattr(features.get(column), "names", None)  # a ClassLabel: the class's name, not its number
    return names[value] if names and isinstance(value, int) and 0 <= value < len(names) else str(value)


def _media_extension(stored: dict, kind: str) -> str:
    """The file extension of an undecoded image/audio value: its name's, else its bytes' kind, else .bin."""
    allowed = IMAGE_EXTENSIONS if kind == "image" else AUDIO_EXTENSIONS
    suffix = Path(stored.get("path") or "").suffix.lower()
    if suffix in allowed:
        return ".jpg" if suffix == ".jpeg" else suffix
    head = stored["bytes"][:64] if stored.get("bytes") else b""
    return EXTENSION_OF_KIND.get(sniff(head) or "", ".bin")


def _write_media(stored, kind: str, target_stem: Path) -> Path | None:
    """One undecoded value written as a file (bytes as they are, or the local file it names copied); None when the
    row holds none."""
    if not isinstance(stored, dict) or not (stored.get("bytes") or stored.get("path")):
        return None
    target = target_stem.with_suffix(_media_extension(stored, kind))
    if stored.get("bytes"):
        target.write_bytes(stored["bytes"])
    elif Path(stored["path"]).is_file():
        shutil.copyfile(stored["path"], target)
    else:
        return None
    return target


def _json_ready(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, bytes):
        return None  # binary cells carry no text; the reader would only trip on them
    return value


@dataclass
class Written:
    """What ``write_rows`` wrote: the files to read, rows it could not use, and the modality they hold."""
    files: list[StagedFile]
    problems: list[Problem]
    modality: str
    rows: int


class _Pacer:
    """Progress about every second while rows are written, as a share of the rows with the time left when their
    number is known (the cleaning that follows counts from 0 again, under its own words); it may raise to cancel:
    nothing is stored yet."""

    def __init__(self, progress: Progress | None, label: str, total: int | None):
        self.progress, self.label, self.total = progress, label, total
        self.started = self.shown = time.monotonic()

    def __call__(self, count: int) -> None:
        now = time.monotonic()
        if not self.progress or (count > 1 and now - self.shown < PROGRESS_EVERY_SECONDS):
            return
        self.shown = now
        if not self.total:
            self.progress(0.0, f"reading {self.label}: {count:,} rows")
            return
        share = min(count / self.total, 1.0)
        left = (now - self.started) * (1 - share) / share
        self.progress(share, f"reading {self.label}: {count:,} of {self.total:,} rows, about {left:,.0f} s left")


def _total_rows(rows, source: DatasetsSource) -> int | None:
    if hasattr(rows, "num_rows"):
        return rows.num_rows
    split_info = (getattr(rows, "info", None) and rows.info.splits or {}).get(source.split or "train")
    total = getattr(split_info, "num_examples", None)
    return min(total, source.limit) if total and source.limit else total or source.limit


def write_rows(source: DatasetsSource, rows, folder: Path, progress: Progress | None = None) -> Written:
    """Writes the rows of ``source`` under ``folder`` as the readers take them, a row at a time."""
    features = rows.features or {}
    media = _media_features(features)
    modality = modality_of(features)
    base = re.sub(r"[^\w.@-]+", "_", source.label)  # the files' names show the set: hub_owner_name@rev/...
    (folder / base).mkdir(parents=True, exist_ok=True)
    pace = _Pacer(progress, source.label, _total_rows(rows, source))
    if modality == "text":
        return _write_table(rows, folder, base, media, pace)
    return _write_media_folder(rows, folder, base, modality, features, pace)


def _each_row(rows, batch_size: int) -> Iterable[dict]:
    """The rows one at a time, read ``batch_size`` at a time."""
    for batch in rows.iter(batch_size=batch_size):
        columns = list(batch)
        for values in zip(*batch.values()):
            yield dict(zip(columns, values))


def _write_table(rows, folder: Path, base: str, media: dict, pace: _Pacer) -> Written:
    relative = f"{base}/rows.jsonl"
    count = 0
    with open(folder / relative, "w", encoding="utf-8") as out:
        for count, row in enumerate(_each_row(rows, TEXT_ROWS_PER_BATCH), 1):
            plain = {k: _json_ready(v) for k, v in row.items() if k not in media}
            out.write(json.dumps(plain, ensure_ascii=False, default=str) + "\n")
            pace(count)
    return Written([StagedFile(relative, folder / relative)], [], "text", count)


def _write_media_folder(rows, folder: Path, base: str, modality: str, features,
                        pace: _Pacer) -> Written:
    column = next(c for c, kind in _media_features(features).items() if kind == modality)
    captions = caption_column(features)
    staged, problems, count = [], [], 0
    with open(folder / base / "metadata.jsonl", "w", encoding="utf-8") as metadata:
        for count, row in enumerate(_each_row(rows, MEDIA_ROWS_PER_BATCH), 1):
            pace(count)
            written = _write_media(row.get(column), modality, folder / base / f"{count:07d}")
            if written is None:
                problems.append(Problem(f"{base}#{count}", f"row skipped: no {modality} in column '{column}'"))
                continue
            staged.append(StagedFile(f"{base}/{written.name}", written))
            metadata.write(json.dumps({"file_name": written.name,
                                       "caption": _caption(row, captions, features)}, ensure_ascii=False) + "\n")
    staged.append(StagedFile(f"{base}/metadata.jsonl", folder / base / "metadata.jsonl"))
    return Written(staged, problems, modality, count)


def _shown(value) -> object:
    """A preview cell: media as a short description, the rest as it is (cut)."""
    if isinstance(value, dict) and "bytes" in value and "path" in value:
        size = len(value["bytes"] or b"")
        return f"({Path(value['path'] or '').name or 'file'}, {size / 1024:,.0f} kB)" if size else \
            f"({value['path'] or 'empty'})"
    value = _json_ready(value)
    return value[:300] if isinstance(value, str) else value


def preview(source: DatasetsSource, token: str | None = None, count: int = 5) -> dict:
    """Before importing: the columns, their features, the modality, the guessed mapping (text) or caption column
    (media), the mapping's problem if any, and the first ``count`` rows (only those are read)."""
    rows = open_source(source, token, preview=True)
    features = rows.features or {}
    head = [{k: _shown(v) for k, v in row.items()} for row in islice(iter(rows), count)]
    columns = list(features) or (list(head[0]) if head else [])
    modality = modality_of(features)
    found = {"source": source.label, "columns": columns, "modality": modality, "rows": head,
             "features": {c: _feature_text(features[c]) for c in features}, "mapping": None, "caption": None,
             "problem": None}
    if modality == "text":
        guess = guess_mapping(columns)
        found["mapping"] = guess.model_dump() if guess else None
        found["problem"] = mapping_problem(source.label, guess, columns)
    else:
        found["caption"] = caption_column(features)
    return found


def _feature_text(feature) -> str:
    kind = getattr(feature, "_type", type(feature).__name__)
    return f"{kind}({feature.dtype})" if kind == "Value" else kind


def hub_commit(source: DatasetsSource, token: str | None) -> str | None:
    """The commit the Hub resolves the set's revision to (what the version records, since a branch moves on);
    None when the Hub does not say."""
    if source.kind != "hub":
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(source.location, revision=source.revision, token=token, timeout=20).sha
    except Exception:
        return None


def describe_datasets_source(recorded: dict) -> str:
    """A version's ``datasets`` source for people: ``hub:OWNER/NAME@REVISION`` (commit …), config, split, limit."""
    kind = recorded.get("kind")
    where = (HUB_PREFIX + recorded["location"] + (f"@{recorded['revision']}" if recorded.get("revision") else "")
             if kind == "hub" else f"the {'save_to_disk' if kind == 'save_to_disk' else 'Parquet shards'} folder "
                                   f"`{recorded.get('location')}`")
    details = [f"commit {recorded['commit'][:12]}" if recorded.get("commit") else None,
               f"config {recorded['config']}" if recorded.get("config") else None,
               f"split {recorded['split']}" if recorded.get("split") else None,
               f"the first {recorded['limit']:,} rows" if recorded.get("limit") else None]
    shown = ", ".join(d for d in details if d)
    return where + (f" ({shown})" if shown else "")

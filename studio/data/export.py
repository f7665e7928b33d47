"""A dataset version as a zip, in the same conventions the importer reads (and that the Hugging Face
``datasets`` loaders read: ``json`` for text, ``imagefolder``/``audiofolder`` for media)."""

from __future__ import annotations

import json
import os
import zipfile
from collections import defaultdict
from pathlib import Path, PurePosixPath

from studio.data.service import get_version, read_manifest
from studio.data.split import SPLITS
from studio.store import Store

TEXT_FIELDS = ("text", "prompt", "response", "messages", "rejected", "label")  # a pair or thumb keeps its field


def _media_entry(archive: zipfile.ZipFile, folder: Path, split: str, row: dict) -> dict:
    """Writes a media row's file(s) into ``split/``; returns its metadata line (a pair's names its ``chosen`` and
    ``rejected`` files, as the importer reads pairs; a thumb keeps its ``label``)."""
    names = {}
    for field in ("file", "rejected_file"):
        if row.get(field):
            names[field] = PurePosixPath(row[field]).name
            archive.write(folder / row[field], f"{split}/{names[field]}")
    entry = {"file_name": names["file"], "text": row.get("caption", "")}
    if "rejected_file" in names:
        entry.update(chosen=names["file"], rejected=names["rejected_file"])
    if "label" in row:
        entry["label"] = row["label"]
    return entry


def export_zip(store: Store, ref: str, out: Path | None = None) -> Path:
    """Write ``<name>_v<N>.zip``: per split, ``<split>.jsonl`` (text) or ``<split>/`` with the files and a
    ``metadata.jsonl`` of ``file_name`` and ``text`` (media), preference pairs and thumbs with their fields.
    Returns the zip's path."""
    version = get_version(store, ref)
    folder = store.path(version.path)
    rows_by_split: dict[str, list[dict]] = defaultdict(list)
    for row in read_manifest(store, version):
        rows_by_split[row["split"]].append(row)
    out = out or store.home / "exports" / f"{version.dataset.name}_v{version.version}.zip"
    partial = out.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for split in SPLITS:
            rows = rows_by_split.get(split, [])
            if not rows:
                continue
            if version.dataset.modality == "text":
                lines = [json.dumps({k: r[k] for k in TEXT_FIELDS if k in r}, ensure_ascii=False) for r in rows]
                archive.writestr(f"{split}.jsonl", "\n".join(lines) + "\n")
                continue
            metadata = []
            for row in rows:
                metadata.append(json.dumps(_media_entry(archive, folder, split, row), ensure_ascii=False))
            archive.writestr(f"{split}/metadata.jsonl", "\n".join(metadata) + "\n")
        # a hidden folder: the importer skips it, so the zip imports back cleanly
        archive.writestr(".studio/report.json", (folder / "report.json").read_text(encoding="utf-8"))
    os.replace(partial, out)
    return out

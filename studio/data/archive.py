"""Bringing uploaded files, folders and zips into a staging folder, safely.

Everything lands under ``dest``; a zip with a member that would escape it (absolute path, ``..``,
symlink) or that looks like a zip bomb is refused whole, before a single byte is extracted. Extraction
streams each member to disk 1 MiB at a time.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from studio.data.items import Problem
from studio.settings import Settings

_JUNK_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db"}
_CHUNK = 1 << 20
# Below this many bytes (a member, or a whole archive) the compression ratio is not checked: a 20-byte caption
# may well compress 5x, and nothing that small is a danger. Many such members add up, and meet the whole
# archive's ratio.
RATIO_FLOOR = 64 * 1024


@dataclass
class StagedFile:
    name: str   # what the person calls it: "photos.zip/cats/1.png"
    path: Path  # where it is now, under the staging folder


class ArchiveRefused(Exception):
    pass


def _is_junk(parts: tuple[str, ...]) -> bool:
    return any(part in _JUNK_PARTS or part.startswith(".") for part in parts)


def _unique(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
        n += 1
    return candidate


def _bomb(what: str, uncompressed: int, compressed: int, settings: Settings) -> str | None:
    """Why ``what`` looks like a zip bomb, or None when its compression ratio is within the limit."""
    ratio = uncompressed / max(compressed, 1)
    if uncompressed > RATIO_FLOOR and ratio > settings.max_archive_ratio:
        return f"{what} expands {ratio:,.0f}x (limit {settings.max_archive_ratio}x): this looks like a zip bomb"
    return None


def _check_members(archive: zipfile.ZipFile, archive_size: int, settings: Settings) -> list[zipfile.ZipInfo]:
    # not ZipInfo.is_dir(): it raises IndexError on a member with an empty name (a crafted zip)
    members = [m for m in archive.infolist() if not m.filename.endswith("/")]
    if len(members) > settings.max_archive_members:
        raise ArchiveRefused(f"it holds {len(members):,} files; the limit is {settings.max_archive_members:,}")
    total = 0
    for member in members:
        name = member.filename.replace("\\", "/")
        pure = PurePosixPath(name)
        if not pure.parts:  # "" or ".": no file name at all (and pure.parts[0] below would fail)
            raise ArchiveRefused(f"member '{member.filename}' has no file name")
        if name.startswith("/") or pure.is_absolute() or ".." in pure.parts or ":" in pure.parts[0]:
            raise ArchiveRefused(f"member '{member.filename}' would be written outside the dataset folder "
                                 "(absolute path or '..')")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise ArchiveRefused(f"member '{member.filename}' is a symbolic link")
        if bomb := _bomb(f"member '{member.filename}'", member.file_size, member.compress_size, settings):
            raise ArchiveRefused(bomb)
        total += member.file_size
    limit = settings.max_archive_total_mb * 1024 * 1024
    if total > limit:
        raise ArchiveRefused(f"it expands to {total / 2**20:,.0f} MB; the limit is "
                             f"{settings.max_archive_total_mb:,} MB")
    if bomb := _bomb("as a whole, it", total, archive_size, settings):
        raise ArchiveRefused(bomb)
    return members


def _extract_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path) -> None:
    # Sizes in a zip header can lie: count the bytes actually written, not the declared size.
    written = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(member) as source, open(target, "wb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > member.file_size:
                raise ArchiveRefused(f"member '{member.filename}' is larger than its header says")
            out.write(chunk)


def extract_zip(zip_path: Path, shown_name: str, dest: Path, settings: Settings) -> tuple[list[StagedFile], list[Problem]]:
    """Extract a zip into ``dest`` (a fresh folder); refuse it whole when it is unsafe."""
    staged: list[StagedFile] = []
    problems: list[Problem] = []
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = _check_members(archive, zip_path.stat().st_size, settings)
            dest.mkdir(parents=True, exist_ok=False)
            for member in members:
                parts = PurePosixPath(member.filename.replace("\\", "/")).parts
                inner_name = f"{shown_name}/{'/'.join(parts)}"
                if _is_junk(parts):
                    continue
                if parts[-1].lower().endswith(".zip"):
                    problems.append(Problem(inner_name, "archives inside archives are not opened; "
                                                        "upload the inner zip on its own"))
                    continue
                target = dest.joinpath(*parts)
                _extract_member(archive, member, target)
                staged.append(StagedFile(inner_name, target))
    except ArchiveRefused as refused:
        shutil.rmtree(dest, ignore_errors=True)
        return [], [Problem(shown_name, f"archive refused: {refused}")]
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        shutil.rmtree(dest, ignore_errors=True)
        return [], [Problem(shown_name, f"not a readable zip archive ({error})")]
    return staged, problems


def stage_inputs(paths: list[Path], dest: Path, settings: Settings) -> tuple[list[StagedFile], list[Problem]]:
    """Copy files, folders and zips into ``dest``; each refused input becomes a Problem."""
    dest.mkdir(parents=True, exist_ok=True)
    limit = settings.max_upload_mb * 1024 * 1024
    staged: list[StagedFile] = []
    problems: list[Problem] = []

    def add_file(source: Path, shown: str) -> None:
        size = source.stat().st_size
        if size > limit:
            problems.append(Problem(shown, f"file is {size / 2**20:,.0f} MB; the upload limit is "
                                           f"{settings.max_upload_mb:,} MB (STUDIO_MAX_UPLOAD_MB)"))
            return
        if source.suffix.lower() == ".zip":
            more, trouble = extract_zip(source, shown, _unique(dest / (source.stem + "_zip")), settings)
            staged.extend(more)
            problems.extend(trouble)
            return
        target = _unique(dest / shown)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        staged.append(StagedFile(shown, target))

    for raw in paths:
        path = Path(raw)
        if not path.exists():
            problems.append(Problem(str(raw), "no such file or folder"))
        elif path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(path)
                if child.is_file() and not child.is_symlink() and not _is_junk(relative.parts):
                    add_file(child, f"{path.name}/{relative.as_posix()}")
        else:
            add_file(path, path.name)
    return staged, problems

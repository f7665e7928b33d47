"""Text files → text items: plain documents, tables (csv/tsv/jsonl/json/parquet), chat logs.

Files are read a line or a row at a time (``text_lines.py``, ``tables.py``): what is held is the items kept,
never a whole file, and a line or row over the limits is skipped and named while the rest of the file imports.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Iterable, Iterator

from studio.data.archive import StagedFile
from studio.data.items import Item, Problem
from studio.data.mapping import (ColumnMapping, complete_mapping, guess_mapping, mapping_problem, row_fields,
                                 used_columns)
from studio.data.tables import TABLE_EXTENSIONS, TableFile
from studio.data.text_lines import BadFile, Skipped, TextLines
from studio.settings import Settings, load_settings

DOCUMENT_EXTENSIONS = {".txt", ".md"}
# How a plain text file becomes documents (``documents``); "auto": one file is paragraphs, several a document each.
TEXT_SPLITS = ("auto", "file", "blank_lines", "lines")


@dataclass
class ReadResult:
    items: list[Item] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def documents(lines: Iterable[str], mode: str) -> Iterator[str]:
    """The documents in ``lines`` (each with its line ending). ``file``: all of it is one document;
    ``blank_lines``: paragraphs; ``lines``: each line. Blank documents are left out."""
    if mode == "lines":
        parts = (line.rstrip("\n") for line in lines)
    elif mode == "blank_lines":
        parts = _paragraphs(lines)
    else:
        parts = iter(["".join(lines)])
    return (part for part in parts if part.strip())


def _paragraphs(lines: Iterable[str]) -> Iterator[str]:
    """Runs of lines between whitespace-only lines: what re.split(r"\\n\\s*\\n", text) gives for the whole text."""
    paragraph: list[str] = []
    for line in lines:
        if line.endswith("\n") and not line.strip():
            if paragraph:
                yield "".join(paragraph)[:-1]  # the line break before a blank line belongs to the separator
            paragraph = []
        else:
            paragraph.append(line)
    if paragraph:
        yield "".join(paragraph)


def split_documents(text: str, mode: str) -> list[str]:
    """``documents`` of a text already in memory."""
    return list(documents(io.StringIO(text, newline=None), mode))


@dataclass
class Reading:
    """How far the reading of a set of files has come, by bytes, for progress and its time left: the files
    finished, and the fraction of the one at work (``current``)."""
    sizes: list[int]
    finished: int = 0  # files done
    current: Callable[[], float] = lambda: 0.0

    def fraction(self) -> float:
        total = sum(self.sizes) or 1
        done = sum(self.sizes[:self.finished])
        at_work = self.sizes[self.finished] * self.current() if self.finished < len(self.sizes) else 0
        return min((done + at_work) / total, 1.0)


def _document_items(staged: StagedFile, mode: str, settings: Settings, result: ReadResult,
                    reading: Reading) -> Iterator[Item]:
    skipped = Skipped(staged.name, "lines")
    size = max(staged.path.stat().st_size, 1)
    found = 0
    with TextLines(staged.path, settings.max_line_chars, skipped) as lines:
        reading.current = lambda: min(lines.tell() / size, 1.0)
        for number, text in enumerate(documents(lines, mode), 1):
            found += 1
            yield Item(source=staged.name if mode == "file" else f"{staged.name}#{number}", text=text)
    if not found and skipped.count:
        raise BadFile("nothing usable: " + "; ".join(p.reason for p in skipped.warnings()))
    result.warnings.extend(skipped.warnings())


def _table_items(staged: StagedFile, mapping: ColumnMapping | None, settings: Settings,
                 result: ReadResult, reading: Reading) -> Iterator[Item]:
    table = TableFile(staged.path, staged.name, settings)
    reading.current = table.fraction
    chosen = complete_mapping(mapping, table.columns) if mapping else guess_mapping(table.columns)
    if problem := mapping_problem(staged.name, chosen, table.columns):
        raise BadFile(problem)
    found = 0
    for number, row in table.rows(used_columns(chosen)):
        try:
            item = Item(source=f"{staged.name}#{number}", **row_fields(row, chosen))
        except (ValueError, json.JSONDecodeError, TypeError) as error:
            table.skipped.add(f"{staged.name}#{number}", f"row skipped: {error}")
            continue
        found += 1
        yield item
    result.notes.append(f"{staged.name}: {found + table.skipped.count} rows, {chosen.describe()}")
    result.warnings.extend(table.skipped.warnings())


Progress = Callable[[float, str], None]  # (fraction of the files read, what is read now)


def each_file(files: list[StagedFile], result: ReadResult, progress: Progress | None) -> Iterator[StagedFile]:
    """``files`` one by one, telling ``progress`` (when given) which one is read and how many items came so far."""
    for number, staged in enumerate(files):
        if progress:
            progress(number / len(files), f"reading file {number + 1} of {len(files)}: {staged.name} "
                                          f"({len(result.items)} items so far)")
        yield staged


def iter_text_items(files: list[StagedFile], mapping: ColumnMapping | None, text_split: str, settings: Settings,
                    result: ReadResult, reading: Reading | None = None, whole_files: bool = True,
                    progress: Progress | None = None) -> Iterator[Item]:
    """Every usable text item in ``files``, as it is read; each unusable file becomes a Problem in ``result`` (with
    its warnings and notes), the rest go on. ``whole_files``: a file's items come only once all of it has been read,
    so a file found bad half-way gives none; otherwise (an import that streams) they come as they are read, and a
    file found bad half-way keeps the items read before the fault, which its problem says."""
    reading = reading or Reading([0] * len(files))
    document_files = [f for f in files if f.path.suffix.lower() in DOCUMENT_EXTENSIONS]
    # One big file is almost always a corpus of paragraphs; many files are one document each.
    mode = text_split if text_split != "auto" else ("blank_lines" if len(document_files) == 1 else "file")
    if document_files:
        result.notes.append(f"{len(document_files)} text file(s), split: {mode}")
    given_in_all = 0
    for number, staged in enumerate(files):
        reading.finished, reading.current = number, (lambda: 0.0)
        if progress:
            progress(reading.fraction(), f"reading file {number + 1} of {len(files)}: {staged.name} "
                                         f"({given_in_all:,} items so far)")
        suffix = staged.path.suffix.lower()
        given = 0
        try:
            if suffix in DOCUMENT_EXTENSIONS:
                items = _document_items(staged, mode, settings, result, reading)
            elif suffix in TABLE_EXTENSIONS:
                items = _table_items(staged, mapping, settings, result, reading)
            else:
                result.problems.append(Problem(staged.name, f"'{suffix or 'no extension'}' is not a "
                                               "text format (use .txt .md .csv .tsv .jsonl .json .parquet)"))
                continue
            if whole_files:
                items = list(items)
            for item in items:
                given += 1
                given_in_all += 1
                yield item
        except BadFile as bad:
            kept = f" (the {given:,} items read before it were imported)" if given and not whole_files else ""
            result.problems.append(Problem(staged.name, f"{bad}{kept}"))
    reading.finished = len(files)


def read_text_files(files: list[StagedFile], mapping: ColumnMapping | None = None, text_split: str = "auto",
                    settings: Settings | None = None, progress: Progress | None = None) -> ReadResult:
    """Every usable text item in ``files``, all in memory; each unusable file becomes a Problem, the rest go on."""
    result = ReadResult()
    result.items.extend(iter_text_items(files, mapping, text_split, settings or load_settings(), result,
                                        Reading([1] * len(files)), progress=progress))
    return result


def preview_tables(files: list[StagedFile], rows: int = 5, settings: Settings | None = None) -> list[dict]:
    """For the mapping preview: each table's columns, guessed mapping, first rows (only those are read), or its
    problem."""
    settings = settings or load_settings()
    previews = []
    for staged in files:
        if staged.path.suffix.lower() not in TABLE_EXTENSIONS:
            continue
        try:
            table = TableFile(staged.path, staged.name, settings)
            guess = guess_mapping(table.columns)
            first = table.rows()
            try:
                head = [row for _, row in islice(first, rows)]
            finally:
                first.close()
            previews.append({"file": staged.name, "columns": table.columns, "rows": head,
                             "mapping": guess.model_dump() if guess else None,
                             "problem": mapping_problem(staged.name, guess, table.columns)})
        except BadFile as bad:
            previews.append({"file": staged.name, "columns": [], "rows": [], "mapping": None,
                             "problem": str(bad)})
    return previews

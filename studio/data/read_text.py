"""Text files → text items: plain documents, tables (csv/tsv/jsonl/json/parquet), chat logs."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from studio.data.archive import StagedFile
from studio.data.items import Item, Problem
from studio.data.mapping import ColumnMapping, guess_mapping, mapping_problem, row_fields
from studio.data.sniff import sniff

TABLE_EXTENSIONS = {".csv", ".tsv", ".jsonl", ".json", ".parquet"}
DOCUMENT_EXTENSIONS = {".txt", ".md"}


class BadFile(Exception):
    """A file that cannot be used; the message is the reason shown to the person."""


@dataclass
class ReadResult:
    items: list[Item] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def decode_text(path: Path) -> str:
    data = path.read_bytes()
    if not data:
        raise BadFile("empty file (0 bytes)")
    kind = sniff(data[:64])
    if kind:
        raise BadFile(f"not text: the content is {kind}")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadFile(f"not valid UTF-8 text (undecodable byte 0x{data[error.start]:02x} at offset "
                      f"{error.start}); save the file as UTF-8") from None


def split_documents(text: str, mode: str) -> list[str]:
    """``file``: the whole file is one document; ``blank_lines``: paragraphs; ``lines``: each line."""
    if mode == "lines":
        parts = text.splitlines()
    elif mode == "blank_lines":
        parts = re.split(r"\n\s*\n", text)
    else:
        parts = [text]
    return [p for p in parts if p.strip()]


def load_table(path: Path) -> tuple[list[str], list[dict]]:
    """Column names and rows of a csv/tsv/jsonl/json/parquet file; BadFile when unreadable."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
            table = pq.read_table(path)
        except Exception as error:  # pyarrow raises several unrelated types for bad files
            raise BadFile(f"not a readable Parquet file ({error})") from None
        return list(table.column_names), table.to_pylist()
    text = decode_text(path)
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        try:
            rows = [dict(row) for row in reader]
        except csv.Error as error:
            raise BadFile(f"not a readable CSV file ({error})") from None
        return list(reader.fieldnames or []), rows
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise BadFile(f"line {number} is not valid JSON ({error.msg})") from None
            rows.append(value if isinstance(value, dict) else {"text": value})
        return _columns_of(rows), rows
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadFile(f"not valid JSON ({error.msg} at line {error.lineno})") from None
    if isinstance(value, dict):  # {"data": [...]} and similar wrappers
        lists = [v for v in value.values() if isinstance(v, list)]
        value = lists[0] if len(lists) == 1 else [value]
    if not isinstance(value, list):
        raise BadFile("JSON must be a list of records")
    rows = [v if isinstance(v, dict) else {"text": v} for v in value]
    return _columns_of(rows), rows


def _columns_of(rows: list[dict]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows[:1000]:
        columns.update(dict.fromkeys(row))
    return list(columns)


def _table_items(staged: StagedFile, mapping: ColumnMapping | None, result: ReadResult) -> None:
    columns, rows = load_table(staged.path)
    chosen = mapping or guess_mapping(columns)
    if problem := mapping_problem(staged.name, chosen, columns):
        raise BadFile(problem)
    result.notes.append(f"{staged.name}: {len(rows)} rows, {chosen.describe()}")
    bad_rows = 0
    for number, row in enumerate(rows, 1):
        try:
            result.items.append(Item(source=f"{staged.name}#{number}", **row_fields(row, chosen)))
        except (ValueError, json.JSONDecodeError, TypeError) as error:
            bad_rows += 1
            if bad_rows <= 5:
                result.warnings.append(Problem(f"{staged.name}#{number}", f"row skipped: {error}"))
    if bad_rows > 5:
        result.warnings.append(Problem(staged.name, f"{bad_rows} rows skipped in all"))


def read_text_files(files: list[StagedFile], mapping: ColumnMapping | None = None,
                    text_split: str = "auto") -> ReadResult:
    """Every usable text item in ``files``; each unusable file becomes a Problem, the rest go on."""
    result = ReadResult()
    documents = [f for f in files if f.path.suffix.lower() in DOCUMENT_EXTENSIONS]
    # One big file is almost always a corpus of paragraphs; many files are one document each.
    mode = text_split if text_split != "auto" else ("blank_lines" if len(documents) == 1 else "file")
    if documents:
        result.notes.append(f"{len(documents)} text file(s), split: {mode}")
    for staged in files:
        suffix = staged.path.suffix.lower()
        try:
            if suffix in DOCUMENT_EXTENSIONS:
                for number, doc in enumerate(split_documents(decode_text(staged.path), mode), 1):
                    source = staged.name if mode == "file" else f"{staged.name}#{number}"
                    result.items.append(Item(source=source, text=doc))
            elif suffix in TABLE_EXTENSIONS:
                _table_items(staged, mapping, result)
            else:
                result.problems.append(Problem(staged.name, f"'{suffix or 'no extension'}' is not a "
                                               "text format (use .txt .md .csv .tsv .jsonl .json .parquet)"))
        except BadFile as bad:
            result.problems.append(Problem(staged.name, str(bad)))
    return result


def preview_tables(files: list[StagedFile], rows: int = 5) -> list[dict]:
    """For the mapping preview: each table's columns, guessed mapping, first rows, or its problem."""
    previews = []
    for staged in files:
        if staged.path.suffix.lower() not in TABLE_EXTENSIONS:
            continue
        try:
            columns, table = load_table(staged.path)
            guess = guess_mapping(columns)
            previews.append({"file": staged.name, "columns": columns, "rows": table[:rows],
                             "mapping": guess.model_dump() if guess else None,
                             "problem": mapping_problem(staged.name, guess, columns)})
        except BadFile as bad:
            previews.append({"file": staged.name, "columns": [], "rows": [], "mapping": None,
                             "problem": str(bad)})
    return previews

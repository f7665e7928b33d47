"""Tables (csv, tsv, jsonl, json, parquet) read a row at a time, every row within the limits.

What is held in memory at once: one row (a line of at most STUDIO_MAX_LINE_CHARS characters, at most
STUDIO_MAX_TABLE_COLUMNS columns) or one batch of Parquet rows of the columns in use. Only a .json file, which
has to be parsed whole, is held whole, and so it is held to STUDIO_MAX_JSON_MB.
"""

from __future__ import annotations

import csv
import json
from itertools import islice
from pathlib import Path
from typing import Iterator

from studio.data.text_lines import BadFile, LineTooLong, Skipped, TextLines, read_whole
from studio.settings import Settings

TABLE_EXTENSIONS = {".csv", ".tsv", ".jsonl", ".json", ".parquet"}
COLUMN_SAMPLE_ROWS = 1000  # the keys of this many JSON records make up the columns of a jsonl/json table
PARQUET_BATCH_ROWS = 256
PARQUET_READ_BUFFER = 1 << 20


class TableFile:
    """A table's columns, and its rows on demand (each ``rows`` call reads the file again).

    A file that cannot be read at all is a BadFile; a row that breaks a limit is left out and noted in ``skipped``.
    """

    def __init__(self, path: Path, name: str, settings: Settings):
        self.path, self.name, self.settings = path, name, settings
        self.suffix = path.suffix.lower()
        self.skipped = Skipped(name, "rows")
        self.size = max(path.stat().st_size, 1)
        self._lines: TextLines | None = None  # the lines being read, for ``fraction``
        self._parquet_done: float = 0.0
        self._records = self._json_records() if self.suffix == ".json" else None
        self.columns = self._read_columns()
        if problem := self._too_wide(self.columns):
            raise BadFile(problem)

    def rows(self, needed: list[str] | None = None) -> Iterator[tuple[int, dict]]:
        """(row number from 1, row) for each row within the limits. ``needed``: the columns that will be used
        (Parquet then reads only those)."""
        for number, row in enumerate(self._raw_rows(needed), 1):
            if problem := self._over_limits(row):
                self.skipped.add(f"{self.name}#{number}", f"row skipped: {problem}")
            else:
                yield number, row

    def fraction(self) -> float:
        """How much of the file the rows read so far came from (0..1), for progress."""
        if self.suffix == ".parquet":
            return self._parquet_done
        return min(self._lines.tell() / self.size, 1.0) if self._lines is not None else 0.0

    # ------------------------------------------------------------------------------------------ columns

    def _read_columns(self) -> list[str]:
        if self.suffix == ".parquet":
            with self._parquet() as table:
                return list(table.schema_arrow.names)
        if self.suffix in (".csv", ".tsv"):
            records = self._csv_records(header_only=True)
            try:
                return next(records, [])
            finally:
                records.close()
        if self._records is not None:
            return self._sample_columns(self._records)
        records = self._jsonl_records(Skipped(self.name))
        try:
            return self._sample_columns(records)
        finally:
            records.close()

    def _sample_columns(self, records) -> list[str]:
        """The keys of the first records. A record over the column limit is left out here (and skipped, named,
        when the rows are read), unless every one is: then those are the table's columns."""
        columns: dict[str, None] = {}
        widest: list = []
        for row in islice(records, COLUMN_SAMPLE_ROWS):
            if len(row) <= self.settings.max_table_columns:
                columns.update(dict.fromkeys(row))
            elif len(row) > len(widest):
                widest = list(row)
        return list(columns) or widest

    # --------------------------------------------------------------------------------------------- rows

    def _raw_rows(self, needed: list[str] | None) -> Iterator[dict]:
        if self.suffix == ".parquet":
            return self._parquet_rows([c for c in needed if c in self.columns] if needed else None)
        if self.suffix in (".csv", ".tsv"):
            return self._csv_rows()
        return self._jsonl_records(self.skipped) if self._records is None else iter(self._records)

    def _too_wide(self, columns) -> str | None:
        if len(columns) > (limit := self.settings.max_table_columns):
            return f"it has {len(columns):,} columns; the limit is {limit:,} (STUDIO_MAX_TABLE_COLUMNS)"
        return None

    def _over_limits(self, row: dict) -> str | None:
        if problem := self._too_wide(row):
            return problem
        limit = self.settings.max_line_chars
        for column, value in row.items():
            if (size := _text_size(value)) > limit:
                return f"column '{column}' holds {size:,} characters; the limit is {limit:,} (STUDIO_MAX_LINE_CHARS)"
        return None

    def _csv_records(self, header_only: bool = False) -> Iterator[list[str]]:
        """The non-blank records of a csv/tsv file. A record may span lines (quoted line breaks) but never runs
        past STUDIO_MAX_LINE_CHARS in all, so a quote that is never closed cannot swallow the file."""
        limit = self.settings.max_line_chars
        csv.field_size_limit(max(csv.field_size_limit(), limit))  # the bound on a record below is the one that holds
        record_chars = 0
        with TextLines(self.path, limit, None if header_only else self.skipped) as lines:
            self._lines = lines

            def bounded_lines():
                nonlocal record_chars
                for line in lines:
                    record_chars += len(line)
                    if record_chars > limit:
                        raise BadFile(f"line {lines.number}: a row runs on over several lines past {limit:,} "
                                      "characters (STUDIO_MAX_LINE_CHARS): a quoted field that is never closed?")
                    yield line

            reader = csv.reader(bounded_lines(), delimiter="\t" if self.suffix == ".tsv" else ",")
            try:
                for record in reader:
                    record_chars = 0
                    if record:
                        yield record
            except csv.Error as error:
                raise BadFile(f"not a readable CSV file (line {reader.line_num}: {error})") from None
            except LineTooLong as error:  # only the header is read without a place to note skipped lines
                raise BadFile(f"the header (line {error.number}) is longer than {limit:,} characters "
                              f"(STUDIO_MAX_LINE_CHARS); a table has at most {self.settings.max_table_columns:,} "
                              "columns (STUDIO_MAX_TABLE_COLUMNS)") from None

    def _csv_rows(self) -> Iterator[dict]:
        records = self._csv_records()
        header = next(records, [])
        for record in records:  # missing cells are None and extra cells dropped, as csv.DictReader does
            yield {column: record[i] if i < len(record) else None for i, column in enumerate(header)}

    def _jsonl_records(self, skipped: Skipped) -> Iterator[dict]:
        with TextLines(self.path, self.settings.max_line_chars, skipped) as lines:
            self._lines = lines
            for line in lines:
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as error:
                    raise BadFile(f"line {lines.number} is not valid JSON ({error.msg})") from None
                yield value if isinstance(value, dict) else {"text": value}

    def _json_records(self) -> list[dict]:
        limit_mb = self.settings.max_json_mb
        if (size := self.path.stat().st_size) > limit_mb * 2**20:
            raise BadFile(f"a .json file is parsed whole, and this one is {size / 2**20:,.0f} MB (limit {limit_mb:,} "
                          "MB, STUDIO_MAX_JSON_MB): save it as .jsonl, one record per line, which is read a line "
                          "at a time")
        try:
            value = json.loads(read_whole(self.path, limit_mb * 2**20))
        except json.JSONDecodeError as error:
            raise BadFile(f"not valid JSON ({error.msg} at line {error.lineno})") from None
        if isinstance(value, dict):  # {"data": [...]} and similar wrappers
            lists = [v for v in value.values() if isinstance(v, list)]
            value = lists[0] if len(lists) == 1 else [value]
        if not isinstance(value, list):
            raise BadFile("JSON must be a list of records")
        return [v if isinstance(v, dict) else {"text": v} for v in value]

    def _parquet(self):
        import pyarrow.parquet as pq

        try:
            # buffered, without pre-buffering: pages stream through a small buffer instead of whole column chunks
            return pq.ParquetFile(self.path, buffer_size=PARQUET_READ_BUFFER, pre_buffer=False)
        except Exception as error:  # pyarrow raises several unrelated types for bad files
            raise BadFile(f"not a readable Parquet file ({error})") from None

    def _parquet_rows(self, columns: list[str] | None) -> Iterator[dict]:
        with self._parquet() as table:
            try:
                rows, done = max(table.metadata.num_rows, 1), 0
                for batch in table.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
                    done += batch.num_rows
                    self._parquet_done = done / rows
                    yield from batch.to_pylist()
            except Exception as error:  # corrupt pages only show when they are read
                raise BadFile(f"not a readable Parquet file ({error})") from None


def _text_size(value) -> int:
    """Characters of text in a cell, nested values (chat messages) included."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_text_size(v) for v in value.values())
    if isinstance(value, list):
        return sum(_text_size(v) for v in value)
    return 0

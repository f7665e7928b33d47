"""Text files read a line at a time, each line bounded, so no upload is ever held whole in memory.

A 200 MB file with no line break is read in pieces of ``STUDIO_MAX_LINE_CHARS`` characters and its line
skipped (and named), instead of being decoded into one 200 MB string.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from studio.data.items import Problem
from studio.data.sniff import sniff

SHOWN_SKIPS = 5  # skipped lines or rows named one by one; the rest are counted


class BadFile(Exception):
    """A file that cannot be used; the message is the reason shown to the person."""


class LineTooLong(BadFile):
    def __init__(self, number: int, limit: int):
        super().__init__(longer_than(f"line {number}", limit))
        self.number = number


class Skipped:
    """Lines or rows of one file that were left out: the first few named, with why, the rest counted."""

    def __init__(self, file: str, noun: str = "rows"):
        self.file, self.noun = file, noun
        self.count = 0
        self.shown: list[Problem] = []

    def add(self, where: str, reason: str) -> None:
        self.count += 1
        if len(self.shown) < SHOWN_SKIPS:
            self.shown.append(Problem(where, reason))

    def warnings(self) -> list[Problem]:
        summary = [Problem(self.file, f"{self.count} {self.noun} skipped in all")] if self.count > SHOWN_SKIPS else []
        return self.shown + summary


def longer_than(what: str, limit: int) -> str:
    return f"{what} is longer than {limit:,} characters (STUDIO_MAX_LINE_CHARS)"


class TextLines:
    """The lines of a UTF-8 (or UTF-16 with a byte-order mark) file, decoded as they are read.

    Each line comes with its ending ("\\r\\n" and "\\r" read as "\\n") and is at most ``max_chars`` long.
    A longer line is read on in pieces of ``max_chars`` and dropped: it is added to ``skipped`` when given,
    else LineTooLong is raised. ``number`` is the number of the line last read.
    """

    def __init__(self, path: Path, max_chars: int, skipped: Skipped | None = None):
        self.path, self.max_chars, self.skipped = path, max_chars, skipped
        self.number = 0
        with open(path, "rb") as handle:
            head = handle.read(64)
        if not head:
            raise BadFile("empty file (0 bytes)")
        if kind := sniff(head):
            raise BadFile(f"not text: the content is {kind}")
        self.encoding = "utf-16" if head.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig"
        self._handle = open(path, encoding=self.encoding, newline=None)

    def __enter__(self) -> TextLines:
        return self

    def tell(self) -> int:
        """Bytes of the file read so far (give or take the read-ahead buffer), for progress."""
        return 0 if self._handle.closed else self._handle.buffer.tell()

    def __exit__(self, *_) -> None:
        self._handle.close()

    def __iter__(self) -> TextLines:
        return self

    def __next__(self) -> str:
        while line := self._read(self.max_chars + 1):
            self.number += 1
            if len(line) <= self.max_chars or line.endswith("\n"):
                return line
            while (rest := self._read(self.max_chars)) and not rest.endswith("\n"):
                pass  # the rest of an over-long line, a bounded piece at a time
            if self.skipped is None:
                raise LineTooLong(self.number, self.max_chars)
            self.skipped.add(self.skipped.file, f"{longer_than(f'line {self.number}', self.max_chars)}; skipped")
        raise StopIteration

    def _read(self, limit: int) -> str:
        try:
            return self._handle.readline(limit)
        except UnicodeDecodeError:
            raise BadFile(self._undecodable()) from None

    def _undecodable(self) -> str:
        """Where the first undecodable byte is, found again from the start in bounded chunks (the text reader
        only knows its place within the chunk it was decoding)."""
        name = "UTF-16" if self.encoding == "utf-16" else "UTF-8"
        with open(self.path, "rb") as handle:
            offset = 3 if self.encoding == "utf-8-sig" and handle.read(3) == codecs.BOM_UTF8 else 0
            handle.seek(offset)
            decoder = codecs.getincrementaldecoder("utf-16" if name == "UTF-16" else "utf-8")()
            while True:
                chunk = handle.read(1 << 20)
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as error:
                    at = offset - pending + error.start
                    return (f"not valid {name} text (undecodable byte 0x{error.object[error.start]:02x} at offset "
                            f"{at}); save the file as UTF-8")
                if not chunk:
                    return f"not valid {name} text; save the file as UTF-8"
                offset += len(chunk)


def read_whole(path: Path, max_chars: int, what: str = "the file") -> str:
    """All the text of a file that must be used whole (a caption, a .json file); BadFile past ``max_chars``."""
    parts, size = [], 0
    with TextLines(path, max_chars) as lines:
        for line in lines:
            size += len(line)
            if size > max_chars:
                raise BadFile(longer_than(what, max_chars))
            parts.append(line)
    return "".join(parts)

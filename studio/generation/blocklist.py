"""The optional output filter: a blocklist of words or phrases (setting ``STUDIO_BLOCKLIST``) applied to text
prompts and text outputs. A prompt that contains one is refused; an output that contains one is masked and
flagged. Both are reported with the words found, never silently."""

from __future__ import annotations

import re
from pathlib import Path

MASK = "[blocked]"


class Blocklist:
    def __init__(self, words: list[str]):
        self.words = sorted({w.strip().lower() for w in words if w.strip()}, key=lambda w: (-len(w), w))
        self.pattern = (re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in self.words) + r")(?!\w)",
                                   re.IGNORECASE) if self.words else None)

    def __bool__(self) -> bool:
        return self.pattern is not None

    def found(self, text: str | None) -> list[str]:
        """The blocked words in ``text`` (lower-case, each once, in order of appearance)."""
        if not self.pattern or not text:
            return []
        return list(dict.fromkeys(m.group(1).lower() for m in self.pattern.finditer(text)))

    def mask(self, text: str) -> str:
        return self.pattern.sub(MASK, text) if self.pattern else text

    def settled(self, text: str) -> str:
        """What of a text still being written can be shown now, masked: everything before a tail that could yet
        become (or complete) a blocked word or phrase: "so ba" waits for "bad", "very bad" for "very bad thing",
        and a complete "bad" for what follows (it may be "badge"). What it returns is always the start of the
        masked finished text, so streamed pieces never need taking back."""
        if not self.pattern:
            return text
        lowered = text.lower()
        # only a tail no longer than the longest blocked word can still become one: each streamed token scans that
        # much, not the whole text so far
        near_end = max(len(lowered) - len(self.words[0]), 0)
        for start in (m.start() for m in re.compile(r"(?<!\w)\w").finditer(lowered, near_end)):  # earliest first
            tail = lowered[start:]
            if any(word.startswith(tail) for word in self.words):
                return self.mask(text[:start])
        return self.mask(text)


def load_blocklist(value: str) -> Blocklist:
    """``value``: comma-separated words, or the path of a file with one word or phrase per line (``#`` starts a
    comment). A value that looks like a path but names no file is an error, not a list of one odd word."""
    value = (value or "").strip()
    if not value:
        return Blocklist([])
    path = Path(value).expanduser()
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        return Blocklist([line.split("#", 1)[0] for line in lines])
    if "/" in value or "\\" in value or value.lower().endswith(".txt"):
        raise ValueError(f"blocklist file '{value}' does not exist (STUDIO_BLOCKLIST takes comma-separated words "
                         "or the path of a file with one per line)")
    return Blocklist(value.split(","))

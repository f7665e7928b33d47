"""The few plain records the data pipeline passes around."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MODALITIES = ("text", "image", "audio")
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp"}
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3"}
TEXT_EXTENSIONS = {".txt", ".md", ".csv", ".tsv", ".jsonl", ".json", ".parquet"}
ARCHIVE_EXTENSIONS = {".zip"}


class ImportRefused(Exception):
    """Nothing can be imported (nothing usable, or the input itself was refused). ``details`` holds what was found
    on the way (``errors``, ``removed``, ``warnings``), so the person sees why."""

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = details or {}


@dataclass
class Problem:
    """A file we could not use, and why, in words a person can act on."""
    file: str
    reason: str

    def as_dict(self) -> dict:
        return {"file": self.file, "reason": self.reason}


@dataclass
class Item:
    """One example. Text items fill text / prompt+response / messages; media items fill path."""
    source: str
    text: str | None = None
    prompt: str | None = None
    response: str | None = None
    rejected: str | None = None  # a preference pair's rejected response (prompt/chosen/rejected tables)
    messages: list[dict] | None = None
    path: Path | None = None
    caption: str | None = None
    meta: dict = field(default_factory=dict)
    # A media preference pair: ``path`` is the chosen file, ``rejected_path`` the rejected one (with its own meta).
    rejected_path: Path | None = None
    rejected_meta: dict = field(default_factory=dict)
    label: bool | None = None  # a thumbs up (True) or down (False): see studio.data.preferences

    @property
    def is_pair(self) -> bool:
        return self.rejected is not None or self.rejected_path is not None

    def rejected_half(self) -> "Item":
        """The rejected file of a media pair as an item of its own, for the cleaning steps to check it the way
        they check the chosen one."""
        return Item(source=f"{self.source} (rejected)", path=self.rejected_path, caption=self.caption,
                    meta=self.rejected_meta)

    @property
    def text_format(self) -> str:
        if self.messages is not None:
            return "chat"
        if self.prompt is not None:
            return "pair"
        return "text"

    def content(self) -> str:
        """All the words of a text item, for length limits and duplicate detection."""
        if self.messages is not None:
            chat = "\n".join(f"{m['role']}: {m['content']}" for m in self.messages)
            return chat + (f"\nrejected: {self.rejected}" if self.rejected is not None else "")
        if self.prompt is not None:
            return f"{self.prompt}\n{self.response or ''}" + (f"\n{self.rejected}" if self.rejected is not None else "")
        return self.text or ""

    def map_text(self, fix) -> bool:
        """Apply ``fix`` to every text field; True when anything changed."""
        before = self.content()
        if self.text is not None:
            self.text = fix(self.text)
        if self.prompt is not None:
            self.prompt = fix(self.prompt)
        if self.response is not None:
            self.response = fix(self.response)
        if self.rejected is not None:
            self.rejected = fix(self.rejected)
        if self.messages is not None:
            self.messages = [{**m, "content": fix(m["content"])} for m in self.messages]
        return self.content() != before

    def manifest_row(self) -> dict:
        row: dict = {}
        for key in ("text", "prompt", "response", "rejected", "messages", "caption"):
            value = getattr(self, key)
            if value is not None:
                row[key] = value
        if self.label is not None:
            row["label"] = self.label
        row["source"] = self.source
        return row

"""What a cleaning step is: a name, a pydantic params model (the single source for the UI form,
the CLI and the stored report) and a plain function ``items -> StepOutcome``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pydantic import BaseModel

from studio.data.items import Item


@dataclass
class StepContext:
    modality: str
    scratch: Path  # steps that rewrite media files write the new files here
    _files: int | None = field(default=None, init=False, repr=False)  # entries in scratch, once counted
    # What a step that compares items remembers between the chunks of one import (the first of each exact
    # duplicate, the near-duplicate index), by (step, part): a media pair's rejected files are compared among
    # themselves ("rejected"), apart from the chosen ones ("chosen").
    _memory: dict = field(default_factory=dict, init=False, repr=False)
    part: str = field(default="chosen", init=False)

    def memory(self, step: str, make: Callable[[], object]):
        """The state ``step`` keeps across the chunks of this import (made by ``make`` on the first chunk)."""
        key = (step, self.part)
        if key not in self._memory:
            self._memory[key] = make()
        return self._memory[key]

    def memory_held(self) -> list:
        return list(self._memory.values())

    def new_file(self, suffix: str) -> Path:
        """The next numbered file in scratch: 0000000.png, 0000001.flac, ...

        The folder is listed once, on the first call; after that the count goes up by one per call,
        since each caller writes the file it was given. (Listing it on every call made rewriting n
        images cost O(n^2): 28 s instead of 3 s for 8,000 images with resize_crop on.)
        """
        self.scratch.mkdir(parents=True, exist_ok=True)
        if self._files is None:
            self._files = sum(1 for _ in self.scratch.iterdir())
        target = self.scratch / f"{self._files:07d}{suffix}"
        self._files += 1
        return target


@dataclass
class StepOutcome:
    kept: list[Item]
    removed: list[tuple[Item, str]] = field(default_factory=list)
    changed: list[tuple[Item, str, str]] = field(default_factory=list)  # item, before, after
    detail: str = ""
    # A near-duplicate step's removals as (removed item, the kept item's source, similarity): the clusters
    matches: list[tuple[Item, str, float]] = field(default_factory=list)


class NoParams(BaseModel):
    pass


@dataclass(frozen=True)
class Step:
    name: str
    label: str
    help: str
    run: Callable[[list[Item], BaseModel, StepContext], StepOutcome]
    params: type[BaseModel] = NoParams
    on_by_default: bool = True
    # For a step that removes items: the setting that keeps more of them, in words, with the params' values in braces
    # ("raise its threshold (now {threshold})"); an import that loses most of its items to the step says it.
    keep_more: str = ""
    # A step that compares items with each other (duplicates): a media pair goes only when both of its files repeat
    # others (one chosen image against two different rejected ones is two judgements, not a duplicate).
    compares_items: bool = False


def filter_items(items: list[Item], why_removed: Callable[[Item], str | None]) -> StepOutcome:
    """Keep the items for which ``why_removed`` returns None; remove the rest with its reason."""
    outcome = StepOutcome(kept=[])
    for item in items:
        reason = why_removed(item)
        if reason is None:
            outcome.kept.append(item)
        else:
            outcome.removed.append((item, reason))
    return outcome


def digest(text: str) -> bytes:
    """16 bytes standing for ``text`` in a set of seen texts: a million 800-character texts are 50 MB of keys
    instead of 1.6 GB (two different texts share a digest with odds of about 1 in 10^26 at that count)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def drop_repeats(items: list[Item], key: Callable[[Item], object],
                 first_seen: dict[object, str] | None = None) -> StepOutcome:
    """Keep the first item of each ``key``; later ones are removed as duplicates of it. ``first_seen`` (key → the
    first one's source) carries over between the chunks of one import."""
    first_seen = {} if first_seen is None else first_seen

    def why(item: Item) -> str | None:
        k = key(item)
        if k in first_seen:
            return f"exact duplicate of {first_seen[k]}"
        first_seen[k] = item.source
        return None

    return filter_items(items, why)


def transform_text(items: list[Item], fix: Callable[[str], str]) -> StepOutcome:
    outcome = StepOutcome(kept=items)
    for item in items:
        before = item.content()
        if item.map_text(fix):
            outcome.changed.append((item, before, item.content()))
    return outcome

"""Steps every modality has: missing captions and greedy near-duplicate removal."""

from __future__ import annotations

import re
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, Field

from studio.data.items import Item
from studio.data.steps.base import Step, StepContext, StepOutcome


class CaptionParams(BaseModel):
    action: Literal["drop", "fill"] = Field("drop", description="drop the item, or fill from the template")
    template: str = Field("{name}", description="caption for 'fill'; {name} is the file name in words, {trigger} "
                                                "the trigger word")
    trigger_word: str = Field("", description="the word a LoRA learns the subject by (e.g. 'sks dog'), as kohya_ss and "
                                              "ai-toolkit call it: the caption of an item without one (with action "
                                              "'drop' too), and put before each caption that lacks it")


def _name_in_words(item: Item) -> str:
    stem = item.source.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return re.sub(r"\s+", " ", re.sub(r"[_\-\d]+", " ", stem)).strip() or stem


def _with_trigger(caption: str, trigger: str) -> str:
    """``caption`` led by the trigger word, unless it already holds it (as ai-toolkit adds it)."""
    return caption if trigger.lower() in caption.lower() else f"{trigger}, {caption}"


def missing_captions(items: list[Item], params: CaptionParams, _ctx: StepContext) -> StepOutcome:
    """A folder of uncaptioned photos of one subject (the usual image LoRA) trains with the trigger word alone as
    each caption; captioned items keep theirs, led by the trigger word."""
    outcome = StepOutcome(kept=[])
    trigger = params.trigger_word.strip()
    for item in items:
        before = item.caption or ""
        if before.strip():
            item.caption = _with_trigger(before, trigger) if trigger else before
        elif params.action == "fill":
            item.caption = params.template.format(name=_name_in_words(item), trigger=trigger).strip()
        elif trigger:
            item.caption = trigger
        else:
            outcome.removed.append((item, "no caption (no sidecar .txt and no metadata row)"))
            continue
        if item.caption != before:
            outcome.changed.append((item, before, item.caption))
        outcome.kept.append(item)
    return outcome


MISSING_CAPTIONS = Step("missing_captions", "Missing captions",
                        "Items without a caption are dropped, or given one from a template or the trigger word.",
                        missing_captions, CaptionParams,
                        keep_more="give it a trigger_word (uncaptioned photos of one subject), or set its action to "
                                  "fill (captions from the file names, or a template)")


Match = tuple[str, float]  # the kept item's source, and the similarity


def greedy_near_duplicates(items: list[Item], match: Callable[[int], Match | None],
                           keep: Callable[[int], None]) -> StepOutcome:
    """Walk the items in order; an item similar to one already kept (``match(i)``: that one's source and the
    similarity, above the threshold) is removed, naming it; any other is kept (``keep(i)`` adds it to the index,
    so later items, of this chunk or the next, are compared with it)."""
    outcome = StepOutcome(kept=[])
    for index, item in enumerate(items):
        found = match(index)
        if found is None:
            keep(index)
            outcome.kept.append(item)
        else:
            source, similarity = found
            outcome.removed.append((item, f"near-duplicate of {source} (similarity {similarity:.2f})"))
            outcome.matches.append((item, source, similarity))
    return outcome


class KeptFeatures:
    """The kept items' features (rows of a growing array), what ``compatible`` needs of each (``extras``) and their
    sources, across the chunks of one import: what a media near-duplicate step compares each new item with.

    ``similarities(features, one)`` gives one similarity per kept row. The most similar kept item at or above
    ``threshold`` that is ``compatible(new extra, kept extra)`` is the match (ties: the first kept)."""

    def __init__(self, similarities: Callable[[np.ndarray, np.ndarray], np.ndarray], threshold: float,
                 compatible: Callable[[object, object], bool] = lambda a, b: True):
        self.similarities, self.threshold, self.compatible = similarities, threshold, compatible
        self.features: np.ndarray | None = None
        self.count = 0
        self.extras: list = []
        self.sources: list[str] = []

    def match(self, feature: np.ndarray, extra) -> Match | None:
        if not self.count:
            return None
        similarities = self.similarities(self.features[:self.count], feature)
        # Only the few candidates at or above the threshold are sorted: sorting all kept items for every item
        # made the step O(n^2 log n).
        candidates = np.flatnonzero(similarities >= self.threshold)
        for best in candidates[np.argsort(-similarities[candidates], kind="stable")]:
            if self.compatible(extra, self.extras[best]):
                return self.sources[best], float(similarities[best])
        return None

    def keep(self, feature: np.ndarray, extra, source: str) -> None:
        feature = np.asarray(feature)
        if self.features is None:
            self.features = np.empty((64, *feature.shape), dtype=feature.dtype)
        elif self.count == len(self.features):  # doubling: amortised O(1) a row
            self.features = np.concatenate([self.features, np.empty_like(self.features)])
        self.features[self.count] = feature
        self.count += 1
        self.extras.append(extra)
        self.sources.append(source)


def near_duplicates_by_features(items: list[Item], index: KeptFeatures, features: np.ndarray,
                                extras: list) -> StepOutcome:
    """``greedy_near_duplicates`` of ``items`` (with their ``features`` and ``extras``) against ``index``."""
    return greedy_near_duplicates(items, lambda i: index.match(features[i], extras[i]),
                                  lambda i: index.keep(features[i], extras[i], items[i].source))


def hamming_similarities(bits: int):
    """Similarities of 64-bit perceptual codes: 1 - hamming distance / ``bits``."""
    return lambda kept, code: 1.0 - np.bitwise_count(kept ^ code) / bits


def cosine_similarities(kept: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Similarities of unit-norm fingerprint vectors."""
    return kept @ vector

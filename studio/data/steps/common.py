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


def greedy_near_duplicates(items: list[Item], similar_to_kept: Callable[[int, list[int]], tuple[int, float] | None]
                           ) -> StepOutcome:
    """Walk the items in order; an item similar to one already kept is removed, naming that one.

    ``similar_to_kept(i, kept_indices)`` returns (index of the most similar kept item, similarity)
    when it is above the threshold, else None.
    """
    outcome = StepOutcome(kept=[])
    kept_indices: list[int] = []
    for index, item in enumerate(items):
        match = similar_to_kept(index, kept_indices) if kept_indices else None
        if match is None:
            kept_indices.append(index)
            outcome.kept.append(item)
        else:
            other, similarity = match
            outcome.removed.append((item, f"near-duplicate of {items[other].source} "
                                          f"(similarity {similarity:.2f})"))
    return outcome


def nearest_by_hamming(codes: np.ndarray, bits: int, threshold: float,
                       compatible: Callable[[int, int], bool] = lambda a, b: True):
    """A ``similar_to_kept`` for 64-bit perceptual codes: similarity = 1 - hamming / bits."""
    def similar(index: int, kept: list[int]):
        similarities = 1.0 - np.bitwise_count(codes[kept] ^ codes[index]) / bits
        # Most similar first, ties in kept order. Only the few candidates at or above the threshold
        # are sorted: sorting all kept items for every item made the step O(n^2 log n).
        candidates = np.flatnonzero(similarities >= threshold)
        for best in candidates[np.argsort(-similarities[candidates], kind="stable")]:
            if compatible(index, kept[best]):
                return kept[best], float(similarities[best])
        return None
    return similar


def nearest_by_cosine(vectors: np.ndarray, threshold: float, compatible: Callable[[int, int], bool]):
    """A ``similar_to_kept`` for unit-norm fingerprint vectors."""
    def similar(index: int, kept: list[int]):
        scores = vectors[kept] @ vectors[index]
        for best in np.argsort(-scores):
            if scores[best] < threshold:
                return None
            if compatible(index, kept[best]):
                return kept[best], float(scores[best])
        return None
    return similar

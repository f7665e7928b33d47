"""Which items a sample set offers for rating, and which one a rater sees next.

A pair is two samples of one prompt and one sample index (so one seed) from two variants; its key is the two
sample ids, smaller first. Each rater sees each item once. The next pair is drawn where the ranking is least
settled: among the variant pairs this rater still has items for, the one whose strength difference has the
widest standard error (thin comparisons and under-exposed variants), with a little noise so near-equal
choices alternate; within it, the items with the fewest votes so far, at random. Sides are drawn at random
for every showing. Absolute scoring offers single samples, the least-scored variants' first.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import combinations

_random = random.Random()


@dataclass(frozen=True)
class Item:
    key: str
    prompt_index: int
    sample_index: int
    samples: tuple[int, ...]   # sample ids (pairwise: smaller first)
    variants: tuple[str, ...]  # their variants, in the same order


def pair_key(first: int, second: int) -> str:
    low, high = sorted((int(first), int(second)))
    return f"{low}-{high}"


def pair_items(samples: list[dict]) -> list[Item]:
    """Every pair of samples of the same prompt and sample index from different variants. ``samples``: dicts with
    ``id``, ``variant``, ``prompt_index``, ``sample_index``."""
    groups: dict[tuple[int, int], list[dict]] = {}
    for sample in samples:
        groups.setdefault((sample["prompt_index"], sample["sample_index"]), []).append(sample)
    found = []
    for (prompt_index, sample_index), group in sorted(groups.items()):
        by_variant = {}
        for sample in sorted(group, key=lambda s: s["id"]):
            by_variant.setdefault(sample["variant"], sample)  # one sample per variant and seed
        for first, second in combinations(sorted(by_variant.values(), key=lambda s: s["id"]), 2):
            found.append(Item(pair_key(first["id"], second["id"]), prompt_index, sample_index,
                              (first["id"], second["id"]), (first["variant"], second["variant"])))
    return found


def single_items(samples: list[dict]) -> list[Item]:
    return [Item(str(s["id"]), s["prompt_index"], s["sample_index"], (s["id"],), (s["variant"],))
            for s in sorted(samples, key=lambda s: s["id"])]


def choose_pair(candidates: list[Item], uncertainty: dict[tuple[str, str], float], votes_per_item: dict[str, int],
                rng: random.Random | None = None) -> Item | None:
    """The next pair among ``candidates`` (the items this rater has not seen)."""
    if not candidates:
        return None
    rng = rng or _random
    by_pair: dict[frozenset, list[Item]] = {}
    for item in candidates:
        by_pair.setdefault(frozenset(item.variants), []).append(item)

    def width(variants: frozenset) -> float:
        a, b = sorted(variants)
        return uncertainty.get((a, b), 1.0) * (1.0 + 0.15 * rng.random())

    widest = max(by_pair, key=width)
    return _fewest_votes(by_pair[widest], votes_per_item, rng)


def choose_single(candidates: list[Item], votes_per_item: dict[str, int], votes_per_variant: dict[str, int],
                  rng: random.Random | None = None) -> Item | None:
    """The next sample to score: from the least-scored variant, the least-scored samples, at random."""
    if not candidates:
        return None
    rng = rng or _random
    fewest = min(votes_per_variant.get(item.variants[0], 0) for item in candidates)
    pool = [item for item in candidates if votes_per_variant.get(item.variants[0], 0) == fewest]
    return _fewest_votes(pool, votes_per_item, rng)


def _fewest_votes(items: list[Item], votes_per_item: dict[str, int], rng: random.Random) -> Item:
    fewest = min(votes_per_item.get(item.key, 0) for item in items)
    return rng.choice([item for item in items if votes_per_item.get(item.key, 0) == fewest])


def left_first(rng: random.Random | None = None) -> bool:
    """Whether the pair's first sample goes on the left ("A"): a fair coin per showing."""
    return (rng or _random).random() < 0.5

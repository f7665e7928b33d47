"""Train / validation / test split with a fixed seed."""

from __future__ import annotations

import random

SPLITS = ("train", "validation", "test")


def parse_fractions(text: str | tuple | list) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' (or a sequence) → fractions that add up to 1."""
    parts = [float(p) for p in (text.split(",") if isinstance(text, str) else text)]
    if len(parts) == 2:
        parts.append(0.0)
    if len(parts) != 3 or any(p < 0 for p in parts) or not 0.999 <= sum(parts) <= 1.001 or parts[0] == 0:
        raise ValueError(f"split must be three non-negative fractions adding up to 1 with train > 0, "
                         f"like 0.8,0.1,0.1 (got {text!r})")
    return tuple(parts)  # type: ignore[return-value]


def assign_splits(count: int, fractions: tuple[float, float, float], seed: int) -> list[str]:
    """The split of each of ``count`` items. Every split with a non-zero fraction gets at least one
    item when there are enough items, so a small dataset still has something to validate on."""
    sizes = [int(round(count * f)) for f in fractions]
    for index in (1, 2):
        if fractions[index] > 0 and sizes[index] == 0 and count - sum(sizes[1:]) > 1:
            sizes[index] = 1
    # Rounding both evaluation splits up can leave nothing to train on (4 items at 0.2,0.4,0.4 →
    # 0,2,2); train's fraction is never 0, so give it an item back from the larger evaluation split.
    while count and sizes[1] + sizes[2] >= count:
        sizes[1 if sizes[1] >= sizes[2] else 2] -= 1
    sizes[0] = count - sizes[1] - sizes[2]
    labels = [name for name, size in zip(SPLITS, sizes) for _ in range(size)]
    random.Random(seed).shuffle(labels)
    return labels

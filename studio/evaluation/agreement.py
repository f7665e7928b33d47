"""How much raters agree: Krippendorff's alpha and raw agreement.

Reliability data are given per unit (an item several raters judged) as the list of values its raters gave,
one per rater, missing ratings simply absent. Alpha follows Krippendorff (2011), "Computing Krippendorff's
Alpha-Reliability": the coincidence matrix counts every ordered pair of values from different raters of a
unit, weighted 1/(m_u − 1) for a unit with m_u values; units with fewer than two values are not pairable.
α = 1 − D_o / D_e, with the observed and expected disagreement under the level's distance (nominal: 0 when
equal, else 1; interval: the squared difference).
"""

from __future__ import annotations

from collections import Counter
from itertools import permutations
from typing import Hashable, Iterable, Sequence

LEVELS = ("nominal", "interval")


def _distance(level: str):
    if level == "nominal":
        return lambda c, k: 0.0 if c == k else 1.0
    if level == "interval":
        return lambda c, k: (float(c) - float(k)) ** 2
    raise ValueError(f"level must be one of {', '.join(LEVELS)} (got {level!r})")


def coincidences(units: Iterable[Sequence[Hashable]]) -> Counter:
    """The coincidence matrix ``o[(c, k)]`` of the pairable units."""
    found: Counter = Counter()
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for c, k in permutations(values, 2):
            found[(c, k)] += 1.0 / (m - 1)
    return found


def krippendorff_alpha(units: Iterable[Sequence[Hashable]], level: str = "nominal") -> float | None:
    """Krippendorff's alpha of per-unit rating lists; None when nothing is pairable or every value is the same
    (no expected disagreement: alpha is undefined)."""
    delta = _distance(level)
    o = coincidences(units)
    if not o:
        return None
    n_c: Counter = Counter()
    for (c, _k), weight in o.items():
        n_c[c] += weight
    n = sum(n_c.values())
    if n <= 1:
        return None
    observed = sum(weight * delta(c, k) for (c, k), weight in o.items()) / n
    expected = sum(n_c[c] * n_c[k] * delta(c, k) for c in n_c for k in n_c) / (n * (n - 1))
    if expected == 0:
        return None
    return 1.0 - observed / expected


def raw_agreement(units: Iterable[Sequence[Hashable]], ignore: Iterable[Hashable] = ()) -> float | None:
    """The share of pairs of ratings of the same unit (from different raters) that are equal, leaving out values
    in ``ignore`` (e.g. ties, to measure agreement on decisive votes only). None when no pair exists."""
    ignored = set(ignore)
    agree = total = 0
    for values in units:
        kept = [v for v in values if v not in ignored]
        for i in range(len(kept)):
            for j in range(i + 1, len(kept)):
                total += 1
                agree += kept[i] == kept[j]
    return agree / total if total else None


def units_from_matrix(matrix: Sequence[Sequence]) -> list[list]:
    """Per-unit value lists from a raters × units table with None (or NaN) for a missing rating."""
    def missing(value) -> bool:
        return value is None or (isinstance(value, float) and value != value)

    columns = max((len(row) for row in matrix), default=0)
    return [[row[u] for row in matrix if u < len(row) and not missing(row[u])] for u in range(columns)]

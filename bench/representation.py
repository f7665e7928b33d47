"""Benchmark: the representation report's counting (``studio.data.representation.count_units``) on synthetic
items, side by side with what one would otherwise write: a flat ``re`` alternation of each list's terms
(case-insensitive, whole words, longest first; the studio's blocklist works this way), one pass per list, which only
finds the terms (no groups, shares, co-occurrence or examples).

Items are ~800 characters of common English words with about one word in twelve from the shipped lists (pronouns,
nouns of people, occupations, adjectives, nationalities), sentences ended every ~14 words. Both count the same
items with the same shipped lists; it prints CPU seconds (`time.process_time`: the machine may be shared), items per
CPU second for each, and the ratio.

    .venv/bin/python bench/representation.py                 # 20,000 items
    .venv/bin/python bench/representation.py --items 100000 --seed 3

The data is generated from ``--seed``; generation is not timed.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.data.lexicons import normal, parse_lexicon, plural_forms, shipped_texts  # noqa: E402
from studio.data.representation import ReportOptions, Unit, count_units  # noqa: E402

PLAIN = ("people time year day way thing world life hand part eye place work week case point government company "
         "number group problem fact the of and to in that was it for on with as at by from this have not but had "
         "they were been has their which there would could about into more other some what when").split()
TERMS = ("he she his her him woman man women men girl boy mother father nurse doctor engineer teacher manager "
         "strong kind-hearted lazy intelligent beautiful American Chinese French Muslim Christian elderly child "
         "children wheelchair user deaf autistic police officer CEO").split()


def make_items(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    items = []
    for _ in range(count):
        words, length = [], 0
        while length < 800:
            word = rng.choice(TERMS) if rng.random() < 1 / 12 else rng.choice(PLAIN)
            if rng.random() < 1 / 14:
                word += "."
            words.append(word)
            length += len(word) + 1
        items.append(" ".join(words))
    return items


def flat_patterns(lexicons) -> list[re.Pattern]:
    """Per list, one flat alternation of every form (longest first), case-insensitive, whole words."""
    patterns = []
    for lexicon in lexicons:
        forms = {normal(form) for terms in lexicon.groups.values() for term in terms for form in plural_forms(term)}
        alternatives = "|".join(r"[\s\-]+".join(map(re.escape, form.split()))
                                for form in sorted(forms, key=lambda f: (-len(f), f)))
        patterns.append(re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE))
    return patterns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lexicons = [parse_lexicon(name, text) for name, text in shipped_texts().items()]
    items = make_items(args.items, args.seed)
    characters = sum(map(len, items))

    started = time.process_time()
    report = count_units((Unit(i, text) for i, text in enumerate(items)), lexicons, ReportOptions())
    studio_seconds = time.process_time() - started
    mentions = sum(g["mentions"] for c in report["categories"] for g in c["groups"])

    patterns = flat_patterns(lexicons)
    started = time.process_time()
    found = sum(1 for text in items for pattern in patterns for _ in pattern.finditer(text))
    flat_seconds = time.process_time() - started

    print(f"{args.items:,} items, {characters / 1e6:.1f} M characters, {len(lexicons)} lists")
    print(f"{'':<44} {'CPU s':>8} {'items/s':>9}")
    print(f"{'studio report (one trie pass, everything)':<44} {studio_seconds:>8.1f} "
          f"{args.items / studio_seconds:>9,.0f}"
          f"   group mentions {mentions:,}")
    print(f"{'flat alternation per list (terms only)':<44} {flat_seconds:>8.1f} {args.items / flat_seconds:>9,.0f}"
          f"   terms found {found:,}")
    print(f"ratio: the report is {flat_seconds / studio_seconds:.1f}x the speed of the flat patterns")


if __name__ == "__main__":
    main()

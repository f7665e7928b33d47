"""The representation report: how often each group of each category (gender, age, ethnicity/nationality, religion,
disability, or a list of one's own) is mentioned in a set of texts, which occupations and adjectives stand beside
each group, and where one group dominates, always with the items behind each number.

``count_units`` works on any texts (a dataset version's items here; a sample set's outputs in
``studio.evaluation.representation``); ``version_report`` reads a dataset version. A group's *share* is the share
of the items that mention its category at all which mention the group (an item may mention several groups, so
shares need not add up to 1), with a 95 % Wilson interval.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from studio.data.items import ImportRefused
from studio.data.lexicons import Lexicon, Matcher, load_lexicons
from studio.data.service import get_version
from studio.store import Store
from studio.store.projects import project_name

WINDOWS = ("sentence", "item")
SNIPPET_CHARS = 70  # on each side of the term an example shows
TOP_TERMS = 10
TOP_COOCCURRENCES = 40
SENTENCE_END = re.compile(r"[.!?]+(?=\s)|\n")


@dataclass(frozen=True)
class ReportOptions:
    """``window``: where a group term and an occupation or adjective count as together (one sentence, or anywhere
    in one item); a warning needs ``min_items`` items behind it and a share of at least ``threshold``;
    ``examples``: how many items each number lists."""
    window: str = "sentence"
    threshold: float = 0.7
    min_items: int = 10
    examples: int = 20

    def __post_init__(self):
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)} (got '{self.window}')")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold is a share from 0 to 1, e.g. 0.7 (got {self.threshold})")
        if self.min_items < 1 or self.examples < 1:
            raise ValueError("min items and examples are whole numbers from 1")


@dataclass(frozen=True)
class Unit:
    """One text to count: its ``id`` (a manifest row's, a sample's) and what the items behind a number show beside
    it (``extra``: the split, the variant)."""
    id: int
    text: str
    extra: dict = field(default_factory=dict)


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float | None, float | None]:
    """The Wilson score interval of ``successes / trials`` (95 % by default); (None, None) with no trials."""
    if trials <= 0:
        return None, None
    share = successes / trials
    denominator = 1 + z * z / trials
    centre = (share + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def snippet(text: str, start: int) -> str:
    left, right = max(0, start - SNIPPET_CHARS), start + SNIPPET_CHARS
    return ("…" if left else "") + " ".join(text[left:right].split()) + ("…" if right < len(text) else "")


class _Tally:
    """What the counting keeps: bounded by the lists' size and ``examples``, not by the number of items."""

    def __init__(self, options: ReportOptions):
        self.options = options
        self.units = self.with_text = 0
        self.category_items: Counter = Counter()
        self.group_items: Counter = Counter()  # (category, group) → items
        self.group_mentions: Counter = Counter()
        self.group_terms: dict = defaultdict(Counter)  # (category, group) → term → mentions
        self.group_examples: dict = defaultdict(list)  # (category, group) → [example]
        self.attribute_items: Counter = Counter()  # (list, term) → items
        self.together: Counter = Counter()  # (category, attribute list, term, group) → windows
        self.together_any: Counter = Counter()  # (category, attribute list, term) → windows with any group
        self.together_examples: dict = defaultdict(list)  # (category, list, term, group) → ids

    def example(self, key, unit: Unit, start: int) -> None:
        kept = self.group_examples[key]
        if len(kept) < self.options.examples:
            kept.append({"id": unit.id, **unit.extra, "snippet": snippet(unit.text, start)})

    def together_example(self, key, unit: Unit, start: int) -> None:
        kept = self.together_examples[key]
        if len(kept) < self.options.examples:
            kept.append({"id": unit.id, **unit.extra, "snippet": snippet(unit.text, start)})


def count_units(units: Iterable[Unit], lexicons: list[Lexicon], options: ReportOptions = ReportOptions()) -> dict:
    """The report of ``units`` (see the module's doc) with the lists ``lexicons``."""
    matcher = Matcher(lexicons)
    attribute_lists = {lexicon.name for lexicon in lexicons if lexicon.is_attributes}
    tally = _Tally(options)
    for unit in units:
        tally.units += 1
        if not unit.text.strip():
            continue
        tally.with_text += 1
        _count_unit(tally, unit, matcher, attribute_lists)
    return _report(tally, lexicons)


def _count_unit(tally: _Tally, unit: Unit, matcher: Matcher, attribute_lists: set[str]) -> None:
    text = unit.text
    ends = [m.end() for m in SENTENCE_END.finditer(text)] if tally.options.window == "sentence" else []
    # per window (a sentence's number, or 0 for the whole item): category → groups, and the attribute terms
    groups_in: dict = defaultdict(lambda: defaultdict(set))
    terms_in: dict = defaultdict(dict)  # window → (list, term) → where it first is
    seen_groups, seen_terms = set(), set()
    for start, found in matcher.find(text):
        window = bisect_right(ends, start)
        for name, group, term in found:
            if name in attribute_lists:
                terms_in[window].setdefault((name, term), start)
                seen_terms.add((name, term))
                continue
            key = (name, group)
            tally.group_mentions[key] += 1
            tally.group_terms[key][term] += 1
            if key not in seen_groups:
                seen_groups.add(key)
                tally.group_items[key] += 1
                tally.example(key, unit, start)
            groups_in[window][name].add(group)
    tally.attribute_items.update(seen_terms)
    tally.category_items.update({name for name, _ in seen_groups})
    counted = set()  # an item counts once per (category, term, group) however many sentences hold both
    for window, by_category in groups_in.items():
        for (list_name, term), start in terms_in.get(window, {}).items():
            for category, groups in by_category.items():
                if (category, list_name, term, None) not in counted:
                    counted.add((category, list_name, term, None))
                    tally.together_any[(category, list_name, term)] += 1
                for group in groups:
                    key = (category, list_name, term, group)
                    if key not in counted:
                        counted.add(key)
                        tally.together[key] += 1
                        tally.together_example(key, unit, start)


def _report(tally: _Tally, lexicons: list[Lexicon]) -> dict:
    options = tally.options
    report = {"items": tally.units, "items_with_text": tally.with_text, "window": options.window,
              "threshold": options.threshold, "min_items": options.min_items, "categories": [], "attributes": [],
              "warnings": [],
              "lexicons": {lexicon.name: {"groups": len(lexicon.groups),
                                          "terms": sum(map(len, lexicon.groups.values())),
                                          "kind": "attributes" if lexicon.is_attributes else "groups"}
                           for lexicon in lexicons}}
    for lexicon in lexicons:
        if not lexicon.is_attributes:
            report["categories"].append(_category(tally, lexicon))
    for lexicon in (lexicon for lexicon in lexicons if lexicon.is_attributes):
        counts = Counter({term: n for (name, term), n in tally.attribute_items.items() if name == lexicon.name})
        report["attributes"].append({"name": lexicon.name, "terms": counts.most_common()})
    report["warnings"] = [w for category in report["categories"] for w in category.pop("warnings")]
    return report


def _category(tally: _Tally, lexicon: Lexicon) -> dict:
    options, name = tally.options, lexicon.name
    total = tally.category_items[name]
    groups = []
    for group in lexicon.groups:
        key = (name, group)
        items = tally.group_items[key]
        low, high = wilson(items, total)
        groups.append({"group": group, "items": items, "mentions": tally.group_mentions[key],
                       "share": items / total if total else None, "ci_low": low, "ci_high": high,
                       "terms": tally.group_terms[key].most_common(TOP_TERMS),
                       "examples": tally.group_examples.get(key, [])})
    shares = {g["group"]: g["share"] for g in groups}
    category = {"name": name, "items": total, "groups": groups,
                "absent": [g["group"] for g in groups if not g["items"]] if total else [],
                "cooccurrence": _cooccurrence(tally, name, list(lexicon.groups), shares), "warnings": []}
    category["warnings"] = _warnings(category, options)
    return category


def _cooccurrence(tally: _Tally, category: str, groups: list[str], shares: dict) -> list[dict]:
    rows = []
    for (name, list_name, term), windows in tally.together_any.items():
        if name != category:
            continue
        counts = {g: tally.together[(category, list_name, term, g)] for g in groups}
        top = max(groups, key=lambda g: counts[g])
        rows.append({"attribute": term, "list": list_name, "items": windows, "counts": counts, "top": top,
                     "share": counts[top] / windows, "overall_share": shares.get(top),
                     "examples": {g: tally.together_examples.get((category, list_name, term, g), []) for g in groups
                                  if counts[g]}})
    rows.sort(key=lambda r: (-r["items"], r["attribute"]))
    return rows[:TOP_COOCCURRENCES]


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%"


def _warnings(category: dict, options: ReportOptions) -> list[dict]:
    """A group whose share of its category is at least the threshold and above every other group's (with enough
    items to say so), and an
    occupation or adjective that stands mostly beside one group, more than that group's share overall."""
    warnings = []
    name, total = category["name"], category["items"]
    window = "sentences" if options.window == "sentence" else "items"
    if total >= options.min_items and len(category["groups"]) > 1:
        for group in category["groups"]:
            others = [g["share"] or 0.0 for g in category["groups"] if g is not group]
            if group["share"] is not None and group["share"] >= options.threshold and group["share"] > max(others):
                warnings.append({
                    "kind": "imbalance", "category": name, "group": group["group"], "count": group["items"],
                    "of": total, "share": group["share"],
                    "message": f"{name}: '{group['group']}' is mentioned in {group['items']} of the {total} items "
                               f"that mention {name} ({_percent(group['share'])}; others: "
                               + ", ".join(f"{g['group']} {g['items']}" for g in category["groups"]
                                           if g is not group) + ")",
                    "examples": group["examples"]})
    for row in category["cooccurrence"]:
        overall = row["overall_share"] or 0.0
        if row["items"] >= options.min_items and row["share"] >= options.threshold and row["share"] > overall:
            warnings.append({
                "kind": "cooccurrence", "category": name, "group": row["top"], "attribute": row["attribute"],
                "list": row["list"], "count": row["counts"][row["top"]], "of": row["items"], "share": row["share"],
                "message": f"{row['list']}: '{row['attribute']}' stands beside '{row['top']}' terms in "
                           f"{row['counts'][row['top']]} of the {row['items']} {window} where it meets {name} terms "
                           f"({_percent(row['share'])}; '{row['top']}' is in {_percent(overall)} of all items that "
                           f"mention {name})",
                "examples": row["examples"].get(row["top"], [])})
    return warnings


# ----------------------------------------------------------------------------- a dataset version

def row_text(row: dict) -> str:
    """The words of a manifest row a model learns from: text, prompt and response, a conversation's turns, a
    caption (a preference pair's rejected answer is left out: training pushes away from it)."""
    parts = [row.get(key) for key in ("text", "prompt", "response", "caption")]
    parts += [m.get("content") for m in row.get("messages") or [] if isinstance(m, dict)]
    return "\n".join(p for p in parts if isinstance(p, str) and p)


def version_units(store: Store, version, limit: int | None = None):
    """The version's items as units, the first ``limit`` only when given (read one line at a time)."""
    with open(store.path(version.path) / "manifest.jsonl", encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if limit is not None and number >= limit:
                return
            row = json.loads(line)
            yield Unit(row["id"], row_text(row), {"split": row.get("split")})


def version_label(version) -> str:
    return f"dataset {version.dataset_id} '{version.dataset.name}' v{version.version}"


def count_version(store: Store, version, lexicons: list[Lexicon], options: ReportOptions,
                  limit: int | None = None) -> dict:
    """``count_units`` of a version's items (the first ``limit``); ImportRefused naming the version when none
    has text."""
    report = count_units(version_units(store, version, limit), lexicons, options)
    if not report["items_with_text"]:
        what = "captions" if version.dataset.modality != "text" else "text"
        raise ImportRefused(f"{version_label(version)} has no {what} to count ({report['items']} items, none with "
                            f"{what}): the representation report reads text and captions")
    return {"dataset": f"{version.dataset_id}:{version.version}", "label": version_label(version),
            "modality": version.dataset.modality, "items_in_version": version.items_kept, **report}


def version_report(store: Store, ref: str, lexicon_files: list = (), options: ReportOptions = ReportOptions(),
                   limit: int | None = None) -> dict:
    """The representation report of dataset version ``ref`` (``DATASET_ID[:VERSION]``) with its project's lists
    (and ``lexicon_files`` for this report only), of its first ``limit`` items when given; ImportRefused naming the
    version when it holds no text."""
    version = get_version(store, ref)
    with store.session() as session:
        project = project_name(session, version.dataset.project_id)
    return {**count_version(store, version, load_lexicons(store, project, lexicon_files), options, limit),
            "project": project}

"""Numbers about a dataset version, computed once when it is made and stored with its report."""

from __future__ import annotations

import re
from collections import Counter

from studio.data.items import Item
from studio.data.steps.text import count_tokens

STOPWORDS = set("a an the of and or to in on at with for by is are was were be it this that from as".split())
MAX_POINTS = 20_000  # enough for any histogram or scatter a person can read
WORD = re.compile(r"[a-zà-ÿ']+")


def _words(text: str | None) -> list[str]:
    return [w for w in WORD.findall(text.lower()) if w not in STOPWORDS] if text else []


def top_words(texts, n: int = 20) -> list[tuple[str, int]]:
    return Counter(w for t in texts for w in _words(t)).most_common(n)


class StatsTally:
    """``dataset_stats`` an item at a time, for an import that streams: the lists and the words are of the first
    MAX_POINTS items, the counts of all of them, so what it holds stays bounded."""

    def __init__(self, modality: str):
        self.modality = modality
        self.seen = 0
        self.points: dict[str, list] = {}
        self.counts: dict[str, Counter] = {"formats" if modality == "text" else "sample_rates": Counter()}
        self.words: Counter = Counter()

    def _point(self, name: str, value) -> None:
        self.points.setdefault(name, []).append(value)

    def add(self, item: Item) -> None:
        sampled = self.seen < MAX_POINTS
        self.seen += 1
        if self.modality == "text":
            self.counts["formats"][item.text_format] += 1
            if sampled:
                content = item.content()
                self._point("tokens", count_tokens(content))
                self._point("characters", len(content))
                self.words.update(_words(content))
            return
        if self.modality == "audio":
            self.counts["sample_rates"][str(item.meta["sample_rate"])] += 1
        if not sampled:
            return
        self.words.update(_words(item.caption))
        if self.modality == "image":
            self._point("width", item.meta["width"])
            self._point("height", item.meta["height"])
        else:
            self._point("duration", round(item.meta["duration"], 3))

    def result(self) -> dict:
        if self.modality == "text":
            return {"tokens": self.points.get("tokens", []), "characters": self.points.get("characters", []),
                    "formats": dict(self.counts["formats"]), "top_words": self.words.most_common(20)}
        stats = {"top_words": self.words.most_common(20)}
        if self.modality == "image":
            stats.update(width=self.points.get("width", []), height=self.points.get("height", []))
        else:
            stats.update(duration=self.points.get("duration", []), sample_rates=dict(self.counts["sample_rates"]))
        return stats


def dataset_stats(items: list[Item], modality: str) -> dict:
    tally = StatsTally(modality)
    for item in items:
        tally.add(item)
    return tally.result()

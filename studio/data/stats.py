"""Numbers about a dataset version, computed once when it is made and stored with its report."""

from __future__ import annotations

import re
from collections import Counter

from studio.data.items import Item
from studio.data.steps.text import count_tokens

STOPWORDS = set("a an the of and or to in on at with for by is are was were be it this that from as".split())
MAX_POINTS = 20_000  # enough for any histogram or scatter a person can read


def top_words(texts, n: int = 20) -> list[tuple[str, int]]:
    counts = Counter(w for t in texts if t for w in re.findall(r"[a-zà-ÿ']+", t.lower()) if w not in STOPWORDS)
    return counts.most_common(n)


def dataset_stats(items: list[Item], modality: str) -> dict:
    sample = items[:MAX_POINTS]
    if modality == "text":
        return {"tokens": [count_tokens(i.content()) for i in sample],
                "characters": [len(i.content()) for i in sample],
                "formats": dict(Counter(i.text_format for i in items)),
                "top_words": top_words(i.content() for i in sample)}
    stats = {"top_words": top_words(i.caption for i in sample)}
    if modality == "image":
        stats.update(width=[i.meta["width"] for i in sample], height=[i.meta["height"] for i in sample])
    else:
        stats.update(duration=[round(i.meta["duration"], 3) for i in sample],
                     sample_rates=dict(Counter(str(i.meta["sample_rate"]) for i in items)))
    return stats

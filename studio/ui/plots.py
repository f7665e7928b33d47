"""Matplotlib figures for the UI (Agg backend, imported only when a plot is drawn)."""

from __future__ import annotations


def _figure(title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 3.2), dpi=100)
    axes.set_title(title, fontsize=11)
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    return figure, axes


def histogram(values: list[float], title: str, xlabel: str):
    figure, axes = _figure(title)
    if values:
        axes.hist(values, bins=min(40, max(5, len(set(values)))), color="#4c78a8")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("items")
    figure.tight_layout()
    return figure


def scatter(xs: list[float], ys: list[float], title: str, xlabel: str, ylabel: str):
    figure, axes = _figure(title)
    axes.scatter(xs, ys, s=10, alpha=0.5, color="#4c78a8")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    figure.tight_layout()
    return figure


def bars(pairs: list[tuple[str, int]], title: str):
    figure, axes = _figure(title)
    pairs = list(reversed(pairs[:15]))
    axes.barh([p[0] for p in pairs], [p[1] for p in pairs], color="#f58518")
    axes.set_xlabel("count")
    figure.tight_layout()
    return figure


def dataset_figures(stats: dict, modality: str) -> tuple:
    """The two figures of a version's statistics: its size distribution and its most frequent words."""
    if modality == "text":
        first = histogram(stats.get("tokens", []), "Length", "tokens per item")
        words_title = "Most frequent words"
    elif modality == "image":
        first = scatter(stats.get("width", []), stats.get("height", []), "Resolution", "width (px)", "height (px)")
        words_title = "Most frequent caption words"
    else:
        first = histogram(stats.get("duration", []), "Duration", "seconds")
        words_title = "Most frequent caption words"
    return first, bars([tuple(p) for p in stats.get("top_words", [])], words_title)

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


def intervals(rows: list[dict], title: str, xlabel: str, value: str = "strength", short=None):
    """One horizontal bar per row: ``value`` with its 95 % interval (``ci_low``..``ci_high``), best on top. ``short``
    (row → a short, distinct name) names the bars, with the full names (``label``) listed under the plot."""
    figure, axes = _figure(title)
    shown = [r for r in rows if r.get(value) is not None][::-1]
    for y, row in enumerate(shown):
        low, high = row.get("ci_low"), row.get("ci_high")
        if low is not None and high is not None:
            axes.plot([low, high], [y, y], color="#4c78a8", linewidth=3, alpha=0.5)
        axes.plot([row[value]], [y], "o", color="#4c78a8")
    names = [str(r.get("label") or r.get("variant")) for r in shown]
    labels = [short(r) for r in shown] if short else names
    axes.set_yticks(range(len(shown)), labels, fontsize=8)
    axes.set_xlabel(xlabel)
    return _names_below(figure, labels, names)


def matrix(values: list[list], labels: list[str], title: str, fmt: str = "{:.2f}", names: list[str] | None = None):
    """A heat map of a square matrix (row variant against column variant), each cell written out. ``labels`` (short,
    distinct) name the rows and columns; ``names``, their full names, are listed under the map where they differ."""
    import numpy as np

    figure, axes = _figure(title)
    grid = np.array([[np.nan if v is None else float(v) for v in row] for row in values], dtype=float)
    axes.imshow(grid, cmap="Blues", vmin=0)
    axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if v is not None and i != j:
                axes.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8)
    return _names_below(figure, labels, names)


def _names_below(figure, labels: list[str], names: list[str] | None):
    """The figure with "short: full name" listed under it for each label that is not its full name."""
    legend = [f"{short}: {name}" for short, name in zip(labels, names or labels) if short != name]
    below = 0.15 * len(legend) + 0.1 if legend else 0.0  # inches under the plot for the legend, a line each
    height = 3.2 + below
    figure.set_size_inches(5.5, height)
    figure.tight_layout(rect=(0, below / height, 1, 1))
    if legend:
        figure.text(0.02, 0.02, "\n".join(legend), fontsize=7, va="bottom", color="#444")
    return figure


def by_step(points: list[dict], title: str, ylabel: str, value: str = "strength"):
    """A value (with its interval when the points have one) against the training step."""
    figure, axes = _figure(title)
    shown = sorted((p for p in points if p.get(value) is not None), key=lambda p: p["step"])
    steps = [p["step"] for p in shown]
    axes.plot(steps, [p[value] for p in shown], "o-", color="#4c78a8")
    if shown and all(p.get("ci_low") is not None for p in shown):
        axes.fill_between(steps, [p["ci_low"] for p in shown], [p["ci_high"] for p in shown], alpha=0.2,
                          color="#4c78a8")
    axes.set_xlabel("training step")
    axes.set_ylabel(ylabel)
    figure.tight_layout()
    return figure


def round_name(point: dict) -> str:
    """A round as people say it: "base" (a starter's: "(untrained)"), "SFT" (or the first run's own objective:
    "adversarial" for a GAN), "round 2 · dpo"; then which checkpoint."""
    objective = point.get("objective")
    if objective is None:
        return "base\n(untrained)" if point.get("run_id") is not None else "base"
    if point.get("round"):
        kind = f"round {point['round']} · {objective}"
    else:
        kind = "SFT" if objective == "sft" else objective
    return f"{kind}\nrun {point['run_id']} step {point['step']}"


def rounds_chart(points: list[dict], title: str = "Human preference across rounds"):
    """Strength (with its 95 % interval) of each round of the preference loop, oldest on the left, on one
    Bradley-Terry scale: a line that should climb. The most preferred round stands out; each says its votes."""
    figure, axes = _figure(title)
    xs = list(range(len(points)))
    strengths = [p["strength"] for p in points]
    best = max(xs, key=lambda i: strengths[i]) if points else None
    axes.plot(xs, strengths, "-", color="#4c78a8", alpha=0.6, zorder=1)
    for x, point in zip(xs, points):
        colour = "#e45756" if x == best else "#4c78a8"
        if point.get("ci_low") is not None and point.get("ci_high") is not None:
            axes.plot([x, x], [point["ci_low"], point["ci_high"]], color=colour, linewidth=6, alpha=0.3,
                      solid_capstyle="round", zorder=2)
        axes.plot([x], [point["strength"]], "o", color=colour, markersize=9, zorder=3)
        axes.annotate(f"{point['votes']} votes", (x, point["strength"]), textcoords="offset points", xytext=(8, -3),
                      fontsize=7, color="#666")
    axes.set_xticks(xs, [round_name(p) for p in points], fontsize=8)
    axes.set_xlim(-0.5, len(points) - 0.5)
    axes.set_ylabel("preference (strength)")
    axes.axhline(0, color="#ccc", linewidth=0.8, zorder=0)
    figure.tight_layout()
    return figure


SERIES_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2")


def share_bars(labels: list[str], series: list[tuple[str, list[dict]]], title: str):
    """Horizontal bars of shares (0..1) with their 95 % intervals: one row per label, one bar per series in it
    (``series``: (name, one ``{"share", "ci_low", "ci_high"}`` per label)); the first label on top."""
    import numpy as np

    figure, axes = _figure(title)
    height = max(2.4, 0.22 * len(labels) * max(1, len(series)) + 1.2)
    figure.set_size_inches(6.5, height)
    width = 0.8 / max(1, len(series))
    ys = np.arange(len(labels))[::-1].astype(float)
    for number, (name, shares) in enumerate(series):
        offsets = ys + 0.4 - width * (number + 0.5)
        values = [s["share"] or 0.0 for s in shares]
        errors = [[max(0.0, (s["share"] or 0.0) - (s["ci_low"] or 0.0)) for s in shares],
                  [max(0.0, (s["ci_high"] or 0.0) - (s["share"] or 0.0)) for s in shares]]
        axes.barh(offsets, values, height=width, xerr=errors, color=SERIES_COLOURS[number % len(SERIES_COLOURS)],
                  error_kw={"elinewidth": 1, "ecolor": "#333", "capsize": 2}, label=name)
    axes.set_yticks(ys, labels, fontsize=8)
    axes.set_xlim(0, 1)
    axes.set_xlabel("share of the items that mention the category (95% interval)")
    if len(series) > 1:  # under the axis, where no bar is
        axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=min(4, len(series)),
                    frameon=False)
    figure.tight_layout()
    return figure

"""Benchmark: the default text cleaning pipeline on synthetic rows.

Generates rows of 20-200 words drawn from a Zipf-distributed made-up vocabulary (sentences, some
accented words, curly quotes, dashes, paragraphs; a few % of rows with mojibake, ligatures or stray
spaces for the repair steps), with ~10% exact copies of an earlier row and ~10% near-duplicates (a
few words of an earlier row replaced, true word-3-gram Jaccard about 0.85-0.95), runs
``studio.data.clean.run_cleaning(items, "text", None, ...)`` (every step at its default) and prints
a table: time per step, rows/s, and how many exact and near duplicates were removed, with the
near-duplicate detector's recall on the planted near-duplicates.

    .venv/bin/python bench/clean_text.py                      # 10k, 30k and 100k rows
    .venv/bin/python bench/clean_text.py --sizes 1000 --seed 3
    .venv/bin/python bench/clean_text.py --sizes 30000 --num-perm 128   # near-dup step non-default

The data is generated from ``--seed``, so a run is repeatable; generation is not timed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# The steps import these on first use: importing them here keeps that one-off cost (~0.5 s) out
# of the first timed run.
import datasketch  # noqa: F401
import ftfy  # noqa: F401
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.data.clean import run_cleaning  # noqa: E402
from studio.data.items import Item  # noqa: E402
from studio.data.steps.text import NearDuplicateTextParams  # noqa: E402

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "an", "el", "or", "un", "be", "da", "fe", "gi",
             "ha", "jo", "ku", "le", "ma", "no", "pe", "qu", "ri", "so", "tu", "we", "xi", "yo", "ze", "st"]
THRESHOLD = NearDuplicateTextParams().threshold  # the near-duplicate step's default


@dataclass
class Corpus:
    texts: list[str]
    kind: list[str]               # "original", "exact" or "near", per row
    near_jaccard: dict[int, float]  # near-duplicate row -> true Jaccard of word 3-grams with its source


ACCENTS = {"a": "á", "e": "é", "i": "ï", "o": "ö", "u": "ü", "n": "ñ"}


def make_vocabulary(rng: np.random.Generator, size: int = 6000) -> np.ndarray:
    words = set()
    while len(words) < size:
        word = "".join(rng.choice(SYLLABLES, size=int(rng.integers(1, 5))))
        if rng.random() < 0.03:  # a few loan words with accents, so not every row is plain ASCII
            position = int(rng.integers(len(word)))
            word = word[:position] + ACCENTS.get(word[position], word[position]) + word[position + 1:]
        words.add(word)
    # sorted for repeatability (set order varies between runs), then shuffled so that the Zipf ranks
    # below do not make the alphabetically first words the most common ones
    return np.array(rng.permutation(sorted(words)), dtype=object)


def reset_peak_memory() -> None:
    """Linux: restart the process's peak-RSS count (VmHWM), so the next peak read is the cleaning's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb() -> float:
    """Peak resident memory since the last reset (NaN where /proc is not available)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return float("nan")


def shingle_set(text: str, n: int = 3) -> set[str]:
    """The same word 3-grams the near-duplicate step compares (lower-cased, split on whitespace)."""
    words = text.lower().split()
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb)


def make_corpus(rows: int, seed: int) -> Corpus:
    rng = np.random.default_rng(seed)
    vocab = make_vocabulary(rng)
    # Zipf-like word frequencies, as in real text: a few very common words, a long tail.
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    weights /= weights.sum()
    punctuation = np.array(["", "", "", "", "", "", ",", ",", ";"], dtype=object)

    def sentence_words(count: int) -> list[str]:
        words = list(vocab[rng.choice(len(vocab), size=count, p=weights)])
        # sentences of 5-20 words: capital letter, commas here and there, a full stop at the end,
        # now and then a quotation in curly quotes or a dash; paragraphs in longer rows
        start = 0
        while start < count:
            end = min(count, start + int(rng.integers(5, 21)))
            words[start] = words[start].capitalize()
            for i in range(start, end - 1):
                words[i] += punctuation[rng.integers(len(punctuation))]
                if rng.random() < 0.01:
                    words[i] += " —"
            words[end - 1] += "." if rng.random() > 0.1 else "?"
            if rng.random() < 0.05:
                words[start], words[end - 1] = "“" + words[start], words[end - 1] + "”"
            if end < count and rng.random() < 0.1:
                words[end - 1] += "\n\n"
            start = end
        return words

    def untidy(text: str) -> str:
        """What the repair steps are for: mojibake, ligatures, stray spaces (a few % of rows)."""
        roll = rng.random()
        if roll < 0.01:
            return ("“" + text + "”").encode("utf-8").decode("latin-1")  # UTF-8 read as Latin-1
        if roll < 0.02:
            return text.replace("fe", "ﬀe", 1) + " ﬁn."  # compatibility characters (NFKC folds them)
        if roll < 0.05:
            return "  " + text.replace(". ", ".   ", 3) + " \t"
        return text

    texts: list[str] = []
    kind: list[str] = []
    near_jaccard: dict[int, float] = {}
    originals: list[int] = []        # rows that are neither copies nor edits
    long_originals: list[int] = []   # ... and long enough (40+ words) for a few edits to stay near
    for index in range(rows):
        roll = rng.random()
        if roll < 0.1 and originals:
            texts.append(texts[originals[int(rng.integers(len(originals)))]])
            kind.append("exact")
        elif roll < 0.2 and long_originals:
            source = long_originals[int(rng.integers(len(long_originals)))]
            words = texts[source].split(" ")
            # "a few words": 1 to (words // 50) of them, so the true similarity stays about 0.85-0.99
            edits = 1 + int(rng.integers(0, max(1, len(words) // 50)))
            for position in rng.choice(len(words), size=edits, replace=False):
                old = words[position]
                while words[position] == old:  # a real edit, or the row would be an exact copy
                    words[position] = vocab[rng.integers(len(vocab))]
            texts.append(" ".join(words))
            kind.append("near")
            near_jaccard[index] = jaccard(texts[source], texts[-1])
        else:
            words = sentence_words(int(rng.integers(20, 201)))
            texts.append(untidy(" ".join(words).replace("\n\n ", "\n\n")))
            kind.append("original")
            originals.append(index)
            if len(words) >= 40:
                long_originals.append(index)
    return Corpus(texts, kind, near_jaccard)


def run(rows: int, seed: int, config: dict | None) -> dict:
    corpus = make_corpus(rows, seed)
    items = [Item(source=f"row{i}", text=text) for i, text in enumerate(corpus.texts)]
    with tempfile.TemporaryDirectory() as tmp:
        reset_peak_memory()
        started, cpu_started = time.perf_counter(), time.process_time()
        kept, report = run_cleaning(items, "text", config, Path(tmp) / "scratch", Path(tmp) / "examples")
        total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        peak_mb = peak_memory_mb()
    steps = {entry["step"]: entry for entry in report}
    kept_sources = {item.source for item in kept}
    planted_near = [i for i, k in enumerate(corpus.kind) if k == "near"]
    caught = [i for i in planted_near if f"row{i}" not in kept_sources]
    reachable = [i for i in planted_near if corpus.near_jaccard[i] >= THRESHOLD]
    caught_reachable = [i for i in reachable if f"row{i}" not in kept_sources]
    missed = sorted(corpus.near_jaccard[i] for i in planted_near if f"row{i}" in kept_sources)
    return {
        "rows": rows, "total": total, "cpu": cpu, "steps": steps, "peak_mb": peak_mb,
        "planted_exact": corpus.kind.count("exact"), "planted_near": len(planted_near),
        "removed_exact": steps["exact_duplicates"]["removed"], "removed_near": steps["near_duplicates"]["removed"],
        "recall": len(caught) / max(len(planted_near), 1),
        "recall_reachable": len(caught_reachable) / max(len(reachable), 1), "reachable": len(reachable),
        "false_near": steps["near_duplicates"]["removed"] - len(caught),
        "missed_median_j": missed[len(missed) // 2] if missed else float("nan"),
        "caught_median_j": float(np.median([corpus.near_jaccard[i] for i in caught])) if caught else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,30000,100000", help="comma-separated row counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-perm", type=int, help="MinHash permutations for the near-duplicate step "
                        f"(default: the step's own, {NearDuplicateTextParams().num_perm})")
    args = parser.parse_args()
    config = {"near_duplicates": {"num_perm": args.num_perm}} if args.num_perm else None

    results = []
    for rows in (int(s) for s in args.sizes.split(",")):
        print(f"generating and cleaning {rows:,} rows ...", file=sys.stderr, flush=True)
        results.append(run(rows, args.seed, config))

    step_names = [name for name, entry in results[0]["steps"].items() if entry["enabled"]]
    short = {"fix_encoding": "encoding", "normalize_unicode": "unicode", "whitespace": "space",
             "exact_duplicates": "exact", "near_duplicates": "near"}
    header = ["rows", "total s", "cpu s"] + [f"{short.get(n, n)} s" for n in step_names] + \
             ["rows/s", "peak MB", "exact rm/planted", "near rm/planted", "recall", "recall J>=thr", "not planted",
              "J caught/missed"]
    table = []
    for r in results:
        table.append([f"{r['rows']:,}", f"{r['total']:.2f}", f"{r['cpu']:.2f}"]
                     + [f"{r['steps'][n]['seconds']:.2f}" for n in step_names]
                     + [f"{r['rows'] / r['total']:,.0f}", f"{r['peak_mb']:,.0f}",
                        f"{r['removed_exact']:,}/{r['planted_exact']:,}",
                        f"{r['removed_near']:,}/{r['planted_near']:,}",
                        f"{r['recall']:.1%}", f"{r['recall_reachable']:.1%} of {r['reachable']:,}",
                        f"{r['false_near']:,}",
                        f"{r['caught_median_j']:.2f}/{r['missed_median_j']:.2f}"])
    print()
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    print(" | ".join(h.rjust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in table:
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths)))
    print(f"\ntimes are wall-clock except 'cpu s' (CPU time of this process: compare it with 'total s' to see "
          f"whether other processes were competing for the cores); recall: planted near-duplicates removed; 'recall J>=thr': among those whose true word-3-gram "
          f"Jaccard is >= {THRESHOLD}; 'not planted': near-duplicate removals of rows that were not planted "
          f"(0 expected); 'J caught/missed': median true Jaccard of caught / missed planted near-duplicates; "
          f"'peak MB': peak resident memory of the process while cleaning (the rows themselves included)")
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(f"growth {first['rows']:,} -> {last['rows']:,} rows: x{last['rows'] / first['rows']:.1f} rows, "
              f"x{last['total'] / first['total']:.1f} time")


if __name__ == "__main__":
    main()

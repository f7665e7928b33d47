"""Benchmark: the default text cleaning pipeline on synthetic rows.

Generates rows of 20-200 words drawn from a Zipf-distributed made-up vocabulary (sentences, some
accented words, curly quotes, dashes, paragraphs; a few % of rows with mojibake, ligatures or stray
spaces for the repair steps), with ~10% exact copies of an earlier row and ~10% near-duplicates (a
few words of an earlier row replaced, true word-3-gram Jaccard about 0.85-0.95), runs
``studio.data.clean.run_cleaning(items, "text", None, ...)`` (every step at its default) and prints
a table: time per step, rows/s, and how many exact and near duplicates were removed, with the
near-duplicate detector's recall on the planted near-duplicates.

Then a second corpus, of short (2-9 words) and longer (10-60 words) rows, ~20% of them copies of an
earlier row that differ only in letter case, punctuation or spacing: it prints the recall on those
copies (short and longer apart) and the precision (how many distinct rows were removed with them).

    .venv/bin/python bench/clean_text.py                      # 10k, 30k and 100k rows
    .venv/bin/python bench/clean_text.py --sizes 1000 --seed 3
    .venv/bin/python bench/clean_text.py --sizes 30000 --num-perm 128   # near-dup step non-default
    .venv/bin/python bench/clean_text.py --sizes 0 --variants 20000     # only the case/punctuation/spacing copies

The data is generated from ``--seed``, so a run is repeatable; generation is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
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
from studio.data.steps.text import NearDuplicateTextParams, shingle_hashes  # noqa: E402
from studio.data.steps.text import jaccard as shingle_jaccard  # noqa: E402

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


def jaccard(a: str, b: str) -> float:
    """The similarity the near-duplicate step measures (its shingles of the normalised texts)."""
    return shingle_jaccard(shingle_hashes(a), shingle_hashes(b))


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


STUDIO_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import datasketch, ftfy  # noqa: F401  (loaded before the clock starts, as in a running studio)
import numpy as np
from studio.data.service import import_dataset, get_version
from studio.settings import load_settings
from studio.store import open_store

path, home, config, rows = Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5])
store = open_store(load_settings(home=home))
started, cpu_started = time.perf_counter(), time.process_time()
result = import_dataset(store, [path], name="bench", steps=config, split="1,0,0")
total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child started by a parent holding the
# generated corpus would report the parent's size (the million-row run printed 1,551 MB, the generator's own).
peak_mb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
kept = np.zeros(rows, dtype=bool)
with open(Path(result["path"]) / "manifest.jsonl") as manifest:
    for line in manifest:
        kept[int(json.loads(line)["source"].rsplit("#", 1)[1]) - 1] = True
np.save(sys.argv[6], kept)
steps = get_version(store, str(result["dataset_id"])).report["steps"]
print(json.dumps({"total": total, "cpu": cpu, "peak_mb": peak_mb, "steps": {e["step"]: e for e in steps}}))
"""

PEER_CHILD = r"""
import json, re, resource, sys, time, unicodedata, zlib
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import datasets, ftfy, numpy as np
from datasketch import MinHash, MinHashLSH
from studio.data.steps.text import normalised

datasets.disable_progress_bars()
path, work, rows = Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[5])
TOKEN = re.compile(r"\w+|[^\w\s]")
started, cpu_started = time.perf_counter(), time.process_time()
ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(work / "cache"))
ds = ds.map(lambda b, idx: {"row": idx}, with_indices=True, batched=True)


def tidy(text):
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


ds = ds.map(lambda b: {"text": [tidy(unicodedata.normalize("NFKC", ftfy.fix_encoding(t))) for t in b["text"]]},
            batched=True)
ds = ds.filter(lambda b: [2 <= len(TOKEN.findall(t)) <= 100_000 for t in b["text"]], batched=True)
seen = set()


def first_time(batch):
    keep = []
    for text in batch["text"]:
        key = hash(text)
        keep.append(key not in seen)
        seen.add(key)
    return keep


ds = ds.filter(first_time, batched=True)
exact_left = len(ds)


def signatures(batch):  # text-dedup's way: MinHash of the normalised word 3-grams in a map
    out = []
    for text in batch["text"]:
        words = normalised(text).split()
        grams = {" ".join(words[i:i + 3]) for i in range(max(len(words) - 2, 1))} or {text}
        m = MinHash(num_perm=64)
        m.update_batch([g.encode() for g in grams])
        out.append(m.hashvalues.tolist())
    return {"signature": out}


ds = ds.map(signatures, batched=True)
lsh = MinHashLSH(threshold=0.8, num_perm=64)
SCHEME = MinHash(num_perm=64).scheme
keep = []
for number, values in enumerate(ds["signature"]):
    m = MinHash(num_perm=64, hashvalues=np.array(values, dtype=np.uint64), scheme=SCHEME)
    duplicate = bool(lsh.query(m))
    if not duplicate:
        lsh.insert(number, m)
    keep.append(not duplicate)
ds = ds.select(np.flatnonzero(keep)).remove_columns("signature")
ds.to_json(str(work / "out.jsonl"))
total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child started by a parent holding the
# generated corpus would report the parent's size (the million-row run printed 1,551 MB, the generator's own).
peak_mb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
kept = np.zeros(rows, dtype=bool)
kept[np.array(ds["row"], dtype=np.int64)] = True
np.save(sys.argv[6], kept)
print(json.dumps({"total": total, "cpu": cpu, "peak_mb": peak_mb, "exact_left": exact_left}))
"""


def in_child(script: str, path: Path, work: Path, config: dict | None, rows: int) -> tuple[dict, np.ndarray]:
    """Runs ``script`` on ``path`` in a process of its own (its peak memory is its own); its result and the kept
    rows."""
    mask = work / "kept.npy"
    done = subprocess.run([sys.executable, "-c", script, str(Path(__file__).resolve().parents[1]), str(path),
                           str(work), json.dumps(config), str(rows), str(mask)], capture_output=True, text=True,
                          env={**os.environ, "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if done.returncode != 0:
        raise SystemExit(done.stderr[-4000:])
    return json.loads(done.stdout.strip().splitlines()[-1]), np.load(mask)


def write_corpus(corpus: Corpus, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for text in corpus.texts:
            out.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")


def scores(corpus: Corpus, kept: np.ndarray) -> dict:
    planted_near = [i for i, k in enumerate(corpus.kind) if k == "near"]
    caught = [i for i in planted_near if not kept[i]]
    reachable = [i for i in planted_near if corpus.near_jaccard[i] >= THRESHOLD]
    missed = sorted(corpus.near_jaccard[i] for i in planted_near if kept[i])
    removed_originals = sum(1 for i, k in enumerate(corpus.kind) if k == "original" and not kept[i])
    return {"planted_exact": corpus.kind.count("exact"), "planted_near": len(planted_near),
            "recall": len(caught) / max(len(planted_near), 1),
            "recall_reachable": sum(not kept[i] for i in reachable) / max(len(reachable), 1),
            "reachable": len(reachable), "originals_removed": removed_originals, "near_caught": len(caught),
            "missed_median_j": missed[len(missed) // 2] if missed else float("nan"),
            "caught_median_j": float(np.median([corpus.near_jaccard[i] for i in caught])) if caught else float("nan")}


def run(rows: int, seed: int, config: dict | None, peer: bool) -> tuple[dict, dict | None]:
    """The studio's import of ``rows`` generated rows (a JSON Lines file, every step at its default unless
    ``config``), and the peer's pipeline on the same file when ``peer``."""
    corpus = make_corpus(rows, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        write_corpus(corpus, path)
        corpus.texts = []  # the file has them; the scores need only the kinds
        (Path(tmp) / "studio").mkdir()
        found, kept = in_child(STUDIO_CHILD, path, Path(tmp) / "studio", config, rows)
        steps = found["steps"]
        studio = {"rows": rows, **found, **scores(corpus, kept),
                  "removed_exact": steps["exact_duplicates"]["removed"],
                  "removed_near": steps["near_duplicates"]["removed"]}
        studio["false_near"] = studio["removed_near"] - studio["near_caught"]
        studio["kept"] = int(kept.sum())
        if not peer:
            return studio, None
        (Path(tmp) / "peer").mkdir()
        found, kept = in_child(PEER_CHILD, path, Path(tmp) / "peer", config, rows)
        return studio, {"rows": rows, **found, **scores(corpus, kept), "kept": int(kept.sum())}


SPACED_PUNCTUATION = re.compile(r"\s*([,.;:!?])\s*")


def restyle(text: str, rng: np.random.Generator) -> str:
    """The same text in other letter case, punctuation or spacing: one to three of these, never the text itself."""
    def swap_case(t: str) -> str:
        return (t.lower, t.upper, t.title, t.capitalize)[int(rng.integers(4))]()

    def punctuate(t: str) -> str:
        roll = rng.random()
        if roll < 0.4:
            return re.sub(r"[^\w\s]", "", t)  # every mark gone
        if roll < 0.7:
            return t.rstrip(".?!") + ("!", "...", "?!", " !!")[int(rng.integers(4))]
        return t.replace(",", ";").replace(".", "!")

    def respace(t: str) -> str:
        roll = rng.random()
        if roll < 0.3:
            return SPACED_PUNCTUATION.sub(r" \1 ", t).strip()  # "word , word ."
        if roll < 0.6:
            return SPACED_PUNCTUATION.sub(r"\1", t)  # "word,word."
        if roll < 0.8:
            return "  " + t.replace(" ", "  ") + " \n"
        return t.replace(" ", "\n", int(rng.integers(1, 4)))

    changes = (swap_case, punctuate, respace)
    while True:
        changed = text
        for change in rng.choice(changes, size=int(rng.integers(1, 4)), replace=False):
            changed = change(changed)
        if changed != text:
            return changed


def normalised_key(text: str) -> str:
    """Case, punctuation and spacing left out: two originals with the same key are not distinct texts."""
    return " ".join(re.sub(r"[\W_]+", " ", text.casefold()).split())


def make_variant_corpus(rows: int, seed: int) -> Corpus:
    """Short and longer rows; ~20% are copies of an earlier row in other case, punctuation or spacing ("variant"),
    and ~5% are short rows made from an earlier short row by changing one word or number ("sibling": "Invoice 17
    paid" after "Invoice 16 paid" is another text, and must be kept)."""
    rng = np.random.default_rng(seed + 1)
    vocab = make_vocabulary(rng)
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    weights /= weights.sum()
    texts, kind, seen, originals, short = [], [], set(), [], []

    def add(text: str, what: str) -> bool:
        if normalised_key(text) in seen:  # the same words again: a copy, not a distinct text
            return False
        seen.add(normalised_key(text))
        texts.append(text)
        kind.append(what)
        originals.append(len(texts) - 1)
        return True

    while len(texts) < rows:
        roll = rng.random()
        if roll < 0.2 and originals:
            texts.append(restyle(texts[originals[int(rng.integers(len(originals)))]], rng))
            kind.append("variant")
        elif roll < 0.25 and short:
            words = texts[short[int(rng.integers(len(short)))]].rstrip(".").split(" ")
            other = str(int(rng.integers(100))) if rng.random() < 0.5 else str(vocab[rng.integers(len(vocab))])
            words[int(rng.integers(len(words)))] = other
            add(" ".join(words) + ".", "sibling")
        else:
            count = int(rng.integers(2, 10) if rng.random() < 0.5 else rng.integers(10, 61))
            words = list(vocab[rng.choice(len(vocab), size=count, p=weights)])
            words[0] = words[0].capitalize()
            text = "".join(w + (", " if rng.random() < 0.1 else " ") for w in words[:-1]) + words[-1] + "."
            if add(text, "original") and count < 10:
                short.append(len(texts) - 1)
    return Corpus(texts, kind, {})


def run_variants(rows: int, seed: int, config: dict | None) -> dict:
    corpus = make_variant_corpus(rows, seed)
    items = [Item(source=f"row{i}", text=text) for i, text in enumerate(corpus.texts)]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        kept, report = run_cleaning(items, "text", config, Path(tmp) / "scratch", Path(tmp) / "examples")
        seconds = time.perf_counter() - started
    kept_sources = {item.source for item in kept}
    removed = [i for i in range(rows) if f"row{i}" not in kept_sources]
    variants = [i for i, k in enumerate(corpus.kind) if k == "variant"]
    words = [len(normalised_key(corpus.texts[i]).split()) for i in range(rows)]

    def recall(rows_: list[int]) -> tuple[int, int]:
        return sum(f"row{i}" not in kept_sources for i in rows_), len(rows_)

    steps = {entry["step"]: entry["removed"] for entry in report}
    return {"rows": rows, "seconds": seconds, "all": recall(variants),
            "short": recall([i for i in variants if words[i] < 10]),
            "long": recall([i for i in variants if words[i] >= 10]),
            "distinct": sum(k != "variant" for k in corpus.kind),
            "distinct_removed": sum(corpus.kind[i] != "variant" for i in removed),
            "siblings": corpus.kind.count("sibling"),
            "siblings_removed": sum(corpus.kind[i] == "sibling" for i in removed),
            "by_exact": steps["exact_duplicates"], "by_near": steps["near_duplicates"]}


def print_variants(r: dict) -> None:
    def share(pair: tuple[int, int]) -> str:
        return f"{pair[0]:,} of {pair[1]:,} ({pair[0] / max(pair[1], 1):.1%})"

    print(f"\ncopies differing only in case, punctuation or spacing ({r['rows']:,} rows, cleaned in "
          f"{r['seconds']:.2f} s; removed by exact duplicates {r['by_exact']:,}, by near-duplicates {r['by_near']:,}):")
    print(f"  recall: {share(r['all'])} copies removed; short rows (under 10 words) {share(r['short'])}, "
          f"longer {share(r['long'])}")
    kept = r["distinct"] - r["distinct_removed"]
    print(f"  precision: {r['distinct_removed']:,} of {r['distinct']:,} distinct rows removed as duplicates "
          f"({kept:,} kept), {r['siblings_removed']:,} of them of the {r['siblings']:,} short rows one word or "
          f"number away from another; target: recall >= 95%, no distinct row removed")


def print_sizes(results: list[dict]) -> None:
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
          f"'peak MB': peak resident memory of the import's process (start-up, libraries and all); 'total s': the "
          f"import of the file (reading, every cleaning step, writing the version), the steps' columns their share")
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(f"growth {first['rows']:,} -> {last['rows']:,} rows: x{last['rows'] / first['rows']:.1f} rows, "
              f"x{last['total'] / first['total']:.1f} time")



def print_peers(pairs: list[tuple[dict, dict]]) -> None:
    print("\nthe same file through the pipeline a user would otherwise write: `datasets` load_dataset('json') + map "
          "(ftfy.fix_encoding, NFKC, whitespace) + filter (length, exact duplicates) + datasketch MinHash in a map "
          "and MinHashLSH(threshold=0.8, num_perm=64) + to_json, in a process of its own")
    header = ["rows", "studio s", "peer s", "peer/studio", "studio CPU s", "peer CPU s", "studio peak MB",
              "peer peak MB", "studio near recall", "peer near recall", "originals removed studio/peer"]
    table = [[f"{s['rows']:,}", f"{s['total']:.1f}", f"{p['total']:.1f}", f"{p['total'] / s['total']:.2f}",
              f"{s['cpu']:.1f}", f"{p['cpu']:.1f}", f"{s['peak_mb']:,.0f}", f"{p['peak_mb']:,.0f}",
              f"{s['recall']:.1%}", f"{p['recall']:.1%}", f"{s['originals_removed']:,}/{p['originals_removed']:,}"]
             for s, p in pairs]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    print(" | ".join(h.rjust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in table:
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,30000,100000", help="comma-separated row counts (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-perm", type=int, help="MinHash permutations for the near-duplicate step "
                        f"(default: the step's own, {NearDuplicateTextParams().num_perm})")
    parser.add_argument("--variants", type=int, default=10000,
                        help="rows in the case/punctuation/spacing corpus (0: skip it)")
    parser.add_argument("--peer", default="", metavar="SIZES",
                        help="comma-separated row counts (of --sizes) also run through datasets + datasketch")
    args = parser.parse_args()
    config = {"near_duplicates": {"num_perm": args.num_perm}} if args.num_perm else None
    peer_sizes = {int(s) for s in args.peer.split(",") if s.strip()}

    results, pairs = [], []
    for rows in (int(s) for s in args.sizes.split(",") if int(s) > 0):
        print(f"generating and importing {rows:,} rows{' (and the peer)' if rows in peer_sizes else ''} ...",
              file=sys.stderr, flush=True)
        studio, peer = run(rows, args.seed, config, rows in peer_sizes)
        results.append(studio)
        print_sizes(results[-1:])  # as each size ends, in case a long run is stopped
        if peer:
            pairs.append((studio, peer))
            print_peers(pairs[-1:])
    if len(results) > 1:
        print_sizes(results)
    if len(pairs) > 1:
        print_peers(pairs)
    if args.variants:
        print(f"generating and cleaning {args.variants:,} rows with restyled copies ...", file=sys.stderr, flush=True)
        print_variants(run_variants(args.variants, args.seed, config))


if __name__ == "__main__":
    main()

"""Benchmark: importing a `datasets` set (a ``save_to_disk`` folder: what a Hub set is once loaded) against the way a
user would otherwise bring it in — ``Dataset.to_json`` to a JSON Lines file, then importing that file.

Both sides run in this one process, side by side, on the same rows: question/answer pairs of 20-120 words from a
made-up vocabulary (``--seed``), every cleaning step at its default. Printed per size, in CPU seconds (the machine is
shared): the time to turn the set into files (the studio's ``write_rows`` vs ``to_json``), the whole import of each
(staging, reading, cleaning, splitting, writing the version; the file's import is the mean of one run before and
one after the folder's), and the ratios.

    .venv/bin/python bench/import_datasets.py                    # 10k and 50k rows
    .venv/bin/python bench/import_datasets.py --sizes 100000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datasets  # noqa: E402

from studio.data.read_datasets import local_source, open_source, write_rows  # noqa: E402
from studio.data.service import import_dataset  # noqa: E402
from studio.settings import load_settings  # noqa: E402
from studio.store import open_store  # noqa: E402

datasets.disable_progress_bars()
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "an", "el", "or", "un", "be", "da", "fe", "gi"]


def rows(count: int, seed: int) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    vocabulary = ["".join(rng.choice(SYLLABLES, rng.integers(1, 4))) for _ in range(5000)]
    weights = 1 / np.arange(1, len(vocabulary) + 1)
    weights /= weights.sum()

    def sentence(low: int, high: int) -> str:
        return " ".join(rng.choice(vocabulary, rng.integers(low, high), p=weights)).capitalize() + "."

    return datasets.Dataset.from_dict({"question": [sentence(5, 15) + "?" for _ in range(count)],
                                       "answer": [sentence(20, 120) for _ in range(count)]})


def timed(work) -> tuple[float, object]:
    """CPU seconds of ``work`` (the machine is shared: wall-clock time counts the neighbours too) and its result."""
    started = time.process_time()
    found = work()
    return time.process_time() - started, found


def measure(count: int, seed: int, scratch: Path) -> dict:
    folder, jsonl = scratch / f"set{count}", scratch / f"set{count}.jsonl"
    rows(count, seed).save_to_disk(str(folder))
    source = local_source(folder)
    write_s, _ = timed(lambda: write_rows(source, open_source(source), scratch / f"written{count}"))
    to_json_s, _ = timed(lambda: datasets.load_from_disk(str(folder)).to_json(str(jsonl)))
    store = open_store(load_settings(home=scratch / f"home{count}"))
    try:  # the file first, then the folder, then the file again: neither side gets the warmer cache alone
        first_s, plain = timed(lambda: import_dataset(store, [jsonl], name="from-jsonl"))
        studio_s, studio = timed(lambda: import_dataset(store, [folder], name="from-datasets"))
        second_s, _ = timed(lambda: import_dataset(store, [jsonl], name="from-jsonl"))
        file_s = (first_s + second_s) / 2
    finally:
        store.close()
    assert studio["items_kept"] == plain["items_kept"], (studio, plain)
    return {"rows": count, "write": write_s, "to_json": to_json_s, "import": studio_s, "jsonl_import": file_s,
            "kept": studio["items_kept"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("| rows | write_rows s | to_json s | ratio | import of the folder s | to_json + import of the file s "
          "| ratio | kept |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as scratch:
        measure(200, args.seed + 1, Path(scratch))  # warm-up: the libraries the steps import on first use, not timed
        for count in (int(s) for s in args.sizes.split(",")):
            found = measure(count, args.seed, Path(scratch))
            other = found["to_json"] + found["jsonl_import"]
            print(f"| {count:,} | {found['write']:.2f} | {found['to_json']:.2f} | "
                  f"{found['write'] / found['to_json']:.2f} | {found['import']:.2f} | {other:.2f} | "
                  f"{found['import'] / other:.2f} | {found['kept']:,} |", flush=True)


if __name__ == "__main__":
    main()

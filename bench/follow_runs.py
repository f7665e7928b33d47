"""What following runs costs per look, read incrementally against reading every metric each time (what the Train
tab's run list and `studio train` did before).

    .venv/bin/python bench/follow_runs.py                        # 20 runs of 2,000 steps, 8 metrics a step
    .venv/bin/python bench/follow_runs.py --runs 5 --steps 500 --repeat 3

A throwaway SQLite store with ``--runs`` queued runs (no training: their metric rows are written as a worker would,
``--steps`` x 8 names) and a worker log of a line per step. Then, median over ``--repeat`` looks:

1. the Train tab's run list: ``list_runs`` as it is (a summary reads the losses: two small queries and the validation
   rows) against a summary per run that reads the whole history (``with_history``, as every summary did before);
2. `studio train`'s look each second at one run: ``run_progress`` after the last metric id and log byte read (a look
   where 8 metrics and a line are new) against ``run_summary`` from the whole history plus the log's last lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NAMES = ("train_loss", "learning_rate", "grad_norm", "items_per_second", "tokens_per_second", "elapsed_seconds",
         "eta_seconds", "val_loss")


def seeded_store(home: Path, runs: int, steps: int):
    from studio.data.service import import_dataset
    from studio.settings import load_settings
    from studio.store import open_store
    from studio.store.tables import Metric
    from studio.training import jobs
    from studio.training.config import TrainConfig
    from studio.training.runs import log_path

    store = open_store(load_settings(home=home))
    corpus = home / "tales.txt"
    corpus.write_text("\n\n".join(f"The {a} fox met the {b} hen." for a in ("red", "old", "quick")
                                  for b in ("white", "brown", "tiny", "grey")))
    dataset = str(import_dataset(store, [corpus], name="tales")["dataset_id"])
    ids = [jobs.create_run(store, dataset, "starter-text", "scratch", TrainConfig(max_steps=steps, use_cpu=True))
           for _ in range(runs)]
    for run_id in ids:
        with store.session() as session:
            session.add_all([Metric(run_id=run_id, step=step, name=name, value=1.0 / step)
                             for step in range(1, steps + 1) for name in NAMES
                             if name != "val_loss" or step % 50 == 0])
        path = log_path(store, run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"[12:00:00] step {s}/{steps} · loss 1.0000 · learning rate 1.00e-03\n"
                                for s in range(1, steps + 1)))
    return store, ids


def timed(look, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        look()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from studio.store.tables import Metric
    from studio.training.jobs import log_tail
    from studio.training.runs import list_runs, log_path, progress_marks, run_progress, run_summary

    with tempfile.TemporaryDirectory() as folder:
        store, ids = seeded_store(Path(folder), args.runs, args.steps)
        rows = args.runs * args.steps * (len(NAMES) - 1) + args.runs * (args.steps // 50)
        print(f"{args.runs} runs x {args.steps} steps: {rows:,} metric rows")

        now = timed(lambda: list_runs(store), args.repeat)
        # before: each summary read the run's whole history (with_history reads that, and the samples: one query)
        before = timed(lambda: [run_summary(store, r, with_history=True) for r in ids], args.repeat)
        print(f"run list: {now * 1000:,.1f} ms now, {before * 1000:,.1f} ms with every history read "
              f"({before / now:.1f}x)")

        run_id = ids[0]

        def one_step_more():  # what a worker adds between two looks: a step's metrics and its log line
            with store.session() as session:
                session.add_all([Metric(run_id=run_id, step=args.steps + 1, name=n, value=0.5) for n in NAMES[:-1]])
            with open(log_path(store, run_id), "a") as log:
                log.write(f"[12:00:01] step {args.steps + 1}/{args.steps + 1} · loss 0.5000\n")

        marks = list(progress_marks(store, run_id))

        def incremental():
            one_step_more()
            found = run_progress(store, run_id, *marks)
            marks[:] = [found["last_metric"], found["log_offset"]]

        def whole():
            one_step_more()
            run_summary(store, run_id, with_history=True)
            log_tail(store, run_id, 30)

        now, before = timed(incremental, args.repeat), timed(whole, args.repeat)
        print(f"a look at one run: {now * 1000:,.1f} ms incremental, {before * 1000:,.1f} ms reading the whole "
              f"history ({before / now:.1f}x)")


if __name__ == "__main__":
    main()

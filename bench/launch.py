"""Benchmark: the time from "Train" to the run's first training step, through the local launcher and through Ray.

"Train" is what the Train tab's button does: ``jobs.create_run``, then the dispatcher's rounds (every 0.2 s here,
as `studio train` does every second and the web process every 2 s). The clock stops when the run's row says its
first step is done (the worker writes progress at step 1), so it covers placement, starting the worker (a local
process, or a Ray job that Ray schedules and starts), loading the model and the first step. Each run is the
starter-text from scratch for 3 steps on the CPU; the median of ``--repeats`` is printed per launcher.

    .venv/bin/python bench/launch.py                                   # the local launcher only (SQLite)
    # a Ray head of your own, token auth on, and a PostgreSQL store every Ray worker reaches:
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$(python -c 'import secrets; print(secrets.token_hex(32))')
    ray start --head --num-cpus 2 --num-gpus 2 --dashboard-port 8265 --disable-usage-stats
    .venv/bin/python bench/launch.py --ray-address http://127.0.0.1:8265 \\
        --database-url postgresql+psycopg2://USER:PASSWORD@HOST/DB_FOR_BENCH   # both launchers, on that store

    # one run on two machines (Ray Train's TorchTrainer, 2 workers of 4 items) against one process of 8 items,
    # both through Ray, 20 steps on CPUs (a head with fake GPUs has no NCCL): first step and the whole run
    .venv/bin/python bench/launch.py --ray-address http://127.0.0.1:8265 --database-url ... --several-machines

The database named by ``--database-url`` gets the studio's tables and the benchmark's runs: use a scratch one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.data.service import import_dataset  # noqa: E402
from studio.settings import load_settings  # noqa: E402
from studio.status import RUN_ENDED  # noqa: E402
from studio.store import open_store  # noqa: E402
from studio.training import jobs  # noqa: E402
from studio.training.config import TrainConfig  # noqa: E402
from studio.training.runs import run_summary  # noqa: E402


def first_step_seconds(store, dataset: str, **changes) -> tuple[float, float]:
    """Seconds from create_run to the run's first step, and to its end."""
    config = TrainConfig(**{**dict(max_steps=3, per_device_train_batch_size=4, eval_steps=100, save_steps=100,
                                   logging_steps=1, warmup_steps=0, sample_steps=0), **changes})
    config.text.max_length = 32
    started = time.monotonic()
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch", config)
    first = None
    while True:
        jobs.dispatch(store)
        summary = run_summary(store, run_id)
        if first is None and summary["steps"] >= 1:
            first = time.monotonic() - started
        if summary["status"] in RUN_ENDED:
            if summary["status"] != "completed":
                raise SystemExit(f"run {run_id} {summary['status']}: {summary['error']}")
            return first, time.monotonic() - started
        time.sleep(0.2)


def measure(label: str, repeats: int, changes: dict | None = None, **settings) -> float:
    with tempfile.TemporaryDirectory() as home:
        store = open_store(load_settings(home=Path(home), **settings))
        corpus = Path(home) / "tales.txt"
        corpus.write_text("\n\n".join(f"The {a} fox saw the {b} hen near the {c} barn and ran home."
                                      for a in ("red", "quick", "old") for b in ("white", "brown") for c in ("big",
                                                                                                            "far")))
        dataset = str(import_dataset(store, [corpus], name="tales")["dataset_id"])
        times = [first_step_seconds(store, dataset, **(changes or {})) for _ in range(repeats)]
        store.close()
    median, whole = statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)
    print(f"{label:>6}: first step after {median:5.1f} s, the whole run {whole:5.1f} s (median of {repeats}: "
          f"{', '.join(f'{t[0]:.1f}/{t[1]:.1f}' for t in times)})", flush=True)
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ray-address", help="a Ray head's Jobs API (http://HOST:8265); without it, local only")
    parser.add_argument("--database-url", help="the store for both launchers (Ray needs PostgreSQL)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--several-machines", action="store_true",
                        help="with --ray-address: 2 Ray Train workers against one process, both through Ray")
    args = parser.parse_args()
    if args.several_machines:
        same = dict(max_steps=20, use_cpu=True)
        cluster = dict(database_url=args.database_url, ray_address=args.ray_address)
        one = measure("one process", args.repeats, dict(per_device_train_batch_size=8, **same), **cluster)
        two = measure("Ray Train, 2 workers", args.repeats, dict(per_device_train_batch_size=4, num_nodes=2, **same),
                      **cluster)
        print(f"2 workers / one process (first step): {two / one:.2f}x")
        return
    local = measure("local", args.repeats, database_url=args.database_url)
    if args.ray_address:
        ray = measure("ray", args.repeats, database_url=args.database_url, ray_address=args.ray_address)
        print(f"Ray / local: {ray / local:.2f}x")


if __name__ == "__main__":
    main()

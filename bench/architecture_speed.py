"""Seconds per training step of every catalog architecture (``catalog.architectures``) with its recommended
settings, on this machine's CPU, through the studio's one loop: the figures the catalog keeps as
``reference_seconds_per_step`` and the Model tab's "Which architecture?" guide scales to other machines.

    .venv/bin/python bench/architecture_speed.py --steps 12 --threads 2

Each architecture trains ``--steps`` steps on its modality's shipped example (text: stories.txt, image:
shapes.zip, audio: tones.zip); the figure is the median of the loop's own per-step timings after the first two
steps (``items_per_second``: training only, validation and checkpoints left out), as batch / items per second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EXAMPLES = ROOT / "assets" / "examples"
EXAMPLE = {"text": "stories.txt", "image": "shapes.zip", "audio": "tones.zip"}


def seconds_per_step(store, architecture, steps: int) -> float:
    from studio.data.service import get_version, import_dataset, read_manifest
    from studio.models.registry import backend_for
    from studio.training.config import TrainConfig, apply_overrides
    from studio.training.loop import train_in_process

    modality = architecture.entry.modality
    found = import_dataset(store, [EXAMPLES / EXAMPLE[modality]])
    version = get_version(store, str(found["dataset_id"]))
    rows = {split: read_manifest(store, version, split) for split in ("train", "validation")}
    config = apply_overrides(TrainConfig(use_cpu=True), [*architecture.recommended, f"max_steps={steps}",
                                                         "eval_steps=100000", "save_steps=100000", "sample_steps=0"])
    backend = backend_for(modality)
    handle = backend.load(architecture.entry.id, "scratch", config, rows["train"])
    out = train_in_process(backend, handle, rows, store.path(version.path), config)
    speeds = [h["value"] for h in out["history"] if h["name"] == "items_per_second" and h["step"] > 2]
    return config.per_device_train_batch_size / statistics.median(speeds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", action="append", default=[], help="an architecture's key (default: every one)")
    args = parser.parse_args()
    import torch

    from studio.models.catalog import architectures
    from studio.settings import load_settings
    from studio.store import open_store

    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as home:
        store = open_store(load_settings(home=Path(home)))
        for architecture in architectures():
            if args.only and architecture.key not in args.only:
                continue
            results[architecture.key] = round(seconds_per_step(store, architecture, args.steps), 4)
            print(f"{architecture.key}: {results[architecture.key]} s per step", flush=True)
    print(json.dumps({"threads": args.threads, "steps": args.steps, "seconds_per_step": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: flow matching at few Euler steps against the diffusion starter, on the shipped coloured shapes.

Issue 19's bar: flow matching at 4-8 steps reaches the diffusion starter's colour accuracy. Set-up: a temporary
``STUDIO_HOME`` with ``assets/examples/shapes.zip`` imported; two ``starter-image`` runs trained in this process
through the studio's loop (``train_in_process``, as ``tests/test_starters_learn.py`` does), each with the settings
the catalog recommends for it (``recommended_overrides``):
  - diffusion: the starter's own objective (v-prediction on a cosine schedule), sampled with 30 DDIM steps
    (the Generate default);
  - flow: ``prediction_type=flow_matching`` (rectified flow), sampled with its Euler sampler at 4 and 8 steps.

Then each model draws every colour x shape prompt with ``--seeds`` seeds the training never saw, through the
backend's ``generate`` (the Generate path), and each picture's dominant colour is read as the learning test reads
it (``studio.examples.shapes.dominant_colour``). Reported per sampler: colour accuracy (share of pictures whose
dominant colour is the asked one; bar 80 %), sample seconds per picture (the backend's own figure, batches of 8),
and each run's training seconds and final validation loss (the two objectives' losses are not comparable).

    .venv/bin/python bench/flow_vs_diffusion.py                  # the full comparison (~10-15 min on 2 cores)
    .venv/bin/python bench/flow_vs_diffusion.py --max-steps 150  # a shorter training of both (a smoke run)

Seeded throughout: the same machine gives the same pictures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
BAR = 0.8
VARIANTS = {"diffusion": [], "flow": ["prediction_type=flow_matching"]}
SAMPLERS = (("diffusion", 30), ("flow", 4), ("flow", 8))


def train(store, rows, root, extra: list[str], max_steps: int | None):
    from studio.models.catalog import recommended_overrides
    from studio.models.registry import backend_for
    from studio.training.config import TrainConfig, apply_overrides
    from studio.training.loop import train_in_process

    pairs = recommended_overrides("starter-image") + extra + ([f"max_steps={max_steps}"] if max_steps else [])
    config = apply_overrides(TrainConfig(use_cpu=True, sample_steps=0), pairs)
    backend = backend_for("image")
    handle = backend.load("starter-image", "scratch", config, rows["train"])
    started = time.perf_counter()
    out = train_in_process(backend, handle, rows, root, config)
    seconds = time.perf_counter() - started
    losses = [h["value"] for h in out["history"] if h["name"] == "val_loss"]
    return backend, handle, {"settings": pairs, "train_seconds": round(seconds, 1), "status": out["status"],
                             "val_loss_first": round(losses[0], 4), "val_loss_last": round(losses[-1], 4)}


def colour_accuracy(backend, handle, steps: int, seeds: range, out: Path) -> dict:
    from studio.examples.shapes import COLOURS, SHAPES, dominant_colour

    prompts = [f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES for _ in seeds]
    chosen = [seed for _ in COLOURS for _ in SHAPES for seed in seeds]
    samples = backend.generate(handle, prompts, chosen, {"steps": steps}, out)
    right = sum(dominant_colour(s.path) == s.prompt.split()[1] for s in samples)
    return {"steps": steps, "images": len(samples), "right": right, "accuracy": round(right / len(samples), 3),
            "sample_seconds": round(samples[0].seconds, 4)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-steps", type=int, default=None, help="train both this many steps (default: the "
                                                                    "catalog's recommendation)")
    parser.add_argument("--seeds", type=int, default=5, help="pictures per colour x shape prompt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch

    from studio.data.service import get_version, import_dataset, read_manifest
    from studio.settings import load_settings
    from studio.store import open_store

    torch.set_num_threads(args.threads)
    seeds = range(100, 100 + args.seeds)  # seeds the training never saw
    report: dict = {"runs": {}, "samplers": []}
    with tempfile.TemporaryDirectory() as scratch:
        store = open_store(load_settings(home=Path(scratch) / "home"))
        try:
            version = get_version(store, str(import_dataset(store, [EXAMPLES / "shapes.zip"])["dataset_id"]))
            rows = {split: read_manifest(store, version, split) for split in ("train", "validation")}
            root = store.path(version.path)
            models = {}
            for name, extra in VARIANTS.items():
                backend, handle, run = train(store, rows, root, extra, args.max_steps)
                models[name] = (backend, handle)
                report["runs"][name] = run
                print(f"{name}: trained {run}", flush=True)
            for name, steps in SAMPLERS:
                backend, handle = models[name]
                figures = {"model": name, **colour_accuracy(backend, handle, steps, seeds,
                                                            Path(scratch) / f"{name}-{steps}")}
                report["samplers"].append(figures)
                print(f"{name} at {steps} steps: {figures}", flush=True)
        finally:
            store.close()
    base = next(s for s in report["samplers"] if s["model"] == "diffusion")
    print("\n| sampler | colour accuracy | sample s/image | vs diffusion 30 steps |\n| --- | --- | --- | --- |")
    for s in report["samplers"]:
        speed = base["sample_seconds"] / s["sample_seconds"] if s["sample_seconds"] else float("nan")
        verdict = "meets" if s["accuracy"] >= BAR else "below"
        print(f"| {s['model']} {s['steps']} steps | {s['right']}/{s['images']} = {s['accuracy']:.0%} ({verdict} the "
              f"{BAR:.0%} bar) | {s['sample_seconds']:.4f} | {speed:.1f}x faster |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()

"""Exploration: a one-pass image starter (the VAE's, or the GAN's) trained on the shipped ``shapes.zip`` with the
catalog's recommended settings and ``--set`` overrides, checked as ``tests/test_starters_learn.py`` checks it: how
many of 40 pictures (8 prompts x 5 unseen seeds) have the asked colour dominant, and the mean pairwise RMS distance of
16 samples of one prompt. The dataset goes through the store (import, split) as in the test.

    .venv/bin/python bench/one_pass_learning.py                                      # the VAE, as recommended
    .venv/bin/python bench/one_pass_learning.py --set kl_weight=1 --set seed=1      # the exploration's rows
    .venv/bin/python bench/one_pass_learning.py --model starter-image-gan

torch runs on ``--threads`` threads (2 by default, as the learning tests).
"""

from __future__ import annotations

import argparse
import importlib
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"


def main(argv: list[str] | None = None) -> None:
    import torch

    from studio.data.service import get_version, import_dataset, read_manifest
    from studio.examples.shapes import COLOURS, SHAPES, dominant_colour
    from studio.models.catalog import recommended_overrides
    from studio.models.diffusion import tokenize
    from studio.models.gan import mean_pairwise_distance
    from studio.models.registry import backend_for
    from studio.settings import load_settings
    from studio.store import open_store
    from studio.training.config import TrainConfig, apply_overrides
    from studio.training.loop import train_in_process

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="starter-image-vae", choices=("starter-image-vae", "starter-image-gan"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as home:
        store = open_store(load_settings(home=Path(home)))
        version = get_version(store, str(import_dataset(store, [EXAMPLES / "shapes.zip"])["dataset_id"]))
        rows = {split: read_manifest(store, version, split) for split in ("train", "validation")}
        config = apply_overrides(TrainConfig(use_cpu=True), recommended_overrides(args.model) + args.set)
        backend = backend_for("image")
        handle = backend.load(args.model, "scratch", config, rows["train"])
        started = time.perf_counter()
        out = train_in_process(backend, handle, rows, store.path(version.path), config)
        seconds = time.perf_counter() - started
        prompts = [f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES for _ in range(5)]
        samples = backend.generate(handle, prompts, [100 + n % 5 for n in range(len(prompts))], {},
                                   Path(home) / "pictures")
        found = Counter((s.prompt.split()[1], dominant_colour(s.path, COLOURS)) for s in samples)
        sample_pictures = importlib.import_module(f"studio.models.{args.model.rsplit('-', 1)[1]}").sample_pictures
        ids = tokenize(handle.parts.tokenizer, ["a red circle"] * 16)
        diversity = float(mean_pairwise_distance(sample_pictures(handle.module, ids, list(range(16)))))
        store.close()
    print(json.dumps({"model": args.model, "set": args.set, "training_items": len(rows["train"]),
                      "training_seconds": round(seconds),
                      "asked_colour": f"{sum(n for (asked, got), n in found.items() if asked == got)} of {len(samples)}",
                      "found": {f"{asked}->{got}": n for (asked, got), n in sorted(found.items(), key=str)},
                      "diversity": round(diversity, 3),
                      "val_loss": [(h["step"], round(h["value"], 4)) for h in out["history"] if h["name"] == "val_loss"]}))


if __name__ == "__main__":
    main()

"""Benchmark: what one picture costs from the GAN and VAE starters against the diffusion starter they are
alternatives to.

The starters are built from their configs (sampling costs the same whether or not a model has trained) with the
word tokenizer of the shapes' captions, at the same size (``--resolution``, 32 px by default: the size all are
recommended at), and draw the same prompts and seeds through their backends' ``generate`` (what the Generate tab
and ``studio generate`` call, PNG files written included): the GAN's one pass of its averaged generator, the VAE's
one pass of its decoder from a latent drawn from the prior, the diffusion starter's default 30 DDIM steps with
guidance (two UNet passes a step). Each draws ``--pictures`` pictures per round, in turns, over ``--rounds``
rounds; reported are the median seconds per picture of each and how many times faster than diffusion the one-pass
starters are (target: at least 10x).

    .venv/bin/python bench/gan_sampling.py                  # 32 px, 40 pictures, 5 rounds (about a minute)
    .venv/bin/python bench/gan_sampling.py --resolution 64

torch runs on ``--threads`` threads (1 by default, as bench/generate.py).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from studio.examples.shapes import COLOURS, SHAPES
from studio.models.registry import backend_for
from studio.training.config import TrainConfig

ONE_PASS, DIFFUSION = ("starter-image-gan", "starter-image-vae"), "starter-image"
LABELS = {**{name: name for name in ONE_PASS}, DIFFUSION: "starter-image (30 steps)"}


def per_picture(backend, handle, prompts: list[str], seeds: list[int], out: Path) -> float:
    started = time.perf_counter()
    backend.generate(handle, prompts, seeds, {}, out)
    return (time.perf_counter() - started) / len(prompts)


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--pictures", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    captions = [f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES]
    rows = [{"caption": caption} for caption in captions]
    config = TrainConfig.model_validate({"use_cpu": True, "image": {"resolution": args.resolution}})
    backend = backend_for("image")
    models = {name: backend.load(name, "scratch", config, rows) for name in (*ONE_PASS, DIFFUSION)}
    prompts = [captions[i % len(captions)] for i in range(args.pictures)]
    seeds = list(range(args.pictures))
    times: dict[str, list[float]] = {name: [] for name in models}
    with tempfile.TemporaryDirectory() as scratch:
        for name, handle in models.items():  # a first, untimed round: one-off costs out of the way
            per_picture(backend, handle, prompts[:2], seeds[:2], Path(scratch) / "warm")
        for number in range(args.rounds):
            for name, handle in models.items():
                times[name].append(per_picture(backend, handle, prompts, seeds, Path(scratch) / f"{name}-{number}"))
    medians = {name: statistics.median(spent) for name, spent in times.items()}
    parameters = {name: sum(p.numel() for p in h.module.parameters()) for name, h in models.items()}
    print(f"{args.resolution} px, {args.pictures} pictures x {args.rounds} rounds, {args.threads} thread(s)")
    for name, label in LABELS.items():
        print(f"  {label:26s} {medians[name] * 1000:8.2f} ms/picture (range {min(times[name]) * 1000:.2f}-"
              f"{max(times[name]) * 1000:.2f}; {parameters[name] / 1e6:.2f} M parameters)")
    for name in ONE_PASS:
        print(f"  {name} is {medians[DIFFUSION] / medians[name]:.1f}x faster per picture than {DIFFUSION} "
              f"(target: at least 10x)")


if __name__ == "__main__":
    main()

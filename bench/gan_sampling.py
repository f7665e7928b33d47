"""Benchmark: what one sample costs from the one-pass starters (GAN, VAE) against the diffusion starter they are
alternatives to, per modality.

The starters are built from their configs (sampling costs the same whether or not a model has trained) with the word
tokenizer of the example's captions, at the same size, and draw the same prompts and seeds through their backends'
``generate`` (what the Generate tab and ``studio generate`` call, files written included):

- image, at ``--resolution`` (32 px by default: the size all are recommended at), PNG files: ``starter-image-gan``
  (one pass of its averaged generator) and ``starter-image-vae`` (one pass of its decoder from a latent drawn from the
  prior) against ``starter-image``;
- audio, on ``--clip-seconds`` clips (0.5 s: both recommended at it), WAV files: ``starter-audio-gan`` against
  ``starter-audio``; each sampled spectrogram goes through the same Griffin-Lim (48 iterations) to become sound.

The diffusion starters take their default 30 DDIM steps with guidance (two UNet passes a step). Each model draws
``--pictures`` samples per round, in turns, over ``--rounds`` rounds; reported are the median seconds per sample of
each and how many times faster than diffusion the one-pass starters are (target: at least 10x).

    .venv/bin/python bench/gan_sampling.py                      # both modalities, 40 samples, 5 rounds
    .venv/bin/python bench/gan_sampling.py --modality audio --pictures 24 --rounds 5

torch runs on ``--threads`` threads (1 by default, as bench/generate.py).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from studio.examples.shapes import COLOURS, SHAPES
from studio.examples.tones import TONES
from studio.models.registry import backend_for
from studio.training.config import TrainConfig

# modality → (the one-pass starters, the diffusion starter they are compared with, what is drawn)
COMPARED = {"image": (("starter-image-gan", "starter-image-vae"), "starter-image", "picture"),
            "audio": (("starter-audio-gan",), "starter-audio", "clip")}


def per_sample(backend, handle, prompts: list[str], seeds: list[int], out: Path) -> float:
    started = time.perf_counter()
    backend.generate(handle, prompts, seeds, {}, out)
    return (time.perf_counter() - started) / len(prompts)


def compare(modality: str, args) -> None:
    one_pass, diffusion, unit = COMPARED[modality]
    captions = ([f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES] if modality == "image"
                else list(TONES))
    config = TrainConfig.model_validate({"use_cpu": True, "image": {"resolution": args.resolution},
                                         "audio": {"clip_seconds": args.clip_seconds}})
    backend = backend_for(modality)
    rows = [{"caption": caption} for caption in captions]
    models = {name: backend.load(name, "scratch", config, rows) for name in (*one_pass, diffusion)}
    prompts = [captions[i % len(captions)] for i in range(args.pictures)]
    seeds = list(range(args.pictures))
    times: dict[str, list[float]] = {name: [] for name in models}
    with tempfile.TemporaryDirectory() as scratch:
        for name, handle in models.items():  # a first, untimed round: one-off costs out of the way
            per_sample(backend, handle, prompts[:2], seeds[:2], Path(scratch) / "warm")
        for number in range(args.rounds):
            for name, handle in models.items():
                times[name].append(per_sample(backend, handle, prompts, seeds, Path(scratch) / f"{name}-{number}"))
    medians = {name: statistics.median(spent) for name, spent in times.items()}
    parameters = {name: sum(p.numel() for p in h.module.parameters()) for name, h in models.items()}
    size = f"{args.resolution} px" if modality == "image" else f"{args.clip_seconds:g} s clips"
    print(f"{modality}: {size}, {args.pictures} {unit}s x {args.rounds} rounds, {args.threads} thread(s)")
    for name in models:
        label = name + (" (30 steps)" if name == diffusion else "")
        print(f"  {label:26s} {medians[name] * 1000:8.2f} ms/{unit} (range {min(times[name]) * 1000:.2f}-"
              f"{max(times[name]) * 1000:.2f}; {parameters[name] / 1e6:.2f} M parameters)")
    for name in one_pass:
        print(f"  {name} is {medians[diffusion] / medians[name]:.1f}x faster per {unit} than {diffusion} "
              f"(target: at least 10x)")


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", choices=("image", "audio", "both"), default="both")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--clip-seconds", type=float, default=0.5)
    parser.add_argument("--pictures", "--samples", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for modality in COMPARED if args.modality == "both" else (args.modality,):
        compare(modality, args)


if __name__ == "__main__":
    main()

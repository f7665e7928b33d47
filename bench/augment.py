"""Benchmark: what training-time augmentation costs per item, against loading without it.

Pictures: ``--count`` photos of ``--side``² pixels (PNG, written first, not timed) loaded as a training item at
``--resolution`` the way ``CaptionedImages`` does, as a (3, H, W) tensor: plain (centre crop, ``ImageOps.fit``)
against every picture option on (mirror, crop_scale 0.8, brightness/contrast/saturation 0.2, hue 0.05). Clips:
``--clips`` sine tones of ``--seconds`` at 16 kHz, already decoded (as ``Clips`` keeps them), through
``augment_wave`` with gain, noise at 20 dB SNR and a 0.1 s shift. Each figure is the median over ``--rounds`` rounds,
the order alternating; the ratio is the median of the ratios within each round.

    .venv/bin/python bench/augment.py                  # 200 pictures of 512², 200 clips of 4 s, 3 rounds
    .venv/bin/python bench/augment.py --quick          # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.data.augment import AudioAugmentation, ImageAugmentation, augment_wave, item_draws  # noqa: E402
from studio.models.image import load_image  # noqa: E402

PICTURES = ImageAugmentation(random_flip=True, crop_scale=0.8, brightness=0.2, contrast=0.2, saturation=0.2,
                             hue=0.05)
CLIPS = AudioAugmentation(gain_db_min=-6, gain_db_max=6, noise_snr_db=20, time_shift_seconds=0.1)


def pictures(folder: Path, count: int, side: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for number in range(count):
        small = rng.integers(0, 256, (side // 16, side // 16, 3), dtype=np.uint8)  # smooth, like a photo
        path = folder / f"{number}.png"
        Image.fromarray(small).resize((side, side), Image.Resampling.BILINEAR).save(path)
        paths.append(path)
    return paths


def time_pictures(paths: list[Path], resolution: int, augmented: bool) -> float:
    started = time.perf_counter()
    for index, path in enumerate(paths):
        load_image(path, resolution, PICTURES if augmented else None, item_draws(0, 0, index))
    return len(paths) / (time.perf_counter() - started)


def time_clips(waves: list[np.ndarray]) -> float:
    started = time.perf_counter()
    for index, wave in enumerate(waves):
        augment_wave(wave, 16_000, CLIPS, item_draws(0, 0, index))
    return len(waves) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.count, args.clips, args.rounds = 20, 20, 1
    with tempfile.TemporaryDirectory() as scratch:
        paths = pictures(Path(scratch), args.count, args.side)
        plain, augmented, ratios = [], [], []
        for round_number in range(args.rounds):
            order = (False, True) if round_number % 2 == 0 else (True, False)
            speeds = {on: time_pictures(paths, args.resolution, on) for on in order}
            plain.append(speeds[False])
            augmented.append(speeds[True])
            ratios.append(speeds[True] / speeds[False])
    print(f"pictures {args.side}² → {args.resolution}²: plain {statistics.median(plain):.0f}/s, augmented "
          f"{statistics.median(augmented):.0f}/s, augmented/plain {statistics.median(ratios):.2f}×")
    t = np.arange(int(args.seconds * 16_000)) / 16_000
    waves = [(0.3 * np.sin(2 * np.pi * (200 + n) * t)).astype(np.float32) for n in range(args.clips)]
    speeds = [time_clips(waves) for _ in range(args.rounds)]
    print(f"clips of {args.seconds:g} s at 16 kHz: {statistics.median(speeds):.0f} augmented/s "
          f"({1000 / statistics.median(speeds):.2f} ms each)")


if __name__ == "__main__":
    main()

"""Benchmark: the default image cleaning pipeline on synthetic images.

Generates ``--count`` varied images (shapes on gradients, noise textures, stripes; mostly RGB with
some greyscale, RGBA and palette images; PNG and JPEG): ~5% of them exact duplicates of an earlier
image (same pixels, saved again as a PNG), ~5% near-duplicates (re-encoded as JPEG, or slightly
brightened) and ~3% blurred on purpose. It writes them to a temporary folder with a
``metadata.jsonl`` of captions, reads them the way an import does (``read_media_files`` on staged
files), then times ``run_cleaning(items, "image", None, ...)`` with every step at its default, and
prints seconds per step, what each step removed, and how many of the planted images were caught.

    .venv/bin/python bench/clean_images.py                  # 2,000 images of 128x128
    .venv/bin/python bench/clean_images.py --count 500 --side 512
    .venv/bin/python bench/clean_images.py --resize 64       # also the resize-and-crop step (off by default)
    .venv/bin/python bench/clean_images.py --shapes          # the shipped shapes example: colours kept apart?

The images are generated from ``--seed``, so a run is repeatable; generation is not timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# The steps import these on first use: importing them here keeps that one-off cost out of the
# timed run.
import imagehash  # noqa: F401
import numpy as np
import scipy.ndimage  # noqa: F401
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.data.archive import StagedFile  # noqa: E402
from studio.data.clean import run_cleaning  # noqa: E402
from studio.data.read_media import read_media_files  # noqa: E402
from studio.settings import Settings  # noqa: E402


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, size=3))


def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two colours far apart in brightness: two colours of equal luminance look flat in grey, and the
    blur step (which works on grey) would rightly call the picture blurry."""
    while True:
        a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
        luma = np.array([0.299, 0.587, 0.114], np.float32)
        if abs(float((a - b) @ luma)) > 80:
            return a, b


def draw_shapes(image: Image.Image, rng: np.random.Generator, count: int) -> Image.Image:
    """Filled ellipses, rectangles and triangles in random colours, drawn onto ``image``."""
    draw, side = ImageDraw.Draw(image), image.width
    for _ in range(count):
        x0, y0 = (int(v) for v in rng.integers(0, side, size=2))
        x1, y1 = x0 + int(rng.integers(side // 10, side // 2)), y0 + int(rng.integers(side // 10, side // 2))
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=_colour(rng))
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=_colour(rng))
        else:
            draw.polygon([tuple(int(v) for v in rng.integers(0, side, size=2)) for _ in range(3)], fill=_colour(rng))
    return image


def shapes(rng: np.random.Generator, side: int) -> Image.Image:
    """A two-colour gradient with a handful of filled ellipses, rectangles and polygons on top."""
    t = np.linspace(0.0, 1.0, side, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.clip(np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None], 0, 1)[..., None]
    a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    image = Image.fromarray((a * (1 - ramp) + b * ramp).astype(np.uint8))
    return draw_shapes(image, rng, int(rng.integers(3, 10)))


def texture(rng: np.random.Generator, side: int) -> Image.Image:
    """Value noise: a coarse random grid scaled up, plus fine grain, mapped between two colours."""
    cells = int(rng.integers(4, 24))
    coarse = Image.fromarray(rng.integers(0, 256, size=(cells, cells), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    grain = rng.normal(0, rng.uniform(0.03, 0.12), size=(side, side)).astype(np.float32)
    level = np.clip(smooth + grain, 0, 1)[..., None]
    a, b = _two_colours(rng)
    return Image.fromarray((a * (1 - level) + b * level).astype(np.uint8))


def stripes(rng: np.random.Generator, side: int) -> Image.Image:
    """Stripes or a checkerboard at a random period and angle, with a few shapes on top (plain
    stripes of similar angle and period have near-identical perceptual hashes: real near-duplicates
    for pHash, which would blur the count of planted ones)."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, side / 4)
    u = np.cos(angle) * x + np.sin(angle) * y
    v = -np.sin(angle) * x + np.cos(angle) * y
    on = (np.floor(u / period) % 2).astype(bool)
    if rng.random() < 0.5:
        on ^= (np.floor(v / period) % 2).astype(bool)
    a, b = _two_colours(rng)
    out = np.where(on[..., None], a.astype(np.uint8), b.astype(np.uint8))
    return draw_shapes(Image.fromarray(out.astype(np.uint8)), rng, int(rng.integers(2, 5)))


def as_mode(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Most images RGB; some greyscale, RGBA and palette, so the to-RGB step has work to do."""
    roll = rng.random()
    if roll < 0.10:
        return image.convert("L")
    if roll < 0.15:
        rgba = image.convert("RGBA")
        rgba.putalpha(Image.fromarray(rng.integers(128, 256, size=image.size[::-1], dtype=np.uint8)))
        return rgba
    if roll < 0.20:
        return image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return image


def save(image: Image.Image, folder: Path, stem: str, jpeg: bool, quality: int = 90) -> str:
    if jpeg and image.mode in ("RGB", "L"):
        name = f"{stem}.jpg"
        image.save(folder / name, quality=quality)
    else:
        name = f"{stem}.png"
        image.save(folder / name)
    return name


def reset_peak_memory() -> None:
    """Linux: restart the process's peak-RSS count (VmHWM), so the next peak read is the cleaning's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb() -> float:
    """Peak resident memory since the last reset (NaN where /proc is not available)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return float("nan")


def make_images(folder: Path, count: int, side: int, seed: int) -> dict[str, str]:
    """Write the images; returns file name -> "original", "blurry", "exact" or "near"."""
    rng = np.random.default_rng(seed)
    kinds: dict[str, str] = {}
    originals: list[str] = []
    for index in range(count):
        stem, roll = f"img{index:05d}", rng.random()
        if roll < 0.05 and originals:
            # Same pixels, a different file: decoded and saved again as a (lossless) PNG.
            with Image.open(folder / originals[int(rng.integers(len(originals)))]) as source:
                source.load()
                name = f"{stem}.png"
                source.save(folder / name, compress_level=int(rng.integers(1, 10)))
            kinds[name] = "exact"
        elif roll < 0.10 and originals:
            with Image.open(folder / originals[int(rng.integers(len(originals)))]) as source:
                rgb = source.convert("RGB")
            if rng.random() < 0.5:
                name = save(rgb, folder, stem, jpeg=True, quality=int(rng.integers(60, 90)))
            else:
                lift = int(rng.integers(6, 20))  # slightly brighter
                name = save(rgb.point(lambda v: min(255, v + lift)), folder, stem, jpeg=False)
            kinds[name] = "near"
        elif roll < 0.13:
            # Out of focus on purpose, for the blur step (variance of the Laplacian well under 15).
            name = save(shapes(rng, side).filter(ImageFilter.GaussianBlur(3 * side / 128)), folder, stem,
                        jpeg=rng.random() < 0.3)
            kinds[name] = "blurry"
        else:
            maker = (shapes, texture, stripes)[int(rng.choice(3, p=[0.5, 0.3, 0.2]))]
            name = save(as_mode(maker(rng, side), rng), folder, stem, jpeg=rng.random() < 0.3)
            kinds[name] = "original"
            originals.append(name)
    with open(folder / "metadata.jsonl", "w") as metadata:
        for name in kinds:
            metadata.write(json.dumps({"file_name": name, "text": f"a synthetic picture, {name}"}) + "\n")
    return kinds


def shapes_example() -> None:
    """The near-duplicate step on the shipped shapes example, whose captions name a colour and a shape: how many it
    removes, how many of those as copies of an image with another caption, and how far apart colours are."""
    from itertools import combinations

    from studio.data.archive import stage_inputs
    from studio.data.steps import STEPS, StepContext
    from studio.data.steps.image import colour_signature, open_rgb

    step = next(s for s in STEPS["image"] if s.name == "near_duplicates")
    with tempfile.TemporaryDirectory() as tmp:
        zipped = Path(__file__).resolve().parents[1] / "assets/examples/shapes.zip"
        staged, _ = stage_inputs([zipped], Path(tmp) / "staged", Settings())
        items = read_media_files(staged, "image", Settings()).items
        captions = {item.source: item.caption for item in items}
        outcome = step.run(items, step.params(), StepContext("image", Path(tmp) / "scratch"))
        signatures = {item.source: colour_signature(open_rgb(item)).coloured for item in items}
    crossed = [(item.source, reason) for item, reason in outcome.removed
               if captions[reason.split("near-duplicate of ")[1].split(" (")[0]] != item.caption]
    print(f"shapes example: {len(items)} images; near_duplicates removed {len(outcome.removed)}, "
          f"{len(crossed)} of them as a copy of an image with another caption")
    for source, reason in crossed:
        print(f"  {source}: {reason}")
    colour = {source: caption.split()[1] for source, caption in captions.items()}
    same, apart = 0.0, 1.0
    for a, b in combinations(signatures, 2):
        difference = float(np.abs(signatures[a] - signatures[b]).sum() / 2)
        if colour[a] == colour[b]:
            same = max(same, difference)
        else:
            apart = min(apart, difference)
    print(f"colour difference: at most {same:.2f} between images of one colour, at least {apart:.2f} between "
          f"images of two colours (max_colour_difference {step.params().max_colour_difference})")


def count_decodes() -> list[int]:
    """Counts the cleaning steps' decodes (``open_rgb`` calls) from now on: [count]."""
    import studio.data.steps.image as image_steps

    count, decode = [0], image_steps.open_rgb

    def counted(item):
        count[0] += 1
        return decode(item)

    image_steps.open_rgb = counted
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--side", type=int, default=128, help="width and height of the images, in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resize", type=int, metavar="PIXELS",
                        help="also run the (off by default) resize-and-crop step, to this square side")
    parser.add_argument("--shapes", action="store_true", help="only the shipped shapes example's near-duplicates")
    args = parser.parse_args()
    if args.shapes:
        shapes_example()
        return
    config = {"resize_crop": {"enabled": True, "resolution": args.resize}} if args.resize else None

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        print(f"generating {args.count:,} images of {args.side}x{args.side} ...", file=sys.stderr, flush=True)
        kinds = make_images(folder, args.count, args.side, args.seed)
        staged = [StagedFile(name=p.name, path=p) for p in sorted(folder.iterdir())]

        started, cpu_started = time.perf_counter(), time.process_time()
        read = read_media_files(staged, "image", Settings())
        read_seconds, read_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        assert len(read.items) == args.count and not read.problems, read.problems

        print("cleaning ...", file=sys.stderr, flush=True)
        decodes = count_decodes()
        reset_peak_memory()
        started, cpu_started = time.perf_counter(), time.process_time()
        kept, report = run_cleaning(read.items, "image", config, Path(tmp) / "scratch", Path(tmp) / "examples")
        total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        peak_mb = peak_memory_mb()

    kept_names = {item.source for item in kept}
    # The blur step writes meta["sharpness"] on every item it sees, so its removals are known exactly.
    blur_threshold = next(e for e in report if e["step"] == "blur")["params"]["threshold"]
    blurred = {item.source for item in read.items if item.meta.get("sharpness", np.inf) < blur_threshold}
    planted = {kind: [n for n, k in kinds.items() if k == kind] for kind in ("exact", "near", "blurry")}
    caught = {kind: sum(n not in kept_names for n in names) for kind, names in planted.items()}
    print(f"\n{args.count:,} images of {args.side}x{args.side} "
          f"({sum(1 for k in kinds.values() if k == 'original'):,} originals, {len(planted['exact']):,} exact "
          f"and {len(planted['near']):,} near duplicates, {len(planted['blurry']):,} blurry planted)")
    print(f"reading (import, not cleaning): {read_seconds:.2f} s\n")
    print(f"{'step':<18} {'on':>3} {'seconds':>8} {'removed':>8} {'changed':>8}")
    for entry in report:
        print(f"{entry['step']:<18} {'yes' if entry['enabled'] else 'no':>3} {entry['seconds']:>8.2f} "
              f"{entry['removed']:>8,} {entry['changed']:>8,}")
    print(f"{'total':<18} {'':>3} {total:>8.2f}   ({args.count / total:,.0f} images/s; {cpu:.2f} s of CPU time; "
          f"peak memory while cleaning {peak_mb:,.0f} MB; {decodes[0] / args.count:.2f} decodes an image)")
    print(f"reading + cleaning: {read_seconds + total:.1f} s ({read_cpu + cpu:.1f} s of CPU time), "
          f"{args.count / (read_seconds + total):,.0f} images/s\n")
    steps = {entry["step"]: entry for entry in report}
    for kind, step in (("blurry", "blur"), ("exact", "exact_duplicates"), ("near", "near_duplicates")):
        share = caught[kind] / max(len(planted[kind]), 1)
        print(f"{step}: {steps[step]['removed']:,} removed by the step; "
              f"{caught[kind]:,} of {len(planted[kind]):,} planted '{kind}' images removed ({share:.1%})")
    lost = [n for n, k in kinds.items() if k == "original" and n not in kept_names]
    print(f"originals removed: {len(lost):,} ({sum(n in blurred for n in lost):,} as blurry, the rest as "
          f"near-duplicates of another image)")


if __name__ == "__main__":
    main()

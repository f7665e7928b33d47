"""A small captioned image set a tiny text-to-image model can learn: coloured shapes.

Four colours (red, green, blue, yellow) × two shapes (circle, square), each image 64×64 PNG with a
sidecar caption ``.txt`` ("a red circle"). Position, size, the exact shade, the outline and the grey
background vary, so the importer's default cleaning keeps the images: 64 px is the default minimum
size, the dark outline keeps them sharp for the blur check, and the varied backgrounds and positions keep
them apart for the near-duplicate check. Deterministic for a seed.

    python -m studio.examples.shapes /tmp/shapes --per-class 40 --zip assets/examples/shapes.zip
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (35, 60, 230), "yellow": (240, 220, 30)}
SHAPES = ("circle", "square")
SIZE = 64


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 18) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def draw_shape(colour: str, shape: str, rng: random.Random):
    """One picture: a grey background and one outlined shape of ``colour``."""
    from PIL import Image, ImageDraw

    grey = rng.randint(150, 250)
    image = Image.new("RGB", (SIZE, SIZE), (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    fill = _jitter(COLOURS[colour], rng)
    outline = tuple(c // 3 for c in fill)
    half = rng.randint(11, 22)  # half the side (or the radius)
    cx, cy = rng.randint(half + 2, SIZE - half - 3), rng.randint(half + 2, SIZE - half - 3)
    box = (cx - half, cy - half, cx + half, cy + half)
    width = rng.choice((1, 2, 2, 3))
    if shape == "circle":
        draw.ellipse(box, fill=fill, outline=outline, width=width)
    else:
        draw.rectangle(box, fill=fill, outline=outline, width=width)
    return image


def dominant_colour(path: str | Path, palette: dict[str, tuple[int, int, int]] = COLOURS) -> str | None:
    """The palette colour most of the picture's saturated pixels are nearest to (the grey background ignored);
    None for a picture with no colour at all. How the starters' colour accuracy is measured (the learning tests
    and ``bench/flow_vs_diffusion.py``)."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32).reshape(-1, 3)
    saturated = pixels[pixels.max(axis=1) - pixels.min(axis=1) > 60]
    if len(saturated) < 8:
        return None
    names = list(palette)
    reference = np.array([palette[name] for name in names], dtype=np.float32)
    nearest = ((saturated[:, None, :] - reference[None]) ** 2).sum(axis=-1).argmin(axis=1)
    return names[int(np.bincount(nearest, minlength=len(names)).argmax())]


def make_shapes(folder: str | Path, n_per_class: int = 40, seed: int = 0) -> list[Path]:
    """Writes ``n_per_class`` images for each colour × shape, with caption sidecars; returns the images."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    written = []
    for colour in COLOURS:
        for shape in SHAPES:
            for number in range(n_per_class):
                stem = folder / f"{colour}_{shape}_{number:03d}"
                draw_shape(colour, shape, rng).save(stem.with_suffix(".png"), optimize=True)
                stem.with_suffix(".txt").write_text(f"a {colour} {shape}\n")
                written.append(stem.with_suffix(".png"))
    return written


def zip_folder(folder: str | Path, target: str | Path) -> Path:
    """The folder's files in a zip (sorted, fixed timestamps: the same files give the same bytes)."""
    import zipfile

    folder, target = Path(folder), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(folder)), date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return target


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zip", help="also write the files to this zip")
    args = parser.parse_args(argv)
    written = make_shapes(args.folder, args.per_class, args.seed)
    if args.zip:
        zip_folder(args.folder, args.zip)
    print(f"{len(written)} images in {args.folder}" + (f", zipped to {args.zip}" if args.zip else ""))


if __name__ == "__main__":
    main(sys.argv[1:])

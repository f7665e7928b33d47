"""Cleaning steps for images: size, aspect ratio, blur, duplicates, RGB, resize and crop.

Unreadable, truncated and decompression-bomb files never get here: reading refuses them.
"""

from __future__ import annotations

import hashlib

import numpy as np
from pydantic import BaseModel, Field

from studio.data.items import Item
from studio.data.steps.base import Step, StepContext, StepOutcome, drop_repeats, filter_items
from studio.data.steps.common import MISSING_CAPTIONS, greedy_near_duplicates, nearest_by_hamming


def open_rgb(item: Item):
    from PIL import Image

    with Image.open(item.path) as image:
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            # Transparent pixels hold arbitrary colours; show them the way a viewer does, on white.
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")


class MinSizeParams(BaseModel):
    min_side: int = Field(64, ge=1, description="smallest allowed width or height, in pixels")


def too_small(items, params: MinSizeParams, _ctx) -> StepOutcome:
    def why(item: Item) -> str | None:
        w, h = item.meta["width"], item.meta["height"]
        return f"too small: {w}x{h} (minimum side {params.min_side})" if min(w, h) < params.min_side else None
    return filter_items(items, why)


class AspectParams(BaseModel):
    max_ratio: float = Field(4.0, ge=1.0, description="longest side / shortest side")


def extreme_aspect(items, params: AspectParams, _ctx) -> StepOutcome:
    def why(item: Item) -> str | None:
        w, h = item.meta["width"], item.meta["height"]
        ratio = max(w, h) / max(min(w, h), 1)
        return f"extreme aspect ratio {ratio:.1f}:1 (maximum {params.max_ratio}:1)" if ratio > params.max_ratio else None
    return filter_items(items, why)


def sharpness(item: Item) -> float:
    """Variance of the Laplacian of the grey image scaled to at most 512 px: low means blurry."""
    from scipy.ndimage import laplace

    image = open_rgb(item).convert("L")
    image.thumbnail((512, 512))
    return float(laplace(np.asarray(image, dtype=np.float32)).var())


class BlurParams(BaseModel):
    threshold: float = Field(15.0, ge=0.0, description="variance of the Laplacian below which an image is blurry")


def blurry(items, params: BlurParams, _ctx) -> StepOutcome:
    def why(item: Item) -> str | None:
        score = item.meta["sharpness"] = sharpness(item)
        return f"blurry: sharpness {score:.1f} (threshold {params.threshold})" if score < params.threshold else None
    return filter_items(items, why)


def pixel_digest(item: Item) -> str:
    image = open_rgb(item)
    return hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()


def exact_image_duplicates(items, _params, _ctx) -> StepOutcome:
    # Same pixels count as the same image, whatever the file format or metadata.
    return drop_repeats(items, pixel_digest)


class NearDuplicateImageParams(BaseModel):
    threshold: float = Field(0.9, ge=0.5, le=1.0, description="1 - Hamming distance / 64 of perceptual hashes")
    max_colour_difference: float = Field(24.0, ge=0.0, le=255.0,
                                         description="mean difference of 4x4 colour thumbnails (0-255) still a duplicate")


def near_image_duplicates(items, params: NearDuplicateImageParams, _ctx) -> StepOutcome:
    import imagehash
    from PIL import Image

    # pHash sees only grey levels: a red and a blue circle hash alike. A 4x4 colour thumbnail must
    # agree too, so differently coloured versions of one shape are kept (they are different data).
    # Both come from one decode, and the decoded image is dropped straight after: keeping every
    # decoded image to the end held 1.9 GB for 2,000 images of 512x512 (3 bytes a pixel, each).
    codes, colours = np.zeros(len(items), dtype=np.uint64), np.zeros((len(items), 48), dtype=np.float32)
    for n, item in enumerate(items):
        image = open_rgb(item)
        codes[n] = int(str(imagehash.phash(image)), 16)
        colours[n] = np.asarray(image.resize((4, 4), Image.Resampling.BOX), dtype=np.float32).ravel()

    def same_colours(a: int, b: int) -> bool:
        return float(np.abs(colours[a] - colours[b]).mean()) <= params.max_colour_difference

    return greedy_near_duplicates(items, nearest_by_hamming(codes, 64, params.threshold, same_colours))


def _rewrite(item: Item, image, ctx: StepContext) -> None:
    """Save a changed image as a new file (the original stays untouched) and point the item at it."""
    jpeg = item.meta.get("format") == "JPEG"
    target = ctx.new_file(".jpg" if jpeg else ".png")
    image.save(target, quality=95) if jpeg else image.save(target)
    item.path = target
    item.meta.update(width=image.width, height=image.height, mode=image.mode)


def to_rgb(items, _params, ctx: StepContext) -> StepOutcome:
    outcome = StepOutcome(kept=items)
    for item in items:
        if item.meta.get("mode") != "RGB":
            before = item.meta.get("mode")
            _rewrite(item, open_rgb(item), ctx)
            outcome.changed.append((item, str(before), "RGB"))
    return outcome


class ResizeParams(BaseModel):
    resolution: int = Field(512, ge=16, le=4096, description="side of the square output, in pixels")


def resize_and_crop(items, params: ResizeParams, ctx: StepContext) -> StepOutcome:
    from PIL import Image, ImageOps

    outcome = StepOutcome(kept=items)
    size = (params.resolution, params.resolution)
    for item in items:
        before = f"{item.meta['width']}x{item.meta['height']}"
        if (item.meta["width"], item.meta["height"]) != size:
            _rewrite(item, ImageOps.fit(open_rgb(item), size, Image.Resampling.LANCZOS), ctx)
            outcome.changed.append((item, before, f"{size[0]}x{size[1]}"))
    return outcome


IMAGE_STEPS = [
    MISSING_CAPTIONS,
    Step("min_size", "Too small", "Removes images whose shorter side is below the minimum.", too_small, MinSizeParams),
    Step("aspect_ratio", "Extreme aspect ratio", "Removes very long or very tall images.", extreme_aspect, AspectParams),
    Step("blur", "Blurry", "Variance of the Laplacian below the threshold.", blurry, BlurParams),
    Step("exact_duplicates", "Exact duplicates", "Identical pixels; keeps the first.", exact_image_duplicates),
    Step("near_duplicates", "Near-duplicates", "Perceptual hash (pHash) similarity; keeps the first.",
         near_image_duplicates, NearDuplicateImageParams),
    Step("to_rgb", "Convert to RGB", "Converts greyscale, palette and RGBA images to RGB.", to_rgb),
    Step("resize_crop", "Resize and centre-crop", "Scales and centre-crops to a square resolution.",
         resize_and_crop, ResizeParams, on_by_default=False),
]

"""Cleaning steps for images: size, aspect ratio, blur, duplicates, RGB, resize and crop.

Unreadable, truncated and decompression-bomb files never get here: reading refuses them.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from studio.data.items import Item
from studio.data.steps.base import Step, StepContext, StepOutcome, drop_repeats, filter_items
from studio.data.steps.common import (MISSING_CAPTIONS, KeptFeatures, hamming_similarities,
                                     near_duplicates_by_features)


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


def sharpness(image) -> float:
    """Variance of the Laplacian of the grey image scaled to at most 512 px: low means blurry."""
    from scipy.ndimage import laplace

    grey = image.convert("L")
    grey.thumbnail((512, 512))
    return float(laplace(np.asarray(grey, dtype=np.float32)).var())


class BlurParams(BaseModel):
    threshold: float = Field(15.0, ge=0.0, description="variance of the Laplacian below which an image is blurry")


def blurry(items, params: BlurParams, _ctx) -> StepOutcome:
    def why(item: Item) -> str | None:
        score = item.meta["sharpness"] = image_facts(item).sharpness
        return f"blurry: sharpness {score:.1f} (threshold {params.threshold})" if score < params.threshold else None
    return filter_items(items, why)


def pixel_digest(item: Item) -> str:
    return image_facts(item).digest


def exact_image_duplicates(items, _params, ctx: StepContext) -> StepOutcome:
    # Same pixels count as the same image, whatever the file format or metadata.
    return drop_repeats(items, pixel_digest, ctx.memory("exact_duplicates", dict))


class NearDuplicateImageParams(BaseModel):
    threshold: float = Field(0.9, ge=0.5, le=1.0, description="1 - Hamming distance / 64 of perceptual hashes")
    max_colour_difference: float = Field(
        0.4, ge=0.0, le=1.0, description="share of the colours (hue, shade) and of the grey tones that may differ "
                                         "in a near-duplicate (0: the same colours only, 1: colour does not count)")


# The colour signature of an image: a histogram of its coloured pixels over hue (12 steps round the colour wheel) ×
# brightness (dark, mid, bright) × saturation (pale, vivid), and one of its grey pixels over 5 tones. Each pixel is
# shared between its two nearest steps on each axis, so a slightly shifted shade moves a little weight instead of
# jumping a whole bin.
HUE_STEPS, BRIGHTNESS_STEPS, SATURATION_STEPS, GREY_STEPS = 12, 3, 2, 5
MIN_CHROMA = 40  # max - min of R, G, B (0-255) below which a pixel is grey: backgrounds, JPEG noise, shadows
MIN_COLOURED_SHARE = 0.01  # with fewer coloured pixels than this, a picture is grey
MIN_GREY_SHARE = 0.1  # with fewer grey pixels than this, their tones are left out (a few edge pixels of a photo)
SIGNATURE_SIDE = 64  # the signature is taken on a thumbnail: colours survive downscaling, and it is quick


@dataclass(frozen=True)
class ColourSignature:
    coloured: np.ndarray | None  # hue x brightness x saturation, sums to 1; None: a grey picture
    grey: np.ndarray | None  # tones of the grey pixels, sums to 1; None: (almost) no grey pixels


def _soft_bins(position: np.ndarray, steps: int, circular: bool):
    """Each value's two nearest bins and weights, for ``position`` in bin units (bin k centred at k)."""
    low = np.floor(position).astype(np.intp)
    upper_weight = position - low
    high = low + 1
    if circular:
        low, high = low % steps, high % steps
    else:
        low, high = np.clip(low, 0, steps - 1), np.clip(high, 0, steps - 1)
    return (low, 1.0 - upper_weight), (high, upper_weight)


def _histogram(axes: list[tuple[np.ndarray, float, bool]]) -> np.ndarray:
    """A soft histogram (sums to 1) over ``axes``: (values in 0…1, steps, circular) each."""
    bins = [_soft_bins(values * (steps if circular else steps - 1), steps, circular)
            for values, steps, circular in axes]
    shape = [steps for _, steps, _ in axes]
    histogram = np.zeros(int(np.prod(shape)), dtype=np.float64)
    for corner in itertools.product(*bins):
        flat = np.ravel_multi_index([index for index, _ in corner], shape)
        weight = functools.reduce(np.multiply, [weight for _, weight in corner])
        histogram += np.bincount(flat, weight, minlength=histogram.size)
    return histogram / histogram.sum()


def colour_signature(image) -> ColourSignature:
    """What colours and grey tones an image holds, however they are laid out (pHash has the layout).

    Coloured and grey pixels are counted apart, so the colours are the shapes' colours however much grey background
    surrounds them: a small green circle and a small blue one on grey have no colour in common here, while in a 4x4
    thumbnail of each they differ by a few levels (the background's share of each cell drowns the circle)."""
    from PIL import Image

    thumbnail = image.copy()
    thumbnail.thumbnail((SIGNATURE_SIDE, SIGNATURE_SIDE), Image.Resampling.BOX)
    # one array per channel: element-wise maxima of three arrays are several times quicker than max(axis=1)
    red, green, blue = np.asarray(thumbnail, dtype=np.float32).reshape(-1, 3).T / 255
    brightest = np.maximum(np.maximum(red, green), blue)
    chroma = brightest - np.minimum(np.minimum(red, green), blue)
    coloured = chroma >= MIN_CHROMA / 255
    share = np.count_nonzero(coloured) / coloured.size
    colours = grey = None
    if share >= MIN_COLOURED_SHARE:
        r, g, b, c, value = red[coloured], green[coloured], blue[coloured], chroma[coloured], brightest[coloured]
        hue = np.where(value == r, ((g - b) / c) % 6,  # 0…6 round the wheel, as in HSV
                       np.where(value == g, (b - r) / c + 2, (r - g) / c + 4))
        colours = _histogram([(hue / 6, HUE_STEPS, True), (value, BRIGHTNESS_STEPS, False),
                              (c / value, SATURATION_STEPS, False)])
    if 1 - share >= MIN_GREY_SHARE:
        plain = ~coloured
        grey = _histogram([((red[plain] + green[plain] + blue[plain]) / 3, GREY_STEPS, False)])
    return ColourSignature(colours, grey)


def _moved(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).sum() / 2)  # the share of weight that would have to move to turn a into b


def colour_difference(a: ColourSignature, b: ColourSignature) -> float:
    """0 (the same colours and grey tones) … 1. A grey and a coloured picture differ entirely; grey tones count
    when both pictures have some grey."""
    if a.coloured is None or b.coloured is None:
        colours = 0.0 if a.coloured is None and b.coloured is None else 1.0
    else:
        colours = _moved(a.coloured, b.coloured)
    tones = _moved(a.grey, b.grey) if a.grey is not None and b.grey is not None else 0.0
    return max(colours, tones)


@dataclass(frozen=True)
class ImageFacts:
    """What the checks measure of an image: blur's sharpness, exact duplicates' pixel digest, near-duplicates' pHash
    and colours."""
    sharpness: float
    digest: str
    phash: int
    colours: ColourSignature


def image_facts(item: Item) -> ImageFacts:
    """The image's facts, all from one decode, kept with the item while it points at the same file: the blur, exact
    and near-duplicate steps each decoded every image (three decodes an image, most of the cleaning's time; see
    docs/PERFORMANCE.md). The decoded image is dropped at once (keeping them held 1.9 GB for 2,000 images of 512²)."""
    import imagehash

    known = item.meta.get("_facts")
    if known is not None and known[0] == item.path:
        return known[1]
    image = open_rgb(item)
    facts = ImageFacts(sharpness=sharpness(image),
                       digest=hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest(),
                       phash=int(str(imagehash.phash(image)), 16), colours=colour_signature(image))
    item.meta["_facts"] = (item.path, facts)
    return facts


def near_image_duplicates(items, params: NearDuplicateImageParams, ctx: StepContext) -> StepOutcome:
    # pHash sees only grey levels: a red and a blue circle hash alike. Their colours must agree too, so
    # differently coloured versions of one shape are kept (they are different data: the captions say so).
    facts = [image_facts(item) for item in items]
    codes = np.array([f.phash for f in facts], dtype=np.uint64)

    def same_colours(a: ColourSignature, b: ColourSignature) -> bool:
        return colour_difference(a, b) <= params.max_colour_difference

    index = ctx.memory("near_duplicates", lambda: KeptFeatures(hamming_similarities(64), params.threshold,
                                                               same_colours))
    return near_duplicates_by_features(items, index, codes, [f.colours for f in facts])


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
    Step("min_size", "Too small", "Removes images whose shorter side is below the minimum.", too_small, MinSizeParams,
         keep_more="lower its min_side (now {min_side} pixels)"),
    Step("aspect_ratio", "Extreme aspect ratio", "Removes very long or very tall images.", extreme_aspect, AspectParams,
         keep_more="raise its max_ratio (now {max_ratio})"),
    Step("blur", "Blurry", "Variance of the Laplacian below the threshold.", blurry, BlurParams,
         keep_more="lower its threshold (now {threshold})"),
    Step("exact_duplicates", "Exact duplicates", "Identical pixels; keeps the first.", exact_image_duplicates,
         compares_items=True),
    Step("near_duplicates", "Near-duplicates", "Perceptual hash (pHash) similarity and the same colours; keeps the "
         "first.", near_image_duplicates, NearDuplicateImageParams, keep_more="raise its threshold (now {threshold})",
         compares_items=True),
    Step("to_rgb", "Convert to RGB", "Converts greyscale, palette and RGBA images to RGB.", to_rgb),
    Step("resize_crop", "Resize and centre-crop", "Scales and centre-crops to a square resolution.",
         resize_and_crop, ResizeParams, on_by_default=False),
]

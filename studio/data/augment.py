"""Training-time augmentation: pictures mirrored, cropped a little and colour-jittered; clips made louder or softer,
noised to a chosen signal-to-noise ratio and shifted in time. Text gets none (``TEXT_NONE`` says why).

Nothing here changes a dataset version: an augmentation is drawn anew for each item in each epoch, while the run
trains, from ``item_draws(run seed, epoch, item)`` alone, so one process or several data-loading workers, a run
or its resume, and the preview (``preview_images`` / ``preview_clips``) all see the same variants. The options are
two sections of the training config (``studio.training.config.TrainConfig``), so the run's recorded config says
what was used. Pillow and numpy only (no torchvision, no OpenCV).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

TEXT_NONE = ("text is not augmented: swapping, dropping or replacing words changes what a sentence means (and a "
             "model learns the changed meaning as readily as the intended one), and back-translation needs "
             "translation models this studio does not download; to have more text, import more")


class ImageAugmentation(BaseModel):
    """What is done to each training picture, anew each epoch (validation pictures are left as they are)."""
    model_config = ConfigDict(extra="forbid")

    random_flip: bool = Field(False, title="mirror images",
                              description="mirror half of the training pictures left to right, drawn anew each epoch "
                                          "(no use for pictures with writing or a handedness that matters)")
    crop_scale: float = Field(1.0, ge=0.25, le=1.0, title="smallest crop",
                              description="crop each picture to a random part of at least this share of its area "
                                          "before scaling it to the training size (1: no crop; 0.8 to 0.9 is a small "
                                          "crop); the crop keeps the training shape within crop_ratio")
    crop_ratio: float = Field(1.1, ge=1.0, le=2.0, title="crop shape change",
                              description="with crop_scale below 1: how far a crop's width-to-height may stray from "
                                          "the training shape's, as a factor either way (1: the same shape)")
    brightness: float = Field(0.0, ge=0.0, le=0.5, title="brightness jitter",
                              description="multiply brightness by a random factor within 1 ± this (0: off; 0.1 small)")
    contrast: float = Field(0.0, ge=0.0, le=0.5, title="contrast jitter",
                            description="multiply contrast by a random factor within 1 ± this (0: off; 0.1 small)")
    saturation: float = Field(0.0, ge=0.0, le=0.5, title="saturation jitter",
                              description="multiply colour saturation by a random factor within 1 ± this (0: off)")
    hue: float = Field(0.0, ge=0.0, le=0.1, title="hue jitter",
                       description="turn the hue by a random share of the colour circle within ± this (0: off; 0.02 "
                                   "small; captions that name colours may stop matching above that)")

    def crops(self) -> bool:
        return self.crop_scale < 1.0

    def jitters(self) -> bool:
        return any((self.brightness, self.contrast, self.saturation, self.hue))

    def active(self) -> bool:
        return self.random_flip or self.crops() or self.jitters()

    def describe(self) -> str:
        parts = ["mirrored half the time"] if self.random_flip else []
        if self.crops():
            parts.append(f"cropped to {self.crop_scale:.0%}–100% of the area (shape within ×{self.crop_ratio:g})")
        jitter = [f"{name} ±{getattr(self, name):g}" for name in ("brightness", "contrast", "saturation", "hue")
                  if getattr(self, name)]
        if jitter:
            parts.append("colour jitter: " + ", ".join(jitter))
        return "; ".join(parts) or "none"


class AudioAugmentation(BaseModel):
    """What is done to each training clip, anew each epoch (validation clips are left as they are)."""
    model_config = ConfigDict(extra="forbid")

    gain_db_min: float = Field(0.0, ge=-24.0, le=24.0, title="lowest gain (dB)",
                               description="each clip's loudness changes by a random gain between gain_db_min and "
                                           "gain_db_max decibels (both 0: off; -6 to 6 is usual)")
    gain_db_max: float = Field(0.0, ge=-24.0, le=24.0, title="highest gain (dB)",
                               description="the top of the gain range (at least gain_db_min)")
    noise_snr_db: float = Field(0.0, ge=0.0, le=60.0, title="added noise (SNR dB)",
                                description="add white noise this many decibels below each clip's own power (its "
                                            "signal-to-noise ratio; 0: no noise; 20 to 40 is usual; a model also "
                                            "learns to make the noise it hears, so keep it faint)")
    time_shift_seconds: float = Field(0.0, ge=0.0, le=10.0, title="time shift (s)",
                                      description="move each clip's sound earlier or later by up to this many seconds, "
                                                  "filling with silence (0: off)")

    @model_validator(mode="after")
    def _range(self):
        if self.gain_db_min > self.gain_db_max:
            raise ValueError(f"gain_db_min ({self.gain_db_min:g}) is above gain_db_max ({self.gain_db_max:g}): the "
                             f"lowest gain must not exceed the highest")
        return self

    def active(self) -> bool:
        return bool(self.gain_db_min or self.gain_db_max or self.noise_snr_db or self.time_shift_seconds)

    def describe(self) -> str:
        parts = []
        if self.gain_db_min or self.gain_db_max:
            parts.append(f"gain {self.gain_db_min:+g} to {self.gain_db_max:+g} dB")
        if self.noise_snr_db:
            parts.append(f"white noise at {self.noise_snr_db:g} dB SNR")
        if self.time_shift_seconds:
            parts.append(f"shifted up to ±{self.time_shift_seconds:g} s")
        return "; ".join(parts) or "none"


# ----------------------------------------------------------------------------- draws

def item_draws(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random numbers of one item in one epoch of a run seeded ``seed``: a function of the three numbers alone
    (not of the process, data-loading worker or what was drawn before), so every way of running a run agrees."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


class EpochDraws:
    """A training dataset whose items draw their randomness from ``item_draws``: the loop calls ``start_epoch``
    before each epoch (data-loading workers are started after it, with the epoch in their copy)."""
    draw_seed: int = 0
    epoch: int = 0

    def start_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def draws(self, index: int) -> np.random.Generator:
        return item_draws(self.draw_seed, self.epoch, index)


def start_epoch(dataset, epoch: int) -> None:
    """Tells ``dataset`` (and the datasets inside a preference wrapper) which epoch begins."""
    if hasattr(dataset, "start_epoch"):
        dataset.start_epoch(epoch)


# ----------------------------------------------------------------------------- pictures

def crop_box(width: int, height: int, size: tuple[int, int], options: ImageAugmentation,
             draws: np.random.Generator) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of a random crop of a ``width`` x ``height`` picture for a ``size`` (w, h) target:
    a share of at least ``crop_scale`` of the largest box of the target's shape that fits (what an uncropped picture
    is centre-cropped to), its width-to-height within ``crop_ratio`` of the target's either way, anywhere in the
    picture. Without cropping: that centred box."""
    target = size[0] / size[1]
    base_w, base_h = (width, width / target) if width / height <= target else (height * target, height)
    scale = draws.uniform(options.crop_scale, 1.0) if options.crops() else 1.0
    stretch = math.exp(draws.uniform(-math.log(options.crop_ratio), math.log(options.crop_ratio))) \
        if options.crops() else 1.0
    area = scale * base_w * base_h
    crop_w, crop_h = base_w * math.sqrt(scale * stretch), base_h * math.sqrt(scale / stretch)
    if crop_w > width:  # too wide for the picture: as wide as it, as tall as keeps the area
        crop_w, crop_h = width, area / width
    if crop_h > height:
        crop_w, crop_h = area / height, height
    if options.crops():
        left, top = draws.uniform(0, width - crop_w), draws.uniform(0, height - crop_h)
    else:
        left, top = (width - crop_w) / 2, (height - crop_h) / 2
    return left, top, left + crop_w, top + crop_h


def augment_image(image, size: tuple[int, int], options: ImageAugmentation, draws: np.random.Generator):
    """``image`` (RGB) cropped (``crop_box``), scaled to ``size``, mirrored and colour-jittered as ``options`` and
    ``draws`` say. The draws come in a fixed order, whatever is switched on."""
    from PIL import Image, ImageEnhance

    box = crop_box(image.width, image.height, size, options, draws)
    image = image.resize(size, Image.Resampling.LANCZOS, box=box)
    if flipped(options, draws):
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    factors = {name: draws.uniform(1 - getattr(options, name), 1 + getattr(options, name))
               for name in ("brightness", "contrast", "saturation")}
    for name, enhancer in (("brightness", ImageEnhance.Brightness), ("contrast", ImageEnhance.Contrast),
                           ("saturation", ImageEnhance.Color)):
        if getattr(options, name):
            image = enhancer(image).enhance(factors[name])
    turn = draws.uniform(-options.hue, options.hue)
    if options.hue:
        image = turn_hue(image, turn)
    return image


def flipped(options: ImageAugmentation, draws: np.random.Generator) -> bool:
    """Whether this item is mirrored this epoch (a draw only when mirroring is on)."""
    return options.random_flip and bool(draws.random() < 0.5)


def turn_hue(image, turn: float):
    """``image`` with its hue turned by ``turn`` of the colour circle (-0.5 to 0.5)."""
    from PIL import Image

    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(round(turn * 256))) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


# ----------------------------------------------------------------------------- clips

def augment_wave(wave: np.ndarray, sample_rate: int, options: AudioAugmentation,
                 draws: np.random.Generator) -> np.ndarray:
    """``wave`` (float32 mono) shifted, given a gain and noised to ``noise_snr_db`` below its own power, as
    ``options`` and ``draws`` say; the same length. The draws come in a fixed order, whatever is switched on."""
    most = int(round(options.time_shift_seconds * sample_rate))
    shift = int(draws.integers(-most, most + 1)) if most else 0
    gain_db = draws.uniform(options.gain_db_min, options.gain_db_max)
    noise = draws.standard_normal(len(wave)) if options.noise_snr_db else None
    out = shifted(wave.astype(np.float32), shift) * np.float32(10 ** (gain_db / 20))
    power = float(np.mean(np.square(out, dtype=np.float64))) if len(out) else 0.0
    if noise is not None and power > 0:  # silence stays silent: it has no power to be below
        noise *= math.sqrt(power / 10 ** (options.noise_snr_db / 10) / max(float(np.mean(noise ** 2)), 1e-30))
        out = out + noise.astype(np.float32)
    return out.astype(np.float32)


def shifted(wave: np.ndarray, shift: int) -> np.ndarray:
    """``wave`` moved ``shift`` samples later (earlier when negative), silence filling the gap."""
    if shift == 0:
        return wave
    out = np.zeros_like(wave)
    if shift > 0:
        out[shift:] = wave[:len(wave) - shift]
    else:
        out[:shift] = wave[-shift:]
    return out


# ----------------------------------------------------------------------------- preview

def preview_images(rows: list[dict], root: Path, size: int, options: ImageAugmentation, seed: int, variants: int,
                   out: Path) -> list[tuple[Path, str]]:
    """``variants`` augmented copies of each manifest row's picture, written to ``out``: (file, caption) each.
    Variant ``n`` of item ``i`` is what epoch ``n`` of a run seeded ``seed`` gives the ``i``-th training item."""
    from studio.data.items import Item
    from studio.data.steps.image import open_rgb

    out.mkdir(parents=True, exist_ok=True)
    made = []
    for index, row in enumerate(rows):
        image = open_rgb(Item(source=row["file"], path=Path(root) / row["file"]))
        for epoch in range(variants):
            picture = augment_image(image, (size, size), options, item_draws(seed, epoch, index))
            path = out / f"item{index + 1:02d}_epoch{epoch + 1:02d}.png"
            picture.save(path)
            made.append((path, f"item {index + 1} · epoch {epoch + 1}"))
    return made


def preview_clips(rows: list[dict], root: Path, sample_rate: int, seconds: float, options: AudioAugmentation,
                  seed: int, variants: int, out: Path) -> list[tuple[Path, str]]:
    """``variants`` augmented copies of the first ``seconds`` of each row's clip (at ``sample_rate``), written to
    ``out`` as 16-bit WAV: (file, caption) each, variant ``n`` drawn as epoch ``n`` of a run seeded ``seed``."""
    import soundfile as sf

    from studio.data.steps.audio import read_mono

    out.mkdir(parents=True, exist_ok=True)
    made = []
    for index, row in enumerate(rows):
        path = Path(root) / row["file"]
        rate = sample_rate or sf.info(str(path)).samplerate
        wave = read_mono(path, rate)[:int(round(seconds * rate))]
        for epoch in range(variants):
            clip = augment_wave(wave, rate, options, item_draws(seed, epoch, index))
            target = out / f"item{index + 1:02d}_epoch{epoch + 1:02d}.wav"
            sf.write(str(target), np.clip(clip, -1.0, 1.0), rate, subtype="PCM_16")
            made.append((target, f"item {index + 1} · epoch {epoch + 1}"))
    return made

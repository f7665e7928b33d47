"""Small synthetic images (PIL) and audio clips (numpy + soundfile) for the data-pipeline tests,
plus helpers to open a throw-away store and to run one cleaning step on its own.

Everything is generated from a seed, so the tests never depend on files shipped with the repo.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from studio.data.items import Item
from studio.data.read_media import inspect_audio, inspect_image
from studio.data.steps import STEPS, StepContext, StepOutcome
from studio.settings import load_settings
from studio.store import open_store

# --------------------------------------------------------------------------------------------- store


class StoreOpener:
    """Opens stores on ``<tmp>/home`` with settings overrides; closes them all at the end."""

    def __init__(self, tmp_path: Path):
        self.home = tmp_path / "home"
        self._opened = []

    def __call__(self, **overrides):
        store = open_store(load_settings(home=self.home, **overrides))
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in self._opened:
            store.close()


def manifest(store, result: dict) -> list[dict]:
    folder = Path(result["path"])
    with open(folder / "manifest.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def errors_by_file(result: dict) -> dict[str, str]:
    return {e["file"]: e["reason"] for e in result["errors"]}


# ----------------------------------------------------------------------------------------- steps


def run_step(name: str, items: list[Item], modality: str, scratch: Path, **params) -> StepOutcome:
    """Run one step with (validated) params, as the pipeline would."""
    step = next(s for s in STEPS[modality] if s.name == name)
    return step.run(items, step.params(**params), StepContext(modality=modality, scratch=scratch))


def image_item(path: Path, caption: str | None = "a caption", max_pixels: int = 64_000_000) -> Item:
    return Item(source=path.name, path=path, caption=caption, meta=inspect_image(path, max_pixels))


def audio_item(path: Path, caption: str | None = "a caption") -> Item:
    meta = inspect_audio(path, load_settings().max_audio_seconds)
    return Item(source=path.name, path=path, caption=caption, meta=meta)


def sources(items_or_pairs) -> list[str]:
    out = []
    for entry in items_or_pairs:
        item = entry[0] if isinstance(entry, tuple) else entry
        out.append(item.source)
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------- images


def circle(size: int = 64, color="red", background="white", height: int | None = None) -> Image.Image:
    """A sharp filled circle on a plain background: simple, but not blurry."""
    height = height or size
    image = Image.new("RGB", (size, height), background)
    draw = ImageDraw.Draw(image)
    r = min(size, height) // 4
    cx, cy = size // 2, height // 2
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
    return image


def photo(size: int = 128, seed: int = 0, height: int | None = None) -> Image.Image:
    """Photo-like content: a smooth gradient (direction from the seed), grain and a few solid shapes."""
    rng = np.random.default_rng(seed)
    height = height or size
    y, x = np.mgrid[0:height, 0:size] / max(size, height)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * x + np.sin(angle) * y
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-150, 150, 3)
    pixels = base + ramp[..., None] * slope + rng.normal(0, 20, (height, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, max(size - 20, 1))), int(rng.integers(0, max(height - 20, 1)))
        w, h = int(rng.integers(size // 8, size // 3 + 1)), int(rng.integers(height // 8, height // 3 + 1))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x0 + w, y0 + h), fill=fill)
    return image


def blurred(image: Image.Image, radius: float = 4) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius))


def save(image: Image.Image, path: Path, **options) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = options.pop("format", None)
    image.save(path, format=fmt, **options)
    return path


def write(path: Path, data: bytes | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return path


# ----------------------------------------------------------------------------------------- audio


def db_to_amplitude(db: float) -> float:
    return 10 ** (db / 20)


def rms_db(data: np.ndarray) -> float:
    return float(20 * np.log10(max(float(np.sqrt(np.mean(np.square(data, dtype=np.float64)))), 1e-12)))


def tone(freq: float = 440.0, seconds: float = 1.0, rate: int = 16_000, rms_dbfs: float = -12.0,
         channels: int = 1, harmonics: int = 1) -> np.ndarray:
    """A sine (plus optional harmonics) at a given RMS level, shape (frames, channels)."""
    t = np.arange(int(round(seconds * rate))) / rate
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, harmonics + 1))
    wave = wave / np.sqrt(np.mean(wave ** 2)) * db_to_amplitude(rms_dbfs)
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def noise(seconds: float = 1.0, rate: int = 16_000, rms_dbfs: float = -70.0, seed: int = 0,
          channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * rate))
    return (rng.standard_normal((frames, channels)) * db_to_amplitude(rms_dbfs)).astype(np.float32)


def silence(seconds: float, rate: int = 16_000, channels: int = 1) -> np.ndarray:
    return np.zeros((int(round(seconds * rate)), channels), dtype=np.float32)


def write_audio(path: Path, data: np.ndarray, rate: int = 16_000, **options) -> Path:
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, **options)
    return path


def flac_without_length(flac: Path, path: Path) -> Path:
    """A copy of a FLAC file with the total sample count in its STREAMINFO block set to 0: "unknown", as a
    streaming encoder writes it (libsndfile then reports 2**63 - 1 frames)."""
    raw = bytearray(Path(flac).read_bytes())
    assert raw[:4] == b"fLaC" and raw[4] & 0x7F == 0  # the first metadata block is STREAMINFO
    raw[8 + 13] &= 0xF0  # STREAMINFO bytes 13-17 end with the 36-bit total sample count
    raw[8 + 14:8 + 18] = bytes(4)
    return write(path, bytes(raw))


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    return sf.read(str(path), dtype="float32", always_2d=True)


# ------------------------------------------------------------------------------------------- zips


def make_zip(path: Path, members: dict[str, bytes | str | Path], compression=zipfile.ZIP_DEFLATED) -> Path:
    """A zip of ``{name: bytes, text or a file to copy}``; names are written exactly as given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, content in members.items():
            if isinstance(content, Path):
                content = content.read_bytes()
            archive.writestr(zipfile.ZipInfo(name), content, compress_type=compression)
    return path

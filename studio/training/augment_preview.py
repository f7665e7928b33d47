"""Preview augmentation: what a run's augmentation makes of a few training items of a dataset version, before
training (the Train tab's "Preview augmentation", ``studio data augment-preview``). Variant ``n`` of the ``i``-th
training item is what epoch ``n`` of a run with the same config gives it (``studio.data.augment.item_draws``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from studio.data.augment import TEXT_NONE, preview_clips, preview_images
from studio.data.service import get_version, read_manifest
from studio.store import Store
from studio.training.config import TrainConfig, describe_augmentation


class PreviewRefused(ValueError):
    """Nothing to preview: a text dataset, or a version without training items."""


@dataclass
class Preview:
    modality: str                   # image | audio
    files: list[tuple[Path, str]]   # (file, "item I · epoch N"), item by item
    described: str                  # the augmentation in words (as the run's card says it)


def preview_augmentation(store: Store, ref: str, config: TrainConfig, out: Path, items: int = 3,
                         variants: int = 8) -> Preview:
    """``variants`` augmented copies of each of the first ``items`` training items of version ``ref`` (as
    ``config`` would train them: its resolution, clip length and seed), written under ``out``."""
    version = get_version(store, ref)
    modality = version.dataset.modality
    if modality == "text":
        raise PreviewRefused(TEXT_NONE[0].upper() + TEXT_NONE[1:])
    if not 1 <= items <= 64 or not 1 <= variants <= 64:
        raise PreviewRefused(f"items and variants are each 1 to 64 (got {items} and {variants})")
    rows = [row for row in read_manifest(store, version, "train", limit=items) if row.get("file")]
    if not rows:
        raise PreviewRefused(f"dataset version {ref} has no training items to preview")
    root = store.path(version.path)
    if modality == "image":
        files = preview_images(rows, root, config.image.resolution, config.image_augmentation, config.seed, variants,
                               Path(out))
    else:
        files = preview_clips(rows, root, config.audio.sample_rate, config.audio.clip_seconds,
                              config.audio_augmentation, config.seed, variants, Path(out))
    return Preview(modality=modality, files=files, described=describe_augmentation(config, modality))

"""Text-to-audio with a conditional GAN: the backend of the ``starter-audio-gan`` family.

The image GAN (``studio.models.gan``: its networks, hinge loss, R1, DiffAugment, averaged generator and the
``Adversarial`` step) on the audio starter's spectrograms (``studio.models.audio``: the log-magnitude STFT of
``clip_seconds`` of 8 kHz audio as a one-channel picture of 64 frequency bins by its frames, and Griffin-Lim back
to sound). The generator draws a whole spectrogram in one pass; its width is fixed by the training clip length, so a
model draws clips of that length only. Samples are 16-bit WAV files, as the diffusion starter's, deterministic for a
seed (the generator's noise and Griffin-Lim's phase are both drawn from it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.models.audio import DEFAULT_RATE, clip_datasets, other_rate, spectrogram_settings, write_clips
from studio.models.base import Handle, Parts, Sample
from studio.models.gan import GanBackend, captioned_shape
from studio.models.registry import STARTER_AUDIO_GAN


@dataclass(kw_only=True)
class SpectrogramGanParts(Parts):
    tokenizer: Any
    spectrogram: dict     # the picture's geometry (``audio.spectrogram_settings``)
    clip_seconds: float   # the clip length it draws (its width)

    def marker_fields(self) -> dict:
        return {"spectrogram": self.spectrogram, "sample_rate": self.spectrogram["sample_rate"],
                "clip_seconds": self.clip_seconds}


class SpectrogramGanBackend(GanBackend):
    modality = "audio"
    family = STARTER_AUDIO_GAN

    def load(self, model_ref: str, method: str, config, train_rows: list[dict] | None = None) -> Handle:
        handle = super().load(model_ref, method, config, train_rows)
        rate = handle.parts.spectrogram["sample_rate"]
        if config.audio.sample_rate and config.audio.sample_rate != rate:
            raise ValueError(other_rate(model_ref, rate))
        return handle

    def new_starter(self, config, train_rows: list[dict] | None) -> tuple[Any, dict]:
        """(tokenizer, shape) of the starter built anew: the word tokenizer of the training captions, and a
        one-channel picture of the spectrogram of ``audio.clip_seconds`` at ``audio.sample_rate`` (8 kHz by default),
        whose discriminator keeps the frequencies apart (``Discriminator``'s ``keep_rows``: it hears the pitch)."""
        clip_seconds = config.audio.clip_seconds
        spec = spectrogram_settings(config.audio.sample_rate or DEFAULT_RATE, clip_seconds)
        if spec["frames"] < 8:
            raise ValueError(f"clip_seconds: the audio GAN needs clips of at least 8 frames ({8 * spec['hop']} "
                             f"samples; got {clip_seconds} s)")
        return captioned_shape(train_rows, {"channels": 1, "height": spec["n_bins"], "width": spec["frames"],
                                            "spectrogram": spec, "clip_seconds": clip_seconds, "keep_rows": True})

    def parts(self, tokenizer, shape: dict) -> Parts:
        return SpectrogramGanParts(family=self.family.name, starter=True, tokenizer=tokenizer,
                                   spectrogram=shape["spectrogram"], clip_seconds=shape["clip_seconds"])

    def datasets(self, handle: Handle, rows: dict[str, list[dict]], root: Path, config) -> dict[str, Any]:
        """The audio starter's captioned spectrograms, cut to the model's clip length (no length buckets: the
        generator's pictures have one width), with the run's audio augmentation on the training split."""
        parts = handle.parts
        return clip_datasets(rows, root, parts.tokenizer, parts.spectrogram, parts.clip_seconds, config)

    def generate(self, handle: Handle, prompts: list[str], seeds: list[int], settings: dict,
                 out_dir: Path) -> list[Sample]:
        """One pass of the averaged generator per clip, then Griffin-Lim. Settings: griffin_lim_iterations (48);
        seconds only as the model's clip length (0: that length)."""
        seconds = float((settings or {}).get("seconds") or 0)
        if seconds and abs(seconds - handle.parts.clip_seconds) > 1e-6:
            raise ValueError(f"seconds: this audio GAN draws clips of {handle.parts.clip_seconds:g} s, the length it "
                             f"was trained on (got {seconds:g}); leave seconds at 0")
        return super().generate(handle, prompts, seeds, settings, out_dir)

    def write_samples(self, handle: Handle, chosen: list[tuple[str, int]], images, settings: dict, out_dir: Path,
                      started: float) -> list[Sample]:
        """WAV files as the diffusion starter writes them."""
        return write_clips(chosen, images, handle.parts.spectrogram, settings, out_dir, started)

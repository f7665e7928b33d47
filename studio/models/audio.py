"""Text-to-audio: the starter, a small diffusion model on spectrograms trained from scratch.

A clip becomes a one-channel picture: the log-magnitude STFT (8 kHz audio, 256-point Hann FFT, hop 128;
the lowest 64 frequency bins, 0-2 kHz in 31 Hz steps; 64 frames ≈ 1 s), peak-normalised and mapped from
[-80, 0] dB to [-1, 1]. (A 512-point FFT would double the picture's height, and the training cost, for
frequency detail that pitched sounds below 2 kHz do not need.) The shared diffusion code (``studio.models.diffusion``) learns and samples those pictures;
Griffin-Lim (numpy/scipy) turns a sampled spectrogram back into a waveform.

``SpectrogramBackend`` is the backend of the ``starter-audio`` family (the starter and the folders its runs
save). MusicGen is a family of its own (``studio.models.musicgen``); ``AudioBackend`` takes any audio model
and hands it to its family's backend. Other Hub audio families (AudioLDM, Stable Audio) are not supported yet:
``load`` says so. torch, diffusers, transformers, scipy and soundfile are imported inside functions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from studio.data.augment import AudioAugmentation, EpochDraws, augment_wave
from studio.data.steps.audio import read_mono  # noqa: F401 - where the audio backends and metrics read clips
from studio.models.base import BackendConfig, Handle, Parts, Sample, pairs
from studio.models.common import BucketBatches, prologue, read_marker
from studio.models.image import DiffusionBackend
from studio.models.preference import datasets_for
from studio.models.registry import STARTER_AUDIO, ModalityBackend, family_for

STARTER = STARTER_AUDIO.starter


def other_rate(model_ref: str, rate: int) -> str:
    return f"'{model_ref}' was trained on {rate} Hz audio; set sample_rate to 0 or {rate}"
DEFAULT_RATE = 8000
N_FFT, HOP, N_BINS, TOP_DB = 256, 128, 64, 80.0


# ----------------------------------------------------------------------------- spectrograms

def spectrogram_settings(sample_rate: int, clip_seconds: float) -> dict:
    """The picture's geometry: frames rounded up to a multiple of 8 (the UNet halves the size three times)."""
    frames = math.ceil(clip_seconds * sample_rate / HOP)
    return {"sample_rate": int(sample_rate), "n_fft": N_FFT, "hop": HOP, "n_bins": N_BINS, "top_db": TOP_DB,
            "frames": int(math.ceil(frames / 8) * 8)}


def _stft(wave: np.ndarray, spec: dict) -> np.ndarray:
    from scipy.signal import stft

    _, _, z = stft(wave, fs=spec["sample_rate"], window="hann", nperseg=spec["n_fft"],
                   noverlap=spec["n_fft"] - spec["hop"], boundary="zeros", padded=True)
    return z


def _istft(z: np.ndarray, spec: dict) -> np.ndarray:
    from scipy.signal import istft

    _, wave = istft(z, fs=spec["sample_rate"], window="hann", nperseg=spec["n_fft"],
                    noverlap=spec["n_fft"] - spec["hop"], boundary=True)
    return wave


def _fit_frames(z: np.ndarray, frames: int) -> np.ndarray:
    if z.shape[1] >= frames:
        return z[:, :frames]
    return np.pad(z, ((0, 0), (0, frames - z.shape[1])))


def to_spectrogram(wave: np.ndarray, spec: dict) -> np.ndarray:
    """Mono waveform → (n_bins, frames) float32 in [-1, 1]: 0 dB (the clip's peak) → 1, -top_db → -1."""
    magnitude = np.abs(_fit_frames(_stft(wave, spec), spec["frames"])[:spec["n_bins"]])
    db = 20 * np.log10(magnitude + 1e-10)
    db = np.clip(db - db.max(), -spec["top_db"], 0.0)
    return (db / spec["top_db"] * 2 + 1).astype(np.float32)


def griffin_lim(image: np.ndarray, spec: dict, iterations: int = 48, momentum: float = 0.99, seed: int = 0,
                peak: float = 0.5) -> np.ndarray:
    """(n_bins, frames) in [-1, 1] → waveform: fast Griffin-Lim (Perraudin et al. 2013), the phase found by
    alternating projections; bins above ``n_bins`` are silent. Deterministic for a seed."""
    frames = image.shape[1]
    db = (np.clip(image, -1, 1) - 1) / 2 * spec["top_db"]
    magnitude = np.zeros((spec["n_fft"] // 2 + 1, frames))
    magnitude[:image.shape[0]] = np.where(db > -spec["top_db"] + 0.5, 10 ** (db / 20), 0.0)
    rng = np.random.default_rng(seed)
    angles = np.exp(2j * np.pi * rng.random(magnitude.shape))
    previous = np.zeros_like(angles)
    for _ in range(iterations):
        rebuilt = _fit_frames(_stft(_istft(magnitude * angles, spec), spec), frames)
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles /= np.abs(angles) + 1e-16
        previous = rebuilt
    wave = _istft(magnitude * angles, spec)[:int(round((frames - 1) * spec["hop"]))]
    return (wave / (np.abs(wave).max() + 1e-9) * peak).astype(np.float32)


def fit_clip(wave: np.ndarray, samples: int, draws: np.random.Generator | None = None) -> tuple[np.ndarray, int]:
    """(exactly ``samples`` samples, how many of them are the file's): a window of a longer file at a random start
    taken from ``draws`` (its start without them), or a shorter one padded with silence."""
    spare = len(wave) - samples
    if spare > 0:
        start = int(draws.integers(0, spare + 1)) if draws is not None else 0
        return wave[start:start + samples], samples
    return np.pad(wave, (0, -spare)), len(wave)


def dominant_frequency(wave: np.ndarray, sample_rate: int) -> float:
    """The frequency (Hz) of the strongest peak of the clip's magnitude spectrum."""
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.argmax(spectrum) * sample_rate / len(wave))


# ----------------------------------------------------------------------------- clips, by length

BUCKET_SHARES = (0.25, 0.5, 0.75, 1.0)  # the lengths of length bucketing, as shares of clip_seconds


def length_bucket(seconds: float, clip_seconds: float) -> float:
    """What a clip of ``seconds`` is cut to with length bucketing: the shortest of 1/4, 1/2, 3/4 or all of
    ``clip_seconds`` that holds it (all of it for a longer clip, of which a window is taken)."""
    return next((clip_seconds * share for share in BUCKET_SHARES if seconds <= clip_seconds * share + 1e-6),
                clip_seconds)


def clip_duration(row: dict, path: Path) -> float:
    """A manifest row's clip length in seconds: as the import recorded it, else from the file's header."""
    if row.get("duration"):
        return float(row["duration"])
    import soundfile as sf

    return float(sf.info(str(path)).duration)


class Clips(EpochDraws):
    """What both audio backends' datasets share: a split's files, each decoded once at ``sample_rate`` and kept in
    memory; the length each clip is cut to (``seconds``: clip_seconds, or with ``bucketed`` its length bucket's,
    ``length_bucket``) and the loop's batches (``training.loop.make_loader``: one length each when bucketed).
    Training takes a random window of a longer file (``random_crop``), validation its start, and augments it
    (``augmentation``); both drawn from the run's ``seed``, the epoch and the item (``EpochDraws``)."""

    def __init__(self, rows: list[dict], root: Path, sample_rate: int, clip_seconds: float, random_crop: bool,
                 bucketed: bool = False, augmentation: AudioAugmentation | None = None, seed: int = 0):
        self.paths = [Path(root) / row["file"] for row in rows]
        self.sample_rate, self.random_crop, self.bucketed = sample_rate, random_crop, bucketed
        self.augmentation, self.draw_seed = augmentation, seed
        self.seconds = [length_bucket(clip_duration(row, path), clip_seconds) if bucketed else clip_seconds
                        for row, path in zip(rows, self.paths)]
        self.waves: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def wave(self, index: int) -> np.ndarray:
        if index not in self.waves:
            self.waves[index] = read_mono(self.paths[index], self.sample_rate)
        return self.waves[index]

    def window(self, index: int, samples: int) -> tuple[np.ndarray, int]:
        """(``samples`` samples of the clip, how many of them are the file's): ``fit_clip``, then augmented."""
        draws = self.draws(index)
        wave, length = fit_clip(self.wave(index), samples, draws if self.random_crop else None)
        if self.augmentation is not None and self.augmentation.active():
            wave = augment_wave(wave, self.sample_rate, self.augmentation, draws)
        return wave, length

    def batches(self, batch_size: int, seed: int, shuffle: bool) -> BucketBatches | None:
        return BucketBatches(self.seconds, batch_size, seed, shuffle) if self.bucketed else None


# ----------------------------------------------------------------------------- the starter

def starter_unet(spec: dict, cross_attention_dim: int = 64):
    """A small UNet over (frequency, time) pictures (about 1.1M parameters): four resolutions with few
    channels at the large ones, cross-attention at the two smallest, and the pooled caption added to the
    timestep embedding (``addition_embed_type='text'``) so the whole picture hears the caption."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=(spec["n_bins"], spec["frames"]), in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(8, 16, 32, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=8,
        addition_embed_type="text", addition_embed_type_num_heads=8)


def _dataset_class():
    import torch
    from torch.utils.data import Dataset

    class CaptionedClips(Clips, Dataset):
        """Manifest rows → {pixel_values: (1, n_bins, frames) spectrogram, input_ids}, ``frames`` those of the
        clip's length (``Clips``)."""

        def __init__(self, rows: list[dict], root: Path, tokenizer, spec: dict, clip_seconds: float,
                     random_crop: bool, bucketed: bool = False, augmentation: AudioAugmentation | None = None,
                     seed: int = 0):
            from studio.models.diffusion import tokenize

            super().__init__(rows, root, spec["sample_rate"], clip_seconds, random_crop, bucketed, augmentation, seed)
            self.input_ids = tokenize(tokenizer, [row.get("caption") or "" for row in rows]) if rows else None
            # the model's own geometry for whole clips; a shorter bucket's, as wide as its length
            self.specs = {seconds: spec if seconds == clip_seconds else
                          spectrogram_settings(spec["sample_rate"], seconds) for seconds in set(self.seconds)}

        def __getitem__(self, index: int) -> dict:
            spec = self.specs[self.seconds[index]]
            wave, _ = self.window(index, (spec["frames"] - 1) * spec["hop"])
            image = torch.from_numpy(to_spectrogram(wave, spec))[None]
            return {"pixel_values": image, "input_ids": self.input_ids[index]}

    return CaptionedClips


def clip_datasets(rows: dict[str, list[dict]], root: Path, tokenizer, spec: dict, clip_seconds: float, config,
                  bucketed: bool = False) -> dict[str, Any]:
    """Each split's captioned spectrograms of ``clip_seconds`` (``spec``'s geometry): a random window of each training
    clip with the run's audio augmentation, the start of each validation clip."""
    dataset = _dataset_class()
    return datasets_for(config.objective, rows, lambda given, split: dataset(
        given, root, tokenizer, spec, clip_seconds, split == "train", bucketed,
        config.audio_augmentation if split == "train" else None, config.seed))


@dataclass(kw_only=True)
class SpectrogramParts(Parts):
    tokenizer: Any     # the caption tokenizer (the text encoder, UNet and scheduler are in ``handle.module``)
    spectrogram: dict  # the picture's geometry (``spectrogram_settings``): sample rate, FFT, bins, frames

    def marker_fields(self) -> dict:
        return {"spectrogram": self.spectrogram, "sample_rate": self.spectrogram["sample_rate"]}


class AudioBackend(ModalityBackend):
    """Any audio model: the spectrogram starter's family here, MusicGen's in ``studio.models.musicgen``
    (what ``backend_for('audio')`` gives)."""

    def __init__(self):
        super().__init__("audio")


class SpectrogramBackend(DiffusionBackend):
    """The ``starter-audio`` family: the spectrogram starter and the folders saved from its runs."""
    modality = "audio"

    # -- loading

    def load(self, model_ref: str, method: str, config: BackendConfig,
             train_rows: list[dict] | None = None) -> Handle:
        from studio.models import diffusion

        family = family_for(model_ref, self.modality)
        prologue(family, model_ref, method, config)
        options = config.audio
        if model_ref == STARTER:
            spec = spectrogram_settings(options.sample_rate or DEFAULT_RATE, options.clip_seconds)
            tokenizer = diffusion.word_tokenizer([row.get("caption") or "" for row in train_rows or []])
            text_encoder = diffusion.starter_text_encoder(tokenizer)
            unet = starter_unet(spec, text_encoder.config.hidden_size)
            scheduler, starter = diffusion.starter_scheduler(), True
        else:
            saved = _saved_spectrogram(model_ref)
            rate = saved["sample_rate"]
            if options.sample_rate and options.sample_rate != rate:
                raise ValueError(other_rate(model_ref, rate))
            spec = spectrogram_settings(rate, options.clip_seconds)
            pipeline = diffusion.load_pipeline_parts(model_ref, method)
            tokenizer, text_encoder, unet = pipeline["tokenizer"], pipeline["text_encoder"], pipeline["unet"]
            scheduler, starter = pipeline["scheduler"], False
        module = diffusion.trainable_module(family, unet, text_encoder, scheduler, tokenizer, None, method, config,
                                            train_text_encoder=starter)
        parts = SpectrogramParts(family=family.name, starter=starter, tokenizer=tokenizer, spectrogram=spec)
        return Handle(modality=self.modality, model_ref=model_ref, method=method, module=module, parts=parts)

    # -- data

    def datasets(self, handle: Handle, rows: dict[str, list[dict]], root: Path, config) -> dict[str, Any]:
        """Clips batched by length when ``length_buckets`` (examples only: a pair's two clips go in one batch)."""
        bucketed = config.audio.length_buckets and config.objective == "sft"
        return clip_datasets(rows, root, handle.parts.tokenizer, handle.parts.spectrogram, config.audio.clip_seconds,
                             config, bucketed)

    # -- generation

    def generate(self, handle: Handle, prompts: list[str], seeds: list[int], settings: dict,
                 out_dir: Path) -> list[Sample]:
        """Settings: steps (30; 8 for flow matching), guidance_scale (2.0 for starters, 7.5 for pretrained models), seconds (the training clip length),
        negative_prompt (''), griffin_lim_iterations (48). Writes 16-bit WAV files."""
        from studio.models.diffusion import guidance_scale, sample, sampling_steps

        settings = settings or {}
        spec = dict(handle.parts.spectrogram)
        if settings.get("seconds"):
            spec = spectrogram_settings(spec["sample_rate"], float(settings["seconds"]))
        chosen = pairs(prompts, seeds)
        started = time.perf_counter()
        images = sample(handle.module, handle.parts.tokenizer, [p for p, _ in chosen], [s for _, s in chosen],
                        height=spec["n_bins"], width=spec["frames"], steps=sampling_steps(settings, handle.module),
                        guidance_scale=guidance_scale(settings, handle.parts.starter),
                        negative_prompt=str(settings.get("negative_prompt") or ""),
                        scheduler=str(settings.get("scheduler", "ddim")))
        return write_clips(chosen, images, spec, settings, out_dir, started)


def write_clips(chosen: list[tuple[str, int]], images, spec: dict, settings: dict, out_dir: Path,
                started: float) -> list[Sample]:
    """One 16-bit WAV file per (prompt, seed) under ``out_dir`` from sampled spectrograms ``images`` (N, 1, n_bins,
    frames) in [-1, 1], through Griffin-Lim (``griffin_lim_iterations`` of ``settings``, 48 by default; its phase
    drawn from the seed): ``Sample``s that each took their share of the time since ``started``."""
    import soundfile as sf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    iterations = int((settings or {}).get("griffin_lim_iterations", 48))
    waves = [griffin_lim(image[0].numpy(), spec, iterations, seed=seed) for image, (_, seed) in zip(images, chosen)]
    seconds = (time.perf_counter() - started) / max(len(chosen), 1)
    samples = []
    for number, ((prompt, seed), wave) in enumerate(zip(chosen, waves)):
        path = out_dir / f"{number:03d}_seed{seed}.wav"
        sf.write(str(path), wave, spec["sample_rate"], subtype="PCM_16")
        samples.append(Sample(prompt=prompt, seed=seed, path=path, seconds=seconds))
    return samples


def _saved_spectrogram(model_ref: str) -> dict:
    """The spectrogram settings a studio audio folder was trained with; anything else is not supported."""
    folder = Path(model_ref).expanduser()
    saved = read_marker(folder) if folder.is_dir() else {}
    if saved.get("modality") == "audio" and saved.get("spectrogram") and (folder / "unet").is_dir():
        return saved["spectrogram"]
    raise NotImplementedError(
        f"'{model_ref}' is not a supported audio model. Audio supports '{STARTER}' (method 'scratch'), model "
        f"folders saved from starter-audio runs (lora, full or scratch), and MusicGen (transformers "
        f"MusicgenForConditionalGeneration, mono: e.g. facebook/musicgen-small, a folder whose config.json has "
        f"model_type 'musicgen', or a folder saved from a MusicGen run; lora, full or scratch). AudioLDM and "
        f"Stable Audio are not supported yet.")

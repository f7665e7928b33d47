"""Cleaning steps for audio: silence, trimming, duration, clipping, duplicates, mono, rate, loudness.

Unreadable files and clips over STUDIO_MAX_AUDIO_SECONDS never get here: reading refuses them. The measures
(silence, clipping, exact duplicates) read a clip a block at a time; the steps that change it hold one clip.
"""

from __future__ import annotations

import hashlib

import numpy as np
from pydantic import BaseModel, Field

from studio.data.items import Item
from studio.data.read_media import audio_blocks
from studio.data.steps.base import Step, StepContext, StepOutcome, drop_repeats, filter_items
from studio.data.steps.common import MISSING_CAPTIONS, KeptFeatures, cosine_similarities, near_duplicates_by_features


def load(item: Item) -> tuple[np.ndarray, int]:
    """Samples as float32 (frames, channels) and the sample rate."""
    import soundfile as sf

    data, rate = sf.read(str(item.path), dtype="float32", always_2d=True)
    return data, rate


def read_mono(path: Path, sample_rate: int) -> np.ndarray:
    """A file's samples as mono float32 at ``sample_rate`` (scipy's polyphase resampling)."""
    from math import gcd

    import soundfile as sf
    from scipy.signal import resample_poly

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate != sample_rate:
        g = gcd(rate, sample_rate)
        mono = resample_poly(mono, sample_rate // g, rate // g).astype(np.float32)
    return mono


def _share_of_samples(item: Item, measure) -> float:
    """The mean over every sample of ``measure(block)`` (an array of per-sample values), a block at a time."""
    total, count = 0.0, 0
    for block in audio_blocks(item.path):
        total += float(measure(block).sum(dtype=np.float64))
        count += block.size
    return total / max(count, 1)


def _rewrite(item: Item, data: np.ndarray, rate: int, ctx: StepContext) -> None:
    """Save changed audio as a new FLAC file (lossless; the original stays untouched)."""
    import soundfile as sf

    target = ctx.new_file(".flac")
    sf.write(str(target), np.clip(data, -1.0, 1.0), rate, subtype="PCM_24")
    item.path = target
    item.meta.update(duration=len(data) / rate, sample_rate=rate, channels=data.shape[1])


def _db(value: float) -> float:
    return 20 * np.log10(max(value, 1e-10))


class SilentParams(BaseModel):
    threshold_db: float = Field(-60.0, le=0.0, description="RMS level (dBFS) below which a clip counts as silent")


def silent(items, params: SilentParams, _ctx) -> StepOutcome:
    def why(item: Item) -> str | None:
        level = _db(float(np.sqrt(_share_of_samples(item, np.square))))
        return f"silent: RMS {level:.0f} dBFS (threshold {params.threshold_db:.0f})" if level < params.threshold_db else None
    return filter_items(items, why)


class TrimParams(BaseModel):
    below_peak_db: float = Field(40.0, gt=0.0, description="frames quieter than the peak by this much are silence")
    padding_ms: int = Field(50, ge=0, description="silence kept at each end")


def trim_silence(items, params: TrimParams, ctx: StepContext) -> StepOutcome:
    outcome = StepOutcome(kept=items)
    for item in items:
        data, rate = load(item)
        frame = max(rate // 100, 1)  # 10 ms frames
        usable = len(data) // frame * frame
        if usable == 0:
            continue
        rms = np.sqrt(np.mean(data[:usable].reshape(-1, frame, data.shape[1]) ** 2, axis=(1, 2)))
        loud = np.flatnonzero(rms > rms.max() * 10 ** (-params.below_peak_db / 20))
        pad = int(rate * params.padding_ms / 1000)
        start = max(loud[0] * frame - pad, 0) if len(loud) else 0
        end = min((loud[-1] + 1) * frame + pad, len(data)) if len(loud) else len(data)
        if len(loud) and loud[-1] == len(rms) - 1:
            end = len(data)  # the unmeasured tail (under one frame) follows a loud frame: it is audio, keep it
        if start > 0 or end < len(data):
            before = item.meta["duration"]
            _rewrite(item, data[start:end], rate, ctx)
            outcome.changed.append((item, f"{before:.2f}s", f"{item.meta['duration']:.2f}s"))
    return outcome


class DurationParams(BaseModel):
    min_seconds: float = Field(0.5, ge=0.0)
    max_seconds: float = Field(30.0, gt=0.0)


def duration_bounds(items, params: DurationParams, _ctx) -> StepOutcome:
    def why(item: Item) -> str | None:
        seconds = item.meta["duration"]
        if seconds < params.min_seconds:
            return f"too short: {seconds:.2f}s (minimum {params.min_seconds}s)"
        if seconds > params.max_seconds:
            return f"too long: {seconds:.1f}s (maximum {params.max_seconds}s)"
        return None
    return filter_items(items, why)


class ClippingParams(BaseModel):
    max_fraction: float = Field(0.01, ge=0.0, le=1.0, description="largest share of samples at full scale")
    level: float = Field(0.999, gt=0.0, le=1.0, description="absolute sample value that counts as clipped")


def clipped(items, params: ClippingParams, _ctx) -> StepOutcome:
    def why(item: Item) -> str | None:
        share = _share_of_samples(item, lambda block: np.abs(block) >= params.level)
        return f"clipped: {share:.1%} of samples at full scale (maximum {params.max_fraction:.1%})" \
            if share > params.max_fraction else None
    return filter_items(items, why)


def sample_digest(item: Item) -> str:
    digest = hashlib.sha256()
    for block in audio_blocks(item.path):  # the same bytes as the whole clip's, a block at a time
        digest.update(block.tobytes())
    digest.update(str(item.meta["sample_rate"]).encode())
    return digest.hexdigest()


def exact_audio_duplicates(items, _params, ctx: StepContext) -> StepOutcome:
    return drop_repeats(items, sample_digest, ctx.memory("exact_duplicates", dict))


def fingerprint(data: np.ndarray, rate: int, bands: int = 24, segments: int = 16) -> np.ndarray:
    """A spectral fingerprint: log band energies (log-spaced 60 Hz–4 kHz) pooled over time segments,
    centred and scaled to unit length, so the dot product of two fingerprints is their similarity."""
    from scipy.signal import resample_poly, stft

    mono = data.mean(axis=1)
    if rate != 8000:
        mono = resample_poly(mono, 8000, rate)
    freqs, _, spec = stft(mono, fs=8000, nperseg=512, noverlap=256)
    power = np.abs(spec) ** 2
    edges = np.geomspace(60, 4000, bands + 1)
    band_energy = np.stack([power[(freqs >= lo) & (freqs < hi)].sum(axis=0) for lo, hi in zip(edges, edges[1:])])
    pooled = np.stack([chunk.mean(axis=1) for chunk in np.array_split(band_energy, segments, axis=1)
                       if chunk.shape[1]], axis=1)
    vector = np.log10(pooled + 1e-9).ravel()
    vector = np.resize(vector, bands * segments) - vector.mean()
    return vector / (np.linalg.norm(vector) + 1e-12)


class NearDuplicateAudioParams(BaseModel):
    threshold: float = Field(0.97, ge=0.5, le=1.0, description="cosine similarity of spectral fingerprints")


def near_audio_duplicates(items, params: NearDuplicateAudioParams, ctx: StepContext) -> StepOutcome:
    vectors = np.stack([fingerprint(*load(item)) for item in items]) if items else np.zeros((0, 1))

    def similar_length(a: float, b: float) -> bool:
        return min(a, b) / max(a, b, 1e-9) >= 0.9

    index = ctx.memory("near_duplicates", lambda: KeptFeatures(cosine_similarities, params.threshold, similar_length))
    return near_duplicates_by_features(items, index, vectors, [item.meta["duration"] for item in items])


def to_mono(items, _params, ctx: StepContext) -> StepOutcome:
    outcome = StepOutcome(kept=items)
    for item in items:
        if item.meta["channels"] > 1:
            data, rate = load(item)
            before = item.meta["channels"]
            _rewrite(item, data.mean(axis=1, keepdims=True), rate, ctx)
            outcome.changed.append((item, f"{before} channels", "mono"))
    return outcome


class ResampleParams(BaseModel):
    sample_rate: int = Field(16_000, ge=4000, le=192_000)


def resample(items, params: ResampleParams, ctx: StepContext) -> StepOutcome:
    from math import gcd

    from scipy.signal import resample_poly

    outcome = StepOutcome(kept=items)
    for item in items:
        data, rate = load(item)
        if rate != params.sample_rate:
            g = gcd(rate, params.sample_rate)
            _rewrite(item, resample_poly(data, params.sample_rate // g, rate // g, axis=0).astype(np.float32),
                     params.sample_rate, ctx)
            outcome.changed.append((item, f"{rate} Hz", f"{params.sample_rate} Hz"))
    return outcome


class LoudnessParams(BaseModel):
    target_lufs: float = Field(-23.0, le=0.0, description="integrated loudness (ITU-R BS.1770), EBU R128 uses -23")


def normalise_loudness(items, params: LoudnessParams, ctx: StepContext) -> StepOutcome:
    import pyloudnorm

    outcome = StepOutcome(kept=items)
    for item in items:
        data, rate = load(item)
        if len(data) < int(0.4 * rate):  # BS.1770 gates over 400 ms blocks; shorter clips have no loudness
            continue
        loudness = pyloudnorm.Meter(rate).integrated_loudness(data)
        if not np.isfinite(loudness) or abs(loudness - params.target_lufs) < 0.5:
            continue
        gain = 10 ** ((params.target_lufs - loudness) / 20)
        louder = data * gain
        peak = float(np.abs(louder).max())
        if peak > 0.99:  # never clip to reach the target: stop just below full scale
            louder *= 0.99 / peak
        _rewrite(item, louder, rate, ctx)
        outcome.changed.append((item, f"{loudness:.1f} LUFS", f"{params.target_lufs:.1f} LUFS"))
    return outcome


AUDIO_STEPS = [
    MISSING_CAPTIONS,
    Step("silent", "Silent", "Removes clips whose level is below the threshold.", silent, SilentParams,
         keep_more="lower its threshold_db (now {threshold_db})"),
    Step("trim_silence", "Trim silence", "Cuts quiet starts and ends.", trim_silence, TrimParams),
    Step("duration", "Duration bounds", "Removes clips too short or too long.", duration_bounds, DurationParams,
         keep_more="lower its min_seconds (now {min_seconds}) or raise its max_seconds (now {max_seconds})"),
    Step("clipping", "Clipping", "Removes clips with many samples at full scale.", clipped, ClippingParams,
         keep_more="raise its max_fraction (now {max_fraction})"),
    Step("exact_duplicates", "Exact duplicates", "Identical samples; keeps the first.", exact_audio_duplicates,
         compares_items=True),
    Step("near_duplicates", "Near-duplicates", "Spectral fingerprint similarity; keeps the first.",
         near_audio_duplicates, NearDuplicateAudioParams, keep_more="raise its threshold (now {threshold})",
         compares_items=True),
    Step("mono", "Mono", "Down-mixes to one channel.", to_mono),
    Step("resample", "Resample", "Converts to one sample rate.", resample, ResampleParams, on_by_default=False),
    Step("loudness", "Normalise loudness", "Brings clips to one integrated loudness.", normalise_loudness,
         LoudnessParams, on_by_default=False),
]

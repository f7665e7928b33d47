"""A small captioned audio set a tiny text-to-audio model can learn: three pitched tones.

"low hum" (220 Hz, with weaker 3rd and 5th harmonics), "mid tone" (440 Hz, a weak 3rd harmonic) and
"high whistle" (880 Hz, nearly pure, with a little breath noise): about one second each, 8 kHz mono
16-bit WAV (or FLAC) with a sidecar caption ``.txt``. The fundamental is always the loudest partial, and no sound has a partial at another one's pitch.

Each clip differs in what the importer's near-duplicate check listens to (a spectral fingerprint: band
energies over time), so the default cleaning keeps them: the onset (0-0.2 s of quiet first), the
envelope (plucked decay, swell, steady, tremolo, a gap in the middle), two faint steady "room" tones
(2.2-3.8 kHz, above the band the starter hears; -55 to -35 dBFS), the detune (±3 %), the vibrato (0-1.5 %, 3-7 Hz) and the length
(0.85-1.1 s) are drawn at random. The noise floor stays very low (-95 to -75 dBFS) so FLAC compresses it.
Deterministic for a seed.

    python -m studio.examples.tones /tmp/tones --per-class 30 --format flac --zip assets/examples/tones.zip
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

RATE = 8000
TONES = {  # caption → (pitch in Hz, relative levels of harmonics 1, 2, 3)
    "low hum": (220.0, (1.0, 0.0, 0.2, 0.0, 0.1)),
    "mid tone": (440.0, (1.0, 0.0, 0.12)),
    "high whistle": (880.0, (1.0,)),
}
ENVELOPES = ("pluck", "swell", "steady", "tremolo", "gap")


def envelope(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / RATE
    attack = rng.uniform(0.005, 0.08)
    rise = np.clip(t / attack, 0, 1)
    if kind == "pluck":
        shape = np.exp(-t * rng.uniform(1.5, 5.0))
    elif kind == "swell":
        shape = np.clip(t / (t[-1] * rng.uniform(0.5, 0.9)), 0, 1) ** rng.uniform(1.0, 2.5)
    elif kind == "tremolo":
        shape = 1 - rng.uniform(0.3, 0.7) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 8) * t))
    elif kind == "gap":  # a short break in the middle, with 20 ms fades (no clicks)
        start = rng.uniform(0.3, 0.55) * t[-1]
        end = start + rng.uniform(0.1, 0.25)
        shape = 0.02 + 0.98 * np.clip(np.maximum(start - t, t - end) / 0.02, 0, 1)
    else:
        shape = np.ones(n)
    release = np.clip((t[-1] - t) / rng.uniform(0.02, 0.15), 0, 1)
    return rise * shape * release


def make_clip(pitch: float, harmonics: tuple[float, ...], rng: np.random.Generator, breath: bool = False) -> np.ndarray:
    seconds = rng.uniform(0.85, 1.1)
    onset = rng.uniform(0.0, 0.2)
    total, n = int(RATE * (seconds + onset)), int(RATE * seconds)
    t = np.arange(n) / RATE
    f0 = pitch * (1 + rng.uniform(-0.03, 0.03))
    vibrato = rng.uniform(0, 0.015) * np.sin(2 * np.pi * rng.uniform(3, 7) * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(f0 * (1 + vibrato)) / RATE
    tone = sum(level * (rng.uniform(0.7, 1.0) if k else 1.0) * np.sin((k + 1) * phase + rng.uniform(0, 2 * np.pi))
               for k, level in enumerate(harmonics))
    voice = tone * envelope(str(rng.choice(ENVELOPES)), n, rng)
    if breath:  # a whistle carries some breath: noise shaped by the same envelope
        voice = voice + 10 ** (rng.uniform(-50, -35) / 20) * rng.standard_normal(n) * np.abs(voice)
    clip = np.zeros(total)
    clip[total - n:] = voice
    clip *= rng.uniform(0.3, 0.8) / (np.abs(clip).max() + 1e-9)
    room = np.arange(total) / RATE  # faint steady sounds in the room, well above the tones
    for _ in range(2):
        clip += 10 ** (rng.uniform(-55, -35) / 20) * np.sin(2 * np.pi * rng.uniform(2200, 3800) * room)
    clip += 10 ** (rng.uniform(-95, -75) / 20) * rng.standard_normal(total)
    return np.clip(clip, -0.95, 0.95).astype(np.float32)


def make_tones(folder: str | Path, n_per_class: int = 30, seed: int = 0, audio_format: str = "wav") -> list[Path]:
    """Writes ``n_per_class`` clips for each caption, with caption sidecars; returns the clips.
    ``audio_format``: 'wav' (16-bit PCM) or 'flac' (the same samples, losslessly compressed to about a quarter:
    the shipped zip uses it)."""
    if audio_format not in ("wav", "flac"):
        raise ValueError("audio_format must be 'wav' or 'flac'")
    import soundfile as sf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for caption, (pitch, harmonics) in TONES.items():
        for number in range(n_per_class):
            stem = folder / f"{caption.replace(' ', '_')}_{number:03d}"
            clip = make_clip(pitch, harmonics, rng, breath=caption == "high whistle")
            path = stem.with_suffix("." + audio_format)
            if audio_format == "flac":
                sf.write(str(path), clip, RATE, format="FLAC", subtype="PCM_16", compression_level=1.0)
            else:
                sf.write(str(path), clip, RATE, subtype="PCM_16")
            stem.with_suffix(".txt").write_text(caption + "\n")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    import argparse

    from studio.examples.shapes import zip_folder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=("wav", "flac"), default="wav")
    parser.add_argument("--zip", help="also write the files to this zip")
    args = parser.parse_args(argv)
    written = make_tones(args.folder, args.per_class, args.seed, args.format)
    if args.zip:
        zip_folder(args.folder, args.zip)
    print(f"{len(written)} clips in {args.folder}" + (f", zipped to {args.zip}" if args.zip else ""))


if __name__ == "__main__":
    main(sys.argv[1:])

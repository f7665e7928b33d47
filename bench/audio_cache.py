"""Benchmark: what ``cache_codes`` and ``length_buckets`` buy a MusicGen run.

1. Cached codes. The same MusicGen (random init from a config, saved and loaded back like a Hub model), LoRA
   (r 8 on the decoder's attention), the same clips (``--clips`` captioned sine chords of ``--seconds`` each, at the
   codec's rate), batches of ``--batch``; steps/s of the studio's training step (``MusicgenBackend``'s datasets and
   collate, the module's loss, backward, AdamW) with the clips encoded by the frozen EnCodec and T5 at every step
   (the default) against codes and caption features read from the dataset's ``.cache/codes`` (``cache_codes``). The
   cache is made before the timed steps (its time printed apart); both runs' losses on the first batch must agree
   (checked). Two codecs: ``tiny`` (test_musicgen's: 4 filters, two 32-entry codebooks at 8 kHz) and ``small``
   (facebook/encodec_32khz's config, as in musicgen-small: 64 filters, four 2048-entry codebooks at 32 kHz, about
   57M weights, random-initialised), each with the same small decoder (2 layers, hidden 64) and T5 (2 layers, d 64):
   what the cache removes is the codec's and T5's work, which does not depend on the decoder.
2. Length buckets. Clips whose lengths are drawn uniformly between 5 % and 100 % of ``--seconds``, the small codec
   (uncached, so the codec's work follows the clip lengths too); clips per second with ``length_buckets`` against
   every clip padded to ``--seconds``. Useful work is the same: every clip is seen once per epoch either way.

Runs alternate (``--rounds`` rounds, the order rotating) and each is timed over ``--steps`` steps after two warm-up
steps; the figures are medians over the rounds, the ratio the median of the ratios within each round.

    .venv/bin/python bench/audio_cache.py                       # both, 2 rounds (a few minutes on 2 cores)
    .venv/bin/python bench/audio_cache.py --quick               # smoke run: tiny codec only, 1 round
    .venv/bin/python bench/audio_cache.py --only cache --codec small --rounds 3

torch runs on ``--threads`` threads (1 by default). Setting up (the model folder, the clips) is not timed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ["<pad>", "</s>", "<unk>", "a", "low", "high", "hum", "beep", "tone", "bright", "dark", "chord"]
CAPTIONS = ["low hum", "high beep", "a bright chord", "a dark tone"]


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def codec_config(kind: str):
    from transformers import EncodecConfig

    if kind == "tiny":
        return EncodecConfig(sampling_rate=8000, audio_channels=1, num_filters=4, num_residual_layers=1,
                             upsampling_ratios=[8, 8], codebook_size=32, codebook_dim=8, hidden_size=8,
                             target_bandwidths=[1.25], normalize=False, chunk_length_s=None, overlap=None,
                             num_lstm_layers=1, compress=2, kernel_size=3, last_kernel_size=3, residual_kernel_size=3)
    # facebook/encodec_32khz (musicgen-small's codec)
    return EncodecConfig(sampling_rate=32000, audio_channels=1, num_filters=64, upsampling_ratios=[8, 5, 4, 4],
                         codebook_size=2048, codebook_dim=128, hidden_size=128, target_bandwidths=[2.2],
                         normalize=False, chunk_length_s=None, overlap=None, num_lstm_layers=2, compress=2,
                         kernel_size=7, last_kernel_size=7, residual_kernel_size=3, use_causal_conv=False,
                         norm_type="weight_norm", pad_mode="reflect", trim_right_ratio=1.0)


def model_folder(kind: str, root: Path) -> Path:
    """A MusicGen with the ``kind`` codec, a small T5 and decoder, saved like a Hub checkpoint."""
    import torch
    from transformers import MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration, T5Config

    audio = codec_config(kind)
    books = 2 if kind == "tiny" else 4
    text = T5Config(vocab_size=len(WORDS), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, pad_token_id=0,
                    eos_token_id=1, decoder_start_token_id=0)
    decoder = MusicgenDecoderConfig(vocab_size=audio.codebook_size, max_position_embeddings=4096, num_hidden_layers=2,
                                    ffn_dim=128, num_attention_heads=4, hidden_size=64, num_codebooks=books,
                                    pad_token_id=audio.codebook_size, bos_token_id=audio.codebook_size)
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder))
    model.generation_config.decoder_start_token_id = audio.codebook_size
    model.generation_config.pad_token_id = audio.codebook_size
    folder = root / f"musicgen-{kind}"
    model.save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


def write_clips(root: Path, rate: int, lengths: list[float]) -> list[dict]:
    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for number, seconds in enumerate(lengths):
        t = np.arange(int(seconds * rate)) / rate
        wave = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(100, 2000, size=3)) / 6
        sf.write(str(root / f"{number}.wav"), wave.astype(np.float32), rate)
        rows.append({"id": number, "file": f"{number}.wav", "caption": CAPTIONS[number % len(CAPTIONS)],
                     "duration": seconds})
    return rows


class Run:
    """The studio's MusicGen path on ``rows``: its handle, loader, ``step(batch) -> loss`` and the seconds the datasets
    took to make (the cache, when caching)."""

    def __init__(self, handle, loader, optimizer, made_in: float):
        self.handle, self.loader, self.optimizer, self.made_in = handle, loader, optimizer, made_in

    def step(self, batch) -> float:
        loss = self.handle.module(batch)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return float(loss)


def training(folder: Path, root: Path, rows: list[dict], args, **audio) -> Run:
    import torch

    from studio.models.audio import AudioBackend
    from studio.training.config import TrainConfig
    from studio.training.loop import make_loader

    config = TrainConfig(use_cpu=True, seed=0, audio={"clip_seconds": args.seconds, **audio})
    backend = AudioBackend()
    handle = backend.load(str(folder), "lora", config)
    started = time.perf_counter()
    dataset = backend.datasets(handle, {"train": rows}, root, config)["train"]
    made_in = time.perf_counter() - started
    loader = make_loader(dataset, backend.collate(handle, config), args.batch, seed=0, shuffle=True)
    handle.module.train()
    return Run(handle, loader, torch.optim.AdamW(handle.trainable_parameters(), lr=1e-4), made_in)


def timed(run: Run, steps: int) -> tuple[float, int]:
    """(seconds for ``steps`` steps after two warm-up steps, clips in them), cycling through the loader."""
    def batches():
        while True:
            yield from run.loader

    source = batches()
    for _ in range(2):
        run.step(next(source))
    clips, started = 0, time.perf_counter()
    for _ in range(steps):
        batch = next(source)
        clips += len(batch["caption_mask"])
        run.step(batch)
    return time.perf_counter() - started, clips


def compare(name: str, runs: dict, args) -> None:
    """Alternating rounds of each run in ``runs`` (label → Run); prints per-second figures and ratios."""
    labels = list(runs)
    figures = {label: [] for label in labels}
    for number in range(args.rounds):
        order = labels[number % len(labels):] + labels[:number % len(labels)]
        for label in order:
            seconds, clips = timed(runs[label], args.steps)
            figures[label].append((args.steps / seconds, clips / seconds))
    print(f"\n{name}: {args.steps} timed steps x {args.rounds} rounds, batch {args.batch}")
    for label in labels:
        print(f"  {label:>12}: {statistics.median(f[0] for f in figures[label]):8.2f} steps/s  "
              f"{statistics.median(f[1] for f in figures[label]):8.2f} clips/s")
    base = labels[0]
    for label in labels[1:]:
        index = 1 if name.startswith("length") else 0
        ratio = statistics.median(new[index] / old[index] for new, old in zip(figures[label], figures[base]))
        print(f"  {label} / {base}: {ratio:.2f}x ({'clips' if index else 'steps'}/s)")


def bench_cache(kind: str, work: Path, args) -> None:
    import torch

    folder = model_folder(kind, work)
    rate = codec_config(kind).sampling_rate
    root = work / f"clips-{kind}"
    rows = write_clips(root, rate, [args.seconds] * args.clips)
    uncached = training(folder, root, rows, args)
    cached = training(folder, root, rows, args, cache_codes=True)
    weights = sum(p.numel() for p in uncached.handle.module.model.audio_encoder.parameters())
    print(f"\ncodec {kind} ({weights / 1e6:.2f}M weights): cache made in {cached.made_in:.1f} s for {args.clips} clips "
          f"of {args.seconds} s")
    losses = []
    with torch.no_grad():
        for run in (uncached, cached):
            run.handle.module.eval()  # no dropout: the two losses must agree
            losses.append(float(run.handle.module(next(iter(run.loader)))))
            run.handle.module.train()
    print(f"  first batch loss uncached {losses[0]:.5f}, cached {losses[1]:.5f}")
    assert abs(losses[0] - losses[1]) <= 1e-4 * abs(losses[0]), losses
    compare(f"cached codes ({kind} codec)", {"uncached": uncached, "cache_codes": cached}, args)


def bench_buckets(work: Path, args) -> None:
    folder = model_folder("small", work)
    rate = codec_config("small").sampling_rate
    root = work / "clips-mixed"
    lengths = list(np.random.default_rng(1).uniform(0.05, 1.0, size=args.clips) * args.seconds)
    rows = write_clips(root, rate, lengths)
    padded = training(folder, root, rows, args)
    bucketed = training(folder, root, rows, args, length_buckets=True)
    compare("length buckets (small codec, uncached)", {"padded": padded, "length_buckets": bucketed}, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["cache", "buckets"])
    parser.add_argument("--codec", choices=["tiny", "small"], help="cache: this codec only (default: both)")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.codec, args.only, args.rounds, args.steps, args.clips = "tiny", "cache", 1, 3, 8
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        if args.only in (None, "cache"):
            for kind in [args.codec] if args.codec else ["tiny", "small"]:
                bench_cache(kind, work, args)
        if args.only in (None, "buckets"):
            bench_buckets(work, args)


if __name__ == "__main__":
    main()

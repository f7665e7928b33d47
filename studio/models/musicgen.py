"""MusicGen (text-to-music): transformers' ``MusicgenForConditionalGeneration`` from the Hub or a local folder,
trained with LoRA on the decoder's attention, fully (the decoder), or with the decoder from scratch.

The model has three parts. The T5 text encoder and the EnCodec audio codec stay frozen whatever the method;
only the decoder (a transformer over EnCodec codes, cross-attending to the caption) learns:

    training:  caption ── T5 (frozen) ──────────────────────────────────────────┐
               waveform ── EnCodec (frozen) ── codes (B, K, T) ── delay pattern ──┴─ decoder ── cross-entropy
                                                                                     per codebook (transformers)
    sampling:  caption ── model.generate (classifier-free guidance) ── codes ── EnCodec decode ── WAV

The delay pattern is MusicGen's: codebook k is shifted k steps to the right, so at each step the decoder
predicts the first codebook of one frame, the second of the frame before, and so on. Positions a codebook
has no code for, and frames past the end of a short clip, are left out of the loss (-100).

Methods: ``lora`` (PEFT LoRA on the decoder's attention projections; everything else frozen), ``full``
(the decoder and the text-to-decoder projection train), ``scratch`` (the same, re-initialised from the
decoder's config: a new decoder for the pretrained T5 and EnCodec). Weights are loaded with
``from_pretrained(use_safetensors=True)`` and never with remote code. Mono MusicGen only (not the stereo
checkpoints, nor MusicGen-Melody).

This module needs torch at import time (the dataset and the ``nn.Module``); the registry imports it only when
a model of the ``musicgen`` family is loaded. transformers and peft are imported inside functions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from studio.data.augment import AudioAugmentation
from studio.models.audio import Clips, fit_clip, read_mono
from studio.models.base import BackendConfig, Handle, Parts, Sample, pairs
from studio.models.common import adapter_base, cache_file, load_adapter, merge_adapter, prologue, target_option, \
    to_training_device, weights_fingerprint, write_cached, write_marker, write_pretrained
from studio.models.preference import SCORE, collate_for, datasets_for
from studio.models.registry import MUSICGEN

IGNORE = -100
MAX_CAPTION_TOKENS = 256
# A batch from the code cache (``cache_codes``): each clip's EnCodec codes in place of its samples, and the frozen
# T5's features of each caption in place of its token ids.
CODES, TEXT_FEATURES = "codes", "text_features"


@dataclass(kw_only=True)
class MusicgenParts(Parts):
    tokenizer: Any
    feature_extractor: Any  # or None: only saved along, for other tools
    model: Any              # what is saved: a PEFT model for LoRA, else the MusicgenForConditionalGeneration
    sample_rate: int        # EnCodec's
    clip_seconds: float     # the training clip length: what generation makes by default

    def processors(self) -> list:
        return [p for p in (self.tokenizer, self.feature_extractor) if p is not None]


# ----------------------------------------------------------------------------- loading

def _require_safetensors(folder: Path) -> None:
    if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        found = ", ".join(sorted(p.name for p in folder.glob("*.bin"))) or "no weights at all"
        raise FileNotFoundError(f"'{folder}' has no safetensors weights (model.safetensors); found {found}. "
                                "Only safetensors are loaded (pickled .bin files can run code): convert the weights "
                                "with save_pretrained in a recent transformers.")


def load_pretrained(model_ref: str) -> tuple[Any, Any, Any]:
    """(tokenizer, feature extractor or None, MusicgenForConditionalGeneration) of a Hub id or a folder. A
    studio LoRA folder comes back as its base model with the adapter merged in."""
    from transformers import AutoFeatureExtractor, AutoTokenizer, MusicgenForConditionalGeneration

    folder = Path(model_ref).expanduser()
    local = folder.is_dir()
    source = str(folder) if local else model_ref
    base = adapter_base(folder, model_ref) if local else None
    if base:
        tokenizer, feature_extractor, model = load_pretrained(base)
        return tokenizer, feature_extractor, merge_adapter(model, folder)
    if local:
        _require_safetensors(folder)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    feature_extractor = None
    if not local or (folder / "preprocessor_config.json").is_file():
        try:
            feature_extractor = AutoFeatureExtractor.from_pretrained(source, trust_remote_code=False)
        except OSError:  # not needed for training or sampling: only saved along for other tools
            pass
    model = MusicgenForConditionalGeneration.from_pretrained(source, use_safetensors=True, trust_remote_code=False)
    return tokenizer, feature_extractor, model


def fresh_decoder(model) -> None:
    """'scratch': a new decoder (and text-to-decoder projection) built from the config, randomly initialised
    (seed torch first); the pretrained T5 and EnCodec stay."""
    from transformers import MusicgenForCausalLM

    decoder = MusicgenForCausalLM._from_config(model.config.decoder)
    decoder.config = model.config.decoder  # one config object, as MusicgenForConditionalGeneration keeps it
    model.decoder = decoder
    if getattr(model, "enc_to_dec_proj", None) is not None:
        model.enc_to_dec_proj.reset_parameters()


def lora_targets(model, option: str) -> list[str]:
    """The full names of the decoder's Linear layers LoRA adapts: 'auto' → the family's preset (the decoder's
    self- and cross-attention projections); 'all-linear' → all of them (the codebook heads too); else those
    whose name ends with one of the comma-separated names. Never a layer of the frozen T5 or EnCodec."""
    preset = MUSICGEN.lora_targets
    chosen = target_option(option)
    wanted = set(preset) if chosen == "auto" else None if chosen == "all-linear" else set(chosen)
    targets = [f"decoder.{name}" for name, layer in model.decoder.named_modules()
               if isinstance(layer, nn.Linear) and (wanted is None or name.rsplit(".", 1)[-1] in wanted)]
    if not targets:
        raise ValueError(f"target_modules '{option}' names no Linear layer of the MusicGen decoder "
                         f"(its attention layers are {', '.join(preset)})")
    return targets


def set_trainable(model, method: str, lora_options):
    """Freezes T5 and EnCodec; returns the model to save: a PEFT model for 'lora' (the LoRA layers are put
    into ``model`` itself), else ``model`` with its decoder (and projection) trainable."""
    model.requires_grad_(False)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        return get_peft_model(model, LoraConfig(r=lora_options.r, lora_alpha=lora_options.lora_alpha,
                                                lora_dropout=lora_options.lora_dropout,
                                                target_modules=lora_targets(model, lora_options.target_modules)))
    model.decoder.requires_grad_(True)
    if getattr(model, "enc_to_dec_proj", None) is not None:
        model.enc_to_dec_proj.requires_grad_(True)
    return model


def prepare_config(model, model_ref: str) -> None:
    """Refuses stereo checkpoints; gives the decoder config the start token transformers' loss shifts the
    labels with (Hub checkpoints keep it in generation_config.json only)."""
    decoder = model.config.decoder
    if decoder.audio_channels != 1:
        raise NotImplementedError(f"'{model_ref}' is a stereo MusicGen; only mono MusicGen models are supported")
    if getattr(decoder, "decoder_start_token_id", None) is None:
        decoder.decoder_start_token_id = model.generation_config.decoder_start_token_id or decoder.bos_token_id


# ----------------------------------------------------------------------------- codes and labels

def audio_codes(model, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, 1, samples) waveforms at the model's rate → (B, K, frames) EnCodec codes, with -100 on the frames
    past each clip's ``lengths`` (its real samples; the rest is padding). The codes are the targets: they are
    computed in full precision even under mixed precision."""
    with torch.no_grad(), torch.autocast(waves.device.type, enabled=False):
        codes = model.audio_encoder.encode(waves.float()).audio_codes  # (chunks, B, K, frames)
    if codes.shape[0] != 1 or codes.shape[2] != model.decoder.num_codebooks:
        raise ValueError(f"EnCodec gave {codes.shape[0]} chunk(s) of {codes.shape[2]} codebooks; the decoder "
                         f"expects 1 chunk of {model.decoder.num_codebooks}")
    codes = codes[0]
    hop = model.audio_encoder.config.hop_length
    real = torch.ceil(lengths.to(codes.device) / hop).long()
    past_end = torch.arange(codes.shape[-1], device=codes.device)[None, :] >= real[:, None]
    return codes.masked_fill(past_end[:, None, :], IGNORE)


def delayed_labels(model, codes: torch.Tensor) -> torch.Tensor:
    """(B, K, T) codes → (B, T + K - 1, K) labels in MusicGen's delay pattern (codebook k at steps k … k+T-1),
    -100 where a codebook has nothing. The decoder's own ``build_delay_pattern_mask`` lays them out, as
    ``generate`` does: after a start step (dropped here: it is the decoder's first input, not a label)."""
    batch, books, frames = codes.shape
    pad = model.config.decoder.pad_token_id
    start = torch.full((batch, books, 1), pad, dtype=codes.dtype, device=codes.device)
    with_start = torch.cat([start, codes], dim=-1).reshape(batch * books, frames + 1)
    _, pattern = model.decoder.build_delay_pattern_mask(with_start, pad_token_id=pad, max_length=frames + books)
    labels = pattern.reshape(batch, books, frames + books)[..., 1:]
    return labels.masked_fill(labels == pad, IGNORE).transpose(1, 2).contiguous()


class MusicgenModule(nn.Module):
    """``forward(batch) -> loss``: caption through the frozen T5, clip through the frozen EnCodec, and
    transformers' per-codebook cross-entropy of the decoder on the delayed codes. ``batch`` holds
    ``caption_ids``/``caption_mask`` (B, L), ``input_values`` (B, 1, samples) and ``lengths`` (B,), or what the code
    cache holds in place of the first and the last two (``TEXT_FEATURES``, ``CODES``). Asked for scores
    (``SCORE``): each clip's summed log-probability of its codes, and how many codes that is."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.text_encoder.eval()  # frozen: no dropout, whatever the loop asks
        self.model.audio_encoder.eval()
        return self

    def forward(self, batch: dict) -> torch.Tensor:
        model = self.model
        device = next(model.decoder.parameters()).device
        mask = batch["caption_mask"].to(device)
        if TEXT_FEATURES in batch:  # from the code cache (``cache_codes``)
            text = (batch[TEXT_FEATURES].to(device),)
        else:
            with torch.no_grad():
                text = model.text_encoder(input_ids=batch["caption_ids"].to(device), attention_mask=mask)
        codes = batch[CODES].to(device) if CODES in batch else \
            audio_codes(model, batch["input_values"].to(device), batch["lengths"])
        labels = delayed_labels(model, codes)
        out = model(encoder_outputs=text, attention_mask=mask, labels=labels, use_cache=False)
        return code_log_probabilities(out.logits, labels) if SCORE in batch else out.loss


def code_log_probabilities(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probability of each clip's codes, their count) from the decoder's logits (B * K, T, vocab) and
    the delayed labels (B, T, K), -100 where a codebook has nothing; as transformers lines them up for its loss."""
    batch, steps, books = labels.shape
    logits = logits.reshape(batch, books, -1, logits.shape[-1])[:, :, -steps:].float()
    targets = labels.transpose(1, 2)
    known = targets != IGNORE
    chosen = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return (chosen * known).sum(dim=(1, 2)), known.sum(dim=(1, 2))


# ----------------------------------------------------------------------------- data

class CaptionedClips(Clips, Dataset):
    """Manifest rows → {input_values: (samples,) float32 at the model's rate, length: real samples, caption}, as many
    samples as the clip's length (``Clips``). Once ``cache`` has run: {codes, length, text_features, caption} read from
    the cache, a training clip one of its file's fixed windows (``tiles``) at random."""

    def __init__(self, rows: list[dict], root: Path, sample_rate: int, clip_seconds: float, random_crop: bool,
                 bucketed: bool = False, augmentation: AudioAugmentation | None = None, seed: int = 0):
        super().__init__(rows, root, sample_rate, clip_seconds, random_crop, bucketed, augmentation, seed)
        self.captions = [row.get("caption") or "" for row in rows]
        self.cached: list[list[Path]] | None = None  # each clip's windows' files

    def samples(self, index: int) -> int:
        return int(round(self.seconds[index] * self.sample_rate))

    def __getitem__(self, index: int) -> dict:
        if self.cached is not None:
            files = self.cached[index]
            chosen = int(self.draws(index).integers(0, len(files))) if self.random_crop and len(files) > 1 else 0
            return {**read_cached_codes(files[chosen]), "caption": self.captions[index]}
        wave, length = self.window(index, self.samples(index))
        return {"input_values": torch.from_numpy(wave), "length": length, "caption": self.captions[index]}

    def cache(self, model, tokenizer, folder: Path, use_cpu: bool = True) -> int:
        """Encodes each clip's windows once into ``folder`` (kept across runs: a file is named by what it was made
        of); returns how many were encoded now. Unless ``use_cpu``, on the GPU when there is one."""
        self.cached, made = cache_codes(self, model, tokenizer, Path(folder), use_cpu)
        return made


class ClipCollator:
    """Stacks the clips (B, 1, samples) and tokenises the captions, padded to the longest; cached items' codes
    (B, K, frames) and caption features (B, L, d: zeros past each caption, where the mask is 0) instead."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, items: list[dict]) -> dict:
        if CODES in items[0]:
            features = [item[TEXT_FEATURES] for item in items]
            longest = max(len(f) for f in features)
            return {TEXT_FEATURES: torch.stack([nn.functional.pad(f, (0, 0, 0, longest - len(f))) for f in features]),
                    "caption_mask": torch.tensor([[1] * len(f) + [0] * (longest - len(f)) for f in features]),
                    CODES: torch.stack([item[CODES] for item in items])}
        text = self.tokenizer([item["caption"] for item in items], padding=True, truncation=True,
                              max_length=MAX_CAPTION_TOKENS, return_tensors="pt")
        return {"caption_ids": text["input_ids"], "caption_mask": text["attention_mask"],
                "input_values": torch.stack([item["input_values"] for item in items])[:, None],
                "lengths": torch.tensor([item["length"] for item in items], dtype=torch.long)}


def mismatched(prompt: dict, answer: dict) -> dict:
    """KTO's mismatched example: a clip heard with another row's caption (its features, when cached)."""
    return {**answer, **{key: prompt[key] for key in ("caption", TEXT_FEATURES) if key in prompt}}


# ----------------------------------------------------------------------------- the code cache

def tiles(total: int, samples: int) -> list[int]:
    """The starts of the fixed windows a cached file of ``total`` samples is cut into: clip-length tiles from its
    start, the last one ending at its end (one window at 0 for a file no longer than a clip)."""
    spare = total - samples
    if spare <= 0:
        return [0]
    starts = list(range(0, spare + 1, samples))
    return starts if starts[-1] == spare else [*starts, spare]


def resampled_length(path: Path, sample_rate: int) -> int:
    """How many samples ``read_mono`` makes of ``path`` at ``sample_rate``, from its header (``resample_poly``'s
    output length)."""
    import soundfile as sf

    info = sf.info(str(path))
    factor = math.gcd(info.samplerate, sample_rate)
    up, down = sample_rate // factor, info.samplerate // factor
    return -(-info.frames * up // down)


def codec_fingerprint(model) -> str:
    """A digest of what the cached codes and caption features depend on: EnCodec's and T5's weights and configs
    (leaving out where they were loaded from)."""
    configs = [{k: v for k, v in part.config.to_dict().items() if not k.startswith("_") and k != "transformers_version"}
               for part in (model.audio_encoder, model.text_encoder)]
    return weights_fingerprint([model.audio_encoder, model.text_encoder], configs)


def cache_codes(dataset: CaptionedClips, model, tokenizer, folder: Path, use_cpu: bool = True) -> tuple[list, int]:
    """For each clip, one safetensors file per window (``tiles`` of its length in samples) in ``folder``: the
    window's EnCodec codes (-100 past the file's end), its real length and the caption's T5 features. Files already
    there are reused (``common.cache_file``: keyed by the codec and T5, the rate, the file, the window and the
    caption, so a change of any recomputes) and written whole or not at all (``common.write_cached``)."""
    device = to_training_device(model, use_cpu)
    model.audio_encoder.eval()
    model.text_encoder.eval()
    fingerprint, rate = codec_fingerprint(model), dataset.sample_rate
    folder.mkdir(parents=True, exist_ok=True)
    files, made = [], 0
    for index, path in enumerate(dataset.paths):
        samples, wave = dataset.samples(index), None
        caption = tokenizer(dataset.captions[index], truncation=True, max_length=MAX_CAPTION_TOKENS,
                            return_tensors="pt").to(device)
        windows = []
        for start in tiles(resampled_length(path, rate), samples):
            target = cache_file(folder, [fingerprint, rate, str(path.resolve()), path.stat().st_size, start, samples,
                                         caption["input_ids"][0].tolist()])
            windows.append(target)
            if target.is_file():
                continue
            wave = read_mono(path, rate) if wave is None else wave
            window, length = fit_clip(wave[start:start + samples], samples)
            with torch.no_grad():
                codes = audio_codes(model, torch.from_numpy(window)[None, None].to(device), torch.tensor([length]))
                text = model.text_encoder(input_ids=caption["input_ids"],
                                          attention_mask=caption["attention_mask"]).last_hidden_state
            write_cached(target, {CODES: codes[0].int(), "length": torch.tensor(length), TEXT_FEATURES: text[0]})
            made += 1
        files.append(windows)
    return files, made


def read_cached_codes(file: Path) -> dict:
    """A cached window as ``ClipCollator`` takes it."""
    from safetensors.torch import load_file

    tensors = load_file(str(file))
    return {CODES: tensors[CODES].long(), "length": int(tensors["length"]), TEXT_FEATURES: tensors[TEXT_FEATURES]}


# ----------------------------------------------------------------------------- the backend

def _musicgen(handle: Handle):
    """The transformers model (LoRA layers included) behind ``handle``."""
    return handle.module.model


class MusicgenBackend:
    """The ``musicgen`` family."""
    modality = "audio"

    def load(self, model_ref: str, method: str, config: BackendConfig,
             train_rows: list[dict] | None = None) -> Handle:
        prologue(MUSICGEN, model_ref, method, config)  # seeded: the same new decoder and LoRA matrices
        tokenizer, feature_extractor, model = load_pretrained(model_ref)
        prepare_config(model, model_ref)
        rate = model.config.audio_encoder.sampling_rate
        if config.audio.sample_rate and config.audio.sample_rate != rate:
            raise ValueError(f"'{model_ref}' works on {rate} Hz audio (its EnCodec); set sample_rate to 0 or {rate}")
        if method == "scratch":
            fresh_decoder(model)
        trained = set_trainable(model, method, config.lora)
        if config.gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        parts = MusicgenParts(family=MUSICGEN.name, tokenizer=tokenizer, feature_extractor=feature_extractor,
                              model=trained, sample_rate=rate, clip_seconds=config.audio.clip_seconds)
        return Handle(modality=self.modality, model_ref=model_ref, method=method, module=MusicgenModule(model),
                      parts=parts)

    # -- data

    def datasets(self, handle: Handle, rows: dict[str, list[dict]], root: Path, config) -> dict[str, Any]:
        """Clips batched by length when ``length_buckets`` (examples only: a pair's two clips go in one batch);
        encoded once into ``root``'s ``.cache/codes`` when ``cache_codes``."""
        options = config.audio
        bucketed = options.length_buckets and config.objective == "sft"

        def make(given: list[dict], split: str) -> CaptionedClips:
            made = CaptionedClips(given, root, handle.parts.sample_rate, options.clip_seconds, split == "train",
                                  bucketed, config.audio_augmentation if split == "train" else None, config.seed)
            if options.cache_codes and given:
                made.cache(_musicgen(handle), handle.parts.tokenizer, Path(root) / ".cache" / "codes", config.use_cpu)
            return made

        return datasets_for(config.objective, rows, make)

    def collate(self, handle: Handle, config):
        return collate_for(ClipCollator(handle.parts.tokenizer), mismatched)

    # -- generation

    def generate(self, handle: Handle, prompts: list[str], seeds: list[int], settings: dict,
                 out_dir: Path) -> list[Sample]:
        """Settings: seconds (the training clip length), guidance_scale (3.0; 1 turns guidance off),
        temperature (1.0; 0 is greedy), top_k (250, MusicGen's own). One prompt at a time, torch seeded before
        each, so a seed gives the same clip whatever else is asked. Writes 16-bit WAV files at the model's rate."""
        import soundfile as sf

        settings = settings or {}
        model, tokenizer = _musicgen(handle), handle.parts.tokenizer
        rate = handle.parts.sample_rate
        seconds = float(settings.get("seconds") or handle.parts.clip_seconds)
        frames = max(1, math.ceil(seconds * model.config.audio_encoder.frame_rate))
        books = model.decoder.num_codebooks
        temperature = float(settings.get("temperature", 1.0))
        options = {"guidance_scale": float(settings.get("guidance_scale", 3.0)),
                   "max_new_tokens": frames + books - 1}  # the delay pattern takes K-1 steps more than frames
        if temperature > 0:
            options.update(do_sample=True, temperature=temperature, top_k=int(settings.get("top_k", 250)))
        else:
            options.update(do_sample=False, temperature=None, top_k=None)
        device = next(model.parameters()).device
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        was_training = handle.module.training
        handle.module.eval()
        samples = []
        try:
            for number, (prompt, seed) in enumerate(pairs(list(prompts), list(seeds))):
                started = time.perf_counter()
                inputs = tokenizer([prompt], padding=True, truncation=True, max_length=MAX_CAPTION_TOKENS,
                                   return_tensors="pt").to(device)
                torch.manual_seed(seed)
                with torch.no_grad():
                    audio = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                           **options)
                wave = np.clip(audio[0, 0].float().cpu().numpy()[:int(round(seconds * rate))], -1.0, 1.0)
                path = out_dir / f"{number:03d}_seed{seed}.wav"
                sf.write(str(path), wave, rate, subtype="PCM_16")
                samples.append(Sample(prompt=prompt, seed=seed, path=path, seconds=time.perf_counter() - started))
        finally:
            handle.module.train(was_training)
        return samples

    # -- saving

    def save(self, handle: Handle, folder: Path) -> None:
        """LoRA: the PEFT adapter alone (adapter_model.safetensors + adapter_config.json). Otherwise the whole
        model with save_pretrained (safetensors: transformers 5 writes nothing else), so the folder is itself
        a model reference. Tokenizer and feature extractor go along; ``studio_model.json`` always."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        lora = {"selected_adapters": ["default"]} if handle.method == "lora" else {}  # not a preference run's reference
        handle.parts.model.save_pretrained(str(folder), **lora)
        for processor in handle.parts.processors():
            processor.save_pretrained(str(folder))
        write_marker(handle, folder, sample_rate=handle.parts.sample_rate)

    def load_weights(self, handle: Handle, folder: Path) -> None:
        """Reverses ``save`` into ``handle``, in place (an optimizer holding the parameters stays valid)."""
        folder = Path(folder)
        if handle.method == "lora":
            load_adapter(handle.parts.model, folder)
            return
        from transformers import MusicgenForConditionalGeneration

        _require_safetensors(folder)
        saved = MusicgenForConditionalGeneration.from_pretrained(str(folder), use_safetensors=True,
                                                                 trust_remote_code=False)
        _musicgen(handle).load_state_dict(saved.state_dict())

    # -- for generation and export

    def lora_module(self, handle: Handle):
        return _musicgen(handle)

    def write_merged(self, base_ref: str, adapter: Path, config, out: Path, max_shard_bytes: int) -> None:
        """Loading the adapter's folder as 'full' folds it into its base (``merge_and_unload``)."""
        write_pretrained(self.load(str(adapter), "full", config).parts, base_ref, out, max_shard_bytes)

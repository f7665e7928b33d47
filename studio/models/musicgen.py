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

This module needs torch at import time (the dataset and the ``nn.Module``); the audio backend imports it
only when a MusicGen model is asked for. transformers and peft are imported inside functions.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from studio.models.base import Handle, Sample, pairs

FAMILY = "musicgen"
MARKER = "studio_model.json"
IGNORE = -100
ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")  # the decoder's self- and cross-attention projections
MAX_CAPTION_TOKENS = 256


# ----------------------------------------------------------------------------- which models are MusicGen

def _marker(folder: Path) -> dict:
    path = folder / MARKER
    return json.loads(path.read_text()) if path.is_file() else {}


def is_musicgen(model_ref: str) -> bool:
    """A studio MusicGen folder (its marker says so), a folder or Hub id whose config.json has model_type
    'musicgen', or a catalog entry of the musicgen family."""
    folder = Path(model_ref).expanduser()
    if folder.is_dir():
        marker = _marker(folder)
        if marker:
            return marker.get("family") == FAMILY
        config = folder / "config.json"
        return config.is_file() and json.loads(config.read_text()).get("model_type") == FAMILY
    from studio.models.catalog import find

    entry = find(model_ref)
    if entry is not None:
        return entry.family == FAMILY
    if model_ref.startswith((".", "/", "~")) or model_ref.count("/") != 1:
        return False  # not a Hub id
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(model_ref)
    except OSError:  # not cached and offline, or no such repository
        return False
    return config.get("model_type") == FAMILY


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
    if local and (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        base = _marker(folder).get("base") or json.loads((folder / "adapter_config.json").read_text()).get(
            "base_model_name_or_path")
        if not base:
            raise ValueError(f"'{model_ref}' holds a LoRA adapter but does not say which model it adapts")
        tokenizer, feature_extractor, model = load_pretrained(base)
        return tokenizer, feature_extractor, PeftModel.from_pretrained(model, source).merge_and_unload()
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
    """The full names of the decoder's Linear layers LoRA adapts: 'auto' → the attention projections;
    'all-linear' → all of them (the codebook heads too); else those whose name ends with one of the
    comma-separated names. Never a layer of the frozen T5 or EnCodec."""
    option = (option or "auto").strip()
    if option == "auto":
        wanted = set(ATTENTION)
    elif option == "all-linear":
        wanted = None
    else:
        wanted = {name.strip() for name in option.split(",") if name.strip()}
    targets = [f"decoder.{name}" for name, layer in model.decoder.named_modules()
               if isinstance(layer, nn.Linear) and (wanted is None or name.rsplit(".", 1)[-1] in wanted)]
    if not targets:
        raise ValueError(f"target_modules '{option}' names no Linear layer of the MusicGen decoder "
                         f"(its attention layers are {', '.join(ATTENTION)})")
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
    ``caption_ids``/``caption_mask`` (B, L), ``input_values`` (B, 1, samples) and ``lengths`` (B,)."""

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
        with torch.no_grad():
            text = model.text_encoder(input_ids=batch["caption_ids"].to(device), attention_mask=mask)
        codes = audio_codes(model, batch["input_values"].to(device), batch["lengths"])
        labels = delayed_labels(model, codes)
        return model(encoder_outputs=text, attention_mask=mask, labels=labels, use_cache=False).loss


# ----------------------------------------------------------------------------- data

class CaptionedClips(Dataset):
    """Manifest rows → {input_values: (samples,) float32 at the model's rate, length: real samples, caption}.
    Training takes a random clip-length window of each file; validation the start. Audio is kept in memory."""

    def __init__(self, rows: list[dict], root: Path, sample_rate: int, samples: int, random_crop: bool):
        self.paths = [Path(root) / row["file"] for row in rows]
        self.captions = [row.get("caption") or "" for row in rows]
        self.sample_rate, self.samples, self.random_crop = sample_rate, samples, random_crop
        self.waves: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        from studio.models.audio import fit_clip, read_mono

        if index not in self.waves:
            self.waves[index] = read_mono(self.paths[index], self.sample_rate)
        wave, length = fit_clip(self.waves[index], self.samples, self.random_crop)
        return {"input_values": torch.from_numpy(wave), "length": length, "caption": self.captions[index]}


class ClipCollator:
    """Stacks the clips (B, 1, samples) and tokenises the captions, padded to the longest."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, items: list[dict]) -> dict:
        text = self.tokenizer([item["caption"] for item in items], padding=True, truncation=True,
                              max_length=MAX_CAPTION_TOKENS, return_tensors="pt")
        return {"caption_ids": text["input_ids"], "caption_mask": text["attention_mask"],
                "input_values": torch.stack([item["input_values"] for item in items])[:, None],
                "lengths": torch.tensor([item["length"] for item in items], dtype=torch.long)}


# ----------------------------------------------------------------------------- the backend

def _musicgen(handle: Handle):
    """The transformers model (LoRA layers included) behind ``handle``."""
    return handle.module.model


class MusicgenBackend:
    """The audio backend's MusicGen half (``studio.models.audio.AudioBackend`` hands MusicGen models here)."""
    modality = "audio"

    def load(self, model_ref: str, method: str, config=None, train_rows: list[dict] | None = None) -> Handle:
        from studio.training.config import METHODS, TrainConfig

        config = config or TrainConfig()
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)} (got '{method}')")
        torch.manual_seed(config.seed)  # the same seed builds the same new decoder and LoRA matrices
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
        return Handle(modality=self.modality, model_ref=model_ref, method=method, module=MusicgenModule(model),
                      parts={"tokenizer": tokenizer, "feature_extractor": feature_extractor, "model": trained,
                             "family": FAMILY, "sample_rate": rate, "clip_seconds": config.audio.clip_seconds,
                             "starter": False})

    # -- data

    def datasets(self, handle: Handle, rows: dict[str, list[dict]], root: Path, config) -> dict[str, Any]:
        rate = handle.parts["sample_rate"]
        samples = int(round(config.audio.clip_seconds * rate))
        return {split: CaptionedClips(rows.get(split) or [], root, rate, samples, split == "train")
                for split in ("train", "validation")}

    def collate(self, handle: Handle, config) -> ClipCollator:
        return ClipCollator(handle.parts["tokenizer"])

    # -- generation

    def generate(self, handle: Handle, prompts: list[str], seeds: list[int], settings: dict,
                 out_dir: Path) -> list[Sample]:
        """Settings: seconds (the training clip length), guidance_scale (3.0; 1 turns guidance off),
        temperature (1.0; 0 is greedy), top_k (250, MusicGen's own). One prompt at a time, torch seeded before
        each, so a seed gives the same clip whatever else is asked. Writes 16-bit WAV files at the model's rate."""
        import soundfile as sf

        settings = settings or {}
        model, tokenizer = _musicgen(handle), handle.parts["tokenizer"]
        rate = handle.parts["sample_rate"]
        seconds = float(settings.get("seconds") or handle.parts["clip_seconds"])
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
        handle.parts["model"].save_pretrained(str(folder))
        handle.parts["tokenizer"].save_pretrained(str(folder))
        if handle.parts.get("feature_extractor") is not None:
            handle.parts["feature_extractor"].save_pretrained(str(folder))
        marker = {"modality": "audio", "base": handle.model_ref, "method": handle.method, "family": FAMILY,
                  "sample_rate": handle.parts["sample_rate"]}
        (folder / MARKER).write_text(json.dumps(marker, indent=1))

    def load_weights(self, handle: Handle, folder: Path) -> None:
        """Reverses ``save`` into ``handle``, in place (an optimizer holding the parameters stays valid)."""
        folder = Path(folder)
        if handle.method == "lora":
            from studio.models.text import load_adapter

            load_adapter(handle.parts["model"], folder)
            return
        from transformers import MusicgenForConditionalGeneration

        _require_safetensors(folder)
        saved = MusicgenForConditionalGeneration.from_pretrained(str(folder), use_safetensors=True,
                                                                 trust_remote_code=False)
        _musicgen(handle).load_state_dict(saved.state_dict())

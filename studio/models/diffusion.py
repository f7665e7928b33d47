"""Text-to-image diffusion, written once: training loss and sampling, read top to bottom.

The image backend trains it on pictures (in a VAE's latent space, or directly on pixels for the starter);
the audio backend trains it on spectrograms treated as one-channel pictures. Like the diffusers training
examples, nothing is hidden behind a pipeline object:

    training:  x0 (latents or pixels) ─┬─ noise, timestep ──▶ x_t ──▶ UNet(x_t, t, text) ──▶ prediction
                                       └─ target (epsilon | v | flow velocity) ──▶ MSE (min-SNR weighted)
    sampling:  noise(seed) ──▶ DDIM / flow-matching Euler steps with classifier-free guidance ──▶ x0

This module is imported only inside the backends' functions (it needs torch at import time to define
the ``nn.Module``); diffusers is imported inside functions.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from studio.models.common import load_adapter, target_option, write_marker
from studio.models.preference import PAIRS, SCORE

PREDICTION_TYPES = ("epsilon", "v_prediction", "flow_matching")
# A batch from a cache (studio.models.image): the VAE's posterior of each picture in place of its pixels, and the
# frozen text encoder's features of each caption in place of its token ids.
CACHED_POSTERIOR, TEXT_FEATURES = "cached_posterior", "text_features"


# ----------------------------------------------------------------------------- prediction types

def is_flow_scheduler(scheduler) -> bool:
    return "FlowMatch" in type(scheduler).__name__


def resolve_prediction_type(requested: str, scheduler) -> str:
    """'auto' → what the model's scheduler was trained with; otherwise the request."""
    if requested != "auto":
        if requested not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be auto or one of {', '.join(PREDICTION_TYPES)}")
        return requested
    if is_flow_scheduler(scheduler):
        return "flow_matching"
    found = scheduler.config.get("prediction_type", "epsilon")
    if found not in PREDICTION_TYPES:
        raise ValueError(f"the model's scheduler predicts '{found}', which training does not support "
                         f"(choose one of {', '.join(PREDICTION_TYPES)})")
    return found


def training_scheduler(prediction_type: str, scheduler):
    """The noise scheduler that matches ``prediction_type`` (saved with the model, so sampling agrees)."""
    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

    if prediction_type == "flow_matching":
        if is_flow_scheduler(scheduler):
            return scheduler
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=scheduler.config.num_train_timesteps)
    if is_flow_scheduler(scheduler):
        raise ValueError("this model was trained with flow matching; use prediction_type 'flow_matching' or 'auto'")
    if type(scheduler).__name__ != "DDPMScheduler" or scheduler.config.prediction_type != prediction_type:
        return DDPMScheduler.from_config(scheduler.config, prediction_type=prediction_type)
    return scheduler


# ----------------------------------------------------------------------------- the trainable module

class DiffusionModule(nn.Module):
    """UNet + text encoder (+ frozen VAE) + noise scheduler; ``forward(batch) -> loss``.

    ``batch`` holds ``pixel_values`` (B, C, H, W) in [-1, 1] and ``input_ids`` (B, L), or what a cache holds in
    their place (``CACHED_POSTERIOR``, ``TEXT_FEATURES``). ``empty_ids`` (L,) is the empty caption, used for caption
    dropout and for unconditional guidance.
    """

    def __init__(self, unet, text_encoder, noise_scheduler, empty_ids, vae=None, *, prediction_type: str = "auto",
                 snr_gamma: float = 0.0, caption_dropout: float = 0.0, noise_offset: float = 0.0):
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder
        self.vae = vae
        if vae is not None:
            vae.requires_grad_(False)
        self.prediction_type = resolve_prediction_type(prediction_type, noise_scheduler)
        self.noise_scheduler = training_scheduler(self.prediction_type, noise_scheduler)
        self.snr_gamma = float(snr_gamma)
        self.caption_dropout = float(caption_dropout)
        self.noise_offset = float(noise_offset)
        self.register_buffer("empty_ids", torch.as_tensor(empty_ids, dtype=torch.long), persistent=False)
        self.empty_features = None  # the empty caption's text features, set by a text-feature cache

    # -- the pieces

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Per-token text features (the UNet's cross-attention input)."""
        trains = any(p.requires_grad for p in self.text_encoder.parameters())
        with torch.set_grad_enabled(trains and torch.is_grad_enabled()):
            return self.text_encoder(input_ids.to(self.device))[0]

    def vae_scale(self) -> int:
        from studio.models.image import vae_scale_factor

        return vae_scale_factor(self.vae.config.block_out_channels) if self.vae is not None else 1

    @torch.no_grad()
    def posterior(self, pixels: torch.Tensor) -> torch.Tensor:
        """What the VAE makes of pixels, before any sampling (its mean and log-variance, diffusers'
        ``latent_dist.parameters``): what a latent cache keeps. A pixel-space model's are the pixels."""
        if self.vae is None:
            return pixels
        return self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.parameters

    @torch.no_grad()
    def from_posterior(self, parameters: torch.Tensor, mean: bool = False) -> torch.Tensor:
        """The UNet's latents: a sample of the posterior, or its mean when ``mean`` (deterministic)."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        if self.vae is None:
            return parameters
        posterior = DiagonalGaussianDistribution(parameters)
        latents = posterior.mode() if mean else posterior.sample()
        shift = self.vae.config.get("shift_factor") or 0.0
        return (latents - shift) * self.vae.config.scaling_factor

    def to_latents(self, pixels: torch.Tensor, mean: bool = False) -> torch.Tensor:
        """Pixels → the UNet's space (see ``from_posterior``)."""
        return self.from_posterior(self.posterior(pixels), mean)

    def latents_of(self, batch: dict, mean: bool = False) -> torch.Tensor:
        """The batch's latents, from its pixels or its cached posterior: drawn alike, so a cache changes no loss."""
        if CACHED_POSTERIOR in batch:
            cached = batch[CACHED_POSTERIOR].to(self.device)
            return self.from_posterior(cached.to(self.vae.dtype) if self.vae is not None else cached, mean)
        return self.to_latents(batch["pixel_values"].to(self.device), mean)

    def text_of(self, batch: dict, dropped: torch.Tensor | None = None) -> torch.Tensor:
        """The batch's text features, from its token ids or cached; ``dropped`` (B,) items get the empty caption's."""
        if TEXT_FEATURES in batch:
            text = batch[TEXT_FEATURES].to(self.device)
            return text if dropped is None else torch.where(dropped[:, None, None], self.empty_features[None], text)
        input_ids = batch["input_ids"].to(self.device)
        if dropped is not None:
            input_ids = torch.where(dropped[:, None], self.empty_ids[None, :], input_ids)
        return self.encode_text(input_ids)

    @torch.no_grad()
    def to_pixels(self, latents: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return latents
        shift = self.vae.config.get("shift_factor") or 0.0
        return self.vae.decode((latents / self.vae.config.scaling_factor + shift).to(self.vae.dtype)).sample

    def min_snr_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma (Hang et al. 2023): weight = min(SNR, gamma) / SNR (epsilon) or / (SNR + 1) (v)."""
        from diffusers.training_utils import compute_snr

        snr = compute_snr(self.noise_scheduler, timesteps).clamp(min=1e-8)
        clipped = snr.clamp(max=self.snr_gamma)
        return clipped / (snr + 1) if self.prediction_type == "v_prediction" else clipped / snr

    # -- the loss

    def forward(self, batch: dict) -> torch.Tensor:
        if SCORE in batch:
            return self.preference_scores(batch)
        # Validation draws the same noise and timesteps every time, so its loss is comparable across evaluations.
        generator = None if self.training else torch.Generator().manual_seed(0)
        latents = self.latents_of(batch).to(self.unet.dtype)
        size = latents.shape[0]

        dropped = None
        if self.training and self.caption_dropout > 0:  # teaches the unconditional model guidance needs
            dropped = torch.rand(size, device=self.device) < self.caption_dropout
        text = self.text_of(batch, dropped)

        # Drawn by shape, not ``randn_like``: that follows the latents' memory layout (the VAE's is channels-last,
        # a cached posterior's contiguous), and the same random numbers would land on other elements.
        noise = torch.randn(latents.shape, generator=generator).to(latents) if generator is not None \
            else torch.randn(latents.shape, device=latents.device, dtype=latents.dtype)
        if self.noise_offset > 0:  # one shift per picture and channel: learns overall brightness (Guttenberg 2023)
            shape = (size, latents.shape[1], *[1] * (latents.dim() - 2))
            offset = torch.randn(shape, generator=generator).to(latents) if generator is not None \
                else torch.randn(shape, device=latents.device, dtype=latents.dtype)
            noise = noise + self.noise_offset * offset
        steps = self.noise_scheduler.config.num_train_timesteps
        if self.prediction_type == "flow_matching":  # sigma in [0, 1): how far along the line to noise
            # Uniform, not SD3's logit-normal: a few-step Euler sampler visits sigma evenly from 1 down (at 4 steps
            # 1, .75, .5, .25), and its first step from pure noise, where the caption decides colour and layout,
            # is the one logit-normal trains least (its density vanishes at sigma 1).
            timesteps = torch.rand(size, generator=generator).to(self.device) * steps
        else:
            timesteps = torch.randint(0, steps, (size,), generator=generator).to(self.device)
        loss = self.prediction_error(latents, text, noise, timesteps)
        if self.snr_gamma > 0 and self.prediction_type != "flow_matching":
            loss = loss * self.min_snr_weights(timesteps)
        return loss.mean()

    def preference_scores(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(minus half the denoising error of each picture, 1 each): Diffusion-DPO's score (Wallace et al. 2023;
        diffusers' examples/research_projects/diffusion_dpo/train_diffusion_dpo.py), so that DPO's beta is its
        ``beta_dpo``. Noise and timesteps come from ``batch[SCORE]`` (the policy and its reference see the same) and
        the two pictures of a pair share them; latents are the VAE's posterior mean, no caption is dropped."""
        generator = torch.Generator().manual_seed(int(batch[SCORE]))
        latents = self.latents_of(batch, mean=True).to(self.unet.dtype)
        text = self.text_of(batch)
        size = latents.shape[0]
        drawn = size // 2 if batch.get(PAIRS) else size
        noise = torch.randn((drawn, *latents.shape[1:]), generator=generator).to(latents)
        steps = self.noise_scheduler.config.num_train_timesteps
        if self.prediction_type == "flow_matching":
            timesteps = (torch.rand(drawn, generator=generator) * steps).to(self.device)
        else:
            timesteps = torch.randint(0, steps, (drawn,), generator=generator).to(self.device)
        if drawn != size:
            noise, timesteps = torch.cat([noise, noise]), torch.cat([timesteps, timesteps])
        error = self.prediction_error(latents, text, noise, timesteps)
        return -0.5 * error, torch.ones_like(error)

    def prediction_error(self, latents: torch.Tensor, text: torch.Tensor, noise: torch.Tensor,
                         timesteps: torch.Tensor) -> torch.Tensor:
        """Per-item mean squared error of the UNet's prediction at ``timesteps`` (B,); for flow matching a
        timestep is sigma times the number of training timesteps."""
        scheduler = self.noise_scheduler
        if self.prediction_type == "flow_matching":  # straight line from data (sigma 0) to noise (sigma 1)
            sigmas = timesteps / scheduler.config.num_train_timesteps
            s = sigmas.view(-1, *[1] * (latents.dim() - 1)).to(latents.dtype)
            noisy = (1 - s) * latents + s * noise
            target = noise - latents
        else:
            noisy = scheduler.add_noise(latents, noise, timesteps)
            target = noise if self.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, timesteps)
        prediction = self.unet(noisy, timesteps, encoder_hidden_states=text.to(self.unet.dtype)).sample
        return (prediction.float() - target.float()).pow(2).mean(dim=list(range(1, prediction.dim())))

    @torch.no_grad()
    def loss_at(self, batch: dict, fraction: float, seeds: list[int]) -> torch.Tensor:
        """Per-item prediction error (unweighted) at one fixed point of the noise schedule, ``fraction`` of the
        way from data (0) to noise (1), each item's noise drawn from its own seed and latents from the VAE's
        posterior mean: the same batch, fraction and seeds give the same losses (held-out evaluation)."""
        latents = self.latents_of(batch, mean=True).to(self.unet.dtype)
        text = self.text_of(batch)
        noise = torch.stack([torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(int(seed)))
                             for seed in seeds]).to(latents)
        steps = self.noise_scheduler.config.num_train_timesteps
        point = fraction * steps if self.prediction_type == "flow_matching" else round(fraction * (steps - 1))
        timesteps = torch.full((latents.shape[0],), point, device=self.device,
                               dtype=torch.float32 if self.prediction_type == "flow_matching" else torch.long)
        return self.prediction_error(latents, text, noise, timesteps)


# ----------------------------------------------------------------------------- data helpers

def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    """Captions → (N, L) ids padded to the tokenizer's length (CLIP: 77), as Stable Diffusion does."""
    length = min(int(tokenizer.model_max_length), 512)
    return tokenizer([c or "" for c in captions], padding="max_length", max_length=length, truncation=True,
                     return_tensors="pt").input_ids


def collate_images(items: list[dict]) -> dict:
    """Stacks dataset items ({pixel_values, input_ids}, or what a cache holds in their place) into a batch."""
    return {key: torch.stack([i[key] for i in items]) for key in items[0]}




# ----------------------------------------------------------------------------- sampling

def sampling_scheduler(module: DiffusionModule, kind: str = "ddim"):
    """DDIM (deterministic, eta 0) for noise-prediction models; Euler for flow matching; 'model' takes the
    model's own scheduler class as saved."""
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    config = module.noise_scheduler.config
    if module.prediction_type == "flow_matching":
        return FlowMatchEulerDiscreteScheduler.from_config(config)
    if kind == "model":
        return type(module.noise_scheduler).from_config(config)
    return DDIMScheduler.from_config(config)


# Strong guidance over-saturates small models trained from scratch (measured on the starters: colour right in
# 100 % of images at 2.0, 80 % at 3.0); pretrained Stable Diffusion is used at 7.5 everywhere.
STARTER_GUIDANCE, PRETRAINED_GUIDANCE = 2.0, 7.5


# Denoising steps when a person asks for none: DDIM's usual 30; a flow-matching model's paths are near straight, so
# few Euler steps suffice (bench/flow_vs_diffusion.py: the starter's colour accuracy at 4 and 8 steps).
DIFFUSION_STEPS, FLOW_STEPS = 30, 8


def sampling_steps(settings: dict, module: DiffusionModule) -> int:
    """The denoising steps a person asked for, else the default for what the model predicts."""
    asked = settings.get("steps")
    if asked is None or asked == "":
        return FLOW_STEPS if module.prediction_type == "flow_matching" else DIFFUSION_STEPS
    return int(asked)


def guidance_scale(settings: dict, starter: bool) -> float:
    """The guidance a person asked for (0 turns it off), else the default for this kind of model."""
    asked = settings.get("guidance_scale")
    if asked is None or asked == "":
        return STARTER_GUIDANCE if starter else PRETRAINED_GUIDANCE
    return float(asked)


@torch.no_grad()
def sample(module: DiffusionModule, tokenizer, prompts: list[str], seeds: list[int], *, height: int, width: int,
           steps: int = 30, guidance_scale: float = 3.0, negative_prompt: str = "", scheduler: str = "ddim",
           batch_size: int = 8) -> torch.Tensor:
    """One image per (prompt, seed) pair (same order), as a float CPU tensor (N, C, H, W) in [-1, 1].

    The starting noise of each image comes from its own ``torch.Generator`` seeded with its seed, drawn on
    the CPU: the same seed gives the same image whatever the batch or the device.
    """
    if module.vae is not None:
        channels, scale = module.vae.config.latent_channels, module.vae_scale()
    else:
        channels, scale = module.unet.config.in_channels, 1
    if height % scale or width % scale:
        raise ValueError(f"height and width must be multiples of {scale}")
    shape = (channels, height // scale, width // scale)
    was_training = module.training
    module.eval()
    try:
        outputs = []
        for start in range(0, len(prompts), batch_size):
            chunk_prompts, chunk_seeds = prompts[start:start + batch_size], seeds[start:start + batch_size]
            outputs.append(_sample_batch(module, tokenizer, chunk_prompts, chunk_seeds, shape, steps,
                                         guidance_scale, negative_prompt, scheduler))
    finally:
        module.train(was_training)
    return torch.cat(outputs)


def _sample_batch(module, tokenizer, prompts, seeds, shape, steps, guidance_scale, negative_prompt, kind):
    device, dtype = module.device, module.unet.dtype
    sampler = sampling_scheduler(module, kind)
    sampler.set_timesteps(steps, device=device)

    noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(seed))) for seed in seeds])
    # Flow matching starts from pure noise (sigma 1) and its Euler scheduler has no init_noise_sigma.
    latents = noise.to(device=device, dtype=dtype) * getattr(sampler, "init_noise_sigma", 1.0)

    text = module.encode_text(tokenize(tokenizer, prompts))
    guided = guidance_scale != 1.0
    if guided:
        negative = module.encode_text(tokenize(tokenizer, [negative_prompt] * len(prompts)))
        text = torch.cat([negative, text])
    text = text.to(dtype)

    for t in sampler.timesteps:
        model_input = torch.cat([latents, latents]) if guided else latents
        if hasattr(sampler, "scale_model_input"):  # (flow-matching Euler has none)
            model_input = sampler.scale_model_input(model_input, t)
        timestep = t.expand(model_input.shape[0]).to(device)
        prediction = module.unet(model_input, timestep, encoder_hidden_states=text).sample
        if guided:  # classifier-free guidance: push away from the unconditional prediction
            unconditional, conditional = prediction.chunk(2)
            prediction = unconditional + guidance_scale * (conditional - unconditional)
        latents = sampler.step(prediction, t, latents).prev_sample

    return module.to_pixels(latents).float().clamp(-1, 1).cpu()


def to_uint8(image: torch.Tensor):
    """(C, H, W) in [-1, 1] → (H, W, C) uint8 numpy array."""
    array = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return array.permute(1, 2, 0).numpy()



# ----------------------------------------------------------------------------- starters (built from configs)

def word_tokenizer(captions: list[str], max_length: int | None = None):
    """A word-level tokenizer whose vocabulary is the training captions' words (lower-cased; most frequent
    first, ties alphabetical, so the same captions give the same ids). Captions are padded to
    ``max_length`` tokens: by default the longest training caption with its two markers, rounded up to a
    multiple of 8 (8 to 64) — padding the model never needs only dilutes the caption."""
    from collections import Counter

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    splitter = pre_tokenizers.Whitespace()
    counts = Counter(word for caption in captions if caption
                     for word, _span in splitter.pre_tokenize_str(caption.lower()))
    words = sorted(counts, key=lambda w: (-counts[w], w))
    if max_length is None:
        longest = max((len(splitter.pre_tokenize_str(c.lower())) for c in captions if c), default=0)
        max_length = min(max(8, -(-(longest + 2) // 8) * 8), 64)
    vocab = {token: i for i, token in enumerate(specials + [w for w in words if w not in specials])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = splitter
    tokenizer.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]",
                                                             special_tokens=[("[BOS]", 2), ("[EOS]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]", model_max_length=max_length)


def starter_text_encoder(tokenizer, hidden: int = 64, layers: int = 2, heads: int = 4):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                            num_hidden_layers=layers, num_attention_heads=heads,
                            max_position_embeddings=tokenizer.model_max_length, projection_dim=hidden,
                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id)
    return CLIPTextModel(config)


def starter_scheduler(prediction_type: str = "v_prediction"):
    """The cosine ("squaredcos_cap_v2") schedule, which suits small images better than SD's linear one."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type,
                         clip_sample=True, timestep_spacing="trailing")


# ----------------------------------------------------------------------------- model folders

UNSUPPORTED = {"text_encoder_2": "SDXL-class pipelines (two text encoders) are not supported yet",
               "transformer": "transformer-based pipelines (SD3, Flux, ...) are not supported yet",
               "prior": "prior/decoder pipelines are not supported"}


def pipeline_components(model_ref: str) -> dict:
    """Which components a pipeline folder or Hub id has: model_index.json, or the subfolders present."""
    folder = Path(model_ref).expanduser()
    if folder.is_dir():
        if (folder / "model_index.json").exists():
            index = json.loads((folder / "model_index.json").read_text())
        else:
            index = {p.name: ["", ""] for p in folder.iterdir() if p.is_dir()}
    else:
        from diffusers import DiffusionPipeline

        index = DiffusionPipeline.load_config(model_ref)
    return {k: v for k, v in index.items() if isinstance(v, (list, tuple)) and len(v) == 2 and v[0] is not None}


def load_scheduler(model_ref: str):
    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

    config = DDPMScheduler.load_config(model_ref, subfolder="scheduler")
    if "FlowMatch" in config.get("_class_name", ""):
        return FlowMatchEulerDiscreteScheduler.from_config(config)
    return DDPMScheduler.from_config(config)


def _safetensors_only(cls, model_ref: str, subfolder: str):
    """``cls.from_pretrained`` of one component, refusing pickled weights (loading a pickle can run code)."""
    try:
        return cls.from_pretrained(model_ref, subfolder=subfolder, use_safetensors=True)
    except (OSError, EnvironmentError) as error:
        if "safetensors" not in str(error):
            raise
        raise ValueError(f"'{model_ref}': {subfolder} has no .safetensors weights. The studio loads safetensors "
                         f"only (pickled .bin weights can run code when loaded); convert them first, e.g. "
                         f"load and save_pretrained(safe_serialization=True) in a trusted environment") from error


def load_pipeline_parts(model_ref: str, method: str) -> dict:
    """tokenizer, text encoder, UNet (pretrained; from its config for 'scratch'), VAE if any, and scheduler
    of a Stable-Diffusion-class pipeline, each with ``from_pretrained(subfolder=...)`` and safetensors only."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    components = pipeline_components(model_ref)
    for name, why in UNSUPPORTED.items():
        if name in components:
            raise NotImplementedError(f"'{model_ref}': {why}; Stable-Diffusion-1/2-class pipelines (UNet2DCondition"
                                      "Model + CLIP text encoder) and the starters are")
    missing = [n for n in ("unet", "text_encoder", "tokenizer", "scheduler") if n not in components]
    if missing:
        raise ValueError(f"'{model_ref}' is not a text-to-image diffusion pipeline (no {', '.join(missing)})")
    tokenizer = AutoTokenizer.from_pretrained(model_ref, subfolder="tokenizer")
    text_encoder = _safetensors_only(CLIPTextModel, model_ref, "text_encoder")
    if method == "scratch":
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(model_ref, subfolder="unet"))
    else:
        unet = _safetensors_only(UNet2DConditionModel, model_ref, "unet")
    vae = _safetensors_only(AutoencoderKL, model_ref, "vae") if "vae" in components else None
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "unet": unet, "vae": vae,
            "scheduler": load_scheduler(model_ref)}


def lora_targets(unet, option: str, preset: tuple[str, ...]) -> list[str]:
    """'auto' → the family's ``preset`` (the attention projections); 'all-linear' → every Linear layer; else the
    comma-separated names."""
    option = target_option(option)
    if option == "auto":
        return list(preset)
    if option == "all-linear":
        return [name for name, layer in unet.named_modules() if isinstance(layer, nn.Linear)]
    return option


def set_trainable(unet, text_encoder, method: str, lora_options, preset: tuple[str, ...],
                  train_text_encoder: bool = False) -> None:
    """lora: only the adapter trains; full/scratch: the whole UNet; the text encoder only for starters."""
    text_encoder.requires_grad_(train_text_encoder)
    unet.requires_grad_(method != "lora")
    if method == "lora":
        from peft import LoraConfig

        unet.add_adapter(LoraConfig(r=lora_options.r, lora_alpha=lora_options.lora_alpha,
                                    lora_dropout=lora_options.lora_dropout, init_lora_weights="gaussian",
                                    target_modules=lora_targets(unet, lora_options.target_modules, preset)))


def trainable_module(family, unet, text_encoder, scheduler, tokenizer, vae, method: str, config,
                     train_text_encoder: bool) -> DiffusionModule:
    """The module of a loaded pipeline or starter, set up to train with ``method`` (``config.diffusion``, the
    diffusion options, serve images and spectrograms alike). Starters train their text encoder with the UNet;
    pretrained text encoders stay frozen."""
    set_trainable(unet, text_encoder, method, config.lora, family.lora_targets, train_text_encoder)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    options = config.diffusion
    return DiffusionModule(unet, text_encoder, scheduler, tokenize(tokenizer, [""])[0], vae,
                           prediction_type=options.prediction_type, snr_gamma=options.snr_gamma,
                           caption_dropout=options.caption_dropout, noise_offset=options.noise_offset)


def save_diffusers_lora(state: dict, config: dict, folder) -> None:
    """``pytorch_lora_weights.safetensors`` in ``folder``, for ``pipeline.load_lora_weights``, from a UNet's PEFT
    adapter (``state``, keys relative to the UNet) and its LoraConfig as a dict.

    The config goes into the file: without it diffusers takes alpha to be the rank, scaling the adapter by 1
    rather than alpha / rank, and draws other images than the studio. Its dropout is written as 0: dropout only
    matters in training, and diffusers leaves the layers it adds in training mode, so a plain pipeline would
    drop activations at random while it draws."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=convert_state_dict_to_diffusers(state),
                                              safe_serialization=True,
                                              unet_lora_adapter_metadata={**config, "lora_dropout": 0.0})


def save_model(handle, folder) -> None:
    """LoRA: the PEFT adapter (adapter_model.safetensors + adapter_config.json) and the same weights as a
    diffusers LoRA file (pytorch_lora_weights.safetensors, for ``pipeline.load_lora_weights``).
    Otherwise every component in its own from_pretrained-loadable subfolder, plus model_index.json when there
    is a VAE (then the folder is a StableDiffusionPipeline). Always ``studio_model.json``, with the handle's
    ``parts.marker_fields()``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    module, tokenizer = handle.module, handle.parts.tokenizer
    if handle.method == "lora":
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(module.unet).items()}
        save_file(state, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
        module.unet.peft_config["default"].save_pretrained(str(folder))
        save_diffusers_lora(state, module.unet.peft_config["default"].to_dict(), folder)
    else:
        module.unet.save_pretrained(str(folder / "unet"), safe_serialization=True)
        module.text_encoder.save_pretrained(str(folder / "text_encoder"), safe_serialization=True)
        tokenizer.save_pretrained(str(folder / "tokenizer"))
        module.noise_scheduler.save_pretrained(str(folder / "scheduler"))
        if module.vae is not None:  # a complete StableDiffusionPipeline folder
            import diffusers

            module.vae.save_pretrained(str(folder / "vae"), safe_serialization=True)
            index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
                     "vae": ["diffusers", type(module.vae).__name__],
                     "text_encoder": ["transformers", type(module.text_encoder).__name__],
                     "tokenizer": ["transformers", type(tokenizer).__name__],
                     "unet": ["diffusers", type(module.unet).__name__],
                     "scheduler": ["diffusers", type(module.noise_scheduler).__name__],
                     "safety_checker": [None, None], "feature_extractor": [None, None],
                     "image_encoder": [None, None], "requires_safety_checker": False}
            (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    write_marker(handle, folder, prediction_type=module.prediction_type, **handle.parts.marker_fields())


def load_model_weights(handle, folder) -> None:
    """Reverses ``save_model`` into ``handle``: parameters are loaded in place (an optimizer holding them
    stays valid); a component of another shape (a starter rebuilt with another vocabulary) is replaced."""
    folder = Path(folder)
    module = handle.module
    if handle.method == "lora":
        load_adapter(module.unet, folder)
        return
    from diffusers import UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    if not (folder / "unet").is_dir():
        raise FileNotFoundError(f"no model weights (unet/) in {folder}")
    for name, cls in (("unet", UNet2DConditionModel), ("text_encoder", CLIPTextModel)):
        fresh = cls.from_pretrained(str(folder / name), use_safetensors=True)
        current = getattr(module, name)
        ours, theirs = current.state_dict(), fresh.state_dict()
        if ours.keys() == theirs.keys() and all(ours[k].shape == theirs[k].shape for k in ours):
            current.load_state_dict(theirs)
        else:
            fresh.requires_grad_(any(p.requires_grad for p in current.parameters()))
            setattr(module, name, fresh.to(module.device))
    if (folder / "tokenizer").is_dir():
        tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        handle.parts.tokenizer = tokenizer
        module.empty_ids = tokenize(tokenizer, [""])[0].to(module.device)


def save_pipeline(handle, out, max_shard_bytes: int) -> None:
    """A handle with a VAE as a complete StableDiffusionPipeline folder with the studio's sampler."""
    from diffusers import StableDiffusionPipeline

    module = handle.module
    pipeline = StableDiffusionPipeline(vae=module.vae, text_encoder=module.text_encoder,
                                       tokenizer=handle.parts.tokenizer, unet=module.unet,
                                       scheduler=module.noise_scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.save_pretrained(str(out), safe_serialization=True, max_shard_size=max_shard_bytes)
    use_studio_sampler(out)


def use_studio_sampler(folder) -> None:
    """Makes a pipeline folder's scheduler the one the studio samples with (DDIM from the training schedule, eta
    0; flow-matching models keep their Euler scheduler), so ``pipeline(prompt, generator=seed)`` reproduces the
    studio's images."""
    from diffusers import DDIMScheduler, DDPMScheduler

    folder = Path(folder)
    config = DDPMScheduler.load_config(str(folder), subfolder="scheduler")
    if "FlowMatch" in config.get("_class_name", ""):
        return
    DDIMScheduler.from_config(config).save_pretrained(str(folder / "scheduler"))
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["scheduler"] = ["diffusers", "DDIMScheduler"]
    index_path.write_text(json.dumps(index, indent=2))

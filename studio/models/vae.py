"""Text-to-image with a conditional VAE: the backend of the ``starter-image-vae`` family.

An encoder maps a picture and its caption to the mean and log-variance of a Gaussian over a small latent; a decoder
maps a latent and the caption back to a picture in one pass, each block scaled and shifted by the caption (FiLM: the
GAN starter's generator, ``studio.models.gan.Generator``, serves as the decoder). Each network has its own
bag-of-words embedding of the caption (the word tokenizer of the diffusion starter, trained on the dataset's
captions). Training (``studio.training.objectives.Variational``) minimises the reconstruction error plus the KL
divergence of the encoder's Gaussian from the standard normal prior, weighted by ``vae.kl_weight`` (beta), which rises
linearly from 0 over ``vae.kl_warmup_steps`` so the decoder first learns to use the latent (Bowman et al. 2016).

Sampling draws a latent from the prior (a seed's noise) and decodes it: one pass per picture. Reconstruction
(``VaeBackend.reconstruct``) encodes a given picture to its mean latent and decodes it.

The loss of a picture is the negative ELBO of a Gaussian decoder of variance 1/2 (up to its constant), divided by
the number of pixel values so its figures read per value: ``recon`` is the mean squared error in [-1, 1] pixels,
``kl`` the KL in nats divided by the same count, and ``loss = recon + beta * kl``.

torch is imported inside functions, except in this module's classes, built only when the family is used.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from studio.models.base import BackendConfig, Handle, Sample, pairs
from studio.models.common import prologue
from studio.models.gan import EMBEDDING, LATENT, CaptionEmbedding, Generator, captioned_pictures, evaluating, \
    load_networks, new_shape, noise_of, picture_samples, read_folder, save_networks, training_noise
from studio.models.gan import GanParts as VaeParts  # the same parts: the caption tokenizer and the resolution
from studio.models.registry import STARTER_IMAGE_VAE

STARTER = STARTER_IMAGE_VAE.starter
WEIGHTS, SHAPE = "vae.safetensors", "vae_config.json"
VALIDATION_NOISE_SEED = 0  # the validation ELBO's one latent draw per picture: the same at every evaluation


# ----------------------------------------------------------------------------- the networks

class Encoder(nn.Module):
    """Strided convolutions down to 4x4; the flattened features and the caption's embedding give the mean and
    log-variance of each latent dimension."""

    def __init__(self, resolution: int, vocabulary: int, pad_id: int, width: int = 32):
        super().__init__()
        self.caption = CaptionEmbedding(vocabulary, pad_id)
        channels = [3] + [min(width << i, 64) for i in range(int(math.log2(resolution // 4)))]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in zip(channels, channels[1:]))
        self.head = nn.Linear(channels[-1] * 16 + EMBEDDING, 2 * LATENT)

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        mean, log_variance = self.head(torch.cat([x.flatten(1), self.caption(ids)], 1)).chunk(2, dim=1)
        return mean, log_variance.clamp(-30.0, 20.0)  # exp() stays finite whatever an early step does


def kl_from_prior(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_variance)) || N(0, I)) in nats, per picture (summed over the latent)."""
    return 0.5 * (mean.pow(2) + log_variance.exp() - 1 - log_variance).sum(1)


class VaeModule(nn.Module):
    """The encoder and decoder; ``forward(batch, kl_weight)`` returns a dict with ``loss`` (reconstruction error plus
    ``kl_weight`` x KL, per pixel value, averaged over the batch), ``recon`` and ``kl``. In eval mode (validation) the
    latent's noise is drawn from a fixed seed, so every evaluation measures the same draw; in training it is drawn
    per item as the GAN's (``gan.training_noise``), so two processes draw what one does."""

    def __init__(self, shape: dict, seed: int = 0):
        super().__init__()
        self.shape = shape
        self.encoder = Encoder(shape["resolution"], shape["vocabulary"], shape["pad_id"])
        self.decoder = Generator(shape["resolution"], shape["vocabulary"], shape["pad_id"])
        self.register_buffer("noise_draws", torch.zeros((), dtype=torch.long))  # training passes that drew noise
        self.seed = seed

    @property
    def device(self):
        return next(self.parameters()).device

    def forward(self, batch: dict, kl_weight: float = 1.0) -> dict:
        images, ids = batch["pixel_values"], batch["input_ids"]
        mean, log_variance = self.encoder(images, ids)
        if self.training:
            noise = training_noise(self, len(ids)).to(mean.dtype)
        else:
            noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(VALIDATION_NOISE_SEED))
            noise = noise.to(mean.device, mean.dtype)
        decoded = self.decoder(mean + (0.5 * log_variance).exp() * noise, ids)
        values = images[0].numel()
        recon = (decoded.float() - images.float()).pow(2).flatten(1).sum(1).mean() / values
        kl = kl_from_prior(mean.float(), log_variance.float()).mean() / values
        return {"loss": recon + kl_weight * kl, "recon": recon.detach(), "kl": kl.detach()}


@torch.no_grad()
def sample_pictures(module: VaeModule, ids: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """The decoder's pictures (N, 3, H, W) in [-1, 1] of latents drawn from the prior; each seed's latent drawn on the
    CPU, so the same seed gives the same picture on any device and in any batch."""
    latents = noise_of(seeds)
    return module.decoder(latents.to(module.device), ids.to(module.device)).float().clamp(-1, 1).cpu()


@torch.no_grad()
def reconstruct_pictures(module: VaeModule, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Each picture encoded to its mean latent (no noise: the same picture gives the same result) and decoded."""
    mean, _ = module.encoder(images.to(module.device), ids.to(module.device))
    return module.decoder(mean, ids.to(module.device)).float().clamp(-1, 1).cpu()


# ----------------------------------------------------------------------------- the backend

class VaeBackend:
    modality = "image"

    def load(self, model_ref: str, method: str, config: BackendConfig,
             train_rows: list[dict] | None = None) -> Handle:
        prologue(STARTER_IMAGE_VAE, model_ref, method, config)
        if model_ref == STARTER:
            tokenizer, shape = new_shape(config, train_rows, "VAE")
        else:
            tokenizer, shape = read_folder(Path(model_ref).expanduser(), SHAPE, "VAE")
        handle = Handle(modality=self.modality, model_ref=model_ref, method=method,
                        module=VaeModule(shape, seed=config.seed),
                        parts=VaeParts(family=STARTER_IMAGE_VAE.name, starter=True, tokenizer=tokenizer,
                                       resolution=shape["resolution"]))
        if model_ref != STARTER:
            self.load_weights(handle, Path(model_ref).expanduser())
        return handle

    def datasets(self, handle: Handle, rows: dict[str, list[dict]], root: Path, config) -> dict[str, Any]:
        """The image starter's captioned pictures, as the GAN's (``gan.captioned_pictures``)."""
        return captioned_pictures(handle, rows, root, config)

    def collate(self, handle: Handle, config) -> Callable[[list], dict]:
        from studio.models.diffusion import collate_images

        return collate_images

    def generate(self, handle: Handle, prompts: list[str], seeds: list[int], settings: dict,
                 out_dir: Path) -> list[Sample]:
        """One pass of the decoder per picture, from the seed's latent drawn from the prior; no settings (a VAE has
        no steps or guidance)."""
        from studio.models.diffusion import tokenize

        chosen = pairs(prompts, seeds)
        started = time.perf_counter()
        with evaluating(handle.module):
            images = sample_pictures(handle.module, tokenize(handle.parts.tokenizer, [p for p, _ in chosen]),
                                     [s for _, s in chosen])
        return picture_samples(chosen, images, out_dir, started)

    def reconstruct(self, handle: Handle, pictures: list[Path], captions: list[str], out_dir: Path) -> list[Sample]:
        """Each picture (any size: scaled and centre-cropped to the model's square) with its caption, encoded and
        decoded: how much of it the latent keeps. One PNG per picture under ``out_dir``, in the samples' form
        (``seed`` is the picture's index)."""
        from studio.models.diffusion import tokenize
        from studio.models.image import load_image

        if len(pictures) != len(captions):
            raise ValueError(f"reconstruct takes one caption per picture ({len(pictures)} pictures, "
                             f"{len(captions)} captions)")
        started = time.perf_counter()
        images = torch.stack([load_image(Path(p), handle.parts.resolution) for p in pictures])
        with evaluating(handle.module):
            decoded = reconstruct_pictures(handle.module, images, tokenize(handle.parts.tokenizer, captions))
        return picture_samples(list(zip(captions, range(len(pictures)))), decoded, out_dir, started)

    def save(self, handle: Handle, folder: Path) -> None:
        """Encoder and decoder (``vae.safetensors``), their shape, the tokenizer and the marker: a folder this backend
        loads to generate or to train further (method 'full')."""
        save_networks(handle, folder, WEIGHTS, SHAPE)

    def load_weights(self, handle: Handle, folder: Path) -> None:
        load_networks(handle, folder, WEIGHTS, "VAE")

    def lora_module(self, handle: Handle):
        raise ValueError("the VAE starter trains without LoRA (methods scratch and full)")

    def write_merged(self, base_ref: str, adapter: Path, config, out: Path, max_shard_bytes: int) -> None:
        raise ValueError("the VAE starter has no LoRA adapter to merge")

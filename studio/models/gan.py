"""Text-to-image with a conditional GAN: the backend of the ``starter-image-gan`` family.

A small generator and discriminator built from a config, each with its own bag-of-words embedding of the caption
(the word tokenizer of the diffusion starter, trained on the dataset's captions). The generator maps noise and the
caption to a picture in one pass, modulating each block by the caption (FiLM); the discriminator has spectral
normalisation on every layer and a projection head (Miyato & Koyama 2018) that scores how well a picture fits its
caption. Training (``studio.training.objectives.Adversarial``) alternates a hinge-loss discriminator step, with an
R1 penalty on real pictures, and a generator step; both see pictures through DiffAugment (Zhao et al. 2020). An
exponential moving average of the generator is what samples and saved models use.

One forward (``GanModule.forward(batch, part)``) serves every pass, so Accelerate wraps one module as for the other
families. torch is imported inside functions, except in this module's classes, built only when the family is used.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from studio.models.base import BackendConfig, Handle, Parts, Sample, pairs
from studio.models.common import prologue, write_marker
from studio.models.preference import datasets_for
from studio.models.registry import STARTER_IMAGE_GAN

STARTER = STARTER_IMAGE_GAN.starter
LATENT, EMBEDDING = 64, 64  # noise and caption-embedding sizes
WEIGHTS, SHAPE = "gan.safetensors", "gan_config.json"
# Parts of the one forward: what the objective asks for.
DISCRIMINATOR, GENERATOR, VALIDATION = "discriminator", "generator", "validation"
DIVERSITY_SEEDS = range(8)  # the fixed noise the mode-collapse monitor draws for a caption


# ----------------------------------------------------------------------------- augmentation

def diff_augment(images: torch.Tensor, policy: str) -> torch.Tensor:
    """DiffAugment (Zhao et al. 2020, the authors' ``DiffAugment_pytorch.py``): colour (brightness, saturation,
    contrast), translation by up to 1/8 of the side and a cutout of half the side, each drawn per picture and
    differentiable, so the generator learns through them."""
    for name in [p.strip() for p in policy.split(",") if p.strip()]:
        images = AUGMENTATIONS[name](images)
    return images


def _colour(x):
    n = x.shape[0]
    x = x + (torch.rand(n, 1, 1, 1, device=x.device) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device) + 0.5) + mean


def _translation(x, ratio: float = 0.125):
    n, _, h, w = x.shape
    dy, dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    shift_y = torch.randint(-dy, dy + 1, (n, 1, 1), device=x.device)
    shift_x = torch.randint(-dx, dx + 1, (n, 1, 1), device=x.device)
    batch, rows, cols = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                                       torch.arange(w, device=x.device), indexing="ij")
    rows = torch.clamp(rows + shift_y + 1, 0, h + 1)
    cols = torch.clamp(cols + shift_x + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1).contiguous()[batch, rows, cols].permute(0, 3, 1, 2)


def _cutout(x, ratio: float = 0.5):
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    off_y = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    off_x = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    batch, rows, cols = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                                       torch.arange(cw, device=x.device), indexing="ij")
    rows = torch.clamp(rows + off_y - ch // 2, 0, h - 1)
    cols = torch.clamp(cols + off_x - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[batch, rows, cols] = 0
    return x * mask.unsqueeze(1)


AUGMENTATIONS: dict[str, Callable] = {"color": _colour, "translation": _translation, "cutout": _cutout}


def augment_problem(policy: str) -> str | None:
    unknown = [p.strip() for p in policy.split(",") if p.strip() and p.strip() not in AUGMENTATIONS]
    return (f"augment: unknown DiffAugment policy {', '.join(unknown)} (use {', '.join(AUGMENTATIONS)})"
            if unknown else None)


# ----------------------------------------------------------------------------- the networks

class CaptionEmbedding(nn.Module):
    """The mean of the caption's word embeddings (padding left out)."""

    def __init__(self, vocabulary: int, pad_id: int):
        super().__init__()
        self.embed = nn.Embedding(vocabulary, EMBEDDING, padding_idx=pad_id)
        self.pad_id = pad_id

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep = (ids != self.pad_id).unsqueeze(-1).float()
        return (self.embed(ids) * keep).sum(1) / keep.sum(1).clamp(min=1)


class UpBlock(nn.Module):
    """Doubles the size; the caption scales and shifts its features (FiLM)."""

    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.conv = nn.Conv2d(inputs, outputs, 3, padding=1)
        self.film = nn.Linear(EMBEDDING, 2 * outputs)

    def forward(self, x, caption):
        x = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        scale, shift = self.film(caption)[:, :, None, None].chunk(2, dim=1)
        return F.leaky_relu(x * (1 + scale) + shift, 0.2)


class Generator(nn.Module):
    def __init__(self, resolution: int, vocabulary: int, pad_id: int, width: int = 64):
        super().__init__()
        self.caption = CaptionEmbedding(vocabulary, pad_id)
        self.width = width
        self.start = nn.Linear(LATENT + EMBEDDING, width * 16)
        channels = [max(width >> i, 16) for i in range(int(math.log2(resolution // 4)) + 1)]
        self.blocks = nn.ModuleList(UpBlock(a, b) for a, b in zip(channels, channels[1:]))
        self.to_rgb = nn.Conv2d(channels[-1], 3, 3, padding=1)

    def forward(self, noise: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        caption = self.caption(ids)
        x = F.leaky_relu(self.start(torch.cat([noise, caption], 1)), 0.2).view(-1, self.width, 4, 4)
        for block in self.blocks:
            x = block(x, caption)
        return torch.tanh(self.to_rgb(x))


class Discriminator(nn.Module):
    """Strided convolutions down to 4x4, every layer spectrally normalised; the score is a linear read-out plus the
    projection of the caption's embedding onto the pooled features."""

    def __init__(self, resolution: int, vocabulary: int, pad_id: int, width: int = 32):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.caption = CaptionEmbedding(vocabulary, pad_id)
        channels = [3] + [min(width << i, 256) for i in range(int(math.log2(resolution // 4)))]
        self.convs = nn.ModuleList(sn(nn.Conv2d(a, b, 4, stride=2, padding=1)) for a, b in zip(channels, channels[1:]))
        self.last = sn(nn.Conv2d(channels[-1], channels[-1], 3, padding=1))
        self.score = sn(nn.Linear(channels[-1], 1))
        self.project = sn(nn.Linear(EMBEDDING, channels[-1]))

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        x = images
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        features = F.leaky_relu(self.last(x), 0.2).sum(dim=[2, 3])
        return self.score(features).squeeze(1) + (self.project(self.caption(ids)) * features).sum(1)


class GanModule(nn.Module):
    """The generator, its moving average and the discriminator; ``forward(batch, part)`` is each pass the
    objective takes (``DISCRIMINATOR``, ``GENERATOR``, ``VALIDATION``), returning a dict with ``loss``."""

    def __init__(self, shape: dict, options):
        super().__init__()
        self.shape = shape
        self.generator = Generator(shape["resolution"], shape["vocabulary"], shape["pad_id"])
        self.discriminator = Discriminator(shape["resolution"], shape["vocabulary"], shape["pad_id"])
        self.average = Generator(shape["resolution"], shape["vocabulary"], shape["pad_id"])
        self.average.load_state_dict(self.generator.state_dict())
        self.average.requires_grad_(False)
        self.register_buffer("averaged_updates", torch.zeros((), dtype=torch.long))
        self.options = options
        self._settle_spectral_norms()

    @torch.no_grad()
    def _settle_spectral_norms(self, iterations: int = 20) -> None:
        """Spectral normalisation estimates each layer's largest singular value by one power iteration per training
        forward, from a random start: an untrained discriminator judged before that (the first validation) scores
        in the millions. A few passes on noise settle the estimates (the weights do not change)."""
        resolution = self.shape["resolution"]
        ids = torch.full((2, 1), self.shape["pad_id"], dtype=torch.long)
        for _ in range(iterations):
            self.discriminator(torch.zeros(2, 3, resolution, resolution).uniform_(-1, 1), ids)

    @property
    def device(self):
        return next(self.parameters()).device

    def noise(self, count: int) -> torch.Tensor:
        return torch.randn(count, LATENT, device=self.device)

    def judge(self, images, ids):
        return self.discriminator(diff_augment(images, self.options.augment), ids)

    def forward(self, batch: dict, part: str = GENERATOR) -> dict:
        real, ids = batch["pixel_values"], batch["input_ids"]
        if part == GENERATOR:
            return {"loss": -self.judge(self.generator(self.noise(len(ids)), ids), ids).mean()}
        with torch.no_grad():
            fake = self.generator(self.noise(len(ids)), ids)
        penalised = part == DISCRIMINATOR and self.options.r1_gamma > 0
        real = real.detach().requires_grad_(penalised)
        on_real, on_fake = self.judge(real, ids), self.judge(fake, ids)
        loss = F.relu(1 - on_real).mean() + F.relu(1 + on_fake).mean()  # hinge loss
        out = {"real": on_real.detach().mean(), "fake": on_fake.detach().mean(), "hinge": loss.detach()}
        if penalised:  # R1: the squared gradient of the score on real pictures
            gradient, = torch.autograd.grad(on_real.sum(), real, create_graph=True)
            loss = loss + self.options.r1_gamma / 2 * gradient.pow(2).sum(dim=[1, 2, 3]).mean()
        if part == VALIDATION:
            out["diversity"] = self.diversity(ids[:1])
        return {"loss": loss, **out}

    @torch.no_grad()
    def update_average(self) -> None:
        """One step of the generator's moving average, ramped up as the loop's EMA is ((1 + n) / (10 + n))."""
        updates = float(self.averaged_updates)
        decay = min(self.options.generator_ema, (1 + updates) / (10 + updates))
        for average, trained in zip(self.average.parameters(), self.generator.parameters()):
            average.lerp_(trained.detach(), 1 - decay)
        self.averaged_updates += 1

    @torch.no_grad()
    def diversity(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean pairwise RMS distance between the averaged generator's pictures of one caption over fixed seeds: near
        0 when the generator has collapsed to one picture per caption."""
        images = sample_pictures(self, ids.expand(len(DIVERSITY_SEEDS), -1), list(DIVERSITY_SEEDS))
        return mean_pairwise_distance(images)


def mean_pairwise_distance(images: torch.Tensor) -> torch.Tensor:
    """The mean RMS distance over every pair of ``images`` (N, C, H, W) in [-1, 1]."""
    flat = images.flatten(1).float()
    distances = torch.cdist(flat, flat) / math.sqrt(flat.shape[1])
    count = len(flat)
    return distances.sum() / max(count * (count - 1), 1)


@torch.no_grad()
def sample_pictures(module: GanModule, ids: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """The averaged generator's pictures (N, 3, H, W) in [-1, 1]; each seed's noise drawn on the CPU, so the same seed
    gives the same picture on any device and in any batch."""
    noise = torch.stack([torch.randn(LATENT, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    generator = module.average if module.options.generator_ema > 0 else module.generator
    return generator(noise.to(module.device), ids.to(module.device)).float().clamp(-1, 1).cpu()


# ----------------------------------------------------------------------------- the backend

@dataclass(kw_only=True)
class GanParts(Parts):
    tokenizer: Any
    resolution: int


class GanBackend:
    modality = "image"

    def load(self, model_ref: str, method: str, config: BackendConfig,
             train_rows: list[dict] | None = None) -> Handle:
        prologue(STARTER_IMAGE_GAN, model_ref, method, config)
        problem = augment_problem(config.gan.augment)
        if problem:
            raise ValueError(problem)
        if model_ref == STARTER:
            tokenizer, shape = new_shape(config, train_rows, "GAN")
        else:
            folder = Path(model_ref).expanduser()
            tokenizer, shape = _read_folder(folder)
        module = GanModule(shape, config.gan)
        handle = Handle(modality=self.modality, model_ref=model_ref, method=method, module=module,
                        parts=GanParts(family=STARTER_IMAGE_GAN.name, starter=True, tokenizer=tokenizer,
                                       resolution=shape["resolution"]))
        if model_ref != STARTER:
            self.load_weights(handle, Path(model_ref).expanduser())
        return handle

    def datasets(self, handle: Handle, rows: dict[str, list[dict]], root: Path, config) -> dict[str, Any]:
        """The image starter's captioned pictures, square at the resolution, with the run's image augmentation
        (``image_augmentation``) on the training split; DiffAugment comes on top, inside the step."""
        return captioned_pictures(handle, rows, root, config)

    def collate(self, handle: Handle, config) -> Callable[[list], dict]:
        from studio.models.diffusion import collate_images

        return collate_images

    def generate(self, handle: Handle, prompts: list[str], seeds: list[int], settings: dict,
                 out_dir: Path) -> list[Sample]:
        """One pass of the averaged generator per picture; no settings (a GAN has no steps or guidance)."""
        from studio.models.diffusion import tokenize
        from studio.models.image import write_pictures

        chosen = pairs(prompts, seeds)
        started = time.perf_counter()
        module = handle.module
        was_training = module.training
        module.eval()
        try:
            images = sample_pictures(module, tokenize(handle.parts.tokenizer, [p for p, _ in chosen]),
                                     [s for _, s in chosen])
        finally:
            module.train(was_training)
        return write_pictures(chosen, images, out_dir, (time.perf_counter() - started) / max(len(chosen), 1))

    def save(self, handle: Handle, folder: Path) -> None:
        """Both networks and the averaged generator (``gan.safetensors``), their shape, the tokenizer and the
        marker: a folder this backend loads to generate or to train further (method 'full')."""
        save_networks(handle, folder, WEIGHTS, SHAPE)

    def load_weights(self, handle: Handle, folder: Path) -> None:
        load_networks(handle, folder, WEIGHTS, "GAN")

    def lora_module(self, handle: Handle):
        raise ValueError("the GAN starter trains without LoRA (methods scratch and full)")

    def write_merged(self, base_ref: str, adapter: Path, config, out: Path, max_shard_bytes: int) -> None:
        raise ValueError("the GAN starter has no LoRA adapter to merge")


def _read_folder(folder: Path):
    return read_folder(folder, SHAPE, "GAN")


# ----------------------------------------------------------------------------- what the one-pass starters share
# (the VAE starter's backend, ``studio.models.vae``, too): their data, and their folders' files

def new_shape(config, train_rows: list[dict] | None, kind: str) -> tuple[Any, dict]:
    """(tokenizer, shape) of a starter built anew: the word tokenizer of the training captions, and square pictures
    at the run's resolution, refused unless a power of two from 8 (each block doubles the side from 4)."""
    from studio.models.diffusion import word_tokenizer

    resolution = config.image.resolution
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"resolution: the {kind} starter draws squares of a power of two from 8 (got {resolution})")
    tokenizer = word_tokenizer([row.get("caption") or "" for row in train_rows or []])
    return tokenizer, {"resolution": resolution, "vocabulary": len(tokenizer), "pad_id": tokenizer.pad_token_id}


def captioned_pictures(handle: Handle, rows: dict[str, list[dict]], root: Path, config) -> dict[str, Any]:
    """The image starter's captioned pictures, square at the resolution, with the run's image augmentation
    (``image_augmentation``) on the training split."""
    from studio.models.image import _dataset_class

    size = (handle.parts.resolution, handle.parts.resolution)

    def make(given: list[dict], split: str):
        return _dataset_class()(given, root, handle.parts.tokenizer, [size] * len(given),
                                config.image_augmentation if split == "train" else None, seed=config.seed)

    return datasets_for(config.objective, rows, make)


def save_networks(handle: Handle, folder: Path, weights: str, shape: str) -> None:
    """The module's weights (``weights``, safetensors), its shape (``shape``, JSON), the tokenizer and the marker."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in handle.module.state_dict().items()}
    save_file(state, str(folder / weights), metadata={"format": "pt"})
    (folder / shape).write_text(json.dumps(handle.module.shape, indent=1))
    handle.parts.tokenizer.save_pretrained(str(folder / "tokenizer"))
    write_marker(handle, folder, resolution=handle.parts.resolution)


def load_networks(handle: Handle, folder: Path, weights: str, kind: str) -> None:
    from safetensors.torch import load_file

    path = Path(folder) / weights
    if not path.is_file():
        raise FileNotFoundError(f"no {kind} weights ({weights}) in {folder}")
    handle.module.load_state_dict(load_file(str(path)))


def read_folder(folder: Path, shape: str, kind: str):
    """(tokenizer, shape) of a saved starter's folder, refused when it is not one of ``kind``."""
    from transformers import AutoTokenizer

    if not (folder / shape).is_file():
        raise FileNotFoundError(f"{folder} is not a {kind} starter's model folder (no {shape})")
    return AutoTokenizer.from_pretrained(str(folder / "tokenizer")), json.loads((folder / shape).read_text())

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
from studio.models.common import COUNTERS_ADDED_LATER, prologue, write_marker
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


def _translation(x, ratio: float = 0.125, vertical: bool = True):
    n, _, h, w = x.shape
    dy, dx = int(h * ratio + 0.5) if vertical else 0, int(w * ratio + 0.5)
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


def _time_shift(x):
    """Translation along the width only: on a spectrogram that is time, so the pitch (the height) stays where the
    caption puts it."""
    return _translation(x, vertical=False)


AUGMENTATIONS: dict[str, Callable] = {"color": _colour, "translation": _translation, "time_shift": _time_shift,
                                      "cutout": _cutout}


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


def grid(resolution: int | tuple[int, int]) -> tuple[int, int, int]:
    """(height, width, doublings) of a picture: a square side, or (height, width) (a spectrogram's bins and frames).
    The generator doubles a small map ``doublings`` times up to the picture and the discriminator halves it back:
    down to 4 on the shorter side, at most as often as both sides divide by two."""
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    doublings = max(int(math.log2(max(min(height, width), 4) // 4)), 0)
    while doublings and (height % (1 << doublings) or width % (1 << doublings)):
        doublings -= 1
    return height, width, doublings


class Generator(nn.Module):
    """Noise and the caption to a picture of ``channels`` (3: RGB; 1: a spectrogram) and ``resolution`` (a square
    side, or (height, width))."""

    def __init__(self, resolution: int | tuple[int, int], vocabulary: int, pad_id: int, width: int = 64,
                 channels: int = 3):
        super().__init__()
        height, across, doublings = grid(resolution)
        self.caption = CaptionEmbedding(vocabulary, pad_id)
        self.width, self.start_size = width, (height >> doublings, across >> doublings)
        self.start = nn.Linear(LATENT + EMBEDDING, width * self.start_size[0] * self.start_size[1])
        channel_counts = [max(width >> i, 16) for i in range(doublings + 1)]
        self.blocks = nn.ModuleList(UpBlock(a, b) for a, b in zip(channel_counts, channel_counts[1:]))
        self.to_rgb = nn.Conv2d(channel_counts[-1], channels, 3, padding=1)

    def forward(self, noise: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        caption = self.caption(ids)
        x = F.leaky_relu(self.start(torch.cat([noise, caption], 1)), 0.2).view(-1, self.width, *self.start_size)
        for block in self.blocks:
            x = block(x, caption)
        return torch.tanh(self.to_rgb(x))


class Discriminator(nn.Module):
    """Strided convolutions down to the generator's first map size, every layer spectrally normalised; the score is a
    linear read-out plus the projection of the caption's embedding onto the pooled features. The features are summed
    over the whole map, or with ``keep_rows`` over each row only (a spectrogram's rows are its frequencies: where the
    energy is, is the pitch, which a sum over every place could not tell apart)."""

    def __init__(self, resolution: int | tuple[int, int], vocabulary: int, pad_id: int, width: int = 32,
                 channels: int = 3, keep_rows: bool = False):
        super().__init__()
        sn = nn.utils.spectral_norm
        height, _, doublings = grid(resolution)
        self.caption = CaptionEmbedding(vocabulary, pad_id)
        counts = [channels] + [min(width << i, 256) for i in range(doublings)]
        self.convs = nn.ModuleList(sn(nn.Conv2d(a, b, 4, stride=2, padding=1)) for a, b in zip(counts, counts[1:]))
        self.last = sn(nn.Conv2d(counts[-1], counts[-1], 3, padding=1))
        self.pooled = [2, 3] if not keep_rows else [3]
        features = counts[-1] * (height >> doublings if keep_rows else 1)
        self.score = sn(nn.Linear(features, 1))
        self.project = sn(nn.Linear(EMBEDDING, features))

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        x = images
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        features = F.leaky_relu(self.last(x), 0.2).sum(dim=self.pooled).flatten(1)
        return self.score(features).squeeze(1) + (self.project(self.caption(ids)) * features).sum(1)


def picture_shape(shape: dict) -> tuple[int, int, int]:
    """(channels, height, width) of a GAN's pictures from its saved shape: RGB squares of ``resolution`` (the image
    starter), or ``channels`` x ``height`` x ``width`` (the spectrogram starter)."""
    if "height" in shape:
        return shape.get("channels", 3), shape["height"], shape["width"]
    return 3, shape["resolution"], shape["resolution"]


class GanModule(nn.Module):
    """The generator, its moving average and the discriminator; ``forward(batch, part)`` is each pass the
    objective takes (``DISCRIMINATOR``, ``GENERATOR``, ``VALIDATION``), returning a dict with ``loss``."""

    def __init__(self, shape: dict, options, seed: int = 0):
        super().__init__()
        self.shape = shape
        channels, height, width = picture_shape(shape)
        networks = {"resolution": (height, width), "vocabulary": shape["vocabulary"], "pad_id": shape["pad_id"],
                    "channels": channels}
        self.generator = Generator(**networks)
        self.discriminator = Discriminator(**networks, keep_rows=shape.get("keep_rows", False))
        self.average = Generator(**networks)  # built in this order, so a seed starts the networks as it always has
        self.average.load_state_dict(self.generator.state_dict())
        self.average.requires_grad_(False)
        self.register_buffer("averaged_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("noise_draws", torch.zeros((), dtype=torch.long))  # training passes that drew noise
        self.seed = seed
        self.options = options
        self._settle_spectral_norms()

    @torch.no_grad()
    def _settle_spectral_norms(self, iterations: int = 20) -> None:
        """Spectral normalisation estimates each layer's largest singular value by one power iteration per training
        forward, from a random start: an untrained discriminator judged before that (the first validation) scores
        in the millions. A few passes on noise settle the estimates (the weights do not change)."""
        ids = torch.full((2, 1), self.shape["pad_id"], dtype=torch.long)
        for _ in range(iterations):
            self.discriminator(torch.zeros(2, *picture_shape(self.shape)).uniform_(-1, 1), ids)

    @property
    def device(self):
        return next(self.parameters()).device

    def noise(self, count: int) -> torch.Tensor:
        return training_noise(self, count)

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


def noise_of(seeds: list[int]) -> torch.Tensor:
    """(len(seeds), LATENT) standard normal noise, each row drawn on the CPU from its own seed (the same on any device
    and in any batch)."""
    return torch.stack([torch.randn(LATENT, generator=torch.Generator().manual_seed(int(s) % 2 ** 63))
                        for s in seeds])


def training_noise(module: nn.Module, count: int) -> torch.Tensor:
    """(count, LATENT) noise for a training pass over ``count`` items of ``module`` (which has ``seed`` and a
    ``noise_draws`` buffer, saved with its weights so a resumed run goes on drawing): each item's drawn from the
    run's seed, the pass's number and the item's place in the whole step's batch (this process's share of it comes
    after the lower ranks'), so one process with a batch of 8 draws what two with 4 each draw between them."""
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    draw = int(module.noise_draws)
    module.noise_draws += 1
    seeds = [(module.seed * 1_000_003 + draw) * 1_000_003 + rank * count + item for item in range(count)]
    return noise_of(seeds).to(module.device)


@torch.no_grad()
def sample_pictures(module: GanModule, ids: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """The averaged generator's pictures (N, C, H, W) in [-1, 1]; each seed's noise drawn on the CPU, so the same seed
    gives the same picture on any device and in any batch."""
    noise = noise_of(seeds)
    generator = module.average if module.options.generator_ema > 0 else module.generator
    return generator(noise.to(module.device), ids.to(module.device)).float().clamp(-1, 1).cpu()


# ----------------------------------------------------------------------------- the backend

@dataclass(kw_only=True)
class GanParts(Parts):
    tokenizer: Any
    resolution: int

    def marker_fields(self) -> dict:
        return {"resolution": self.resolution}


class GanBackend:
    """The ``starter-image-gan`` family. A subclass serves another modality's GAN (``studio.models.audio_gan``): its
    ``family``, how its starter is built (``new_starter``), its ``parts``, datasets and how samples are
    written (``write_samples``)."""
    modality = "image"
    family = STARTER_IMAGE_GAN

    def load(self, model_ref: str, method: str, config: BackendConfig,
             train_rows: list[dict] | None = None) -> Handle:
        prologue(self.family, model_ref, method, config)
        problem = augment_problem(config.gan.augment)
        if problem:
            raise ValueError(problem)
        if model_ref == self.family.starter:
            tokenizer, shape = self.new_starter(config, train_rows)
        else:
            folder = Path(model_ref).expanduser()
            tokenizer, shape = read_folder(folder, SHAPE, "GAN")
        module = GanModule(shape, config.gan, seed=config.seed)
        handle = Handle(modality=self.modality, model_ref=model_ref, method=method, module=module,
                        parts=self.parts(tokenizer, shape))
        if model_ref != self.family.starter:
            self.load_weights(handle, Path(model_ref).expanduser())
        return handle

    def new_starter(self, config: BackendConfig, train_rows: list[dict] | None) -> tuple[Any, dict]:
        """(tokenizer, shape) of the starter built anew: squares of ``image.resolution`` (``new_shape``)."""
        return new_shape(config, train_rows, "GAN")

    def parts(self, tokenizer, shape: dict) -> Parts:
        return GanParts(family=self.family.name, starter=True, tokenizer=tokenizer, resolution=shape["resolution"])

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

        chosen = pairs(prompts, seeds)
        started = time.perf_counter()
        with evaluating(handle.module):
            images = sample_pictures(handle.module, tokenize(handle.parts.tokenizer, [p for p, _ in chosen]),
                                     [s for _, s in chosen])
        return self.write_samples(handle, chosen, images, settings, out_dir, started)

    def write_samples(self, handle: Handle, chosen: list[tuple[str, int]], images: torch.Tensor, settings: dict,
                      out_dir: Path, started: float) -> list[Sample]:
        """PNG files of the pictures, each ``Sample`` with its share of the time since ``started``."""
        return picture_samples(chosen, images, out_dir, started)

    def save(self, handle: Handle, folder: Path) -> None:
        """Both networks and the averaged generator (``gan.safetensors``), their shape, the tokenizer and the
        marker: a folder this backend loads to generate or to train further (method 'full')."""
        save_networks(handle, folder, WEIGHTS, SHAPE)

    def load_weights(self, handle: Handle, folder: Path) -> None:
        load_networks(handle, folder, WEIGHTS, "GAN")

    def lora_module(self, handle: Handle):
        raise ValueError(f"the {self.family.name} starter trains without LoRA (methods scratch and full)")

    def write_merged(self, base_ref: str, adapter: Path, config, out: Path, max_shard_bytes: int) -> None:
        raise ValueError(f"the {self.family.name} starter has no LoRA adapter to merge")


# ----------------------------------------------------------------------------- what the one-pass starters share
# (the VAE starter's backend, ``studio.models.vae``, too): their data, and their folders' files

def new_shape(config, train_rows: list[dict] | None, kind: str) -> tuple[Any, dict]:
    """(tokenizer, shape) of a starter built anew: the word tokenizer of the training captions, and square pictures
    at the run's resolution, refused unless a power of two from 8 (each block doubles the side from 4)."""
    resolution = config.image.resolution
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"resolution: the {kind} starter draws squares of a power of two from 8 (got {resolution})")
    return captioned_shape(train_rows, {"resolution": resolution})


def captioned_shape(train_rows: list[dict] | None, size: dict) -> tuple[Any, dict]:
    """(tokenizer, shape): the word tokenizer of the training captions, and ``size`` with its vocabulary."""
    from studio.models.diffusion import word_tokenizer

    tokenizer = word_tokenizer([row.get("caption") or "" for row in train_rows or []])
    return tokenizer, {**size, "vocabulary": len(tokenizer), "pad_id": tokenizer.pad_token_id}


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
    write_marker(handle, folder, **handle.parts.marker_fields())


def load_networks(handle: Handle, folder: Path, weights: str, kind: str) -> None:
    from safetensors.torch import load_file

    path = Path(folder) / weights
    if not path.is_file():
        raise FileNotFoundError(f"no {kind} weights ({weights}) in {folder}")
    missing, unexpected = handle.module.load_state_dict(load_file(str(path)), strict=False)
    if unexpected or set(missing) - COUNTERS_ADDED_LATER:  # a GAN saved before it counted its noise draws: from 0
        raise ValueError(f"{path} does not fit this {kind}: missing {missing}, unexpected {unexpected}")


def read_folder(folder: Path, shape: str, kind: str):
    """(tokenizer, shape) of a saved starter's folder, refused when it is not one of ``kind``."""
    from transformers import AutoTokenizer

    if not (folder / shape).is_file():
        raise FileNotFoundError(f"{folder} is not a {kind} starter's model folder (no {shape})")
    return AutoTokenizer.from_pretrained(str(folder / "tokenizer")), json.loads((folder / shape).read_text())


class evaluating:
    """``module`` in eval mode inside the ``with`` block, then as it was (sampling from a model that may be
    training)."""

    def __init__(self, module):
        self.module, self.was_training = module, module.training

    def __enter__(self):
        self.module.eval()

    def __exit__(self, *_exc):
        self.module.train(self.was_training)


def picture_samples(chosen: list[tuple[str, int]], images, out_dir: Path, started: float) -> list[Sample]:
    """PNG files of ``images`` (one per (prompt, seed) of ``chosen``), each ``Sample`` with its share of the time since
    ``started``."""
    from studio.models.image import write_pictures

    return write_pictures(chosen, images, out_dir, (time.perf_counter() - started) / max(len(chosen), 1))

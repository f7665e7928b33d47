"""Text-to-image: the starter (a small pixel-space diffusion model trained from scratch) and
Stable-Diffusion-class pipelines from the Hub or a local folder (LoRA, full fine-tuning, or a UNet from
scratch): the backend of the ``starter-image`` and ``sd-pipeline`` families. The diffusion itself lives in
``studio.models.diffusion``; this module adds images.

torch, diffusers, transformers and peft are imported inside functions.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from studio.data.augment import EpochDraws, ImageAugmentation, augment_image, flipped
from studio.data.items import Item
from studio.data.steps.image import open_rgb
from studio.models.base import BackendConfig, Handle, Parts, Sample, pairs
from studio.models.common import BucketBatches, cache_file, prologue, to_training_device, weights_fingerprint, \
    write_cached
from studio.models.preference import collate_for, datasets_for
from studio.models.registry import STARTER_IMAGE, family_for

STARTER = STARTER_IMAGE.starter


def starter_unet(resolution: int, channels: int = 3, cross_attention_dim: int = 64):
    """A small pixel-space UNet (about 1.1M parameters): three resolutions, cross-attention at the two
    smaller ones, and the pooled caption added to the timestep embedding (``addition_embed_type='text'``),
    which lets global properties such as colour follow the caption after a few hundred steps."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=resolution, in_channels=channels, out_channels=channels, layers_per_block=1,
        block_out_channels=(16, 32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=8,
        addition_embed_type="text", addition_embed_type_num_heads=8)


def vae_scale_factor(block_out_channels) -> int:
    """How many pixels one latent stands for along each side, as diffusers' pipelines compute it: 8 for SD-class
    VAEs."""
    return 2 ** (len(block_out_channels) - 1)


def size_multiple(model_ref: str) -> int | None:
    """What a generated image's width and height must be a multiple of for ``model_ref`` (a model folder or a Hub
    id), read from its VAE's config without loading anything: the VAE's scale factor (8 for SD-class pipelines), 1
    for pixel-space models (the starters: their UNet takes any size). None when only a download would tell (a Hub
    model that is not in the cache yet)."""
    import json

    folder = Path(model_ref).expanduser()
    if model_ref == STARTER:
        return 1
    if folder.is_dir():
        config = folder / "vae" / "config.json"
        if not config.is_file():
            return 1
    else:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model_ref, "vae/config.json")
        if not isinstance(found, str):
            return None
        config = Path(found)
    try:
        return vae_scale_factor(json.loads(config.read_text())["block_out_channels"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the model's own loading says what is wrong with it


def bucket_sizes(resolution: int, step: int) -> list[tuple[int, int]]:
    """The buckets of aspect-ratio bucketing, as kohya_ss makes them: (width, height) pairs of at most
    ``resolution``² pixels, each side a multiple of ``step`` between half and twice ``resolution``."""
    low = max(step, resolution // 2 // step * step)
    high = max(low, resolution * 2 // step * step)
    sizes = set()
    for width in range(low, high + 1, step):
        height = min(high, resolution * resolution // width // step * step)
        if height >= low:
            sizes |= {(width, height), (height, width)}
    return sorted(sizes) or [(low, low)]


def bucket_for(width: int, height: int, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose shape is nearest a ``width`` x ``height`` picture's (the larger one on a tie): the least
    of the picture is cropped."""
    import math

    shape = math.log(width / height)
    return min(sizes, key=lambda size: (abs(math.log(size[0] / size[1]) - shape), -size[0] * size[1]))


def bucket_step(module) -> int:
    """What a bucket's sides must be multiples of for ``module`` (a DiffusionModule): the VAE's scale times each
    halving in the UNet (64 pixels for SD-class pipelines, 4 for the starter)."""
    return module.vae_scale() * 2 ** (len(module.unet.config.block_out_channels) - 1)


def load_image(path: Path, size: int | tuple[int, int], augmentation: ImageAugmentation | None = None,
               draws=None):
    """RGB, scaled to cover ``size`` (width, height; one number: a square) and centre-cropped, or augmented as
    ``augmentation`` and ``draws`` (``studio.data.augment.augment_image``) say; returned as a (3, H, W) float tensor
    in [-1, 1]."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    image = open_rgb(Item(source=str(path), path=Path(path)))
    size = size if isinstance(size, tuple) else (size, size)
    if augmentation is not None and augmentation.active():
        image = augment_image(image, size, augmentation, draws)
    else:
        image = ImageOps.fit(image, size, Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def picture_size(row: dict, path: Path) -> tuple[int, int]:
    """(width, height) of a manifest row's picture: as the import recorded it, else from the file's header."""
    if row.get("width") and row.get("height"):
        return int(row["width"]), int(row["height"])
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def _dataset_class():
    from torch.utils.data import Dataset

    class CaptionedImages(EpochDraws, Dataset):
        """Manifest rows → {pixel_values, input_ids}; captions are tokenized once, images read per item. Each item
        has its ``sizes`` (width, height): the square of the resolution, or its bucket when bucketing. A training
        set's pictures are augmented (``augmentation``) with the draws of the run's ``seed``, the epoch and the item
        (``EpochDraws``). Once ``cache`` has run, items are read from the cache instead
        (``studio.models.diffusion.CACHED_POSTERIOR``; only mirroring goes with a cache, ``TrainConfig`` sees to
        it)."""

        def __init__(self, rows: list[dict], root: Path, tokenizer, sizes: list[tuple[int, int]],
                     augmentation: ImageAugmentation | None = None, bucketed: bool = False, seed: int = 0):
            from studio.models.diffusion import tokenize

            self.paths = [Path(root) / row["file"] for row in rows]
            self.input_ids = tokenize(tokenizer, [row.get("caption") or "" for row in rows]) if rows else None
            self.sizes, self.augmentation, self.bucketed, self.draw_seed = sizes, augmentation, bucketed, seed
            self.random_flip = augmentation is not None and augmentation.random_flip
            self.cached: list[Path] | None = None

        def __len__(self) -> int:
            return len(self.paths)

        def batches(self, batch_size: int, seed: int, shuffle: bool) -> BucketBatches | None:
            """The loop's batches (``training.loop.make_loader``): one bucket each when bucketing."""
            return BucketBatches(self.sizes, batch_size, seed, shuffle) if self.bucketed else None

        def __getitem__(self, index: int) -> dict:
            draws = self.draws(index)
            if self.cached is not None:
                return read_cached(self.cached[index], self.random_flip and flipped(self.augmentation, draws))
            return {"pixel_values": load_image(self.paths[index], self.sizes[index], self.augmentation, draws),
                    "input_ids": self.input_ids[index]}

        def cache(self, module, folder: Path, use_cpu: bool = True) -> int:
            """Encodes each item once into ``folder`` (kept across runs: a file is named by what it was made of);
            returns how many were encoded now. Unless ``use_cpu``, on the GPU when there is one."""
            self.cached, made = cache_items(self, module, Path(folder), use_cpu)
            return made

    return CaptionedImages


# ----------------------------------------------------------------------------- the latent cache

def encoders_fingerprint(module) -> str:
    """A digest of the weights a cache depends on: the VAE's, and the text encoder's when it is frozen (a trained
    one's features are not cached)."""
    parts = [module.vae] if module.vae is not None else []
    if not any(p.requires_grad for p in module.text_encoder.parameters()):
        parts.append(module.text_encoder)
    return weights_fingerprint(parts)


def cache_items(dataset, module, folder: Path, use_cpu: bool = True) -> tuple[list[Path], int]:
    """One safetensors file per item in ``folder``: its posterior (and its mirror image's, when flipping) and, for a
    frozen text encoder, its caption's features. Files already there are reused; a new one is written under a
    temporary name and renamed, so a run stopped half-way leaves no broken file. The global random state is left
    as it was: a cached run draws the same noise as an uncached one."""
    import torch

    to_training_device(module, use_cpu)
    texts = not any(p.requires_grad for p in module.text_encoder.parameters())
    fingerprint = encoders_fingerprint(module)
    folder.mkdir(parents=True, exist_ok=True)
    files, made = [], 0
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        if texts:
            module.empty_features = module.encode_text(module.empty_ids[None])[0]
        for index, path in enumerate(dataset.paths):
            key = [fingerprint, str(path.resolve()), path.stat().st_size, dataset.sizes[index], dataset.random_flip,
                   dataset.input_ids[index].tolist(), texts]
            target = cache_file(folder, key)
            files.append(target)
            if target.is_file():
                continue
            pixels = load_image(path, dataset.sizes[index])[None]
            tensors = {"posterior": module.posterior(pixels.to(module.device))[0]}
            if dataset.random_flip:
                tensors["posterior_flipped"] = module.posterior(pixels.flip(-1).to(module.device))[0]
            tensors["input_ids"] = dataset.input_ids[index]
            if texts:
                tensors["text_features"] = module.encode_text(dataset.input_ids[index][None])[0]
            write_cached(target, tensors)
            made += 1
    return files, made


def read_cached(file: Path, flip: bool) -> dict:
    """A cached item as the module takes it (``DiffusionModule.latents_of`` / ``text_of``)."""
    from safetensors.torch import load_file

    from studio.models.diffusion import CACHED_POSTERIOR, TEXT_FEATURES

    tensors = load_file(str(file))
    item = {CACHED_POSTERIOR: tensors["posterior_flipped" if flip else "posterior"]}
    if "text_features" in tensors:
        item[TEXT_FEATURES] = tensors["text_features"]
    else:
        item["input_ids"] = tensors["input_ids"]
    return item


@dataclass(kw_only=True)
class ImageParts(Parts):
    tokenizer: Any   # the caption tokenizer (the text encoder, UNet, VAE and scheduler are in ``handle.module``)
    resolution: int  # the training resolution: what generation draws by default

    def marker_fields(self) -> dict:
        return {"resolution": self.resolution}


class DiffusionBackend:
    """What the image and spectrogram backends share: both train ``studio.models.diffusion``'s module, so they
    collate, save, load weights and merge a LoRA alike."""

    def collate(self, handle: Handle, config) -> Callable[[list], dict]:
        from studio.models.diffusion import collate_images

        return collate_for(collate_images)  # pairs for Diffusion-DPO; no thumbs (kto) for diffusion

    def save(self, handle: Handle, folder: Path) -> None:
        from studio.models.diffusion import save_model

        save_model(handle, folder)

    def load_weights(self, handle: Handle, folder: Path) -> None:
        from studio.models.diffusion import load_model_weights

        load_model_weights(handle, folder)

    def lora_module(self, handle: Handle):
        return handle.module.unet

    def write_merged(self, base_ref: str, adapter: Path, config, out: Path, max_shard_bytes: int) -> None:
        """The base loaded with the run's LoRA layout, the adapter loaded into it and fused into the UNet's
        weights, the LoRA layers removed. A base with a VAE becomes a StableDiffusionPipeline folder; a
        starter's (no VAE) the studio's own folder."""
        from studio.models.diffusion import save_pipeline

        handle = self.load(str(base_ref), "lora", config)
        self.load_weights(handle, adapter)
        handle.module.unet.fuse_lora(lora_scale=1.0)
        handle.module.unet.unload_lora()
        merged = dataclasses.replace(handle, method="full")
        if handle.module.vae is None:
            self.save(merged, out)
        else:
            save_pipeline(merged, out, max_shard_bytes)


class ImageBackend(DiffusionBackend):
    modality = "image"

    # -- loading

    def load(self, model_ref: str, method: str, config: BackendConfig,
             train_rows: list[dict] | None = None) -> Handle:
        from studio.models import diffusion

        family = family_for(model_ref, self.modality)
        prologue(family, model_ref, method, config)
        options = config.image
        if model_ref == STARTER:
            tokenizer = diffusion.word_tokenizer([row.get("caption") or "" for row in train_rows or []])
            text_encoder = diffusion.starter_text_encoder(tokenizer)
            unet = starter_unet(options.resolution, 3, text_encoder.config.hidden_size)
            scheduler, vae, starter = diffusion.starter_scheduler(), None, True
        else:
            pipeline = diffusion.load_pipeline_parts(model_ref, method)
            tokenizer, text_encoder, unet = pipeline["tokenizer"], pipeline["text_encoder"], pipeline["unet"]
            scheduler, vae, starter = pipeline["scheduler"], pipeline["vae"], False
        module = diffusion.trainable_module(family, unet, text_encoder, scheduler, tokenizer, vae, method, config,
                                            train_text_encoder=starter)
        parts = ImageParts(family=family.name, starter=starter, tokenizer=tokenizer, resolution=options.resolution)
        return Handle(modality=self.modality, model_ref=model_ref, method=method, module=module, parts=parts)

    # -- data

    def datasets(self, handle: Handle, rows: dict[str, list[dict]], root: Path, config) -> dict[str, Any]:
        """Training rows as many times as their folder repeats them; examples bucketed by shape when
        ``aspect_buckets`` (pairs stay square: both pictures of a pair go in one
        batch); encoded once into ``root``'s ``.cache/latents`` when ``cache_latents``."""
        options = config.image
        bucketed = options.aspect_buckets and config.objective == "sft"
        sizes = bucket_sizes(options.resolution, bucket_step(handle.module)) if bucketed else None

        def make(given: list[dict], split: str):
            if split == "train":  # a kohya_ss folder's repeats (studio.data.read_media.kohya_folder)
                given = [row for row in given for _ in range(int(row.get("repeats") or 1))]
            shapes = [bucket_for(*picture_size(row, Path(root) / row["file"]), sizes) for row in given] if bucketed \
                else [(options.resolution, options.resolution)] * len(given)
            made = _dataset_class()(given, root, handle.parts.tokenizer, shapes,
                                    config.image_augmentation if split == "train" else None, bucketed, config.seed)
            if options.cache_latents and given:
                made.cache(handle.module, Path(root) / ".cache" / "latents", config.use_cpu)
            return made

        return datasets_for(config.objective, rows, make)

    # -- generation

    def generate(self, handle: Handle, prompts: list[str], seeds: list[int], settings: dict,
                 out_dir: Path) -> list[Sample]:
        """Settings: steps (30; 8 for flow matching), guidance_scale (2.0 for starters, 7.5 for pretrained models), width/height (the training resolution),
        negative_prompt (''), scheduler ('ddim', or 'model' for the model's own)."""
        from studio.models.diffusion import guidance_scale, sample, sampling_steps

        settings = settings or {}
        resolution = handle.parts.resolution or 32
        chosen = pairs(prompts, seeds)
        started = time.perf_counter()
        images = sample(handle.module, handle.parts.tokenizer, [p for p, _ in chosen], [s for _, s in chosen],
                        height=int(settings.get("height") or resolution), width=int(settings.get("width") or resolution),
                        steps=sampling_steps(settings, handle.module), guidance_scale=guidance_scale(settings, handle.parts.starter),
                        negative_prompt=str(settings.get("negative_prompt") or ""),
                        scheduler=str(settings.get("scheduler", "ddim")))
        return write_pictures(chosen, images, out_dir, (time.perf_counter() - started) / max(len(chosen), 1))


def write_pictures(chosen: list[tuple[str, int]], images, out_dir: Path, seconds: float) -> list[Sample]:
    """One PNG per (prompt, seed) under ``out_dir`` from ``images`` (N, 3, H, W) in [-1, 1], as ``Sample``s that each
    took ``seconds``."""
    from PIL import Image

    from studio.models.diffusion import to_uint8

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = []
    for number, ((prompt, seed), image) in enumerate(zip(chosen, images)):
        path = out_dir / f"{number:03d}_seed{seed}.png"
        Image.fromarray(to_uint8(image)).save(path)
        samples.append(Sample(prompt=prompt, seed=seed, path=path, seconds=seconds))
    return samples

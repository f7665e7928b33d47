"""What every model family's backend offers the training loop and the Generate tab.

The loop is written once and knows nothing of modalities: it asks a backend for a ``Handle`` whose
``module`` is a ``torch.nn.Module`` with ``forward(batch) -> scalar loss`` (so Accelerate/DDP wrap one
module whatever the modality), for the datasets and collate function, and for samples. Which backend serves
a model is its family's (``studio.models.registry``).

Backends import torch, transformers, diffusers and peft inside their functions, never at module import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from studio.data.augment import AudioAugmentation, ImageAugmentation
from studio.models.options import AudioOptions, DiffusionOptions, GanOptions, ImageOptions, LoraOptions, TextOptions, \
    VaeOptions

METHODS = ("lora", "full", "scratch")


class BackendConfig(Protocol):
    """What a backend reads of a run's training config (``studio.training.config.TrainConfig`` is one): the
    training package builds on the models, never the other way."""
    seed: int
    objective: str                   # sft | dpo | orpo | kto: which rows the datasets hold (models.preference)
    mixed_precision: str             # no | fp16 | bf16
    use_cpu: bool
    gradient_checkpointing: bool
    liger_kernels: bool              # text: liger-kernel's fused kernels (CUDA, Llama family)
    lora: LoraOptions
    text: TextOptions
    image: ImageOptions
    audio: AudioOptions
    diffusion: DiffusionOptions
    image_augmentation: ImageAugmentation  # training pictures, drawn per (seed, epoch, item): studio.data.augment
    audio_augmentation: AudioAugmentation
    gan: GanOptions
    vae: VaeOptions


@dataclass(kw_only=True)
class Parts:
    """What a handle holds beside ``module``. Each family's backend declares its own subclass (tokenizer,
    frozen encoders, ...); code outside ``studio.models`` asks the family's backend rather than reading them."""
    family: str = ""       # the name of the family that loaded the model (``registry.FAMILIES``)
    starter: bool = False  # it descends from a starter: generation uses the starters' defaults

    def __getitem__(self, name: str) -> Any:
        """``parts["tokenizer"]``: a declared part by name (an undeclared one is a KeyError)."""
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)


@dataclass
class Handle:
    """A loaded model, ready to train or generate."""
    modality: str
    model_ref: str           # Hub id, local folder, or a starter name
    method: str              # lora | full | scratch
    module: Any              # torch.nn.Module: forward(batch) -> scalar loss (per-example scores when asked:
    #                          models.preference.SCORE); holds every trainable weight
    parts: Parts = field(default_factory=Parts)

    @property
    def family(self):
        """The ``registry.Family`` that loaded this model (None for a backend outside the registry)."""
        from studio.models.registry import FAMILIES

        return FAMILIES.get(self.parts.family)

    def trainable_parameters(self) -> list:
        return [p for p in self.module.parameters() if p.requires_grad]

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameters."""
        params = list(self.module.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


@dataclass
class Sample:
    prompt: str
    seed: int
    text: str | None = None   # text modality
    path: Path | None = None  # image (.png) or audio (.wav) file written by generate
    seconds: float = 0.0


class Backend(Protocol):
    modality: str

    def load(self, model_ref: str, method: str, config: BackendConfig,
             train_rows: list[dict] | None = None) -> Handle:
        """Load (or, for starters with method 'scratch', build from a config) the model. ``train_rows`` are the
        training split's manifest rows: starters train their tokenizer on them."""

    def datasets(self, handle: Handle, rows: dict[str, list[dict]], root: Path,
                 config: BackendConfig) -> dict[str, Any]:
        """torch Datasets for 'train' and 'validation' from manifest rows; media files are relative to ``root``.
        A preference objective's are ``models.preference.datasets_for``'s, of the family's examples."""

    def collate(self, handle: Handle, config: BackendConfig) -> Callable[[list], dict]:
        """Turns a list of dataset items into the batch ``handle.module`` takes (``models.preference.collate_for``
        teaches it the preference items)."""

    def generate(self, handle: Handle, prompts: list[str], seeds: list[int], settings: dict,
                 out_dir: Path) -> list[Sample]:
        """One sample per (prompt, seed); media are written under ``out_dir``. Same seed → same output."""

    def save(self, handle: Handle, folder: Path) -> None:
        """Weights in safetensors: the adapter alone for LoRA, else the whole model (from_pretrained-loadable),
        with tokenizer/scheduler so the folder stands alone."""

    def load_weights(self, handle: Handle, folder: Path) -> None:
        """Load weights saved by ``save`` into ``handle`` (for resume and for Generate)."""


class FamilyBackend(Backend, Protocol):
    """What a registered family's backend adds for generation and export."""

    def lora_module(self, handle: Handle):
        """The module the LoRA layers live in (where the Generate cache adds and switches named adapters)."""

    def write_merged(self, base_ref: str, adapter: Path, config: BackendConfig, out: Path,
                     max_shard_bytes: int) -> None:
        """The base model with the LoRA adapter saved in ``adapter`` folded in, written into ``out`` as a model
        folder its library loads without the studio (a starter's: the studio's own folder)."""


def pairs(prompts: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """Prompt i goes with seed i; a single prompt or a single seed goes with every one of the other list."""
    prompts, seeds = list(prompts), list(seeds)
    if len(prompts) == len(seeds):
        return list(zip(prompts, seeds))
    if len(seeds) == 1:
        return [(p, seeds[0]) for p in prompts]
    if len(prompts) == 1:
        return [(prompts[0], s) for s in seeds]
    raise ValueError(f"{len(prompts)} prompts and {len(seeds)} seeds: give one seed per prompt, or one of either")

"""What every modality backend offers the training loop and the Generate tab.

The loop is written once and knows nothing of modalities: it asks a backend for a ``Handle`` whose
``module`` is a ``torch.nn.Module`` with ``forward(batch) -> scalar loss`` (so Accelerate/DDP wrap one
module whatever the modality), for the datasets and collate function, and for samples.

Backends import torch, transformers, diffusers and peft inside their functions, never at module import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

STARTERS = {"starter-text": "text", "starter-image": "image", "starter-audio": "audio"}
STARTER_SCRATCH_ONLY = ("starter models are trained from scratch; use method 'scratch', or fine-tune a finished "
                        "run's model folder")


@dataclass
class Handle:
    """A loaded model, ready to train or generate."""
    modality: str
    model_ref: str           # Hub id, local folder, or a starter name
    method: str              # lora | full | scratch
    module: Any              # torch.nn.Module: forward(batch) -> scalar loss; holds every trainable weight
    parts: dict = field(default_factory=dict)  # tokenizer, noise scheduler, frozen encoders, ...

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

    def load(self, model_ref: str, method: str, config, train_rows: list[dict] | None = None) -> Handle:
        """Load (or, for starters with method 'scratch', build from a config) the model. ``train_rows`` are the
        training split's manifest rows: starters train their tokenizer on them."""

    def datasets(self, handle: Handle, rows: dict[str, list[dict]], root: Path, config) -> dict[str, Any]:
        """torch Datasets for 'train' and 'validation' from manifest rows; media files are relative to ``root``."""

    def collate(self, handle: Handle, config) -> Callable[[list], dict]:
        """Turns a list of dataset items into the batch ``handle.module`` takes."""

    def generate(self, handle: Handle, prompts: list[str], seeds: list[int], settings: dict,
                 out_dir: Path) -> list[Sample]:
        """One sample per (prompt, seed); media are written under ``out_dir``. Same seed → same output."""

    def save(self, handle: Handle, folder: Path) -> None:
        """Weights in safetensors: the adapter alone for LoRA, else the whole model (from_pretrained-loadable),
        with tokenizer/scheduler so the folder stands alone."""

    def load_weights(self, handle: Handle, folder: Path) -> None:
        """Load weights saved by ``save`` into ``handle`` (for resume and for Generate)."""


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


def modality_of(model_ref: str) -> str | None:
    """The modality of a starter name, or None (the catalog or the folder decides)."""
    return STARTERS.get(model_ref)

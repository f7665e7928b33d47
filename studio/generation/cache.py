"""The Generate tab's model cache: loaded models kept between requests, within a memory bound.

A LoRA checkpoint is not a model of its own: its run's base model is loaded once and each adapter is added
to it as a named PEFT adapter, then switched on for its variant (``set_adapter``) or all switched off for the
base. Full and from-scratch checkpoints are models of their own. Entries are sized by their weights
(parameters and buffers, adapters included); past ``max_bytes`` the least recently used ones are unloaded.
A model larger than the bound on its own is still loaded (nothing else stays beside it).

torch, peft and the backends are imported inside the methods.
"""

from __future__ import annotations

import gc
import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from studio.generation.variants import Variant
from studio.models.base import Handle
from studio.models.common import activate_adapter, add_adapter, is_out_of_memory
from studio.training.config import TrainConfig


class LoadError(RuntimeError):
    """A variant's model or adapter could not be loaded; the message names it and says why."""


@dataclass
class Entry:
    handle: Handle
    bytes: int
    adapters: dict[str, str] = field(default_factory=dict)  # weights folder → adapter name


def tensor_bytes(tensor) -> int:
    """The memory a tensor's data takes. A quantised tensor subclass (torchao's int8 weights) reports its float
    dtype's size per element, so it is counted by the plain tensors it holds (int8 data, scales) instead."""
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def weight_bytes(module) -> int:
    """The memory of a module's weights: parameters (a tied one once) and buffers."""
    return sum(tensor_bytes(t) for t in [*module.parameters(), *module.buffers()])


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_config(run_config: dict | None):
    """The TrainConfig to load a model for generation: the run's own (resolution, clip length, ...) without what
    only training needs (gradient checkpointing, a 4-bit base, an accelerate config file, Liger's training kernels,
    which would refuse a machine without CUDA, a preference objective: held-out metrics score examples as SFT does)."""
    data = json.loads(json.dumps(run_config or {}))
    data.update(gradient_checkpointing=False, accelerate_config_file="", objective="sft", liger_kernels=False)
    data.setdefault("lora", {})["load_in_4bit"] = False
    return TrainConfig.model_validate(data)


class ModelCache:
    """Handles for variants, least recently used first out. ``loads`` counts models loaded (a base shared by
    several LoRA variants counts once), ``adapter_loads`` adapters added. Use ``lock`` around a handle's use:
    switching adapters changes the shared model."""

    def __init__(self, max_bytes: int, device: str | None = None):
        self.max_bytes = int(max_bytes)
        self.device = device
        self.entries: OrderedDict[tuple, Entry] = OrderedDict()
        self.loads = 0
        self.adapter_loads = 0
        self.lock = threading.RLock()

    def device_name(self) -> str:
        """Where its models run: the device it was given, else "cuda" when torch sees a GPU, else "cpu"."""
        return self.device or _device()

    @staticmethod
    def key(variant: Variant) -> tuple:
        if variant.kind in ("base", "lora"):
            return (variant.modality, variant.base_ref, "base")
        return (variant.modality, str(Path(variant.weights).resolve()), "full")

    def handle_for(self, variant: Variant) -> Handle:
        """The loaded handle for ``variant``, with its adapter (or none, for the base) switched on. A model or
        adapter that cannot be loaded raises ``LoadError`` (out of memory is raised as it is)."""
        try:
            return self._handle_for(variant)
        except Exception as error:  # noqa: BLE001 - files on disk can fail in many ways; say which variant
            if is_out_of_memory(error):
                raise
            raise LoadError(f"{variant.label} could not be loaded ({type(error).__name__}: {error}).") from error

    def _handle_for(self, variant: Variant) -> Handle:
        with self.lock:
            key = self.key(variant)
            entry = self.entries.get(key)
            if entry is None:
                entry = self._load(variant)
                self.entries[key] = entry
            self.entries.move_to_end(key)
            if variant.kind == "full":
                self._evict(keep=key)
                return entry.handle
            target = entry.handle.family.backend().lora_module(entry.handle)
            name = None
            if variant.kind == "lora":
                folder = str(Path(variant.weights).resolve())
                name = entry.adapters.get(folder)
                if name is None:
                    name = re.sub(r"\W", "_", f"{variant.slug}_{len(entry.adapters)}")
                    add_adapter(target, Path(folder), name)
                    target.requires_grad_(False)
                    entry.handle.module.eval()  # new adapter layers start in training mode: no dropout when sampling
                    entry.adapters[folder] = name
                    entry.bytes = weight_bytes(entry.handle.module)
                    self.adapter_loads += 1
            activate_adapter(target, name)
            self._evict(keep=key)
            return entry.handle

    def _load(self, variant: Variant) -> Entry:
        config = load_config(variant.config)
        handle = variant.family.backend().load(str(variant.model_source), "full", config)
        if variant.from_starter:
            handle.parts.starter = True  # the starters' generation defaults (e.g. milder guidance)
        handle.module.requires_grad_(False)
        handle.module.eval()
        handle.module.to(self.device_name())
        self.loads += 1
        return Entry(handle=handle, bytes=weight_bytes(handle.module))

    def _evict(self, keep: tuple) -> None:
        while self.total_bytes() > self.max_bytes and len(self.entries) > 1:
            oldest = next(k for k in self.entries if k != keep)
            self.drop(oldest)

    def total_bytes(self) -> int:
        return sum(e.bytes for e in self.entries.values())

    def drop(self, key: tuple) -> None:
        with self.lock:
            self.entries.pop(key, None)
            _free_memory()

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            _free_memory()

    def describe(self) -> list[dict]:
        """What is loaded, most recently used last (for a status line)."""
        return [{"model": key[1], "kind": key[2], "mb": round(entry.bytes / 2**20, 1),
                 "adapters": len(entry.adapters)} for key, entry in self.entries.items()]


def _free_memory() -> None:
    gc.collect()
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


_shared: dict[str, ModelCache] = {}
_shared_lock = threading.Lock()


def shared_cache(settings) -> ModelCache:
    """One cache per STUDIO_HOME for the process (the web process keeps its models between requests)."""
    with _shared_lock:
        key = str(settings.home)
        if key not in _shared:
            _shared[key] = ModelCache(settings.generation_cache_mb * 2**20)
        return _shared[key]

"""What every family's backend does the same way: the load prologue, the ``studio_model.json`` marker, LoRA
adapters (loading, adding named ones, folding one into its base) and saving a transformers model folder; and
telling an out-of-memory error apart, which training and generation both recover from.

Plain functions, no base class: a backend calls the ones it needs. torch, transformers, peft and safetensors
are imported inside them.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path

from studio.models.base import BackendConfig

MARKER = "studio_model.json"  # what a folder saved by the studio says about itself
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # owner/name
# Buffers that count from 0 by design, added to a family after models of it were already saved (the GAN's noise
# draws): a saved model or checkpoint without them loads with the count at 0 instead of being refused.
COUNTERS_ADDED_LATER = frozenset({"noise_draws"})


# ----------------------------------------------------------------------------- the prologue of every load

def prologue(family, model_ref: str, method: str, config: BackendConfig) -> None:
    """Refuses a method the family cannot train ``model_ref`` with, then seeds torch, so the same seed builds the
    same starting weights and LoRA matrices."""
    import torch

    problem = family.method_problem(model_ref, method)
    if problem:
        raise ValueError(problem)
    torch.manual_seed(config.seed)


def is_out_of_memory(error: BaseException) -> bool:
    """The device ran out of memory (the loop halves its micro-batch, generation skips the variant)."""
    import torch

    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def quiet_import_noise() -> None:
    """torchao (which transformers and peft import whenever it is installed; int8 deployments use it) logs a
    warning at import for each optional compiled kernel it cannot load on the machine (float8 / CUTLASS kernels the
    studio does not use), and torch a deprecation notice for each of torchao's pytree registrations: lines in a log
    people read that ask nothing of them. Errors still show."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


# ----------------------------------------------------------------------------- the marker

def read_marker(folder: Path) -> dict:
    """``folder/studio_model.json`` (empty when there is none); an unreadable one is a ValueError naming it."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} cannot be read as the studio's model description: {error}") from error
    if not isinstance(found, dict):
        raise ValueError(f"{path} is not the studio's model description (a JSON object)")
    return found


def write_marker(handle, folder: Path, **fields) -> None:
    """The marker of a model saved from ``handle``: its modality, family, base and method, and ``fields``."""
    marker = {"modality": handle.modality, "family": handle.parts.family, "base": handle.model_ref,
              "method": handle.method, **fields}
    (Path(folder) / MARKER).write_text(json.dumps(marker, indent=1))


# ----------------------------------------------------------------------------- LoRA adapters

def target_option(option: str | None) -> str | list[str]:
    """A ``target_modules`` option: 'auto' (the family's preset), 'all-linear', or the comma-separated names."""
    option = (option or "auto").strip()
    if option in ("auto", "all-linear"):
        return option
    return [name.strip() for name in option.split(",") if name.strip()]


def adapter_base(folder: Path, model_ref: str) -> str | None:
    """The model a LoRA folder adapts (its marker's base, else PEFT's ``base_model_name_or_path``); None when
    ``folder`` holds no adapter."""
    config = Path(folder) / ADAPTER_CONFIG
    if not config.is_file():
        return None
    base = read_marker(folder).get("base") or json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"'{model_ref}' holds a LoRA adapter but does not say which model it adapts")
    return base


def hub_adapter(model_ref: str) -> str:
    """``model_ref`` itself, or for a LoRA adapter on the Hub (a repository holding adapter_config.json) its local copy,
    downloaded once into the Hugging Face cache as from_pretrained does: a Hub adapter then loads exactly as a local
    adapter folder does (trained further, or folded into its base)."""
    if not HUB_ID.match(model_ref) or Path(model_ref).expanduser().exists():
        return model_ref
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        hf_hub_download(model_ref, ADAPTER_CONFIG)
    except Exception:  # noqa: BLE001 - no adapter, no such repository or no Hub: it loads (or is refused) as a model
        return model_ref
    return snapshot_download(model_ref)


def merge_adapter(model, folder: Path):
    """``model`` with the PEFT adapter saved in ``folder`` folded into its weights (the LoRA layers gone)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(folder)).merge_and_unload()


def _adapter_state(folder: Path, also: tuple[str, ...] = ()) -> dict:
    missing = [name for name in (*also, ADAPTER_WEIGHTS) if not (Path(folder) / name).is_file()]
    if missing:
        raise FileNotFoundError(f"no LoRA adapter ({', '.join((*also, ADAPTER_WEIGHTS))}) in {folder}")
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / ADAPTER_WEIGHTS))


def load_adapter(model, folder: Path) -> None:
    """Loads a PEFT adapter saved with ``save_pretrained`` into ``model`` (a model with the same LoRA layers),
    in place."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, _adapter_state(folder))
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"the adapter in {folder} does not fit this model: {', '.join(result.unexpected_keys[:5])}")


def add_adapter(target, folder: Path, name: str) -> None:
    """Adds the PEFT LoRA adapter saved in ``folder`` (adapter_config.json + adapter_model.safetensors, as every
    backend's ``save`` writes it) to ``target`` under ``name``, beside any adapters it has already."""
    from peft import PeftConfig, inject_adapter_in_model, set_peft_model_state_dict

    state = _adapter_state(folder, also=(ADAPTER_CONFIG,))
    config = PeftConfig.from_pretrained(str(folder))
    config.inference_mode = True
    known = dict(getattr(target, "peft_config", {}) or {})
    try:
        with warnings.catch_warnings():  # "already found a peft_config": several named adapters are the point
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            inject_adapter_in_model(config, target, adapter_name=name)
        target.peft_config = {**known, name: config}  # the injection keeps only the newest adapter's config
        result = set_peft_model_state_dict(target, state, adapter_name=name)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"the adapter in {folder} does not fit its base model: {error}") from error
    missing = [k for k in result.missing_keys if f".{name}." in k]
    if result.unexpected_keys or missing:
        raise ValueError(f"the adapter in {folder} does not fit its base model (unexpected: "
                         f"{list(result.unexpected_keys)[:3]}, missing: {missing[:3]})")


REFERENCE = "reference"  # the name of a frozen copy of the start's LoRA adapter (preference objectives)


class reference_weights:
    """``with reference_weights(module):`` the LoRA layers inside ``module`` give what a preference objective
    compares with, then go back: the adapter named ``REFERENCE`` where there is one (a run going on with its start's
    adapter keeps a frozen copy of it, as TRL's "ref" adapter), else the frozen base weights alone, every adapter
    off (PEFT's ``disable_adapter()``). Either way the same weights, without a second copy of the model."""

    def __init__(self, module):
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
        self.named = any(REFERENCE in getattr(layer, name) for layer in self.layers
                         for name in layer.adapter_layer_names)

    def __enter__(self):
        self.before = [(list(layer.active_adapters), not layer.disable_adapters) for layer in self.layers]
        for layer in self.layers:
            if self.named:
                layer.set_adapter(REFERENCE, inference_mode=True)
            else:
                layer.enable_adapters(False)
        return self

    def __exit__(self, *exc):
        for layer, (active, enabled) in zip(self.layers, self.before):
            if self.named:
                layer.set_adapter(active)  # the trained adapter again, trainable
            else:
                layer.enable_adapters(enabled)
        return False


def activate_adapter(target, name: str | None) -> None:
    """Switches every LoRA layer of ``target`` to adapter ``name``, or off (the base model) when None."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in target.modules():
        if isinstance(module, BaseTunerLayer):
            module.enable_adapters(name is not None)
            if name is not None:
                module.set_adapter(name)


# ----------------------------------------------------------------------------- transformers folders

def published_dtype(model_ref: str):
    """The half-precision dtype a transformers model's config.json says it was saved in, else None."""
    import torch
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(model_ref)
    except OSError:
        return None
    name = config.get("dtype") or config.get("torch_dtype")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(name) if isinstance(name, str) else None


def write_pretrained(parts, base_ref: str, out: Path, max_shard_bytes: int) -> None:
    """A merged transformers model (``parts.model``, merged in float32) saved as ``base_ref`` was published
    (half the size for bf16), sharded past ``max_shard_bytes``, with its tokenizer and processors."""
    model = parts.model
    published = published_dtype(str(base_ref))
    if published is not None:
        model = model.to(published)
    Path(out).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), max_shard_size=max_shard_bytes)
    for processor in parts.processors():
        processor.save_pretrained(str(out))


# ----------------------------------------------------------------------------- batches and caches that backends share

class BucketBatches:
    """Batches of one bucket each (an image's aspect-ratio bucket, a clip's length bucket): a DataLoader's
    ``batch_sampler``. The order of the items is shuffled, then each bucket's are batched in that order and the
    batches shuffled, anew each epoch."""

    def __init__(self, buckets: list, batch_size: int, seed: int, shuffle: bool):
        import torch

        self.buckets, self.batch_size, self.shuffle = buckets, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def _batches(self, order: list[int]) -> list[list[int]]:
        grouped: dict = {}
        for index in order:
            grouped.setdefault(self.buckets[index], []).append(index)
        return [group[start:start + self.batch_size] for group in grouped.values()
                for start in range(0, len(group), self.batch_size)]

    def __iter__(self):
        import torch

        if not self.shuffle:
            yield from self._batches(list(range(len(self.buckets))))
            return
        batches = self._batches(torch.randperm(len(self.buckets), generator=self.generator).tolist())
        yield from (batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist())

    def __len__(self) -> int:
        return len(self._batches(list(range(len(self.buckets)))))


def weights_fingerprint(modules, *extra) -> str:
    """A digest of what a cache of encoder outputs depends on: the weights of ``modules`` (frozen encoders) and
    ``extra`` (their configs, ...). Hashing them takes about a second for an SD-class VAE."""
    import hashlib

    import torch

    digest = hashlib.sha256(repr(extra).encode())
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def cache_file(folder: Path, key: list) -> Path:
    """The file in ``folder`` for what ``key`` lists (everything the cached tensors were made of): a new key, a new
    file, so a changed encoder or input is never read from an old one."""
    import hashlib

    return Path(folder) / f"{hashlib.sha256(repr(key).encode()).hexdigest()[:32]}.safetensors"


def write_cached(target: Path, tensors: dict) -> None:
    """``tensors`` saved to ``target`` under a temporary name, then renamed: a run stopped half-way (or another
    process writing the same file) leaves no broken file."""
    import os

    from safetensors.torch import save_file

    partial = target.with_suffix(f".{os.getpid()}.partial")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(partial))
    os.replace(partial, target)


def to_training_device(module, use_cpu: bool):
    """``module`` moved to the GPU a run will train on (Accelerate would move it there next) unless ``use_cpu`` or
    there is none, so that a cache is encoded there rather than on the CPU it was loaded on; returns its device."""
    import torch

    device = next(module.parameters()).device
    if device.type == "cpu" and not use_cpu and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
        module.to(device)
    return device

"""Quantisation of a deployment's loaded model (none / int8 / nf4), and the held-out check of what it cost.

``quantize_handle`` changes a loaded handle in place, after every LoRA adapter it serves has been added: the base
model's linear layers get low-precision weights, while the adapters' own A/B matrices stay in full precision, so
switching adapters per request (``studio.models.common.activate_adapter``) works as before.

* ``int8``: weight-only int8 with per-output-channel scales through torchao (``Int8WeightOnlyConfig``), on CPU
  and GPU; activations stay in the model's dtype. GPT-2-style ``Conv1D`` layers are turned into the equivalent
  ``nn.Linear`` first. Convolutions (a UNet's) and embeddings stay as they are; a linear layer whose weight is
  tied to another module's (a language model head tied to its embeddings) too, as quantising it would keep a
  second, int8 copy beside the float one.
* ``nf4``: bitsandbytes' 4-bit NormalFloat layers (``Linear4bit``), on a CUDA GPU only. That path is written for
  CUDA and not tested where the studio is developed (no GPU there).

``quality_check`` measures a loaded handle on a dataset version's held-out split with the automatic metrics'
own code (``studio.evaluation``): perplexity for text, the held-out loss at fixed noise levels and seeds for images
and audio, so a before/after pair differs only by what quantisation changed.

torch, torchao and bitsandbytes are imported inside the functions.
"""

from __future__ import annotations

from studio.data.service import get_version, read_manifest
from studio.evaluation.metrics import held_out_examples, held_out_rows
from studio.generation.cache import weight_bytes
from studio.generation.variants import Variant
from studio.models.common import quiet_import_noise
from studio.store import Store
from studio.store.tables import DatasetVersion, Run

QUANTIZE_MODES = ("none", "int8", "nf4")
NF4_NEEDS = ("nf4 (4-bit NormalFloat) needs an NVIDIA GPU with CUDA and the bitsandbytes package (pip install "
             "bitsandbytes); pick int8, which works on CPU and GPU, or none")
INT8_NEEDS = "int8 needs the torchao package (pip install torchao)"


class QuantizeError(ValueError):
    """A quantisation that cannot be done here; the message says why and what to pick instead."""


def check_mode(mode: str) -> str:
    """``mode`` when it is one of ``QUANTIZE_MODES`` and can run on this machine, else a ``QuantizeError``."""
    if mode not in QUANTIZE_MODES:
        raise QuantizeError(f"'{mode}' is not a quantisation: use {', '.join(QUANTIZE_MODES)}")
    if mode == "nf4":
        import importlib.util

        import torch

        if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
            raise QuantizeError(NF4_NEEDS)
    if mode == "int8":
        _torchao()
    return mode


def quantize_handle(handle, mode: str) -> dict:
    """Quantises ``handle``'s base linear layers in place (see the module's docstring) and returns
    ``{"mode", "weight_bytes_before", "weight_bytes_after", "layers"}``: the bytes of every weight of the handle
    (adapters, embeddings and frozen encoders included), measured from the tensors' real storage, and how many
    layers were quantised. int8 keeps each layer on its device (quantise after moving the model there); nf4 moves
    the quantised layers to the GPU. Not safe while another thread runs the model."""
    check_mode(mode)
    before = weight_bytes(handle.module)
    layers = 0
    if mode != "none":
        _conv1d_to_linear(handle.module)
        chosen = base_linears(handle.module)
        layers = len(chosen)
        if mode == "int8":
            _int8(handle.module, chosen)
        else:
            _nf4(chosen)
    return {"mode": mode, "weight_bytes_before": before, "weight_bytes_after": weight_bytes(handle.module),
            "layers": layers}


# ----------------------------------------------------------------------------- which layers

def _adapter_modules(module) -> set[int]:
    """The ids of every module that belongs to a LoRA adapter (lora_A, lora_B, LoRA embeddings): never quantised."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    found = set()
    for layer in module.modules():
        if isinstance(layer, BaseTunerLayer):
            for name in layer.adapter_layer_names:
                found.update(id(m) for m in getattr(layer, name).modules())
    return found


def _children(module, kinds: tuple) -> list[tuple]:
    """(parent, attribute, child) for every submodule of ``module`` that is one of ``kinds``, adapters left out."""
    skip = _adapter_modules(module)
    return [(parent, name, child) for parent in module.modules() if id(parent) not in skip
            for name, child in parent.named_children() if isinstance(child, kinds) and id(child) not in skip]


def base_linears(module) -> list[tuple]:
    """(parent, attribute, linear) for the linear layers quantisation replaces: plain float weights, not an
    adapter's, not tied to another module's weight."""
    import torch

    uses: dict[int, int] = {}
    for _, parameter in module.named_parameters(remove_duplicate=False):
        uses[id(parameter)] = uses.get(id(parameter), 0) + 1
    return [(parent, name, linear) for parent, name, linear in _children(module, (torch.nn.Linear,))
            if type(linear.weight.data) is torch.Tensor and linear.weight.is_floating_point()
            and uses[id(linear.weight)] == 1]


def _conv1d_to_linear(module) -> None:
    """GPT-2's ``Conv1D`` (x @ W + b, W stored in×out) as the same ``nn.Linear`` (W stored out×in), which the
    quantisation libraries know."""
    import torch
    from transformers.pytorch_utils import Conv1D

    for parent, name, conv in _children(module, (Conv1D,)):
        weight = conv.weight
        linear = torch.nn.Linear(weight.shape[0], weight.shape[1], bias=conv.bias is not None,
                                 device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight.t())
            if conv.bias is not None:
                linear.bias.copy_(conv.bias)
        linear.requires_grad_(False)
        setattr(parent, name, linear)


# ----------------------------------------------------------------------------- the libraries

def _torchao():
    """torchao's ``quantize_`` and ``Int8WeightOnlyConfig`` (its import-time log noise quietened)."""
    quiet_import_noise()
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as error:
        raise QuantizeError(f"{INT8_NEEDS}: {error}") from error
    return quantize_, Int8WeightOnlyConfig


def _int8(module, chosen: list[tuple]) -> None:
    quantize_, Int8WeightOnlyConfig = _torchao()
    ids = {id(linear) for _, _, linear in chosen}
    quantize_(module, Int8WeightOnlyConfig(), filter_fn=lambda layer, _name: id(layer) in ids)


def _nf4(chosen: list[tuple]) -> None:
    """Each chosen layer replaced by a bitsandbytes ``Linear4bit`` holding the same weights in NF4 (quantised when
    it moves to the GPU), computing in the layer's own dtype. Written for CUDA; not tested without one."""
    import bitsandbytes as bnb
    import torch

    for parent, name, linear in chosen:
        quantised = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                      compute_dtype=linear.weight.dtype, quant_type="nf4", device="cpu")
        quantised.weight = bnb.nn.Params4bit(linear.weight.data.to("cpu"), requires_grad=False, quant_type="nf4")
        if linear.bias is not None:
            quantised.bias = torch.nn.Parameter(linear.bias.data.to("cpu"), requires_grad=False)
        setattr(parent, name, quantised.to("cuda"))


# ----------------------------------------------------------------------------- the quality check

def _version_of(store: Store, variant: Variant, dataset_ref: str | None) -> DatasetVersion:
    if dataset_ref:
        return get_version(store, dataset_ref)
    if variant.run_id is None:
        raise QuantizeError("the base model has no run, so no dataset to check it on: name a dataset version "
                            "(DATASET_ID[:VERSION])")
    with store.session() as session:
        version = session.get(DatasetVersion, session.get(Run, variant.run_id).dataset_version_id)
        version.dataset  # load the relationship while the session is open
        return version


def quality_check(store: Store, handle, variant: Variant, dataset_ref: str | None = None, limit: int = 64) -> dict:
    """The held-out quality of ``handle`` as it is switched now (the variant's adapter on, as
    ``ModelCache.handle_for(variant)`` leaves it) on at most ``limit`` items of the dataset version
    ``dataset_ref`` (``DATASET_ID[:VERSION]``; None: the variant's run's own version): its test split, the
    validation split when the test split is empty. Text: ``{"metric": "perplexity", ...}``; image and audio:
    ``{"metric": "held-out loss", ...}`` (fixed noise levels and seeds); both with ``"value"``, ``"rows"`` (the
    items measured), ``"split"`` and ``"dataset"``. Deterministic: run before and after ``quantize_handle``, the
    two values differ only by quantisation. Not safe while another thread runs the model."""
    from studio.evaluation.metrics_media import heldout_loss
    from studio.evaluation.metrics_text import perplexity

    version = _version_of(store, variant, dataset_ref)
    held, split, _ = held_out_rows(read_manifest(store, version), max(1, int(limit)))
    if not held:
        raise QuantizeError(f"dataset {version.dataset_id}:{version.version} has neither test nor validation "
                            "items: nothing held out to check the quantised model on")
    data, collate = held_out_examples(handle, variant, held, store.path(version.path))
    if variant.modality == "text":
        metric, value = "perplexity", perplexity(handle, data, collate)["perplexity"]
    else:
        metric, value = "held-out loss", heldout_loss(handle, data, collate, seed=0)["loss"]
    return {"metric": metric, "value": value, "rows": len(held), "split": split,
            "dataset": f"{version.dataset_id}:{version.version}"}

"""A run or checkpoint leaves the studio in the forms the Hugging Face ecosystem loads without studio code:

- ``peft``: the PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, tokenizer) whose
  ``base_model_name_or_path`` names the base, so ``PeftModel.from_pretrained(base, folder)`` loads it;
- ``diffusers-lora``: ``pytorch_lora_weights.safetensors`` for ``pipeline.load_lora_weights`` (image LoRA runs);
- ``merged``: a full model in ``save_pretrained`` format (safetensors), the adapter folded into the base
  (text), or the trained model itself for full / from-scratch runs.

Every export can also be zipped. (Model cards and Hub pushes are not written yet.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from studio.store import Store

FORMATS = ("peft", "diffusers-lora", "merged")
STUDIO_FILES = ("studio_model.json",)


class ExportError(ValueError):
    """An export that cannot be made as asked; the message says why."""


def export_run(store: Store, ref: str, fmt: str, out: Path, make_zip: bool = False) -> dict:
    """Exports ``ref`` (``RUN_ID`` = its last checkpoint, or ``RUN_ID:STEP``) as ``fmt`` into ``out``; returns
    ``{"run_id", "step", "format", "path", "files", "zip"}``."""
    from studio.generation.variants import resolve_variants

    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)} (got '{fmt}')")
    if str(ref).strip() == "base":
        raise ExportError("export a run or a checkpoint (RUN_ID or RUN_ID:STEP), not the base model")
    [variant] = resolve_variants(store, [str(ref)])
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} is not empty: choose a new folder (nothing is overwritten)")
    source = Path(variant.weights)
    if fmt == "peft":
        _export_peft(variant, source, out)
    elif fmt == "diffusers-lora":
        _export_diffusers_lora(variant, source, out)
    else:
        _export_merged(variant, source, out)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    archive = shutil.make_archive(str(out), "zip", root_dir=out) if make_zip else None
    return {"run_id": variant.run_id, "step": variant.step, "format": fmt, "path": str(out), "files": files,
            "zip": archive}


def _require_lora(variant, fmt: str) -> None:
    if variant.kind != "lora":
        raise ExportError(f"run {variant.run_id} was trained with method '{variant.method}': it has no adapter to "
                          f"export as {fmt}; export it as 'merged' (the full model)")


def _export_peft(variant, source: Path, out: Path) -> None:
    _require_lora(variant, "peft")
    if not (source / "adapter_model.safetensors").exists():
        raise ExportError(f"no adapter_model.safetensors in {source}")
    shutil.copytree(source, out, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(*STUDIO_FILES, "pytorch_lora_weights.safetensors"))
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = variant.base_ref  # plain PEFT finds the base from here
    config_path.write_text(json.dumps(config, indent=2))


def _export_diffusers_lora(variant, source: Path, out: Path) -> None:
    _require_lora(variant, "diffusers-lora")
    weights = source / "pytorch_lora_weights.safetensors"
    if variant.modality != "image" or not weights.exists():
        raise ExportError("diffusers-lora is for image LoRA runs (a pytorch_lora_weights.safetensors file); "
                          f"run {variant.run_id} is a {variant.modality} run: use 'peft'")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(weights, out / weights.name)


def _export_merged(variant, source: Path, out: Path) -> None:
    if variant.kind != "lora":
        shutil.copytree(source, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*STUDIO_FILES))
        return
    if variant.modality != "text":
        raise ExportError(f"merging a {variant.modality} LoRA into its base is not supported yet: export it as "
                          "'diffusers-lora' or 'peft' and load it on the base")
    from studio.models.text import TextBackend
    from studio.training.config import TrainConfig

    backend = TextBackend()
    handle = backend.load(str(source), "full", TrainConfig.model_validate(variant.config or {}))  # adapter folded in
    out.mkdir(parents=True, exist_ok=True)
    model = handle.parts["model"]
    model.save_pretrained(str(out), safe_serialization=True)
    handle.parts["tokenizer"].save_pretrained(str(out))

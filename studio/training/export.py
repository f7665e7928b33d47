"""A run or checkpoint leaves the studio in the forms the Hugging Face ecosystem loads without studio code:

- ``peft``: the PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, tokenizer) whose
  ``base_model_name_or_path`` names the base, so ``PeftModel.from_pretrained(base, folder)`` loads it;
- ``diffusers-lora``: ``pytorch_lora_weights.safetensors`` for ``pipeline.load_lora_weights`` (image LoRA runs);
- ``merged``: a full model, the adapter folded into the base, or the trained model itself for full /
  from-scratch runs: a transformers ``save_pretrained`` folder (text, MusicGen) or a complete diffusers
  pipeline folder (Stable-Diffusion-class images, saved with the DDIM sampler the studio samples with, so a
  plain pipeline gives the studio's image for a seed). Weights written here are sharded past
  ``STUDIO_EXPORT_MAX_SHARD_MB``. The starters' own folders (pixel-space images, spectrogram audio) are no
  standard pipeline: they are exported as the studio's folder, loadable by component and by the studio.

Every export folder gets a model card (``README.md``, ``loss.png``; see ``studio.sharing.card``) and can be
zipped; ``studio.sharing.hub`` pushes it to the Hub.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from studio.store import Store

if TYPE_CHECKING:
    from studio.data.clean import Progress

FORMATS = ("peft", "diffusers-lora", "merged")
NO_CHECKPOINT = "choose a run's checkpoint first (train a run in the Train tab if the list is empty)"
STUDIO_FILES = ("studio_model.json",)


class ExportError(ValueError):
    """An export that cannot be made as asked; the message says why."""


def export_run(store: Store, ref: str, fmt: str, out: Path, make_zip: bool = False, license: str | None = None,
               actor: str | None = None, progress: Progress | None = None) -> dict:
    """Exports ``ref`` (``RUN_ID`` = its last checkpoint, or ``RUN_ID:STEP``) as ``fmt`` into ``out`` with its
    model card; returns ``{"run_id", "step", "format", "library", "path", "files", "card", "zip"}``. A failed
    export leaves no half-written folder behind (nor does a cancel: ``progress`` may raise, see studio.tasks)."""
    from studio.generation.variants import resolve_variants
    from studio.sharing.card import write_model_card

    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)} (got '{fmt}')")
    if str(ref).strip() == "base":
        raise ExportError("export a run or a checkpoint (RUN_ID or RUN_ID:STEP), not the base model")
    [variant] = resolve_variants(store, [str(ref)])
    out = Path(out)
    _check_target(store, out, make_zip, f"export run {variant.run_id}")
    existed = out.exists()
    try:
        if progress:
            progress(0.05, f"writing the {fmt} files (a merge loads the base model too)")
        library = _write_format(variant, fmt, out, shard_bytes(store))
        if progress:
            progress(0.8, "writing the model card")
        card = write_model_card(store, variant, fmt, library, out, license=license, actor=actor)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        if existed:
            out.mkdir()
        raise
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    archive = shutil.make_archive(str(out), "zip", root_dir=out) if make_zip else None
    _record_export(store, variant, fmt, out, actor)
    return {"run_id": variant.run_id, "step": variant.step, "format": fmt, "library": library, "path": str(out),
            "files": files, "card": str(card), "zip": archive}


def export_checkpoint(store: Store, ref: str | None, fmt: str, license: str | None = None, actor: str | None = None,
                      progress: Progress | None = None) -> dict:
    """Exports ``ref`` as ``fmt`` (with its card and a zip) into a new folder under ``STUDIO_HOME/exports`` (the
    Share tab's export)."""
    from datetime import datetime, timezone

    if not ref:
        raise ExportError(NO_CHECKPOINT)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = store.path("exports") / f"run{ref.replace(':', '-step')}-{fmt}-{stamp}"
    return export_run(store, ref, fmt, out, make_zip=True, license=(license or "").strip() or None, actor=actor,
                      progress=progress)


def _check_target(store: Store, out: Path, make_zip: bool, action: str) -> None:
    """Nothing is overwritten, and a folder under STUDIO_HOME is not filled past the disk guard."""
    from studio.store.disk import low_space

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} is not an empty folder: choose a new folder (nothing is overwritten)")
    archive = out.with_name(out.name + ".zip")
    if make_zip and archive.exists():
        raise ExportError(f"{archive} exists already: choose another folder name (nothing is overwritten)")
    if out.resolve().is_relative_to(store.home.resolve()) and (message := low_space(store, action)):
        raise ExportError(message)


def run_project(session, run_id: int) -> str | None:
    """The name of the project a run belongs to (for the audit trail)."""
    from studio.store.projects import project_name
    from studio.store.tables import Run

    run = session.get(Run, int(run_id))
    return project_name(session, run.project_id) if run is not None else None


def _record_export(store: Store, variant, fmt: str, out: Path, actor: str | None) -> None:
    from studio.store.tables import Run
    from studio.training.jobs import record_run_action

    with store.session() as session:
        record_run_action(session, actor, "run.export", session.get(Run, variant.run_id),
                          {"step": variant.step, "format": fmt, "path": str(out)})


def shard_bytes(store: Store) -> int:
    """``max_shard_size`` for save_pretrained, from ``STUDIO_EXPORT_MAX_SHARD_MB`` (MB of 10^6 bytes, as
    transformers counts them)."""
    return max(1, int(float(store.settings.export_max_shard_mb) * 10**6))


def _write_format(variant, fmt: str, out: Path, shard: int) -> str:
    """Writes ``fmt`` of ``variant`` into ``out``; returns the library that loads it (the card's library_name)."""
    source = Path(variant.weights)
    if fmt == "peft":
        _export_peft(variant, source, out)
        return "peft"
    if fmt == "diffusers-lora":
        _export_diffusers_lora(variant, source, out)
        return "diffusers"
    if variant.kind != "lora":
        _copy_model_folder(source, out)
    elif is_diffusion(variant):
        _merge_diffusion_lora(variant, source, out, shard)
    else:
        _merge_transformers_lora(variant, source, out, shard)
    return "diffusers" if is_diffusion(variant) else "transformers"


def is_diffusion(variant) -> bool:
    """Image runs and starter-audio runs (spectrogram diffusion); MusicGen and text are transformers models."""
    if variant.modality == "image":
        return True
    return variant.modality == "audio" and _family(variant) != "musicgen"


def _family(variant) -> str | None:
    from studio.models.musicgen import FAMILY, is_musicgen

    return FAMILY if is_musicgen(str(variant.base_ref if variant.kind == "lora" else variant.weights)) else None


def is_studio_folder(folder: Path) -> bool:
    """A starter's own folder (a UNet and a text encoder, but no model_index.json): only the studio samples it."""
    return (folder / "unet").is_dir() and not (folder / "model_index.json").is_file()


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
    if is_diffusion(variant):
        _prefix_like_peft(out / "adapter_model.safetensors")


def _prefix_like_peft(path: Path) -> None:
    """A UNet's LoRA is saved with keys relative to the UNet (what the studio and diffusers read back); a PEFT
    adapter file names them from the PeftModel (``base_model.model.``), which ``PeftModel.from_pretrained`` needs."""
    from safetensors.torch import load_file, save_file

    prefix = "base_model.model."
    state = load_file(str(path))
    save_file({k if k.startswith(prefix) else prefix + k: v for k, v in state.items()}, str(path),
              metadata={"format": "pt"})


def _export_diffusers_lora(variant, source: Path, out: Path) -> None:
    _require_lora(variant, "diffusers-lora")
    weights = source / "pytorch_lora_weights.safetensors"
    if variant.modality != "image" or not weights.exists():
        raise ExportError("diffusers-lora is for image LoRA runs (a pytorch_lora_weights.safetensors file); "
                          f"run {variant.run_id} is a {variant.modality} run: use 'peft' or 'merged'")
    if is_studio_folder(Path(variant.base_ref)):
        raise ExportError(f"run {variant.run_id} adapts a Gen Studio starter, which is no diffusers pipeline for "
                          "load_lora_weights to load into: export it as 'merged' (the starter's folder with the LoRA "
                          "fused in) or 'peft'")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(weights, out / weights.name)


def _copy_model_folder(source: Path, out: Path) -> None:
    """A full or from-scratch checkpoint is a model folder already. A starter's folder keeps its
    studio_model.json (the studio needs it to load the folder again); a pipeline gets the studio's sampler."""
    studio_only = is_studio_folder(source)
    shutil.copytree(source, out, dirs_exist_ok=True,
                    ignore=None if studio_only else shutil.ignore_patterns(*STUDIO_FILES))
    if (out / "model_index.json").is_file():
        use_studio_sampler(out)


def _merge_transformers_lora(variant, source: Path, out: Path, shard: int) -> None:
    """Text and MusicGen: loading a LoRA checkpoint as 'full' folds the adapter into its base (merge_and_unload);
    the result is saved with save_pretrained (safetensors, sharded past ``shard`` bytes)."""
    from studio.generation.cache import load_config
    from studio.models.registry import backend_for

    handle = backend_for(variant.modality).load(str(source), "full", load_config(variant.config))
    model = handle.parts["model"]
    published = published_dtype(str(variant.base_ref))
    if published is not None:  # merged in float32; saved as the base was published (half the size for bf16)
        model = model.to(published)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), max_shard_size=shard)
    handle.parts["tokenizer"].save_pretrained(str(out))
    if handle.parts.get("feature_extractor") is not None:  # MusicGen's preprocessor_config.json
        handle.parts["feature_extractor"].save_pretrained(str(out))


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


def _merge_diffusion_lora(variant, source: Path, out: Path, shard: int) -> None:
    """The base loaded with the run's LoRA layout, the checkpoint's adapter loaded into it and fused into the
    UNet's weights, the LoRA layers removed. A base with a VAE becomes a StableDiffusionPipeline folder; a
    starter's base (no VAE) the studio's own folder."""
    from studio.generation.cache import load_config
    from studio.models.registry import backend_for

    backend = backend_for(variant.modality)
    handle = backend.load(str(variant.base_ref), "lora", load_config(variant.config))
    backend.load_weights(handle, source)
    unet = handle.module.unet
    unet.fuse_lora(lora_scale=1.0)
    unet.unload_lora()
    merged = dataclasses.replace(handle, method="full")
    if handle.module.vae is None:
        backend.save(merged, out)
        return
    _save_pipeline(merged, out, shard)


def _save_pipeline(handle, out: Path, shard: int) -> None:
    from diffusers import StableDiffusionPipeline

    module = handle.module
    pipeline = StableDiffusionPipeline(vae=module.vae, text_encoder=module.text_encoder,
                                       tokenizer=handle.parts["tokenizer"], unet=module.unet,
                                       scheduler=module.noise_scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.save_pretrained(str(out), safe_serialization=True, max_shard_size=shard)
    use_studio_sampler(out)


def use_studio_sampler(folder: Path) -> None:
    """Makes a pipeline folder's scheduler the one the studio samples with (DDIM from the training schedule, eta
    0; flow-matching models keep their Euler scheduler), so ``pipeline(prompt, generator=seed)`` reproduces the
    studio's images."""
    from diffusers import DDIMScheduler, DDPMScheduler

    config = DDPMScheduler.load_config(str(folder), subfolder="scheduler")
    if "FlowMatch" in config.get("_class_name", ""):
        return
    DDIMScheduler.from_config(config).save_pretrained(str(folder / "scheduler"))
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["scheduler"] = ["diffusers", "DDIMScheduler"]
    index_path.write_text(json.dumps(index, indent=2))

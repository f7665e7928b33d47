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

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from studio.generation.cache import load_config
from studio.generation.variants import resolve_variants
from studio.models.common import MARKER
from studio.models.formats import FORMATS
from studio.sharing.card import write_model_card
from studio.store import Store
from studio.store.disk import low_space
from studio.store.projects import project_name
from studio.store.tables import Run
from studio.training.jobs import record_run_action

if TYPE_CHECKING:
    from studio.data.clean import Progress

NO_CHECKPOINT = "choose a run's checkpoint first (train a run in the Train tab if the list is empty)"
STUDIO_FILES = (MARKER,)


class ExportError(ValueError):
    """An export that cannot be made as asked; the message says why."""


def export_run(store: Store, ref: str, fmt: str, out: Path, make_zip: bool = False, license: str | None = None,
               actor: str | None = None, progress: Progress | None = None) -> dict:
    """Exports ``ref`` (``RUN_ID`` = its last checkpoint, or ``RUN_ID:STEP``) as ``fmt`` into ``out`` with its
    model card; returns ``{"run_id", "step", "format", "library", "path", "files", "card", "zip"}``. A failed
    export leaves no half-written folder behind (nor does a cancel: ``progress`` may raise, see studio.tasks)."""
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
    if not ref:
        raise ExportError(NO_CHECKPOINT)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = f"run{ref.replace(':', '-step')}-{fmt}-{stamp}"
    out, again = store.path("exports") / name, 2
    while out.exists() or out.with_name(out.name + ".zip").exists():  # two exports within one second: a new name
        out, again = store.path("exports") / f"{name}-{again}", again + 1
    return export_run(store, ref, fmt, out, make_zip=True, license=(license or "").strip() or None, actor=actor,
                      progress=progress)


def _check_target(store: Store, out: Path, make_zip: bool, action: str) -> None:
    """Nothing is overwritten, and a folder under STUDIO_HOME is not filled past the disk guard."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} is not an empty folder: choose a new folder (nothing is overwritten)")
    archive = out.with_name(out.name + ".zip")
    if make_zip and archive.exists():
        raise ExportError(f"{archive} exists already: choose another folder name (nothing is overwritten)")
    if out.resolve().is_relative_to(store.home.resolve()) and (message := low_space(store, action)):
        raise ExportError(message)


def run_project(session, run_id: int) -> str | None:
    """The name of the project a run belongs to (for the audit trail)."""
    run = session.get(Run, int(run_id))
    return project_name(session, run.project_id) if run is not None else None


def _record_export(store: Store, variant, fmt: str, out: Path, actor: str | None) -> None:
    with store.session() as session:
        record_run_action(session, actor, "run.export", session.get(Run, variant.run_id),
                          {"step": variant.step, "format": fmt, "path": str(out)})


def shard_bytes(store: Store) -> int:
    """``max_shard_size`` for save_pretrained, from ``STUDIO_EXPORT_MAX_SHARD_MB`` (MB of 10^6 bytes, as
    transformers counts them)."""
    return max(1, int(float(store.settings.export_max_shard_mb) * 10**6))


def _write_format(variant, fmt: str, out: Path, shard: int) -> str:
    """Writes ``fmt`` of ``variant`` into ``out``; returns the library that loads it (the card's library_name)."""
    source, family = Path(variant.weights), variant.family
    if fmt == "peft":
        _export_peft(variant, source, out)
        return "peft"
    if fmt == "diffusers-lora":
        _export_diffusers_lora(variant, source, out)
        return "diffusers"
    if variant.kind != "lora":
        _copy_model_folder(source, out, keep_marker=not family.standalone)
    else:
        family.backend().write_merged(str(variant.base_ref), source, load_config(variant.config), out, shard)
    return family.library


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
    if variant.family.library == "diffusers":  # a UNet's LoRA
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
    if "diffusers-lora" not in variant.family.export_formats:
        raise ExportError(f"run {variant.run_id} adapts a Gen Studio starter, which is no diffusers pipeline for "
                          "load_lora_weights to load into: export it as 'merged' (the starter's folder with the LoRA "
                          "fused in) or 'peft'")
    # Written again from the PEFT adapter rather than copied: checkpoints saved before the file carried the
    # adapter's config give diffusers a wrong scale (see save_diffusers_lora).
    from safetensors.torch import load_file

    from studio.models.diffusion import save_diffusers_lora

    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((source / "adapter_config.json").read_text())
    save_diffusers_lora(load_file(str(source / "adapter_model.safetensors")), config, out)


def _copy_model_folder(source: Path, out: Path, keep_marker: bool) -> None:
    """A full or from-scratch checkpoint is a model folder already. A starter's folder keeps its
    studio_model.json (the studio needs it to load the folder again); a pipeline gets the studio's sampler."""
    shutil.copytree(source, out, dirs_exist_ok=True,
                    ignore=None if keep_marker else shutil.ignore_patterns(*STUDIO_FILES))
    if (out / "model_index.json").is_file():
        from studio.models.diffusion import use_studio_sampler

        use_studio_sampler(out)

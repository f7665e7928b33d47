"""Which backend serves a model: by starter name, by what a local folder holds, or by the catalog."""

from __future__ import annotations

import json
from pathlib import Path

from studio.models.base import STARTERS, Backend


def backend_for(modality: str) -> Backend:
    if modality == "text":
        from studio.models.text import TextBackend
        return TextBackend()
    if modality == "image":
        from studio.models.image import ImageBackend
        return ImageBackend()
    if modality == "audio":
        from studio.models.audio import AudioBackend
        return AudioBackend()
    raise ValueError(f"no backend for modality '{modality}'")


def modality_of_folder(folder: Path) -> str | None:
    """A saved model folder's modality: starters and our runs write ``studio_model.json``; otherwise
    a diffusers pipeline (``model_index.json``) is image, a transformers causal LM (``config.json``) text."""
    marker = folder / "studio_model.json"
    if marker.exists():
        return json.loads(marker.read_text()).get("modality")
    if (folder / "model_index.json").exists():
        pipeline = json.loads((folder / "model_index.json").read_text()).get("_class_name", "")
        return "audio" if "Audio" in pipeline or "Music" in pipeline else "image"
    if (folder / "config.json").exists():
        config = json.loads((folder / "config.json").read_text())
        return "audio" if "musicgen" in str(config.get("model_type", "")).lower() else "text"
    return None


def modality_of(model_ref: str) -> str | None:
    if model_ref in STARTERS:
        return STARTERS[model_ref]
    folder = Path(model_ref).expanduser()
    if folder.is_dir():
        return modality_of_folder(folder)
    from studio.models.catalog import find
    entry = find(model_ref)
    return entry.modality if entry else None

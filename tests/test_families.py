"""The model families: which one the registry picks for a name, a folder or a catalog id, and that every
registered family declares what the rest of the studio asks of it (fast: no model is loaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.models.base import METHODS
from studio.models.common import MARKER
from studio.models.formats import FORMATS
from studio.models.registry import FAMILIES, STARTER_SCRATCH_ONLY, family_for, family_of, modality_of
from studio.training.objectives import OWN_STEPS


def folder_with(tmp_path: Path, name: str, files: dict[str, dict], subfolders: tuple[str, ...] = ()) -> str:
    folder = tmp_path / name
    folder.mkdir()
    for file, content in files.items():
        (folder / file).write_text(json.dumps(content))
    for sub in subfolders:
        (folder / sub).mkdir()
    return str(folder)


def test_the_family_comes_from_a_starter_name_the_catalog_or_a_folders_config(tmp_path):
    assert family_of("starter-text").name == "starter-text"
    assert family_of("starter-image").name == "starter-image" and family_of("starter-audio").name == "starter-audio"
    assert family_of("starter-image-gan").name == "starter-image-gan"
    assert family_of("starter-image-vae").name == "starter-image-vae"
    assert family_of("facebook/musicgen-small").name == "musicgen"
    assert family_of("Qwen/Qwen2.5-0.5B-Instruct").name == "causal-lm"
    assert family_of("stable-diffusion-v1-5/stable-diffusion-v1-5").name == "sd-pipeline"
    assert family_of("some-org/not-in-the-catalog") is None  # no Hub call: the loader asks when it must
    assert family_of(folder_with(tmp_path, "lm", {"config.json": {"model_type": "llama"}})).name == "causal-lm"
    assert family_of(folder_with(tmp_path, "mg", {"config.json": {"model_type": "musicgen"}})).name == "musicgen"
    sd = folder_with(tmp_path, "sd", {"model_index.json": {"_class_name": "StableDiffusionPipeline"}})
    assert family_of(sd).name == "sd-pipeline"
    assert family_of(folder_with(tmp_path, "ldm", {"model_index.json": {"_class_name": "AudioLDMPipeline"}})) is None


def test_a_studio_folder_names_its_family_and_older_markers_are_read_from_what_they_hold(tmp_path):
    named = folder_with(tmp_path, "named", {MARKER: {"modality": "audio", "family": "musicgen"}})
    assert family_of(named).name == "musicgen"
    old = {"text": folder_with(tmp_path, "text", {MARKER: {"modality": "text", "base": "starter-text",
                                                            "starter": True}}),
           "tuned": folder_with(tmp_path, "tuned", {MARKER: {"modality": "text", "base": "Qwen/Qwen2.5-0.5B-Instruct",
                                                              "starter": False}}),
           "pixels": folder_with(tmp_path, "pixels", {MARKER: {"modality": "image"}}, ("unet",)),
           "pipeline": folder_with(tmp_path, "pipeline", {MARKER: {"modality": "image"}, "model_index.json": {}},
                                   ("unet", "vae")),
           "spectrogram": folder_with(tmp_path, "spectrogram", {MARKER: {"modality": "audio", "spectrogram": {}}})}
    found = {name: family_of(folder).name for name, folder in old.items()}
    assert found == {"text": "starter-text", "tuned": "causal-lm", "pixels": "starter-image", "pipeline": "sd-pipeline",
                     "spectrogram": "starter-audio"}
    adapter = folder_with(tmp_path, "adapter", {MARKER: {"modality": "image", "base": old["pixels"]},
                                                "adapter_config.json": {}})
    assert family_of(adapter).name == "starter-image"  # an adapter is of its base's family
    assert modality_of(named) == "audio" and modality_of(old["pixels"]) == "image"


def test_a_model_of_another_modality_goes_to_the_fallback_family_which_refuses_or_tries(tmp_path):
    clap = folder_with(tmp_path, "clap", {"config.json": {"model_type": "clap"}})
    assert family_of(clap).name == "causal-lm"  # config.json alone: a transformers causal LM
    assert family_for(clap, "audio").name == "starter-audio"  # whose loader says what audio supports
    assert family_for("facebook/musicgen-small", "audio").name == "musicgen"
    assert family_for("starter-image", "text").name == "causal-lm"
    with pytest.raises(ValueError, match="no backend for modality 'toy'"):
        family_for("anything", "toy")


def test_only_the_starters_name_is_scratch_only():
    starter = FAMILIES["starter-image"]
    assert starter.method_problem("starter-image", "lora") == STARTER_SCRATCH_ONLY
    assert starter.method_problem("starter-image", "scratch") is None
    assert starter.method_problem("/runs/1/checkpoints/step-0000010/model", "lora") is None  # a run's folder
    assert "method must be one of lora, full, scratch" in FAMILIES["musicgen"].method_problem("x", "dpo")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_declares_what_the_studio_asks_and_its_backend_offers_it(name):
    family = FAMILIES[name]
    assert family.modality in ("text", "image", "audio")
    assert set(family.methods) <= set(METHODS) and family.objectives[0] == "sft"  # SFT: every family's default
    assert set(family.export_formats) <= set(FORMATS)
    if family.own_step:  # a GAN, a VAE: its own step for 'sft', no per-example score (no preference objective), no LoRA
        assert family.objectives == ("sft",) and "lora" not in family.methods and not family.export_formats
        assert family.own_step in OWN_STEPS and family.library == "torch"
    else:
        # a language model's answers have a log-probability (every preference objective); a diffusion model's
        # pictures a denoising error (Diffusion-DPO)
        assert family.objectives == (("sft", "dpo", "orpo", "kto") if family.library == "transformers"
                                     else ("sft", "dpo"))
        assert family.lora_targets and "merged" in family.export_formats
        assert family.library in ("transformers", "diffusers")
    assert bool(family.model_class) == (family.library == "transformers")
    backend = family.backend()
    assert backend.modality == family.modality and backend is family.backend()  # built once
    for method in ("load", "datasets", "collate", "generate", "save", "load_weights", "lora_module", "write_merged"):
        assert callable(getattr(backend, method)), method

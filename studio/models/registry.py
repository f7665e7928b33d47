"""Model families, and which one serves a model.

A family is a kind of model the studio trains one way: the causal LMs of transformers, Stable-Diffusion-class
pipelines, MusicGen, and the starters built here from a config. Each declares its modality, the methods
and objectives it trains with, what LoRA adapts in it, what ``studio export`` can write of its runs, and the
backend (``studio.models.base.FamilyBackend``) that loads, trains, samples and saves it. The family of a model
is picked here, once, from its name (a starter), its folder (the studio's marker, else its config files) or
the catalog; the handle a backend loads carries it (``Handle.family``), and code outside ``studio.models``
asks the family rather than working it out again. ``docs/INTERNALS.md`` says how to add one.

Nothing here imports a model library; a family's backend module is imported when it is first asked for.
"""

from __future__ import annotations

import functools
import importlib
import json
from dataclasses import dataclass
from pathlib import Path

from studio.models.base import METHODS, BackendConfig, Handle
from studio.models.catalog import find, recommended_overrides
from studio.models.common import ADAPTER_CONFIG, MARKER, REFERENCE, activate_adapter, add_adapter, hub_adapter, \
    read_marker
from studio.models.preference import REFERENCE_OBJECTIVES

STARTER_SCRATCH_ONLY = ("starter models are trained from scratch; use method 'scratch', or fine-tune a finished "
                        "run's model folder")


@dataclass(frozen=True)
class Family:
    name: str                      # as saved in studio_model.json: keep it stable
    modality: str                  # text | image | audio
    backend_path: str              # "module:Class" of its backend, imported on first use
    lora_targets: tuple[str, ...]  # the layers target_modules 'auto' adapts
    export_formats: tuple[str, ...]  # what `studio export` writes of its runs (of models.formats.FORMATS)
    library: str                   # the library that loads those exports: transformers | diffusers
    model_class: str = ""          # the transformers class that loads its folders ("" for pipelines)
    methods: tuple[str, ...] = METHODS
    objectives: tuple[str, ...] = ("sft",)  # what a training step does (training/objectives.py): the first is
    #                                          the default (supervised fine-tuning)
    starter: str = ""              # the starter's name: built here from a config, so only 'scratch' trains it
    standalone: bool = True        # its model folders load without the studio
    claims: tuple[str, ...] = ()   # config.json model_type / catalog family values that belong to it
    fallback: bool = False         # loads (or refuses, saying what is supported) what no family of its
    #                                modality claims
    own_step: str = ""             # the objective (training/objectives.py) its 'sft' runs take instead of SFT's
    #                                one optimizer step: a GAN imitates its examples adversarially, a VAE weighs
    #                                its KL term by the step (warm-up)
    ignores: tuple[tuple[str, str], ...] = ()  # (setting, why): settings its runs do not read, as `--set` keys or
    #                                            sections; a run that changes one from its default is refused

    def backend(self):
        return _backend(self.backend_path)

    def objective_trained(self, requested: str) -> str:
        """What a run of this family that asks for ``requested`` trains with: its own step where it takes one for
        'sft' (a GAN's 'adversarial'), else ``requested``. What runs are recorded and shown as."""
        return self.own_step if requested == "sft" and self.own_step else requested

    def method_problem(self, model_ref: str, method: str) -> str | None:
        """Why ``model_ref`` of this family cannot be trained with ``method``, or None."""
        if method not in self.methods:
            return f"method must be one of {', '.join(self.methods)} (got '{method}')"
        if model_ref == self.starter and method != "scratch":
            return STARTER_SCRATCH_ONLY
        return None


@functools.cache
def _backend(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)()


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Adds a family (or replaces the one of that name)."""
    FAMILIES[family.name] = family
    return family


_TRANSFORMERS_FORMATS = ("peft", "merged")
# Language models score an answer by its log-probability, so every preference objective fits them; a diffusion
# model's score is its denoising error, which Diffusion-DPO compares between two pictures (no ORPO or KTO for it).
_LANGUAGE_OBJECTIVES, _DIFFUSION_OBJECTIVES = ("sft", "dpo", "orpo", "kto"), ("sft", "dpo")
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_UNET_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
CAUSAL_LM = register(Family("causal-lm", "text", "studio.models.text:TextBackend", _ATTENTION, _TRANSFORMERS_FORMATS,
                            "transformers", "AutoModelForCausalLM", objectives=_LANGUAGE_OBJECTIVES, fallback=True))
STARTER_TEXT = register(Family("starter-text", "text", "studio.models.text:TextBackend", _ATTENTION,
                               _TRANSFORMERS_FORMATS, "transformers", "AutoModelForCausalLM", starter="starter-text",
                               objectives=_LANGUAGE_OBJECTIVES))
SD_PIPELINE = register(Family("sd-pipeline", "image", "studio.models.image:ImageBackend", _UNET_ATTENTION,
                              ("peft", "diffusers-lora", "merged"), "diffusers", objectives=_DIFFUSION_OBJECTIVES,
                              fallback=True))
STARTER_IMAGE = register(Family("starter-image", "image", "studio.models.image:ImageBackend", _UNET_ATTENTION,
                                ("peft", "merged"), "diffusers", starter="starter-image", standalone=False,
                                objectives=_DIFFUSION_OBJECTIVES))
MUSICGEN = register(Family("musicgen", "audio", "studio.models.musicgen:MusicgenBackend",
                           ("q_proj", "k_proj", "v_proj", "out_proj"), _TRANSFORMERS_FORMATS, "transformers",
                           "MusicgenForConditionalGeneration", claims=("musicgen",), objectives=_LANGUAGE_OBJECTIVES))
STARTER_AUDIO = register(Family("starter-audio", "audio", "studio.models.audio:SpectrogramBackend", _UNET_ATTENTION,
                                ("peft", "merged"), "diffusers", starter="starter-audio", standalone=False,
                                objectives=_DIFFUSION_OBJECTIVES, fallback=True))
# A GAN learns its examples with a step of its own (two networks, two optimizers) and has no per-example score for
# the preference objectives, nor LoRA layers. Diffusion's settings, and early stopping, mean nothing to it.
_GAN_IGNORES = (
    ("diffusion", "a GAN has no noise schedule, denoising loss or caption dropout; its own average of the generator "
                  "is gan.generator_ema"),
    ("early_stopping_patience", "a GAN's validation loss is its discriminator's hinge loss, which does not fall as "
                                "the generator learns; watch val_gan/diversity and the samples instead"))
STARTER_IMAGE_GAN = register(Family(
    "starter-image-gan", "image", "studio.models.gan:GanBackend", (), (), "torch", methods=("full", "scratch"),
    starter="starter-image-gan", standalone=False, own_step="adversarial",
    ignores=_GAN_IGNORES + (("cache_latents", "the GAN works on pixels: there is no VAE whose latents to cache"),
                            ("aspect_buckets", "the GAN draws squares of one size"))))
STARTER_AUDIO_GAN = register(Family(
    "starter-audio-gan", "audio", "studio.models.audio_gan:SpectrogramGanBackend", (), (), "torch",
    methods=("full", "scratch"), starter="starter-audio-gan", standalone=False, own_step="adversarial",
    ignores=_GAN_IGNORES + (("length_buckets", "the GAN draws clips of one length (clip_seconds)"),
                            ("cache_codes", "cache_codes is MusicGen's; the GAN works on spectrograms"))))
# A VAE learns its examples by its own step too (the KL term's weight follows the step number: its warm-up), with no
# per-example score for the preference objectives, nor LoRA layers. Its validation loss, the negative ELBO, falls as
# it learns, so early stopping applies; diffusion's settings do not.
STARTER_IMAGE_VAE = register(Family(
    "starter-image-vae", "image", "studio.models.vae:VaeBackend", (), (), "torch", methods=("full", "scratch"),
    starter="starter-image-vae", standalone=False, own_step="variational",
    ignores=(("diffusion", "a VAE has no noise schedule, denoising loss, caption dropout or weight average; its "
                           "settings are vae.kl_weight and vae.kl_warmup_steps"),
             ("cache_latents", "the VAE learns its own latents from the pixels: there are none to cache beforehand"),
             ("aspect_buckets", "the VAE draws squares of one size"))))


# ----------------------------------------------------------------------------- which family

def starter_family(model_ref: str | None) -> Family | None:
    return next((f for f in FAMILIES.values() if f.starter and f.starter == model_ref), None)


def is_starter(model_ref: str | None) -> bool:
    """Whether ``model_ref`` names a starter (a model built here from a config, with no pretrained weights)."""
    return starter_family(model_ref) is not None


def _claimed(value: str | None, modality: str | None = None) -> Family | None:
    return next((f for f in FAMILIES.values() if value and value in f.claims and modality in (None, f.modality)),
                None)


def _fallback(modality: str | None) -> Family | None:
    return next((f for f in FAMILIES.values() if f.fallback and f.modality == modality), None)


def family_of(model_ref: str) -> Family | None:
    """The family of a starter name, a local folder or a catalog id; None for anything else (a Hub id the
    catalog does not list: ``family_for`` asks the Hub when the modality needs it)."""
    found = starter_family(model_ref)
    if found is not None:
        return found
    folder = Path(model_ref).expanduser()
    if folder.is_dir():
        return _family_of_folder(folder)
    entry = find(model_ref)
    if entry is None:
        return None
    return _claimed(entry.family, entry.modality) or _fallback(entry.modality)


def family_for(model_ref: str, modality: str) -> Family:
    """The family that loads ``model_ref`` as a ``modality`` model: its own, or (when it has none of that
    modality) the modality's fallback family, whose backend loads it or says what is supported."""
    found = family_of(model_ref) or _family_on_hub(model_ref, modality)
    if found is not None and found.modality == modality:
        return found
    fallback = _fallback(modality)
    if fallback is None:
        raise ValueError(f"no backend for modality '{modality}'")
    return fallback


def _family_of_folder(folder: Path) -> Family | None:
    """A studio folder's family from its marker (folders saved before markers named it: from what the marker
    and the folder hold); another folder's from its pipeline index or config.json."""
    marker = read_marker(folder)
    if marker.get("family") in FAMILIES:
        return FAMILIES[marker["family"]]
    if marker:
        base = marker.get("base") if (folder / ADAPTER_CONFIG).is_file() else None
        adapted = family_of(base) if base else None  # an adapter is of its base's family
        if adapted is not None:
            return adapted
        if marker.get("modality") == "text":
            starter = marker.get("starter") or marker.get("base") == STARTER_TEXT.starter
            return STARTER_TEXT if starter else CAUSAL_LM
        if marker.get("modality") == "image":
            return SD_PIPELINE if (folder / "model_index.json").is_file() else STARTER_IMAGE
        return STARTER_AUDIO if marker.get("modality") == "audio" else None
    if (folder / "model_index.json").is_file():
        return SD_PIPELINE if _pipeline_modality(folder) == "image" else None
    if (folder / "config.json").is_file():
        return _claimed(_model_type(folder)) or CAUSAL_LM
    return None


def _model_type(folder: Path) -> str:
    return str(json.loads((folder / "config.json").read_text()).get("model_type", ""))


def _pipeline_modality(folder: Path) -> str:
    pipeline = json.loads((folder / "model_index.json").read_text()).get("_class_name", "")
    return "audio" if "Audio" in pipeline or "Music" in pipeline else "image"


def _family_on_hub(model_ref: str, modality: str) -> Family | None:
    """For a Hub id the catalog does not list, a family of ``modality`` that claims its config's model_type
    (asked only where a modality has such families: the Hub answers from its cache, or not at all offline)."""
    if not any(f.claims for f in FAMILIES.values() if f.modality == modality):
        return None
    if model_ref.startswith((".", "/", "~")) or model_ref.count("/") != 1:
        return None  # not a Hub id
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(model_ref)
    except OSError:  # not cached and offline, or no such repository
        return None
    return _claimed(config.get("model_type"), modality)


def objective_trained(model_ref: str, requested: str | None) -> str:
    """The objective a run of ``model_ref`` that asks for ``requested`` (by default 'sft') trains with
    (``Family.objective_trained``); ``requested`` for a model of no known family."""
    requested = requested or "sft"
    family = family_of(model_ref) if model_ref else None
    return family.objective_trained(requested) if family is not None else requested


def recommended_for(model_ref: str, objective: str = "sft") -> list[str]:
    """``--set`` pairs that suit training ``model_ref`` with ``objective`` (catalog.recommended_overrides), what the
    Train form and `studio train` start from."""
    family = family_of(model_ref) if model_ref else None
    return recommended_overrides(model_ref, objective, family.name if family else None)


# ----------------------------------------------------------------------------- which modality

def modality_of_folder(folder: Path) -> str | None:
    """A saved model folder's modality: starters and our runs write ``studio_model.json``; otherwise
    a diffusers pipeline (``model_index.json``) is image, a transformers causal LM (``config.json``) text."""
    if (folder / MARKER).exists():
        return read_marker(folder).get("modality")
    if (folder / "model_index.json").exists():
        return _pipeline_modality(folder)
    if (folder / "config.json").exists():
        return (_claimed(_model_type(folder)) or CAUSAL_LM).modality
    return None


def modality_of(model_ref: str) -> str | None:
    found = starter_family(model_ref)
    if found is not None:
        return found.modality
    folder = Path(model_ref).expanduser()
    if folder.is_dir():
        return modality_of_folder(folder)
    entry = find(model_ref)
    return entry.modality if entry else None


# ----------------------------------------------------------------------------- the backends

class ModalityBackend:
    """Any model of one modality: ``load`` picks the model's family once (``family_for``) and its backend loads
    it; every other call goes to the backend of the handle's family."""

    def __init__(self, modality: str):
        if _fallback(modality) is None:
            raise ValueError(f"no backend for modality '{modality}'")
        self.modality = modality

    def load(self, model_ref: str, method: str, config: BackendConfig,
             train_rows: list[dict] | None = None) -> Handle:
        """A LoRA run's folder trained further with LoRA goes on with its adapter (``continue_adapter``): its base
        gets LoRA layers of the adapter's own shape and the adapter's weights, so what is saved stays one adapter
        on that base. Otherwise the family's backend loads ``model_ref`` (a LoRA folder: merged into its base).
        A LoRA adapter on the Hub is its downloaded folder."""
        model_ref = hub_adapter(model_ref)
        backend = family_for(model_ref, self.modality).backend()
        base = continued_adapter_base(model_ref, method, config)
        if base is None:
            return backend.load(model_ref, method, config, train_rows)
        handle = backend.load(base, "lora", with_adapter_shape(config, Path(model_ref)), train_rows)
        backend.load_weights(handle, Path(model_ref))
        if config.objective in REFERENCE_OBJECTIVES:  # the start is the reference: its adapter, frozen, beside
            target = backend.lora_module(handle)
            add_adapter(target, Path(model_ref), REFERENCE)
            activate_adapter(target, "default")  # the one that trains (adding made the new one active)
        return handle

    def datasets(self, handle: Handle, rows: dict[str, list[dict]], root: Path, config):
        return handle.family.backend().datasets(handle, rows, root, config)

    def collate(self, handle: Handle, config):
        return handle.family.backend().collate(handle, config)

    def generate(self, handle: Handle, prompts: list[str], seeds: list[int], settings: dict, out_dir: Path):
        return handle.family.backend().generate(handle, prompts, seeds, settings, out_dir)

    def save(self, handle: Handle, folder: Path) -> None:
        handle.family.backend().save(handle, folder)

    def load_weights(self, handle: Handle, folder: Path) -> None:
        handle.family.backend().load_weights(handle, folder)


def continued_adapter_base(model_ref: str, method: str, config) -> str | None:
    """The base a LoRA folder adapts, when ``model_ref`` is one and its adapter is to be trained further."""
    from studio.models.common import adapter_base

    folder = Path(model_ref).expanduser()
    if method != "lora" or config is None or not config.lora.continue_adapter or not folder.is_dir():
        return None
    return adapter_base(folder, model_ref)


def with_adapter_shape(config, folder: Path):
    """``config`` with the LoRA settings of the adapter saved in ``folder`` (its rank, alpha, dropout and layers)."""
    saved = json.loads((folder / ADAPTER_CONFIG).read_text())
    targets = saved.get("target_modules") or config.lora.target_modules
    lora = config.lora.model_copy(update={
        "r": saved.get("r", config.lora.r), "lora_alpha": saved.get("lora_alpha", config.lora.lora_alpha),
        "lora_dropout": saved.get("lora_dropout", config.lora.lora_dropout),
        "target_modules": targets if isinstance(targets, str) else ",".join(sorted(targets))})
    return config.model_copy(update={"lora": lora})


def backend_for(modality: str) -> ModalityBackend:
    return ModalityBackend(modality)

"""The training config: one validated pydantic model, the single source for the UI form, the CLI
``--set`` keys and the YAML saved with a run.

Field names follow Hugging Face ``TrainingArguments`` where one exists, and PEFT's ``LoraConfig`` for
LoRA, so people can carry their habits over. ``--set`` keys are flat (``learning_rate=1e-4``,
``r=16``, ``max_length=256``): each name appears once across the sections.
"""

from __future__ import annotations

from typing import Literal

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator

from studio.data.augment import TEXT_NONE, AudioAugmentation, ImageAugmentation
from studio.fields import validated
from studio.models.base import METHODS  # noqa: F401 - the training methods, named beside the backends
from studio.models.options import AudioOptions, DiffusionOptions, GanOptions, ImageOptions, LoraOptions, \
    PreferenceOptions, Section, TextOptions, VaeOptions

PRECISION_CHOICES = {"no": "full (32-bit)", "fp16": "half (fp16, GPU)", "bf16": "bfloat16 (bf16)"}


OBJECTIVE_CHOICES = {"sft": "imitate the examples (SFT)", "dpo": "prefer the chosen answer (DPO)",
                     "orpo": "prefer the chosen answer, no reference (ORPO)", "kto": "thumbs up / down (KTO)"}


class TrainConfig(Section):
    objective: Literal["sft", "dpo", "orpo", "kto"] = Field(
        "sft", title="what is learned", json_schema_extra={"choices": OBJECTIVE_CHOICES},
        description="sft: imitate the examples; dpo: prefer the chosen answer of each pair over the rejected one "
                    "(Diffusion-DPO for image and audio diffusion models); orpo: the same without a reference model; "
                    "kto: from answers marked good or bad")
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    lr_scheduler_type: Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
                               "polynomial"] = Field(
        "cosine", title="learning-rate schedule",
        description="how the learning rate changes after warm-up; constant has no warm-up (a run asking for both is "
                    "refused: pick constant_with_warmup)",
        json_schema_extra={"choices": {"constant": "constant, no warm-up", "constant_with_warmup":
                                       "constant after warm-up", "linear": "linear decay", "cosine": "cosine decay",
                                       "cosine_with_restarts": "cosine decay with restarts",
                                       "polynomial": "polynomial decay"}})
    warmup_steps: int = Field(10, ge=0, title="warm-up steps",
                              description="steps that raise the learning rate from 0")
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, title="warm-up share",
                                description="share of the run's steps spent warming up; above 0 it takes the place "
                                            "of warmup_steps")
    num_cycles: int = Field(1, ge=1, title="cosine restarts",
                            description="cosine_with_restarts: how many times the cosine decay runs (restarting "
                                        "from the full learning rate)")
    power: float = Field(1.0, gt=0.0, title="polynomial power",
                         description="polynomial: the power of the decay (1 is linear)")
    num_train_epochs: float = Field(3.0, gt=0.0, title="epochs", description="passes over the training data")
    max_steps: int = Field(-1, ge=-1, description="-1: run the epochs")
    max_minutes: float = Field(0.0, ge=0.0, title="time budget (minutes)",
                               description="end training once this many minutes of it have passed (counted from the "
                                           "first step, across resumes): a checkpoint is saved and the run ends as "
                                           "completed, its log saying why; 0: no limit")
    per_device_train_batch_size: int = Field(8, ge=1, title="batch size", description="examples per step on each "
                                                                                      "device")
    gradient_accumulation_steps: int = Field(1, ge=1, title="batches per update",
                                             description="batches added up before each update (gradient "
                                                         "accumulation)")
    weight_decay: float = Field(0.0, ge=0.0, description="pulls weights towards 0 a little each update")
    max_grad_norm: float = Field(1.0, ge=0.0, title="gradient clipping",
                                 description="largest gradient norm; 0 turns clipping off")
    optim: Literal["adamw", "sgd", "adafactor", "adamw_8bit"] = Field(
        "adamw", title="optimizer", json_schema_extra={"choices": {"adamw": "AdamW", "sgd": "SGD",
                                                                   "adafactor": "Adafactor",
                                                                   "adamw_8bit": "AdamW 8-bit (CUDA, bitsandbytes)"}},
        description="adamw_8bit: AdamW with its moments in 8 bits (bitsandbytes), a quarter of AdamW's optimizer "
                    "memory; needs a CUDA GPU")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(
        "no", title="number precision", description="16-bit numbers save memory and time; fp16 needs a GPU",
        json_schema_extra={"choices": PRECISION_CHOICES})
    gradient_checkpointing: bool = Field(False, title="save memory, run slower",
                                         description="recompute activations instead of keeping them "
                                                     "(gradient checkpointing)")
    torch_compile: bool = Field(False, title="compile the model (torch.compile)",
                                description="compile the model's forward and backward on the first step (a minute or "
                                            "more of compiling, then faster steps on a GPU); if compiling fails the run "
                                            "goes on without it")
    liger_kernels: bool = Field(False, title="Liger kernels (CUDA, Llama family)",
                                description="fused Triton kernels (liger-kernel) for Llama-family text models: less "
                                            "memory and faster steps; needs a CUDA GPU and the liger-kernel package")
    dataloader_workers: int = Field(0, ge=0, le=64, title="data loading processes",
                                    description="processes that read and decode examples while the model trains (0: "
                                                "the training process itself); helps images and audio that are not "
                                                "cached; on a GPU batches also go through pinned memory")
    seed: int = 42
    eval_steps: int = Field(50, ge=1, title="validate every N steps", description="validate every N optimizer "
                                                                                   "steps (and at step 0)")
    early_stopping_patience: int = Field(0, ge=0, description="stop after N evaluations without improvement; 0 off")
    save_steps: int = Field(100, ge=1, title="checkpoint every N steps")
    save_total_limit: int = Field(3, ge=1, title="checkpoints kept", description="keep the last K checkpoints")
    logging_steps: int = Field(1, ge=1, title="log every N steps")
    sample_steps: int = Field(50, ge=0, description="generate the sample prompts every N steps and at the end; 0 off")
    sample_prompts: list[str] = Field(default_factory=list, description="prompts sampled during training; empty: a "
                                                                        "few from the dataset's validation split")
    num_processes: int = Field(1, ge=1, title="processes", description="processes (GPUs) for accelerate launch; "
                                                                         "with num_nodes, on each machine")
    num_nodes: int = Field(1, ge=1, le=1024, title="machines (Ray cluster)",
                           description="machines the run trains on, num_processes on each: above 1 the run goes to "
                                       "the Ray cluster (STUDIO_RAY_ADDRESS) as one Ray Train job of num_nodes x "
                                       "num_processes workers around the same loop")
    use_cpu: bool = Field(False, title="train on the CPU", description="even when a GPU is present")
    accelerate_config_file: str = Field("", description="an `accelerate config` YAML (DeepSpeed, FSDP, several "
                                                        "machines) passed to accelerate launch as --config_file")
    report_to: list[Literal["tensorboard", "wandb", "trackio", "mlflow"]] = Field(
        default_factory=list, title="also log to",
        description="experiment trackers, each on this machine unless set up to upload (wandb offline without "
                    "WANDB_API_KEY); --set report_to=wandb,tensorboard; none: []")
    lora: LoraOptions = Field(default_factory=LoraOptions)
    text: TextOptions = Field(default_factory=TextOptions)
    image: ImageOptions = Field(default_factory=ImageOptions)
    audio: AudioOptions = Field(default_factory=AudioOptions)
    diffusion: DiffusionOptions = Field(default_factory=DiffusionOptions)
    preference: PreferenceOptions = Field(default_factory=PreferenceOptions)
    image_augmentation: ImageAugmentation = Field(default_factory=ImageAugmentation)
    audio_augmentation: AudioAugmentation = Field(default_factory=AudioAugmentation)
    gan: GanOptions = Field(default_factory=GanOptions)
    vae: VaeOptions = Field(default_factory=VaeOptions)

    @model_validator(mode="before")
    @classmethod
    def _flip_under_augmentation(cls, data):
        """Runs saved before augmentation had a section of its own kept ``random_flip`` under ``image``."""
        image = data.get("image") if isinstance(data, dict) else None
        if not (isinstance(image, dict) and "random_flip" in image):
            return data
        given = data.get("image_augmentation") or {}
        given = given.model_dump() if isinstance(given, BaseModel) else dict(given)
        return {**data, "image": {k: v for k, v in image.items() if k != "random_flip"},
                "image_augmentation": {"random_flip": image["random_flip"], **given}}

    @model_validator(mode="before")
    @classmethod
    def _diffusion_options_under_image(cls, data):
        """Runs saved before the diffusion options had a section of their own kept them under ``image``."""
        image = data.get("image") if isinstance(data, dict) else None
        moved = {k: image[k] for k in DiffusionOptions.model_fields if k in image} if isinstance(image, dict) else {}
        if not moved:
            return data
        given = data.get("diffusion") or {}
        given = given.model_dump() if isinstance(given, BaseModel) else dict(given)
        return {**data, "image": {k: v for k, v in image.items() if k not in moved}, "diffusion": {**moved, **given}}

    @field_validator("report_to", mode="before")
    @classmethod
    def _trackers_as_words(cls, value):
        """``--set report_to=wandb,trackio`` and TrainingArguments' ``"none"``, as well as a list."""
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip() and name.strip() != "none"]
        return value

    @model_validator(mode="before")
    @classmethod
    def _tensorboard_switch(cls, data):
        """Runs saved when TensorBoard was the one tracker had ``report_to_tensorboard``."""
        if not (isinstance(data, dict) and "report_to_tensorboard" in data):
            return data
        data = dict(data)
        if data.pop("report_to_tensorboard") and "report_to" not in data:
            data["report_to"] = ["tensorboard"]
        return data

    @model_validator(mode="after")
    def _sane(self):
        from pathlib import Path

        if self.accelerate_config_file and not Path(self.accelerate_config_file).expanduser().is_file():
            raise ValueError(f"accelerate_config_file '{self.accelerate_config_file}' does not exist")
        pictures = self.image_augmentation
        if self.image.cache_latents and (pictures.crops() or pictures.jitters()):
            raise ValueError("cache_latents encodes each picture once, but crops (crop_scale below 1) and colour "
                             "jitter change it every epoch: turn cache_latents off, or keep only random_flip")
        if self.audio.cache_codes and self.audio_augmentation.active():
            raise ValueError("cache_codes encodes each clip once, but audio augmentation changes it every epoch: turn "
                             "cache_codes off, or the audio augmentation")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "TrainConfig":
        return validated(cls, yaml.safe_load(text) or {})


SECTIONS = {"lora": LoraOptions, "text": TextOptions, "image": ImageOptions, "audio": AudioOptions,
            "diffusion": DiffusionOptions, "preference": PreferenceOptions, "image_augmentation": ImageAugmentation,
            "audio_augmentation": AudioAugmentation, "gan": GanOptions, "vae": VaeOptions}
# The sections a dataset of each modality trains with (beside the top-level settings and, for LoRA, ``lora``). Text
# has no augmentation section: ``studio.data.augment.TEXT_NONE`` says why.
MODALITY_SECTIONS = {"text": ("text", "preference"),
                     "image": ("image", "diffusion", "preference", "image_augmentation", "gan", "vae"),
                     "audio": ("audio", "diffusion", "preference", "audio_augmentation", "gan")}


def augmentation_of(config: TrainConfig, modality: str) -> ImageAugmentation | AudioAugmentation | None:
    """The augmentation section a run of ``modality`` trains with (None for text: ``TEXT_NONE``)."""
    return {"image": config.image_augmentation, "audio": config.audio_augmentation}.get(modality)


def describe_augmentation(config: TrainConfig, modality: str) -> str:
    """In words, what a run's training items of ``modality`` go through (its cards and log say it)."""
    section = augmentation_of(config, modality)
    if section is None:
        return f"none ({TEXT_NONE})"
    return f"{section.describe()}, drawn anew each epoch from the run's seed" if section.active() else "none"


def flat_keys() -> dict[str, str | None]:
    """Every ``--set`` key → its section (None for top-level fields)."""
    keys: dict[str, str | None] = {k: None for k in TrainConfig.model_fields if k not in SECTIONS}
    for section, model in SECTIONS.items():
        keys.update({k: section for k in model.model_fields})
    return keys


def changed_settings(config: TrainConfig, names: list[str]) -> list[str]:
    """Of ``names`` (``--set`` keys, or whole sections), those ``config`` sets away from their defaults, as
    ``key=value``."""
    keys, changed = flat_keys(), []
    for name in names:
        fields = list(SECTIONS[name].model_fields) if name in SECTIONS else [name]
        for key in fields:
            section = keys[key]
            model, values = (SECTIONS[section], getattr(config, section)) if section else (TrainConfig, config)
            value = getattr(values, key)
            if value != model.model_fields[key].get_default(call_default_factory=True):
                changed.append(f"{key}={value}")
    return changed


def _parse_value(raw: str):
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def apply_overrides(config: TrainConfig, pairs: list[str]) -> TrainConfig:
    """``["learning_rate=1e-4", "r=16"]`` applied to ``config``; unknown keys name the known ones."""
    data = config.model_dump()
    keys = flat_keys()
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE (got {pair!r})")
        if key not in keys:
            raise ValueError(f"unknown setting '{key}'. Known: {', '.join(sorted(keys))}")
        value = _parse_value(raw)
        if key == "sample_prompts" and isinstance(value, str):
            value = [p.strip() for p in value.split("|") if p.strip()]
        section = keys[key]
        (data[section] if section else data)[key] = value
    return validated(TrainConfig, data)

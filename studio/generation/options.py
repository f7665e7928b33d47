"""Generation settings, one pydantic model per modality: the single source for the Generate form, the CLI's
``--set key=value`` and the settings stored with a sample set. The field names are the backends' own."""

from __future__ import annotations

import typing
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from studio.fields import validated


class GenerationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def backend_settings(self) -> dict:
        """What the backend's ``generate`` takes (its defaults where a field says 'model default')."""
        return self.model_dump()


class TextSettings(GenerationSettings):
    max_new_tokens: int = Field(64, ge=1, le=4096, description="most tokens generated per sample")
    temperature: float = Field(0.8, ge=0.0, le=5.0, description="sampling temperature; 0 always takes the likeliest "
                                                                  "token (greedy)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling: the smallest set of tokens whose "
                                                          "probability adds up to this; 1 turns it off")
    top_k: int = Field(0, ge=0, le=10_000, description="sample among the k likeliest tokens; 0 turns it off")
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0, description="above 1 discourages repeating tokens")
    chat_template: Literal["auto", "on", "off"] = Field(
        "auto", description="wrap the prompt in the model's chat template; auto: on when the tokenizer has one "
                            "(off for starters)")

    def backend_settings(self) -> dict:
        settings = self.model_dump()
        settings["chat_template"] = {"auto": None, "on": True, "off": False}[self.chat_template]
        return settings


class ImageSettings(GenerationSettings):
    steps: int | None = Field(None, ge=1, le=500, description="denoising steps; empty: the model's default (30; 8 "
                                                               "Euler steps for a flow-matching model)")
    guidance_scale: float | None = Field(None, ge=0.0, le=50.0, description="classifier-free guidance; empty: the "
                                                                             "model's default (2 for starters, 7.5 "
                                                                             "for pretrained); 1 turns it off")
    scheduler: Literal["ddim", "model"] = Field(
        "ddim", title="sampler", description="the scheduler that removes the noise: DDIM, or the model's own class",
        json_schema_extra={"choices": {"ddim": "DDIM (the same image for a seed)", "model": "the model's own"}})
    width: int = Field(0, ge=0, le=2048, description="pixels, a multiple of 8 for SD-class models; 0: the training "
                                                      "resolution")
    height: int = Field(0, ge=0, le=2048, description="pixels, a multiple of 8 for SD-class models; 0: the training "
                                                       "resolution")
    negative_prompt: str = Field("", description="what guidance steers away from")


class AudioSettings(GenerationSettings):
    seconds: float = Field(0.0, ge=0.0, le=60.0, description="clip length; 0: the training clip length")
    steps: int | None = Field(None, ge=1, le=500, description="denoising steps (spectrogram models); empty: the "
                                                               "model's default (30; 8 for flow matching)")
    guidance_scale: float | None = Field(None, ge=0.0, le=50.0, description="classifier-free guidance; empty: the "
                                                                             "model's default (MusicGen 3)")
    temperature: float = Field(1.0, ge=0.0, le=5.0, description="sampling temperature (MusicGen); 0 is greedy")
    top_k: int = Field(250, ge=0, le=10_000, description="sample among the k likeliest codes (MusicGen)")
    negative_prompt: str = Field("", description="what guidance steers away from (spectrogram models)")

    def backend_settings(self) -> dict:
        settings = self.model_dump()
        if settings["guidance_scale"] is None:
            settings.pop("guidance_scale")  # MusicGen reads a missing key as its own default
        return settings


SETTINGS: dict[str, type[GenerationSettings]] = {"text": TextSettings, "image": ImageSettings, "audio": AudioSettings}


def settings_model(modality: str) -> type[GenerationSettings]:
    if modality not in SETTINGS:
        raise ValueError(f"no generation settings for modality '{modality}'")
    return SETTINGS[modality]


def parse_settings(modality: str, pairs: list[str] | None = None, values: dict | None = None) -> GenerationSettings:
    """``values`` (a form's or a stored dict) with ``["temperature=0.7", "max_new_tokens=32"]`` applied on top;
    an unknown key names the known ones, a bad value says which bound it broke."""
    model = settings_model(modality)
    known = ", ".join(model.model_fields)
    data = dict(values or {})
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE (got {pair!r})")
        if key not in model.model_fields:
            raise ValueError(f"unknown {modality} generation setting '{key}'. Known: {known}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        annotation = model.model_fields[key].annotation
        data[key] = raw if annotation is str or typing.get_origin(annotation) is Literal else value  # "off" stays
    unknown = sorted(set(data) - set(model.model_fields))
    if unknown:
        raise ValueError(f"unknown {modality} generation setting '{unknown[0]}'. Known: {known}")
    return validated(model, data)

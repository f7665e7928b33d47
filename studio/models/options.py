"""The sections of the training config that a backend reads: how LoRA adapts a model, how each modality's examples
become batches and how a diffusion model learns. They live beside the backends (which read them) and the training
config (``studio.training.config.TrainConfig``) is made of them, so the models never import the training package.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraOptions(Section):
    r: int = Field(8, ge=1, le=512, title="LoRA rank", description="size of the adapters: more learns more, "
                                                                   "costs more memory")
    lora_alpha: int = Field(16, ge=1, title="LoRA alpha", description="LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, title="LoRA dropout")
    target_modules: str = Field("auto", title="layers adapted",
                                description="'auto' (the family's preset: attention projections), "
                                            "'all-linear', or comma-separated module names")
    load_in_4bit: bool = Field(False, title="4-bit base model",
                               description="QLoRA: keep the frozen base in 4-bit NF4 (needs a CUDA GPU and "
                                           "the bitsandbytes package)")
    continue_adapter: bool = Field(True, title="go on with the start's adapter",
                                   description="starting from a LoRA run's checkpoint: train that adapter further "
                                               "(default: nothing is folded or lost, the result is still one adapter "
                                               "on the original base, and a preference objective compares with the "
                                               "start itself, a frozen copy of its adapter); off: fold it into the "
                                               "weights and train a new adapter")


class TextOptions(Section):
    text_format: Literal["auto", "raw", "chat"] = Field(
        "auto", title="text format",
        json_schema_extra={"choices": {"auto": "auto (from the data)", "raw": "running text (raw)",
                                       "chat": "conversations (chat)"}},
        description="raw: plain language modelling; chat: prompt/response or messages through the chat template")
    response_only_loss: bool = Field(True, title="learn only the responses",
                                     description="chat format: the prompts are not learned (response-only loss)")
    max_length: int = Field(256, ge=8, le=32768, title="tokens per sequence",
                            description="tokens per training sequence (max length)")
    packing: bool = Field(True, title="pack short examples together",
                          description="pack several short examples into each sequence (raw format; packing)")
    separate_documents: bool = Field(True, title="packed texts do not see each other",
                                     description="packing: each text attends only to itself (positions restart at "
                                                 "every text, attention stays within it, as TRL's padding-free "
                                                 "packing); off: a text also sees the texts packed before it")
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", title="attention implementation",
        json_schema_extra={"choices": {"auto": "auto (the model's default)", "sdpa": "PyTorch SDPA",
                                       "eager": "eager (plain PyTorch)",
                                       "flash_attention_2": "FlashAttention-2 (CUDA, flash-attn package)"}},
        description="how attention is computed; flash_attention_2 needs a CUDA GPU and the flash-attn package")


class ImageOptions(Section):
    resolution: int = Field(32, ge=8, le=2048, description="training resolution in pixels (square)")
    aspect_buckets: bool = Field(False, title="keep each picture's shape",
                                 description="aspect-ratio bucketing (kohya_ss's enable_bucket): each picture is scaled "
                                             "to the bucket nearest its shape, about resolution x resolution pixels, "
                                             "instead of a centre-cropped square, and a batch holds one bucket "
                                             "(examples; preference pairs stay square)")
    cache_latents: bool = Field(False, title="cache latents",
                                description="encode each picture with the VAE once, before training, and keep it on "
                                            "disk beside the dataset, with the frozen text encoder's features of "
                                            "each caption (kohya_ss's cache_latents_to_disk and "
                                            "cache_text_encoder_outputs); the same loss, less work per step")


class DiffusionOptions(Section):
    """How a diffusion model learns: image models and spectrogram audio models alike."""
    caption_dropout: float = Field(0.1, ge=0.0, le=1.0, title="captions left out",
                                   description="share of captions dropped in training (enables guidance)")
    prediction_type: Literal["auto", "epsilon", "v_prediction", "flow_matching"] = Field(
        "auto", title="what the model predicts",
        json_schema_extra={"choices": {"auto": "auto (as the model was trained)", "epsilon": "the noise (epsilon)",
                                       "v_prediction": "the velocity (v-prediction)",
                                       "flow_matching": "the flow (flow matching)"}},
        description="prediction type; auto: what the model's scheduler was trained with")
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0, title="EMA weights",
                             description="keep an exponential moving average of the weights with this decay (0 off; "
                                         "0.999 usual for long runs, ramped up over the first steps); validation, "
                                         "samples and saved checkpoints use it (diffusers' --use_ema)")
    noise_offset: float = Field(0.0, ge=0.0, le=1.0, title="noise offset",
                                description="adds this much of one random shift per picture and channel to the noise, "
                                            "so the model learns very dark and very bright pictures (0 off; 0.05 to "
                                            "0.1 is usual)")
    snr_gamma: float = Field(0.0, ge=0.0, title="loss weighting by noise level",
                             description="min-SNR gamma: evens out how much each noise level counts; 0 turns it off "
                                         "(5 is usual)")


class GanOptions(Section):
    """How a GAN learns (the ``starter-image-gan`` family; ``studio.models.gan``)."""
    discriminator_learning_rate: float = Field(0.0, ge=0.0, le=1.0, title="discriminator learning rate",
                                               description="the discriminator's own rate, on the run's schedule "
                                                           "(0: the run's learning rate)")
    r1_gamma: float = Field(1.0, ge=0.0, title="R1 penalty",
                            description="weight of the gradient penalty on real pictures (R1, Mescheder et al. "
                                        "2018), which keeps the discriminator smooth; 0 turns it off")
    augment: str = Field("translation,cutout", title="differentiable augmentation",
                         description="DiffAugment policies applied to every picture the discriminator sees, real "
                                     "or generated, so it does not memorise a small dataset: comma-separated of "
                                     "color, translation, cutout; empty: none (color blurs the colours a caption "
                                     "asks for: off by default)")
    generator_ema: float = Field(0.999, ge=0.0, lt=1.0, title="averaged generator",
                                 description="decay of the exponential moving average of the generator's weights, "
                                             "which samples and saved models use (ramped up over the first steps; 0: "
                                             "the raw generator)")
    diversity_floor: float = Field(0.1, ge=0.0, title="mode-collapse floor",
                                   description="validation warns when samples of one caption across seeds are closer "
                                               "than this (mean pairwise RMS distance in [-1, 1] pixels)")


class VaeOptions(Section):
    """How a VAE learns (the ``starter-image-vae`` family; ``studio.models.vae``)."""
    kl_weight: float = Field(1.0, gt=0.0, le=100.0, title="KL weight (beta)",
                             description="weight of the KL term beside the reconstruction error (beta; 1: the ELBO); "
                                         "higher: a smoother latent space and blurrier pictures. Above 0: without "
                                         "it the latent drifts from the prior that sampling draws from")
    kl_warmup_steps: int = Field(100, ge=0, title="KL warm-up steps",
                                 description="the KL weight rises linearly from 0 to kl_weight over these optimizer "
                                             "steps, so the decoder learns to use the latent before the KL term "
                                             "pulls it to the prior; 0: the full weight from the first step")


class AudioOptions(Section):
    clip_seconds: float = Field(1.0, gt=0.0, le=60.0, description="length of training clips")
    sample_rate: int = Field(0, ge=0, description="in Hz; 0: the model's sample rate")
    length_buckets: bool = Field(False, title="batch clips by length",
                                 description="length bucketing: a clip shorter than clip_seconds is cut to the "
                                             "nearest of 1/4, 1/2, 3/4 or all of clip_seconds at or above its length "
                                             "instead of padded to the whole, and a batch holds clips of one length, "
                                             "so short clips cost less (examples; preference pairs stay whole)")
    cache_codes: bool = Field(False, title="cache audio codes",
                              description="MusicGen: encode each clip with the frozen EnCodec once, before training, "
                                          "and keep the codes on disk beside the dataset, with the frozen T5's "
                                          "features of each caption; training clips are then drawn from fixed "
                                          "windows of each file (clip_seconds apart) rather than anywhere in it. "
                                          "The same loss, less work per step (no effect on the spectrogram starter)")


class PreferenceOptions(Section):
    """How a preference objective learns (``training/objectives.py``); names as TRL's DPOConfig / KTOConfig /
    ORPOConfig call them."""
    beta: float = Field(0.1, gt=0.0, title="preference strength (beta)",
                        description="DPO/KTO: how far the model may move from the reference (higher: less far); "
                                    "ORPO: the weight of the odds-ratio term (lambda); Diffusion-DPO: its beta (much "
                                    "larger: thousands)")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field(
        "sigmoid", title="DPO loss", json_schema_extra={"choices": {"sigmoid": "sigmoid (DPO)", "ipo": "IPO",
                                                                    "hinge": "hinge (SLiC)"}},
        description="the DPO loss type, as TRL names it")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, title="share of flipped preferences",
                                   description="DPO sigmoid loss: how many preferences may be wrong (cDPO label "
                                               "smoothing); 0 trusts every vote")
    desirable_weight: float = Field(1.0, gt=0.0, title="weight of thumbs up",
                                    description="KTO: how much a good answer counts")
    undesirable_weight: float = Field(1.0, gt=0.0, title="weight of thumbs down",
                                      description="KTO: how much a bad answer counts")

"""The models people can pick: curated Hugging Face Hub ids per modality, and the offline starters.

Sizes are the published parameter counts; the shapes (layers, hidden size) feed the memory estimate.
Whether a model's weights are in the local Hugging Face cache is checked without any network call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    id: str
    modality: str
    family: str
    params_m: float          # millions of parameters (the trained part: the LM, or the UNet/transformer)
    layers: int
    hidden: int
    note: str
    license: str = ""
    starter: bool = False
    recommended: tuple = ()  # TrainConfig --set pairs that suit this model (starters: measured to learn)
    good_at: str = ""        # what its architecture is good and bad at (the choice between architectures)
    bad_at: str = ""
    # Sampling cost: network passes per sample with the default sampler (per generated token for text); 0: not stated
    sampling_passes: int = 0
    sampling_unit: str = "per sample"
    # Seconds per training step with the recommended settings on the reference CPU (REFERENCE_CPU; bench/
    # architecture_speed.py); 0: not measured. The Model tab's guide prefers this machine's own runs.
    reference_seconds_per_step: float = 0.0
    options: tuple = ()      # ``Option``s: settings that make another architecture of the same model (flow matching)


@dataclass(frozen=True)
class Option:
    """A setting of a catalog model that changes its architecture's trade-offs: a bake-off and the guide treat
    ``ENTRY+suffix`` as an architecture of its own (``starter-image+flow-matching``)."""
    name: str                # for people: "flow matching"
    suffix: str              # the architecture's key after the entry's id and "+"
    overrides: tuple         # TrainConfig --set pairs, after the entry's recommended ones
    good_at: str
    bad_at: str
    sampling_passes: int
    reference_seconds_per_step: float = 0.0


@dataclass(frozen=True)
class Architecture:
    """An architecture one can pick: a starter of the catalog, or one of its ``Option``s."""
    key: str                 # "starter-image" or "starter-image+flow-matching"
    entry: Entry
    option: Option | None = None

    @property
    def name(self) -> str:
        return f"{self.entry.id} with {self.option.name}" if self.option else self.entry.id

    @property
    def overrides(self) -> tuple:
        return self.option.overrides if self.option else ()

    @property
    def recommended(self) -> tuple:
        return (*self.entry.recommended, *self.overrides)

    def _own(self, name: str):
        """The option's value where it has one, else the entry's."""
        return (getattr(self.option, name) if self.option else None) or getattr(self.entry, name)

    @property
    def good_at(self) -> str:
        return self._own("good_at")

    @property
    def bad_at(self) -> str:
        return self._own("bad_at")

    @property
    def sampling_passes(self) -> int:
        return self._own("sampling_passes")

    @property
    def reference_seconds_per_step(self) -> float:
        return self._own("reference_seconds_per_step")


# What made the GAN starter learn shapes.zip (tests/test_starters_learn.py): both networks at one constant rate of
# 1e-3 (2e-3 collapsed, 2e-4 and 5e-4 had not learned the colours by 300 steps), with gan's defaults (R1 1, DiffAugment
# translation and cutout, Adam's beta1 0).
# The reference of ``reference_seconds_per_step``: the figures are scaled by its cores over this machine's
# (bench/architecture_speed.py --threads 1 measured them on a busy machine; docs/PERFORMANCE.md has the run). An option
# without a figure of its own (flow matching: the same network, the same step) takes its entry's.
REFERENCE_CPU = {"name": "one thread of the development machine's CPU", "cores": 1}
# The diffusion starters' default samplers (studio.models.diffusion.DIFFUSION_STEPS, FLOW_STEPS; a test checks they
# agree): each step is one pass of the network over the batch of the prompt and its empty caption (guidance).
DIFFUSION_PASSES, FLOW_PASSES = 30, 8
FLOW_MATCHING = Option(
    "flow matching", "flow-matching", ("prediction_type=flow_matching",),
    good_at="diffusion's quality with few sampling steps (a straight path from noise to the sample: 8 Euler steps)",
    bad_at="still several passes per sample, unlike a GAN or VAE; few steps lose some fine detail",
    sampling_passes=FLOW_PASSES)

GAN_RECOMMENDED = ("learning_rate=1e-3", "per_device_train_batch_size=16", "max_steps=300", "warmup_steps=0",
                   "lr_scheduler_type=constant", "eval_steps=100", "save_steps=100", "resolution=32")

# What made the VAE starter learn shapes.zip (tests/test_starters_learn.py; docs/PERFORMANCE.md): one constant rate of
# 2e-3, batch 16, 100 steps, the KL weight (beta) 4 warmed up over the first 50. At beta 1 some prior samples came out
# faint (28 of 40 with the asked colour for one seed, 40 for another); at 4, 40 of 40 for three seeds, and at 60 steps.
VAE_RECOMMENDED = ("learning_rate=2e-3", "per_device_train_batch_size=16", "max_steps=100", "warmup_steps=0",
                   "lr_scheduler_type=constant", "eval_steps=50", "save_steps=100", "resolution=32",
                   "kl_weight=4", "kl_warmup_steps=50")

# What made the audio GAN follow pitch on tones.zip (tests/test_starters_learn.py; docs/PERFORMANCE.md): the image
# GAN's rate and batch on the audio starter's 0.5 s spectrograms, with DiffAugment shifting in time only (a vertical
# translation of a spectrogram changes its pitch). Every clip was at the asked pitch from step 50: 150 is 3x that.
AUDIO_GAN_RECOMMENDED = ("learning_rate=1e-3", "per_device_train_batch_size=16", "max_steps=150", "warmup_steps=0",
                         "lr_scheduler_type=constant", "eval_steps=50", "save_steps=50", "clip_seconds=0.5",
                         "augment=time_shift,cutout")

CATALOG: list[Entry] = [
    Entry("starter-text", "text", "llama", 0.8, 3, 128, "offline: a small Llama trained from scratch, with a "
          "tokenizer trained on your dataset", starter=True,
          recommended=("learning_rate=3e-3", "per_device_train_batch_size=16", "max_length=128", "packing=true",
                       "num_train_epochs=20", "warmup_steps=10", "eval_steps=25", "save_steps=100"),
          good_at="text: a transformer predicts the next token, the architecture language models are made of; "
                  "learns your dataset's words and style",
          bad_at="from scratch it knows only what your dataset holds (a pretrained model with LoRA knows far more); "
                 "one pass per generated token",
          sampling_passes=1, sampling_unit="per generated token", reference_seconds_per_step=0.37),
    Entry("HuggingFaceTB/SmolLM2-135M-Instruct", "text", "llama", 135, 30, 576, "small instruct LM", "apache-2.0"),
    Entry("HuggingFaceTB/SmolLM2-360M-Instruct", "text", "llama", 362, 32, 960, "small instruct LM", "apache-2.0"),
    Entry("Qwen/Qwen2.5-0.5B-Instruct", "text", "qwen2", 494, 24, 896, "instruct LM", "apache-2.0"),
    Entry("Qwen/Qwen2.5-1.5B-Instruct", "text", "qwen2", 1540, 28, 1536, "instruct LM", "apache-2.0"),
    Entry("meta-llama/Llama-3.2-1B-Instruct", "text", "llama", 1240, 16, 2048, "instruct LM (gated on the Hub)",
          "llama3.2"),
    Entry("starter-image", "image", "stable-diffusion", 2.0, 2, 64, "offline: a small pixel-space UNet and text "
          "encoder trained from scratch", starter=True,
          recommended=("learning_rate=3e-3", "per_device_train_batch_size=16", "max_steps=450", "warmup_steps=10",
                       "eval_steps=50", "save_steps=100", "resolution=32"),
          good_at="quality and variety; follows the caption closely (guidance); steady training",
          bad_at="slow sampling: 30 steps of the network per picture",
          sampling_passes=DIFFUSION_PASSES, options=(FLOW_MATCHING,), reference_seconds_per_step=1.86),
    Entry("starter-image-gan", "image", "gan", 0.5, 4, 64, "offline: a small conditional GAN (spectral norm, hinge "
          "loss, R1, DiffAugment, averaged generator) trained from scratch", starter=True,
          recommended=GAN_RECOMMENDED,
          good_at="sharp pictures in one pass: sampling many times faster than diffusion",
          bad_at="unstable training and mode collapse (watch val_gan/diversity); less variety than diffusion",
          sampling_passes=1, reference_seconds_per_step=0.34),
    Entry("starter-image-vae", "image", "vae", 0.41, 4, 64, "offline: a small conditional VAE (caption-conditioned "
          "encoder and FiLM decoder, KL warm-up) trained from scratch", starter=True,
          recommended=VAE_RECOMMENDED,
          good_at="smooth latent space, one-pass sampling, stable training; reconstructs a given picture",
          bad_at="blurrier than GAN or diffusion",
          sampling_passes=1, reference_seconds_per_step=0.11),
    Entry("hf-internal-testing/tiny-stable-diffusion-pipe", "image", "stable-diffusion", 0.3, 2, 32,
          "a tiny SD pipeline for trying the workflow", "apache-2.0"),
    Entry("stable-diffusion-v1-5/stable-diffusion-v1-5", "image", "stable-diffusion", 860, 16, 1280,
          "Stable Diffusion 1.5 (UNet 860M)", "creativeml-openrail-m"),
    Entry("stabilityai/stable-diffusion-xl-base-1.0", "image", "stable-diffusion-xl", 2567, 70, 2048,
          "SDXL base (UNet 2.6B) — not trainable in this version yet", "openrail++"),
    Entry("starter-audio", "audio", "spectrogram-diffusion", 2.0, 2, 64, "offline: a small diffusion model on "
          "spectrograms trained from scratch", starter=True,
          recommended=("learning_rate=2e-3", "per_device_train_batch_size=16", "max_steps=400", "warmup_steps=10",
                       "eval_steps=50", "save_steps=100", "clip_seconds=0.5"),
          good_at="quality and variety of sounds; follows the caption (guidance); steady training",
          bad_at="slow sampling: 30 steps of the network per clip",
          sampling_passes=DIFFUSION_PASSES, options=(FLOW_MATCHING,), reference_seconds_per_step=1.04),
    Entry("starter-audio-gan", "audio", "gan", 0.9, 4, 64, "offline: the conditional GAN of starter-image-gan on "
          "the audio starter's spectrograms (Griffin-Lim back to sound), trained from scratch", starter=True,
          recommended=AUDIO_GAN_RECOMMENDED,
          good_at="a whole clip in one pass of the generator: sampling many times faster than diffusion",
          bad_at="unstable training and mode collapse (watch val_gan/diversity); clips only of the trained length",
          sampling_passes=1, reference_seconds_per_step=0.44),  # 0.43x starter-audio's, measured beside it
    Entry("facebook/musicgen-small", "audio", "musicgen", 300, 24, 1024, "MusicGen small (text-to-music, 32 kHz "
          "mono): LoRA, full or a new decoder; T5 and EnCodec stay frozen", "cc-by-nc-4.0"),
    Entry("stabilityai/stable-audio-open-1.0", "audio", "stable-audio", 1057, 24, 1536,
          "Stable Audio Open (gated on the Hub) — not trainable in this version yet", "stable-audio-community"),
]


def find(model_id: str) -> Entry | None:
    return next((e for e in CATALOG if e.id == model_id), None)


def entries(modality: str | None = None) -> list[Entry]:
    return [e for e in CATALOG if modality in (None, e.modality)]


def architectures(modality: str | None = None) -> list[Architecture]:
    """The architectures one can pick for ``modality``: each starter, then each of its options."""
    return [Architecture(f"{e.id}+{o.suffix}" if o else e.id, e, o)
            for e in entries(modality) if e.starter for o in (None, *e.options)]


def find_architecture(key: str) -> Architecture | None:
    return next((a for a in architectures() if a.key == key), None)


def is_cached(model_id: str) -> bool:
    """Whether the model's config is in the local Hugging Face cache (no network)."""
    if find(model_id) and find(model_id).starter:
        return True
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    for filename in ("config.json", "model_index.json"):
        found = try_to_load_from_cache(model_id, filename)
        if isinstance(found, str):
            return True
    return False


_reachable: bool | None = None


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether huggingface.co answers (asked once per process; HF_HUB_OFFLINE=1 means no)."""
    global _reachable
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    if _reachable is None:
        import socket

        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
            _reachable = True
        except OSError:
            _reachable = False
    return _reachable


def availability(model_id: str) -> str:
    """A plain sentence about whether this model can be used here and now."""
    entry = find(model_id)
    if entry and entry.starter:
        return "built in: works offline"
    if is_cached(model_id):
        return "in the local Hugging Face cache"
    if hub_reachable():
        return "will be downloaded from the Hugging Face Hub on first use"
    return ("not in the local cache and the Hugging Face Hub cannot be reached: pick a starter model, a local "
            "folder, or copy the weights into the cache")


def memory_estimate(total_params: float, trainable_params: float, *, precision: str, batch_size: int,
                    sequence: int, layers: int, hidden: int, optimizer: str = "adamw") -> dict:
    """Approximate peak training memory in bytes, by part.

    Weights at 2 bytes in fp16/bf16 (frozen base) or 4; gradients and the optimizer's fp32 state only for
    trainable weights (AdamW: 2 states = 8 bytes, SGD with momentum: 4, Adafactor: about 4); activations
    ~ 34 bytes x batch x sequence x hidden x layers (Korthikanti et al. 2022, no recomputation), halved in
    fp32-free mixed precision. ``sequence`` is tokens (text) or latent pixels (image/audio)."""
    half = precision in ("fp16", "bf16")
    weights = total_params * (2 if half and trainable_params < total_params else 4)
    state_bytes = {"adamw": 8, "sgd": 4, "adafactor": 4}.get(optimizer, 8)
    gradients = trainable_params * 4
    optimizer_state = trainable_params * state_bytes
    activations = 34 * batch_size * sequence * hidden * layers * (0.5 if half else 1.0)
    total = weights + gradients + optimizer_state + activations
    return {"weights": weights, "gradients": gradients, "optimizer": optimizer_state, "activations": activations,
            "total": total}


def fit_verdict(needed_bytes: float, available_bytes: float) -> str:
    """fits / tight / will not fit, against the memory of the device that will train."""
    if needed_bytes <= 0.7 * available_bytes:
        return "fits"
    if needed_bytes <= available_bytes:
        return "tight"
    return "will not fit"


# What made the preference tests learn (tests/test_preference_text.py, test_preference_media.py), per model family
# and objective: from a starter run's model, 30 steps of 8 pairs at a constant rate. Diffusion-DPO's beta is that
# of diffusers' train_diffusion_dpo.py (thousands: a picture's score is a mean squared error, not a log-likelihood).
_MEASURED_TEXT = ("learning_rate=5e-4", "beta=0.5", "per_device_train_batch_size=8", "max_steps=30", "warmup_steps=0",
                  "lr_scheduler_type=constant", "eval_steps=10")
OBJECTIVE_RECOMMENDED: dict[tuple[str, str], tuple[str, ...]] = {
    **{("starter-text", objective): _MEASURED_TEXT for objective in ("dpo", "orpo", "kto")},
    **{(family, "dpo"): ("learning_rate=1e-3", "beta=1000", "per_device_train_batch_size=8", "max_steps=30",
                         "warmup_steps=0", "lr_scheduler_type=constant", "eval_steps=10")
       for family in ("starter-image", "starter-audio")},  # the audio starter: measured by the pitch test
}


def recommended_overrides(model_ref: str, objective: str = "sft", family: str | None = None) -> list[str]:
    """``--set`` pairs that suit ``model_ref`` (empty when the defaults are as good as anything), and training it
    with ``objective`` as a model of ``family`` (a ``registry.Family``'s name)."""
    entry = find(model_ref)
    return (list(entry.recommended) if entry else []) + list(OBJECTIVE_RECOMMENDED.get((family, objective), ()))

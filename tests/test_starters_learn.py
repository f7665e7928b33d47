"""The image and audio starters really learn the shipped examples (the issue's bars), trained with the
settings the catalog recommends for them, through the studio's one loop. On a quiet 2-core machine the image
starter's takes about 3 minutes, the others less; beside other work, several times that. (starter-text's bar is
tested in test_text_backend.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.data.service import get_version, import_dataset, read_manifest
from studio.models.catalog import recommended_overrides
from studio.models.registry import backend_for
from studio.training.config import TrainConfig, apply_overrides
from studio.training.loop import train_in_process

# the starters trained until they learn the examples: minutes on a quiet machine, several times that on a busy one
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
SEEDS = range(100, 105)  # seeds the training never saw
# The GAN's samples of one prompt are not all alike: their mean pairwise RMS distance (pixels in [-1, 1]) is above the
# mode-collapse monitor's default floor (gan.diversity_floor).
GAN_DIVERSITY_FLOOR = 0.1  # a sixth of the spread of real pictures of one caption (0.57-0.61 in shapes.zip)
# The VAE's too, by the same measure: its prior's latents must reach the decoder (no posterior collapse to the caption
# alone). Its samples are blurred, so they spread less than real pictures; 0.19-0.24 in the exploration.
VAE_DIVERSITY_FLOOR = 0.1
# The audio GAN's spectrograms of one prompt (values in [-1, 1]) over 16 seeds: the same floor, the monitor's default.
AUDIO_GAN_DIVERSITY_FLOOR = 0.1


def train_starter(store, modality: str, example: str, model: str = ""):
    """``model`` (by default ``starter-MODALITY``) trained on ``example`` with its recommended settings."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    result = import_dataset(store, [EXAMPLES / example])
    version = get_version(store, str(result["dataset_id"]))
    rows = {split: read_manifest(store, version, split) for split in ("train", "validation")}
    model = model or f"starter-{modality}"
    config = apply_overrides(TrainConfig(use_cpu=True), recommended_overrides(model))
    backend = backend_for(modality)
    handle = backend.load(model, "scratch", config, rows["train"])
    out = train_in_process(backend, handle, rows, store.path(version.path), config)
    assert out["status"] == "completed"
    losses = [h["value"] for h in out["history"] if h["name"] == "val_loss"]
    if handle.family.own_step != "adversarial":  # a GAN's validation loss is its discriminator's: no falling curve
        assert losses[-1] < 0.5 * losses[0]  # the validation loss fell, not only the training loss
    return backend, handle


def test_starter_image_draws_the_colour_it_is_asked_for(store, tmp_path):
    from studio.examples.shapes import COLOURS, SHAPES, dominant_colour

    backend, handle = train_starter(store, "image", "shapes.zip")
    prompts = [f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES for _ in SEEDS]
    seeds = [seed for _ in COLOURS for _ in SHAPES for seed in SEEDS]
    samples = backend.generate(handle, prompts, seeds, {"steps": 20}, tmp_path / "images")
    right = [dominant_colour(s.path, COLOURS) == s.prompt.split()[1] for s in samples]
    assert sum(right) >= 0.8 * len(samples), f"{sum(right)} of {len(samples)} images have the asked colour"


@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_a_one_pass_starter_draws_the_colour_it_is_asked_for_and_varies_over_seeds(store, tmp_path, kind):
    """starter-image-gan and starter-image-vae: one pass of a network per picture (``studio.models.gan``, ``.vae``)."""
    import importlib

    from studio.examples.shapes import COLOURS, SHAPES, dominant_colour
    from studio.models.diffusion import tokenize
    from studio.models.gan import mean_pairwise_distance

    backend, handle = train_starter(store, "image", "shapes.zip", f"starter-image-{kind}")
    prompts = [f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES for _ in SEEDS]
    seeds = [seed for _ in COLOURS for _ in SHAPES for seed in SEEDS]
    samples = backend.generate(handle, prompts, seeds, {}, tmp_path / "images")
    right = [dominant_colour(s.path, COLOURS) == s.prompt.split()[1] for s in samples]
    assert sum(right) >= 0.8 * len(samples), f"{sum(right)} of {len(samples)} images have the asked colour"
    ids = tokenize(handle.parts.tokenizer, ["a red circle"] * 16)
    sample_pictures = importlib.import_module(f"studio.models.{kind}").sample_pictures
    diversity = float(mean_pairwise_distance(sample_pictures(handle.module, ids, list(range(16)))))
    floor = {"gan": GAN_DIVERSITY_FLOOR, "vae": VAE_DIVERSITY_FLOOR}[kind]
    assert diversity > floor, f"samples of one prompt differ by {diversity:.3f} only"


@pytest.mark.parametrize("model", ["starter-audio", "starter-audio-gan"])
def test_the_audio_starters_sing_the_pitch_they_are_asked_for(store, tmp_path, model):
    import soundfile as sf

    from studio.examples.tones import TONES
    from studio.models.audio import dominant_frequency

    backend, handle = train_starter(store, "audio", "tones.zip", model)
    prompts = [caption for caption in TONES for _ in SEEDS]
    seeds = [seed for _ in TONES for seed in SEEDS]
    samples = backend.generate(handle, prompts, seeds, {"steps": 20}, tmp_path / "clips")  # (a GAN takes no steps)
    found = []
    for s in samples:
        wave, rate = sf.read(str(s.path))
        found.append((s.prompt, round(dominant_frequency(wave, rate))))
    right = [abs(hz - TONES[prompt][0]) <= 0.1 * TONES[prompt][0] for prompt, hz in found]
    assert sum(right) >= 0.8 * len(samples), f"{sum(right)} of {len(samples)} clips at the asked pitch: {found}"
    if handle.family.own_step == "adversarial":  # a GAN: its clips of one prompt are not all one clip
        from studio.models.diffusion import tokenize
        from studio.models.gan import mean_pairwise_distance, sample_pictures

        ids = tokenize(handle.parts.tokenizer, ["mid tone"] * 16)
        diversity = float(mean_pairwise_distance(sample_pictures(handle.module, ids, list(range(16)))))
        assert diversity > AUDIO_GAN_DIVERSITY_FLOOR, f"spectrograms of one prompt differ by {diversity:.3f} only"

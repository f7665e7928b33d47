"""Image and audio metrics: held-out denoising loss at fixed noise levels and seeds, sample diversity, and,
only with encoder weights the person points the studio at (a local CLIP folder for images, a local CLAP folder
for audio), prompt agreement (CLIP / CLAP score) and Fréchet distances (FID / FAD on that encoder's features).

Plain functions of a loaded handle, of arrays or of files; ``studio.evaluation.metrics`` puts them together for
a run. numpy is needed at import; torch, scipy and transformers inside the functions.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)  # points of the noise schedule: 0 is the data, 1 pure noise
ANALYSIS_RATE = 8000  # audio diversity compares the starter's spectrogram pictures at this rate


# ----------------------------------------------------------------------------- held-out loss

def heldout_loss(handle, dataset, collate, *, fractions=FRACTIONS, seed: int = 0, batch_size: int = 8) -> dict:
    """The mean held-out loss of ``dataset`` (the backend's validation-style items: no flips, clips from their
    start). Diffusion models: the unweighted prediction error at each fixed point of the noise schedule, item i
    at point k with noise seeded ``seed + 1000 * k + i`` (the VAE's posterior mean, no sampling), so the value
    does not depend on the batch size and repeats exactly. MusicGen: the model's own code cross-entropy (already
    deterministic). The VAE starter: its negative ELBO per pixel value (its latent noise drawn from a fixed seed).
    Returns ``{"loss", "by_fraction" (diffusion), "items", "kind"}``."""
    import torch

    module = handle.module
    if not hasattr(module, "loss_at"):  # MusicGen: the loss has no noise
        return _plain_loss(module, dataset, collate, batch_size)
    sums = [0.0] * len(fractions)
    # a run trained with aspect-ratio buckets has its pictures batched by bucket (one shape per batch)
    bucketed = dataset.batches(batch_size, seed, shuffle=False) if hasattr(dataset, "batches") else None
    groups = list(bucketed) if bucketed is not None else [range(start, min(start + batch_size, len(dataset)))
                                                          for start in range(0, len(dataset), batch_size)]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for indices in groups:
                batch = collate([dataset[i] for i in indices])
                for k, fraction in enumerate(fractions):
                    losses = module.loss_at(batch, fraction, [seed + 1000 * k + i for i in indices])
                    sums[k] += float(losses.sum())
    finally:
        module.train(was_training)
    items = len(dataset)
    by_fraction = {f"{f:g}": sums[k] / items for k, f in enumerate(fractions)} if items else {}
    loss = sum(by_fraction.values()) / len(by_fraction) if by_fraction else None
    return {"loss": loss, "by_fraction": by_fraction, "items": items, "kind": "diffusion"}


def _plain_loss(module, dataset, collate, batch_size: int) -> dict:
    import torch

    total, items, kind = 0.0, len(dataset), "cross-entropy"
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for start in range(0, items, batch_size):
                chunk = [dataset[i] for i in range(start, min(start + batch_size, items))]
                found = module(collate(chunk))
                if isinstance(found, dict):  # a family's own terms: a VAE's are a loss of the data (its negative
                    if "kl" not in found:    # ELBO, eval noise fixed); a GAN's are a discriminator's verdicts
                        return {"loss": None, "items": items, "kind": "none"}
                    found, kind = found["loss"], "negative ELBO"
                total += float(found) * len(chunk)
    finally:
        module.train(was_training)
    return {"loss": total / items if items else None, "items": items, "kind": kind}


# ----------------------------------------------------------------------------- diversity

def mean_pairwise_distance(arrays: list[np.ndarray]) -> float | None:
    """The mean root-mean-square difference over every pair of (same-shaped) arrays; None for fewer than two."""
    flat = [np.asarray(a, dtype=np.float64).ravel() for a in arrays]
    pairs = [(i, j) for i in range(len(flat)) for j in range(i + 1, len(flat))]
    if not pairs:
        return None
    return float(np.mean([np.sqrt(np.mean((flat[i] - flat[j]) ** 2)) for i, j in pairs]))


def image_pixels(path: Path) -> np.ndarray:
    """An image as RGB floats in [0, 1]."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def audio_picture(path: Path) -> np.ndarray:
    """A clip as the audio starter's spectrogram picture (8 kHz, 0-2 kHz, dB from the clip's peak, scaled to
    [0, 1]), whatever model made it."""
    from studio.models.audio import read_mono, spectrogram_settings, to_spectrogram

    wave = read_mono(Path(path), ANALYSIS_RATE)
    spec = spectrogram_settings(ANALYSIS_RATE, max(len(wave), 1) / ANALYSIS_RATE)
    return (to_spectrogram(wave, spec) + 1) / 2


def diversity(groups: list[list[np.ndarray]]) -> float | None:
    """Per group (the samples of one prompt, different seeds), the mean pairwise RMS distance, averaged over the
    groups that have two samples or more. Arrays of a group are cut to their common shape (clips of different
    lengths). 0: every seed gives the same output."""
    values = []
    for group in groups:
        if len(group) < 2:
            continue
        shape = tuple(min(a.shape[d] for a in group) for d in range(group[0].ndim))
        values.append(mean_pairwise_distance([a[tuple(slice(0, s) for s in shape)] for a in group]))
    return float(np.mean(values)) if values else None


# ----------------------------------------------------------------------------- encoders the person provides

def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors (rows):
    |mu_a - mu_b|² + tr(S_a + S_b - 2 (S_a^½ S_b S_a^½)^½), the square roots by symmetric eigendecomposition
    (so a set against itself gives 0 up to rounding)."""
    from scipy.linalg import eigh

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs two sets of at least two feature vectors of the same size")
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = eigh(root_a @ cov_b @ root_a, eigvals_only=True)
    trace_root = float(np.sum(np.sqrt(np.clip(middle, 0, None))))
    distance = float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)
    return max(distance, 0.0)


def _output_features(output):
    """transformers 5 returns a model output whose ``pooler_output`` holds the projected features; 4 a tensor."""
    return getattr(output, "pooler_output", output)


@functools.lru_cache(maxsize=2)
def load_encoder(folder: str) -> dict:
    """A local CLIP-like (``get_image_features`` + ``get_text_features``) or CLAP (``get_audio_features``)
    folder: the model (safetensors only, no remote code), its tokenizer and its image processor or feature
    extractor. Kept loaded for the process."""
    from transformers import AutoModel, AutoTokenizer

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"no encoder folder at '{folder}'")
    model = AutoModel.from_pretrained(str(path), use_safetensors=True, trust_remote_code=False).eval()
    parts = {"model": model, "folder": str(path), "tokenizer": None}
    try:
        parts["tokenizer"] = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except (OSError, ValueError, TypeError):  # an encoder without text: scores need one, distances do not
        pass
    if hasattr(model, "get_audio_features"):
        from transformers import AutoFeatureExtractor

        parts["features"] = AutoFeatureExtractor.from_pretrained(str(path))
        parts["kind"] = "audio"
    elif hasattr(model, "get_image_features"):
        from transformers import AutoImageProcessor

        parts["processor"] = AutoImageProcessor.from_pretrained(str(path))
        parts["kind"] = "image"
    else:
        raise ValueError(f"'{folder}' holds a {type(model).__name__}: neither an image-text (CLIP-like) nor an "
                         "audio-text (CLAP) model")
    return parts


def _normalised(features) -> np.ndarray:
    import torch

    features = torch.as_tensor(features).float()
    return torch.nn.functional.normalize(features, dim=-1).cpu().numpy()


def text_embeddings(encoder: dict, texts: list[str], batch_size: int = 16) -> np.ndarray:
    import torch

    tokenizer, model = encoder["tokenizer"], encoder["model"]
    if tokenizer is None:
        raise ValueError(f"the encoder in {encoder['folder']} has no tokenizer, so it cannot score prompts")
    config = getattr(model.config, "text_config", model.config)
    length = min(int(getattr(config, "max_position_embeddings", 77) or 77), 512)
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=length,
                               return_tensors="pt")
            inputs = {k: v for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
            out.append(_normalised(_output_features(model.get_text_features(**inputs))))
    return np.concatenate(out)


def image_embeddings(encoder: dict, paths: list[Path], batch_size: int = 16) -> np.ndarray:
    import torch
    from PIL import Image

    out = []
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            images = []
            for path in paths[start:start + batch_size]:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            pixels = encoder["processor"](images=images, return_tensors="pt")["pixel_values"]
            out.append(_normalised(_output_features(encoder["model"].get_image_features(pixel_values=pixels))))
    return np.concatenate(out)


def audio_embeddings(encoder: dict, paths: list[Path], batch_size: int = 8) -> np.ndarray:
    """CLAP audio embeddings; clips are read at the feature extractor's rate. Its random crop of long clips
    is seeded, so the same files give the same embeddings."""
    import torch

    from studio.models.audio import read_mono

    extractor = encoder["features"]
    rate = int(extractor.sampling_rate)
    out = []
    state = np.random.get_state()
    np.random.seed(0)
    try:
        with torch.no_grad():
            for start in range(0, len(paths), batch_size):
                waves = [read_mono(Path(p), rate) for p in paths[start:start + batch_size]]
                inputs = extractor(waves, sampling_rate=rate, return_tensors="pt")
                wanted = {k: v for k, v in inputs.items() if k in ("input_features", "is_longer")}
                out.append(_normalised(_output_features(encoder["model"].get_audio_features(**wanted))))
    finally:
        np.random.set_state(state)
    return np.concatenate(out)


def prompt_agreement(media: np.ndarray, prompts: np.ndarray) -> float:
    """CLIP score (Hessel et al. 2021, as torchmetrics reports it): 100 × max(cosine(media, its prompt), 0),
    averaged; for CLAP embeddings the same on audio."""
    cosines = np.sum(np.asarray(media) * np.asarray(prompts), axis=1)
    return float(np.mean(100 * np.clip(cosines, 0, None)))

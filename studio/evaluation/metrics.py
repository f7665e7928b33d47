"""Automatic metrics of a run's checkpoint on its dataset's held-out test split, cached as JSON per checkpoint.

``run_metrics(store, "RUN_ID[:STEP]")`` loads the checkpoint through the Generate model cache (so LoRA adapters,
full and from-scratch checkpoints load exactly as they do for generation) and measures:

* text: perplexity with the run's own model (the backend's own tokenisation: chat template and response-only
  labels as in training); distinct-1/2 and self-BLEU of samples generated with fixed seeds; BLEU, chrF and
  ROUGE-L of those samples against the test items' references (a response; for plain text, whose prompt is its
  first words, the rest of it, cut to about the length a sample can have);
* image and audio: the held-out denoising (or flow) loss at fixed noise levels and seeds; the diversity of
  samples of one prompt under different seeds; and, only when the person points the studio at local encoder
  weights (``STUDIO_CLIP_MODEL_PATH`` for images, ``STUDIO_AUDIO_EMBEDDING_MODEL_PATH``, a CLAP folder, for
  audio), the CLIP / CLAP score of samples against their prompts and the Fréchet distance (FID / FAD) between
  the encoder's features of the samples and of the test items;
* always: whether the prompts evaluated also appear in the training split (contamination).

The test split is used; an empty one falls back to validation (the result says so). Results are written to
``runs/<id>/eval/step-<N>.json`` (media samples beside it in ``step-<N>/``) and read back on the next call, unless
``force`` is given or the call's parameters differ. ``metrics_table`` gives one row per computed checkpoint (the
chart across checkpoints); ``metric_rank_agreement`` how well a metric ranks variants as people did.

No model library is imported at module import.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from studio.data.prompts import prompt_and_reference
from studio.data.service import read_manifest
from studio.evaluation import metrics_media as media
from studio.evaluation.metrics_text import distinct_n, perplexity, reference_scores, self_bleu
from studio.generation.cache import ModelCache, load_config
from studio.generation.options import parse_settings
from studio.generation.variants import Variant, VariantError, parse_ref, resolve_variants
from studio.models.registry import backend_for
from studio.store import Store
from studio.store.tables import DatasetVersion, Run

# name → (unit, higher is better, what it is). The one description of every metric, for the JSON and the UI.
METRICS: dict[str, tuple[str, bool, str]] = {
    "perplexity": ("per token", False, "exp(mean negative log-likelihood per token) of the held-out items, as "
                                       "training tokenises them"),
    "heldout_nll": ("nats per token", False, "mean negative log-likelihood per token of the held-out items"),
    "distinct_1": ("share 0-1", True, "different words / all words over the generated samples"),
    "distinct_2": ("share 0-1", True, "different word pairs / all word pairs over the generated samples"),
    "self_bleu": ("BLEU 0-100", False, "mean BLEU of each sample against the other samples: high means the "
                                       "samples repeat each other"),
    "bleu": ("BLEU 0-100", True, "corpus BLEU (sacrebleu) of the samples against the test references"),
    "chrf": ("chrF 0-100", True, "corpus chrF (sacrebleu) of the samples against the test references"),
    "rouge_l": ("F1 0-100", True, "mean ROUGE-L F1 (rouge-score) of the samples against the test references"),
    "heldout_loss": ("mean squared error", False, "held-out denoising/flow loss, unweighted, averaged over fixed "
                                                  "noise levels with fixed noise seeds (MusicGen: code "
                                                  "cross-entropy, nats)"),
    "diversity": ("RMS distance 0-1", True, "mean pairwise distance between samples of one prompt made with "
                                            "different seeds (images: RGB pixels in 0-1; audio: 0-2 kHz "
                                            "spectrogram in dB, scaled to 0-1); 0 means every seed gives the "
                                            "same output"),
    "clip_score": ("100 x cosine", True, "CLIP score: 100 x max(cosine(image, prompt), 0) with the local CLIP"),
    "clap_score": ("100 x cosine", True, "CLAP score: 100 x max(cosine(audio, prompt), 0) with the local CLAP"),
    "fid": ("squared feature distance", False, "Fréchet distance between the local CLIP's image features of the "
                                               "samples and of the test images (biased high for few items)"),
    "fad": ("squared feature distance", False, "Fréchet distance between the local CLAP's audio features of the "
                                               "samples and of the test clips (biased high for few items)"),
}
MIN_WORDS_INSIDE = 5  # a prompt shorter than this is only matched whole against training items
BIG = 2**40
WORDS_PER_TOKEN = 0.75  # about what subword tokenizers give on English prose


class MetricsError(ValueError):
    """Metrics cannot be computed as asked; the message says why."""


@dataclass(frozen=True)
class MetricsParams:
    """What a computation measures on: at most ``max_items`` held-out items; ``prompts`` of their prompts, each
    sampled with seeds ``seed`` … ``seed + samples - 1``, with ``max_new_tokens`` (text) or ``steps`` (image, audio);
    the local encoder folders for CLIP / CLAP scores and FID / FAD (``""``: none; None: the settings' folders).
    Stored with the result as its ``params``: a stored result is reused only for the same ones."""
    max_items: int = 64
    prompts: int = 8
    samples: int = 4
    max_new_tokens: int = 48
    steps: int = 20
    seed: int = 0
    clip_model: str | None = None
    audio_model: str | None = None

    def resolved(self, settings) -> MetricsParams:
        """Whole numbers, and the settings' encoder folders where none were given."""
        return replace(self, max_items=int(self.max_items), prompts=int(self.prompts), samples=int(self.samples),
                       max_new_tokens=int(self.max_new_tokens), steps=int(self.steps), seed=int(self.seed),
                       clip_model=getattr(settings, "clip_model_path", "") if self.clip_model is None
                       else self.clip_model,
                       audio_model=getattr(settings, "audio_embedding_model_path", "") if self.audio_model is None
                       else self.audio_model)


def entry(name: str, value: float | None, **details) -> dict:
    """One metric as JSON: its value (None when it could not be measured), unit, direction and meaning."""
    unit, higher, about = METRICS[name]
    clean = None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)
    return {"value": clean, "unit": unit, "higher_is_better": higher, "about": about, **details}


# ----------------------------------------------------------------------------- contamination

def normalise(text: str) -> str:
    """Lower case, whitespace runs as one space, trimmed: what "the same prompt" means here."""
    return " ".join(str(text or "").lower().split())


def eval_prompt(row: dict) -> str:
    """What a test row asks the model: the caption of an image or clip, the prompt (or the user turns) of a
    conversation, or the whole of a plain text."""
    if row.get("file"):
        return row.get("caption") or ""
    if row.get("messages"):
        return "\n".join(m["content"] for m in row["messages"] if m.get("role") == "user")
    if row.get("prompt") is not None:
        return row["prompt"]
    return row.get("text") or ""


def _row_text(row: dict) -> str:
    if row.get("messages"):
        return "\n".join(m["content"] for m in row["messages"])
    if row.get("prompt") is not None:
        return f"{row['prompt']}\n{row.get('response') or ''}"
    return row.get("text") or row.get("caption") or ""


def _file_digest(path: Path) -> str | None:
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def check_contamination(eval_rows: list[dict], train_rows: list[dict], root: Path | None = None,
                        examples: int = 5) -> dict:
    """Evaluation items whose prompt also appears in the training split (lower case, whitespace normalised):
    the same prompt, text or caption as a training item, or (text of at least ``MIN_WORDS_INSIDE`` words)
    inside a training text; and, for media under ``root``, the same file bytes as a training file.
    Image and audio captions often name a class, so a shared caption there is common and not by itself a leak
    (the result's ``note`` says so)."""
    keys = {normalise(eval_prompt(r)) for r in train_rows} - {""}
    blob = "\n".join(normalise(_row_text(r)) for r in train_rows if not r.get("file"))
    by_size: dict[int, list[Path]] = {}
    if root is not None:
        for row in train_rows:
            if row.get("file") and (root / row["file"]).is_file():
                by_size.setdefault((root / row["file"]).stat().st_size, []).append(root / row["file"])
    digests: dict[int, set] = {}
    found = []
    for row in eval_rows:
        prompt = normalise(eval_prompt(row))
        how = None
        if prompt and prompt in keys:
            how = "the same caption as a training item" if row.get("file") else "the same prompt as a training item"
        elif prompt and len(prompt.split()) >= MIN_WORDS_INSIDE and prompt in blob:
            how = "inside a training text"
        if root is not None and row.get("file") and (root / row["file"]).is_file():
            path = root / row["file"]
            size = path.stat().st_size
            if size in by_size:
                if size not in digests:
                    digests[size] = {_file_digest(p) for p in by_size[size]}
                if _file_digest(path) in digests[size]:
                    how = "the same file as a training item"
        if how:
            found.append({"prompt": eval_prompt(row), "how": how, **({"file": row["file"]} if row.get("file") else {})})
    checked = len(eval_rows)
    note = ("image and audio captions often name a class, so a caption shared with training items is expected; "
            "the same file is not") if any(r.get("file") for r in eval_rows) else None
    return {"checked": checked, "found": len(found), "share": len(found) / checked if checked else None,
            "examples": found[:examples], "note": note,
            "method": "lower case and whitespace normalised: the same prompt/text/caption as a training item, or a "
                      f"prompt of {MIN_WORDS_INSIDE}+ words inside a training text; media: the same file bytes"}


# ----------------------------------------------------------------------------- agreement with people

def metric_rank_agreement(metric_values: dict, human_strengths: dict, higher_is_better: bool) -> dict:
    """How well a metric orders variants the way people's votes did: Spearman's rho and Kendall's tau (scipy)
    between the metric (turned so that higher is better) and the human strengths (e.g. Bradley-Terry), over the
    variants both have. +1: the same order; -1: the reverse; None where fewer than two variants (or no
    variation) leave nothing to correlate."""
    from scipy.stats import kendalltau, spearmanr

    common = [v for v in metric_values if v in human_strengths and metric_values[v] is not None
              and human_strengths[v] is not None]
    sign = 1.0 if higher_is_better else -1.0
    result = {"variants": common, "n": len(common), "higher_is_better": higher_is_better,
              "spearman": None, "spearman_p": None, "kendall": None, "kendall_p": None}
    if len(common) < 2:
        return {**result, "note": "fewer than two variants have both a metric value and a human strength"}
    metric = [sign * float(metric_values[v]) for v in common]
    human = [float(human_strengths[v]) for v in common]
    if len(set(metric)) < 2 or len(set(human)) < 2:
        return {**result, "note": "the metric or the human strengths do not vary across these variants"}

    def finite(value) -> float | None:
        return float(value) if value is not None and math.isfinite(value) else None

    rho, rho_p = spearmanr(metric, human)
    tau, tau_p = kendalltau(metric, human)
    return {**result, "spearman": finite(rho), "spearman_p": finite(rho_p), "kendall": finite(tau),
            "kendall_p": finite(tau_p)}


# ----------------------------------------------------------------------------- one variant

def held_out_rows(rows: list[dict], max_items: int) -> tuple[list[dict], str, list[str]]:
    """The first ``max_items`` test rows (validation ones when the test split is empty), the split's name and notes
    for people on what was used."""
    test = [r for r in rows if r.get("split") == "test"]
    if test:
        return test[:max_items], "test", []
    validation = [r for r in rows if r.get("split") == "validation"]
    if validation:
        return validation[:max_items], "validation", ["the test split is empty: the validation split was used "
                                                      "(it guided training, so it flatters the model)"]
    return [], "none", ["the dataset has neither test nor validation items: nothing held out to measure on"]


def _quiet(_fraction: float, _message: str) -> None:
    return None


def evaluate_variant(store: Store, variant: Variant, version: DatasetVersion, params: MetricsParams, *,
                     out_dir: Path | None = None, cache=None, progress=None) -> dict:
    """Every metric of one variant (``base`` included) on ``version``'s held-out split; see the module's
    docstring. Encoder folders left None are not used. Media samples are written to ``out_dir`` (when None, to a
    temporary folder, and their paths are left out). ``progress(fraction, message)`` is told each metric as it
    starts."""
    import tempfile

    say = progress or _quiet

    started = time.perf_counter()
    root = store.path(version.path)
    rows = read_manifest(store, version)
    held, split, notes = held_out_rows(rows, max(1, int(params.max_items)))
    train_rows = [r for r in rows if r.get("split") == "train"]
    result = {"ref": variant.ref, "label": variant.label, "modality": variant.modality, "run_id": variant.run_id,
              "step": variant.step, "dataset": f"{version.dataset_id}:{version.version}", "split": split,
              "items": len(held), "metrics": {}, "notes": notes,
              "contamination": check_contamination(held, train_rows, root)}
    cache = cache if cache is not None else ModelCache(BIG)
    backend = backend_for(variant.modality)
    with cache.lock:
        say(0.05, f"loading {variant.label}")
        handle = cache.handle_for(variant)
        data, collate = held_out_examples(handle, variant, held, root)
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(out_dir) if out_dir is not None else Path(scratch)
            if variant.modality == "text":
                _text_metrics(result, backend, handle, data, collate, held, root, params, say)
            else:
                _media_metrics(result, backend, handle, data, collate, held, root, folder, params, say)
    if out_dir is None:  # the samples' files went with the temporary folder
        result["samples"] = [{k: v for k, v in sample.items() if k != "path"} for sample in result.get("samples", [])]
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def held_out_examples(handle, variant: Variant, held: list[dict], root: Path) -> tuple:
    """(dataset, collate) of the rows ``held`` as the variant's backend builds validation examples for ``handle``
    (the run's own config: text tokenised as in training, images at its resolution), what the held-out perplexity
    and loss are measured on."""
    backend = backend_for(variant.modality)
    config = load_config(variant.config)
    return backend.datasets(handle, {"validation": held}, root, config)["validation"], backend.collate(handle, config)


def _seeded_pairs(texts: list[str], samples: int, seed: int) -> tuple[list[str], list[int]]:
    chosen = [(text, seed + k) for text in texts for k in range(max(1, int(samples)))]
    return [p for p, _ in chosen], [s for _, s in chosen]


def _text_metrics(result, backend, handle, data, collate, held, root, params: MetricsParams, say=_quiet):
    prompts, samples, max_new_tokens = params.prompts, params.samples, params.max_new_tokens
    metrics = result["metrics"]
    say(0.2, f"perplexity on {len(held)} held-out items")
    found = perplexity(handle, data, collate)
    counts = {"tokens": found["tokens"], "sequences": found["examples"]}  # packed sequences, not items
    metrics["perplexity"] = entry("perplexity", found["perplexity"], **counts)
    metrics["heldout_nll"] = entry("heldout_nll", found["loss"], **counts)
    if data.skipped:
        result["notes"].append(f"{data.skipped} held-out items have nothing to predict after truncation and were "
                               "left out of the perplexity")
    if int(prompts) <= 0:
        result["notes"].append("prompts=0: nothing was generated")
        return
    asked = []
    for row in held:
        question = prompt_and_reference(row, root)
        if question is None:
            continue
        if row.get("prompt") is None and not row.get("messages"):  # plain text: the reference is the rest of it,
            words = question["reference"]["text"].split()  # cut to about as many words as a sample has tokens
            question["reference"] = {"text": " ".join(words[:max(1, round(WORDS_PER_TOKEN * max_new_tokens))])}
        asked.append(question)
        if len(asked) == int(prompts):
            break
    if not asked:
        result["notes"].append("no held-out item gives a prompt: nothing was generated")
        return
    settings = parse_settings("text", values={"max_new_tokens": int(max_new_tokens)}).backend_settings()
    texts, seeds = _seeded_pairs([a["prompt"] for a in asked], samples, params.seed)
    say(0.4, f"generating {len(texts)} samples for distinct-n, self-BLEU, BLEU, chrF and ROUGE-L")
    made = backend.generate(handle, texts, seeds, settings, root)
    say(0.85, "scoring the samples")
    outputs = [s.text or "" for s in made]
    references = [a["reference"]["text"] for a in asked for _ in range(max(1, int(samples)))]
    metrics["distinct_1"] = entry("distinct_1", distinct_n(outputs, 1), samples=len(outputs))
    metrics["distinct_2"] = entry("distinct_2", distinct_n(outputs, 2), samples=len(outputs))
    metrics["self_bleu"] = entry("self_bleu", self_bleu(outputs), samples=len(outputs))
    paired = [(o, r) for o, r in zip(outputs, references) if r and r.strip()]
    if paired:
        scores = reference_scores([o for o, _ in paired], [r for _, r in paired])
        for name in ("bleu", "chrf", "rouge_l"):
            metrics[name] = entry(name, scores[name], pairs=scores["pairs"])
    else:
        result["notes"].append("the held-out items have no references: BLEU, chrF and ROUGE-L were not computed")
    result["generation"] = {**settings, "seeds": sorted(set(seeds))}
    result["samples"] = [{"prompt": s.prompt, "seed": s.seed, "text": s.text, "reference": r}
                         for s, r in zip(made, references)]


def _media_metrics(result, backend, handle, data, collate, held, root, folder, params: MetricsParams, say=_quiet):
    prompts, samples = params.prompts, params.samples
    metrics, modality = result["metrics"], result["modality"]
    say(0.2, f"held-out loss on {len(held)} items")
    loss = media.heldout_loss(handle, data, collate, seed=params.seed)
    metrics["heldout_loss"] = entry("heldout_loss", loss["loss"], items=loss["items"], kind=loss["kind"],
                                    **({"by_noise_level": loss["by_fraction"]} if "by_fraction" in loss else {}))
    if loss["loss"] is None and loss["items"]:
        result["notes"].append("no held-out loss: this model has no loss of the data itself (a GAN's losses are its "
                               "discriminator's verdicts)")
    if int(prompts) <= 0:
        result["notes"].append("prompts=0: nothing was generated")
        return
    captions = list(dict.fromkeys(c for c in ((r.get("caption") or "").strip() for r in held) if c))[:int(prompts)]
    if not captions:
        result["notes"].append("the held-out items have no captions to prompt with: nothing was generated")
        return
    settings = parse_settings(modality, values={"steps": int(params.steps)}).backend_settings()
    texts, seeds = _seeded_pairs(captions, samples, params.seed)
    say(0.35, f"generating {len(texts)} samples for diversity")
    made = backend.generate(handle, texts, seeds, settings, folder)
    say(0.7, "diversity")
    read = media.image_pixels if modality == "image" else media.audio_picture
    groups = [[read(s.path) for s in made if s.prompt == caption] for caption in captions]
    metrics["diversity"] = entry("diversity", media.diversity(groups), prompts=len(captions),
                                 samples_per_prompt=max(1, int(samples)))
    result["generation"] = {**settings, "seeds": sorted(set(seeds))}
    result["samples"] = [{"prompt": s.prompt, "seed": s.seed, "path": str(s.path)} for s in made]
    encoder_folder = params.clip_model if modality == "image" else params.audio_model
    if not encoder_folder:
        setting = "STUDIO_CLIP_MODEL_PATH" if modality == "image" else "STUDIO_AUDIO_EMBEDDING_MODEL_PATH"
        result["notes"].append(f"no local {'CLIP' if modality == 'image' else 'CLAP'} folder ({setting}): "
                               f"{'CLIP score and FID' if modality == 'image' else 'CLAP score and FAD'} were skipped")
        return
    say(0.8, "CLIP score and FID" if modality == "image" else "CLAP score and FAD")
    _encoder_metrics(result, media, modality, encoder_folder, made, held, root)


def _encoder_metrics(result, media, modality, folder, made, held, root):
    score, distance = ("clip_score", "fid") if modality == "image" else ("clap_score", "fad")
    try:
        encoder = media.load_encoder(str(Path(folder).expanduser().resolve()))
        if encoder["kind"] != modality:
            raise ValueError(f"it is an {encoder['kind']} encoder, not an {modality} one")
        embed = media.image_embeddings if modality == "image" else media.audio_embeddings
        generated = embed(encoder, [s.path for s in made])
        references = [root / r["file"] for r in held if r.get("file") and (root / r["file"]).is_file()]
        real = embed(encoder, references) if references else None
        prompts = media.text_embeddings(encoder, [s.prompt for s in made]) if encoder["tokenizer"] else None
    except Exception as error:  # noqa: BLE001 - a folder the person named can be wrong in many ways: say so
        result["notes"].append(f"the encoder in '{folder}' could not be used ({type(error).__name__}: {error}): "
                               f"{score} and {distance} were skipped")
        return
    metrics = result["metrics"]
    if prompts is not None:
        metrics[score] = entry(score, media.prompt_agreement(generated, prompts), samples=len(made), encoder=folder)
    else:
        result["notes"].append(f"the encoder in '{folder}' has no tokenizer: {score} was skipped")
    if real is not None and len(real) >= 2 and len(generated) >= 2:
        metrics[distance] = entry(distance, media.frechet_distance(generated, real), samples=len(generated),
                                  references=len(real), encoder=folder)
    else:
        result["notes"].append(f"{distance} needs at least two samples and two held-out files")


# ----------------------------------------------------------------------------- a run's checkpoints

def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def eval_path(store: Store, run_id: int, step: int) -> Path:
    return store.path(f"runs/{int(run_id)}/eval/step-{int(step)}.json")


def run_metrics(store: Store, ref: str, params: MetricsParams = MetricsParams(), *, force: bool = False, cache=None,
                progress=None) -> dict:
    """The metrics of ``RUN_ID`` (its last checkpoint) or ``RUN_ID:STEP`` as a JSON-able dict, read from
    ``runs/<id>/eval/step-<N>.json`` when it was computed before with the same ``params``, else computed (and
    written there). ``force`` computes again. The encoder folders default to the settings
    (``clip_model_path``, ``audio_embedding_model_path``); an empty string turns them off. ``progress(fraction,
    message)`` is told each metric as it starts, and may raise to cancel (studio.tasks): what the computation had
    written goes with it."""
    if parse_ref(ref) is None:
        raise MetricsError("metrics are measured for a run's checkpoint: give RUN_ID (its last checkpoint) or "
                           "RUN_ID:STEP, not 'base'")
    [variant] = resolve_variants(store, [ref])
    params = params.resolved(store.settings)
    path = eval_path(store, variant.run_id, variant.step)
    if path.is_file() and not force:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("params") == asdict(params):
            return {**saved, "cached": True}
    with store.session() as session:
        run = session.get(Run, variant.run_id)
        version = session.get(DatasetVersion, run.dataset_version_id)
        model_ref, method = run.model_ref, run.method
    if progress:
        progress(0.0, f"reading the held-out split of {variant.label}")
    shutil.rmtree(path.with_suffix(""), ignore_errors=True)  # the samples of an earlier computation
    try:
        result = evaluate_variant(store, variant, version, params, cache=cache, out_dir=path.with_suffix(""),
                                  progress=progress)
    except BaseException:  # a cancel (or a failure) midway: no half-made samples folder stays behind
        shutil.rmtree(path.with_suffix(""), ignore_errors=True)
        raise
    result = {**result, "model": model_ref, "method": method, "params": asdict(params), "computed_at": _now()}
    if variant.note:
        result["notes"].insert(0, variant.note)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".json.{os.getpid()}.partial")
    partial.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    partial.replace(path)
    return {**result, "cached": False}


def metrics_table(store: Store, run_id: int) -> list[dict]:
    """One row per checkpoint of ``run_id`` whose metrics were computed, by step: ``{"step", "ref",
    "computed_at", "split", "contaminated", <metric>: value, ...}`` (the chart across checkpoints)."""
    folder = store.path(f"runs/{int(run_id)}/eval")
    rows = []
    for path in folder.glob("step-*.json") if folder.is_dir() else []:
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        row = {"step": saved.get("step"), "ref": saved.get("ref"), "computed_at": saved.get("computed_at"),
               "split": saved.get("split"), "contaminated": (saved.get("contamination") or {}).get("found")}
        row.update({name: found.get("value") for name, found in (saved.get("metrics") or {}).items()})
        rows.append(row)
    return sorted(rows, key=lambda r: (r["step"] is None, r["step"] or 0))


__all__ = ["METRICS", "MetricsError", "MetricsParams", "VariantError", "check_contamination", "entry", "eval_path",
           "evaluate_variant", "metric_rank_agreement", "metrics_table", "normalise", "run_metrics"]

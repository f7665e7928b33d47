"""Automatic metrics: hand-checked text measures, contamination, rank agreement, Fréchet distance, and real
tiny runs (test_generation's LoRA Llama, the image and audio starters) measured through ``run_metrics``, with
tiny random CLIP and CLAP models saved to disk standing in for the encoders a person would point the studio at."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from studio.data.service import get_version, import_dataset, read_manifest
from studio.evaluation import metrics_media as media
from studio.evaluation.metrics import (MetricsError, MetricsParams, check_contamination, eval_path, evaluate_variant,
                                       metric_rank_agreement, metrics_table, run_metrics)
from studio.evaluation.metrics_text import distinct_n, reference_scores, self_bleu
from studio.generation.cache import ModelCache, load_config
from studio.generation.variants import resolve_variants
from studio.models.registry import backend_for
from studio.settings import load_settings
from studio.store import open_store
from studio.store.tables import DatasetVersion, Run
from studio.training.config import TrainConfig
from test_generation import lab, run_in_process  # noqa: F401 - a module-scoped fixture
from test_image_backend import tiny_pipeline  # noqa: F401 - a module-scoped fixture
from test_text_backend import rows, tiny_folder  # noqa: F401 - module-scoped fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"max_items": 8, "prompts": 2, "samples": 2}


# ----------------------------------------------------------------------------- text measures by hand

def test_distinct_n_counts_different_words_and_pairs_over_all_samples():
    texts = ["The cat sat.", "the cat ran"]  # the cat sat . | the cat ran: 7 words, 5 different
    assert distinct_n(texts, 1) == pytest.approx(5 / 7)
    assert distinct_n(texts, 2) == pytest.approx(4 / 5)  # (the cat) twice; pairs never cross samples
    assert distinct_n(["a b c"], 1) == 1.0
    assert distinct_n(["one", ""], 2) is None  # no pair at all


def test_self_bleu_is_high_when_samples_repeat_and_low_when_they_differ():
    same = "the little dog runs across the green field"
    assert self_bleu([same, same, same]) == pytest.approx(100.0)
    assert self_bleu(["alpha beta gamma delta", "one two three four", "red green blue black"]) < 1.0
    mixed = self_bleu([same, same, "one two three four"])
    assert 30 < mixed < 80  # two of three repeat each other
    assert self_bleu(["only one"]) is None


def test_bleu_chrf_and_rouge_l_on_known_strings():
    exact = reference_scores(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert exact["bleu"] == pytest.approx(100) and exact["chrf"] == pytest.approx(100)
    assert exact["rouge_l"] == pytest.approx(100)
    apart = reference_scores(["zebra quantum"], ["the cat sat on the mat"])
    assert apart["bleu"] == pytest.approx(0) and apart["rouge_l"] == 0 and apart["chrf"] < 10
    near = reference_scores(["the cat lay on the mat"], ["the cat sat on the mat"])
    assert near["rouge_l"] == pytest.approx(100 * 5 / 6)  # LCS "the cat on the mat": 5 of 6 words each side
    assert 0 < near["bleu"] < 100 and 0 < near["chrf"] < 100
    assert reference_scores(["猫が 座った"], ["猫が 座った"])["rouge_l"] == pytest.approx(100)  # not ASCII only
    with pytest.raises(ValueError):
        reference_scores(["a"], [])


# ----------------------------------------------------------------------------- contamination, agreement, FD

def test_contamination_finds_a_test_prompt_planted_in_the_training_split():
    train = [{"split": "train", "prompt": "What is the capital of France?", "response": "Paris."},
             {"split": "train", "text": "Once upon a time a fox met a very old owl in the woods. The end."}]
    test = [{"split": "test", "prompt": "what is the  capital of France?", "response": "Paris"},  # case, spaces
            {"split": "test", "text": "a fox met a very old owl"},  # inside a training text
            {"split": "test", "prompt": "Name a colour", "response": "Blue"},
            {"split": "test", "text": "a fox"}]  # too short to count inside a text
    found = check_contamination(test, train)
    assert (found["checked"], found["found"], found["share"]) == (4, 2, 0.5)
    assert [e["how"] for e in found["examples"]] == ["the same prompt as a training item", "inside a training text"]
    assert check_contamination(test[2:], train)["found"] == 0


def test_contamination_of_media_finds_the_same_file_and_explains_shared_captions(tmp_path):
    (tmp_path / "a.png").write_bytes(b"same bytes")
    (tmp_path / "b.png").write_bytes(b"same bytes")
    (tmp_path / "c.png").write_bytes(b"other byte")  # same size, other content
    train = [{"file": "a.png", "caption": "a red circle"}]
    test = [{"file": "b.png", "caption": "a blue square"}, {"file": "c.png", "caption": "a blue circle"}]
    found = check_contamination(test, train, tmp_path)
    assert found["found"] == 1 and found["examples"][0]["how"] == "the same file as a training item"
    assert "class" in found["note"]


def test_rank_agreement_on_a_known_order():
    human = {"a": -1.0, "b": 0.2, "c": 1.5}
    agree = metric_rank_agreement({"a": 1.0, "b": 2.0, "c": 3.0}, human, higher_is_better=True)
    assert agree["spearman"] == pytest.approx(1) and agree["kendall"] == pytest.approx(1) and agree["n"] == 3
    lower = metric_rank_agreement({"a": 30.0, "b": 20.0, "c": 10.0, "d": 5.0}, human, higher_is_better=False)
    assert lower["spearman"] == pytest.approx(1) and lower["variants"] == ["a", "b", "c"]  # perplexity-like
    reverse = metric_rank_agreement({"a": 3.0, "b": 2.0, "c": 1.0}, human, higher_is_better=True)
    assert reverse["spearman"] == pytest.approx(-1) and reverse["kendall"] == pytest.approx(-1)
    swapped = metric_rank_agreement({"a": 1.0, "b": 3.0, "c": 2.0}, human, higher_is_better=True)
    assert swapped["spearman"] == pytest.approx(0.5) and swapped["kendall"] == pytest.approx(1 / 3)
    alone = metric_rank_agreement({"a": 1.0}, human, higher_is_better=True)
    assert alone["spearman"] is None and alone["note"]
    json.dumps(agree), json.dumps(alone)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_a_shift_adds_its_square():
    features = np.random.default_rng(0).normal(size=(12, 5))
    assert media.frechet_distance(features, features) == pytest.approx(0, abs=1e-9)
    shift = np.array([1.0, -2.0, 0.0, 0.5, 0.0])
    assert media.frechet_distance(features, features + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    few = features[:3]  # fewer items than dimensions: singular covariances still work
    assert media.frechet_distance(few, few) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError):
        media.frechet_distance(features[:1], features)


def test_diversity_is_zero_for_identical_samples_and_cuts_clips_to_a_common_length():
    same = np.full((4, 4), 0.5)
    assert media.diversity([[same, same.copy()]]) == 0
    assert media.diversity([[np.zeros((2, 6)), np.ones((2, 4))], [same]]) == pytest.approx(1.0)
    assert media.diversity([[same]]) is None


# ----------------------------------------------------------------------------- text runs

def _version(store, run_id: int) -> DatasetVersion:
    with store.session() as session:
        run = session.get(Run, run_id)
        return get_version(store, str(session.get(DatasetVersion, run.dataset_version_id).dataset_id))


def test_a_trained_checkpoint_has_lower_perplexity_than_its_base(lab):  # noqa: F811
    store, run = lab["store"], lab["run"]
    base, trained = resolve_variants(store, ["base", f"{run}:4"])
    cache = ModelCache(2**34)
    before = evaluate_variant(store, base, _version(store, run), MetricsParams(max_items=8, prompts=0), cache=cache)
    after = evaluate_variant(store, trained, _version(store, run), MetricsParams(max_items=8, prompts=0), cache=cache)
    assert cache.loads == 1  # the base and its adapter: one model
    ppl_before, ppl_after = before["metrics"]["perplexity"]["value"], after["metrics"]["perplexity"]["value"]
    assert math.isfinite(ppl_after) and 1 < ppl_after < ppl_before
    assert after["metrics"]["heldout_nll"]["value"] == pytest.approx(math.log(ppl_after))
    assert after["split"] == "test" and after["metrics"]["perplexity"]["tokens"] > 0
    assert after["metrics"]["perplexity"]["higher_is_better"] is False


def test_run_metrics_of_text_are_cached_per_checkpoint_and_recomputed_when_asked(lab):  # noqa: F811
    store, run = lab["store"], lab["run"]
    first = run_metrics(store, str(run), MetricsParams(max_new_tokens=8, **SMALL))  # RUN_ID: its last checkpoint
    assert (first["ref"], first["step"], first["cached"]) == (f"{run}:4", 4, False)
    found = first["metrics"]
    for name in ("perplexity", "distinct_1", "distinct_2", "self_bleu", "bleu", "chrf", "rouge_l"):
        assert found[name]["value"] is not None and math.isfinite(found[name]["value"]), name
        assert {"unit", "higher_is_better", "about"} <= set(found[name]), name
    assert 0 < found["distinct_1"]["value"] <= 1 and 0 <= found["rouge_l"]["value"] <= 100
    assert len(first["samples"]) == 4 and first["generation"]["seeds"] == [0, 1]
    assert first["contamination"]["checked"] == first["items"] and first["contamination"]["found"] == 0
    saved = eval_path(store, run, 4)
    assert json.loads(saved.read_text())["metrics"] == found
    json.dumps(first)

    again = run_metrics(store, f"{run}:4", MetricsParams(max_new_tokens=8, **SMALL))
    assert again["cached"] is True and again["metrics"] == found
    forced = run_metrics(store, f"{run}:4", MetricsParams(max_new_tokens=8, **SMALL), force=True)
    assert forced["cached"] is False and forced["computed_at"] != first["computed_at"]
    assert forced["metrics"] == found  # fixed seeds: the same numbers
    other = run_metrics(store, f"{run}:2", MetricsParams(max_new_tokens=8, **SMALL))
    assert other["cached"] is False and other["step"] == 2

    table = metrics_table(store, run)
    assert [row["step"] for row in table] == [2, 4]
    assert table[1]["perplexity"] == found["perplexity"]["value"] and table[1]["contaminated"] == 0
    assert metrics_table(store, 999) == []
    with pytest.raises(MetricsError):
        run_metrics(store, "base")


# ----------------------------------------------------------------------------- image and audio runs

def tiny_clip(folder, captions):
    """A random CLIP built from a config (32-pixel images), with a word tokenizer and a CLIP image processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from studio.models.diffusion import word_tokenizer

    tokenizer = word_tokenizer(captions)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": tokenizer.model_max_length,
                     "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=16))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def tiny_clap(folder, captions):
    """A random CLAP (HTSAT audio tower, RoBERTa-style text tower) with a 1-second feature extractor."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    from studio.models.diffusion import word_tokenizer

    tokenizer = word_tokenizer(captions)
    torch.manual_seed(0)
    model = ClapModel(ClapConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "intermediate_size": 64, "max_position_embeddings": tokenizer.model_max_length + 4,
                     "pad_token_id": tokenizer.pad_token_id},
        audio_config={"hidden_size": 32, "depths": [1, 1], "num_attention_heads": [2, 2],
                      "patch_embeds_hidden_size": 16, "spec_size": 128, "window_size": 4, "num_mel_bins": 64,
                      "enable_fusion": False},
        projection_dim=16))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ClapFeatureExtractor(feature_size=64, sampling_rate=48000, max_length_s=1,
                         truncation="rand_trunc").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def media_lab(tmp_path_factory):
    """A store with the shapes and tones examples, a starter-image run (16 steps) and a starter-audio run
    (2 steps), each with one checkpoint at its end."""
    from studio.examples.shapes import make_shapes
    from studio.examples.tones import make_tones

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures are set up before one_torch_thread
    root = tmp_path_factory.mktemp("metrics")
    make_shapes(root / "shapes", 3, 0)
    make_tones(root / "tones", 8, 0)
    store = open_store(load_settings(home=root / "home"))
    runs = {}
    for modality, folder, steps in (("image", "shapes", 16), ("audio", "tones", 2)):
        dataset = str(import_dataset(store, [root / folder], name=folder)["dataset_id"])
        config = TrainConfig(max_steps=steps, save_steps=steps, eval_steps=1000, learning_rate=2e-3, warmup_steps=0,
                             per_device_train_batch_size=8, seed=0, use_cpu=True)
        runs[modality] = {"run": run_in_process(store, dataset, f"starter-{modality}", "scratch", config),
                          "dataset": dataset, "config": config, "steps": steps}
    torch.set_num_threads(threads)
    yield {"store": store, "root": root, **runs}
    store.close()


@pytest.mark.slow
def test_image_heldout_loss_repeats_exactly_and_training_lowers_it(media_lab):
    store, image = media_lab["store"], media_lab["image"]
    version = get_version(store, image["dataset"])
    manifest = read_manifest(store, version)
    test = [r for r in manifest if r["split"] == "test"]
    [variant] = resolve_variants(store, [str(image["run"])])
    backend, config = backend_for("image"), load_config(variant.config)
    handle = ModelCache(2**34).handle_for(variant)
    data = backend.datasets(handle, {"validation": test}, store.path(version.path), config)["validation"]
    first = media.heldout_loss(handle, data, backend.collate(handle, config))
    again = media.heldout_loss(handle, data, backend.collate(handle, config), batch_size=1)
    assert first["loss"] == pytest.approx(again["loss"], rel=1e-5)  # fixed noise levels and seeds per item
    assert first["by_fraction"] == pytest.approx(again["by_fraction"], rel=1e-5) and len(first["by_fraction"]) == 5
    start = backend.load("starter-image", "scratch", image["config"], [r for r in manifest if r["split"] == "train"])
    untrained = media.heldout_loss(start, data, backend.collate(start, config))  # the run's step 0 (same seed)
    assert first["loss"] < untrained["loss"]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "flow_matching"])
def test_heldout_loss_of_a_latent_pipeline_does_not_depend_on_the_batch(tiny_pipeline, tmp_path,  # noqa: F811
                                                                        prediction_type):
    from studio.examples.shapes import make_shapes

    images = make_shapes(tmp_path, 1, 0)[:5]
    held = [{"file": p.name, "caption": p.with_suffix(".txt").read_text().strip()} for p in images]
    config = TrainConfig.model_validate({"image": {"resolution": 16}, "diffusion": {"prediction_type": prediction_type}})
    backend = backend_for("image")
    handle = backend.load(str(tiny_pipeline), "full", config)  # with a VAE: latents from its posterior mean
    data = backend.datasets(handle, {"validation": held}, tmp_path, config)["validation"]
    whole = media.heldout_loss(handle, data, backend.collate(handle, config), batch_size=8)
    ones = media.heldout_loss(handle, data, backend.collate(handle, config), batch_size=2)
    assert math.isfinite(whole["loss"]) and whole["loss"] == pytest.approx(ones["loss"], rel=1e-5)
    assert whole["by_fraction"] == pytest.approx(ones["by_fraction"], rel=1e-5)
    other = media.heldout_loss(handle, data, backend.collate(handle, config), seed=1)
    assert other["loss"] != whole["loss"]  # the seed is the noise


@pytest.mark.parametrize("modality", ["image", "audio"])
@pytest.mark.slow
def test_prompt_score_and_frechet_distance_with_a_tiny_local_encoder(media_lab, tmp_path, modality):
    store, lab_run = media_lab["store"], media_lab[modality]
    captions = [r["caption"] for r in read_manifest(store, get_version(store, lab_run["dataset"]))]
    folder = (tiny_clip if modality == "image" else tiny_clap)(tmp_path / "encoder", captions)
    score, distance = ("clip_score", "fid") if modality == "image" else ("clap_score", "fad")
    plain = run_metrics(store, str(lab_run["run"]), MetricsParams(steps=3, clip_model="", audio_model="", **SMALL))
    assert score not in plain["metrics"] and any(score.split("_")[0].upper() in n for n in plain["notes"])
    kind = {"clip_model": str(folder)} if modality == "image" else {"audio_model": str(folder)}
    found = run_metrics(store, str(lab_run["run"]), MetricsParams(steps=3, **SMALL, **kind))
    assert found["cached"] is False  # another encoder: measured again
    metrics = found["metrics"]
    for name in ("heldout_loss", "diversity", score, distance):
        assert metrics[name]["value"] is not None and math.isfinite(metrics[name]["value"]), name
    assert 0 <= metrics[score]["value"] <= 100 and metrics[distance]["value"] >= 0
    assert 0 < metrics["diversity"]["value"] <= 1  # two seeds, two different samples
    assert len(found["samples"]) == 4 and all(p["path"] for p in found["samples"])
    encoder = media.load_encoder(str(folder.resolve()))
    embed = media.image_embeddings if modality == "image" else media.audio_embeddings
    features = embed(encoder, [s["path"] for s in found["samples"]])
    assert media.frechet_distance(features, features) == pytest.approx(0, abs=1e-6)
    assert np.allclose(features, embed(encoder, [s["path"] for s in found["samples"]]))  # seeded crops
    assert metrics_table(store, lab_run["run"])[-1][distance] == metrics[distance]["value"]
    wrong = run_metrics(store, str(lab_run["run"]), MetricsParams(
        steps=3, **SMALL, **({"clip_model": str(tmp_path)} if modality == "image" else {"audio_model": str(tmp_path)})))
    assert distance not in wrong["metrics"] and any("could not be used" in n for n in wrong["notes"])

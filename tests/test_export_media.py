"""Merged exports of image and MusicGen LoRA runs load with plain diffusers / transformers and give the studio's
own outputs; the starters' folders are exported as what they are. Real tiny models (test_image_backend's SD
pipeline, test_musicgen's MusicGen) fine-tuned by the studio's worker code in this process. No network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.data.service import import_dataset
from studio.generation.cache import ModelCache
from studio.generation.service import generate_set, get_set
from studio.settings import load_settings
from studio.store import open_store
from studio.training.config import TrainConfig
from studio.sharing.export import ExportError, export_run
from test_generation import run_in_process
from test_image_backend import plain_diffusers_image, tiny_pipeline  # noqa: F401 - a module-scoped fixture
from test_musicgen import CLIP, tiny_folder  # noqa: F401 - a module-scoped fixture: a tiny MusicGen

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def media(tmp_path_factory, tiny_pipeline, tiny_folder):  # noqa: F811
    """A store with a LoRA run on the tiny SD pipeline (shapes) and one on the tiny MusicGen (tones)."""
    import torch

    from studio.examples.shapes import make_shapes
    from studio.examples.tones import make_tones

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures are set up before one_torch_thread
    root = tmp_path_factory.mktemp("export-media")
    store = open_store(load_settings(home=root / "home"))

    def imported(name: str, make, **options) -> str:
        make(root / name, 2, 0)
        return str(import_dataset(store, [root / name], name=name, **options)["dataset_id"])

    common = dict(max_steps=2, save_steps=2, eval_steps=100, warmup_steps=0, per_device_train_batch_size=4, seed=0,
                  use_cpu=True)
    shapes = imported("shapes", make_shapes)
    image = run_in_process(store, shapes, str(tiny_pipeline), "lora",
                           TrainConfig(learning_rate=2e-2, image={"resolution": 16}, **common))
    tones = imported("tones", make_tones, steps={"duration": {"min_seconds": 0.1}})  # the tiny MusicGen's clips
    audio = run_in_process(store, tones, str(tiny_folder), "lora",
                           TrainConfig(learning_rate=3e-2, audio={"clip_seconds": CLIP}, **common))
    torch.set_num_threads(threads)
    yield {"store": store, "root": root, "image": image, "audio": audio, "shapes": shapes}
    store.close()


def studio_images(store, refs: list[str], prompt: str, seed: int) -> dict[str, np.ndarray]:
    """What the Generate tab draws for each variant (4 DDIM steps, the default guidance)."""
    found = get_set(store, generate_set(store, refs, [prompt], seed=seed, settings={"steps": 4},
                                        cache=ModelCache(2**34)))
    return {s["variant"]: np.asarray(Image.open(s["path"]).convert("RGB")).astype(int) for s in found["samples"]}


@pytest.mark.slow
def test_merged_image_lora_is_a_plain_pipeline_that_draws_the_studios_image(media, tmp_path):
    import torch
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    store, run = media["store"], media["image"]
    found = export_run(store, f"{run}:2", "merged", tmp_path / "merged")
    assert found["library"] == "diffusers"
    assert {"model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
            "scheduler/scheduler_config.json", "README.md"} <= set(found["files"])
    assert not any(name.endswith((".bin", ".pt")) or "lora" in name for name in found["files"])
    assert "studio_model.json" not in found["files"]
    pipeline = DiffusionPipeline.from_pretrained(tmp_path / "merged", use_safetensors=True)
    assert isinstance(pipeline, StableDiffusionPipeline)
    assert not any("lora" in key for key in pipeline.unet.state_dict())  # fused, not attached
    plain = pipeline("a red circle", num_inference_steps=4, height=16, width=16, guidance_scale=7.5,
                     generator=torch.Generator().manual_seed(5)).images[0]
    drawn = studio_images(store, ["base", f"{run}:2"], "a red circle", 5)
    ours = drawn[f"{run}:2"]
    assert np.abs(np.asarray(plain).astype(int) - ours).max() <= 1  # the same image (rounding aside)
    assert np.abs(drawn["base"] - ours).max() > 1  # and the training shows in it


def test_diffusers_lora_file_draws_the_studios_image_in_a_plain_pipeline(media, tiny_pipeline, tmp_path):  # noqa: F811
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file, save_file

    from studio.generation.variants import resolve_variants

    store, run = media["store"], media["image"]
    [variant] = resolve_variants(store, [f"{run}:2"])
    saved = Path(variant.weights) / "pytorch_lora_weights.safetensors"
    save_file(load_file(str(saved)), str(saved))  # as the studio wrote it before: no adapter config
    lora_only = export_run(store, f"{run}:2", "diffusers-lora", tmp_path / "lora")
    assert lora_only["files"] == ["README.md", "loss.png", "pytorch_lora_weights.safetensors"]
    pipeline = StableDiffusionPipeline.from_pretrained(tiny_pipeline, use_safetensors=True)  # as the card says
    pipeline.load_lora_weights(tmp_path / "lora")
    theirs = plain_diffusers_image(pipeline, "a red circle", seed=5, steps=4)
    drawn = studio_images(store, ["base", f"{run}:2"], "a red circle", 5)
    assert np.abs(theirs - drawn[f"{run}:2"]).max() <= 1  # the same image (rounding aside)
    assert np.abs(theirs - drawn["base"]).max() > 1


def test_merged_image_export_shards_past_the_setting(media, tmp_path):
    from diffusers import UNet2DConditionModel

    root = media["root"]
    store = open_store(load_settings(home=root / "home", export_max_shard_mb=0.05))
    try:
        found = export_run(store, str(media["image"]), "merged", tmp_path / "sharded")
    finally:
        store.close()
    shards = [f for f in found["files"] if f.startswith("unet/diffusion_pytorch_model-0")]
    assert len(shards) > 1 and "unet/diffusion_pytorch_model.safetensors.index.json" in found["files"]
    UNet2DConditionModel.from_pretrained(tmp_path / "sharded", subfolder="unet", use_safetensors=True)


def test_merged_musicgen_lora_loads_with_plain_transformers_and_gives_the_studios_logits(media, tiny_folder,  # noqa: F811
                                                                                           tmp_path):
    import torch
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    from studio.generation.variants import resolve_variants

    store, run = media["store"], media["audio"]
    found = export_run(store, f"{run}:2", "merged", tmp_path / "merged")
    assert found["library"] == "transformers"
    assert {"config.json", "model.safetensors", "generation_config.json", "README.md"} <= set(found["files"])
    assert "adapter_config.json" not in found["files"] and "studio_model.json" not in found["files"]
    plain = MusicgenForConditionalGeneration.from_pretrained(tmp_path / "merged", use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    [variant] = resolve_variants(store, [f"{run}:2"])
    studio = ModelCache(2**34).handle_for(variant).module.model.eval()
    text = tokenizer(["low tone"], return_tensors="pt")
    codes = torch.randint(0, 32, (2, 6), generator=torch.Generator().manual_seed(0))  # (batch * codebooks, steps)
    with torch.no_grad():
        ours = studio(**text, decoder_input_ids=codes).logits
        theirs = plain(**text, decoder_input_ids=codes).logits
        base = MusicgenForConditionalGeneration.from_pretrained(tiny_folder).eval()(**text,
                                                                                     decoder_input_ids=codes).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(base, theirs, atol=1e-3)  # the adapter is in the merged weights

    from peft import PeftModel  # the card's recipe for the peft export gives the same model

    export_run(store, f"{run}:2", "peft", tmp_path / "peft")
    assert "PeftModel.from_pretrained(base" in (tmp_path / "peft" / "README.md").read_text()
    adapted = PeftModel.from_pretrained(MusicgenForConditionalGeneration.from_pretrained(tiny_folder),
                                        tmp_path / "peft").eval()
    with torch.no_grad():
        assert torch.allclose(adapted(**text, decoder_input_ids=codes).logits, theirs, atol=1e-5)


def test_musicgen_lora_has_no_diffusers_lora_form_and_says_what_to_use(media, tmp_path):
    with pytest.raises(ExportError, match="use 'peft' or 'merged'"):
        export_run(media["store"], str(media["audio"]), "diffusers-lora", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_starter_run_exports_as_the_studios_own_folder_and_its_card_says_so(media, tmp_path):
    from diffusers import UNet2DConditionModel

    store = media["store"]
    config = TrainConfig(max_steps=2, save_steps=2, eval_steps=100, learning_rate=2e-3, warmup_steps=0,
                         per_device_train_batch_size=4, seed=0, use_cpu=True, image={"resolution": 16})
    starter = run_in_process(store, media["shapes"], "starter-image", "scratch", config)
    with pytest.raises(ExportError, match="export it as 'merged'"):
        export_run(store, str(starter), "peft", tmp_path / "peft")
    found = export_run(store, str(starter), "merged", tmp_path / "starter")
    assert "studio_model.json" in found["files"]  # the studio needs it to load the folder again
    UNet2DConditionModel.from_pretrained(tmp_path / "starter", subfolder="unet", use_safetensors=True)
    card = (tmp_path / "starter" / "README.md").read_text()
    assert "not a standard pipeline" in card and "studio generate --model" in card
    assert json.loads((tmp_path / "starter" / "studio_model.json").read_text())["modality"] == "image"


@pytest.mark.slow
def test_a_lora_on_a_starters_folder_merges_into_a_folder_the_studio_loads_as_a_model(media, tmp_path):
    from studio.models.image import ImageBackend
    from studio.training.runs import checkpoints

    store = media["store"]
    config = TrainConfig(max_steps=2, save_steps=2, eval_steps=100, learning_rate=2e-3, warmup_steps=0,
                         per_device_train_batch_size=4, seed=0, use_cpu=True, image={"resolution": 16})
    starter = run_in_process(store, media["shapes"], "starter-image", "scratch", config)
    folder = checkpoints(store, starter)[-1]["model_path"]
    lora = run_in_process(store, media["shapes"], folder, "lora", config.model_copy(update={"learning_rate": 5e-2}))
    with pytest.raises(ExportError, match="no diffusers pipeline for load_lora_weights.*'merged'"):
        export_run(store, str(lora), "diffusers-lora", tmp_path / "lora")
    export_run(store, str(lora), "peft", tmp_path / "peft")
    card = (tmp_path / "peft" / "README.md").read_text()
    assert "a model trained from the Gen Studio starter `starter-image`" in card
    assert str(folder) not in card and f"`path/to/{Path(folder).name}`" in card  # a card may go public: no local paths
    found = export_run(store, str(lora), "merged", tmp_path / "merged")
    marker = json.loads((tmp_path / "merged" / "studio_model.json").read_text())
    assert (marker["method"], marker["modality"]) == ("full", "image") and "adapter_config.json" not in found["files"]
    settings = {"steps": 4, "guidance_scale": 2.0}
    drawn = get_set(store, generate_set(store, [f"{starter}:2", f"{lora}:2"], ["a red circle"], seed=5,
                                        settings=settings, cache=ModelCache(2**34)))
    images = {s["variant"]: np.asarray(Image.open(s["path"])).astype(int) for s in drawn["samples"]}
    backend = ImageBackend()
    merged = backend.load(str(tmp_path / "merged"), "full", config)
    [sample] = backend.generate(merged, ["a red circle"], [5], settings, tmp_path / "out")
    alone = np.asarray(Image.open(sample.path)).astype(int)
    assert np.abs(alone - images[f"{lora}:2"]).max() <= 1  # the LoRA variant's image, from the merged folder
    assert np.abs(images[f"{starter}:2"] - images[f"{lora}:2"]).max() > 1
    from diffusers import UNet2DConditionModel
    from peft import PeftModel

    adapted = PeftModel.from_pretrained(UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
                                        tmp_path / "peft").merge_and_unload().state_dict()
    fused = UNet2DConditionModel.from_pretrained(tmp_path / "merged", subfolder="unet").state_dict()
    assert all(np.allclose(adapted[k].numpy(), fused[k].numpy(), atol=1e-6) for k in fused)  # the card's recipe


@pytest.mark.slow
def test_a_full_image_run_exports_as_its_pipeline_with_the_studios_sampler(media, tiny_pipeline, tmp_path):  # noqa: F811
    import torch
    from diffusers import DDIMScheduler, DiffusionPipeline

    store = media["store"]
    config = TrainConfig(max_steps=2, save_steps=2, eval_steps=100, learning_rate=1e-3, warmup_steps=0,
                         per_device_train_batch_size=4, seed=0, use_cpu=True, image={"resolution": 16})
    run = run_in_process(store, media["shapes"], str(tiny_pipeline), "full", config)
    found = export_run(store, str(run), "merged", tmp_path / "full")
    assert "studio_model.json" not in found["files"] and found["library"] == "diffusers"
    pipeline = DiffusionPipeline.from_pretrained(tmp_path / "full", use_safetensors=True)
    assert isinstance(pipeline.scheduler, DDIMScheduler)  # the run saved its DDPM training schedule
    plain = pipeline("a blue square", num_inference_steps=4, height=16, width=16,
                     generator=torch.Generator().manual_seed(2)).images[0]
    ours = studio_images(store, [f"{run}:2"], "a blue square", 2)[f"{run}:2"]
    assert np.abs(np.asarray(plain).astype(int) - ours).max() <= 1


def test_the_cards_peft_recipe_for_an_image_lora_gives_the_merged_unet(media, tiny_pipeline, tmp_path):  # noqa: F811
    """What the card of an image LoRA's peft export tells people to run works, and equals the merged export."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import PeftModel

    store, run = media["store"], media["image"]
    export_run(store, f"{run}:2", "peft", tmp_path / "peft")
    export_run(store, f"{run}:2", "merged", tmp_path / "merged")
    assert "PeftModel.from_pretrained(pipeline.unet" in (tmp_path / "peft" / "README.md").read_text()
    pipeline = StableDiffusionPipeline.from_pretrained(tiny_pipeline, use_safetensors=True)
    unet = PeftModel.from_pretrained(pipeline.unet, tmp_path / "peft").merge_and_unload()
    merged = UNet2DConditionModel.from_pretrained(tmp_path / "merged", subfolder="unet").state_dict()
    base = UNet2DConditionModel.from_pretrained(tiny_pipeline, subfolder="unet").state_dict()
    ours = unet.state_dict()
    assert ours.keys() == merged.keys()
    assert all(torch.allclose(ours[k], merged[k], atol=1e-6) for k in ours)
    assert not all(torch.allclose(base[k], merged[k]) for k in base)

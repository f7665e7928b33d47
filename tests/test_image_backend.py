"""The image backend on a Stable-Diffusion-class pipeline: a tiny one (UNet2DConditionModel, AutoencoderKL,
CLIP text encoder and tokenizer) built from configs and saved with ``save_pretrained`` like a Hub checkpoint,
then loaded through the same ``from_pretrained`` code as a Hub id, for LoRA, full fine-tuning and a UNet
from scratch. No network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.models.image import ImageBackend
from studio.training.config import TrainConfig
from studio.training.loop import train_in_process

WORDS = ["a", "red", "green", "blue", "yellow", "circle", "square"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_clip_tokenizer(folder: Path):
    """A CLIP BPE tokenizer over a few words (character vocabulary plus whole-word merges)."""
    from transformers import CLIPTokenizer

    letters = sorted(set("".join(WORDS)))
    vocab = letters + [c + "</w>" for c in letters]
    merges = []
    for word in WORDS:  # merge each word left to right into one token
        piece = word[0]
        for index, char in enumerate(word[1:], start=1):
            last = index == len(word) - 1
            merges.append(f"{piece} {char}{'</w>' if last else ''}")
            piece += char
            vocab.append(piece + ("</w>" if last else ""))
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    vocab = list(dict.fromkeys(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory) -> Path:
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("hub")
    tokenizer = tiny_clip_tokenizer(root / "vocab")
    torch.manual_seed(7)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
                                                num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
                                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), norm_num_groups=32, cross_attention_dim=32,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=32, sample_size=16)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, steps_offset=1, clip_sample=False)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    folder = root / "tiny-sd"
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> tuple[dict, Path]:
    from studio.examples.shapes import make_shapes

    folder = tmp_path_factory.mktemp("shapes")
    images = make_shapes(folder, 2, 0)
    manifest = [{"id": i, "file": p.name, "caption": p.with_suffix(".txt").read_text().strip()}
                for i, p in enumerate(images)]
    return {"train": manifest[:12], "validation": manifest[12:]}, folder


def config(**changes) -> TrainConfig:
    base = {"image": {"resolution": 16}, "per_device_train_batch_size": 4, "seed": 0, "use_cpu": True,
            "learning_rate": 1e-3, "eval_steps": 4, "save_steps": 100, "warmup_steps": 0}
    return TrainConfig.model_validate({**base, **changes})


def generated(backend, handle, out: Path, seed: int = 3) -> np.ndarray:
    [sample] = backend.generate(handle, ["a red circle"], [seed], {"steps": 3}, out)
    return np.asarray(Image.open(sample.path))


@pytest.mark.parametrize("method", ["lora", "full", "scratch"])
def test_pipeline_folder_loads_and_trains_each_method(tiny_pipeline, rows, method, tmp_path):
    by_split, root = rows
    backend = ImageBackend()
    handle = backend.load(str(tiny_pipeline), method, config(max_steps=4))
    module = handle.module
    trainable, total = handle.parameter_counts()
    unet_size = sum(p.numel() for p in module.unet.parameters())
    assert not any(p.requires_grad for p in module.text_encoder.parameters())  # pretrained encoders stay frozen
    assert not any(p.requires_grad for p in module.vae.parameters())
    if method == "lora":
        assert 0 < trainable < 0.2 * unet_size
        assert all("lora" in name for name, p in module.unet.named_parameters() if p.requires_grad)
    else:
        assert trainable == unet_size
    out = train_in_process(backend, handle, by_split, root, config(max_steps=4))
    assert out["status"] == "completed" and out["steps"] == 4
    assert all(np.isfinite(h["value"]) for h in out["history"] if h["name"].endswith("loss"))
    assert generated(backend, handle, tmp_path).shape == (16, 16, 3)  # the VAE decodes latents to pixels


def test_scratch_builds_the_unet_from_its_config_not_its_weights(tiny_pipeline):
    from diffusers import UNet2DConditionModel

    pretrained = UNet2DConditionModel.from_pretrained(tiny_pipeline, subfolder="unet")
    fresh = ImageBackend().load(str(tiny_pipeline), "scratch", config()).module.unet
    assert fresh.config.block_out_channels == pretrained.config.block_out_channels
    assert not all(np.allclose(a.detach(), b.detach()) for a, b in zip(fresh.parameters(), pretrained.parameters()))


def test_lora_adapter_saves_alone_and_loads_back_with_identical_images(tiny_pipeline, rows, tmp_path):
    by_split, root = rows
    backend = ImageBackend()
    trained = backend.load(str(tiny_pipeline), "lora", config(max_steps=3, learning_rate=1e-2))
    train_in_process(backend, trained, by_split, root, config(max_steps=3, learning_rate=1e-2))
    backend.save(trained, tmp_path / "adapter")
    saved = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "pytorch_lora_weights.safetensors"} <= saved
    assert "unet" not in saved  # only the adapter, not a copy of the model
    fresh = backend.load(str(tiny_pipeline), "lora", config())
    before = generated(backend, fresh, tmp_path / "before")
    backend.load_weights(fresh, tmp_path / "adapter")
    assert np.array_equal(generated(backend, fresh, tmp_path / "after"), generated(backend, trained, tmp_path / "t"))
    assert not np.array_equal(before, generated(backend, fresh, tmp_path / "after2"))


def plain_diffusers_image(pipeline, prompt: str, seed: int, steps: int, size: int = 16) -> np.ndarray:
    """What a plain diffusers pipeline draws for ``seed`` with the studio's sampler (DDIM, eta 0) and guidance (7.5
    for a pretrained model): its generator draws the starting noise as the studio does, on the CPU."""
    import torch
    from diffusers import DDIMScheduler

    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    image = pipeline(prompt, num_inference_steps=steps, height=size, width=size, guidance_scale=7.5,
                     generator=torch.Generator().manual_seed(seed)).images[0]
    return np.asarray(image.convert("RGB")).astype(int)


def test_lora_file_loads_into_a_plain_diffusers_pipeline(tiny_pipeline, rows, tmp_path):
    """Interop: what the studio saves is what diffusers users load with ``load_lora_weights``, and it draws the
    studio's image."""
    from diffusers import StableDiffusionPipeline

    by_split, root = rows
    backend = ImageBackend()
    handle = backend.load(str(tiny_pipeline), "lora", config(max_steps=2, learning_rate=2e-2))
    train_in_process(backend, handle, by_split, root, config(max_steps=2, learning_rate=2e-2))
    backend.save(handle, tmp_path / "adapter")
    pipeline = StableDiffusionPipeline.from_pretrained(tiny_pipeline, use_safetensors=True)
    base = plain_diffusers_image(pipeline, "a red circle", seed=3, steps=3)
    pipeline.load_lora_weights(tmp_path / "adapter")
    theirs = plain_diffusers_image(pipeline, "a red circle", seed=3, steps=3)
    ours = generated(backend, handle, tmp_path / "ours", seed=3).astype(int)
    assert np.abs(theirs - ours).max() <= 1  # the same image (rounding aside)
    assert np.abs(theirs - base).max() > 1  # with the adapter in it


def test_full_model_folder_is_a_pipeline_and_a_model_reference(tiny_pipeline, rows, tmp_path):
    from diffusers import StableDiffusionPipeline

    by_split, root = rows
    backend = ImageBackend()
    handle = backend.load(str(tiny_pipeline), "full", config(max_steps=2))
    train_in_process(backend, handle, by_split, root, config(max_steps=2))
    backend.save(handle, tmp_path / "model")
    StableDiffusionPipeline.from_pretrained(tmp_path / "model", use_safetensors=True)  # a complete pipeline
    again = backend.load(str(tmp_path / "model"), "full", config())
    assert np.array_equal(generated(backend, again, tmp_path / "a"), generated(backend, handle, tmp_path / "b"))


def test_weights_only_as_pickles_are_refused(tiny_pipeline, tmp_path):
    import shutil

    from safetensors.torch import load_file

    import torch

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_pipeline, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), folder / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ValueError, match="unet has no .safetensors weights"):
        ImageBackend().load(str(folder), "full", config())


def test_sdxl_class_pipelines_are_refused_plainly(tiny_pipeline, tmp_path):
    import shutil

    folder = tmp_path / "xl"
    shutil.copytree(tiny_pipeline, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(NotImplementedError, match="SDXL"):
        ImageBackend().load(str(folder), "lora", config())


def test_the_size_an_image_must_be_a_multiple_of_is_read_from_the_vae_config_without_loading(tiny_pipeline, tmp_path):
    from studio.models.image import size_multiple

    assert size_multiple(str(tiny_pipeline)) == 2  # two VAE levels: one halving (SD-class: four levels, 8)
    assert size_multiple("starter-image") == 1  # pixel space: the UNet takes any size
    (tmp_path / "unet").mkdir()
    assert size_multiple(str(tmp_path)) == 1  # a saved starter: no VAE
    assert size_multiple("nobody/not-downloaded-model") is None  # only a download would tell: left to the load

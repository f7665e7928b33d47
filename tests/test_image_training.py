"""Image training as kohya_ss and ai-toolkit users expect it: aspect-ratio buckets, latents cached on disk (the same
loss as without), noise offset, and a folder of uncaptioned photos of one subject imported with a trigger word and
trained. Tiny models (the starter; the tiny SD pipeline of test_image_backend), no network."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from media_factory import photo, save
from studio.models.image import ImageBackend, bucket_for, bucket_sizes
from studio.training.config import TrainConfig
from studio.training.loop import make_loader, train_in_process
from test_image_backend import tiny_pipeline  # noqa: F401 - module-scoped fixture

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# (width, height) of the pictures: wide, tall and square, three of each
SHAPES = [(64, 32), (32, 64), (48, 48)] * 3


@pytest.fixture(scope="module")
def mixed_shapes(tmp_path_factory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("mixed")
    rows = []
    for number, (width, height) in enumerate(SHAPES):
        save(photo(width, seed=number, height=height), folder / f"{number}.png")
        rows.append({"id": number, "file": f"{number}.png", "caption": "a red circle", "width": width,
                     "height": height})
    return {"train": rows[:6], "validation": rows[6:]}, folder


def config(**changes) -> TrainConfig:
    base = {"per_device_train_batch_size": 2, "seed": 0, "use_cpu": True, "learning_rate": 1e-3, "eval_steps": 2,
            "save_steps": 100, "warmup_steps": 0, "max_steps": 2}
    image = {"resolution": 16, **changes.pop("image", {})}
    return TrainConfig.model_validate({**base, **changes, "image": image})


def batches_of(backend, handle, by_split, root, train_config) -> list[dict]:
    dataset = backend.datasets(handle, by_split, root, train_config)["train"]
    loader = make_loader(dataset, backend.collate(handle, train_config), 2, seed=0, shuffle=True)
    return list(loader)


def test_buckets_are_near_the_resolution_and_fit_each_shape():
    sizes = bucket_sizes(512, 64)
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 for w, h in sizes)
    assert (512, 512) in sizes and (768, 320) in sizes and (320, 768) in sizes
    assert bucket_for(1920, 1080, sizes) == (640, 384)  # 16:9 -> 5:3, the nearest shape
    assert bucket_for(1080, 1920, sizes) == (384, 640)
    assert bucket_for(1000, 1000, sizes) == (512, 512)


def test_bucketed_image_batches_have_the_shape_of_their_bucket(mixed_shapes):
    by_split, root = mixed_shapes
    backend = ImageBackend()
    train_config = config(image={"aspect_buckets": True})
    handle = backend.load("starter-image", "scratch", train_config, by_split["train"])
    batches = batches_of(backend, handle, by_split, root, train_config)
    # the starter halves twice: sides are multiples of 4 pixels, about 16 x 16 of them
    assert sorted(tuple(b["pixel_values"].shape) for b in batches) == [
        (2, 3, 12, 20), (2, 3, 16, 16), (2, 3, 20, 12)]
    square = batches_of(backend, handle, by_split, root, config())
    assert {tuple(b["pixel_values"].shape[1:]) for b in square} == {(3, 16, 16)}  # off: centre-cropped squares

    out = train_in_process(backend, handle, by_split, root, train_config)
    assert out["steps"] == 2
    assert all(math.isfinite(h["value"]) for h in out["history"] if h["name"].endswith("loss"))


def test_bucket_sides_follow_the_vae_and_the_unet(mixed_shapes, tiny_pipeline):  # noqa: F811
    by_split, root = mixed_shapes
    backend = ImageBackend()
    train_config = config(image={"aspect_buckets": True, "resolution": 32})
    handle = backend.load(str(tiny_pipeline), "lora", train_config)
    shapes = {tuple(b["pixel_values"].shape[2:]) for b in batches_of(backend, handle, by_split, root, train_config)}
    assert shapes == {(20, 44), (44, 20), (32, 32)}  # VAE x2, UNet x2: multiples of 4 pixels (2.2:1 nearest 2:1)


@pytest.mark.parametrize("method", ["lora", "scratch"])
def test_cached_latents_give_the_same_loss_as_uncached(mixed_shapes, tiny_pipeline, method):  # noqa: F811
    """The cache keeps the VAE's posterior (not one sample of it) and the frozen text encoder's features, and the
    run draws the same random numbers: flips, dropped captions, latents and noise are the same, so the losses
    are (a pixel-space starter caches its pixels, its text encoder trains)."""
    by_split, root = mixed_shapes
    model = str(tiny_pipeline) if method == "lora" else "starter-image"
    backend = ImageBackend()
    settings = {"max_steps": 3, "image": {"aspect_buckets": True, "random_flip": True},
                "diffusion": {"caption_dropout": 0.5, "noise_offset": 0.1}}
    runs = []
    for cached in (False, True):
        train_config = config(**{**settings, "image": {**settings["image"], "cache_latents": cached}})
        handle = backend.load(model, method, train_config, by_split["train"])
        runs.append(train_in_process(backend, handle, by_split, root, train_config)["history"])
    losses = [[(h["step"], h["name"], h["value"]) for h in run if h["name"].endswith("loss")] for run in runs]
    assert [x[:2] for x in losses[0]] == [x[:2] for x in losses[1]] and len(losses[0]) >= 5
    for (_, _, uncached), (_, _, cached) in zip(*losses):
        assert cached == pytest.approx(uncached, rel=1e-4, abs=1e-6)
    files = sorted((root / ".cache" / "latents").glob("*.safetensors"))
    assert files and not list((root / ".cache" / "latents").glob("*.partial"))


def test_the_latent_cache_is_made_once_and_read_from_disk(mixed_shapes, tiny_pipeline):  # noqa: F811
    by_split, root = mixed_shapes
    backend = ImageBackend()
    train_config = config(image={"cache_latents": True, "resolution": 24})
    handle = backend.load(str(tiny_pipeline), "lora", train_config)
    dataset = backend.datasets(handle, by_split, root, train_config)["train"]
    assert dataset.cache(handle.module, root / ".cache" / "latents") == 0  # made when the datasets were
    item = dataset[0]
    assert "pixel_values" not in item and "input_ids" not in item
    assert tuple(item["cached_posterior"].shape) == (8, 12, 12)  # mean and log-variance of 4 channels, 24 / 2
    assert tuple(item["text_features"].shape) == (16, 32)


def test_noise_offset_shifts_each_picture_and_channel(mixed_shapes):
    import torch

    by_split, root = mixed_shapes
    backend = ImageBackend()
    seen = {}
    for offset in (0.0, 1.0):
        train_config = config(diffusion={"noise_offset": offset})
        handle = backend.load("starter-image", "scratch", train_config, by_split["train"])
        module = handle.module

        def capture(latents, text, noise, timesteps, offset=offset):
            seen[offset] = noise
            return noise.new_zeros(noise.shape[0])

        module.prediction_error = capture
        batch = next(iter(make_loader(backend.datasets(handle, by_split, root, train_config)["train"],
                                      backend.collate(handle, train_config), 6, seed=0, shuffle=False)))
        torch.manual_seed(0)
        module.train()
        module(batch)
    # the mean of each picture's channel: about 1/16 apart without the offset (16 x 16 values), about 1 with it
    spread = {offset: float(noise.mean(dim=(2, 3)).std()) for offset, noise in seen.items()}
    assert spread[0.0] < 0.15 < 0.5 < spread[1.0]


def test_uncaptioned_photos_with_a_trigger_word_import_and_train(tmp_path, stores):
    from studio.data.items import ImportRefused
    from studio.data.service import get_version, import_dataset, read_manifest

    store = stores()
    folder = tmp_path / "my dog"
    for number in range(8):
        save(photo(96 + 16 * (number % 3), seed=number, height=96), folder / f"IMG_{number:04d}.jpg", quality=92)
    with pytest.raises(ImportRefused, match="trigger_word"):  # without one: no captions, nothing to learn from
        import_dataset(store, [folder], split="0.75,0.25,0")
    result = import_dataset(store, [folder], steps={"missing_captions": {"trigger_word": "sks dog"}},
                            split="0.75,0.25,0")
    assert (result["items_in"], result["items_kept"]) == (8, 8)
    version = get_version(store, str(result["dataset_id"]))
    rows = {split: read_manifest(store, version, split) for split in ("train", "validation")}
    assert {row["caption"] for split in rows.values() for row in split} == {"sks dog"}

    backend = ImageBackend()
    train_config = config(image={"aspect_buckets": True}, sample_prompts=["sks dog"])
    handle = backend.load("starter-image", "scratch", train_config, rows["train"])
    out = train_in_process(backend, handle, rows, store.path(version.path), train_config)
    assert out["status"] == "completed" and out["steps"] == 2
    assert all(math.isfinite(h["value"]) for h in out["history"] if h["name"].endswith("loss"))


def test_a_kohya_folder_repeats_its_pictures_and_captions_them(tmp_path, stores):
    from studio.data.service import get_version, import_dataset, read_manifest

    store = stores()
    folder = tmp_path / "train"
    for number in range(2):
        save(photo(64, seed=number), folder / "10_sks dog" / f"{number}.png")
    save(photo(64, seed=5), folder / "1_dog" / "5.png")
    (folder / "1_dog" / "5.txt").write_text("a dog on the grass")
    save(photo(64, seed=6), folder / "dogs" / "6.png")
    (folder / "dogs" / "6.txt").write_text("a dog asleep")
    result = import_dataset(store, [folder], split="1,0,0")
    assert result["items_kept"] == 4
    rows = read_manifest(store, get_version(store, str(result["dataset_id"])), "train")
    assert sorted((row["source"], row["caption"], row.get("repeats")) for row in rows) == [
        ("train/10_sks dog/0.png", "sks dog", 10), ("train/10_sks dog/1.png", "sks dog", 10),
        ("train/1_dog/5.png", "a dog on the grass", 1), ("train/dogs/6.png", "a dog asleep", None)]

    backend = ImageBackend()
    handle = backend.load("starter-image", "scratch", config(), rows)
    datasets = backend.datasets(handle, {"train": rows, "validation": rows}, store.path(
        get_version(store, str(result["dataset_id"])).path), config())
    assert (len(datasets["train"]), len(datasets["validation"])) == (2 * 10 + 1 + 1, 4)  # validation: once each


def test_heldout_loss_of_a_bucketed_run_batches_by_bucket(mixed_shapes):
    from studio.evaluation.metrics_media import heldout_loss

    by_split, root = mixed_shapes
    backend = ImageBackend()
    train_config = config(image={"aspect_buckets": True})
    handle = backend.load("starter-image", "scratch", train_config, by_split["train"])
    data = backend.datasets(handle, {"validation": by_split["train"]}, root, train_config)["validation"]
    collate = backend.collate(handle, train_config)
    together, alone = heldout_loss(handle, data, collate), heldout_loss(handle, data, collate, batch_size=1)
    assert together["items"] == 6 and together["loss"] == pytest.approx(alone["loss"], rel=1e-5)

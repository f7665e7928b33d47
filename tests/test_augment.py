"""Augmentation: pictures mirrored, cropped and colour-jittered, clips given a gain, noise at a chosen SNR and a time
shift, drawn per (run seed, epoch, item) so a run with data-loading workers, a resumed run and the preview see the
same variants as one process; text not augmented, with the reason; the settings' messages; and a starter run that
trains with augmentation and records it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from media_factory import circle, photo, save, tone, write_audio
from studio.data.augment import (TEXT_NONE, AudioAugmentation, ImageAugmentation, augment_image, augment_wave,
                                 crop_box, item_draws)
from studio.data.service import import_dataset
from studio.fields import InvalidSettings
from studio.training.augment_preview import PreviewRefused, preview_augmentation
from studio.training.config import TrainConfig, apply_overrides, describe_augmentation
from studio.training.loop import make_loader

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PICTURES = ImageAugmentation(random_flip=True, crop_scale=0.6, crop_ratio=1.3, brightness=0.2, contrast=0.2,
                             saturation=0.2, hue=0.05)
CLIPS = AudioAugmentation(gain_db_min=-6, gain_db_max=6, noise_snr_db=20, time_shift_seconds=0.1)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# ----------------------------------------------------------------------------- the operations


def test_the_same_seed_epoch_and_item_give_the_same_picture_and_any_other_a_different_one():
    source = photo(64, seed=3)
    made = {key: pixels(augment_image(source, (32, 32), PICTURES, item_draws(*key)))
            for key in [(7, 0, 0), (8, 0, 0), (7, 1, 0), (7, 0, 1)]}
    again = pixels(augment_image(source, (32, 32), PICTURES, item_draws(7, 0, 0)))
    assert np.array_equal(made[(7, 0, 0)], again)
    for other in [(8, 0, 0), (7, 1, 0), (7, 0, 1)]:  # another seed, epoch or item
        assert not np.array_equal(made[(7, 0, 0)], made[other])


def test_the_same_seed_gives_the_same_clip_and_another_a_different_one():
    wave = tone(440, seconds=0.5)[:, 0]
    first, again, other = (augment_wave(wave, 16_000, CLIPS, item_draws(seed, 0, 0)) for seed in (1, 1, 2))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_crops_keep_at_least_crop_scale_of_the_area_and_the_shape_within_crop_ratio():
    options = ImageAugmentation(crop_scale=0.7, crop_ratio=1.25)
    shares, stretches = [], []
    for index in range(300):
        left, top, right, bottom = crop_box(200, 100, (32, 32), options, item_draws(0, 0, index))
        assert 0 <= left and 0 <= top and right <= 200 + 1e-9 and bottom <= 100 + 1e-9
        shares.append((right - left) * (bottom - top) / (100 * 100))  # of the largest square that fits
        stretches.append((right - left) / (bottom - top))
    assert 0.7 - 1e-9 <= min(shares) and max(shares) <= 1 + 1e-9 and min(shares) < 0.75 and max(shares) > 0.95
    assert 1 / 1.25 - 1e-9 <= min(stretches) and max(stretches) <= 1.25 + 1e-9
    # off: the centred square an uncropped picture is fitted to
    assert crop_box(200, 100, (32, 32), ImageAugmentation(), item_draws(0, 0, 0)) == (50, 0, 150, 100)


def test_without_augmentation_a_picture_is_the_plain_centre_crop():
    from PIL import ImageOps

    source = photo(48, seed=1, height=64)
    plain = ImageOps.fit(source, (16, 16), Image.Resampling.LANCZOS)
    assert np.array_equal(pixels(augment_image(source, (16, 16), ImageAugmentation(), item_draws(0, 0, 0))),
                          pixels(plain))


def test_mirroring_flips_about_half_the_items_and_nothing_else():
    source = circle(32, color="red", background="white")
    source.paste((0, 0, 255), (0, 0, 8, 32))  # a blue band on the left: mirrored, it is on the right
    options = ImageAugmentation(random_flip=True)
    made = [pixels(augment_image(source, (32, 32), options, item_draws(0, 0, i))) for i in range(100)]
    mirrored = [image for image in made if not np.array_equal(image, pixels(source))]
    assert 30 < len(mirrored) < 70
    assert all(np.array_equal(image, pixels(source)[:, ::-1]) for image in mirrored)


def test_brightness_jitter_stays_within_its_factor():
    source = Image.new("RGB", (16, 16), (100, 100, 100))
    options = ImageAugmentation(brightness=0.2)
    means = [pixels(augment_image(source, (16, 16), options, item_draws(0, 0, i))).mean() for i in range(50)]
    assert 80 - 1 <= min(means) < 90 and 110 < max(means) <= 120 + 1


def test_hue_jitter_turns_the_colour_a_little():
    source = Image.new("RGB", (8, 8), (200, 40, 40))
    turned = pixels(augment_image(source, (8, 8), ImageAugmentation(hue=0.1), item_draws(0, 0, 3)))[0, 0]
    assert not np.array_equal(turned, [200, 40, 40]) and turned[0] > 150  # still a red, not another colour


def test_noise_is_added_at_the_requested_snr_and_the_gain_in_its_range():
    wave = tone(440, seconds=1.0)[:, 0]
    for snr in (10.0, 30.0):
        options = AudioAugmentation(noise_snr_db=snr, gain_db_min=-6, gain_db_max=6)
        draws = item_draws(0, 0, 0)
        out = augment_wave(wave, 16_000, options, draws)
        gain_db = item_draws(0, 0, 0).uniform(-6, 6)  # the draw augment_wave makes (no shift: no draw before it)
        clean = wave * 10 ** (gain_db / 20)
        measured = 10 * math.log10(np.mean(clean ** 2) / np.mean((out - clean) ** 2))
        assert measured == pytest.approx(snr, abs=0.1)
    gains = [10 * math.log10(np.mean(augment_wave(wave, 16_000, AudioAugmentation(gain_db_min=-3, gain_db_max=2),
                                                  item_draws(0, 0, i)) ** 2) / np.mean(wave ** 2)) for i in range(40)]
    assert -3 - 1e-3 <= min(gains) < -2 and 1 < max(gains) <= 2 + 1e-3


def test_time_shift_moves_the_sound_no_further_than_asked():
    wave = np.zeros(1600, dtype=np.float32)
    wave[800] = 1.0
    options = AudioAugmentation(time_shift_seconds=0.01)  # 160 samples at 16 kHz
    moved = [int(np.argmax(augment_wave(wave, 16_000, options, item_draws(0, 0, i)))) - 800 for i in range(60)]
    assert min(moved) >= -160 and max(moved) <= 160 and len(set(moved)) > 20


def test_silence_stays_silent_with_noise_on():
    assert not augment_wave(np.zeros(100, np.float32), 16_000, CLIPS, item_draws(0, 0, 0)).any()


# ----------------------------------------------------------------------------- settings


def test_the_settings_say_what_is_wrong_and_an_empty_field_is_the_default():
    from studio.ui.forms import form_values

    with pytest.raises(InvalidSettings, match=r"gain_db_min \(3\) is above gain_db_max \(0\)"):
        apply_overrides(TrainConfig(), ["gain_db_min=3"])
    with pytest.raises(InvalidSettings, match=r"smallest crop \(crop_scale\): .*between 0.25 and 1"):
        apply_overrides(TrainConfig(), ["crop_scale=0.1"])
    with pytest.raises(InvalidSettings, match="hue"):
        apply_overrides(TrainConfig(), ["hue=0.4"])
    with pytest.raises(InvalidSettings, match="cache_latents encodes each picture once"):
        apply_overrides(TrainConfig(), ["cache_latents=true", "brightness=0.1"])
    assert apply_overrides(TrainConfig(), ["cache_latents=true", "random_flip=true"]).image.cache_latents
    with pytest.raises(InvalidSettings, match="cache_codes encodes each clip once"):
        apply_overrides(TrainConfig(), ["cache_codes=true", "noise_snr_db=30"])
    assert form_values(ImageAugmentation, {"crop_scale": "", "hue": " "}) == {"crop_scale": 1.0, "hue": 0.0}
    assert form_values(AudioAugmentation, {"noise_snr_db": ""}) == {"noise_snr_db": 0.0}


def test_a_run_saved_with_random_flip_under_image_keeps_it():
    config = TrainConfig.model_validate({"image": {"random_flip": True, "resolution": 16}})
    assert config.image_augmentation.random_flip and config.image.resolution == 16
    assert "random_flip" not in config.model_dump()["image"]
    assert apply_overrides(TrainConfig(), ["random_flip=true"]).image_augmentation.random_flip


def test_text_is_not_augmented_and_says_why(store):
    assert "changes what a sentence means" in TEXT_NONE and "back-translation" in TEXT_NONE
    assert describe_augmentation(TrainConfig(), "text") == f"none ({TEXT_NONE})"
    result = import_dataset(store, [Path(__file__).resolve().parent.parent / "assets/examples/stories.txt"])
    with pytest.raises(PreviewRefused, match="Text is not augmented: swapping"):
        preview_augmentation(store, str(result["dataset_id"]), TrainConfig(), store.home / "preview")


# ----------------------------------------------------------------------------- datasets, workers, resume


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("pictures")
    rows = []
    for number in range(6):
        save(photo(40, seed=number, height=32), folder / f"{number}.png")
        rows.append({"id": number, "file": f"{number}.png", "caption": "a photo"})
    return {"train": rows, "validation": rows[:2]}, folder


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("clips")
    rows = []
    for number in range(4):
        write_audio(folder / f"{number}.wav", tone(200 + 100 * number, seconds=0.6, rate=8000), rate=8000)
        rows.append({"id": number, "file": f"{number}.wav", "caption": "a tone", "duration": 0.6})
    return {"train": rows, "validation": rows[:1]}, folder


def image_dataset(by_split, root, **settings):
    from studio.models.image import ImageBackend

    config = TrainConfig.model_validate({"seed": 5, "use_cpu": True, "image": {"resolution": 16},
                                         "image_augmentation": PICTURES.model_dump(), **settings})
    backend = ImageBackend()
    handle = backend.load("starter-image", "scratch", config, by_split["train"])
    return backend.datasets(handle, by_split, root, config), backend.collate(handle, config)


def audio_dataset(by_split, root):
    from studio.models.audio import SpectrogramBackend

    config = TrainConfig.model_validate({"seed": 5, "use_cpu": True, "audio": {"clip_seconds": 0.25,
                                                                              "sample_rate": 8000},
                                         "audio_augmentation": CLIPS.model_dump()})
    backend = SpectrogramBackend()
    handle = backend.load("starter-audio", "scratch", config, by_split["train"])
    return backend.datasets(handle, by_split, root, config), backend.collate(handle, config)


def epoch_batches(dataset, collate, epoch: int, workers: int) -> list:
    from studio.data.augment import start_epoch

    start_epoch(dataset, epoch)
    loader = make_loader(dataset, collate, 2, seed=0, shuffle=True, workers=workers)
    return [batch["pixel_values"] for batch in loader]


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_two_loading_workers_give_the_same_augmented_batches_as_one_process(modality, pictures, clips):
    import torch

    by_split, root = pictures if modality == "image" else clips
    datasets, collate = (image_dataset if modality == "image" else audio_dataset)(by_split, root)
    single = [epoch_batches(datasets["train"], collate, epoch, 0) for epoch in (0, 1)]
    workers = [epoch_batches(datasets["train"], collate, epoch, 2) for epoch in (0, 1)]
    for one, several in zip(single, workers):
        assert len(one) == len(several) and all(torch.equal(a, b) for a, b in zip(one, several))
    # each epoch draws anew; validation items are left as they are
    assert not all(torch.equal(a, b) for a, b in zip(single[0], single[1]))
    assert datasets["validation"].augmentation is None


def test_a_resumed_run_sees_the_augmentations_of_the_run_it_goes_on(pictures):
    """A resume builds its datasets anew and starts at the saved epoch: item i in epoch e is what it was."""
    import torch

    by_split, root = pictures
    original, _ = image_dataset(by_split, root)
    original["train"].start_epoch(2)
    before = [original["train"][i]["pixel_values"] for i in range(3)]
    resumed, _ = image_dataset(by_split, root)
    resumed["train"].start_epoch(2)
    assert all(torch.equal(a, resumed["train"][i]["pixel_values"]) for i, a in enumerate(before))


# ----------------------------------------------------------------------------- preview and a run


@pytest.fixture
def picture_version(store, tmp_path) -> str:
    folder = tmp_path / "pictures"
    folder.mkdir()
    for number, color in enumerate(["red", "blue", "green", "red", "blue", "green"] * 2):
        save(photo(72, seed=number), folder / f"{number}.png")
        (folder / f"{number}.txt").write_text(f"a {color} photo")
    return str(import_dataset(store, [folder], split="0.8,0.2,0")["dataset_id"])


def test_the_preview_writes_what_epochs_one_to_n_of_the_run_see(store, picture_version, tmp_path):
    from studio.data.service import get_version, read_manifest
    from studio.models.image import load_image

    config = apply_overrides(TrainConfig(), ["resolution=16", "crop_scale=0.7", "random_flip=true", "seed=3"])
    preview = preview_augmentation(store, picture_version, config, tmp_path / "out", items=2, variants=4)
    assert preview.modality == "image" and len(preview.files) == 8
    assert preview.files[5][1] == "item 2 · epoch 2" and "cropped to 70%" in preview.described
    version = get_version(store, picture_version)
    row = read_manifest(store, version, "train")[1]
    trained = load_image(store.path(version.path) / row["file"], 16, config.image_augmentation,
                         item_draws(3, 1, 1))  # item 2, epoch 2, as the training dataset draws it
    shown = np.asarray(Image.open(preview.files[5][0]), dtype=np.float32) / 127.5 - 1.0
    assert np.allclose(trained.permute(1, 2, 0).numpy(), shown, atol=1e-6)


def test_the_audio_preview_and_the_cli(store, tmp_path, capsys):
    import soundfile as sf

    from studio.cli import main

    folder = tmp_path / "tones"
    for number in range(5):
        write_audio(folder / f"{number}.wav", tone(300 + 50 * number, seconds=0.5))
        (folder / f"{number}.txt").write_text("a tone")
    dataset = str(import_dataset(store, [folder], split="0.8,0.2,0")["dataset_id"])
    code = main(["--home", str(store.home), "data", "augment-preview", dataset, "--out", str(tmp_path / "out"),
                 "--set", "noise_snr_db=20", "--set", "gain_db_min=-3", "--items", "1", "--variants", "3", "--json"])
    found = json.loads(capsys.readouterr().out)
    assert code == 0 and len(found["files"]) == 3 and "20 dB SNR" in found["augmentation"]
    waves = [sf.read(path)[0] for path in found["files"]]
    assert len({len(w) for w in waves}) == 1 and not np.array_equal(waves[0], waves[1])
    code = main(["--home", str(store.home), "data", "augment-preview", dataset, "--out", str(tmp_path / "bad"),
                 "--set", "gain_db_min=9"])
    assert code == 2 and "gain_db_min (9) is above gain_db_max (0)" in capsys.readouterr().err


def test_a_starter_run_with_augmentation_trains_and_records_it(store, picture_version, capsys):
    from studio.cli import main
    from studio.training import jobs, worker
    from studio.training.runs import run_summary

    config = apply_overrides(TrainConfig(), [
        "max_steps=3", "warmup_steps=0", "eval_steps=3", "save_steps=100", "per_device_train_batch_size=4",
        "sample_steps=0", "resolution=16", "use_cpu=true", "random_flip=true", "crop_scale=0.8", "brightness=0.1",
        "hue=0.02"])
    run_id = jobs.create_run(store, picture_version, "starter-image", "scratch", config)
    jobs.finish_run(store, run_id, worker.run_worker(store, run_id))
    summary = run_summary(store, run_id, with_history=True)
    assert summary["status"] == "completed", summary.get("error")
    losses = [h["value"] for h in summary["history"] if h["name"] == "train_loss"]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    recorded = TrainConfig.model_validate(summary["config"]).image_augmentation
    assert recorded == ImageAugmentation(random_flip=True, crop_scale=0.8, brightness=0.1, hue=0.02)
    assert main(["--home", str(store.home), "runs", "show", str(run_id)]) == 0
    shown = capsys.readouterr().out
    assert ("augmentation: mirrored half the time; cropped to 80%–100% of the area (shape within ×1.1); colour "
            "jitter: brightness ±0.1, hue ±0.02, drawn anew each epoch from the run's seed") in shown

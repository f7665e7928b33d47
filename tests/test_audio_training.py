"""Audio training with the image side's tricks: clips batched by length (``length_buckets``) for the spectrogram starter
and MusicGen, and MusicGen's EnCodec codes and T5 caption features cached on disk (``cache_codes``: the same loss as
without, recomputed when the codec changes). Tiny models (the starter; test_musicgen's tiny MusicGen), no network."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from studio.models.audio import AudioBackend, length_bucket
from studio.models.musicgen import CODES, TEXT_FEATURES, audio_codes, tiles
from studio.training.config import TrainConfig
from studio.training.loop import make_loader, train_in_process
from test_musicgen import CLIP, FILE_RATE, RATE, tiny_folder  # noqa: F401 - module-scoped fixture

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# (seconds, caption): clips no longer than CLIP (0.25 s: buckets of 1/16, 1/8, 3/16 and 1/4 s), two in each bucket
SHORT = [(0.05, "low hum"), (0.06, "high beep"), (0.1, "low tone"), (0.12, "high tone"), (0.15, "low hum"),
         (0.18, "high beep"), (0.25, "low tone"), (0.2, "high tone")]
FREQUENCIES = {"low hum": 250.0, "high beep": 1000.0, "low tone": 375.0, "high tone": 1500.0}


def write_clips(folder: Path, lengths: list[tuple[float, str]], rate: int = FILE_RATE) -> list[dict]:
    """Sine clips of the given lengths; every other row without its duration (read from the header then)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for number, (seconds, caption) in enumerate(lengths):
        t = np.arange(int(round(seconds * rate))) / rate
        sf.write(str(folder / f"{number}.wav"), 0.5 * np.sin(2 * np.pi * FREQUENCIES[caption] * t), rate)
        rows.append({"id": number, "file": f"{number}.wav", "caption": caption,
                     **({"duration": seconds} if number % 2 else {})})
    return rows


@pytest.fixture(scope="module")
def short_clips(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("short")
    rows = write_clips(root, SHORT)
    return root, {"train": rows[:6], "validation": rows[6:]}


def config(**changes) -> TrainConfig:
    base = {"per_device_train_batch_size": 2, "seed": 0, "use_cpu": True, "learning_rate": 1e-2, "eval_steps": 2,
            "save_steps": 1000, "warmup_steps": 0, "lr_scheduler_type": "constant", "max_steps": 3}
    audio = {"clip_seconds": CLIP, **changes.pop("audio", {})}
    return TrainConfig.model_validate({**base, **changes, "audio": audio})


def batches_of(backend, handle, rows, root, train_config, split="train") -> list[dict]:
    dataset = backend.datasets(handle, rows, root, train_config)[split]
    return list(make_loader(dataset, backend.collate(handle, train_config), 2, seed=0, shuffle=split == "train"))


def losses_of(out: dict) -> list[tuple[int, str, float]]:
    return [(h["step"], h["name"], h["value"]) for h in out["history"] if h["name"].endswith("loss")]


# ----------------------------------------------------------------------------- length buckets

def test_a_clip_goes_to_the_shortest_bucket_that_holds_it():
    assert [length_bucket(s, 1.0) for s in (0.1, 0.25, 0.3, 0.5, 0.74, 0.8, 1.0, 5.0)] == \
        [0.25, 0.25, 0.5, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_bucketed_musicgen_batches_hold_clips_of_one_length(short_clips, tiny_folder):  # noqa: F811
    root, rows = short_clips
    backend = AudioBackend()
    train_config = config(audio={"length_buckets": True})
    handle = backend.load(str(tiny_folder), "lora", train_config)
    batches = batches_of(backend, handle, rows, root, train_config)
    # 1/16, 1/8 and 3/16 s at 8 kHz, two clips each; each clip's real samples within its bucket's
    assert sorted(tuple(b["input_values"].shape) for b in batches) == [(2, 1, 500), (2, 1, 1000), (2, 1, 1500)]
    for batch in batches:
        samples = batch["input_values"].shape[-1]
        assert all(samples * 0.5 < length <= samples for length in batch["lengths"].tolist())
    [validation] = batches_of(backend, handle, rows, root, train_config, "validation")
    assert tuple(validation["input_values"].shape) == (2, 1, 2000)  # 0.2 and 0.25 s: the whole clip's bucket
    whole = batches_of(backend, handle, rows, root, config())
    assert {tuple(b["input_values"].shape[1:]) for b in whole} == {(1, 2000)}  # off: every clip padded to CLIP

    out = train_in_process(backend, handle, rows, root, train_config)
    assert out["steps"] == 3 and all(math.isfinite(value) for _, _, value in losses_of(out))


def test_bucketed_spectrograms_are_as_wide_as_their_bucket(tmp_path):
    root = tmp_path / "clips"
    rows = write_clips(root, [(0.2, "low hum"), (0.25, "high beep"), (0.45, "low tone"), (0.5, "high tone"),
                              (0.9, "low hum"), (1.0, "high beep"), (3.0, "low tone"), (2.0, "high tone")], rate=8000)
    by_split = {"train": rows, "validation": []}
    backend = AudioBackend()
    train_config = config(audio={"length_buckets": True, "clip_seconds": 1.0})
    handle = backend.load("starter-audio", "scratch", train_config, rows)
    batches = batches_of(backend, handle, by_split, root, train_config)
    # frames of 1/4, 1/2 and all of a second (hop 128 at 8 kHz, rounded up to multiples of 8); the longer files are
    # windows of the whole second
    assert sorted(tuple(b["pixel_values"].shape) for b in batches) == [
        (2, 1, 64, 16), (2, 1, 64, 32), (2, 1, 64, 64), (2, 1, 64, 64)]
    out = train_in_process(backend, handle, by_split, root, train_config)
    assert out["steps"] == 3 and all(math.isfinite(value) for _, _, value in losses_of(out))


# ----------------------------------------------------------------------------- the code cache

def test_cached_codes_give_the_same_loss_as_uncached(short_clips, tiny_folder):  # noqa: F811
    """Clips no longer than a window: the cache holds exactly what the uncached run encodes each step (its codes and
    its caption's T5 features, zero-padded where the mask hides them), so the losses agree, bucketed too."""
    root, rows = short_clips
    backend = AudioBackend()
    runs = []
    for cached in (False, True):
        train_config = config(max_steps=4, audio={"length_buckets": True, "cache_codes": cached})
        handle = backend.load(str(tiny_folder), "full", train_config)
        runs.append(losses_of(train_in_process(backend, handle, rows, root, train_config)))
    assert [x[:2] for x in runs[0]] == [x[:2] for x in runs[1]] and len(runs[0]) >= 7  # train and validation
    for (_, _, uncached), (_, _, cached) in zip(*runs):
        assert cached == pytest.approx(uncached, rel=1e-5)
    files = list((root / ".cache" / "codes").glob("*.safetensors"))
    assert len(files) == len(SHORT) and not list((root / ".cache" / "codes").glob("*.partial"))


def test_a_longer_file_is_cached_as_fixed_windows_each_the_codes_of_its_samples(tmp_path, tiny_folder):  # noqa: F811
    import torch

    from studio.models.audio import read_mono

    root = tmp_path / "long"
    rows = write_clips(root, [(0.6, "low hum"), (0.1, "high beep")])
    backend = AudioBackend()
    train_config = config(audio={"cache_codes": True})
    handle = backend.load(str(tiny_folder), "lora", train_config)
    dataset = backend.datasets(handle, {"train": rows}, root, train_config)["train"]
    assert tiles(4800, 2000) == [0, 2000, 2800] and tiles(800, 2000) == [0]
    assert [len(windows) for windows in dataset.cached] == [3, 1]
    model, wave = handle.module.model, read_mono(root / "0.wav", RATE)
    drawn = set()
    for epoch in range(30):  # a training clip is one of its file's windows, drawn at random for each epoch
        dataset.start_epoch(epoch)
        item = dataset[0]
        assert set(item) == {CODES, "length", TEXT_FEATURES, "caption"} and item["length"] == 2000
        drawn.add(tuple(item[CODES].flatten().tolist()))
    expected = {tuple(audio_codes(model, torch.from_numpy(wave[start:start + 2000])[None, None],
                                  torch.tensor([2000])).flatten().tolist()) for start in (0, 2000, 2800)}
    assert drawn == expected
    short = dataset[1]
    assert short["length"] == 800 and (short[CODES][:, math.ceil(800 / 64):] == -100).all()  # past its end: ignored


def test_the_cache_is_made_once_and_again_when_the_codec_changes(short_clips, tiny_folder):  # noqa: F811
    import torch

    root, rows = short_clips
    backend = AudioBackend()
    train_config = config(audio={"cache_codes": True})
    handle = backend.load(str(tiny_folder), "lora", train_config)
    dataset = backend.datasets(handle, rows, root, train_config)["train"]
    folder, model = root / ".cache" / "codes", handle.module.model
    before = sorted(folder.glob("*.safetensors"))
    assert dataset.cache(model, handle.parts.tokenizer, folder) == 0  # made when the datasets were
    first = [dataset[i][CODES] for i in range(len(dataset))]

    model.audio_encoder.config.normalize = True  # another codec config: each clip scaled before encoding
    assert dataset.cache(model, handle.parts.tokenizer, folder) == len(dataset)
    with torch.no_grad():
        model.audio_encoder.quantizer.layers[0].codebook.embed.mul_(-1)  # other codec weights
    assert dataset.cache(model, handle.parts.tokenizer, folder) == len(dataset)
    assert any(not torch.equal(a, dataset[i][CODES]) for i, a in enumerate(first))
    assert len(sorted(folder.glob("*.safetensors"))) == len(before) + 2 * len(dataset)  # the old files kept


def test_a_run_with_both_on_learns(short_clips, tiny_folder):  # noqa: F811
    root, rows = short_clips
    backend = AudioBackend()
    train_config = config(max_steps=24, learning_rate=3e-2, eval_steps=1000,
                          audio={"length_buckets": True, "cache_codes": True})
    handle = backend.load(str(tiny_folder), "lora", train_config)
    out = train_in_process(backend, handle, rows, root, train_config)
    losses = [value for _, name, value in losses_of(out) if name == "train_loss"]
    assert out["status"] == "completed" and len(losses) == 24
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses


def test_thumbs_on_cached_clips_mismatch_the_caption_features(short_clips, tiny_folder):  # noqa: F811
    """KTO's mismatched examples hear a clip with the previous row's caption: with a cache, its T5 features."""
    import torch

    root, rows = short_clips
    thumbs = [{**row, "label": n % 2 == 0} for n, row in enumerate(rows["train"])]
    backend = AudioBackend()
    train_config = config(objective="kto", audio={"cache_codes": True})
    handle = backend.load(str(tiny_folder), "lora", train_config)
    dataset = backend.datasets(handle, {"train": thumbs}, root, train_config)["train"]
    batch = backend.collate(handle, train_config)([dataset[0], dataset[1]])
    features, codes = batch[TEXT_FEATURES], batch[CODES]
    # each example's caption with the previous example's clip
    assert torch.equal(features[2], features[0]) and torch.equal(codes[2], codes[1])
    assert torch.equal(features[3], features[1]) and torch.equal(codes[3], codes[0])
    assert torch.isfinite(handle.module(batch))

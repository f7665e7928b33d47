"""The image and audio starters run through the studio's one loop and generate files (smoke level: that
they learn the examples to the issue's bar is tested in test_starters_learn.py)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from studio.data.service import get_version, import_dataset, read_manifest
from studio.models.registry import backend_for
from studio.training.config import TrainConfig
from studio.training.loop import train_in_process


@pytest.mark.parametrize("modality", ["image", "audio"])
@pytest.mark.slow
def test_starter_trains_through_the_loop_and_generates_seeded_files(store, tmp_path, modality):
    if modality == "image":
        from studio.examples.shapes import make_shapes as make
    else:
        from studio.examples.tones import make_tones as make
    make(tmp_path / "examples", 4, 0)
    result = import_dataset(store, [tmp_path / "examples"], name=modality)
    assert result["items_kept"] == result["items_in"]  # the example data survives default cleaning
    version = get_version(store, str(result["dataset_id"]))
    rows = {split: read_manifest(store, version, split) for split in ("train", "validation")}
    backend = backend_for(modality)
    config = TrainConfig(max_steps=2, per_device_train_batch_size=4, use_cpu=True, eval_steps=1, save_steps=100)
    handle = backend.load(f"starter-{modality}", "scratch", config, rows["train"])
    trainable, total = handle.parameter_counts()
    assert 0 < trainable == total
    out = train_in_process(backend, handle, rows, store.path(version.path), config)
    assert out["status"] == "completed" and out["steps"] == 2
    prompt = "a red circle" if modality == "image" else "low hum"
    first, again, other = (backend.generate(handle, [prompt], [seed], {"steps": 3}, tmp_path / f"gen{n}")[0]
                           for n, seed in enumerate((0, 0, 1)))
    if modality == "image":
        pixels = [np.asarray(Image.open(s.path)) for s in (first, again, other)]
    else:
        pixels = [sf.read(str(s.path))[0] for s in (first, again, other)]
    assert np.array_equal(pixels[0], pixels[1]) and not np.array_equal(pixels[0], pixels[2])


@pytest.mark.parametrize("name, modality", [("shapes.zip", "image"), ("tones.zip", "audio")])
def test_shipped_examples_import_with_their_classes_intact(store, name, modality):
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "assets" / "examples" / name
    result = import_dataset(store, [example])
    assert result["modality"] == modality and result["errors"] == []
    assert result["items_kept"] >= 0.9 * result["items_in"]
    captions = {row["caption"] for row in read_manifest(store, get_version(store, str(result["dataset_id"])))}
    assert len(captions) == (8 if modality == "image" else 3)  # every class still there

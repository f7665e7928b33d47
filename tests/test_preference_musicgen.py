"""MusicGen's preference objectives: a clip's score is its codes' log-probability (what the loss averages), and
DPO and KTO steps run through the one loop on a tiny MusicGen with a finite loss, LoRA's base weights untouched."""

from __future__ import annotations

import math

import pytest

from studio.models.audio import AudioBackend
from studio.models.preference import SCORE
from studio.training.loop import train_in_process
from test_musicgen import clips, small_config, tiny_folder  # noqa: F401 - module-scoped fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_clips_score_is_the_log_probability_its_loss_averages(tiny_folder, clips):  # noqa: F811
    import torch

    backend, config = AudioBackend(), small_config()
    handle = backend.load(str(tiny_folder), "full", config)
    root, rows = clips
    data = backend.datasets(handle, rows, root, config)["train"]
    batch = backend.collate(handle, config)([data[i] for i in range(len(data))])
    handle.module.eval()
    with torch.no_grad():
        loss = handle.module(batch)
        scores, counts = handle.module({**batch, SCORE: 0})
    assert scores.shape == counts.shape == (len(data),) and bool((scores < 0).all())
    assert float(-scores.sum() / counts.sum()) == pytest.approx(float(loss), rel=1e-4)


@pytest.mark.parametrize("objective", ["dpo", "kto"])
def test_preference_steps_on_musicgen_with_lora_leave_the_base_as_it_was(tiny_folder, clips, tmp_path,  # noqa: F811
                                                                         objective):
    import torch

    root, rows = clips
    train = rows["train"]
    if objective == "dpo":
        pairs = [{**a, "rejected_file": b["file"]} for a, b in zip(train[0::2], train[1::2])]
    else:
        pairs = [{**row, "label": n % 2 == 0} for n, row in enumerate(train)]
    backend = AudioBackend()
    config = small_config(objective=objective, max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2)
    handle = backend.load(str(tiny_folder), "lora", config)
    base = {n: p.detach().clone() for n, p in handle.module.named_parameters() if "lora_" not in n}
    result = train_in_process(backend, handle, {"train": pairs, "validation": pairs[:1]}, root, config)
    losses = [h["value"] for h in result["history"] if h["name"] in ("train_loss", "val_loss")]
    assert result["steps"] == 2 and losses and all(math.isfinite(v) for v in losses)
    assert any(h["name"] == "rewards/margins" for h in result["history"])
    now = dict(handle.module.named_parameters())
    assert all(torch.equal(now[n], p) for n, p in base.items())

"""The loop's speed levers keep what it learns and logs: losses read from the device only at the logging steps,
torch.compile (and its fallback when compiling fails), fused AdamW, data-loading worker processes, and the
Liger-kernel option's refusal off CUDA."""

from __future__ import annotations

import pytest

from studio.training.config import TrainConfig
from studio.training.loop import COMPILE_FAILED, Hooks, make_loader, make_optimizer, train
from studio.training.objectives import SupervisedFineTuning
from toy_backend import ToyBackend, make_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(**changes) -> TrainConfig:
    base = dict(learning_rate=0.2, max_steps=12, per_device_train_batch_size=8, eval_steps=100, save_steps=100,
                warmup_steps=0, lr_scheduler_type="constant", use_cpu=True)
    return TrainConfig(**{**base, **changes})


class ItemEachStep(SupervisedFineTuning):
    """SFT that also reads each micro-batch's loss at once, as the loop did before (``.item()`` every step)."""

    def __init__(self):
        self.read: list[float] = []

    def step(self, run, batch):
        taken = super().step(run, batch)
        self.read.append(taken.loss.detach().float().item())
        return taken


def run(tmp_path, objective=None, logs=None, **changes):
    import torch

    torch.manual_seed(0)  # the toy model's start: the same for every run compared
    backend = ToyBackend()
    handle = backend.load("toy", "scratch", None)
    hooks = Hooks(log=(logs.append if logs is not None else lambda m: None))
    return train(backend, handle, {"train": make_rows(64)}, tmp_path, config(**changes), tmp_path / "out", hooks,
                 objective=objective)


def logged(result, name: str) -> list[tuple[int, float]]:
    return [(h["step"], h["value"]) for h in result.history if h["name"] == name]


@pytest.mark.parametrize("accumulation, logging", [(1, 1), (2, 3)])
def test_logged_losses_are_the_per_step_item_values(tmp_path, accumulation, logging):
    objective = ItemEachStep()
    result = run(tmp_path, objective, gradient_accumulation_steps=accumulation, logging_steps=logging)
    per_step = [sum(objective.read[i:i + accumulation]) / accumulation
                for i in range(0, len(objective.read), accumulation)]
    expected = [(step, per_step[step - 1]) for step in range(1, 13) if step % logging == 0 or step == 12]
    got = logged(result, "train_loss")
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)


def test_a_failed_compile_is_said_and_the_run_goes_on_uncompiled(tmp_path, monkeypatch):
    import torch

    class Uncompilable(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise RuntimeError("backend compiler failed\nlong traceback")

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: Uncompilable())
    logs: list[str] = []
    compiled = run(tmp_path / "compiled", logs=logs, torch_compile=True)
    plain = run(tmp_path / "plain")
    assert [m for m in logs if COMPILE_FAILED in m] == [f"{COMPILE_FAILED} (RuntimeError: backend compiler failed)"]
    assert compiled.status == "completed" and compiled.steps == 12
    assert logged(compiled, "train_loss") == logged(plain, "train_loss")  # the failed step was taken again


def test_a_compiled_model_trains_as_the_plain_one(tmp_path):
    logs: list[str] = []
    compiled = run(tmp_path / "compiled", logs=logs, torch_compile=True, max_steps=4)
    plain = run(tmp_path / "plain", max_steps=4)
    assert not [m for m in logs if COMPILE_FAILED in m]
    assert [v for _, v in logged(compiled, "train_loss")] == pytest.approx(
        [v for _, v in logged(plain, "train_loss")], rel=1e-5)


def test_adamw_is_fused_where_the_device_has_the_kernel():
    import torch

    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(3))], config())
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"] is True


def batches_of(loader) -> list[dict]:
    return [{k: v.clone() for k, v in batch.items()} for batch in loader]


def same_batches(first: list[dict], second: list[dict]) -> bool:
    import torch

    return len(first) == len(second) and all(
        a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(first, second))


def test_worker_processes_give_the_batches_of_the_training_process(tmp_path):
    from studio.examples.shapes import make_shapes
    from studio.models.image import ImageBackend

    images = make_shapes(tmp_path / "shapes", 1, 0)
    rows = [{"id": i, "split": "train", "file": p.name, "caption": p.with_suffix(".txt").read_text().strip()}
            for i, p in enumerate(images)]
    settings = TrainConfig.model_validate({"image": {"resolution": 16}, "use_cpu": True})
    backend = ImageBackend()
    handle = backend.load("starter-image", "scratch", settings, rows)
    dataset = backend.datasets(handle, {"train": rows}, tmp_path / "shapes", settings)["train"]
    collate = backend.collate(handle, settings)
    alone = batches_of(make_loader(dataset, collate, 4, seed=3, shuffle=True))
    with_workers = batches_of(make_loader(dataset, collate, 4, seed=3, shuffle=True, workers=2))
    assert len(alone) == -(-len(rows) // 4) and same_batches(alone, with_workers)
    other_order = batches_of(make_loader(dataset, collate, 4, seed=4, shuffle=True, workers=2))
    assert not same_batches(alone, other_order)  # the comparison can tell batches apart


def test_the_loop_with_workers_logs_the_losses_of_the_loop_without(tmp_path):
    alone = run(tmp_path / "alone")
    with_workers = run(tmp_path / "workers", dataloader_workers=2)
    assert logged(with_workers, "train_loss") == logged(alone, "train_loss")


def test_liger_kernels_are_refused_off_cuda_naming_what_they_need():
    from studio.models.text import TextBackend

    settings = TrainConfig(liger_kernels=True, use_cpu=True)
    with pytest.raises(ValueError, match=r"Liger kernels \(liger_kernels\) need a CUDA GPU and the liger-kernel"):
        TextBackend().load("starter-text", "scratch", settings, [{"text": "a small story about a fox"}] * 4)


def test_liger_kernels_are_for_the_llama_family_only(monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    from studio.models import text

    monkeypatch.setattr(text, "liger_kernels_missing", lambda config: False)  # as on a CUDA machine with the package
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=16, n_positions=8))
    with pytest.raises(ValueError, match="liger_kernels is for Llama-family models .*this model is 'gpt2'"):
        text.use_liger_kernels(model, TrainConfig(liger_kernels=True))


def test_generation_loads_a_liger_run_without_the_training_kernels():
    from studio.generation.cache import load_config

    assert load_config(TrainConfig(liger_kernels=True).model_dump()).liger_kernels is False

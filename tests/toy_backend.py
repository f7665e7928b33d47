"""A real, tiny backend (linear regression) for testing the loop's logic without a model stack."""

from __future__ import annotations

import json
import time
from pathlib import Path

from studio.models.base import Handle, Sample


def make_rows(n: int, seed: int = 0) -> list[dict]:
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        x = rng.uniform(-1, 1)
        rows.append({"split": "train", "source": f"row{i}", "x": x, "y": 3 * x + 0.5})
    return rows


class FakeClock:
    """Time that passes only when the toy backend says its work took some: in place of the training loop's
    ``time`` module, the loop's timings come out exact whatever else the machine is doing."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class ToyBackend:
    modality = "toy"

    def __init__(self, oom_above_batch: int | None = None, first_step_seconds: float = 0.0,
                 sample_seconds: float = 0.0, step_seconds: float = 0.0, clock: FakeClock | None = None):
        self.oom_above_batch = oom_above_batch
        self.first_step_seconds = first_step_seconds  # the first training step's one-off cost (allocation, ...)
        self.step_seconds = step_seconds  # what every training step costs
        self.sample_seconds = sample_seconds  # what making samples costs
        self.sleep = clock.sleep if clock else time.sleep
        self.saves = 0

    def load(self, model_ref, method, config, train_rows=None) -> Handle:
        import torch

        backend = self

        class Regression(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = torch.nn.Linear(1, 1)

            def forward(self, batch):
                if self.training and backend.oom_above_batch and batch["x"].shape[0] > backend.oom_above_batch:
                    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
                if self.training:
                    backend.sleep(backend.first_step_seconds + backend.step_seconds)
                    backend.first_step_seconds = 0.0
                return torch.nn.functional.mse_loss(self.linear(batch["x"]), batch["y"])

        return Handle(modality="toy", model_ref=model_ref, method=method, module=Regression())

    def datasets(self, handle, rows, root, config):
        return {split: [(r["x"], r["y"]) for r in rows.get(split, [])] for split in ("train", "validation")}

    def collate(self, handle, config):
        import torch

        def collate(items):
            return {"x": torch.tensor([[x] for x, _ in items]), "y": torch.tensor([[y] for _, y in items])}
        return collate

    def generate(self, handle, prompts, seeds, settings, out_dir: Path):
        import torch

        self.sleep(self.sample_seconds)

        with torch.no_grad():
            return [Sample(prompt=p, seed=s, text=f"{handle.module.linear(torch.tensor([[float(len(p))]])).item():.3f}")
                    for p, s in zip(prompts, seeds)]

    def save(self, handle, folder: Path):
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in handle.module.state_dict().items()}, str(folder / "model.safetensors"))
        (folder / "studio_model.json").write_text(json.dumps({"modality": "toy"}))
        self.saves += 1

    def load_weights(self, handle, folder: Path):
        from safetensors.torch import load_file

        handle.module.load_state_dict(load_file(str(folder / "model.safetensors")))

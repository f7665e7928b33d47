"""Flow matching (rectified flow) on the pixel and spectrogram starters: the loss and the Euler sampler checked
against known velocity fields, a short run of each starter that learns, generation through the backends' path
with the few-step default, and a resume that keeps the prediction type. (That flow matching at 4-8 steps reaches
the diffusion starter's colour accuracy is bench/flow_vs_diffusion.py's, in docs/PERFORMANCE.md.)"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from studio.data.service import get_version, import_dataset, read_manifest
from studio.generation.options import parse_settings
from studio.models.registry import backend_for
from studio.training.config import TrainConfig, apply_overrides
from studio.training.loop import Hooks, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FLOW = ["prediction_type=flow_matching"]
SHAPE = (3, 8, 8)


class VelocityField(torch.nn.Module):
    """Stands in for the UNet: returns ``field(x, t)`` and records what it was given."""

    def __init__(self, field):
        super().__init__()
        self.field = field
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a device and a dtype, as a UNet has
        self.config = SimpleNamespace(in_channels=SHAPE[0])
        self.calls = []

    @property
    def dtype(self):
        return self.anchor.dtype

    def forward(self, x, t, encoder_hidden_states=None):
        self.calls.append((x.clone(), t.clone()))
        return SimpleNamespace(sample=self.field(x, t))


def flow_module(field):
    """A DiffusionModule trained with flow matching around ``field``, with the starter's real text encoder."""
    from studio.models import diffusion

    tokenizer = diffusion.word_tokenizer(["a red circle"])
    module = diffusion.DiffusionModule(VelocityField(field), diffusion.starter_text_encoder(tokenizer, hidden=16),
                                       diffusion.starter_scheduler(), diffusion.tokenize(tokenizer, [""])[0],
                                       prediction_type="flow_matching")
    return module, tokenizer


def seeded_noise(seeds):
    return torch.stack([torch.randn(SHAPE, generator=torch.Generator().manual_seed(s)) for s in seeds])


def draw(module, tokenizer, seeds, steps):
    from studio.models.diffusion import sample

    return sample(module, tokenizer, ["a red circle"] * len(seeds), seeds, height=SHAPE[1], width=SHAPE[2],
                  steps=steps, guidance_scale=1.0)


def test_the_loss_is_the_error_of_the_velocity_on_the_straight_line_from_data_to_noise():
    module, tokenizer = flow_module(lambda x, t: torch.zeros_like(x))
    assert type(module.noise_scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    x0 = torch.rand((2, *SHAPE)) * 2 - 1
    batch = {"pixel_values": x0, "input_ids": module.empty_ids[None].repeat(2, 1)}
    losses = module.loss_at(batch, 0.25, seeds=[7, 8])
    noise = seeded_noise([7, 8])
    (x_t, t), = module.unet.calls
    assert x_t.shape == (2, *SHAPE) and losses.shape == (2,)
    assert torch.allclose(x_t, 0.75 * x0 + 0.25 * noise, atol=1e-6)  # x_t = (1 - t) x0 + t noise
    assert torch.allclose(t, torch.full((2,), 250.0))  # t as the UNet sees it: sigma x 1000 training timesteps
    target = noise - x0  # the velocity: what a zero prediction misses by
    assert torch.allclose(losses, target.pow(2).mean(dim=(1, 2, 3)), atol=1e-6)

    module.train()
    module.unet.calls.clear()
    assert module(batch).dim() == 0  # training draws its own t, uniform in [0, 1)
    sigmas = module.unet.calls[0][1] / 1000
    assert ((0 <= sigmas) & (sigmas < 1)).all()


def test_one_euler_step_from_pure_noise_lands_at_noise_minus_the_velocity():
    velocity = torch.full(SHAPE, 0.5)
    module, tokenizer = flow_module(lambda x, t: velocity.expand_as(x))
    drawn = draw(module, tokenizer, [3, 4], steps=1)
    (start, t), = module.unet.calls
    assert torch.allclose(start, seeded_noise([3, 4])) and torch.allclose(t, torch.full((2,), 1000.0))
    assert torch.allclose(drawn, (seeded_noise([3, 4]) - velocity).clamp(-1, 1), atol=1e-6)


@pytest.mark.parametrize("steps", [1, 4, 8])
def test_euler_follows_a_straight_flow_exactly_at_any_number_of_steps(steps):
    # The velocity of the straight line from the picture c (sigma 0) through x_sigma: (x - c) / sigma.
    target = torch.linspace(-0.9, 0.9, SHAPE[0] * SHAPE[1] * SHAPE[2]).reshape(SHAPE)
    module, tokenizer = flow_module(lambda x, t: (x - target) / (t.view(-1, 1, 1, 1) / 1000))
    drawn = draw(module, tokenizer, [5, 6], steps=steps)
    assert len(module.unet.calls) == steps
    assert torch.allclose(drawn, target.expand_as(drawn), atol=1e-4)


def test_the_cli_setting_reaches_the_diffusion_options():
    assert apply_overrides(TrainConfig(), FLOW).diffusion.prediction_type == "flow_matching"


# ----------------------------------------------------------------------------- the starters


def starter_rows(store, tmp_path, modality):
    if modality == "image":
        from studio.examples.shapes import make_shapes as make
    else:
        from studio.examples.tones import make_tones as make
    make(tmp_path / "examples", 4, 0)
    version = get_version(store, str(import_dataset(store, [tmp_path / "examples"], name=modality)["dataset_id"]))
    return {split: read_manifest(store, version, split) for split in ("train", "validation")}, store.path(version.path)


def short_config(*extra: str) -> TrainConfig:
    return apply_overrides(TrainConfig(use_cpu=True), [
        "max_steps=30", "per_device_train_batch_size=8", "learning_rate=3e-3", "warmup_steps=0", "eval_steps=30",
        "save_steps=15", "resolution=16", "clip_seconds=0.25", "sample_steps=0", *FLOW, *extra])


def val_losses(history):
    return [h["value"] for h in history if h["name"] == "val_loss"]


def unet_calls(module):
    calls = []
    module.unet.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.slow  # about a minute each on a busy two-core machine
@pytest.mark.parametrize("modality", ["image", "audio"])
def test_a_flow_matching_starter_learns_and_generates_with_few_euler_steps(store, tmp_path, modality):
    from studio.models.diffusion import FLOW_STEPS

    rows, root = starter_rows(store, tmp_path, modality)
    backend, config = backend_for(modality), short_config()
    handle = backend.load(f"starter-{modality}", "scratch", config, rows["train"])
    assert handle.module.prediction_type == "flow_matching"
    result = train(backend, handle, rows, root, config, tmp_path / "out", Hooks(log=lambda m: None))
    losses = val_losses(result.history)
    assert result.status == "completed" and losses[-1] < 0.7 * losses[0], losses

    calls = unet_calls(handle.module)
    settings = parse_settings(modality).backend_settings()  # the Generate form left as it is
    prompt = "a red circle" if modality == "image" else "low hum"
    first, again, other = (backend.generate(handle, [prompt], [seed], settings, tmp_path / f"gen{n}")[0]
                           for n, seed in enumerate((0, 0, 1)))
    assert len(calls) == 3 * FLOW_STEPS  # the few-step default (guidance doubles the batch, not the calls)
    assert first.path.read_bytes() == again.path.read_bytes() != other.path.read_bytes()


@pytest.mark.slow  # about half a minute on a busy two-core machine
def test_a_resumed_flow_run_and_a_model_made_from_its_checkpoint_keep_flow_matching(store, tmp_path):
    rows, root = starter_rows(store, tmp_path, "image")
    backend, config = backend_for("image"), short_config("max_steps=15")
    first = backend.load("starter-image", "scratch", config, rows["train"])
    untrained = val_losses(train(backend, first, rows, root, config, tmp_path / "out", Hooks(log=lambda m: None))
                           .history)[0]
    checkpoint = tmp_path / "out" / "checkpoints" / "step-0000015"
    saved = json.loads((checkpoint / "model" / "scheduler" / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "FlowMatchEulerDiscreteScheduler"
    assert json.loads((checkpoint / "model" / "studio_model.json").read_text())["prediction_type"] == "flow_matching"

    # A resume rebuilds the model from the run's stored config, then loads the checkpoint's state.
    stored = TrainConfig.model_validate_json(apply_overrides(config, ["max_steps=30"]).model_dump_json())
    resumed = backend.load("starter-image", "scratch", stored, rows["train"])
    again = train(backend, resumed, rows, root, stored, tmp_path / "out", Hooks(log=lambda m: None),
                  resume_from=checkpoint)
    assert again.status == "completed" and again.steps == 30
    assert resumed.module.prediction_type == "flow_matching"
    assert val_losses(again.history)[-1] < 0.7 * untrained

    # Fine-tuning the checkpoint as a model with prediction_type 'auto' reads flow matching from its scheduler.
    tuned = backend.load(str(checkpoint / "model"), "full", TrainConfig(use_cpu=True))
    assert tuned.module.prediction_type == "flow_matching"

"""The VAE starter (``starter-image-vae``): its KL warm-up, its loss terms, the loop carrying its own step (metrics,
checkpoints, resume, the stop flag), generation from the prior, reconstruction, saved folders and refused settings.
Tiny models (16 px), a few steps each."""

from __future__ import annotations

import random

import pytest

from studio.examples.shapes import draw_shape
from studio.fields import InvalidSettings
from studio.models.options import VaeOptions
from studio.models.registry import FAMILIES, backend_for
from studio.status import RunStatus
from studio.training.config import TrainConfig, apply_overrides
from studio.training.loop import Hooks, train, train_in_process
from studio.training.objectives import Variational, kl_weight_at, objective_for
from test_gan import config, shapes  # noqa: F401 - the GAN's tiny pictures (a module-scoped fixture) and settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VAE = "starter-image-vae"


def load(rows, train_config):
    backend = backend_for("image")
    return backend, backend.load(VAE, "scratch", train_config, rows["train"])


def values(history: list[dict], name: str) -> list[tuple[int, float]]:
    return [(h["step"], h["value"]) for h in history if h["name"] == name]


def pictures(samples) -> list[bytes]:
    from PIL import Image

    return [Image.open(s.path).tobytes() for s in samples]


def test_the_kl_weight_rises_linearly_from_zero_over_the_warm_up_then_holds():
    options = VaeOptions(kl_weight=0.5, kl_warmup_steps=4)
    assert [kl_weight_at(options, step) for step in range(7)] == [0.0, 0.125, 0.25, 0.375, 0.5, 0.5, 0.5]
    assert kl_weight_at(VaeOptions(kl_weight=2.0, kl_warmup_steps=0), 0) == 2.0  # no warm-up: the weight at once


def test_the_loss_is_the_reconstruction_error_plus_the_weighted_kl_per_pixel_value(shapes):
    import torch
    from torch.distributions import Normal, kl_divergence

    from studio.models.diffusion import collate_images
    from studio.models.vae import VALIDATION_NOISE_SEED

    rows, root = shapes
    backend, handle = load(rows, config())
    batch = collate_images([backend.datasets(handle, rows, root, config())["train"][i] for i in range(3)])
    module = handle.module.eval()  # eval: the latent's noise is the fixed validation draw
    with torch.no_grad():
        found = module(batch, kl_weight=0.3)
        mean, log_variance = module.encoder(batch["pixel_values"], batch["input_ids"])
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(VALIDATION_NOISE_SEED))
        decoded = module.decoder(mean + (0.5 * log_variance).exp() * noise, batch["input_ids"])
    values_per_picture = 3 * 16 * 16
    recon = float(((decoded - batch["pixel_values"]) ** 2).mean())
    kl = float(kl_divergence(Normal(mean, (0.5 * log_variance).exp()), Normal(0.0, 1.0)).sum(1).mean()) \
        / values_per_picture
    assert float(found["recon"]) == pytest.approx(recon, rel=1e-5)
    assert float(found["kl"]) == pytest.approx(kl, rel=1e-4) and kl > 0
    assert float(found["loss"]) == pytest.approx(recon + 0.3 * kl, rel=1e-5)
    with torch.no_grad():
        again = module(batch, kl_weight=0.3)
    assert float(again["loss"]) == float(found["loss"])  # validation draws the same noise every time


def test_the_family_owns_its_step_and_the_loop_records_the_warm_up_and_the_full_elbo(shapes):
    rows, root = shapes
    train_config = config(max_steps=4, eval_steps=4, vae={"kl_weight": 0.5, "kl_warmup_steps": 2})
    backend, handle = load(rows, train_config)
    assert FAMILIES[VAE].own_step == "variational" and handle.family.name == VAE
    objective = objective_for(handle, "sft", train_config.preference, train_config)
    assert isinstance(objective, Variational) and objective.options.kl_weight == 0.5
    with pytest.raises(ValueError, match="objective must be one that the starter-image-vae family trains with"):
        objective_for(handle, "dpo", train_config.preference, train_config)
    before = [p.detach().clone() for p in handle.module.parameters()]
    out = train_in_process(backend, handle, rows, root, train_config)
    assert all(not (a == b).all() for a, b in zip(before, handle.module.parameters()))  # encoder and decoder learn
    history = out["history"]
    assert values(history, "vae/beta") == [(1, 0.0), (2, 0.25), (3, 0.5), (4, 0.5)]
    for step, loss in values(history, "train_loss"):
        recon, kl, beta = (dict(values(history, name))[step] for name in ("vae/recon", "vae/kl", "vae/beta"))
        assert loss == pytest.approx(recon + beta * kl, rel=1e-5)
    from studio.ui.train_tab import objective_frame

    assert set(objective_frame(history)["series"]) == {"recon", "kl", "beta", "validation recon", "validation kl"}
    # validation: the full negative ELBO (KL weight 1, not the run's 0.5), at the start and at the end
    assert [s for s, _ in values(history, "val_loss")] == [0, 4]
    for step, loss in values(history, "val_loss"):
        recon, kl = dict(values(history, "val_vae/recon"))[step], dict(values(history, "val_vae/kl"))[step]
        assert loss == pytest.approx(recon + kl, rel=1e-5) and kl > 0


def test_a_checkpoint_resumes_where_the_warm_up_was_and_the_stop_flag_stops(shapes, tmp_path):
    import torch

    rows, root = shapes
    train_config = config(max_steps=4, save_steps=2, vae={"kl_warmup_steps": 4})
    backend, handle = load(rows, train_config)
    steps_seen = []
    stopped = train(backend, handle, rows, root, train_config, tmp_path / "run",
                    Hooks(log=lambda _: None, progress=lambda step, _total: steps_seen.append(step),
                          should_stop=lambda: len(steps_seen) >= 2))
    assert stopped.status == RunStatus.STOPPED and stopped.steps == 2
    backend, again = load(rows, train_config)
    resumed = train(backend, again, rows, root, train_config, tmp_path / "run", Hooks(log=lambda _: None),
                    resume_from=tmp_path / "run" / "checkpoints" / "step-0000002")
    assert resumed.status == RunStatus.COMPLETED and resumed.steps == 4
    assert values(resumed.history, "vae/beta") == [(3, 0.5), (4, 0.75)]  # the warm-up went on from step 2
    backend, straight = load(rows, train_config)
    train(backend, straight, rows, root, train_config, tmp_path / "straight", Hooks(log=lambda _: None))
    for name, value in straight.module.state_dict().items():  # the noise too went on where it was
        assert torch.allclose(again.module.state_dict()[name], value, atol=1e-6), name
    saved = torch.load(tmp_path / "run" / "checkpoints" / "step-0000002" / "state" / "optimizer.bin",
                       weights_only=False)
    assert saved["state"]  # Adam's moments went with the checkpoint


def test_generation_is_one_picture_per_prompt_and_seed_the_same_for_the_same_seed(shapes, tmp_path):
    from PIL import Image

    rows, root = shapes
    train_config = config(max_steps=2)
    backend, handle = load(rows, train_config)
    train_in_process(backend, handle, rows, root, train_config)
    samples = backend.generate(handle, ["a red circle", "a blue square"], [1, 2], {}, tmp_path / "out")
    assert [(s.prompt, s.seed) for s in samples] == [("a red circle", 1), ("a blue square", 2)]
    assert all(Image.open(s.path).size == (16, 16) for s in samples)
    again = backend.generate(handle, ["a blue square", "a red circle"], [2, 1], {}, tmp_path / "again")
    assert pictures(again) == pictures(samples)[::-1]  # a seed's picture whatever the batch around it
    seeds = backend.generate(handle, ["a red circle"], [1, 3], {}, tmp_path / "seeds")
    assert pictures(seeds)[0] != pictures(seeds)[1]  # another seed, another latent from the prior


def test_a_saved_folder_loads_again_and_generates_the_same(shapes, tmp_path):
    rows, root = shapes
    train_config = config(max_steps=2)
    backend, handle = load(rows, train_config)
    train_in_process(backend, handle, rows, root, train_config)
    backend.save(handle, tmp_path / "model")
    assert {"vae.safetensors", "vae_config.json", "studio_model.json"} <= {p.name for p in (tmp_path / "model").iterdir()}
    loaded = backend.load(str(tmp_path / "model"), "full", train_config)
    assert loaded.family.name == VAE and loaded.parts.resolution == 16
    first = backend.generate(handle, ["a red circle"], [3], {}, tmp_path / "a")
    second = backend.generate(loaded, ["a red circle"], [3], {}, tmp_path / "b")
    assert pictures(first) == pictures(second)


def test_reconstruction_encodes_the_given_picture_and_decodes_it(shapes, tmp_path):
    from PIL import Image

    rows, root = shapes
    train_config = config(max_steps=2)
    backend, handle = load(rows, train_config)
    train_in_process(backend, handle, rows, root, train_config)
    vae = handle.family.backend()  # reconstruction is the VAE backend's own, beside the shared interface
    given = [root / "0.png", root / "4.png"]  # two red circles
    made = vae.reconstruct(handle, given, ["a red circle"] * 2, tmp_path / "one")
    assert [s.prompt for s in made] == ["a red circle"] * 2 and all(Image.open(s.path).size == (16, 16) for s in made)
    assert pictures(vae.reconstruct(handle, given, ["a red circle"] * 2, tmp_path / "two")) == pictures(made)
    assert pictures(made)[0] != pictures(made)[1]  # each picture's own latent: the picture goes through
    with pytest.raises(ValueError, match="one caption per picture"):
        vae.reconstruct(handle, given, ["a red circle"], tmp_path / "three")


def test_bad_settings_are_refused_with_the_reason(shapes, tmp_path):
    rows, _ = shapes
    with pytest.raises(InvalidSettings, match="kl_weight"):
        apply_overrides(TrainConfig(), ["kl_weight=0"])
    with pytest.raises(InvalidSettings, match="kl_warmup_steps"):
        TrainConfig.from_yaml("vae:\n  kl_warmup_steps: -5\n")
    assert apply_overrides(TrainConfig(), ["kl_weight=0.25", "kl_warmup_steps=10"]).vae == \
        VaeOptions(kl_weight=0.25, kl_warmup_steps=10)  # the CLI's --set keys reach the section
    backend = backend_for("image")
    with pytest.raises(ValueError, match="power of two"):
        backend.load(VAE, "scratch", TrainConfig.model_validate({"image": {"resolution": 24}}), rows["train"])
    with pytest.raises(ValueError, match="method must be one of full, scratch"):
        backend.load(VAE, "lora", config(), rows["train"])
    with pytest.raises(FileNotFoundError, match="not a VAE starter's model folder"):
        FAMILIES[VAE].backend().load(str(tmp_path), "full", config())


@pytest.mark.slow  # two accelerate ranks in two processes
def test_two_processes_learn_as_one_does(tmp_path):
    """One process with batches of 8 and two with 4 each take the same items per optimizer step and draw the same
    latent noise for each item (drawn from the item's place in the whole batch), so the losses agree to float
    rounding; the warm-up is the same (every rank's schedule counts the same steps)."""
    import json

    from test_loop import run_in_two_ranks

    folder, rng, rows = tmp_path / "ranks", random.Random(1), []
    folder.mkdir()
    for number in range(20):
        colour, shape = ("red", "blue", "green", "yellow")[number % 4], ("circle", "square")[number // 4 % 2]
        draw_shape(colour, shape, rng).save(folder / f"{number}.png")
        rows.append({"id": number, "file": f"{number}.png", "caption": f"a {colour} {shape}"})
    rows = {"train": rows[:16], "validation": rows[16:]}  # 16: whole batches of 8, and of 4 on each rank
    (folder / "rows.json").write_text(json.dumps({"model": "starter-image-vae", **rows}))
    settings = dict(max_steps=6, eval_steps=3, save_steps=100, vae={"kl_warmup_steps": 4})
    backend, handle = load(rows, config(per_device_train_batch_size=8, **settings))
    one = train_in_process(backend, handle, rows, folder, config(per_device_train_batch_size=8, **settings))
    two = run_in_two_ranks(folder, "starter_in_ranks.py", config(per_device_train_batch_size=4, **settings))
    assert two["steps"] == 6
    assert values(two["history"], "vae/beta") == values(one["history"], "vae/beta") == \
        [(step, min(1.0, (step - 1) / 4)) for step in range(1, 7)]
    # The loop gathers the training loss over both ranks. (With each rank's own noise, as before, they drifted
    # apart by up to 5.6 % at step 6.)
    for name in ("train_loss", "val_loss", "vae/recon", "vae/kl"):
        one_curve, two_curve = values(one["history"], name), values(two["history"], name)
        assert [s for s, _ in two_curve] == [s for s, _ in one_curve]
        assert [v for _, v in two_curve] == pytest.approx([v for _, v in one_curve], rel=1e-3, abs=1e-5), name


def test_the_held_out_loss_of_evaluate_and_the_bake_off_is_the_negative_elbo(shapes):
    import torch

    from studio.evaluation.metrics_media import heldout_loss
    from studio.models.diffusion import collate_images

    rows, root = shapes
    backend, handle = load(rows, config())
    held = backend.datasets(handle, rows, root, config())["validation"]
    found = heldout_loss(handle, held, collate_images)
    handle.module.eval()
    with torch.no_grad():
        expected = float(handle.module(collate_images([held[i] for i in range(len(held))]))["loss"])
    assert found["kind"] == "negative ELBO" and found["items"] == 2
    assert found["loss"] == pytest.approx(expected, rel=1e-6)


def test_settings_a_vae_does_not_read_are_refused_naming_them_and_early_stopping_is_not(store):
    from pathlib import Path

    from studio.data.service import import_dataset
    from studio.training import jobs

    shipped = Path(__file__).resolve().parent.parent / "assets" / "examples" / "shapes.zip"
    dataset = str(import_dataset(store, [shipped], name="shapes")["dataset_id"])
    asked = apply_overrides(config(), ["prediction_type=flow_matching", "cache_latents=true"])  # as --set gives them
    with pytest.raises(jobs.RunError) as refused:
        jobs.create_run(store, dataset, VAE, "scratch", asked)
    message = str(refused.value)
    assert "prediction_type=flow_matching: not used by the starter-image-vae family (a VAE has no noise schedule" \
        in message
    assert "cache_latents=True: not used" in message
    # its validation loss (the negative ELBO) falls as it learns: early stopping is one of its settings
    jobs.create_run(store, dataset, VAE, "scratch", apply_overrides(config(), ["early_stopping_patience=2",
                                                                              "kl_weight=2"]))

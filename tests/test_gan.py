"""The GAN starter (``starter-image-gan``) and the loop's room for a family that owns its step: two optimizers that
alternate, each network's weights changing, checkpoints that resume both optimizers, the stop flag, the averaged
generator, generation and the mode-collapse monitor. Tiny models (16 px), a few steps each."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from studio.examples.shapes import draw_shape
from studio.models.registry import FAMILIES, backend_for
from studio.status import RunStatus
from studio.training.config import TrainConfig
from studio.training.loop import Hooks, train, train_in_process
from studio.training.objectives import Adversarial, objective_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GAN = "starter-image-gan"



def draw_shapes(folder: Path, count: int = 12, validation: int = 2) -> dict:
    """``count`` pictures of red and blue circles and squares in ``folder``, the last ``validation`` of them to
    validate on."""
    folder.mkdir(parents=True, exist_ok=True)
    rng, rows = random.Random(0), []
    for number in range(count):
        colour, shape = ("red", "blue")[number % 2], ("circle", "square")[number // 2 % 2]
        draw_shape(colour, shape, rng).save(folder / f"{number}.png")
        rows.append({"id": number, "file": f"{number}.png", "caption": f"a {colour} {shape}"})
    return {"train": rows[:count - validation], "validation": rows[count - validation:]}



@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("shapes")
    return draw_shapes(folder), folder


def config(**changes) -> TrainConfig:
    base = {"per_device_train_batch_size": 4, "seed": 0, "use_cpu": True, "learning_rate": 2e-3, "eval_steps": 100,
            "save_steps": 100, "warmup_steps": 0, "max_steps": 3, "lr_scheduler_type": "constant"}
    return TrainConfig.model_validate({**base, **changes, "image": {"resolution": 16}})


def load(rows, train_config):
    backend = backend_for("image")
    return backend, backend.load(GAN, "scratch", train_config, rows["train"])


def weights(network) -> list:
    return [p.detach().clone() for p in network.parameters()]


def changed(before, network) -> bool:
    return any(not (a == b).all() for a, b in zip(before, network.parameters()))


def test_the_family_owns_its_step_with_an_optimizer_per_network(shapes):
    rows, _ = shapes
    train_config = config(gan={"discriminator_learning_rate": 4e-3})
    _, handle = load(rows, train_config)
    assert FAMILIES[GAN].own_step == "adversarial" and handle.family.name == GAN
    objective = objective_for(handle, "sft", train_config.preference, train_config)
    assert isinstance(objective, Adversarial)
    [generator], [discriminator] = objective.parameter_groups(handle)
    assert {id(p) for p in generator["params"]}.isdisjoint(id(p) for p in discriminator["params"])
    assert len(generator["params"]) == len(list(handle.module.generator.parameters()))
    assert [c.learning_rate for c in objective.optimizer_configs(train_config)] == [2e-3, 4e-3]
    with pytest.raises(ValueError, match="objective must be one that the starter-image-gan family trains with"):
        objective_for(handle, "dpo", train_config.preference, train_config)


def test_a_step_alternates_the_optimizers_and_changes_both_networks_and_the_average(shapes):
    import torch

    rows, root = shapes
    train_config = config(max_steps=2, gan={"discriminator_learning_rate": 4e-3})
    backend, handle = load(rows, train_config)
    module = handle.module
    before = {name: weights(getattr(module, name)) for name in ("generator", "discriminator", "average")}
    order = []
    for optimizer_class in (torch.optim.AdamW,):
        original = optimizer_class.step

        def spy(self, *args, original=original, **kwargs):
            order.append(self.param_groups[0]["lr"])
            return original(self, *args, **kwargs)

        optimizer_class.step = spy
    try:
        out = train_in_process(backend, handle, rows, root, train_config)
    finally:
        torch.optim.AdamW.step = original
    assert order == [4e-3, 2e-3] * 2  # discriminator, then generator, at each of the 2 steps
    assert all(changed(before[name], getattr(module, name)) for name in before)
    names = {h["name"] for h in out["history"]}
    assert {"gan/generator_loss", "gan/discriminator_loss", "gan/d_real", "gan/d_fake", "val_gan/diversity",
            "val_gan/d_real", "train_loss"} <= names
    # the averaged generator is its own weights, not the trained generator's
    assert changed(weights(module.generator), module.average)


def test_a_checkpoint_resumes_both_optimizers_and_the_stop_flag_stops(shapes, tmp_path):
    import torch

    rows, root = shapes
    train_config = config(max_steps=4, save_steps=2)
    backend, handle = load(rows, train_config)
    steps_seen = []
    stopped = train(backend, handle, rows, root, train_config, tmp_path,
                    Hooks(log=lambda _: None, progress=lambda step, _total: steps_seen.append(step),
                          should_stop=lambda: len(steps_seen) >= 2))
    assert stopped.status == RunStatus.STOPPED and stopped.steps == 2
    folder = tmp_path / "checkpoints" / "step-0000002"
    state = folder / "state"
    saved = [torch.load(state / name, weights_only=False) for name in ("optimizer.bin", "optimizer_1.bin")]
    assert all(s["state"] for s in saved)  # both optimizers' moments were saved
    assert json.loads((folder / "trainer_state.json").read_text())["step"] == 2

    backend, again = load(rows, train_config)
    resumed = train(backend, again, rows, root, train_config, tmp_path, Hooks(log=lambda _: None),
                    resume_from=folder)
    assert resumed.status == RunStatus.COMPLETED and resumed.steps == 4
    assert int(again.module.averaged_updates) == 4  # the average went on from the 2 updates saved

    # A checkpoint saved before the GAN counted its noise draws resumes (the count starts at 0); any other weight
    # missing is still refused.
    from safetensors.torch import load_file, save_file

    weights = state / "model.safetensors"
    saved_weights = load_file(str(weights))
    save_file({k: v for k, v in saved_weights.items() if k != "noise_draws"}, str(weights))
    backend, older = load(rows, train_config)
    resumed = train(backend, older, rows, root, train_config, tmp_path / "older", Hooks(log=lambda _: None),
                    resume_from=folder)
    assert resumed.status == RunStatus.COMPLETED and resumed.steps == 4
    save_file({k: v for k, v in saved_weights.items() if k not in ("noise_draws", "averaged_updates")}, str(weights))
    backend, broken = load(rows, train_config)
    with pytest.raises(RuntimeError, match="averaged_updates"):
        train(backend, broken, rows, root, train_config, tmp_path / "broken", Hooks(log=lambda _: None),
              resume_from=folder)


def test_generation_is_one_picture_per_prompt_and_seed_from_the_average(shapes, tmp_path):
    from PIL import Image

    rows, _ = shapes
    train_config = config()
    backend, handle = load(rows, train_config)
    samples = backend.generate(handle, ["a red circle", "a blue square"], [1, 2], {}, tmp_path / "out")
    assert [s.seed for s in samples] == [1, 2]
    assert all(Image.open(s.path).size == (16, 16) for s in samples)
    again = backend.generate(handle, ["a red circle"], [1], {}, tmp_path / "again")
    assert (Image.open(again[0].path).tobytes() == Image.open(samples[0].path).tobytes())  # same seed, same picture


def test_a_saved_folder_loads_again_and_generates_the_same(shapes, tmp_path):
    from PIL import Image

    rows, root = shapes
    train_config = config(max_steps=2)
    backend, handle = load(rows, train_config)
    train_in_process(backend, handle, rows, root, train_config)
    backend.save(handle, tmp_path / "model")
    loaded = backend.load(str(tmp_path / "model"), "full", train_config)
    assert loaded.family.name == GAN
    first = backend.generate(handle, ["a red circle"], [3], {}, tmp_path / "a")[0]
    second = backend.generate(loaded, ["a red circle"], [3], {}, tmp_path / "b")[0]
    assert Image.open(first.path).tobytes() == Image.open(second.path).tobytes()


def test_the_mode_collapse_monitor_warns_under_the_floor(shapes):
    import torch

    from studio.models.gan import mean_pairwise_distance

    same = torch.zeros(4, 3, 8, 8)
    assert float(mean_pairwise_distance(same)) == 0.0
    apart = torch.stack([torch.full((3, 8, 8), v) for v in (-1.0, 1.0)])
    assert float(mean_pairwise_distance(apart)) == pytest.approx(2.0)
    objective = Adversarial(config().gan)
    assert objective.warnings(0, {"gan/diversity": 0.0}) == []  # the untrained start is not a collapse
    assert "mode collapse" in objective.warnings(5, {"gan/diversity": 0.01})[0]
    assert objective.warnings(5, {"gan/diversity": 0.2}) == []


def test_a_collapsed_generator_is_warned_of_in_the_log_and_metrics(shapes):
    rows, root = shapes
    train_config = config(max_steps=1, eval_steps=1, gan={"diversity_floor": 10.0})  # above any possible distance
    backend, handle = load(rows, train_config)
    said = []
    out = train_in_process(backend, handle, rows, root, train_config, hooks=Hooks(log=said.append))
    assert any("possible mode collapse" in line for line in said)
    assert [h["step"] for h in out["history"] if h["name"] == "warnings"] == [1]


def test_bad_settings_are_refused_with_the_reason(shapes):
    rows, _ = shapes
    with pytest.raises(ValueError, match="unknown DiffAugment policy blur"):
        load(rows, config(gan={"augment": "color,blur"}))
    backend = backend_for("image")
    with pytest.raises(ValueError, match="power of two"):
        backend.load(GAN, "scratch", TrainConfig.model_validate({"image": {"resolution": 24}}), rows["train"])
    with pytest.raises(ValueError, match="method must be one of full, scratch"):
        backend.load(GAN, "lora", config(), rows["train"])


# ----------------------------------------------------------------------------- the audio GAN (starter-audio-gan)

AUDIO_GAN = "starter-audio-gan"
CLIP = 0.25  # seconds: a 64 x 16 spectrogram


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> tuple[dict, Path]:
    from studio.examples.tones import TONES, make_tones

    folder = tmp_path_factory.mktemp("tones")
    clips = make_tones(folder, 3, seed=0)
    rows = [{"id": n, "file": path.name, "caption": path.with_suffix(".txt").read_text().strip()}
            for n, path in enumerate(clips)]
    assert {row["caption"] for row in rows} == set(TONES)
    return {"train": rows[:7], "validation": rows[7:]}, folder


def audio_config(**changes) -> TrainConfig:
    audio = {"clip_seconds": CLIP, **changes.pop("audio", {})}
    return config(**changes).model_copy(update={"audio": TrainConfig.model_validate({"audio": audio}).audio})


def test_the_audio_gan_is_the_gan_on_the_audio_starters_spectrograms(tones):
    from studio.models.audio import spectrogram_settings
    from studio.models.audio_gan import SpectrogramGanBackend

    rows, root = tones
    train_config = audio_config()
    backend = backend_for("audio")
    handle = backend.load(AUDIO_GAN, "scratch", train_config, rows["train"])
    assert handle.family.name == AUDIO_GAN and handle.family.own_step == "adversarial"
    assert isinstance(handle.family.backend(), SpectrogramGanBackend)
    spec = spectrogram_settings(8000, CLIP)
    assert handle.parts.spectrogram == spec
    batch = backend.collate(handle, train_config)([backend.datasets(handle, rows, root, train_config)["train"][0]])
    assert tuple(batch["pixel_values"].shape) == (1, 1, spec["n_bins"], spec["frames"])  # the diffusion starter's
    fake = handle.module.generator(handle.module.noise(2), batch["input_ids"].expand(2, -1))
    assert tuple(fake.shape) == (2, 1, spec["n_bins"], spec["frames"])  # ... and what the generator draws
    assert isinstance(objective_for(handle, "sft", train_config.preference, train_config), Adversarial)


def test_the_audio_gan_trains_and_writes_clips_of_its_length_the_same_for_a_seed(tones, tmp_path):
    import soundfile as sf

    rows, root = tones
    train_config = audio_config(max_steps=2, eval_steps=1)
    backend = backend_for("audio")
    handle = backend.load(AUDIO_GAN, "scratch", train_config, rows["train"])
    before = weights(handle.module.generator)
    out = train_in_process(backend, handle, rows, root, train_config)
    assert out["status"] == "completed" and changed(before, handle.module.generator)
    assert {"gan/generator_loss", "gan/discriminator_loss", "val_gan/diversity"} <= {h["name"] for h in out["history"]}

    settings = {"seconds": 0, "steps": 30, "guidance_scale": 2.0}  # the Generate form's audio defaults: no steps here
    samples = backend.generate(handle, ["low hum", "high whistle"], [1, 2], settings, tmp_path / "a")
    spec = handle.parts.spectrogram
    for sample in samples:
        wave, rate = sf.read(str(sample.path))
        assert sample.path.suffix == ".wav" and rate == 8000 and len(wave) == (spec["frames"] - 1) * spec["hop"]
    # the same seed, the same clip (a batch of other prompts may move the last bit of a float: not compared here)
    first, again, other = (backend.generate(handle, ["low hum"], [seed], {}, tmp_path / f"{n}")[0]
                           for n, seed in enumerate((1, 1, 3)))
    assert first.path.read_bytes() == again.path.read_bytes() != other.path.read_bytes()
    with pytest.raises(ValueError, match="draws clips of 0.25 s, the length it was trained on"):
        backend.generate(handle, ["low hum"], [1], {"seconds": 1.0}, tmp_path / "d")

    backend.save(handle, tmp_path / "model")
    loaded = backend.load(str(tmp_path / "model"), "full", audio_config(audio={"clip_seconds": 1.0}))
    assert loaded.family.name == AUDIO_GAN and loaded.parts.clip_seconds == CLIP  # the model's length, not the run's
    from_folder = backend.generate(loaded, ["low hum"], [1], {}, tmp_path / "e")[0]
    assert from_folder.path.read_bytes() == first.path.read_bytes()
    with pytest.raises(ValueError, match="trained on 8000 Hz audio"):
        backend.load(str(tmp_path / "model"), "full", audio_config(audio={"sample_rate": 16000}))


# ----------------------------------------------------------------------------- runs of a GAN

def test_a_gan_run_is_recorded_and_listed_as_adversarial_not_sft(store, tones):
    from studio.data.service import import_dataset
    from studio.training import jobs
    from studio.training.runs import method_text, run_summary
    from studio.ui.train_tab import runs_table

    _, folder = tones
    dataset = str(import_dataset(store, [folder], name="tones")["dataset_id"])
    gan = jobs.create_run(store, dataset, AUDIO_GAN, "scratch", audio_config())
    diffusion = jobs.create_run(store, dataset, "starter-audio", "scratch", audio_config())
    summary = run_summary(store, gan)
    assert summary["objective"] == "adversarial"
    assert run_summary(store, diffusion)["objective"] == "sft"
    assert method_text(summary) == "scratch · adversarial"  # `studio runs list/show` and the Train tab's table
    assert {row[0]: row[5] for row in runs_table(store)} == {gan: "scratch · adversarial", diffusion: "scratch"}


def test_settings_a_gan_does_not_read_are_refused_naming_them(store, tones):
    from studio.data.service import import_dataset
    from studio.training import jobs

    _, folder = tones
    dataset = str(import_dataset(store, [folder], name="tones")["dataset_id"])
    asked = audio_config(diffusion={"prediction_type": "flow_matching", "ema_decay": 0.99}, early_stopping_patience=2,
                         audio={"length_buckets": True})
    with pytest.raises(jobs.RunError) as refused:
        jobs.create_run(store, dataset, AUDIO_GAN, "scratch", asked)
    message = str(refused.value)
    assert "prediction_type=flow_matching, ema_decay=0.99: not used by the starter-audio-gan family (a GAN has no " \
           "noise schedule" in message
    assert "early_stopping_patience=2: not used by the starter-audio-gan family (a GAN's validation loss is its " \
           "discriminator's hinge loss" in message
    assert "length_buckets=True: not used" in message
    jobs.create_run(store, dataset, "starter-audio", "scratch", asked)  # the diffusion starter reads them all
    jobs.create_run(store, dataset, AUDIO_GAN, "scratch", audio_config(gan={"r1_gamma": 2.0}))  # its own: fine


# ----------------------------------------------------------------------------- several processes

@pytest.mark.slow  # two accelerate ranks in two processes
def test_two_processes_train_the_gan_as_one_does(tmp_path):
    """One process with a batch of 8 and two with 4 each take the same 8 pictures per step (8 training pictures: one
    step an epoch; 8 to validate) and draw the same noise for them (``GanModule.noise``); DiffAugment is off, since
    each process draws its own. Both networks' losses then agree at every step, as validation does (the diversity
    monitor aside: each process measures it on the caption of its own first picture)."""
    from test_loop import run_in_two_ranks

    changes = {"max_steps": 4, "eval_steps": 2, "gan": {"augment": ""}}
    folder = tmp_path / "shapes"
    rows = draw_shapes(folder, 16, 8)  # 8 to train on, 8 to validate on: one batch of 8, or one of 4 on each rank
    (folder / "rows.json").write_text(json.dumps({"model": GAN, **rows}))
    train_config = config(per_device_train_batch_size=8, **changes)
    backend, handle = load(rows, train_config)
    one = train_in_process(backend, handle, rows, folder, train_config)
    two = run_in_two_ranks(folder, "starter_in_ranks.py", config(per_device_train_batch_size=4, **changes))
    assert one["steps"] == two["steps"] == 4
    for name in ("train_loss", "gan/discriminator_loss", "gan/d_real", "gan/d_fake", "val_loss", "val_gan/d_real"):
        ones = [(h["step"], h["value"]) for h in one["history"] if h["name"] == name]
        twos = [(h["step"], h["value"]) for h in two["history"] if h["name"] == name]
        assert [s for s, _ in twos] == [s for s, _ in ones] and ones, name
        assert [v for _, v in twos] == pytest.approx([v for _, v in ones], rel=1e-3, abs=1e-4), name

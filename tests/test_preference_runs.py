"""Preference runs as the studio makes them: `create_run` with an objective, a start given as RUN_ID[:STEP], the
refusals that say what the dataset has and what the objective needs, the reward metrics in the run's history, and
Generate putting the new run beside its start."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file

from studio.data.service import import_dataset
from studio.generation.cache import ModelCache
from studio.generation.service import generate_set, get_set
from studio.generation.variants import resolve_variants
from studio.settings import load_settings
from studio.store import open_store
from studio.store.tables import Run
from studio.training import jobs, worker
from studio.training.config import TrainConfig
from studio.training.runs import run_summary
from test_text_backend import rows, tiny_folder  # noqa: F401 - module-scoped fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(**changes) -> TrainConfig:
    base = dict(max_steps=4, save_steps=2, eval_steps=2, learning_rate=5e-3, warmup_steps=0, sample_steps=0,
                per_device_train_batch_size=4, seed=0, use_cpu=True, text={"max_length": 48})
    return TrainConfig.model_validate({**base, **changes})


def trained(store, dataset: str, model_ref: str, method: str, settings: TrainConfig) -> int:
    run_id = jobs.create_run(store, dataset, model_ref, method, settings)
    jobs.finish_run(store, run_id, worker.run_worker(store, run_id))
    return run_id


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_folder):  # noqa: F811
    """A store with a pairs dataset (imported from prompt/chosen/rejected JSONL) and a plain text one, and a LoRA
    SFT run on the tiny Llama (checkpoints at steps 2 and 4)."""
    root = tmp_path_factory.mktemp("preferences")
    store = open_store(load_settings(home=root / "home"))
    pairs = root / "pairs.jsonl"
    answers = ["yes, it is even", "no, it is odd"]
    pairs.write_text("".join(json.dumps({"prompt": f"Is {n} even?", "chosen": answers[n % 2],
                                         "rejected": answers[1 - n % 2]}) + "\n" for n in range(40)))
    plain = root / "plain.txt"
    plain.write_text("\n\n".join(f"Story number {n} ends well." for n in range(40)))
    datasets = {name: str(import_dataset(store, [path], name=name)["dataset_id"])
                for name, path in (("pairs", pairs), ("plain", plain))}
    sft = trained(store, datasets["pairs"], str(tiny_folder), "lora", config())  # a pair teaches its chosen answer
    yield {"store": store, "root": root, "sft": sft, **datasets}
    store.close()


def test_a_dpo_run_starts_from_a_lora_runs_checkpoint_and_sits_beside_it_in_generate(lab, tiny_folder):  # noqa: F811
    store = lab["store"]
    dpo = trained(store, lab["pairs"], f"{lab['sft']}:4", "lora", config(objective="dpo", preference={"beta": 0.5}))
    summary = run_summary(store, dpo, with_history=True)
    assert summary["status"] == "completed" and summary["objective"] == "dpo", summary["error"]
    start = store.path(f"runs/{lab['sft']}/checkpoints/step-0000004/model")
    assert Path(summary["model"]) == start  # the start is recorded: the run's model is that checkpoint
    names = {h["name"] for h in summary["history"]}
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "val_rewards/margins",
            "train_loss", "val_loss"} <= names
    base, begun, tuned = resolve_variants(store, ["base", f"{lab['sft']}:4", str(dpo)])
    assert base.base_ref == begun.base_ref == tuned.base_ref == str(Path(tiny_folder).resolve())
    # It went on with the start's adapter, one adapter on the same base, compared with the start itself (a frozen
    # copy of its adapter): at step 0 the model is its reference (a DPO loss of log 2), and it ends near its start.
    first_loss = next(h["value"] for h in summary["history"] if h["name"] == "val_loss")
    assert tuned.kind == "lora" and first_loss == pytest.approx(math.log(2), abs=1e-5)
    ended, begun_with = (load_file(str(Path(v.weights) / "adapter_model.safetensors")) for v in (tuned, begun))
    assert ended.keys() == begun_with.keys() and not (Path(tuned.weights) / "reference").exists()
    moved = sum(float((ended[k] - begun_with[k]).norm()) for k in ended)
    assert 0 < moved < 0.5 * sum(float(v.norm()) for v in begun_with.values())
    made = get_set(store, generate_set(store, ["base", f"{lab['sft']}:4", str(dpo)], ["Is 4 even?"], seed=3,
                                       settings={"max_new_tokens": 6}, cache=ModelCache(2**34)))
    assert len(made["samples"]) == 3 and all(sample["text"] is not None for sample in made["samples"]), made


def test_a_sft_run_can_start_from_the_last_checkpoint_of_a_run_too(lab):
    store = lab["store"]
    run = jobs.create_run(store, lab["pairs"], str(lab["sft"]), "full", config())
    with store.session() as session:
        assert session.get(Run, run).model_ref == str(store.path(f"runs/{lab['sft']}/checkpoints/step-0000004/model"))


def test_a_preference_objective_refuses_a_dataset_without_what_it_learns_from(lab):
    with pytest.raises(jobs.RunError, match=r"objective 'dpo' learns from preference pairs .*has \d+ examples, "
                                            r"0 preference pairs, 0 thumbs"):
        jobs.create_run(lab["store"], lab["plain"], str(lab["sft"]), "lora", config(objective="dpo"))
    with pytest.raises(jobs.RunError, match=r"objective 'kto' learns from answers marked good or bad"):
        jobs.create_run(lab["store"], lab["plain"], str(lab["sft"]), "lora", config(objective="kto"))


def test_an_objective_the_family_does_not_train_with_is_refused(lab, tmp_path):
    from studio.examples.shapes import make_shapes

    make_shapes(tmp_path / "shapes", 2, 0)
    images = str(import_dataset(lab["store"], [tmp_path / "shapes"], name="shapes")["dataset_id"])
    with pytest.raises(jobs.RunError, match=r"objective 'kto' is not one the starter-image family trains with: "
                                            r"sft, dpo"):
        jobs.create_run(lab["store"], images, "starter-image", "scratch", config(objective="kto"))
    with pytest.raises(jobs.RunError, match=rf"run {lab['sft']} trained a text model, which cannot learn from an? "
                                            r"image dataset"):
        jobs.create_run(lab["store"], images, f"{lab['sft']}:4", "lora", config(objective="dpo"))
    with pytest.raises(jobs.RunError, match=rf"run {lab['sft']} has no checkpoint at step 3 .*2, 4"):
        jobs.create_run(lab["store"], lab["pairs"], f"{lab['sft']}:3", "lora", config(objective="dpo"))

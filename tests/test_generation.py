"""Generate: variants side by side on the same prompts, seeds and settings, with real tiny models.

The runs are real: a tiny Llama saved like a Hub model (test_text_backend's) fine-tuned with LoRA by the
studio's worker code in this process (checkpoints at steps 2 and 4, rows written by the worker's hooks), and
the tiny Stable Diffusion pipeline of test_image_backend. No network."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.data.service import import_dataset
from studio.examples.text import make_corpus
from studio.generation.cache import ModelCache
from studio.generation.options import parse_settings
from studio.generation.service import (GenerationError, GenerationHooks, export_set_zip, generate_set, get_set,
                                       list_sets, prompts_from_test_split, save_prompt_set, get_prompt_set,
                                       list_prompt_sets)
from studio.generation.variants import VariantError, resolve_variants, variant_choices
from studio.settings import load_settings
from studio.store import open_store
from studio.store.tables import Checkpoint, Run
from studio.training import jobs, worker
from studio.training.config import TrainConfig
from test_image_backend import tiny_pipeline  # noqa: F401 - a module-scoped fixture
from test_text_backend import rows, tiny_folder  # noqa: F401 - module-scoped fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXT = {"max_new_tokens": 12, "temperature": 1.0}
PROMPTS = ["Once upon a time", "Mia"]
BIG = 2**34


def run_in_process(store, dataset: str, model_ref: str, method: str, config: TrainConfig) -> int:
    """A run created like `studio train` does and trained by the worker's own code, in this process."""
    run_id = jobs.create_run(store, dataset, model_ref, method, config)
    jobs.finish_run(store, run_id, worker.run_worker(store, run_id))
    return run_id


def add_run(store, like: int, **changes) -> int:
    """A run row copied from run ``like`` (same dataset and checkpoints), with ``changes``."""
    with store.session() as session:
        source = session.get(Run, like)
        fields = {c.name: getattr(source, c.name) for c in Run.__table__.columns if c.name != "id"}
        run = Run(**{**fields, **changes})
        session.add(run)
        session.flush()
        for checkpoint in session.query(Checkpoint).filter(Checkpoint.run_id == like).all():
            session.add(Checkpoint(run_id=run.id, step=checkpoint.step, path=checkpoint.path,
                                   is_adapter=checkpoint.is_adapter))
        return run.id


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_folder):  # noqa: F811
    """A store with the stories dataset and a LoRA run on the tiny Llama (checkpoints at steps 2 and 4)."""
    root = tmp_path_factory.mktemp("generation")
    corpus = root / "stories.txt"
    corpus.write_text(make_corpus(size_kb=12, seed=3))
    home = root / "home"
    store = open_store(load_settings(home=home))
    dataset = str(import_dataset(store, [corpus], name="stories")["dataset_id"])
    config = TrainConfig(max_steps=4, save_steps=2, eval_steps=100, learning_rate=5e-2, warmup_steps=0,
                         per_device_train_batch_size=4, seed=0, use_cpu=True, text={"max_length": 64})
    run = run_in_process(store, dataset, str(tiny_folder), "lora", config)
    yield {"store": store, "home": home, "dataset": dataset, "run": run, "root": root}
    store.close()


def texts(found: dict) -> dict[tuple, str]:
    return {(s["variant"], s["prompt_index"], s["sample_index"]): s["text"] for s in found["samples"]}


# ----------------------------------------------------------------------------- seeds, variants, the cache

def test_same_seed_same_output_and_training_makes_the_difference(lab):
    store, run = lab["store"], lab["run"]
    cache = ModelCache(BIG)
    first = get_set(store, generate_set(store, ["base", str(run)], PROMPTS, seed=7, samples_per_prompt=2,
                                        settings=TEXT, cache=cache))
    again = get_set(store, generate_set(store, ["base", f"{run}:4"], PROMPTS, seed=7, samples_per_prompt=2,
                                        settings=TEXT, cache=ModelCache(BIG)))
    assert first["status"] == again["status"] == "completed"
    assert [v["ref"] for v in first["variants"]] == ["base", f"{run}:4"]  # RUN_ID is its last checkpoint
    assert first["seeds"] == [[7, 8], [7, 8]]
    assert texts(first) == texts(again) and len(texts(first)) == 8  # a fixed-seed re-run, even freshly loaded
    outputs = texts(first)
    assert all(outputs.values())
    mine = [c for c in variant_choices(store, "text") if c["run_id"] == run]
    assert [(c["ref"], c["last"]) for c in mine] == [(f"{run}:4", True), (f"{run}:2", False)]
    assert any(outputs[("base", p, s)] != outputs[(f"{run}:4", p, s)] for p in (0, 1) for s in (0, 1))
    assert outputs[("base", 0, 0)] != outputs[("base", 0, 1)]  # another seed, another sample
    assert all(s["seconds"] > 0 and s["path"] is None for s in first["samples"])
    row = first["grid"][1]
    assert row["prompt"] == "Mia" and row["seeds"] == [7, 8]
    assert [s["seed"] for s in row["cells"][f"{run}:4"]] == [7, 8]


def test_lora_variants_share_one_base_and_match_their_adapter_loaded_alone(lab, tiny_folder):  # noqa: F811
    from studio.models.text import TextBackend

    store, run = lab["store"], lab["run"]
    cache = ModelCache(BIG)
    found = get_set(store, generate_set(store, ["base", f"{run}:2", f"{run}:4"], ["Once upon a time"], seed=3,
                                        settings=TEXT, cache=cache))
    assert (cache.loads, cache.adapter_loads) == (1, 2)  # one base, two named adapters switched on it
    generate_set(store, [f"{run}:4", "base"], ["Mia"], seed=3, settings=TEXT, cache=cache)
    assert (cache.loads, cache.adapter_loads) == (1, 2)  # kept between requests

    outputs = texts(found)
    assert len(set(outputs.values())) == 3
    backend, config = TextBackend(), TrainConfig()
    for step in (2, 4):
        alone = backend.load(str(tiny_folder), "lora", config)
        backend.load_weights(alone, lab["home"] / f"runs/{run}/checkpoints/step-{step:07d}/model")
        [sample] = backend.generate(alone, ["Once upon a time"], [3], TEXT, lab["root"])
        assert sample.text == outputs[(f"{run}:{step}", 0, 0)]
    plain = backend.load(str(tiny_folder), "full", config)
    [sample] = backend.generate(plain, ["Once upon a time"], [3], TEXT, lab["root"])
    assert sample.text == outputs[("base", 0, 0)]  # adapters switched off are the base itself


def test_the_cache_evicts_the_least_recently_used_model(lab, tiny_folder):  # noqa: F811
    store = lab["store"]
    copy = lab["root"] / "tiny-llama-copy"
    if not copy.exists():
        shutil.copytree(tiny_folder, copy)
    [one] = resolve_variants(store, ["base"], base_model=str(tiny_folder))
    [two] = resolve_variants(store, ["base"], base_model=str(copy))
    probe = ModelCache(BIG)
    probe.handle_for(one)
    size = probe.total_bytes()
    cache = ModelCache(int(size * 1.5))
    cache.handle_for(one)
    cache.handle_for(two)
    assert cache.loads == 2 and [e["model"] for e in cache.describe()] == [str(copy.resolve())]
    cache.handle_for(two)
    assert cache.loads == 2
    cache.handle_for(one)
    assert cache.loads == 3 and len(cache.entries) == 1 and cache.total_bytes() <= cache.max_bytes


# ----------------------------------------------------------------------------- bad input

def test_bad_input_gets_a_clear_message_and_stores_nothing(lab, tiny_folder):  # noqa: F811
    store, run = lab["store"], lab["run"]
    before = len(list_sets(store))
    with pytest.raises(GenerationError, match="prompt 2 is empty"):
        generate_set(store, ["base", str(run)], ["fine", "  "], settings=TEXT)
    with pytest.raises(VariantError, match=r"no checkpoint at step 999; its checkpoints are at steps 2, 4"):
        generate_set(store, [f"{run}:999"], PROMPTS)
    with pytest.raises(VariantError, match="no run 4242"):
        generate_set(store, ["4242"], PROMPTS)
    with pytest.raises(VariantError, match="'latest' is not a variant"):
        generate_set(store, ["latest"], PROMPTS)
    with pytest.raises(VariantError, match="'base' alone needs a base model"):
        generate_set(store, ["base"], PROMPTS)
    with pytest.raises(ValueError, match="unknown text generation setting 'steps'"):
        generate_set(store, ["base", str(run)], PROMPTS, settings={"steps": 3})

    other = lab["root"] / "another-llama"
    other.mkdir(exist_ok=True)
    foreign = add_run(store, run, model_ref=str(other))
    with pytest.raises(VariantError, match=rf"{foreign}:4 was trained from '{other}' but {run}:4 from "
                                           rf"'{tiny_folder}': variants must share one base model"):
        generate_set(store, [str(run), str(foreign)], PROMPTS)

    scratch = add_run(store, run, model_ref="starter-text", method="scratch")
    with pytest.raises(VariantError, match=rf"run {scratch} was trained from scratch.*--variant {scratch}:STEP"):
        generate_set(store, ["base", str(scratch)], PROMPTS)
    assert len(resolve_variants(store, [f"{scratch}:2", f"{scratch}:4"])) == 2  # its checkpoints compare fine

    waiting = add_run(store, run, status="queued")
    with store.session() as session:
        session.query(Checkpoint).filter(Checkpoint.run_id == waiting).delete()
    with pytest.raises(VariantError, match=f"run {waiting} is queued and has not saved a checkpoint yet"):
        generate_set(store, [str(waiting)], PROMPTS)
    assert len(list_sets(store)) == before


def test_a_run_still_training_uses_its_last_checkpoint_and_says_so(lab):
    store, run = lab["store"], lab["run"]
    running = add_run(store, run, status="running", steps_done=5, total_steps=40)
    [base, variant] = resolve_variants(store, ["base", str(running)])
    assert variant.ref == f"{running}:4" and base.kind == "base"
    assert variant.note == (f"run {running} is still training (running): using its last checkpoint so far "
                            "(step 4; 5 of 40 steps done)")
    found = get_set(store, generate_set(store, [str(running)], ["Mia"], seed=1, settings=TEXT,
                                        cache=ModelCache(BIG)))
    assert found["status"] == "completed" and "still training" in found["report"]["notes"][0]


# ----------------------------------------------------------------------------- filter, cancel, memory, streaming

def test_a_run_from_scratch_is_compared_with_its_untrained_start(lab):
    store, dataset = lab["store"], lab["dataset"]
    config = TrainConfig(max_steps=4, save_steps=2, eval_steps=100, learning_rate=3e-3, warmup_steps=0,
                         per_device_train_batch_size=4, seed=0, use_cpu=True, sample_steps=0, text={"max_length": 32})
    run = run_in_process(store, dataset, "starter-text", "scratch", config)
    offered = [c for c in variant_choices(store) if c["run_id"] == run]
    assert [(c["step"], c["label"]) for c in offered][-1] == (0, f"run {run} · scratch · step 0 (untrained)")
    # What Generate's "include the base model" asks for a starter's run: its step-0 checkpoint.
    [base, trained] = resolve_variants(store, ["base", str(run)], base_model="starter-text")
    assert (base.ref, base.step, base.run_id, base.slug) == ("base", 0, run, "base")
    assert base.label == f"base (run {run} untrained, step 0)" and base.weights.endswith("step-0000000/model")
    assert trained.ref == f"{run}:4"
    found = get_set(store, generate_set(store, ["base", str(run)], PROMPTS, seed=1, settings=TEXT,
                                        cache=ModelCache(BIG)))
    assert found["status"] == "completed" and {s["variant"] for s in found["samples"]} == {"base", f"{run}:4"}
    with pytest.raises(VariantError, match=f"'base' is run {run}'s untrained start, {run}:0, which is also listed"):
        resolve_variants(store, ["base", f"{run}:0"])


def test_blocklist_refuses_prompts_and_masks_outputs_and_says_so(lab):
    store, run = lab["store"], lab["run"]
    plain = get_set(store, generate_set(store, [str(run)], ["Once upon a time"], seed=11, settings=TEXT,
                                        cache=ModelCache(BIG)))
    words = [w.strip(".,!?\"'") for w in plain["samples"][0]["text"].split()]
    word = max((w for w in words if w.lower() not in ("once", "upon", "a", "time", "dragon")), key=len)
    filtered = open_store(load_settings(home=lab["home"], blocklist=f"dragon, {word}"))
    heard = []
    try:
        found = get_set(filtered, generate_set(filtered, [str(run)], ["Once upon a time", "the Dragon flew"],
                                               seed=11, settings=TEXT, cache=ModelCache(BIG),
                                               hooks=GenerationHooks(on_text=heard.append)))
        assert heard[-1]["text"] == found["samples"][0]["text"]  # what streams is filtered too
        assert found["report"]["refused"] == [{"prompt_index": 1, "prompt": "the Dragon flew", "words": ["dragon"]}]
        assert found["grid"][1]["refused"] == ["dragon"] and found["grid"][1]["cells"][f"{run}:4"] == []
        [sample] = found["samples"]
        assert sample["flags"] == {"blocked": [word.lower()]} and "[blocked]" in sample["text"]
        assert word not in sample["text"].split()
        assert found["report"]["flagged"][0]["words"] == [word.lower()]
        with pytest.raises(GenerationError, match="every prompt contains a blocked word"):
            generate_set(filtered, [str(run)], ["here be dragon"], settings=TEXT)
    finally:
        filtered.close()
    with pytest.raises(ValueError, match="blocklist file '/nowhere/words.txt' does not exist"):
        bad = open_store(load_settings(home=lab["home"], blocklist="/nowhere/words.txt"))
        try:
            generate_set(bad, [str(run)], ["Mia"], settings=TEXT)
        finally:
            bad.close()


def test_a_cancel_keeps_the_finished_samples(lab):
    store, run = lab["store"], lab["run"]
    progress = []
    found_id = generate_set(store, ["base", str(run)], PROMPTS, seed=5, settings=TEXT, cache=ModelCache(BIG),
                            hooks=GenerationHooks(
                                progress=lambda done, total, message: progress.append((done, total, message)),
                                should_cancel=lambda: progress[-1][0] >= 1 if progress else False))
    found = get_set(store, found_id)
    assert found["status"] == "cancelled"
    assert [(s["variant"], s["prompt_index"]) for s in found["samples"]] == [("base", 0)]
    assert progress[0] == (0, 4, "loading base (tiny-llama)")


def test_out_of_memory_skips_only_that_variant(lab, monkeypatch):
    import torch

    from studio.models.text import TextBackend

    store, run = lab["store"], lab["run"]
    real = TextBackend.generate
    calls = []

    def first_call_runs_out(self, handle, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, handle, *args, **kwargs)

    monkeypatch.setattr(TextBackend, "generate", first_call_runs_out)
    found = get_set(store, generate_set(store, ["base", str(run)], ["Mia"], seed=2, settings=TEXT,
                                        cache=ModelCache(BIG)))
    assert found["status"] == "completed"
    [error] = found["report"]["errors"]
    assert error["variant"] == "base" and "out of memory" in error["message"] and "other variants went on" in \
        error["message"]
    assert [s["variant"] for s in found["samples"]] == [f"{run}:4"]


def test_a_checkpoint_that_cannot_be_loaded_skips_only_its_variant(lab):
    store, run = lab["store"], lab["run"]
    broken = add_run(store, run)
    folder = lab["home"] / f"runs/{broken}/checkpoints/step-0000004"
    (folder / "model").mkdir(parents=True)
    shutil.copy(lab["home"] / f"runs/{run}/checkpoints/step-0000004/model/adapter_config.json", folder / "model")
    (folder / "model" / "adapter_model.safetensors").write_bytes(b"not a tensor file")
    with store.session() as session:
        session.query(Checkpoint).filter(Checkpoint.run_id == broken).update(
            {"path": str(folder.relative_to(lab["home"]))})
    found = get_set(store, generate_set(store, [str(broken), "base"], ["Mia"], seed=2, settings=TEXT,
                                        cache=ModelCache(BIG)))
    assert found["status"] == "completed" and [s["variant"] for s in found["samples"]] == ["base"]
    [error] = found["report"]["errors"]
    assert error["message"].startswith(f"run {broken} · lora · step 4 could not be loaded (")
    assert "skipped (the other variants went on)" in error["message"]


def test_text_streams_as_it_is_generated(lab):
    store, run = lab["store"], lab["run"]
    heard = []
    found = get_set(store, generate_set(store, [str(run)], ["Once upon a time"], seed=4, settings=TEXT,
                                        cache=ModelCache(BIG), hooks=GenerationHooks(on_text=heard.append)))
    [sample] = found["samples"]
    assert len(heard) > 3 and all(e["variant"] == f"{run}:4" and e["prompt_index"] == 0 for e in heard)
    assert heard[-1]["text"] == sample["text"]
    assert all(sample["text"].startswith(e["text"].rstrip("\ufffd")) for e in heard)


# ----------------------------------------------------------------------------- kept, reopened, exported

def test_samples_persist_across_a_restart_and_export_as_a_zip(lab, tmp_path):
    store, run = lab["store"], lab["run"]
    test_prompts = prompts_from_test_split(store, lab["dataset"], n=2)
    assert len(test_prompts) == 2 and all(p["prompt"] and p["reference"]["text"] for p in test_prompts)
    set_id = generate_set(store, ["base", str(run)], [p["prompt"] for p in test_prompts], seed=9, settings=TEXT,
                          references=[p["reference"] for p in test_prompts], cache=ModelCache(BIG))
    before = get_set(store, set_id)
    reopened = open_store(load_settings(home=lab["home"]))  # what a restarted studio does
    try:
        after = get_set(reopened, set_id)
        assert after == before
        assert after["grid"][0]["reference"] == test_prompts[0]["reference"]
        assert any(s["set_id"] == set_id and s["samples"] == 4 for s in list_sets(reopened))
        archive = export_set_zip(reopened, set_id, tmp_path / "set.zip")
    finally:
        reopened.close()
    with zipfile.ZipFile(archive) as zf:
        assert set(zf.namelist()) == {"set.json", "samples.jsonl"}
        exported = [json.loads(line) for line in zf.read("samples.jsonl").decode().splitlines()]
        meta = json.loads(zf.read("set.json"))
    assert len(exported) == 4 and {r["variant"] for r in exported} == {"base", f"{run}:4"}
    assert meta["seeds"] == [[9], [9]] and meta["references"][1] == test_prompts[1]["reference"]

    save_prompt_set(store, "stories", ["Once upon a time", "Mia"])
    save_prompt_set(store, "stories", ["Once upon a time"])  # the same name replaces it
    assert get_prompt_set(store, "stories") == ["Once upon a time"]
    assert [p["name"] for p in list_prompt_sets(store)] == ["stories"]


def test_cli_generate_json_contract(lab, tmp_path, capsys):
    from studio import cli

    home, run = str(lab["home"]), lab["run"]
    code = cli.main(["generate", "--variant", "base", "--variant", str(run), "--prompt", "Once upon a time",
                     "--prompt", "Mia", "--seed", "3", "--samples", "2", "--set", "max_new_tokens=8",
                     "--set", "temperature=1.0", "--out", str(tmp_path / "out"), "--json", "--home", home])
    result = json.loads(capsys.readouterr().out)  # exactly one JSON object
    assert code == 0
    assert {"sample_set_id", "samples"} <= set(result)
    assert len(result["samples"]) == 8
    for sample in result["samples"]:
        assert {"variant", "prompt", "seed", "text"} <= set(sample) and "path" not in sample
    assert {s["variant"] for s in result["samples"]} == {"base", f"{run}:4"}
    assert sorted({s["seed"] for s in result["samples"]}) == [3, 4]
    assert len((tmp_path / "out" / "samples.jsonl").read_text().splitlines()) == 8

    assert cli.main(["samples", "list", "--json", "--home", home]) == 0
    listed = json.loads(capsys.readouterr().out)["sample_sets"]
    assert listed[0]["set_id"] == result["sample_set_id"] and listed[0]["samples"] == 8
    assert cli.main(["samples", "export", str(result["sample_set_id"]), "--out", str(tmp_path / "s.zip"),
                     "--home", home]) == 0
    assert zipfile.is_zipfile(tmp_path / "s.zip")
    capsys.readouterr()

    listed = tmp_path / "prompts.txt"
    listed.write_text("Mia\n\nOnce upon a time\n")
    assert cli.main(["generate", "--variant", f"{run}:2", "--prompts-file", str(listed), "--seed", "1",
                     "--set", "max_new_tokens=4", "--out", str(tmp_path / "human"), "--home", home]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"completed, 2 samples in {tmp_path / 'human'}")
    assert lines[1].startswith(f"run {run} · lora · step 2 | seed 1 | 'Mia' -> ")

    for bad, message in [(["--prompt", ""], "prompt 1 is empty"),
                         (["--prompt", "Mia", "--set", "nosuch=1"], "unknown text generation setting 'nosuch'"),
                         (["--prompt", "Mia", "--set", "top_p=7"], "top_p")]:
        code = cli.main(["generate", "--variant", str(run), *bad, "--out", str(tmp_path / "bad"), "--json",
                         "--home", home])
        captured = capsys.readouterr()
        assert code == 2 and message in json.loads(captured.out)["error"] and message in captured.err


def test_settings_models_parse_keys_and_refuse_bad_values():
    text = parse_settings("text", ["temperature=0.5", "chat_template=off", "max_new_tokens=9"])
    assert text.backend_settings()["chat_template"] is False and text.max_new_tokens == 9
    image = parse_settings("image", ["negative_prompt=blurry, dark", "guidance_scale=4"])
    assert image.negative_prompt == "blurry, dark" and image.guidance_scale == 4.0
    assert parse_settings("image").backend_settings()["guidance_scale"] is None  # the model's default
    assert "guidance_scale" not in parse_settings("audio").backend_settings()
    with pytest.raises(ValueError, match=r"^max new tokens \(max_new_tokens\): must be a whole number between 1 "
                                         r"and 4096 \(got 0\)$"):
        parse_settings("text", ["max_new_tokens=0"])
    with pytest.raises(ValueError, match="Known: steps, guidance_scale"):
        parse_settings("image", ["temperature=1"])


def test_generation_modules_import_no_model_library():
    code = ("import sys\n"
            "import studio.generation.service, studio.generation.cache, studio.generation.variants\n"
            "print(','.join(m for m in ('torch', 'transformers', 'diffusers', 'peft', 'accelerate') "
            "if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


# ----------------------------------------------------------------------------- images

@pytest.mark.slow
def test_image_checkpoints_side_by_side_seeded(tmp_path, tiny_pipeline):  # noqa: F811
    from studio.examples.shapes import make_shapes

    store = open_store(load_settings(home=tmp_path / "home"))
    try:
        make_shapes(tmp_path / "shapes", 3, 0)
        dataset = str(import_dataset(store, [tmp_path / "shapes"], name="shapes")["dataset_id"])
        config = TrainConfig(max_steps=4, save_steps=2, eval_steps=100, learning_rate=2e-2, warmup_steps=0,
                             per_device_train_batch_size=4, seed=0, use_cpu=True, image={"resolution": 16})
        run = run_in_process(store, dataset, str(tiny_pipeline), "lora", config)
        cache = ModelCache(BIG)
        ask = dict(variants=["base", f"{run}:2", f"{run}:4"], prompts=["a red circle", "a blue square"], seed=3,
                   settings={"steps": 3}, cache=cache)
        first, second = (get_set(store, generate_set(store, **ask)) for _ in range(2))
        assert (cache.loads, cache.adapter_loads) == (1, 2)
        assert first["status"] == "completed" and len(first["samples"]) == 6

        def pixels(found):
            return {(s["variant"], s["prompt_index"]): np.asarray(Image.open(s["path"])) for s in found["samples"]}

        one, two = pixels(first), pixels(second)
        assert all(np.array_equal(one[key], two[key]) for key in one)  # the same seed, the same image
        assert one[("base", 0)].shape == (16, 16, 3)  # the run's training resolution
        assert not np.array_equal(one[("base", 0)], one[(f"{run}:4", 0)])
        assert not np.array_equal(one[(f"{run}:2", 0)], one[(f"{run}:4", 0)])
        path = Path(first["samples"][0]["path"])
        assert path.is_relative_to(tmp_path / "home" / "samples" / str(first["set_id"]))
        with zipfile.ZipFile(export_set_zip(store, first["set_id"])) as zf:
            assert sum(name.endswith(".png") for name in zf.namelist()) == 6
        [held_out, *_] = prompts_from_test_split(store, dataset, n=1)
        assert held_out["prompt"].startswith("a ") and Path(held_out["reference"]["path"]).is_file()

        # A starter trained from scratch: each checkpoint is a model of its own, with the starter's defaults.
        starter = run_in_process(store, dataset, "starter-image", "scratch",
                                 config.model_copy(update={"learning_rate": 2e-3}))
        with pytest.raises(VariantError, match="must share one base model"):
            resolve_variants(store, [str(run), str(starter)])
        cache = ModelCache(BIG)
        found = get_set(store, generate_set(store, [f"{starter}:2", f"{starter}:4"], ["a red circle"], seed=3,
                                            settings={"steps": 3}, cache=cache))
        assert cache.loads == 2 and all(e.handle.parts["starter"] for e in cache.entries.values())
        early, late = (np.asarray(Image.open(s["path"])) for s in found["samples"])
        assert early.shape == late.shape == (16, 16, 3) and not np.array_equal(early, late)
    finally:
        store.close()

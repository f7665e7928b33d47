"""Exports load back with plain peft / transformers (no studio code) and give the studio's own outputs."""

from __future__ import annotations

import json

import pytest

from studio import cli
from studio.sharing.export import ExportError, export_run
from test_generation import lab  # noqa: F401 - the store with a tiny LoRA run (checkpoints at steps 2 and 4)
from test_text_backend import rows, tiny_folder  # noqa: F401 - module-scoped fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def studio_logits(store, ref: str, ids):
    import torch

    from studio.generation.cache import ModelCache
    from studio.generation.variants import resolve_variants

    [variant] = resolve_variants(store, [ref])
    handle = ModelCache(2**34).handle_for(variant)
    with torch.no_grad():
        return handle.parts["model"](input_ids=ids).logits


def test_peft_and_merged_exports_load_without_the_studio(lab, tiny_folder, tmp_path):  # noqa: F811
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    store, run = lab["store"], lab["run"]
    ids = AutoTokenizer.from_pretrained(tiny_folder)("Once upon a time", return_tensors="pt").input_ids
    expected = studio_logits(store, f"{run}:4", ids)

    peft_out = export_run(store, f"{run}:4", "peft", tmp_path / "adapter", make_zip=True)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(peft_out["files"])
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        str(tiny_folder)
    assert peft_out["zip"].endswith("adapter.zip")
    base = AutoModelForCausalLM.from_pretrained(tiny_folder)
    with torch.no_grad():
        plain = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()(input_ids=ids).logits
    assert torch.allclose(plain, expected, atol=1e-5)

    merged = export_run(store, f"{run}:4", "merged", tmp_path / "merged")
    assert "model.safetensors" in merged["files"] and "adapter_config.json" not in merged["files"]
    with torch.no_grad():
        alone = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()(input_ids=ids).logits
    assert torch.allclose(alone, expected, atol=1e-4)


def test_bad_exports_say_why_and_touch_nothing(lab, tmp_path):
    store, run = lab["store"], lab["run"]
    with pytest.raises(ExportError, match="diffusers-lora is for image LoRA runs"):
        export_run(store, str(run), "diffusers-lora", tmp_path / "x")
    with pytest.raises(ExportError, match="not the base model"):
        export_run(store, "base", "peft", tmp_path / "y")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="is not an empty folder"):
        export_run(store, str(run), "peft", tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    (tmp_path / "taken.zip").write_text("mine")
    with pytest.raises(ExportError, match="taken.zip exists already"):
        export_run(store, str(run), "peft", tmp_path / "taken", make_zip=True)
    assert (tmp_path / "taken.zip").read_text() == "mine" and not (tmp_path / "taken").exists()


def test_export_cli_json(lab, tmp_path, capsys):
    home, run = str(lab["home"]), lab["run"]
    code = cli.main(["export", str(run), "--format", "peft", "--out", str(tmp_path / "a"), "--json", "--home", home])
    found = json.loads(capsys.readouterr().out)
    assert code == 0 and found["format"] == "peft" and found["step"] == 4 and found["run_id"] == run
    assert cli.main(["export", "999", "--format", "peft", "--out", str(tmp_path / "b"), "--home", home]) != 0


def test_merged_text_model_is_sharded_past_the_setting_and_loads_whole(lab, tiny_folder, tmp_path):  # noqa: F811
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.settings import load_settings
    from studio.store import open_store

    run = lab["run"]
    ids = AutoTokenizer.from_pretrained(tiny_folder)("Once upon a time", return_tensors="pt").input_ids
    store = open_store(load_settings(home=lab["home"], export_max_shard_mb=0.2))  # the tiny Llama is ~0.8 MB
    try:
        expected = studio_logits(store, f"{run}:4", ids)
        found = export_run(store, f"{run}:4", "merged", tmp_path / "sharded")
    finally:
        store.close()
    shards = [f for f in found["files"] if f.startswith("model-0")]
    assert len(shards) > 1 and all(f.endswith(f"-of-{len(shards):05d}.safetensors") for f in shards)
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards) and "model.safetensors" not in found["files"]
    with torch.no_grad():
        alone = AutoModelForCausalLM.from_pretrained(tmp_path / "sharded").eval()(input_ids=ids).logits
    assert torch.allclose(alone, expected, atol=1e-4)


def test_an_export_into_a_nearly_full_studio_home_is_refused_up_front(lab, tmp_path):  # noqa: F811
    from studio.settings import load_settings
    from studio.store import open_store

    store = open_store(load_settings(home=lab["home"], min_free_disk_mb=10**9))
    try:
        with pytest.raises(ExportError, match="not enough free disk space to export run"):
            export_run(store, str(lab["run"]), "peft", store.path("exports") / "full-disk")
        assert not (store.path("exports") / "full-disk").exists()
        export_run(store, str(lab["run"]), "peft", tmp_path / "elsewhere")  # outside STUDIO_HOME: not its disk
    finally:
        store.close()


def test_a_merge_onto_a_bfloat16_base_is_saved_in_bfloat16(lab, tiny_folder, tmp_path):  # noqa: F811
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.training.config import TrainConfig
    from test_generation import run_in_process

    half = tmp_path / "tiny-llama-bf16"
    AutoModelForCausalLM.from_pretrained(tiny_folder).to(torch.bfloat16).save_pretrained(half)
    AutoTokenizer.from_pretrained(tiny_folder).save_pretrained(half)
    config = TrainConfig(max_steps=2, save_steps=2, eval_steps=100, learning_rate=5e-2, warmup_steps=0,
                         per_device_train_batch_size=4, seed=0, use_cpu=True, text={"max_length": 64})
    run = run_in_process(lab["store"], lab["dataset"], str(half), "lora", config)
    export_run(lab["store"], str(run), "merged", tmp_path / "merged")
    with safe_open(str(tmp_path / "merged" / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {torch.bfloat16}
    ids = AutoTokenizer.from_pretrained(half)("Once upon a time", return_tensors="pt").input_ids
    with torch.no_grad():
        alone = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()(input_ids=ids).logits.float()
    studio = studio_logits(lab["store"], f"{run}:2", ids).float()
    assert (alone - studio).abs().max() < 0.1 * studio.abs().max()  # bfloat16 rounding of the studio's model

"""Quantisation of a deployment's models (studio.serving.quantize) on real tiny models: test_generation's LoRA run
on the tiny Llama (two checkpoints: two adapters on one base), a tiny GPT-2 built from a config (Conv1D layers, an
output layer tied to the embedding), and an image-starter run; the quality check on their real dataset versions."""

from __future__ import annotations

import math

import pytest

from studio.data.service import get_version, import_dataset, read_manifest
from studio.generation.cache import ModelCache, tensor_bytes, weight_bytes
from studio.generation.variants import resolve_variants
from studio.models.common import activate_adapter
from studio.serving.quantize import QuantizeError, base_linears, quality_check, quantize_handle
from studio.settings import load_settings
from studio.store import open_store
from studio.training.config import TrainConfig
from test_generation import lab, run_in_process  # noqa: F401 - a module-scoped fixture
from test_text_backend import rows, tiny_folder  # noqa: F401 - module-scoped fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- refusals, bytes

@pytest.mark.parametrize("mode, words", [("nf4", ("NVIDIA GPU", "bitsandbytes", "int8")),
                                         ("int4", ("'int4' is not a quantisation", "none, int8, nf4"))])
def test_nf4_without_a_gpu_and_unknown_modes_are_refused_saying_what_to_pick(mode, words):
    with pytest.raises(QuantizeError) as refused:
        quantize_handle(None, mode)  # refused before the handle is touched
    for word in words:
        assert word in str(refused.value)


def test_int8_weights_are_counted_by_their_real_storage():
    import torch
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    layer = torch.nn.Linear(256, 128, bias=False)
    assert weight_bytes(layer) == 256 * 128 * 4
    quantize_(layer, Int8WeightOnlyConfig())
    # one byte a weight, plus a float32 scale and an int8 zero point per output channel
    assert tensor_bytes(layer.weight) == weight_bytes(layer) == 256 * 128 + 128 * (4 + 1)


# ----------------------------------------------------------------------------- text: base and adapters

def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_int8_halves_the_memory_and_every_adapter_still_switches_and_matches(lab):  # noqa: F811
    import torch

    store, run = lab["store"], lab["run"]
    variants = resolve_variants(store, ["base", f"{run}:2", f"{run}:4"])
    cache = ModelCache(2**34)
    handles = [cache.handle_for(v) for v in variants]  # every adapter added to the one base before quantising
    handle = handles[0]
    assert all(h is handle for h in handles) and cache.adapter_loads == 2
    model = handle.parts.model
    target = handle.family.backend().lora_module(handle)
    names = [None, *cache.entries[cache.key(variants[1])].adapters.values()]
    ids = torch.randint(5, 500, (2, 24), generator=torch.Generator().manual_seed(0))
    before = {}
    for name in names:
        activate_adapter(target, name)
        before[name] = _logits(model, ids)

    found = quantize_handle(handle, "int8")
    assert found["mode"] == "int8" and found["layers"] > 0
    assert found["weight_bytes_after"] <= 0.55 * found["weight_bytes_before"]
    assert found["weight_bytes_after"] == weight_bytes(handle.module)
    adapters = [m for n, m in model.named_modules() if ".lora_A." in n or ".lora_B." in n]
    assert adapters and all(type(m.weight.data) is torch.Tensor and m.weight.dtype == torch.float32 for m in adapters)

    for name in names:
        activate_adapter(target, name)  # switching adapters works on the quantised base
        after = _logits(model, ids)
        error = (after - before[name]).abs().max().item()
        assert error < 0.05 * before[name].abs().max().item(), name
        assert (after.argmax(-1) == before[name].argmax(-1)).float().mean() > 0.95, name  # greedy picks kept
    for name in names[1:]:  # each adapter still changes the outputs, far beyond what quantisation changed
        activate_adapter(target, name)
        adapted = _logits(model, ids)
        activate_adapter(target, None)
        assert (adapted - _logits(model, ids)).abs().max().item() > 10 * error


def test_the_quality_check_before_and_after_int8_on_the_runs_test_split(lab):  # noqa: F811
    store, run, dataset = lab["store"], lab["run"], lab["dataset"]
    [variant] = resolve_variants(store, [f"{run}:4"])
    handle = ModelCache(2**34).handle_for(variant)
    before = quality_check(store, handle, variant, None, limit=8)  # None: the run's own dataset version
    assert before == quality_check(store, handle, variant, f"{dataset}:1", limit=8)  # deterministic
    test_rows = read_manifest(store, get_version(store, dataset), "test")
    assert (before["metric"], before["rows"], before["split"], before["dataset"]) == (
        "perplexity", min(8, len(test_rows)), "test", f"{dataset}:1")
    assert quality_check(store, handle, variant, dataset, limit=1)["rows"] == 1
    quantize_handle(handle, "int8")
    after = quality_check(store, handle, variant, dataset, limit=8)
    assert math.isfinite(after["value"]) and after["value"] != before["value"]
    assert abs(after["value"] / before["value"] - 1) < 0.02  # int8 costs little perplexity

    base, _ = resolve_variants(store, ["base", str(run)])
    with pytest.raises(QuantizeError, match="DATASET_ID"):
        quality_check(store, handle, base, None)


def test_gpt2_conv1d_layers_are_quantised_and_the_tied_output_layer_is_left_shared():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.pytorch_utils import Conv1D

    from studio.models.base import Handle

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=400, n_positions=64)).eval()
    ids = torch.randint(0, 400, (2, 16), generator=torch.Generator().manual_seed(1))
    expected = _logits(model, ids)
    found = quantize_handle(Handle("text", "gpt2", "full", model), "int8")
    assert not any(isinstance(m, Conv1D) for m in model.modules())
    assert found["layers"] == 2 * 4  # c_attn, c_proj, c_fc, mlp c_proj of each block; not the tied head
    assert model.lm_head.weight is model.transformer.wte.weight  # no int8 copy beside the float embedding
    assert base_linears(model) == []  # nothing left to quantise: a second call changes nothing
    assert (_logits(model, ids) - expected).abs().max().item() < 0.05 * expected.abs().max().item()
    assert found["weight_bytes_after"] < 0.6 * found["weight_bytes_before"]


# ----------------------------------------------------------------------------- image

@pytest.fixture(scope="module")
def image_lab(tmp_path_factory):
    """A store with the shapes example and a 2-step image-starter run (its checkpoint at the end)."""
    import torch

    from studio.examples.shapes import make_shapes

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures are set up before one_torch_thread
    root = tmp_path_factory.mktemp("quantize-image")
    make_shapes(root / "shapes", 3, 0)
    store = open_store(load_settings(home=root / "home"))
    dataset = str(import_dataset(store, [root / "shapes"], name="shapes")["dataset_id"])
    config = TrainConfig(max_steps=2, save_steps=2, eval_steps=1000, per_device_train_batch_size=4, seed=0,
                         use_cpu=True)
    run = run_in_process(store, dataset, "starter-image", "scratch", config)
    torch.set_num_threads(threads)
    yield {"store": store, "run": run}
    store.close()


def test_int8_on_the_image_starter_and_its_held_out_loss_before_and_after(image_lab):
    store, run = image_lab["store"], image_lab["run"]
    [variant] = resolve_variants(store, [str(run)])
    handle = ModelCache(2**34).handle_for(variant)
    before = quality_check(store, handle, variant, limit=6)
    found = quantize_handle(handle, "int8")
    after = quality_check(store, handle, variant, limit=6)
    assert before["metric"] == after["metric"] == "held-out loss" and before["rows"] == after["rows"] > 0
    assert found["layers"] > 0 and found["weight_bytes_after"] < found["weight_bytes_before"]
    assert math.isfinite(after["value"]) and abs(after["value"] / before["value"] - 1) < 0.05

"""Starting from a LoRA adapter on the Hub (issue 16): a repository holding only a PEFT adapter (adapter_config.json,
adapter_model.safetensors, no tokenizer) loads as a local adapter folder does: folded into its base for 'full', trained
further for 'lora'. No network: the adapter sits in a Hugging Face cache made here, read with HF_HUB_OFFLINE."""

from __future__ import annotations

import pytest

from studio.models.registry import backend_for
from test_text_backend import rows, small_config, tiny_folder  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO, COMMIT = "someone/tiny-lora", "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_adapter_logits(tmp_path, tiny_folder, monkeypatch):  # noqa: F811
    """The adapter in an offline Hub cache, and the logits its PEFT model gives for a few tokens."""
    import huggingface_hub
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_folder),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    torch.manual_seed(5)
    with torch.no_grad():  # a trained-looking adapter: LoRA's B starts at zero, which would change nothing
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    snapshot = tmp_path / "cache" / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
    model.save_pretrained(snapshot)
    assert sorted(p.name for p in snapshot.iterdir()) == ["README.md", "adapter_config.json",
                                                         "adapter_model.safetensors"]
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    model.eval()
    with torch.no_grad():
        return ids, model(input_ids=ids).logits


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_lora_adapter_on_the_hub_is_a_starting_point(rows, hub_adapter_logits, method):  # noqa: F811
    import torch

    ids, expected = hub_adapter_logits
    handle = backend_for("text").load(REPO, method, small_config(), rows["train"])
    model = handle.parts.model
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)  # the adapter is in, folded or not
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    if method == "lora":  # the Hub adapter itself goes on training: its own rank and layers
        assert trainable and all("lora_" in name for name in trainable)
        assert {name.split(".")[-2] for name in trainable if "lora_A" in name} == {"default"}
        assert model.peft_config["default"].r == 4
    else:
        assert not any("lora_" in name for name, _ in model.named_parameters())
    assert handle.parts.tokenizer.eos_token is not None  # the base's tokenizer: the adapter has none

"""Packing without attention across documents (issue 16): packed documents do not see each other, on tiny real
models (the starter Llama, a Hub-style Llama with LoRA, a GPT-2 whose positions are absolute), with SDPA and eager
attention; FlashAttention-2's one-row layout gives the same loss; and a run packed this way still learns, about
as well as the packing that lets documents see each other, measured on documents one at a time."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from studio.models.text import IGNORE, TextBackend, model_inputs, pack_documents
from test_text_backend import mixed_length_rows, rows, small_config, tiny_folder  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory, tiny_folder):  # noqa: F811
    """A tiny GPT-2 (learned absolute positions: it sees the position restart, not only the mask)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_folder)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    folder = tmp_path_factory.mktemp("hub") / "tiny-gpt2"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def packed_pair(first: str, second: str, separate: bool, handle, backend):
    """The two texts packed into one block by the backend's own dataset code, collated as in training."""
    config = small_config(text={"max_length": 64, "separate_documents": separate})
    data = backend.datasets(handle, {"train": [{"text": first}, {"text": second}]}, Path("."), config)["train"]
    assert len(data) == 1  # both in one block
    return backend.collate(handle, config)([data[0]])


def second_document_logits(handle, batch, second_length: int):
    import torch

    model = handle.parts.model
    model.eval()
    with torch.no_grad():
        return model(**model_inputs(model, batch)).logits[0, -second_length:]


MODELS = {"starter": ("starter-text", "scratch"), "llama-lora": (None, "lora"), "gpt2": (None, "full")}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("model", MODELS)
def test_packed_documents_do_not_attend_to_each_other(rows, tiny_folder, gpt2_folder, model,  # noqa: F811
                                                      attention):
    import torch

    backend = TextBackend()
    ref = {"starter": "starter-text", "llama-lora": str(tiny_folder), "gpt2": str(gpt2_folder)}[model]
    config = small_config(text={"max_length": 64, "attn_implementation": attention})
    handle = backend.load(ref, MODELS[model][1], config, rows["train"])
    assert handle.parts.model.config._attn_implementation == attention
    tokenizer = handle.parts.tokenizer
    second = "Mia found a red ball in the garden."
    second_length = len(tokenizer(second)["input_ids"]) + 1  # + end-of-sequence
    alone = backend.collate(handle, config)([{"input_ids": tokenizer(second)["input_ids"]
                                              + [tokenizer.eos_token_id]}])
    expected = second_document_logits(handle, alone, second_length)

    for separate in (True, False):
        one = second_document_logits(handle, packed_pair("Tom saw a dog.", second, separate, handle, backend),
                                     second_length)
        other = second_document_logits(handle, packed_pair("The old cat slept by the warm fire all day long.", second,
                                                           separate, handle, backend), second_length)
        if separate:  # document 2 is blind to document 1: the same logits whatever precedes it, as if alone
            torch.testing.assert_close(one, other, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(one, expected, atol=1e-5, rtol=1e-4)
        else:  # the packing that lets documents see each other: document 1 changes document 2's logits
            assert float((one - other).abs().max()) > 1e-3


def test_packed_blocks_restart_positions_and_learn_no_token_across_documents():
    documents = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], [11]]
    blocks = pack_documents(documents, 4, separate=True)
    assert [b["input_ids"] for b in blocks] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11]]
    # [4, 5] is cut by the block's end; its rest counts from 0 again in the next block
    assert [b["position_ids"] for b in blocks] == [[0, 1, 2, 0], [0, 0, 1, 2], [0, 1, 0]]
    assert [b["labels"] for b in blocks] == [[IGNORE, 2, 3, IGNORE], [IGNORE, IGNORE, 7, 8], [IGNORE, 10, IGNORE]]
    shared = pack_documents(documents, 4, separate=False)
    assert [b["input_ids"] for b in shared] == [b["input_ids"] for b in blocks]
    assert all(b["labels"] == b["input_ids"] and "position_ids" not in b for b in shared)


def test_flash_attention_layout_gives_the_same_loss(rows):
    """FlashAttention-2 reads packed documents from one row: ``model_inputs`` lays the rows end to end there. Fed
    to SDPA, that layout gives the same loss and logits as the rows (no token attends or is learned across rows)."""
    import torch

    backend = TextBackend()
    config = small_config(text={"max_length": 64})
    handle = backend.load("starter-text", "scratch", config, mixed_length_rows())
    data = backend.datasets(handle, {"train": mixed_length_rows()}, Path("."), config)["train"]
    batch = backend.collate(handle, config)([data[i] for i in range(len(data) - 3, len(data))])  # a short last row
    model = handle.parts.model
    model.eval()
    flash_like = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    flat = model_inputs(flash_like, batch, "labels")
    assert flat["input_ids"].shape == (1, batch["input_ids"].numel()) and "attention_mask" not in flat
    with torch.no_grad():
        rows_out = model(**model_inputs(model, batch, "labels"))
        flat_out = model(**flat)
    torch.testing.assert_close(flat_out.loss, rows_out.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flat_out.logits.view_as(rows_out.logits), rows_out.logits, atol=1e-4, rtol=1e-4)


def test_flash_attention_where_it_cannot_run_is_a_clear_error(rows):
    import importlib.util

    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("FlashAttention-2 can run here")
    config = small_config(text={"attn_implementation": "flash_attention_2"})
    with pytest.raises(ValueError, match="flash_attention_2' needs a CUDA GPU and the flash-attn package"):
        TextBackend().load("starter-text", "scratch", config, rows["train"])


def test_packing_documents_apart_learns_as_well_as_packing_them_together(rows):  # noqa: F811
    """The same starter, data and steps, packed both ways, trained by the studio's loop: the training loss falls
    with documents kept apart, and on held-out documents read one at a time (as they are generated: each from its
    own start) the model is at least as good as the one whose documents saw each other."""
    from studio.evaluation.metrics_text import perplexity
    from studio.training.config import TrainConfig
    from studio.training.loop import train_in_process

    backend, held_out = TextBackend(), {}
    one_at_a_time = small_config(text={"max_length": 64, "packing": False})
    for separate in (True, False):
        config = TrainConfig(learning_rate=3e-3, max_steps=40, warmup_steps=5, per_device_train_batch_size=8,
                             eval_steps=1000, save_steps=1000, seed=0,
                             text={"max_length": 64, "separate_documents": separate})
        handle = backend.load("starter-text", "scratch", config, rows["train"])
        documents = backend.datasets(handle, {"validation": rows["validation"]}, Path("."),
                                     one_at_a_time)["validation"]

        def held_out_loss() -> float:
            return perplexity(handle, documents, backend.collate(handle, one_at_a_time))["loss"]

        untrained = held_out_loss()
        result = train_in_process(backend, handle, rows, Path("."), config)
        losses = [h["value"] for h in result["history"] if h["name"] == "train_loss"]
        held_out[separate] = held_out_loss()
        print(f"\nseparate_documents={separate}: train loss {losses[0]:.3f} -> {losses[-1]:.3f}, held-out documents "
              f"{untrained:.3f} -> {held_out[separate]:.3f} nats/token")
        assert result["steps"] == 40 and sum(losses[-5:]) < 0.7 * sum(losses[:5])
        assert held_out[separate] < untrained - 1.0
    assert held_out[True] <= 1.03 * held_out[False]


def test_a_model_that_would_mix_packed_documents_is_refused(rows):  # noqa: F811
    """An attention implementation that ignores the restarting positions (plain causal attention, no mask) would
    let packed documents see each other; the backend finds out before building the data, and says what to set."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def causal_only(module, query, key, value, attention_mask, **kwargs):
        return sdpa_attention_forward(module, query, key, value, None, **kwargs)

    AttentionInterface.register("causal_only", causal_only)
    backend, config = TextBackend(), small_config(text={"max_length": 64})
    handle = backend.load("starter-text", "scratch", config, rows["train"])
    assert len(backend.datasets(handle, rows, Path("."), config)["train"]) > 0
    handle.parts.model.set_attn_implementation("causal_only")
    with pytest.raises(ValueError, match="'llama' models do not keep packed documents apart.*separate_documents=false"):
        backend.datasets(handle, rows, Path("."), config)
    shared = small_config(text={"max_length": 64, "separate_documents": False})
    assert len(backend.datasets(handle, rows, Path("."), shared)["train"]) > 0
    chats = [{"prompt": "Who is Mia?", "response": "A girl with a red ball."}] * 3  # nothing packed: nothing refused
    assert len(backend.datasets(handle, {"train": chats}, Path("."), config)["train"]) == 3


def test_plain_texts_and_conversations_packed_in_one_dataset_collate_together(rows):  # noqa: F811
    """text_format auto with plain-text rows and conversation rows: packed blocks and chat examples share batches;
    each chat example is one document of its own."""
    import torch

    backend, config = TextBackend(), small_config(text={"max_length": 64})
    handle = backend.load("starter-text", "scratch", config, rows["train"])
    mixed = [{"prompt": "Who is Mia?", "response": "A girl with a red ball."}] + rows["train"][:6]
    data = backend.datasets(handle, {"train": mixed}, Path("."), config)["train"]
    chat, packed = data[0], data[1]
    assert "position_ids" not in chat and "position_ids" in packed
    for items in ([chat, packed], [packed, chat]):
        batch = backend.collate(handle, config)(items)
        row = [n for n, item in enumerate(items) if item is chat][0]
        length = len(chat["input_ids"])
        assert batch["position_ids"][row, :length].tolist() == list(range(length))
        assert float(handle.module(batch).detach()) > 0
    assert torch.equal(backend.collate(handle, config)([chat])["input_ids"][0], torch.tensor(chat["input_ids"]))

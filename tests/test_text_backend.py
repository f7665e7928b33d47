"""The text backend: Hub-style folders through from_pretrained (LoRA / full / scratch), chat labels and
packing, seeded generation, save/load round trips, and the starter really learning the example stories.

No network: the "Hub model" is a tiny Llama saved with save_pretrained, loaded by the same code path."""

from __future__ import annotations

import collections
import math
import re
from pathlib import Path

import pytest

from studio.examples.text import make_corpus, vocabulary
from studio.models.text import (CHAT_TEMPLATE, IGNORE, ModelUnavailable, TextBackend, render_chat, row_messages,
                                train_tokenizer)
from studio.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
STORIES = ROOT / "assets" / "examples" / "stories.txt"


def story_rows(text: str, every: int = 10) -> dict[str, list[dict]]:
    """The paragraphs as manifest rows (as the importer splits one .txt file); every 10th to validation."""
    from studio.data.read_text import split_documents

    rows = [{"id": i, "split": "validation" if i % every == every - 1 else "train", "text": doc.strip(),
             "source": f"stories.txt#{i + 1}"} for i, doc in enumerate(split_documents(text, "blank_lines"))]
    return {split: [r for r in rows if r["split"] == split] for split in ("train", "validation")}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rows():
    return story_rows(make_corpus(size_kb=12, seed=3))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, rows):
    """A tiny Llama saved like a Hub checkpoint; its tokenizer has neither a pad token nor a chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer([r["text"] for r in rows["train"]], vocab_size=600)
    tokenizer.pad_token = None
    tokenizer.chat_template = None
    torch.manual_seed(1234)  # not the configs' seed: 'scratch' must not rebuild the same weights
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                                         eos_token_id=tokenizer.eos_token_id))
    folder = tmp_path_factory.mktemp("hub") / "tiny-llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def small_config(**changes) -> TrainConfig:
    base = {"text": {"max_length": 64}, "per_device_train_batch_size": 4, "seed": 0}
    return TrainConfig.model_validate({**base, **changes})


def first_batch(backend, handle, rows, config, size=4):
    data = backend.datasets(handle, rows, Path("."), config)["train"]
    return backend.collate(handle, config)([data[i] for i in range(size)])


def take_steps(handle, batch, steps=6, lr=1e-2) -> tuple[float, float]:
    import torch

    optimizer = torch.optim.AdamW(handle.trainable_parameters(), lr=lr)
    handle.module.train()
    losses = []
    for _ in range(steps):
        loss = handle.module(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    return losses[0], losses[-1]


def logits_of(handle, batch):
    import torch

    model = handle.parts["model"]
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.fixture
def recorded_calls(monkeypatch):
    """Every from_pretrained/from_config call's keyword arguments."""
    import transformers

    calls: list[tuple[str, dict]] = []
    for cls, name in [(transformers.AutoTokenizer, "from_pretrained"), (transformers.AutoConfig, "from_pretrained"),
                      (transformers.AutoModelForCausalLM, "from_pretrained"),
                      (transformers.AutoModelForCausalLM, "from_config")]:
        original = getattr(cls, name)

        def spy(*args, _original=original, _label=f"{cls.__name__}.{name}", **kwargs):
            calls.append((_label, kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, name, spy)
    return calls


# ----------------------------------------------------------------------------- 1. Hub-style models

@pytest.mark.parametrize("method", ["lora", "full", "scratch"])
def test_hub_style_folder_loads_trains_and_never_trusts_remote_code(tiny_folder, rows, recorded_calls, method):
    import torch
    from safetensors.torch import load_file

    backend, config = TextBackend(), small_config(gradient_checkpointing=method == "lora")
    handle = backend.load(str(tiny_folder), method, config)
    trainable, total = handle.parameter_counts()
    if method == "lora":
        assert 0 < trainable < total / 5
        assert all("lora_" in name for name, p in handle.module.named_parameters() if p.requires_grad)
    else:
        assert trainable == total
    tokenizer = handle.parts["tokenizer"]
    assert tokenizer.pad_token == tokenizer.eos_token  # no pad token: end-of-sequence stands in
    saved = load_file(str(tiny_folder / "model.safetensors"))["model.embed_tokens.weight"]
    embedding = handle.parts["model"].get_input_embeddings().weight.detach()
    assert torch.equal(embedding, saved) == (method != "scratch")  # scratch: same shape, fresh weights

    batch = first_batch(backend, handle, rows, config)
    before, after = take_steps(handle, batch, lr=1e-2 if method == "lora" else 3e-3)
    assert after < before - 0.1

    labels = {label for label, _ in recorded_calls}
    assert "AutoTokenizer.from_pretrained" in labels
    assert ("AutoModelForCausalLM.from_config" if method == "scratch" else "AutoModelForCausalLM.from_pretrained") \
        in labels
    assert all(kwargs.get("trust_remote_code") is False for _, kwargs in recorded_calls)
    assert all(kwargs.get("use_safetensors") is True for label, kwargs in recorded_calls
               if label == "AutoModelForCausalLM.from_pretrained")


def test_lora_adapter_saves_alone_and_loads_back_with_identical_logits(tiny_folder, rows, tmp_path):
    import torch

    from studio.models.registry import modality_of_folder

    backend, config = TextBackend(), small_config(lora={"target_modules": "auto", "lora_dropout": 0.1})
    handle = backend.load(str(tiny_folder), "lora", config)
    batch = first_batch(backend, handle, rows, config)
    take_steps(handle, batch)
    trained = logits_of(handle, batch)
    backend.save(handle, tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "studio_model.json"} <= files
    assert "model.safetensors" not in files  # the adapter alone
    assert modality_of_folder(tmp_path / "adapter") == "text"

    fresh = backend.load(str(tiny_folder), "lora", config)
    assert not torch.allclose(logits_of(fresh, batch), trained, atol=1e-4)
    backend.load_weights(fresh, tmp_path / "adapter")
    assert torch.allclose(logits_of(fresh, batch), trained, atol=1e-6)

    merged = backend.load(str(tmp_path / "adapter"), "full", config)  # the run's folder as a model reference
    assert torch.allclose(logits_of(merged, batch), trained, atol=1e-4)


def test_full_model_round_trip_and_its_folder_as_a_model_reference(tiny_folder, rows, tmp_path):
    import torch

    backend, config = TextBackend(), small_config()
    handle = backend.load(str(tiny_folder), "full", config)
    batch = first_batch(backend, handle, rows, config)
    take_steps(handle, batch, lr=3e-3)
    trained = logits_of(handle, batch)
    backend.save(handle, tmp_path / "full")
    assert (tmp_path / "full" / "model.safetensors").exists()

    fresh = backend.load(str(tiny_folder), "full", config)
    backend.load_weights(fresh, tmp_path / "full")
    assert torch.allclose(logits_of(fresh, batch), trained, atol=1e-6)
    again = backend.load(str(tmp_path / "full"), "lora", config)  # LoRA starts as the identity
    assert torch.allclose(logits_of(again, batch), trained, atol=1e-5)


def test_starter_is_scratch_only_and_its_saved_folder_fine_tunes(rows, tmp_path):
    import torch

    from studio.models.registry import modality_of_folder

    backend, config = TextBackend(), small_config()
    for method in ("lora", "full"):
        with pytest.raises(ValueError, match="starter models are trained from scratch"):
            backend.load("starter-text", method, config, rows["train"])
    starter = backend.load("starter-text", "scratch", config, rows["train"])
    tokenizer = starter.parts["tokenizer"]
    assert tokenizer.chat_template == CHAT_TEMPLATE and tokenizer.pad_token == "<pad>"
    assert 300 < len(tokenizer) <= 3000
    assert starter.parts["model"].config.max_position_embeddings >= config.text.max_length
    batch = first_batch(backend, starter, rows, config)
    take_steps(starter, batch, steps=2, lr=1e-3)
    backend.save(starter, tmp_path / "starter")
    assert modality_of_folder(tmp_path / "starter") == "text"
    for method in ("full", "lora"):
        tuned = backend.load(str(tmp_path / "starter"), method, config)
        assert tuned.parts["starter"] is True  # generation keeps the starter's defaults
        assert torch.allclose(logits_of(tuned, batch), logits_of(starter, batch), atol=1e-5)
        before, after = take_steps(tuned, batch, lr=1e-2)
        assert after < before


def test_a_hub_id_missing_from_the_cache_offline_says_so(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelUnavailable, match="not in the local Hugging Face cache.*HF_HUB_OFFLINE.*starter-text"):
        TextBackend().load("some-org/not-downloaded-model", "lora", small_config())
    with pytest.raises(FileNotFoundError, match="no model folder"):
        TextBackend().load(str(tmp_path / "missing" / "model"), "full", small_config())


# ----------------------------------------------------------------------------- 2. chat labels and packing

CHATS = [
    {"split": "train", "source": "chat.jsonl#1", "prompt": "Who is Mia?", "response": "Mia is a kind cat."},
    {"split": "train", "source": "chat.jsonl#2", "prompt": "Where does Leo live?",
     "response": "Leo lives in a blue house near the forest."},
    {"split": "train", "source": "chat.jsonl#3", "messages": [
        {"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Green."}, {"role": "user", "content": "Another one?"},
        {"role": "assistant", "content": "Purple, like a plum."}]},
]


@pytest.mark.parametrize("model", ["starter", "tiny"])
def test_chat_labels_are_ignored_exactly_on_the_prompt(rows, tiny_folder, model):
    backend, config = TextBackend(), small_config(text={"max_length": 128})
    ref, method = ("starter-text", "scratch") if model == "starter" else (str(tiny_folder), "full")
    handle = backend.load(ref, method, config, rows["train"] + CHATS)
    tokenizer = handle.parts["tokenizer"]
    examples = backend.datasets(handle, {"train": CHATS}, Path("."), config)["train"]
    assert len(examples) == 3
    for row, example in zip(CHATS[:2], examples):
        prompt = render_chat(tokenizer, [{"role": "user", "content": row["prompt"]}], add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        n = len(prompt_ids)
        assert example["input_ids"][:n] == prompt_ids
        assert example["labels"][:n] == [IGNORE] * n
        assert example["labels"][n:] == example["input_ids"][n:]
        assert tokenizer.decode(example["labels"][n:]).startswith(row["response"] + tokenizer.eos_token)
    learned = [t for t in examples[2]["labels"] if t != IGNORE]
    text = tokenizer.decode(learned)
    assert "Green." in text and "Purple, like a plum." in text
    assert "colour" not in text and "Another" not in text and "briefly" not in text

    everything = small_config(text={"max_length": 128, "response_only_loss": False})
    for example in backend.datasets(handle, {"train": CHATS}, Path("."), everything)["train"]:
        assert example["labels"] == example["input_ids"]
    running = small_config(text={"max_length": 512, "text_format": "raw", "packing": True})
    (stream,) = backend.datasets(handle, {"train": CHATS}, Path("."), running)["train"]  # one packed block
    assert [t for t, n in zip(stream["input_ids"], stream["position_ids"]) if n] == \
        [t for t in stream["labels"] if t != IGNORE]  # all learned but each conversation's first token
    assert tokenizer.decode(stream["input_ids"]) == "".join(render_chat(tokenizer, row_messages(r)) for r in CHATS)

    batch = backend.collate(handle, config)([examples[0], examples[2]])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert bool(((batch["attention_mask"] == 0) <= (batch["labels"] == IGNORE)).all())  # padding never learned
    assert float(handle.module(batch).detach()) > 0


def mixed_length_rows(count=60):
    import random

    rng = random.Random(1)
    words = sorted(vocabulary(make_corpus(size_kb=4, seed=5)))
    return [{"split": "train", "source": f"doc#{i}",
             "text": " ".join(rng.choice(words) for _ in range(rng.choice([3, 8, 20, 60, 120])))}
            for i in range(count)]


def test_packing_makes_full_blocks_and_more_useful_tokens_per_batch(rows):
    backend = TextBackend()
    docs = mixed_length_rows()
    packed_config = small_config(text={"max_length": 64, "packing": True})
    padded_config = small_config(text={"max_length": 64, "packing": False})
    handle = backend.load("starter-text", "scratch", packed_config, docs)
    tokenizer = handle.parts["tokenizer"]
    all_tokens = sum(len(tokenizer(d["text"])["input_ids"]) + 1 for d in docs)  # + end-of-sequence

    packed = backend.datasets(handle, {"train": docs}, Path("."), packed_config)["train"]
    lengths = [len(e["input_ids"]) for e in packed]
    assert set(lengths[:-1]) == {64} and 1 < lengths[-1] <= 64
    assert sum(lengths) == all_tokens  # nothing cut away
    assert packed[0]["input_ids"][0] == tokenizer.bos_token_id
    assert tokenizer.eos_token_id in packed[0]["input_ids"]

    padded = backend.datasets(handle, {"train": docs}, Path("."), padded_config)["train"]
    assert len(padded) == len(docs) and max(len(e["input_ids"]) for e in padded) == 64

    def useful_per_batch(dataset, size=8):
        collate = backend.collate(handle, packed_config)
        batches = [collate([dataset[j] for j in range(i, min(i + size, len(dataset)))])
                   for i in range(0, len(dataset), size)]
        return sum(int(b["attention_mask"].sum()) for b in batches) / len(batches), \
            sum(float(b["attention_mask"].float().mean()) for b in batches) / len(batches)

    packed_tokens, packed_share = useful_per_batch(packed)
    padded_tokens, padded_share = useful_per_batch(padded)
    assert packed_tokens > 1.5 * padded_tokens
    assert packed_share > 0.95 > padded_share


def test_empty_validation_gives_an_empty_dataset(rows):
    backend, config = TextBackend(), small_config()
    handle = backend.load("starter-text", "scratch", config, rows["train"])
    datasets = backend.datasets(handle, {"train": rows["train"]}, Path("."), config)
    assert len(datasets["validation"]) == 0 and len(datasets["train"]) > 0
    with pytest.raises(ValueError, match="chat"):
        backend.datasets(handle, rows, Path("."), small_config(text={"text_format": "chat"}))


# ----------------------------------------------------------------------------- 3. generation

def test_generation_is_seeded(rows, tmp_path):
    backend, config = TextBackend(), small_config()
    handle = backend.load("starter-text", "scratch", config, rows["train"])
    settings = {"max_new_tokens": 12, "temperature": 1.0}
    first = backend.generate(handle, ["Once upon a time", "Once upon a time", "Once upon a time"], [7, 7, 8],
                             settings, tmp_path)
    assert [(s.prompt, s.seed) for s in first] == [("Once upon a time", 7), ("Once upon a time", 7),
                                                   ("Once upon a time", 8)]
    assert first[0].text == first[1].text != first[2].text
    assert all(s.text and s.seconds > 0 and s.path is None for s in first)
    again = backend.generate(handle, ["Once upon a time"], [7], settings, tmp_path)
    assert again[0].text == first[0].text

    greedy = backend.generate(handle, ["Mia"], [1, 2], {"max_new_tokens": 8, "temperature": 0}, tmp_path)
    assert len(greedy) == 2 and greedy[0].text == greedy[1].text
    chat = backend.generate(handle, ["Who is Mia?"], [1], {"max_new_tokens": 5, "chat_template": True}, tmp_path)
    assert len(chat) == 1 and not chat[0].text.startswith("assistant")
    assert handle.module.training  # generation leaves the module as it found it


# ----------------------------------------------------------------------------- 4. the starter learns

def test_example_corpus_is_deterministic_and_shipped():
    text = make_corpus(seed=0)
    assert STORIES.read_text(encoding="utf-8") == text
    assert 95_000 < len(text.encode()) < 115_000
    assert make_corpus(size_kb=5, seed=1) != make_corpus(size_kb=5, seed=2)
    assert 150 < len(vocabulary(text)) < 600
    assert len(re.split(r"\n\s*\n", text.strip())) > 150


@pytest.mark.slow  # trains the starter until it learns (minutes)
def test_the_starter_learns_the_stories():
    """Trained with the studio's loop for well under a minute of CPU time, the starter beats a unigram model
    by far on held-out stories and writes in the corpus's words."""
    import torch

    from studio.training.loop import train_in_process

    text = STORIES.read_text(encoding="utf-8")
    by_split = story_rows(text)
    config = TrainConfig(learning_rate=3e-3, max_steps=150, warmup_steps=10, per_device_train_batch_size=16,
                         eval_steps=75, save_steps=1000, seed=0, text={"max_length": 128, "packing": True})
    backend = TextBackend()
    handle = backend.load("starter-text", "scratch", config, by_split["train"])
    data = backend.datasets(handle, by_split, Path("."), config)
    collate = backend.collate(handle, config)

    def targets(dataset) -> list[int]:  # the tokens a causal LM predicts: every label after the first
        return [t for example in dataset for t in example["labels"][1:] if t != IGNORE]

    vocab_size = len(handle.parts["tokenizer"])
    counts = collections.Counter(targets(data["train"]))
    seen = sum(counts.values())
    held_out = targets(data["validation"])
    unigram = math.exp(-sum(math.log((counts[t] + 1) / (seen + vocab_size)) for t in held_out) / len(held_out))

    def perplexity() -> float:
        handle.module.eval()
        nll, n = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(data["validation"]), 16):
                batch = collate([data["validation"][j] for j in range(i, min(i + 16, len(data["validation"])))])
                tokens = int((batch["labels"][:, 1:] != IGNORE).sum())
                nll += float(handle.module(batch)) * tokens
                n += tokens
        handle.module.train()
        assert n == len(held_out)
        return math.exp(nll / n)

    untrained = perplexity()
    result = train_in_process(backend, handle, by_split, ROOT, config)
    trained = perplexity()
    print(f"\nvalidation perplexity: untrained {untrained:.1f}, unigram {unigram:.1f}, starter {trained:.2f} "
          f"after {result['steps']} steps")
    assert result["steps"] == 150
    val_losses = [h["value"] for h in result["history"] if h["name"] == "val_loss"]
    assert len(val_losses) == 3 and val_losses[-1] < val_losses[0]
    assert trained <= 0.5 * unigram

    known = vocabulary("\n".join(r["text"] for r in by_split["train"]))
    samples = backend.generate(handle, ["Once upon a time", "One sunny day,", "Mia"], [1, 2, 3],
                               {"max_new_tokens": 48, "temperature": 0.8}, ROOT)
    for sample in samples:
        words = re.findall(r"[a-z]+", sample.text.lower())
        print(repr(sample.text))
        assert len(words) >= 10
        assert sum(w in known for w in words) / len(words) >= 0.9


def test_qlora_without_cuda_and_bitsandbytes_is_a_clear_error(tiny_folder):
    config = TrainConfig()
    config.lora.load_in_4bit = True
    with pytest.raises(ValueError, match="QLoRA .* needs a CUDA GPU and the bitsandbytes package"):
        TextBackend().load(str(tiny_folder), "lora", config)

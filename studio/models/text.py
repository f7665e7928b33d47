"""Text: causal language models from transformers (a Hub id or a local folder), LoRA through PEFT, and the
``starter-text`` model trained from scratch (a byte-level BPE tokenizer fitted on the training rows and a
tiny Llama).

The backend of two families (``studio.models.registry``): ``causal-lm`` and ``starter-text``.
``handle.module`` returns the causal-LM loss of a batch (``input_ids``, ``attention_mask``, ``labels`` with
-100 where nothing is learned); ``handle.parts`` (``TextParts``) holds the tokenizer, the transformers or PEFT
model, and whether the weights go back to the starter (which changes generation defaults).

torch, transformers, peft and tokenizers are imported inside the functions that need them.
"""

from __future__ import annotations

import copy
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.models.base import BackendConfig, Handle, Parts, Sample, pairs
from studio.models.common import adapter_base, load_adapter, merge_adapter, prologue, target_option, \
    write_marker, write_pretrained
from studio.models.preference import SCORE, collate_for, datasets_for
from studio.models.registry import STARTER_TEXT, family_for

STARTER = STARTER_TEXT.starter
PAD, BOS, EOS = "<pad>", "<s>", "</s>"
STARTER_VOCAB = 3000  # an upper bound: BPE stops merging once the training text has no pair seen twice
# Small enough to learn a 100 KB corpus in about a minute on two CPU cores.
STARTER_SHAPE = {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 3, "num_attention_heads": 4}
IGNORE = -100
CHAT_NEEDS_CONVERSATIONS = ("text_format 'chat' needs prompt/response or messages rows; this dataset has plain text "
                            "(use 'raw' or 'auto')")
FLASH_ATTENTION_NEEDS = ("attn_implementation 'flash_attention_2' needs a CUDA GPU and the flash-attn package (pip "
                         "install flash-attn); pick 'sdpa', which packs documents apart just as well")
DOCUMENTS_MIX = ("'{model_type}' models do not keep packed documents apart (a packed document's logits change with the "
                 "one before it): set separate_documents=false to pack documents that see each other, or packing=false")
LIGER_NEEDS = ("Liger kernels (liger_kernels) need a CUDA GPU and the liger-kernel package (pip install liger-kernel); "
               "turn liger_kernels off")
QLORA_NEEDS = ("QLoRA (load_in_4bit) needs a CUDA GPU and the bitsandbytes package (pip install bitsandbytes); turn "
               "load_in_4bit off to train LoRA in full precision")

# Role name on one line, the content on the next, each turn closed by the end-of-sequence token.
# (transformers renders with trim_blocks, so every newline is written as an expression.)
CHAT_TEMPLATE = ("{{ bos_token or '' }}{% for message in messages %}"
                 "{{ message['role'] + '\n' + message['content'] + (eos_token or '') + '\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ 'assistant\n' }}{% endif %}")

# Model types whose attention projections have the names of the family's LoRA preset (q_proj, ...); GPT-2 has its
# own; LoRA 'auto' adapts every linear layer of any other.
ATTENTION_NAMED_LIKE_LLAMA = ("llama", "qwen2", "qwen3", "mistral", "mixtral", "smollm3", "gemma", "gemma2", "olmo",
                              "olmo2")
OTHER_ATTENTION = {"gpt2": ["c_attn"]}


class ModelUnavailable(OSError):
    """A Hub model that is neither in the local cache nor downloadable (offline)."""


@dataclass(kw_only=True)
class TextParts(Parts):
    tokenizer: Any
    model: Any  # the transformers (or PEFT) model inside ``handle.module``
    documents_apart: bool | None = None  # keeps_documents_apart, when asked at load (None: ask when packing)

    def processors(self) -> list:
        return [self.tokenizer]


# ----------------------------------------------------------------------------- torch pieces

@functools.cache
def _loss_module_class():
    import torch

    class CausalLMLoss(torch.nn.Module):
        """``forward(batch) -> loss``: the causal-LM loss of a transformers (or PEFT) model; asked for scores
        (``SCORE`` in the batch), each example's summed log-probability of its learned tokens and their count."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, batch: dict):
            if SCORE in batch:
                return answer_log_probabilities(self.model, batch)
            return self.model(**model_inputs(self.model, batch, "labels")).loss

    CausalLMLoss.__module__, CausalLMLoss.__qualname__ = __name__, "CausalLMLoss"
    return CausalLMLoss


def model_inputs(model, batch: dict, *also: str) -> dict:
    """The model's keyword arguments for a forward pass over ``batch`` (and the entries named in ``also``), without a
    key/value cache (nothing is generated). Packed documents kept apart come with ``position_ids`` and without the
    padding mask: transformers then reads a new document wherever the positions restart and keeps attention within
    each (it does so only with neither a 2D mask nor a cache; the padding, at a row's end, is a document of its own
    that nothing learns from). FlashAttention-2 reads packed documents from a single row only, so there the rows are
    laid end to end: each row starts a document and no label crosses rows."""
    names = ("input_ids", "position_ids") if "position_ids" in batch else ("input_ids", "attention_mask")
    inputs = {name: batch.get(name) for name in (*names, *also)}
    if "position_ids" in batch and "flash" in str(getattr(model.config, "_attn_implementation", "")):
        inputs = {name: value.reshape(1, -1) for name, value in inputs.items()}
    return {**inputs, "use_cache": False}


def keeps_documents_apart(model) -> bool:
    """Whether ``model`` keeps packed documents apart as ``model_inputs`` asks it to: a second document's logits must
    not change with the first's tokens. transformers' models that build their mask from the positions do; a model or
    attention implementation that ignores them would mix documents without a word."""
    import torch

    device = next(model.parameters()).device
    positions = torch.tensor([[0, 1, 2, 0, 1, 2]], device=device)
    was_training = model.training
    model.eval()  # no dropout: the same document must give the same logits
    try:
        with torch.no_grad():
            second = [model(**model_inputs(model, {"input_ids": torch.tensor([first + [6, 7, 8]], device=device),
                                                   "position_ids": positions})).logits[0, 3:].float()
                      for first in ([3, 4, 5], [9, 10, 11])]
    finally:
        model.train(was_training)
    return bool((second[0] - second[1]).abs().max() <= 1e-4 + 1e-3 * second[0].abs().max())


def answer_log_probabilities(model, batch: dict):
    """(summed log-probability of each example's learned tokens (labels not -100), their count): what a
    preference objective compares (TRL's ``logps``)."""
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                   use_cache=False).logits[:, :-1].float()  # as in training: no key/value cache kept
    labels = batch["labels"][:, 1:]
    learned = labels != IGNORE
    chosen = logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return (chosen * learned).sum(-1), learned.sum(-1)


def __getattr__(name: str):  # the torch class is defined on first use, and stays picklable by name
    if name == "CausalLMLoss":
        return _loss_module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TokenDataset:
    """Map-style dataset of ``{"input_ids": [...], "labels": [...]}`` examples (lists of ints)."""

    def __init__(self, examples: list[dict], skipped: int = 0):
        self.examples = examples
        self.skipped = skipped  # examples left out: nothing to learn after truncation

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        return self.examples[index]


class PadCollator:
    """Pads a list of examples to the longest: ``input_ids`` with the pad token, ``attention_mask`` 0 and
    ``labels`` -100 on the padding; with packed examples, ``position_ids`` for all (each unpacked example one
    document), counting from 0 again on the padding (a document of its own)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict]) -> dict:
        import torch

        width = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
        for row, item in enumerate(items):
            length = len(item["input_ids"])
            input_ids[row, :length] = torch.as_tensor(item["input_ids"], dtype=torch.long)
            attention_mask[row, :length] = 1
            labels[row, :length] = torch.as_tensor(item.get("labels", item["input_ids"]), dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if any("position_ids" in item for item in items):  # an example without them is one document (a chat)
            batch["position_ids"] = torch.stack([torch.as_tensor(
                item.get("position_ids", list(range(len(item["input_ids"])))) + list(
                    range(width - len(item["input_ids"]))), dtype=torch.long) for item in items])
        return batch


def mismatched_answer(prompt_item: dict, answer_item: dict) -> dict:
    """``prompt_item``'s prompt (its tokens before the first learned one) with ``answer_item``'s answer: KTO's
    estimate of the KL term compares the model on such mismatched pairs."""
    def answer_start(item):
        return next((n for n, label in enumerate(item["labels"]) if label != IGNORE), len(item["labels"]))

    prompt, answer = answer_start(prompt_item), answer_start(answer_item)
    return {"input_ids": list(prompt_item["input_ids"][:prompt]) + list(answer_item["input_ids"][answer:]),
            "labels": [IGNORE] * prompt + list(answer_item["labels"][answer:])}


# ----------------------------------------------------------------------------- the starter

def row_messages(row: dict) -> list[dict] | None:
    """A manifest row's conversation: its ``messages``, or ``prompt``/``response`` as two turns."""
    if row.get("messages") is not None:
        return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    if row.get("prompt") is not None:
        return [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row.get("response") or ""}]
    return None


def _tokenizer_texts(rows: list[dict]) -> list[str]:
    texts = []
    for row in rows:
        messages = row_messages(row)
        if messages is None:
            texts.append(row.get("text") or "")
        else:
            texts.append("".join(f"{m['role']}\n{m['content']}\n" for m in messages))
    return [t for t in texts if t]


def train_tokenizer(texts: list[str], vocab_size: int = STARTER_VOCAB):
    """A byte-level BPE tokenizer fitted on ``texts`` (every byte stays encodable), with pad/bos/eos and the
    studio's chat template; it puts ``<s>`` before every text it encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[PAD, BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer)
    core.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                        special_tokens=[(BOS, core.token_to_id(BOS))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_starter(tokenizer, max_length: int):
    """A tiny Llama for ``tokenizer``, randomly initialised (seed torch before calling)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    positions = max(512, max_length)
    tokenizer.model_max_length = positions
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=positions, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, num_key_value_heads=STARTER_SHAPE["num_attention_heads"],
                         **STARTER_SHAPE)
    return LlamaForCausalLM(config)


# ----------------------------------------------------------------------------- loading

def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or "\\" in ref or ref.count("/") > 1


def _unavailable(ref: str, error: Exception) -> Exception:
    """The clear error for a Hub id that is not cached while the Hub cannot be reached; else ``error``."""
    try:
        from huggingface_hub import is_offline_mode, try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(ref, "config.json"), str)
        offline = is_offline_mode()
    except Exception:  # noqa: BLE001 - an odd id: let the original error speak
        return error
    words = str(error).lower()
    if cached or not (offline or "connect" in words or "offline" in words):
        return error
    return ModelUnavailable(
        f"'{ref}' is not in the local Hugging Face cache and the Hub cannot be reached"
        f"{' (HF_HUB_OFFLINE=1 is set)' if offline else ' (no internet connection)'}. Download it once where the "
        f"Hub is reachable (`hf download {ref}`, with HF_HUB_OFFLINE unset), pick a local model folder, or use "
        f"'{STARTER}', which is built here and works offline.")


def _dtype(config, method: str):
    import torch

    if method == "lora" and torch.cuda.is_available() and not config.use_cpu:  # frozen base in half precision
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.mixed_precision, torch.float32)
    return torch.float32


def _quantization(config, method: str) -> dict:
    """from_pretrained arguments for QLoRA (4-bit NF4 base), or none. Asking for it without a CUDA GPU and
    bitsandbytes is a clear error rather than a silent full-precision run."""
    if method != "lora" or not config.lora.load_in_4bit:
        return {}
    import importlib.util

    import torch

    if not torch.cuda.is_available() or config.use_cpu or importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(QLORA_NEEDS)
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if config.mixed_precision == "bf16" else torch.float16
    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                      bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute),
            "device_map": {"": torch.cuda.current_device()}}


def _from_pretrained(ref: str, method: str, config) -> tuple[Any, Any]:
    """(tokenizer, model) for a Hub id or a local folder (ours or any transformers causal LM).
    A LoRA run's folder comes back as its base with the adapter merged in."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = Path(ref).expanduser()
    local = folder.is_dir()
    if not local and _looks_like_path(ref):
        raise FileNotFoundError(f"no model folder at '{ref}'")
    source = str(folder) if local else ref
    try:
        base = adapter_base(folder, ref) if local else None
        # An adapter folder as PEFT saves it has no tokenizer: its base's is the one.
        own_tokenizer = not base or any(folder.glob("tokenizer*"))
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False) if own_tokenizer else None
        if base:
            base_tokenizer, model = _from_pretrained(base, "full", config)
            tokenizer = tokenizer or base_tokenizer
            model = merge_adapter(model, folder)
            if method == "scratch":
                model = AutoModelForCausalLM.from_config(model.config, trust_remote_code=False)
        elif method == "scratch":
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source, trust_remote_code=False),
                                                     trust_remote_code=False)
        else:
            model = AutoModelForCausalLM.from_pretrained(source, trust_remote_code=False, use_safetensors=True,
                                                         dtype=_dtype(config, method),
                                                         **_quantization(config, method))
    except OSError as error:
        if local:
            raise
        raise _unavailable(ref, error) from error
    return tokenizer, model


def flash_attention_missing(config) -> bool:
    """FlashAttention-2 was asked for where it cannot run: no CUDA GPU (or the run is on the CPU), or no flash-attn."""
    import importlib.util

    if config.text.attn_implementation != "flash_attention_2":
        return False
    import torch

    return config.use_cpu or not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None


def use_attention(model, config) -> None:
    """The attention implementation asked for (``attn_implementation``); 'auto' keeps what transformers chose."""
    if flash_attention_missing(config):
        raise ValueError(FLASH_ATTENTION_NEEDS)
    if config.text.attn_implementation != "auto":
        model.set_attn_implementation(config.text.attn_implementation)


def liger_kernels_missing(config) -> bool:
    """Whether the run asks for Liger kernels where they cannot run: they are Triton kernels for CUDA."""
    import importlib.util

    import torch

    return config.liger_kernels and (config.use_cpu or not torch.cuda.is_available()
                                     or importlib.util.find_spec("liger_kernel") is None)


def use_liger_kernels(model, config) -> None:
    """liger-kernel's fused RMSNorm, RoPE, SwiGLU and linear + cross-entropy (the logits are never materialised)
    patched into ``model`` before LoRA wraps it; Llama-family models only (those whose layers bear Llama's names)."""
    if not config.liger_kernels:
        return
    if liger_kernels_missing(config):
        raise ValueError(LIGER_NEEDS)
    model_type = model.config.model_type
    if model_type not in ATTENTION_NAMED_LIKE_LLAMA:
        raise ValueError(f"liger_kernels is for Llama-family models ({', '.join(ATTENTION_NAMED_LIKE_LLAMA)}); this "
                         f"model is '{model_type}': turn liger_kernels off")
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(model=model)


def lora_targets(model, spec: str, preset: tuple[str, ...]):
    """'auto' → the family's ``preset`` (attention projections) for Llama-like models, GPT-2's own, else every
    linear layer; otherwise 'all-linear' or the names given."""
    option = target_option(spec)
    if option != "auto":
        return option
    model_type = getattr(model.config, "model_type", "")
    if model_type in OTHER_ATTENTION:
        return OTHER_ATTENTION[model_type]
    return list(preset) if model_type in ATTENTION_NAMED_LIKE_LLAMA else "all-linear"


# ----------------------------------------------------------------------------- turning rows into tokens

def _documents_ids(tokenizer, texts: list[str], rendered: bool = False, chunk: int = 1000) -> list[list[int]]:
    """Each document's tokens (tokenised in batches), ending with end-of-sequence; a rendered chat is left as
    its template wrote it (special tokens and turn ends included)."""
    eos = tokenizer.eos_token_id
    documents = []
    for start in range(0, len(texts), chunk):
        for ids in tokenizer(texts[start:start + chunk], add_special_tokens=not rendered, verbose=False)["input_ids"]:
            if not rendered and eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
            documents.append(ids)
    return documents


def pack_documents(documents: list[list[int]], max_length: int, separate: bool) -> list[dict]:
    """The documents as one stream cut into blocks of ``max_length`` tokens (only the last may be shorter).
    ``separate``: each block also has ``position_ids`` that restart at every document and at the block's start
    (where a document cut by the block before goes on), which keeps attention within each document
    (``model_inputs``); the first token of each document is not learned, since what precedes it is another document
    (as transformers' DataCollatorWithFlattening does)."""
    stream = [token for doc in documents for token in doc]
    starts = range(0, len(stream), max_length)
    if not separate:
        return [{"input_ids": block, "labels": list(block)} for block in (stream[i:i + max_length] for i in starts)
                if len(block) > 1]
    in_document = [n for doc in documents for n in range(len(doc))]
    examples = []
    for start in starts:
        block, counted = stream[start:start + max_length], in_document[start:start + max_length]
        # The block's first document may have begun in the block before: it counts from 0 here too.
        second = next((k for k in range(1, len(counted)) if counted[k] == 0), len(counted))
        positions = list(range(second)) + counted[second:]
        if len(block) > 1:
            examples.append({"input_ids": block, "position_ids": positions,
                             "labels": [IGNORE if n == 0 else token for token, n in zip(block, positions)]})
    return examples


def _chat_template_arg(tokenizer):
    return None if tokenizer.chat_template else CHAT_TEMPLATE


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         chat_template=_chat_template_arg(tokenizer))


def _response_spans(tokenizer, messages: list[dict], full: str) -> list[tuple[int, int]]:
    """Character spans of ``full`` holding the assistant turns (with what closes them): the text between
    the conversation up to a turn with the generation prompt, and up to the end of that turn."""
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        span = None
        try:
            before = render_chat(tokenizer, messages[:index], add_generation_prompt=True) if index else ""
            upto = render_chat(tokenizer, messages[:index + 1])
            if index and full.startswith(upto) and upto.startswith(before):
                span = (len(before), len(upto))
        except Exception:  # noqa: BLE001 - templates that refuse partial conversations: find the content
            pass
        if span is None:
            start = full.find(message["content"], spans[-1][1] if spans else 0)
            if start < 0:
                continue
            span = (start, start + len(message["content"]))
        spans.append(span)
    return spans


def chat_example(tokenizer, messages: list[dict], response_only: bool, max_length: int) -> dict:
    """``input_ids`` of the rendered conversation and ``labels``: -100 outside the assistant turns when
    ``response_only``."""
    full = render_chat(tokenizer, messages)
    spans = _response_spans(tokenizer, messages, full) if response_only else [(0, len(full))]
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        ids = encoded["input_ids"]
        labels = [token if any(s <= start < e for s, e in spans) else IGNORE
                  for token, (start, _end) in zip(ids, encoded["offset_mapping"])]
    else:  # no offsets: tokenise the pieces between the span edges one by one
        edges = sorted({0, len(full), *[edge for span in spans for edge in span]})
        ids, labels = [], []
        for start, end in zip(edges, edges[1:]):
            piece = tokenizer(full[start:end], add_special_tokens=False, verbose=False)["input_ids"]
            learn = any(s <= start < e for s, e in spans)
            ids += piece
            labels += piece if learn else [IGNORE] * len(piece)
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


def _watchers(tokenizer, number: int, on_text, should_stop) -> dict:
    """A streamer that hands ``on_text(number, text so far)`` each new token's text, and a stopping criterion
    that ends generation when ``should_stop()`` says so (for cancelling); either may be absent."""
    import torch
    from transformers import StoppingCriteria
    from transformers.generation.streamers import BaseStreamer

    class TextSoFar(BaseStreamer):
        def __init__(self):
            self.ids: list[int] = []
            self.prompt_seen = False

        def put(self, value):
            if not self.prompt_seen:  # generate hands over the prompt first
                self.prompt_seen = True
                return
            self.ids += value.reshape(-1).tolist()
            on_text(number, tokenizer.decode(self.ids, skip_special_tokens=True))

        def end(self):
            pass

    class StopWhenAsked(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), bool(should_stop()), dtype=torch.bool, device=input_ids.device)

    return {"streamer": TextSoFar() if callable(on_text) else None,
            "stopping": [StopWhenAsked()] if callable(should_stop) else []}


# ----------------------------------------------------------------------------- the backend

class TextBackend:
    modality = "text"

    def load(self, model_ref: str, method: str, config: BackendConfig,
             train_rows: list[dict] | None = None) -> Handle:
        family = family_for(model_ref, self.modality)
        prologue(family, model_ref, method, config)
        if model_ref == STARTER:
            tokenizer = train_tokenizer(_tokenizer_texts(train_rows or []))
            model = build_starter(tokenizer, config.text.max_length)
        else:
            tokenizer, model = _from_pretrained(model_ref, method, config)
        use_attention(model, config)
        # Liger's kernels run on a GPU only, and the model is still on the CPU until the loop moves it: the check that
        # packed documents stay apart (a forward pass) is made on the plain model first (the kernels leave the
        # attention, and so the documents' separation, as it was).
        apart = keeps_documents_apart(model) if config.liger_kernels and not liger_kernels_missing(config) else None
        use_liger_kernels(model, config)
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(f"the tokenizer of '{model_ref}' has neither a pad nor an end-of-sequence token")
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        if config.gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        if method == "lora":
            from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

            lora = config.lora
            if lora.load_in_4bit:  # QLoRA: norms in fp32, inputs require grad, optional checkpointing
                model = prepare_model_for_kbit_training(model, config.gradient_checkpointing)
            model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.lora_alpha,
                                                     lora_dropout=lora.lora_dropout, task_type="CAUSAL_LM",
                                                     target_modules=lora_targets(model, lora.target_modules,
                                                                                 family.lora_targets)))
        else:
            for parameter in model.parameters():
                parameter.requires_grad_(True)
        module = _loss_module_class()(model)
        # Weights that go back to the starter keep its generation defaults (no chat template).
        parts = TextParts(family=family.name, starter=bool(family.starter), tokenizer=tokenizer, model=model,
                          documents_apart=apart)
        return Handle(modality=self.modality, model_ref=model_ref, method=method, module=module, parts=parts)

    # -- data

    def datasets(self, handle: Handle, rows: dict[str, list[dict]], root: Path, config) -> dict[str, Any]:
        tokenizer = handle.parts.tokenizer
        if config.objective != "sft":  # one conversation per row, answer learned: what is scored
            return datasets_for(config.objective, rows, lambda given, split: TokenDataset(
                [chat_example(tokenizer, row_messages(row), True, config.text.max_length) for row in given]))
        model = handle.parts.model

        @functools.cache
        def check_documents_apart() -> None:  # asked once, and only where documents are packed
            apart = handle.parts.documents_apart
            if not (keeps_documents_apart(model) if apart is None else apart):
                raise ValueError(DOCUMENTS_MIX.format(model_type=getattr(model.config, "model_type", handle.model_ref)))

        return {split: self._dataset(tokenizer, rows.get(split) or [], config, check_documents_apart)
                for split in ("train", "validation")}

    def _dataset(self, tokenizer, rows: list[dict], config, check_documents_apart) -> TokenDataset:
        options = config.text
        max_length = options.max_length
        texts: list[str] = []
        conversations: list[str] = []
        examples: list[dict] = []
        for row in rows:
            messages = row_messages(row)
            if messages is None:
                if options.text_format == "chat":
                    raise ValueError(CHAT_NEEDS_CONVERSATIONS)
                texts.append(row.get("text") or "")
            elif options.text_format == "raw":  # the whole conversation is learned as running text
                conversations.append(render_chat(tokenizer, messages))
            else:
                examples.append(chat_example(tokenizer, messages, options.response_only_loss, max_length))
        documents = _documents_ids(tokenizer, texts) + _documents_ids(tokenizer, conversations, rendered=True)
        if options.packing:  # one stream cut into full blocks; only the last may be shorter
            if documents and options.separate_documents:
                check_documents_apart()
            examples += pack_documents(documents, max_length, options.separate_documents)
        else:
            examples += [{"input_ids": doc[:max_length], "labels": doc[:max_length]} for doc in documents]
        useful = [e for e in examples if any(label != IGNORE for label in e["labels"][1:])]
        return TokenDataset(useful, skipped=len(examples) - len(useful))

    def collate(self, handle: Handle, config):
        return collate_for(PadCollator(handle.parts.tokenizer.pad_token_id), mismatched_answer)

    # -- generation

    def _prompt_ids(self, tokenizer, prompt: str, chat: bool) -> list[int]:
        if chat:
            text = render_chat(tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        else:
            ids = tokenizer(prompt, verbose=False)["input_ids"]
        if not ids:  # an empty prompt to a tokenizer that adds nothing: start from a sequence boundary
            start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
            ids = [start]
        return ids

    def generate(self, handle: Handle, prompts: list[str], seeds: list[int], settings: dict,
                 out_dir: Path) -> list[Sample]:
        """Settings: max_new_tokens (64), temperature (0.8; 0 is greedy), top_p (1.0), top_k (0: off),
        repetition_penalty (1.0), chat_template (off for starters, else on when the tokenizer has one).
        Two callables may ride along: ``on_text(number, text_so_far)`` hears each sample's text as its tokens
        come (number: its place in the output), and ``should_stop()`` ends a sample early when it says so."""
        import torch
        from transformers import StoppingCriteriaList

        tokenizer, model = handle.parts.tokenizer, handle.parts.model
        settings = settings or {}
        chat = settings.get("chat_template")
        if chat is None:
            chat = not handle.parts.starter and bool(tokenizer.chat_template)
        temperature = float(settings.get("temperature", 0.8))
        generation = copy.deepcopy(model.generation_config)
        generation.max_new_tokens = int(settings.get("max_new_tokens", 64))
        generation.max_length = None
        generation.do_sample = temperature > 0
        generation.temperature = temperature if temperature > 0 else None
        generation.top_p = float(settings.get("top_p", 1.0)) if temperature > 0 else None
        generation.top_k = int(settings.get("top_k", 0)) if temperature > 0 else None
        generation.repetition_penalty = float(settings.get("repetition_penalty", 1.0))
        generation.pad_token_id = tokenizer.pad_token_id
        if generation.eos_token_id is None:
            generation.eos_token_id = tokenizer.eos_token_id
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        samples = []
        try:
            for prompt, seed in pairs(list(prompts), list(seeds)):
                started = time.perf_counter()
                ids = torch.tensor([self._prompt_ids(tokenizer, prompt, chat)], device=device)
                torch.manual_seed(seed)
                watchers = _watchers(tokenizer, len(samples), settings.get("on_text"), settings.get("should_stop"))
                with torch.no_grad():
                    output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                            generation_config=generation, streamer=watchers["streamer"],
                                            stopping_criteria=StoppingCriteriaList(watchers["stopping"]))
                text = tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True)
                samples.append(Sample(prompt=prompt, seed=seed, text=text, seconds=time.perf_counter() - started))
        finally:
            model.train(was_training)
        return samples

    # -- saving

    def save(self, handle: Handle, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        model = handle.parts.model
        if handle.method == "lora":
            model.save_pretrained(str(folder), safe_serialization=True, save_embedding_layers=False,
                                  selected_adapters=["default"])  # not a preference run's frozen reference
        else:
            model.save_pretrained(str(folder))  # transformers 5 writes safetensors only
        handle.parts.tokenizer.save_pretrained(str(folder))
        write_marker(handle, folder, starter=handle.parts.starter)

    def load_weights(self, handle: Handle, folder: Path) -> None:
        from safetensors.torch import load_file

        folder = Path(folder)
        model = handle.parts.model
        if handle.method == "lora":
            load_adapter(model, folder)
            return
        index = folder / "model.safetensors.index.json"
        files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists()
                 else ["model.safetensors"])
        if not (folder / files[0]).exists():
            raise FileNotFoundError(f"no model weights (model.safetensors) in {folder}")
        state: dict = {}
        for name in files:
            state.update(load_file(str(folder / name)))
        missing, unexpected = model.load_state_dict(state, strict=False)
        shared: dict[int, set[str]] = {}
        for name, parameter in model.named_parameters(remove_duplicate=False):
            shared.setdefault(id(parameter), set()).add(name)
        names_of = {name: group for group in shared.values() for name in group}
        really_missing = [k for k in missing if not (names_of.get(k, set()) & state.keys())]  # tied weights came
        if really_missing or unexpected:
            raise ValueError(f"the weights in {folder} do not fit this model (missing: {really_missing[:5]}, "
                             f"unexpected: {unexpected[:5]})")

    # -- for generation and export

    def lora_module(self, handle: Handle):
        return handle.parts.model

    def write_merged(self, base_ref: str, adapter: Path, config, out: Path, max_shard_bytes: int) -> None:
        """Loading the adapter's folder as 'full' folds it into its base (``merge_and_unload``)."""
        write_pretrained(self.load(str(adapter), "full", config).parts, base_ref, out, max_shard_bytes)

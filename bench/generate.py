"""Benchmark: what generating costs through the studio, per modality, and what its LoRA sharing and its text
path cost against doing it by hand.

Set-up (not timed): a temporary ``STUDIO_HOME`` with three imported example datasets (the stories text, the
coloured shapes, the pitched tones) and real runs trained in this process by the worker's own code
(``jobs.create_run`` + ``worker.run_worker``, as ``tests/test_generation.py`` does):
  - text:  ``starter-text`` (scratch, 2 steps) and a random-init Llama built from a ``LlamaConfig`` (hidden
           512, 6 layers, ~20 M parameters; the BPE tokenizer of the stories), saved to a folder and loaded
           back like a Hub model, fine-tuned with LoRA (r 8, alpha 16, on q/k/v/o) with a checkpoint at every
           step (1..4): four different adapters of one base;
  - image: ``starter-image`` (scratch, 2 steps) and the tiny Stable Diffusion pipeline of
           ``tests/test_image_backend.py`` (CLIP text encoder, UNet, VAE), fine-tuned with LoRA likewise;
  - audio: ``starter-audio`` (scratch, 2 steps) and the tiny MusicGen of ``tests/test_musicgen.py`` (one-layer
           T5, small EnCodec, two-layer decoder), fine-tuned with LoRA likewise.

1. Latency per sample. Every variant through ``generate_set`` (the service the Generate tab and ``studio
   generate`` call) with a warm model cache, the default settings of its modality (text: up to 64 new
   tokens, temperature 0.8; image: 30 DDIM steps at the run's 32 px; audio: the run's 1 s clip, 30 steps +
   Griffin-Lim for the starter, MusicGen's sampling for MusicGen). Reported: the median of the per-sample
   seconds the backend stores with each sample, and the wall and CPU time of the whole ``generate_set``
   call (stores, rows and files; reading the set back with ``get_set`` too) over its samples; the cold
   load (model, or adapter on a loaded base) is timed separately.
2. Memory of N LoRA variants. The Generate cache holds one base with N named PEFT adapters; the alternative
   is N separate copies (here: one cache per variant, each with its own base and adapter). Reported: the
   parameter bytes held (the sum of the unique tensor storages of every module the caches hold, so shared
   or tied tensors count once), and, for text, the growth of the process's resident memory over a baseline
   taken after the libraries and the same code path on a small model have run once: two fresh processes,
   one filling one cache (the base, then adapter after adapter), one loading the copies, each weight read
   once (as generating does) before the memory is read. transformers keeps safetensors weights memory-mapped
   from the file, so the resident set (VmRSS) counts them once per mapping; "anon+PSS" (anonymous memory
   plus the proportional share of the mapped weight files) counts a page mapped twice once: the physical
   cost. The ratio is against the base alone (target: N = 4 variants under 1.2x).
3. Text tokens/s. The same ~20 M Llama and prompt, greedy, the same number of new tokens every time
   (``min_new_tokens`` = ``max_new_tokens`` on the model's generation config, which both paths use, so no
   early end-of-sequence): a plain ``model.generate(...)`` call on the very model object the cache holds,
   against ``TextBackend.generate`` on that handle with the service's runtime settings, against a whole
   one-sample ``generate_set``, and against ``generate_set`` with a streaming ``on_text`` listener (as the
   Generate tab asks for). On a shared machine separate runs drift with the load by far more than 5 %, so
   each studio path runs in lockstep with a plain call: two threads pinned to one core taking turns, one
   model forward each (a forward hook hands the turn over), each clock counting only its own turns; the
   ratio is plain's time over the path's time within a run, median over the rounds (who starts
   alternates). A plain call against a plain call shows the method's own noise. Repeated with a LoRA
   adapter switched on. The outputs of all paths must be identical (checked). Target: within 5 %.

    .venv/bin/python bench/generate.py            # full run (about 3-4 min on 2 busy cores)
    .venv/bin/python bench/generate.py --quick    # smoke run: smaller Llama, fewer samples/rounds (under a minute)
    .venv/bin/python bench/generate.py --only tokens --tokens 512 --rounds 3   # longer outputs
    .venv/bin/python bench/generate.py --only memory --checkpoints 4

torch runs on ``--threads`` threads (1 by default: for models this small, two OpenMP threads on a busy two-core
machine mostly wait for each other). Everything is seeded: the same run gives the same samples.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET_MEMORY = 1.2      # N LoRA variants of one base: under 1.2x the base alone
TARGET_TOKENS = 0.05     # the studio's text path within 5 % of a plain model.generate
BIG = 2**40              # a cache bound nothing here reaches
CLIP_WORDS = ["a", "red", "green", "blue", "yellow", "circle", "square"]
MUSICGEN_WORDS = ["<pad>", "</s>", "<unk>", "a", "low", "high", "hum", "beep", "tone", "mid", "whistle"]


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "?"


def rss_bytes() -> dict:
    """VmRSS, RssAnon and RssFile of this process (/proc/self/status) and its Pss (/proc/self/smaps_rollup),
    in bytes (Linux)."""
    found = {}
    for name, keys in (("status", ("VmRSS", "RssAnon", "RssFile")), ("smaps_rollup", ("Pss",))):
        try:
            lines = Path(f"/proc/self/{name}").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.partition(":")
            if key in keys:
                found[key] = int(value.split()[0]) * 1024
    return found


def weight_pages() -> dict:
    """Rss and Pss of the memory-mapped safetensors files (/proc/self/smaps): Pss counts a page that is mapped
    twice (two copies of one file) once, split between its mappings."""
    found = {"weights_rss": 0, "weights_pss": 0}
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            inside = line.rstrip().endswith(".safetensors")
        elif inside and head and head[0] in ("Rss:", "Pss:"):
            found["weights_" + head[0][:-1].lower()] += int(head[1]) * 1024
    return found


def quiet(diffusers_too: bool = True) -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    if not diffusers_too:
        return
    try:
        import diffusers

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
    except ImportError:
        pass
    warnings.filterwarnings("ignore")


# ----------------------------------------------------------------------------- model folders (not timed)

def build_llama_folder(folder: Path, tokenizer, hidden: int, layers: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1234)
    heads = max(1, hidden // 64)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=int(hidden * 8 / 3 + 63) // 64 * 64,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_clip_tokenizer(folder: Path):
    """A CLIP BPE tokenizer over a few words (as tests/test_image_backend.py builds it)."""
    from transformers import CLIPTokenizer

    letters = sorted(set("".join(CLIP_WORDS)))
    vocab = letters + [c + "</w>" for c in letters]
    merges = []
    for word in CLIP_WORDS:
        piece = word[0]
        for index, char in enumerate(word[1:], start=1):
            last = index == len(word) - 1
            merges.append(f"{piece} {char}{'</w>' if last else ''}")
            piece += char
            vocab.append(piece + ("</w>" if last else ""))
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    vocab = list(dict.fromkeys(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)


def build_sd_folder(root: Path) -> Path:
    """The tiny Stable Diffusion pipeline of tests/test_image_backend.py, saved like a Hub checkpoint."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer(root / "clip-vocab")
    torch.manual_seed(7)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
                                                num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
                                                bos_token_id=tokenizer.bos_token_id,
                                                eos_token_id=tokenizer.eos_token_id))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), norm_num_groups=32, cross_attention_dim=32,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=32, sample_size=16)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, steps_offset=1, clip_sample=False)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    folder = root / "tiny-sd"
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


def build_musicgen_folder(root: Path) -> Path:
    """The tiny MusicGen of tests/test_musicgen.py (8 kHz EnCodec, two 32-entry codebooks, a two-layer
    decoder), with a word-level tokenizer that knows the tones' captions."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (EncodecConfig, EncodecFeatureExtractor, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, PreTrainedTokenizerFast, T5Config)

    rate = 8000
    text = T5Config(vocab_size=len(MUSICGEN_WORDS), d_model=12, d_kv=6, d_ff=24, num_layers=1, num_heads=2,
                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    audio = EncodecConfig(sampling_rate=rate, audio_channels=1, num_filters=4, num_residual_layers=1,
                          upsampling_ratios=[8, 8], codebook_size=32, codebook_dim=8, hidden_size=8,
                          target_bandwidths=[1.25], normalize=False, chunk_length_s=None, overlap=None,
                          num_lstm_layers=1, compress=2, kernel_size=3, last_kernel_size=3, residual_kernel_size=3)
    decoder = MusicgenDecoderConfig(vocab_size=32, max_position_embeddings=256, num_hidden_layers=2, ffn_dim=32,
                                    num_attention_heads=2, hidden_size=16, num_codebooks=2, pad_token_id=32,
                                    bos_token_id=32)
    torch.manual_seed(1234)
    model = MusicgenForConditionalGeneration(MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder))
    with torch.no_grad():  # as in the test: codebooks the clips' frames fall into, confident heads
        t = torch.arange(rate // 4) / rate
        probe = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (125.0, 500.0, 1000.0, 2000.0)])[:, None]
        scale = float(model.audio_encoder.encoder(probe).std())
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.copy_(torch.randn(layer.codebook.embed.shape) * scale)
        for head in model.decoder.lm_heads:
            head.weight.normal_(0.0, 1.0)
    model.generation_config.decoder_start_token_id = 32
    model.generation_config.pad_token_id = 32
    folder = root / "tiny-musicgen"
    model.save_pretrained(folder)
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(MUSICGEN_WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)
    EncodecFeatureExtractor(feature_size=1, sampling_rate=rate).save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------- the lab: datasets and runs (not timed)

def run_in_process(store, dataset: str, model_ref: str, method: str, config) -> int:
    """A run created like `studio train` does and trained by the worker's own code, in this process."""
    from studio.training import jobs, worker

    run_id = jobs.create_run(store, dataset, model_ref, method, config)
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):  # the worker's log lines
        status = worker.run_worker(store, run_id)
    jobs.finish_run(store, run_id, status)
    if status != "completed":
        raise SystemExit(f"set-up run {run_id} ({method} on {model_ref}) ended {status}:\n{said.getvalue()[-3000:]}")
    return run_id


def build_lab(args, root: Path) -> dict:
    """The store, datasets, model folders and runs every experiment uses; returns what they need."""
    import torch

    from studio.data.read_text import split_documents
    from studio.data.service import import_dataset
    from studio.examples.shapes import make_shapes
    from studio.examples.text import make_corpus
    from studio.examples.tones import make_tones
    from studio.models.text import train_tokenizer
    from studio.settings import load_settings
    from studio.store import open_store
    from studio.training.config import TrainConfig

    home = root / "home"
    store = open_store(load_settings(home=home))
    lab = {"home": str(home), "modalities": {}}
    steps = args.checkpoints
    lora = dict(max_steps=steps, save_steps=1, save_total_limit=steps, eval_steps=10_000, warmup_steps=0,
                learning_rate=1e-2, lr_scheduler_type="constant", per_device_train_batch_size=4, seed=0,
                use_cpu=True)
    scratch = dict(max_steps=2, save_steps=2, eval_steps=10_000, warmup_steps=0, learning_rate=2e-3,
                   per_device_train_batch_size=4, seed=0, use_cpu=True)
    started = time.perf_counter()
    wanted = args.modalities
    if "text" in wanted or args.only in ("memory", "tokens"):
        corpus = make_corpus(size_kb=30, seed=3)
        (root / "stories.txt").write_text(corpus)
        dataset = str(import_dataset(store, [root / "stories.txt"], name="stories")["dataset_id"])
        tokenizer = train_tokenizer(split_documents(make_corpus(size_kb=100, seed=0), "blank_lines"))
        folder = build_llama_folder(root / "llama", tokenizer, args.hidden, args.layers)
        text = {"max_length": 64}
        lab["llama"] = str(folder)
        lab["llama_params"] = sum(t.numel() for t in __import__("safetensors.torch", fromlist=["load_file"])
                                  .load_file(str(folder / "model.safetensors")).values())
        lab["modalities"]["text"] = {
            "tiny": run_in_process(store, dataset, str(folder), "lora", TrainConfig(text=text, **lora)),
            "starter": (run_in_process(store, dataset, "starter-text", "scratch", TrainConfig(text=text, **scratch))
                        if "text" in wanted else None)}
        print(f"  text: Llama {lab['llama_params'] / 1e6:.1f} M parameters, runs ready "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    if "image" in wanted:
        make_shapes(root / "shapes", 3, 0)
        dataset = str(import_dataset(store, [root / "shapes"], name="shapes")["dataset_id"])
        folder = build_sd_folder(root)
        image = {"resolution": 32}
        lab["modalities"]["image"] = {
            "tiny": run_in_process(store, dataset, str(folder), "lora", TrainConfig(image=image, **lora)),
            "starter": run_in_process(store, dataset, "starter-image", "scratch", TrainConfig(image=image, **scratch))}
        print(f"  image: runs ready ({time.perf_counter() - started:.0f} s)", flush=True)
    if "audio" in wanted:
        make_tones(root / "tones", 4, 0)
        dataset = str(import_dataset(store, [root / "tones"], name="tones")["dataset_id"])
        folder = build_musicgen_folder(root)
        audio = {"clip_seconds": 1.0}
        lab["modalities"]["audio"] = {
            "tiny": run_in_process(store, dataset, str(folder), "lora", TrainConfig(audio=audio, **lora)),
            "starter": run_in_process(store, dataset, "starter-audio", "scratch", TrainConfig(audio=audio, **scratch))}
        print(f"  audio: runs ready ({time.perf_counter() - started:.0f} s)", flush=True)
    lab["setup_s"] = time.perf_counter() - started
    assert torch.get_num_threads() == args.threads, "set-up changed torch's thread count"
    return store, lab


# ----------------------------------------------------------------------------- 1. latency per sample

PROMPTS = {"text": ["Once upon a time", "Mia found a", "The old dog"],
           "image": ["a red circle", "a blue square", "a yellow circle"],
           "audio": ["low hum", "mid tone", "high whistle"]}
MODELS = {"text": ("starter-text", "tiny Llama"), "image": ("starter-image", "tiny SD"),
          "audio": ("starter-audio", "tiny MusicGen")}


def latency(args, store, lab: dict) -> list[dict]:
    from studio.generation.cache import ModelCache
    from studio.generation.service import generate_set, get_set
    from studio.generation.variants import resolve_variants

    out = []
    for modality in args.modalities:
        runs = lab["modalities"][modality]
        prompts = PROMPTS[modality][:args.prompts]
        cases = [(MODELS[modality][0], "checkpoint (full model)", f"{runs['starter']}:2"),
                 (MODELS[modality][1], "base", "base"),
                 (MODELS[modality][1], "LoRA adapter on the base", f"{runs['tiny']}:{args.checkpoints}")]
        cache = ModelCache(BIG)
        for name, kind, ref in cases:
            variant = resolve_variants(store, [str(runs["tiny"]), "base"] if ref == "base" else [ref])[-1]
            started = time.perf_counter()
            with cache.lock:
                handle = cache.handle_for(variant)
            load_s = time.perf_counter() - started
            variants = [ref] if ref != "base" else ["base"]
            base_model = variant.base_ref if ref == "base" else None
            ask = dict(prompts=prompts, seed=11, samples_per_prompt=args.samples, cache=cache, base_model=base_model)
            generate_set(store, variants, prompts[:1], seed=5, cache=cache, base_model=base_model)  # warm-up
            counted: list[int] = []
            if modality == "text":  # count the tokens each call really generates (text can end early)
                model = handle.parts.model
                original = model.generate

                def counting(*a, _original=original, **k):
                    output = _original(*a, **k)
                    counted.append(int(output.shape[1] - k["input_ids"].shape[1]))
                    return output
                model.generate = counting
            started, cpu_started = time.perf_counter(), time.process_time()
            try:
                found = get_set(store, generate_set(store, variants, **ask))
            finally:
                if modality == "text":
                    del model.generate
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            assert found["status"] == "completed", found["report"]
            seconds = [s["seconds"] for s in found["samples"]]
            row = {"modality": modality, "model": name, "kind": kind, "ref": ref, "load_s": load_s,
                   "samples": len(seconds), "median_s": statistics.median(seconds), "min_s": min(seconds),
                   "max_s": max(seconds), "wall_per_sample_s": wall / len(seconds),
                   "cpu_per_sample_s": cpu / len(seconds), "settings": found["settings"]}
            if handle.parts.family == "musicgen":  # what MusicgenBackend.generate asks for
                model = handle.parts.model
                frames = math.ceil(handle.parts.clip_seconds * model.config.audio_encoder.frame_rate)
                row["decoder_steps"] = frames + model.decoder.num_codebooks - 1
            if modality == "text":
                row["tokens"] = statistics.mean(counted)
                row["per_token_ms"] = 1000 * sum(seconds) / sum(counted)
            out.append(row)
            print(f"  {modality:5s} {name:14s} {kind:26s} median {row['median_s']:.3f} s/sample "
                  f"({row['samples']} samples, wall {row['wall_per_sample_s']:.3f} s/sample, load {load_s:.2f} s, "
                  f"load avg {loadavg()})", flush=True)
        cache.clear()
    return out


# ----------------------------------------------------------------------------- 2. memory

def unique_bytes(modules) -> int:
    """Bytes of the distinct tensor storages of ``modules``' parameters and buffers (shared or tied count once)."""
    seen: dict[int, int] = {}
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
    return sum(seen.values())


def touch(modules) -> None:
    """Reads every weight once, as generating does. transformers maps safetensors files into memory and
    keeps the weights there: a page of them joins the resident set only when it is first read."""
    import torch

    with torch.no_grad():
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.numel():
                    float(tensor.detach().float().sum() if tensor.is_floating_point() else tensor.sum())


def held_modules(caches) -> list:
    return [entry.handle.module for cache in caches for entry in cache.entries.values()]


def grow(store, run_id: int, counts: list[int], mode: str):
    """Loads step by step, yielding ``(label n, caches)`` after each step that ``counts`` asks about.

    'shared': one Generate cache, as a request for the base and N LoRA checkpoints fills it: the base
    (n = 0), then adapter after adapter on that one base. 'copies': the alternative of a separate model per
    variant: one cache per checkpoint, each with its own base and its adapter (n = 1, 2, ...). Nothing is
    freed on the way, so the resident memory of one process can be read after each step."""
    from studio.generation.cache import ModelCache
    from studio.generation.variants import resolve_variants

    top = max(counts)
    refs = [f"{run_id}:{step}" for step in range(1, top + 1)]
    caches: list = []
    if mode == "shared":
        base, *variants = resolve_variants(store, ["base", *refs])
        caches.append(ModelCache(BIG))
        caches[0].handle_for(base)
        if 0 in counts:
            yield 0, caches
        for n, variant in enumerate(variants, start=1):
            caches[0].handle_for(variant)
            if n in counts:
                assert (caches[0].loads, caches[0].adapter_loads) == (1, n)
                yield n, caches
    else:
        for n, variant in enumerate(resolve_variants(store, refs), start=1):
            caches.append(ModelCache(BIG))
            caches[-1].handle_for(variant)
            if n in counts:
                yield n, caches


def measure_memory(store, run_id: int, counts: list[int], mode: str, resident: bool) -> list[dict]:
    """Tensor bytes (and, when ``resident``, the growth of this process's memory since the call) after each
    step of ``grow``."""
    before = {**rss_bytes(), **weight_pages()} if resident else {}
    rows = []
    for n, caches in grow(store, run_id, counts, mode):
        modules = held_modules(caches)
        row = {"mode": "base" if mode == "shared" and n == 0 else mode, "n": n, "bytes": unique_bytes(modules),
               "cache_counted": sum(c.total_bytes() for c in caches), "vmrss": None}
        if resident:
            touch(modules)
            gc.collect()
            after = {**rss_bytes(), **weight_pages()}
            row.update({key.lower(): after[key] - before[key] for key in after if key in before})
            row["physical"] = row["rssanon"] + row["weights_pss"]
        rows.append(row)
    for cache in caches:
        cache.clear()
    return rows


def memory_child(spec: dict) -> list[dict]:
    """In a fresh process, after the libraries and the same code path on a small model (lazy imports, a warm
    allocator): ``measure_memory`` with resident memory."""
    import torch

    torch.set_num_threads(spec["threads"])
    quiet(diffusers_too=False)
    import peft  # noqa: F401 - libraries in the baseline, not in the figure
    from peft import inject_adapter_in_model, set_peft_model_state_dict  # noqa: F401

    from studio.generation.cache import ModelCache
    from studio.generation.variants import resolve_variants
    from studio.settings import load_settings
    from studio.store import open_store

    store = open_store(load_settings(home=Path(spec["home"])))
    warm = ModelCache(BIG)
    warm.handle_for(resolve_variants(store, [spec["warm_ref"]])[0])
    touch(held_modules([warm]))
    warm.clear()
    del warm
    gc.collect()
    try:
        return measure_memory(store, spec["run"], spec["counts"], spec["mode"], resident=True)
    finally:
        store.close()


def memory(args, store, lab: dict) -> dict:
    """Text: in fresh processes (one for the shared cache, one for the copies), bytes and resident memory.
    Image and audio (and the text copies of a quick run): bytes only, in this process."""
    counts = sorted({n for n in (1, 2, 4) if n < args.checkpoints} | {args.checkpoints})
    out: dict[str, list[dict]] = {}
    for modality in (["text"] + [m for m in args.modalities if m != "text"]):
        if modality not in lab["modalities"]:
            continue
        run = lab["modalities"][modality]["tiny"]
        rows = []
        for mode, wanted in (("shared", [0, *counts]), ("copies", [n for n in counts if n > 1])):
            if modality == "text" and not (args.quick and mode == "copies"):  # quick: one child process
                starter = lab["modalities"]["text"].get("starter")
                spec = {"home": lab["home"], "run": run, "counts": wanted, "mode": mode, "threads": args.threads,
                        "warm_ref": f"{starter}:2" if starter else f"{run}:1"}
                done = subprocess.run([sys.executable, __file__, "--memory-child", json.dumps(spec)],
                                      capture_output=True, text=True, check=False)
                if done.returncode:
                    raise SystemExit(f"memory child failed:\n{done.stderr[-3000:]}")
                found = json.loads(done.stdout.strip().splitlines()[-1])
            else:
                found = measure_memory(store, run, wanted, mode, resident=False)
                gc.collect()
            for result in found:
                rss = (f", RSS +{result['vmrss'] / 2**20:.1f} MB (anon +{result['rssanon'] / 2**20:.1f}, file "
                       f"+{result['rssfile'] / 2**20:.1f}; mapped weights RSS +{result['weights_rss'] / 2**20:.1f}, "
                       f"PSS +{result['weights_pss'] / 2**20:.1f})" if result["vmrss"] is not None else "")
                print(f"  {modality:5s} {result['mode']:6s} N={result['n']}: {result['bytes'] / 2**20:8.2f} MB of "
                      f"tensors (the cache's own count {result['cache_counted'] / 2**20:.2f}){rss}", flush=True)
            rows += found
        out[modality] = rows
    return out


# ----------------------------------------------------------------------------- 3. text tokens/s

class Baton:
    """Two generation calls in two threads taking turns, one model forward each: a forward hook on the model
    hands the turn over after every forward. Each thread's clocks (wall and thread CPU time) run only while
    it holds the turn, so both calls see the same moment-to-moment load on a shared machine, and neither is
    charged for the other's work or for the hand-overs."""

    def __init__(self, first: int, threads: int, cpus: set | None = None):
        self.cpus = cpus
        self.cond = threading.Condition()
        self.turn, self.threads = first, threads
        self.done = [False, False]
        self.wall, self.cpu = [0.0, 0.0], [0.0, 0.0]
        self.since: list = [None, None]
        self.local = threading.local()

    def _go(self, me: int) -> None:
        self.since[me] = (time.perf_counter(), time.thread_time())

    def _halt(self, me: int) -> None:
        wall, cpu = self.since[me]
        self.wall[me] += time.perf_counter() - wall
        self.cpu[me] += time.thread_time() - cpu

    def _wait(self, me: int) -> None:
        self.cond.wait_for(lambda: self.turn == me or self.done[1 - me])

    def hook(self, *_args) -> None:
        me = getattr(self.local, "me", None)
        if me is None:
            return
        self._halt(me)
        with self.cond:
            self.turn = 1 - me
            self.cond.notify_all()
            self._wait(me)
        self._go(me)

    def run(self, me: int, work, errors: list) -> None:
        import torch

        torch.set_num_threads(self.threads)  # OpenMP's thread count is per thread
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)  # this thread only (Linux): both take turns on the same core(s)
        self.local.me = me
        with self.cond:
            self._wait(me)
        self._go(me)
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            errors.append(error)
        finally:
            self._halt(me)
            with self.cond:
                self.done[me] = True
                self.turn = 1 - me
                self.cond.notify_all()


def lockstep(model, first_work, second_work, first: int, threads: int,
             cpus: set | None = None) -> tuple[list[float], list[float]]:
    """Runs the two calls in lockstep (see ``Baton``; ``model``: the model, or the models, whose forwards
    hand the turn over), both threads pinned to ``cpus`` when given; returns their (wall, thread CPU)
    seconds."""
    baton = Baton(first, threads, cpus)
    errors: list = []
    hooks = [m.register_forward_hook(baton.hook) for m in (model if isinstance(model, (list, tuple)) else [model])]
    try:
        workers = [threading.Thread(target=baton.run, args=(me, work, errors))
                   for me, work in enumerate((first_work, second_work))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        for hook in hooks:
            hook.remove()
    if errors:
        raise errors[0]
    return baton.wall, baton.cpu


def tokens_per_second(args, store, lab: dict) -> dict:
    import torch

    from studio.generation.cache import ModelCache
    from studio.generation.options import TextSettings
    from studio.generation.service import GenerationHooks, generate_set, get_set
    from studio.generation.variants import resolve_variants
    from studio.models.text import TextBackend

    run = lab["modalities"]["text"]["tiny"]
    prompt, seed, tokens = "Once upon a time", 3, args.tokens
    settings = TextSettings(max_new_tokens=tokens, temperature=0.0, chat_template="off")
    backend = TextBackend()
    out = {}
    scratch = Path(lab["home"]) / "bench-scratch"
    # Both threads of a lockstep run on one core: turns handed to a thread on the other core meet that
    # core's load and cold caches (unpinned, plain against plain drifted 0.88-1.13x; pinned, 0.995-1.008x).
    cpus = {min(os.sched_getaffinity(0))}
    out["cpu"] = min(cpus)
    kept: dict[str, tuple] = {}
    for label, refs in (("base", [str(run), "base"]), ("LoRA", [f"{run}:{args.checkpoints}"])):
        variant = resolve_variants(store, refs)[-1]
        cache = ModelCache(BIG)
        handle = cache.handle_for(variant)
        model, tokenizer = handle.parts.model, handle.parts.tokenizer
        model.generation_config.min_new_tokens = tokens  # no early end-of-sequence on either path
        ids = torch.tensor([backend._prompt_ids(tokenizer, prompt, chat=False)])
        ask = dict(variants=[variant.ref], prompts=[prompt], seed=seed, settings=settings, cache=cache,
                   base_model=variant.base_ref if variant.kind == "base" else None)
        texts: dict[str, str] = {}

        def plain(model=model, ids=ids, tokenizer=tokenizer, texts=texts):  # bound now: kept for later
            with torch.no_grad():
                output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                        min_new_tokens=tokens, do_sample=False)
            assert output.shape[1] - ids.shape[1] == tokens
            texts["plain"] = tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True)

        def studio_backend():
            with cache.lock:
                live = cache.handle_for(variant)
                runtime = {**settings.backend_settings(), "should_stop": lambda: False}
                [sample] = backend.generate(live, [prompt], [seed], runtime, scratch)
            texts["TextBackend.generate"] = sample.text

        made: dict[str, int] = {}

        def service(on_text=None):
            name = "generate_set" + (" + streaming" if on_text else "")

            def call():
                made[name] = generate_set(store, hooks=GenerationHooks(on_text=on_text), **ask)
            return call

        paths = {"plain (A/A check)": plain, "TextBackend.generate": studio_backend, "generate_set": service(),
                 "generate_set + streaming": service(lambda _event: None)}
        for work in (plain, *paths.values()):  # warm-up, untimed
            work()
        found: dict[str, dict[str, list[float]]] = {
            name: {"wall": [], "cpu": [], "plain_wall": [], "plain_cpu": []} for name in paths}
        for round_ in range(args.rounds):
            for name, work in paths.items():
                first = round_ % 2  # who starts alternates
                (plain_wall, wall), (plain_cpu, cpu) = lockstep(model, plain, work, first, args.threads, cpus)
                record = found[name]
                record["wall"].append(wall)
                record["cpu"].append(cpu)
                record["plain_wall"].append(plain_wall)
                record["plain_cpu"].append(plain_cpu)
        assert torch.get_num_threads() == args.threads
        for name, set_id in made.items():  # read back outside the timed calls
            texts[name] = get_set(store, set_id)["samples"][0]["text"]
        same = len(set(texts.values())) == 1
        rows = [{"path": "plain model.generate",
                 "tok_s": tokens / statistics.median(w for r in found.values() for w in r["plain_wall"]),
                 "cpu_tok_s": tokens / statistics.median(c for r in found.values() for c in r["plain_cpu"]),
                 "ratio": 1.0, "cpu_ratio": 1.0, "plain_tok_s": None}]
        for name, record in found.items():
            rows.append({"path": name, "tok_s": tokens / statistics.median(record["wall"]),
                         "cpu_tok_s": tokens / statistics.median(record["cpu"]),
                         "plain_tok_s": tokens / statistics.median(record["plain_wall"]),
                         "ratio": statistics.median(p / s for p, s in zip(record["plain_wall"], record["wall"])),
                         "cpu_ratio": statistics.median(p / s for p, s in zip(record["plain_cpu"], record["cpu"])),
                         "spread": (min(p / s for p, s in zip(record["plain_wall"], record["wall"])),
                                    max(p / s for p, s in zip(record["plain_wall"], record["wall"])))})
        for row in rows:
            row["ms_per_token"] = 1000 / row["tok_s"]
        out[label] = {"rows": rows, "same_text": same, "texts": texts, "prompt_tokens": int(ids.shape[1])}
        print(f"  {label}: " + ", ".join(f"{r['path']} {r['tok_s']:.1f} tok/s ({r['ratio']:.3f}x)" for r in rows)
              + f"; outputs identical: {same} (load avg {loadavg()})", flush=True)
        kept[label] = (cache, model, plain)
    # What an adapter switched on costs a token: the plain call on the base (a cache holding no adapter)
    # in lockstep with the plain call on the LoRA variant (another cache: the base with the adapter on).
    (_, base_model, base_plain), (_, lora_model, lora_plain) = kept["base"], kept["LoRA"]
    assert base_model is not lora_model
    walls, cpus_ = [], []
    for round_ in range(args.rounds):
        (base_wall, lora_wall), (base_cpu, lora_cpu) = lockstep([base_model, lora_model], base_plain, lora_plain,
                                                                round_ % 2, args.threads, cpus)
        walls.append(base_wall / lora_wall)
        cpus_.append(base_cpu / lora_cpu)
    out["adapter"] = {"ratio": statistics.median(walls), "spread": (min(walls), max(walls)),
                      "cpu_ratio": statistics.median(cpus_)}
    print(f"  LoRA on vs the base: {out['adapter']['ratio']:.3f}x the tokens/s", flush=True)
    for cache, _, _ in kept.values():
        cache.clear()
    return out


# ----------------------------------------------------------------------------- report

def print_report(args, info: dict, lab: dict, lat, mem, tok) -> None:
    print()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} on {args.threads} thread(s); "
          f"load average before {info['load_before']}, after {info['load_after']}; set-up {lab['setup_s']:.0f} s")
    if args.quick:
        print("QUICK SMOKE RUN: a smaller Llama, few samples and rounds; the figures below are not measurements")
    if "llama_params" in lab:
        print(f"text model: random-init Llama hidden {args.hidden}, {args.layers} layers, "
              f"{lab['llama_params'] / 1e6:.1f} M parameters (fp32); LoRA r 8 on q/k/v/o, {args.checkpoints} "
              f"checkpoints of one run")
    if lat:
        print()
        print(f"1. latency per sample through generate_set (warm cache; {args.prompts} prompts x {args.samples} "
              f"samples per variant)")
        print(f"{'modality':8s} {'model':14s} {'variant':26s} {'median s':>9s} {'range s':>13s} {'wall s':>8s} "
              f"{'cpu s':>7s} {'load s':>7s}  settings")
        print("(median, range: the seconds the backend stores with each sample; wall, cpu: the whole generate_set "
              "call and get_set, per sample; load: the cold load through the cache)")
        for r in lat:
            s = r["settings"]
            if r["modality"] == "text":
                what = (f"max_new_tokens {s['max_new_tokens']}, temperature {s['temperature']} "
                        f"(mean {r['tokens']:.0f} tokens generated, {r['per_token_ms']:.1f} ms a token)")
            elif r["modality"] == "image":
                guidance = s["guidance_scale"] or (2.0 if r["model"].startswith("starter") else 7.5)
                what = f"{s['steps']} steps, {s['scheduler']}, guidance {guidance} (default), 32 px"
            elif r["model"] == "starter-audio":
                what = f"{s['steps']} steps, guidance 2.0 (default), 1 s clip, Griffin-Lim 48 iterations"
            else:
                what = (f"1 s clip ({r['decoder_steps']} decoder steps), temperature {s['temperature']}, "
                        f"top_k {s['top_k']}, guidance 3")
            print(f"{r['modality']:8s} {r['model']:14s} {r['kind']:26s} {r['median_s']:9.3f} "
                  f"{r['min_s']:6.3f}-{r['max_s']:<6.3f} {r['wall_per_sample_s']:8.3f} {r['cpu_per_sample_s']:7.3f} "
                  f"{r['load_s']:7.2f}  {what}")
    if mem:
        print()
        print("2. memory of N LoRA variants (one cache: one base + N adapters) vs N separate copies (one cache each)")
        print(f"{'modality':8s} {'held':24s} {'tensor MB':>10s} {'vs base':>8s} {'RSS +MB':>8s} {'vs base':>8s} "
              f"{'anon+PSS':>8s} {'vs base':>8s}")
        for modality, rows in mem.items():
            base = rows[0]
            for r in rows:
                held = ("the base alone" if r["mode"] == "base" else
                        f"{r['n']} LoRA variant{'s' * (r['n'] > 1)}, shared" if r["mode"] == "shared"
                        else f"{r['n']} separate copies")
                rss = " ".join(f"{r[k] / 2**20:8.1f} {r[k] / base[k]:7.2f}x" if r.get(k) is not None
                               else f"{'-':>8s} {'-':>8s}" for k in ("vmrss", "physical"))
                print(f"{modality:8s} {held:24s} {r['bytes'] / 2**20:10.2f} {r['bytes'] / base['bytes']:7.3f}x {rss}")
            four = [r for r in rows if r["mode"] == "shared"][-1]
            ratio = four["bytes"] / base["bytes"]
            adapter = (four["bytes"] - base["bytes"]) / four["n"]
            print(f"   {modality}: {four['n']} variants of one base = {ratio:.3f}x the base alone (base "
                  f"{base['bytes'] / 2**20:.2f} MB; one adapter {adapter / 2**20:.3f} MB = "
                  f"{adapter / base['bytes']:.1%} "
                  f"of it) -> target < "
                  f"{TARGET_MEMORY}x: {'MET' if ratio < TARGET_MEMORY else 'NOT MET'}")
    if tok:
        print()
        print(f"3. text tokens/s: {args.tokens} new tokens, greedy, prompt 'Once upon a time' "
              f"({tok['base']['prompt_tokens']} tokens); each studio path in lockstep with a plain model.generate "
              f"(one forward each in turn), {args.rounds} rounds; medians. ratio = plain's time / the path's time "
              f"within a lockstep run (range over the rounds); cpu = the same with thread CPU time")
        print(f"(both threads of each lockstep run pinned to CPU {tok['cpu']}; plain tok/s: the plain calls "
              f"run beside that path)")
        print(f"{'model':6s} {'path':26s} {'tok/s':>7s} {'ms/tok':>7s} {'cpu tok/s':>9s} {'plain tok/s':>11s} "
              f"{'ratio':>7s} {'range':>13s} {'cpu ratio':>9s}")
        runs = {label: found for label, found in tok.items() if label in ("base", "LoRA")}
        for label, found in runs.items():
            for r in found["rows"]:
                plain = f"{r['plain_tok_s']:11.1f}" if r["plain_tok_s"] else f"{'-':>11s}"
                spread = f"{r['spread'][0]:.3f}-{r['spread'][1]:.3f}" if "spread" in r else "-"
                print(f"{label:6s} {r['path']:26s} {r['tok_s']:7.1f} {r['ms_per_token']:7.2f} {r['cpu_tok_s']:9.1f} "
                      f"{plain} {r['ratio']:6.3f}x {spread:>13s} {r['cpu_ratio']:8.3f}x")
            print(f"   {label}: outputs of every path identical: {found['same_text']}")
        for label, found in runs.items():
            for r in found["rows"][1:]:
                if r["path"].startswith("plain"):
                    low, high = r["spread"]
                    print(f"   {label}: plain against plain {r['ratio']:.3f}x ({low:.3f}-{high:.3f}): the method's "
                          "own noise")
                    continue
                met = 1 - r["ratio"] <= TARGET_TOKENS
                print(f"   {label}: {r['path']} {r['ratio']:.3f}x the plain call's tokens/s (cpu {r['cpu_ratio']:.3f}x)"
                      f" -> target within {TARGET_TOKENS:.0%}: {'MET' if met else 'NOT MET'}")
        adapter = tok["adapter"]
        print(f"   (not a target) plain generate with the LoRA adapter on, in lockstep with the base without "
              f"adapters: {adapter['ratio']:.3f}x the base's tokens/s ({adapter['spread'][0]:.3f}-"
              f"{adapter['spread'][1]:.3f}; cpu {adapter['cpu_ratio']:.3f}x): what unmerged adapters cost")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: smaller Llama, few samples and rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--only", choices=["latency", "memory", "tokens"], default=None)
    parser.add_argument("--modalities", default="text,image,audio", help="comma-separated (default all three)")
    parser.add_argument("--hidden", type=int, default=None, help="Llama hidden size (default 512)")
    parser.add_argument("--layers", type=int, default=None, help="Llama layers (default 6)")
    parser.add_argument("--checkpoints", type=int, default=None,
                        help="LoRA checkpoints per run = the most variants N (default 4)")
    parser.add_argument("--prompts", type=int, default=None, help="latency: prompts per variant (default 3)")
    parser.add_argument("--samples", type=int, default=None, help="latency: samples per prompt (default 2)")
    parser.add_argument("--tokens", type=int, default=None, help="tokens/s: new tokens per call (default 128)")
    parser.add_argument("--rounds", type=int, default=None, help="tokens/s: lockstep rounds (default 5)")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return
    quick = {"hidden": 256, "layers": 4, "prompts": 1, "samples": 2, "tokens": 32, "rounds": 2, "checkpoints": 2}
    full = {"hidden": 512, "layers": 6, "prompts": 3, "samples": 2, "tokens": 128, "rounds": 5, "checkpoints": 4}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    if args.only in ("memory", "tokens") and "text" not in args.modalities:
        args.modalities.insert(0, "text")
    if args.only == "tokens":
        args.modalities = ["text"]

    import torch

    torch.set_num_threads(args.threads)
    quiet()
    info = {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "load_before": loadavg(),
            "torch": torch.__version__}
    print(f"torch threads {torch.get_num_threads()}, load {info['load_before']}; "
          f"{'quick smoke run' if args.quick else 'full run'}", flush=True)
    lat = mem = tok = None
    begun = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
        print("set-up: datasets, model folders, runs", flush=True)
        store, lab = build_lab(args, Path(tmp))
        try:
            if args.only in (None, "latency"):
                print(f"1. latency per sample [{time.perf_counter() - begun:.0f} s]", flush=True)
                lat = latency(args, store, lab)
            if args.only in (None, "memory"):
                print(f"2. memory [{time.perf_counter() - begun:.0f} s]", flush=True)
                mem = memory(args, store, lab)
            if args.only in (None, "tokens"):
                print(f"3. text tokens/s [{time.perf_counter() - begun:.0f} s]", flush=True)
                tok = tokens_per_second(args, store, lab)
            print(f"done [{time.perf_counter() - begun:.0f} s]", flush=True)
        finally:
            store.close()
        assert torch.get_num_threads() == args.threads, "something changed torch's thread count during the runs"
    info["load_after"] = loadavg()
    print_report(args, info, lab, lat, mem, tok)


if __name__ == "__main__":
    main()

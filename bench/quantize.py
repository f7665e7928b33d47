"""Benchmark: what int8 weight-only quantisation of a deployment (``studio.serving.quantize``) saves and costs on CPU.

Set-up (not timed): a temporary ``STUDIO_HOME`` with the stories example imported (``make_corpus``, split by the
import as usual) and three text models, all seeded:
  - ``starter-text`` trained from scratch by the worker's own code (``--starter-steps`` steps), so its perplexity
    on the stories' test split is a trained model's;
  - a GPT-2-small-shaped model (12 layers, 768 wide, vocabulary 50,257, output layer tied to the embedding;
    124 M parameters) and a SmolLM-135M-shaped Llama (30 layers, 576 wide, 9 heads / 3 key-value heads,
    vocabulary 49,152, tied; 135 M parameters), both random-initialised from a config (no download) and saved
    with the stories' BPE tokenizer (whose ids are the first ~1,100 of the vocabulary), then loaded through the
    Generate model cache like a Hub model.

For each model, two copies are loaded through the cache: one stays fp32, the other is quantised with
``quantize_handle(handle, "int8")``. Reported: the weight bytes of each (``weight_bytes``: every parameter and
buffer of the handle, tied ones once, int8 tensors by their real storage) and their ratio (target: int8 at most
0.55x fp32); the deploy-time quality check (``quality_check``: perplexity on the test split, at most
``--items`` items) of each copy; and greedy generation speed, the same prompt and ``--tokens`` new tokens every
time (``min_new_tokens`` = ``max_new_tokens``), the two copies called in turn, ``--rounds`` rounds each after a
warm-up, median tokens/s, and the ratio int8 / fp32 within the run; the outputs are compared.

    .venv/bin/python bench/quantize.py                   # everything (a few minutes on 2 busy cores)
    .venv/bin/python bench/quantize.py --models starter  # the trained starter only (about a minute)

torch runs on ``--threads`` threads (1 by default, as the other benchmarks). A random model's perplexity is
about its vocabulary size: there the before/after pair says how far quantisation moves the outputs, not how good
the model is.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET_BYTES = 0.55  # int8 weights at most 0.55x the fp32 ones
PROMPT = "Once upon a time"


def random_model(name: str, tokenizer, folder: Path) -> Path:
    """A random-initialised model of a published shape, saved with ``tokenizer`` as a Hub-like folder."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if name == "gpt2-small":
        model = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024,
                                           **ids))
    else:  # SmolLM-135M's shape
        model = LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                             num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                             max_position_embeddings=2048, tie_word_embeddings=True, **ids))
    model.save_pretrained(folder / name)
    tokenizer.save_pretrained(folder / name)
    return folder / name


def tokens_per_second(handle, tokens: int) -> tuple[float, list[int]]:
    import torch

    model, tokenizer = handle.parts.model, handle.parts.tokenizer
    ids = tokenizer(PROMPT, return_tensors="pt")
    started = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return tokens / (time.perf_counter() - started), out[0].tolist()


def measure(store, variant, dataset: str, args) -> dict:
    from studio.generation.cache import ModelCache
    from studio.serving.quantize import quality_check, quantize_handle

    fp32 = ModelCache(2**40).handle_for(variant)
    int8 = ModelCache(2**40).handle_for(variant)  # a second, separate copy
    found = quantize_handle(int8, "int8")
    quality = [quality_check(store, h, variant, dataset, limit=args.items) for h in (fp32, int8)]
    speeds: dict[str, list[float]] = {"fp32": [], "int8": []}
    outputs = {}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for name, handle in (("fp32", fp32), ("int8", int8)) if round_ % 2 else (("int8", int8), ("fp32", fp32)):
            speed, outputs[name] = tokens_per_second(handle, args.tokens)
            if round_:
                speeds[name].append(speed)
    same = sum(a == b for a, b in zip(outputs["fp32"], outputs["int8"])) / len(outputs["fp32"])
    fp32_speed, int8_speed = statistics.median(speeds["fp32"]), statistics.median(speeds["int8"])
    return {"bytes": found, "ratio": found["weight_bytes_after"] / found["weight_bytes_before"],
            "ppl": (quality[0]["value"], quality[1]["value"]), "rows": quality[0]["rows"],
            "speed": (fp32_speed, int8_speed), "same_tokens": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="starter,gpt2-small,smollm-135m")
    parser.add_argument("--starter-steps", type=int, default=300)
    parser.add_argument("--items", type=int, default=32, help="test items the quality check reads")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per generation")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from studio.data.service import import_dataset, get_version, read_manifest
    from studio.examples.text import make_corpus
    from studio.generation.variants import resolve_variants
    from studio.models.common import quiet_import_noise
    from studio.models.text import train_tokenizer
    from studio.settings import load_settings
    from studio.store import open_store
    from studio.training import jobs, worker
    from studio.training.config import TrainConfig

    quiet_import_noise()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "stories.txt").write_text(make_corpus(size_kb=200, seed=3))
        store = open_store(load_settings(home=root / "home"))
        dataset = str(import_dataset(store, [root / "stories.txt"], name="stories")["dataset_id"])
        train = read_manifest(store, get_version(store, dataset), "train")
        rows = []
        for name in args.models.split(","):
            started = time.perf_counter()
            if name == "starter":
                config = TrainConfig(max_steps=args.starter_steps, save_steps=args.starter_steps, eval_steps=10**6,
                                     learning_rate=3e-3, warmup_steps=10, per_device_train_batch_size=8, seed=0,
                                     use_cpu=True, text={"max_length": 128})
                run = jobs.create_run(store, dataset, "starter-text", "scratch", config)
                jobs.finish_run(store, run, worker.run_worker(store, run))
                [variant] = resolve_variants(store, [str(run)])
            else:
                tokenizer = train_tokenizer([r["text"] for r in train])
                folder = random_model(name, tokenizer, root / "models")
                [variant] = resolve_variants(store, ["base"], base_model=str(folder))
            found = measure(store, variant, dataset, args)
            rows.append((name, found))
            print(f"{name}: measured in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        store.close()

    print(f"torch {torch.__version__}, {args.threads} thread(s); perplexity on at most {args.items} test items; "
          f"greedy, {args.tokens} new tokens, median of {args.rounds} rounds in turn\n")
    print("| model | fp32 MB | int8 MB | int8 / fp32 | layers | perplexity fp32 | perplexity int8 | change | "
          "tokens/s fp32 | tokens/s int8 | int8 / fp32 | same greedy tokens |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, found in rows:
        before, after = found["bytes"]["weight_bytes_before"], found["bytes"]["weight_bytes_after"]
        (p0, p1), (s0, s1) = found["ppl"], found["speed"]
        print(f"| {name} | {before / 2**20:.1f} | {after / 2**20:.1f} | {found['ratio']:.3f}x"
              f"{'' if found['ratio'] <= TARGET_BYTES else ' (over target)'} | {found['bytes']['layers']} | "
              f"{p0:.3f} | {p1:.3f} | {100 * (p1 / p0 - 1):+.2f} % | {s0:.1f} | {s1:.1f} | {s1 / s0:.2f}x | "
              f"{100 * found['same_tokens']:.0f} % |")


if __name__ == "__main__":
    main()

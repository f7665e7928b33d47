"""Benchmark: the studio's training loop on a CUDA GPU — bf16, Liger kernels, torch.compile — beside the tools a
user would otherwise pick (Hugging Face ``Trainer`` with padding, TRL ``SFTTrainer`` with packing), in one run.

The model is a Llama of TinyLlama-1.1B's shape (hidden 2048, 22 layers, 32 heads, 4 key/value heads, intermediate
5632, vocabulary 32000) built from its config with random weights, saved to a folder and loaded back as a Hub
model is; the documents are runs of the example stories' words with token lengths drawn log-uniformly in
32-2048, tokenized by a BPE tokenizer trained on the stories (its ids use the first few thousand of the 32000).
Every loop trains in bf16 mixed precision (fp32 weights, bf16 autocast), AdamW at 1e-4 (LoRA 1e-3), batches of
``--batch`` rows of at most ``--seq`` tokens, logging every step, attention ``sdpa``:

- ``studio-*``: ``studio.training.loop.train_in_process`` through the text backend (what the worker runs), text
  packing with documents kept apart (positions restart at each document);
- ``trainer-lora``: ``Trainer`` + ``DataCollatorForLanguageModeling`` (each batch padded to its longest row);
- ``trl-lora``: ``SFTTrainer(packing=True)``.

Each variant is its own process (Liger patches classes; compiled code stays in a process). A step ends when the
GPU has finished it (``torch.cuda.synchronize`` in the step-end hook); the steady state is steps ``--warmup``+1 ..
the last. Useful tokens are the real (non-padding) tokens trained on. MFU: useful tokens/s x the model FLOPs a
token costs (full: 6 x the weights in matmuls; LoRA: 4 x those + 6 x the LoRA weights; attention scores left out,
which understates every loop alike) / the GPU's bf16 peak (989 TFLOP/s for an H200's dense bf16; the measured
8192-cube GEMM rate is printed beside it).

    python bench/gpu_levers.py                    # on a CUDA machine: every variant (about 5 min on an H200)
    python bench/gpu_levers.py --only studio-lora trainer-lora
    .venv/bin/python bench/gpu_levers.py --quick  # CPU smoke run: a tiny Llama, fp32, 4 steps
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("USE_HUB_KERNELS", "NO")  # every loop alike: hub kernels are fetched from the Hub (offline here)

from train_vs_peers import LORA, peer_trainer  # noqa: E402 - the same LoRA and the same peers as on the CPU
SHAPE = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
         "num_key_value_heads": 4, "vocab_size": 32000}  # TinyLlama-1.1B
QUICK_SHAPE = {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "vocab_size": 4000}
VARIANTS = {  # name: (loop, method, studio settings); the order they run in
    "studio-lora": ("studio", "lora", {}),
    "trainer-lora": ("trainer", "lora", {}),
    "trl-lora": ("trl", "lora", {}),
    "studio-lora-liger": ("studio", "lora", {"liger_kernels": True}),
    "studio-full": ("studio", "full", {}),
    "studio-full-liger": ("studio", "full", {"liger_kernels": True}),
    "studio-full-liger-compile": ("studio", "full", {"liger_kernels": True, "torch_compile": True}),
}
H200_BF16_PEAK = 989e12
NEVER = 10 ** 9


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def step_end() -> tuple[float, float]:
    """(when the GPU finished the work queued so far, the GPU's peak memory so far in GiB)."""
    import torch

    if on_gpu():
        torch.cuda.synchronize()
        return time.perf_counter(), torch.cuda.max_memory_allocated() / 2 ** 30
    return time.perf_counter(), 0.0


# ----------------------------------------------------------------------------- one variant, in its own process

def studio_child(args, method: str, settings: dict) -> dict:
    from studio.models.text import TextBackend
    from studio.training.config import TrainConfig
    from studio.training.loop import Hooks, train_in_process

    counted: list[tuple[int, int]] = []

    class CountingTextBackend(TextBackend):
        def collate(self, handle, config):
            inner = super().collate(handle, config)

            def collate(items):
                batch = inner(items)
                mask = batch.get("attention_mask")
                useful = int((batch["labels"] != -100).sum()) if mask is None else int(mask.sum())
                counted.append((useful, int(batch["input_ids"].numel())))
                return batch
            return collate

    gpu = on_gpu()
    config = TrainConfig(
        learning_rate=1e-3 if method == "lora" else 1e-4, lr_scheduler_type="cosine", warmup_steps=10,
        max_steps=args.steps, per_device_train_batch_size=args.batch, max_grad_norm=1.0, optim="adamw",
        mixed_precision="bf16" if gpu else "no", seed=0, eval_steps=NEVER, save_steps=NEVER, save_total_limit=1,
        logging_steps=1, sample_steps=0, use_cpu=not gpu, **settings,
        lora={**LORA, "target_modules": "auto"},
        text={"text_format": "raw", "max_length": args.seq, "packing": True, "separate_documents": True,
              "attn_implementation": "sdpa"})
    rows = [{"id": i, "split": "train", "text": text, "source": f"bench#{i}"}
            for i, text in enumerate(json.loads(Path(args.data).read_text()))]
    ends: list[tuple[float, float]] = []
    backend = CountingTextBackend()
    handle = backend.load(args.folder, method, config)
    hooks = Hooks(log=lambda *_: None, progress=lambda step, total: ends.append(step_end()))
    result = train_in_process(backend, handle, {"train": rows}, Path(args.scratch), config,
                              output_dir=Path(args.scratch) / "out", hooks=hooks)
    losses = [h["value"] for h in result["history"] if h["name"] == "train_loss"]
    return {"ends": [e for e, _ in ends], "peak_gib": max(m for _, m in ends), "losses": losses,
            "tokens": [u for u, _ in counted[:len(ends)]], "slots": [s for _, s in counted[:len(ends)]]}


def peer_child(args, loop: str) -> dict:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    transformers.logging.set_verbosity_error()
    texts = json.loads(Path(args.data).read_text())
    tokenizer = AutoTokenizer.from_pretrained(args.folder)
    ends: list[tuple[float, float]] = []
    counted: list[tuple[int, int]] = []
    losses: list[float] = []

    class StepEnds(TrainerCallback):
        def on_step_end(self, *_args, **_kwargs):
            ends.append(step_end())

        def on_log(self, _args, _state, _control, logs=None, **_kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    def counting(collate):
        def collate_and_count(features):
            batch = collate(features)
            mask = batch.get("attention_mask")
            useful = int(mask.sum()) if mask is not None else int((batch["labels"] != -100).sum())
            counted.append((useful, int(batch["input_ids"].numel())))
            return batch
        return collate_and_count

    gpu = on_gpu()
    common = dict(output_dir=str(Path(args.scratch) / loop), per_device_train_batch_size=args.batch,
                  max_steps=args.steps, learning_rate=1e-3, lr_scheduler_type="cosine", warmup_steps=10,
                  max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[], use_cpu=not gpu, seed=0,
                  disable_tqdm=True, dataloader_num_workers=0, bf16=gpu)
    model = AutoModelForCausalLM.from_pretrained(args.folder, dtype=torch.float32, attn_implementation="sdpa")
    trainer = peer_trainer(loop, model, tokenizer, texts, common, args.seq, counting, StepEnds())
    trainer.train()
    return {"ends": [e for e, _ in ends], "peak_gib": max(m for _, m in ends), "losses": losses,
            "tokens": [u for u, _ in counted[:len(ends)]], "slots": [s for _, s in counted[:len(ends)]]}


def child(args) -> None:
    warnings.filterwarnings("ignore")
    loop, method, settings = VARIANTS[args.child]
    found = studio_child(args, method, settings) if loop == "studio" else peer_child(args, loop)
    print("RESULT " + json.dumps(found))


# ----------------------------------------------------------------------------- the parent: set-up, runs, report

def build(args, scratch: Path) -> tuple[Path, Path, dict]:
    """The model folder, the documents (JSON list of texts) and the model's FLOPs per token."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from studio.data.read_text import split_documents
    from studio.examples.text import make_corpus
    from studio.models.text import train_tokenizer
    from train_overhead import make_documents

    corpus = make_corpus(size_kb=200, seed=0)
    tokenizer = train_tokenizer(split_documents(corpus, "blank_lines"))
    shape = QUICK_SHAPE if args.quick else SHAPE
    torch.manual_seed(1234)
    model = LlamaForCausalLM(LlamaConfig(**shape, max_position_embeddings=max(2048, args.seq),
                                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                         pad_token_id=tokenizer.pad_token_id))
    in_matmuls = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    layers, hidden = shape["num_hidden_layers"], shape["hidden_size"]
    # LoRA r on q/k/v/o: r x (in + out) per projection; k/v are narrower with grouped-query attention
    kv = hidden * shape["num_key_value_heads"] // shape["num_attention_heads"]
    lora = layers * LORA["r"] * ((hidden + hidden) * 2 + (hidden + kv) * 2)
    folder = scratch / "llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    rows = make_documents(corpus.split(), tokenizer, args.docs, 32, min(2048, 4 * args.seq), "log-uniform", seed=1)
    data = scratch / "train.json"
    data.write_text(json.dumps([row["text"] for row in rows]))
    flops = {"full": 6 * in_matmuls, "lora": 4 * in_matmuls + 6 * lora, "in_matmuls": in_matmuls, "lora_weights": lora}
    return folder, data, flops


def run_variant(args, name: str, folder: Path, data: Path, scratch: Path) -> dict:
    command = [sys.executable, __file__, "--child", name, "--folder", str(folder), "--data", str(data),
               "--scratch", str(scratch / name), "--steps", str(args.steps), "--batch", str(args.batch),
               "--seq", str(args.seq)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr or done.stdout)[-1500:], "seconds": time.perf_counter() - started}
    return {**json.loads(lines[-1][len("RESULT "):]), "seconds": time.perf_counter() - started}


def steady(run: dict, warmup: int, per_token: float, peak: float) -> dict:
    ends, last = run["ends"], len(run["ends"])
    seconds = ends[last - 1] - ends[warmup - 1]
    useful = sum(run["tokens"][warmup:last]) / seconds
    return {"tokens_s": useful, "slots_s": sum(run["slots"][warmup:last]) / seconds,
            "step_s": seconds / (last - warmup), "mfu": useful * per_token / peak,
            "real_share": sum(run["tokens"][warmup:last]) / max(1, sum(run["slots"][warmup:last]))}


def gemm_rate() -> float:
    import torch

    if not on_gpu():
        return float("nan")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize()
    return 10 * 2 * 8192 ** 3 / (time.perf_counter() - started)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--docs", type=int, default=1200)
    parser.add_argument("--timeout", type=int, default=150, help="seconds one variant may take")
    parser.add_argument("--save", metavar="JSON", help="write every run's figures here")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: tiny model, 4 steps")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    if args.quick:
        args.steps, args.warmup, args.batch, args.seq, args.docs = 4, 2, 2, 64, 60
        args.only = [v for v in args.only if "liger" not in v and "compile" not in v]

    import torch

    device = torch.cuda.get_device_name() if on_gpu() else "CPU"
    gemm = gemm_rate()
    peak = H200_BF16_PEAK if on_gpu() else float("nan")
    print(f"{device}; torch {torch.__version__}; bf16 8192-cube GEMM {gemm / 1e12:.0f} TFLOP/s", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        started = time.perf_counter()
        folder, data, flops = build(args, scratch)
        print(f"model: {flops['in_matmuls'] / 1e9:.2f} G weights in matmuls, {flops['lora_weights']:,} LoRA; "
              f"set-up {time.perf_counter() - started:.0f} s", flush=True)
        for name in args.only:
            run = run_variant(args, name, folder, data, scratch)
            if "error" in run:
                print(f"{name}: FAILED after {run['seconds']:.0f} s\n{run['error']}", flush=True)
                results[name] = run
                continue
            per_token = flops[VARIANTS[name][1]]
            found = {**steady(run, args.warmup, per_token, peak), "peak_gib": run["peak_gib"],
                     "seconds": run["seconds"], "first_loss": run["losses"][:1], "last_loss": run["losses"][-1:]}
            results[name] = found
            print(f"{name:26s} {found['tokens_s']:10,.0f} useful tokens/s  {found['step_s'] * 1000:7.1f} ms a step  "
                  f"{100 * found['real_share']:3.0f} % real  MFU {100 * found['mfu']:4.1f} %  peak "
                  f"{found['peak_gib']:5.1f} GiB  loss {found['first_loss']} -> {found['last_loss']}  "
                  f"({found['seconds']:.0f} s in all)", flush=True)
            if args.save:
                Path(args.save).write_text(json.dumps({"device": device, "gemm": gemm, "flops": flops,
                                                       "args": vars(args), "results": results}, indent=1))
    report(results)


def report(results: dict) -> None:
    ok = {name: r for name, r in results.items() if "error" not in r}
    print("\n| variant | useful tokens/s | ms a step | real tokens | MFU (of 989 TFLOP/s) | peak GPU memory | "
          "over trainer-lora | over trl-lora |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in ok.items():
        ratios = [f"{r['tokens_s'] / ok[peer]['tokens_s']:.2f}×" if peer in ok and name.startswith("studio-lora")
                  else "" for peer in ("trainer-lora", "trl-lora")]
        print(f"| {name} | {r['tokens_s']:,.0f} | {r['step_s'] * 1000:.1f} | {100 * r['real_share']:.0f} % | "
              f"{100 * r['mfu']:.1f} % | {r['peak_gib']:.1f} GiB | {ratios[0]} | {ratios[1]} |")
    if "studio-full" in ok:
        for name in ("studio-full-liger", "studio-full-liger-compile"):
            if name in ok:
                print(f"{name} over studio-full: {ok[name]['tokens_s'] / ok['studio-full']['tokens_s']:.2f}× tokens/s, "
                      f"peak memory {ok[name]['peak_gib']:.1f} vs {ok['studio-full']['peak_gib']:.1f} GiB")


if __name__ == "__main__":
    main()

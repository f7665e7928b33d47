"""Benchmark: the training loop's speed levers, each on and off in alternating runs of the studio's own loop.

- ``compile``: ``torch_compile`` on the ~20 M-parameter Llama of ``train_vs_peers.py`` (LoRA, packed 8 x 128
  batches): steady steps/s after ``--warmup`` steps, and the first step's time (the compiling).
- ``adamw``: one AdamW step, fused (what the loop builds) against the default (for-each) implementation, over that
  model's LoRA weights and over all its weights (full fine-tuning), timed alone (median of 50).
- ``workers``: ``dataloader_workers`` 2 against 0 on the image starter (pixel-space UNet, LoRA-free ``scratch``)
  with uncached PNG shapes decoded and resized at every step (resolution ``--image-res``).
- ``latents``: ``cache_latents`` on a tiny Stable-Diffusion-class pipeline (UNet, VAE, CLIP text encoder built from
  configs and loaded back from a folder as a Hub id is), LoRA: steady steps/s with and without the cache, and what
  the cache can save at most: the VAE encoding, the text encoder and the image decoding of a batch, timed alone
  (ceiling = the uncached step / the uncached step without them).

    .venv/bin/python bench/train_levers.py                      # every lever (about 15 min on 2 busy cores)
    .venv/bin/python bench/train_levers.py --only latents workers --rounds 3
    .venv/bin/python bench/train_levers.py --quick              # smoke run (about a minute)

torch runs on ``--threads`` threads (1 by default, as the other training benches). Set-up is not timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE), str(HERE.parent / "tests")]
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from train_overhead import Clock, build_model_folder, loadavg, make_config, make_documents, run_studio  # noqa: E402

LEVERS = ["compile", "adamw", "workers", "latents"]
NEVER = 10 ** 9


def med(values) -> float:
    return statistics.median(values)


def alternate(rounds: int, variants: dict, run_one) -> dict[str, list[dict]]:
    """``run_one(variant settings) -> Clock`` for each variant in turn, the order rotating every round."""
    names = list(variants)
    found: dict[str, list] = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            found[name].append(run_one(variants[name]))
            print(f"  round {round_ + 1} {name}: {found[name][-1]['steps_s']:.3f} steps/s", flush=True)
    return found


def timed(clock: Clock, warmup: int, steps: int) -> dict:
    rates = clock.rates(warmup, steps)
    return {**rates, "first_s": clock.stamps[0][0] - clock.started}


class StartedClock(Clock):
    def __init__(self):
        super().__init__()
        self.started = time.perf_counter()


# ----------------------------------------------------------------------------- compile

def lever_compile(args, scratch: Path) -> dict:
    import torch

    from studio.data.read_text import split_documents
    from studio.examples.text import make_corpus
    from studio.models.text import train_tokenizer

    corpus = make_corpus(size_kb=100, seed=0)
    tokenizer = train_tokenizer(split_documents(corpus, "blank_lines"))
    rows = make_documents(corpus.split(), tokenizer, args.docs, 10, 400, "log-uniform", seed=1)
    folder = build_model_folder(scratch / "llama", tokenizer, args.hidden, args.layers, args.seq)
    total = args.warmup + args.steps

    def run_one(compiled: bool) -> dict:
        config = make_config(args, total, packing=True).model_copy(update={"torch_compile": compiled})
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        clock = StartedClock()
        run_studio(folder, rows, config, clock, False, scratch / f"compile-{compiled}")
        counters = torch._dynamo.utils.counters
        return {**timed(clock, args.warmup, args.steps), "graphs": counters["stats"]["unique_graphs"],
                "graph_breaks": sum(counters["graph_break"].values()),
                "break_reasons": sorted(counters["graph_break"], key=counters["graph_break"].get)[-3:]}

    return alternate(args.rounds, {"eager": False, "torch_compile": True}, run_one)


# ----------------------------------------------------------------------------- fused AdamW

def lever_adamw(args, scratch: Path) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=1124, hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
                                         num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64)))
    found = {}
    for weights, params in (("full", list(model.parameters())),
                            ("lora", [p for p in get_peft_model(model, LoraConfig(
                                r=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])).parameters()
                                if p.requires_grad])):
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        for fused in (False, True):
            optimizer = torch.optim.AdamW(params, lr=1e-4, fused=fused, foreach=None if fused else True)
            for _ in range(3):
                optimizer.step()
            times = []
            for _ in range(50):
                started = time.perf_counter()
                optimizer.step()
                times.append(time.perf_counter() - started)
            found[f"{weights} {'fused' if fused else 'for-each'}"] = {
                "ms": 1000 * med(times), "weights": sum(p.numel() for p in params)}
            print(f"  {weights} {'fused' if fused else 'for-each'}: {1000 * med(times):.2f} ms a step", flush=True)
    return found


# ----------------------------------------------------------------------------- image loop levers

def image_rows(folder: Path, per_class: int) -> list[dict]:
    from studio.examples.shapes import make_shapes

    images = make_shapes(folder, per_class, 0)
    return [{"id": i, "split": "train", "file": p.name, "caption": p.with_suffix(".txt").read_text().strip()}
            for i, p in enumerate(images)]


def image_run(model_ref: str, method: str, rows: list[dict], root: Path, settings: dict, args, total: int) -> dict:
    from studio.models.image import ImageBackend
    from studio.training.config import TrainConfig
    from studio.training.loop import Hooks, train_in_process

    config = TrainConfig.model_validate({
        "max_steps": total, "per_device_train_batch_size": args.batch, "learning_rate": 1e-4, "warmup_steps": 0,
        "eval_steps": NEVER, "save_steps": NEVER, "sample_steps": 0, "use_cpu": True, "seed": 0, **settings})
    backend = ImageBackend()
    handle = backend.load(model_ref, method, config, rows)
    clock = StartedClock()
    train_in_process(backend, handle, {"train": rows}, root, config,
                     hooks=Hooks(log=lambda _m: None, progress=lambda step, _total: clock.stamp()))
    return timed(clock, args.warmup, args.steps)


def lever_workers(args, scratch: Path) -> dict:
    rows = image_rows(scratch / "shapes", args.per_class)
    total = args.warmup + args.steps
    image = {"resolution": args.image_res}
    return alternate(args.rounds, {"workers 0": {"image": image}, "workers 2": {"image": image,
                                                                                 "dataloader_workers": 2}},
                     lambda settings: image_run("starter-image", "scratch", rows, scratch / "shapes", settings, args,
                                                total))


def tiny_sd_pipeline(folder: Path, resolution: int) -> Path:
    """A small SD-class pipeline (VAE 4x down, latents of resolution/4), saved as a Hub folder."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from test_image_backend import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer(folder / "vocab")
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    unet = UNet2DConditionModel(sample_size=resolution // 4, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), norm_num_groups=32, cross_attention_dim=64,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(32, 64, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        norm_num_groups=32, sample_size=resolution)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", clip_sample=False)
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder / "tiny-sd", safe_serialization=True)
    return folder / "tiny-sd"


def encoders_alone(pipeline: Path, rows: list[dict], root: Path, args) -> dict:
    """What caching takes out of a step, timed alone on one batch: decoding the images, the VAE, the text encoder."""
    import torch

    from studio.models.image import ImageBackend
    from studio.training.config import TrainConfig

    config = TrainConfig.model_validate({"image": {"resolution": args.image_res}, "use_cpu": True})
    backend = ImageBackend()
    handle = backend.load(str(pipeline), "lora", config)
    dataset = backend.datasets(handle, {"train": rows}, root, config)["train"]
    collate = backend.collate(handle, config)
    module = handle.module

    def decode():
        return collate([dataset[i] for i in range(args.batch)])

    batch = decode()
    parts = {"decode images": decode,
             "VAE encode": lambda: module.vae.encode(batch["pixel_values"]).latent_dist.sample(),
             "text encoder": lambda: module.text_encoder(batch["input_ids"])[0]}
    found = {}
    with torch.no_grad():
        for name, work in parts.items():
            work()
            times = []
            for _ in range(10):  # CPU time, as the ceiling's step (the wall clock counts other people's work)
                started = time.process_time()
                work()
                times.append(time.process_time() - started)
            found[name] = med(times)
    return found


def lever_latents(args, scratch: Path) -> dict:
    rows = image_rows(scratch / "shapes-sd", args.per_class)
    pipeline = tiny_sd_pipeline(scratch, args.image_res)
    total = args.warmup + args.steps
    image = {"resolution": args.image_res}
    found = alternate(args.rounds, {"uncached": {"image": image}, "cached": {"image": {**image, "cache_latents": True}}},
                      lambda settings: image_run(str(pipeline), "lora", rows, scratch / "shapes-sd", settings, args,
                                                 total))
    found["alone"] = encoders_alone(pipeline, rows, scratch / "shapes-sd", args)
    return found


# ----------------------------------------------------------------------------- report

def pair_line(found: dict, base: str, lever: str) -> str:
    """The lever's steps/s over the base's (median of the rounds' ratios), by the wall clock and by this process's
    CPU time (steadier on a shared machine, but blind to work done in other processes: data-loading workers)."""
    ratios = [b["steps_s"] / a["steps_s"] for a, b in zip(found[base], found[lever])]
    cpu = [b["cpu_steps_s"] / a["cpu_steps_s"] for a, b in zip(found[base], found[lever])]
    return (f"{base} {med([r['steps_s'] for r in found[base]]):.3f} steps/s, {lever} "
            f"{med([r['steps_s'] for r in found[lever]]):.3f} steps/s: **{med(ratios):.2f}×** (rounds: "
            f"{', '.join(f'{r:.2f}' for r in ratios)}); by CPU time {med([r['cpu_steps_s'] for r in found[base]]):.3f} "
            f"vs {med([r['cpu_steps_s'] for r in found[lever]]):.3f}: {med(cpu):.2f}×; from the start to the first "
            f"step's end (loading included) {med([r['first_s'] for r in found[base]]):.1f} s vs "
            f"{med([r['first_s'] for r in found[lever]]):.1f} s")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=LEVERS, default=LEVERS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--image-res", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=8, help="shape images per colour and shape (x 12)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.warmup, args.hidden, args.layers, args.docs = 1, 4, 2, 128, 2, 150
        args.image_res, args.per_class = 32, 2

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load {loadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if "compile" in args.only:
            print("compile", flush=True)
            found = lever_compile(args, scratch)
            print("  " + pair_line(found, "eager", "torch_compile"), flush=True)
            last = found["torch_compile"][-1]
            print(f"  compiled: {last['graphs']} graph(s), {last['graph_breaks']} graph break(s); most frequent: "
                  + "; ".join(str(reason)[:160] for reason in last["break_reasons"]), flush=True)
        if "adamw" in args.only:
            print("adamw", flush=True)
            found = lever_adamw(args, scratch)
            for weights in ("full", "lora"):
                plain, fused = found[f"{weights} for-each"], found[f"{weights} fused"]
                print(f"  {weights} ({plain['weights']:,} weights): for-each {plain['ms']:.2f} ms, fused "
                      f"{fused['ms']:.2f} ms: **{plain['ms'] / fused['ms']:.2f}×**")
        for lever, measure, base, other in (("workers", lever_workers, "workers 0", "workers 2"),
                                            ("latents", lever_latents, "uncached", "cached")):
            if lever in args.only:
                print(lever, flush=True)
                found = measure(args, scratch)
                print("  " + pair_line(found, base, other), flush=True)
        if "latents" in args.only:
            step = 1 / med([r["cpu_steps_s"] for r in found["uncached"]])
            saved = sum(found["alone"].values())
            print("  a batch alone: " + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in found["alone"].items())
                  + f" (CPU time); uncached step {1000 * step:.1f} ms of CPU → ceiling {step / max(step - saved, 1e-9):.2f}×")
    print(f"load after {loadavg()}")


if __name__ == "__main__":
    main()

"""Benchmark: what a DPO step costs against an SFT step in the studio, and the studio's DPO against TRL's
``DPOTrainer`` on the same model and pairs.

Set-up (not timed, shared by every run): ``bench/train_overhead.py``'s tiny Llama (random init from a
``LlamaConfig``: hidden 256, 4 layers, saved to a folder and loaded back like a Hub model) and its BPE tokenizer
(with the studio's chat template); preference pairs {prompt, chosen, rejected} cut from the example stories
(prompts ~32 tokens, answers 32-64 tokens), 8 pairs a batch; LoRA r 8, alpha 16, dropout 0 on q/k/v/o (dropout 0
so that policy and reference agree at step 1: the first DPO loss must be ln 2 = 0.693); AdamW at a constant
5e-4, clipping at 1.0, beta 0.1, the sigmoid loss, max length 128, fp32, CPU.

Runs (each in a fresh subprocess, so that its memory is its own):
- ``sft``: the studio's loop (``train_in_process``), objective sft, LoRA, on the chosen answers only (the same
  8 prompt+chosen sequences a batch, response-only loss);
- ``sft-2x``: the same with twice the batch (16 prompt+chosen sequences: as many as a DPO batch), to tell what
  the reference costs from what scoring both answers of a pair costs;
- ``dpo``: objective dpo, LoRA: the reference is the same weights with the adapter off (8 pairs = 16 sequences);
- ``sft-full`` and ``dpo-full``: the same with full fine-tuning (DPO's reference: a frozen copy), for contrast;
- ``trl``: TRL's ``DPOTrainer`` with the same model folder, pairs (conversational, so TRL renders them through
  the same chat template), LoRA config, beta, learning rate, schedule, batch, max length and steps; logging to
  trackers, evaluation and saving off (``report_to`` none, ``eval_strategy``/``save_strategy`` no), gradient
  checkpointing off and fp32 (TRL's defaults are on and bf16), so that what is compared is the training step.

Speed: steps/s over the timed steps after the warm-up ones (stamped after every optimizer step: the studio's
progress hook, a ``TrainerCallback.on_step_end`` for TRL); the runs alternate, the order rotating every round; the
figures are medians over the rounds, the ratios the medians of the ratios within each round. Separate runs drift
with the load of a shared machine, so the studio's DPO and TRL's are also run in "lockstep" (the verdict): one
process, the studio's loop in a thread, the two taking a step each in turn, each clock counting only its own
steps (``Turns``), as train_overhead.py's lockstep does.

Memory: what the training adds, as the process's peak resident set growth: the peak (``VmHWM``) is reset through
``/proc/self/clear_refs`` once the model is loaded (and, for TRL, the trainer built: its dataset tokenised), and
the peak after the run, minus the resident size at the reset, is the growth. RSS rather than torch's allocator
statistics because torch keeps no CPU allocation statistics (``torch.cuda.max_memory_allocated`` has no CPU
twin), and RSS also counts what is not a tensor (TRL's datasets, autograd's bookkeeping). Each run is a fresh
process so that nothing freed by an earlier run is reused.

    .venv/bin/python bench/dpo.py            # full: 6 runs x 3 rounds + 2 lockstep runs, 30 timed steps (~13 min here)
    .venv/bin/python bench/dpo.py --quick    # smoke run: smaller model, sft/dpo + 1 lockstep run, 4 steps (about 40 s)
    .venv/bin/python bench/dpo.py --variants dpo trl --rounds 5

TRL is not a dependency of the studio; the bench needs it: ``pip install trl==1.16.0`` (or
``pip install -e .[bench]``). torch runs on ``--threads`` threads (1 by default, as train_overhead.py).
"""

from __future__ import annotations

import argparse
import json
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from train_overhead import Clock, build_model_folder, cpu_model, loadavg, make_documents  # noqa: E402

VARIANTS = ("sft", "sft-2x", "dpo", "sft-full", "dpo-full", "trl")
QUICK_VARIANTS = ("sft", "dpo")
LOCKSTEP = "lockstep"
TARGET_MEMORY = 1.5   # DPO (LoRA, adapter-off reference) "well under 2x" SFT's memory growth: at most 1.5x
TARGET_SPEED = 1.0    # the studio's DPO at least as fast as TRL's DPOTrainer
LEARNING_RATE, BETA, LORA = 5e-4, 0.1, {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0}
NEVER = 10 ** 9


# ----------------------------------------------------------------------------- memory

def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> int:
    """Resets the process's peak RSS to its current RSS; returns that (KiB)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def peak_growth_mib(baseline_kib: int) -> float:
    return (_status_kib("VmHWM") - baseline_kib) / 1024


# ----------------------------------------------------------------------------- set-up (parent, not timed)

def make_pairs(words: list[str], tokenizer, count: int, seed: int) -> list[dict]:
    """Pair rows: a ~32-token prompt, a chosen and a rejected answer of 32-64 tokens each."""
    prompts = make_documents(words, tokenizer, count, 30, 34, "uniform", seed)
    chosen = make_documents(words, tokenizer, count, 32, 64, "uniform", seed + 1)
    rejected = make_documents(words, tokenizer, count, 32, 64, "uniform", seed + 2)
    return [{"id": n, "split": "train", "prompt": p["text"], "response": c["text"], "rejected": r["text"]}
            for n, (p, c, r) in enumerate(zip(prompts, chosen, rejected))]


# ----------------------------------------------------------------------------- one run (child process)

def studio_run(args, rows: list[dict], variant: str, on_step) -> dict:
    """One run of the studio's loop; ``on_step()`` after every optimizer step (its progress hook)."""
    from studio.models.text import TextBackend
    from studio.training.config import TrainConfig
    from studio.training.loop import Hooks, train_in_process

    objective, method = variant.split("-")[0], "full" if variant.endswith("-full") else "lora"
    config = TrainConfig(learning_rate=LEARNING_RATE, lr_scheduler_type="constant", warmup_steps=0,
                         max_steps=args.warmup + args.steps,
                         per_device_train_batch_size=args.batch * (2 if variant == "sft-2x" else 1),
                         gradient_accumulation_steps=1, max_grad_norm=1.0, optim="adamw", mixed_precision="no",
                         seed=0, eval_steps=NEVER, save_steps=NEVER, save_total_limit=1, logging_steps=1,
                         sample_steps=0, use_cpu=True, objective=objective, preference={"beta": BETA},
                         lora={**LORA, "target_modules": "auto"},
                         text={"text_format": "chat", "max_length": args.max_length, "packing": False})
    widths: list[tuple[int, int]] = []

    class MeasuredTextBackend(TextBackend):
        def collate(self, handle, config):
            inner = super().collate(handle, config)

            def collate(items):
                batch = inner(items)
                widths.append(tuple(batch["input_ids"].shape))
                return batch
            return collate

    backend = MeasuredTextBackend()
    handle = backend.load(args.folder, method, config)
    baseline = reset_peak()
    with tempfile.TemporaryDirectory() as scratch:
        result = train_in_process(backend, handle, {"train": rows}, Path(scratch), config,
                                  hooks=Hooks(log=lambda *_: None, progress=lambda step, total: on_step()))
    memory = peak_growth_mib(baseline)
    losses = [h["value"] for h in result["history"] if h["name"] == "train_loss"]
    return {"memory": memory, "first_loss": losses[0], "last_loss": losses[-1], "widths": widths,
            "trainable": handle.parameter_counts()[0]}


def trl_run(args, rows: list[dict], on_step) -> dict:
    """One run of TRL's DPOTrainer; ``on_step()`` after every optimizer step (a callback's ``on_step_end``)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    losses, widths = [], []

    class Stamp(TrainerCallback):
        def on_step_end(self, *_args, **_kwargs):
            on_step()

        def on_log(self, _args, _state, _control, logs=None, **_kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                  "chosen": [{"role": "assistant", "content": r["response"]}],
                                  "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])
    with tempfile.TemporaryDirectory() as scratch:
        config = DPOConfig(output_dir=scratch, max_steps=args.warmup + args.steps,
                           per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
                           learning_rate=LEARNING_RATE, lr_scheduler_type="constant", warmup_steps=0,
                           weight_decay=0.0, max_grad_norm=1.0, beta=BETA, loss_type=["sigmoid"],
                           max_length=args.max_length, seed=0, use_cpu=True, bf16=False, fp16=False,
                           gradient_checkpointing=False, logging_steps=1, report_to="none", eval_strategy="no",
                           save_strategy="no", dataloader_num_workers=0, dataloader_pin_memory=False,
                           disable_tqdm=True)
        model = AutoModelForCausalLM.from_pretrained(args.folder, dtype=torch.float32)
        trainer = DPOTrainer(model=model, args=config, train_dataset=dataset,
                             processing_class=AutoTokenizer.from_pretrained(args.folder),
                             peft_config=LoraConfig(**LORA, task_type="CAUSAL_LM",
                                                    target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
                             callbacks=[Stamp()])
        inner = trainer.data_collator

        def collate(items):
            batch = inner(items)
            widths.append(tuple(batch["input_ids"].shape))
            return batch
        trainer.data_collator = collate
        baseline = reset_peak()
        trainer.train()
        memory = peak_growth_mib(baseline)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {"memory": memory, "first_loss": losses[0], "last_loss": losses[-1], "widths": widths,
            "trainable": trainable}


def child(args) -> None:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    rows = json.loads(Path(args.pairs_file).read_text())
    if args.child == LOCKSTEP:
        found = lockstep(args, rows)
    else:
        clock = Clock()
        found = trl_run(args, rows, clock.stamp) if args.child == "trl" else studio_run(args, rows, args.child,
                                                                                          clock.stamp)
        found["clock"] = clock
        found = summary(args, found)
    assert torch.get_num_threads() == args.threads, "something changed torch's thread count during the run"
    print("RESULT " + json.dumps(found), flush=True)


def summary(args, found: dict) -> dict:
    rate = found.pop("clock").rates(args.warmup, args.steps)
    timed = found.pop("widths")[args.warmup:args.warmup + args.steps]  # loaders fetch ahead; batches stay in order
    return {**found, **rate, "rows_per_batch": statistics.mean(b[0] for b in timed),
            "width": statistics.mean(b[1] for b in timed)}


class Turns:
    """Two training loops in two threads of one process taking turns a step each (only one runs at a time): each
    side's clock holds only its own time, the other side's steps (wall and CPU) taken out, so both see the same
    moment-to-moment load on the machine."""

    def __init__(self, sides: tuple[str, str]):
        self.sides = sides
        self.go = {side: threading.Event() for side in sides}
        self.done = dict.fromkeys(sides, False)
        self.clocks = {side: Clock() for side in sides}
        self.waited = {side: [0.0, 0.0] for side in sides}

    def other(self, side: str) -> str:
        return self.sides[1 - self.sides.index(side)]

    def step_done(self, side: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        waited = self.waited[side]
        self.clocks[side].stamps.append((wall - waited[0], cpu - waited[1]))
        self.go[side].clear()
        if self.done[self.other(side)]:
            return
        self.go[self.other(side)].set()
        self.go[side].wait()
        waited[0] += time.perf_counter() - wall
        waited[1] += time.process_time() - cpu

    def finish(self, side: str) -> None:
        self.done[side] = True
        self.go[self.other(side)].set()


def lockstep(args, rows: list[dict]) -> dict:
    """The studio's DPO (in a thread) and TRL's DPOTrainer in one process, a step each in turn."""
    turns, found, failed = Turns(("studio", "trl")), {}, []

    def studio_side():
        import torch

        torch.set_num_threads(args.threads)  # OpenMP's thread count is per thread
        turns.go["studio"].wait()
        try:
            found["studio"] = studio_run(args, rows, "dpo", lambda: turns.step_done("studio"))
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failed.append(error)
        finally:
            turns.finish("studio")

    thread = threading.Thread(target=studio_side, daemon=True)
    thread.start()
    try:
        found["trl"] = trl_run(args, rows, lambda: turns.step_done("trl"))
    finally:
        turns.finish("trl")
        thread.join()
    if failed:
        raise failed[0]
    return {side: summary(args, {**found[side], "clock": turns.clocks[side]}) for side in turns.sides}


# ----------------------------------------------------------------------------- the experiment (parent)

def run_child(args, variant: str, folder: Path, pairs: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--folder", str(folder),
               "--pairs-file", str(pairs), "--threads", str(args.threads), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch", str(args.batch), "--max-length", str(args.max_length)]
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{variant} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def med(values) -> float:
    return statistics.median(values)


def print_report(args, info: dict, results: dict[str, list[dict]], locked: list[dict]) -> None:
    print()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch threads {args.threads}; load average before "
          f"{info['load_before']}, after {info['load_after']}; {info['versions']}")
    if args.quick:
        print("QUICK SMOKE RUN: a smaller model and a few steps; the ratios and verdicts below are noise")
    print(f"model: tiny Llama hidden {args.hidden}, {args.layers} layers, vocab {info['vocab']}, "
          f"{info['params']:,} parameters; {args.pairs} pairs, batch {args.batch} pairs, max length "
          f"{args.max_length}; {args.steps} timed steps after {args.warmup} warm-up, {args.rounds} rounds (medians)")
    print(f"{'run':9s} {'steps/s':>8s} {'range':>15s} {'step ms':>8s} {'cpu st/s':>8s} {'rows x width':>13s} "
          f"{'peak +MiB':>10s} {'trainable':>10s} {'loss 1st':>8s} {'last':>7s}")
    for variant, runs in results.items():
        low, high = min(r["steps_s"] for r in runs), max(r["steps_s"] for r in runs)
        print(f"{variant:9s} {med(r['steps_s'] for r in runs):8.3f} {low:7.3f}-{high:<7.3f} "
              f"{med(r['median_step_ms'] for r in runs):8.1f} {med(r['cpu_steps_s'] for r in runs):8.3f} "
              f"{med(r['rows_per_batch'] for r in runs):4.0f} x {med(r['width'] for r in runs):6.1f} "
              f"{med(r['memory'] for r in runs):10.1f} {runs[0]['trainable']:10,} "
              f"{runs[0]['first_loss']:8.4f} {runs[0]['last_loss']:7.4f}")

    def paired(a: str, b: str, key: str) -> float:
        return med(x[key] / y[key] for x, y in zip(results[a], results[b]))

    print()
    if "dpo" in results and "sft" in results:
        memory, time_ = paired("dpo", "sft", "memory"), paired("sft", "dpo", "steps_s")
        print(f"1. DPO (LoRA, adapter-off reference) vs SFT (LoRA): {memory:.2f}x the memory growth, a step takes "
              f"{time_:.2f}x as long -> target: memory well under 2x (at most {TARGET_MEMORY}x): "
              f"{'MET' if memory < TARGET_MEMORY else 'NOT MET'}")
        if "sft-2x" in results:
            print(f"   against SFT on as many sequences (16): {paired('dpo', 'sft-2x', 'memory'):.2f}x the memory growth, "
                  f"{paired('sft-2x', 'dpo', 'steps_s'):.2f}x the step time (what the reference pass costs)")
    if "dpo-full" in results and "sft-full" in results:
        print(f"   full fine-tuning: DPO (frozen copy) {paired('dpo-full', 'sft-full', 'memory'):.2f}x SFT's memory "
              f"growth, {paired('sft-full', 'dpo-full', 'steps_s'):.2f}x its step time")
    speed = None
    if "dpo" in results and "trl" in results:
        speed = paired("dpo", "trl", "steps_s")
        print(f"2. studio DPO vs TRL DPOTrainer, separate runs: {speed:.3f}x TRL's steps/s (paired; cpu "
              f"{paired('dpo', 'trl', 'cpu_steps_s'):.3f}x), {paired('dpo', 'trl', 'memory'):.2f}x its memory growth; "
              f"first losses {results['dpo'][0]['first_loss']:.4f} vs {results['trl'][0]['first_loss']:.4f} "
              f"(ln 2 = 0.6931)")
    if locked:
        studio, trl = [p["studio"] for p in locked], [p["trl"] for p in locked]
        speed = med(a["steps_s"] / b["steps_s"] for a, b in zip(studio, trl))
        print(f"   lockstep ({len(locked)} runs, one process, steps alternating): studio "
              f"{med(r['steps_s'] for r in studio):.3f} vs TRL {med(r['steps_s'] for r in trl):.3f} steps/s "
              f"(median step {med(r['median_step_ms'] for r in studio):.1f} vs "
              f"{med(r['median_step_ms'] for r in trl):.1f} ms; rows x width {med(r['rows_per_batch'] for r in studio):.0f}"
              f" x {med(r['width'] for r in studio):.1f} vs {med(r['rows_per_batch'] for r in trl):.0f} x "
              f"{med(r['width'] for r in trl):.1f}): {speed:.3f}x, cpu "
              f"{med(a['cpu_steps_s'] / b['cpu_steps_s'] for a, b in zip(studio, trl)):.3f}x; first losses "
              f"{studio[0]['first_loss']:.4f} vs {trl[0]['first_loss']:.4f}")
    if speed is not None:
        how = "lockstep" if locked else "separate runs"
        print(f"   -> target: not slower than TRL ({TARGET_SPEED:.2f}x or better, {how}): "
              f"{'MET' if speed >= TARGET_SPEED else 'NOT MET'}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: smaller model, few steps, one round")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of every variant (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default 30)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps per run (default 3)")
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--batch", type=int, default=8, help="pairs per batch (SFT: sequences)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=None, help="preference pairs (default 256)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                        help=f"runs to make (default: all; --quick: {' '.join(QUICK_VARIANTS)})")
    parser.add_argument("--lockstep-rounds", type=int, default=None,
                        help="runs of the studio's DPO and TRL's in one process, steps alternating (default 2)")
    parser.add_argument("--child", choices=VARIANTS + (LOCKSTEP,), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--pairs-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = {"rounds": 1, "steps": 4, "warmup": 2, "hidden": 128, "layers": 2, "pairs": 64,
             "variants": list(QUICK_VARIANTS), "lockstep_rounds": 1}
    full = {"rounds": 3, "steps": 30, "warmup": 3, "hidden": 256, "layers": 4, "pairs": 256, "variants": list(VARIANTS),
            "lockstep_rounds": 2}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.child:
        return child(args)

    import peft
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    from studio.data.read_text import split_documents
    from studio.examples.text import make_corpus
    from studio.models.text import train_tokenizer

    try:
        from importlib.metadata import version
        trl_version = version("trl")
    except Exception:  # noqa: BLE001 - reported, and the trl runs fail with the reason
        trl_version = "not installed (pip install trl==1.16.0)"
    info = {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "load_before": loadavg(),
            "versions": f"torch {torch.__version__}, transformers {transformers.__version__}, peft "
                        f"{peft.__version__}, trl {trl_version}"}
    corpus = make_corpus(size_kb=100, seed=0)
    tokenizer = train_tokenizer(split_documents(corpus, "blank_lines"))
    results: dict[str, list[dict]] = {v: [] for v in args.variants}
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_model_folder(Path(tmp) / "tiny-llama", tokenizer, args.hidden, args.layers, args.max_length)
        pairs = Path(tmp) / "pairs.json"
        pairs.write_text(json.dumps(make_pairs(corpus.split(), tokenizer, args.pairs, seed=1)))
        info["vocab"] = len(tokenizer)
        from transformers import AutoConfig, AutoModelForCausalLM
        info["params"] = sum(p.numel() for p in AutoModelForCausalLM.from_config(
            AutoConfig.from_pretrained(folder)).parameters())
        print(f"torch threads {args.threads}, load {info['load_before']}; "
              f"{'quick smoke run' if args.quick else 'full run'}", flush=True)
        for round_ in range(args.rounds):
            shift = round_ % len(args.variants)
            for variant in args.variants[shift:] + args.variants[:shift]:
                started = loadavg()
                found = run_child(args, variant, folder, pairs)
                found["load"] = started
                results[variant].append(found)
                print(f"  round {round_ + 1}/{args.rounds} {variant:9s} {found['steps_s']:6.3f} steps/s (cpu "
                      f"{found['cpu_steps_s']:6.3f}, median step {found['median_step_ms']:6.1f} ms), peak "
                      f"+{found['memory']:.1f} MiB, first loss {found['first_loss']:.4f}, load {started}", flush=True)
        pairs_locked = []
        for round_ in range(args.lockstep_rounds):
            started = loadavg()
            pair = run_child(args, LOCKSTEP, folder, pairs)
            pair["load"] = started
            pairs_locked.append(pair)
            print(f"  lockstep {round_ + 1}/{args.lockstep_rounds} studio dpo vs trl: {pair['studio']['steps_s']:.3f} "
                  f"vs {pair['trl']['steps_s']:.3f} steps/s (cpu {pair['studio']['cpu_steps_s']:.3f} vs "
                  f"{pair['trl']['cpu_steps_s']:.3f}), load {started}", flush=True)
    info["load_after"] = loadavg()
    print_report(args, info, results, pairs_locked)


if __name__ == "__main__":
    main()

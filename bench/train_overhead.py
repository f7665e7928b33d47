"""Benchmark: what the studio's training loop costs over a minimal PEFT + Accelerate loop, and what text
packing buys over padding.

1. Loop overhead. The same tiny Llama (random init from a ``LlamaConfig``: hidden 256, 4 layers, saved to a
   temporary folder and loaded back like a Hub model), LoRA (r 8, alpha 16, dropout 0.05 on q/k/v/o), the
   same packed data (every batch 8 x 128 tokens), AdamW + cosine schedule, clipping at 1.0, trained by
   - ``minimal``: a hand-written loop (Accelerator.prepare, accumulate, backward, clip, optimizer/scheduler
     step, zero_grad, nothing else);
   - ``studio``: ``studio.training.loop.train_in_process`` (validation, saving and sampling out of the way:
     no validation split, eval_steps/save_steps beyond the run), logging every step (logging_steps 1) into
     its in-memory history;
   - ``studio+db``: the same, with the worker's ``StoreHooks`` writing the metrics, progress and control-flag
     polls to a SQLite store as a real run does.
   Separate runs alternate (the order rotates every round), each timed over its steps after a few warm-up
   steps; the figures are medians over the rounds, the studio/minimal ratio the median of the ratios within
   each round. Both loops see the same weights, LoRA init, seeds and batches, so their losses must agree
   (checked, printed). On a machine others are using, separate runs drift with the load by more than the
   difference sought, so each studio variant is also run in "lockstep" with the minimal loop: one process,
   the minimal loop taking one step inside every studio progress hook, each loop's clock counting only its
   own steps. The verdict uses the lockstep ratio (the separate-run and CPU-time ratios are printed too).
2. Packing. Documents of very different lengths (token lengths drawn log-uniformly in 10-400, and a
   uniformly drawn set as a second case), ``config.text.packing`` True vs False through TextBackend's
   datasets and collate, trained by the studio's loop with the same model and batch settings; useful
   (non-padding) tokens per second = the attention-mask sum of the batches of the timed steps / their time.
   Packing runs twice: documents kept apart (``separate_documents``, the default: positions restart and
   attention stays within each document) and documents that see each other, which prices the mask.

    .venv/bin/python bench/train_overhead.py            # full: 60 timed steps per run (about 20 min on 2 busy cores)
    .venv/bin/python bench/train_overhead.py --quick    # smoke run: smaller model, 6 steps, 1 round (under a minute)
    .venv/bin/python bench/train_overhead.py --only overhead --threads 2 --rounds 3
    .venv/bin/python bench/train_overhead.py --only mask --steps 40   # what keeping packed documents apart costs

torch runs on ``--threads`` threads (1 by default: for models this small, two OpenMP threads on a busy
two-core machine mostly wait for each other). Setting up (tokenizer, model folder, datasets) is not timed.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

TARGET_OVERHEAD = 0.05   # the studio loop within 5 % of the minimal loop
TARGET_PACKING = 1.5     # packing: at least 1.5x the useful tokens/s of padding
# packing: documents kept apart (the default); shared: packed documents see each other (separate_documents off)
PACKING_MODES = ["packing", "shared", "padding"]


def _noop(*_args, **_kwargs):
    return None


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


# ----------------------------------------------------------------------------- set-up (not timed)

def make_documents(words: list[str], tokenizer, count: int, low: int, high: int, shape: str,
                   seed: int) -> list[dict]:
    """``count`` raw-text rows whose token lengths (with <s> and </s>) are drawn in [low, high], log-uniformly
    or uniformly: runs of consecutive words of the example corpus, trimmed to the drawn length."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        target = (round(math.exp(rng.uniform(math.log(low), math.log(high)))) if shape == "log-uniform"
                  else rng.randint(low, high))
        start = rng.randrange(0, len(words) - high)
        n = max(1, target - 2)
        text = " ".join(words[start:start + n])
        while (excess := len(tokenizer(text)["input_ids"]) + 1 - target) > 0 and n > 1:  # + 1: </s>
            n = max(1, n - excess)  # every word is at least one token
            text = " ".join(words[start:start + n])
        rows.append({"id": i, "split": "train", "text": text, "source": f"bench#{i}"})
    return rows


def build_model_folder(folder: Path, tokenizer, hidden: int, layers: int, seq: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1234)
    heads = max(1, hidden // 64)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=int(hidden * 8 / 3 + 63) // 64 * 64,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max(512, seq), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_config(args, total_steps: int, packing: bool, separate: bool = True):
    from studio.training.config import TrainConfig

    never = 10 ** 9
    return TrainConfig(learning_rate=1e-3, lr_scheduler_type="cosine", warmup_steps=10, max_steps=total_steps,
                       per_device_train_batch_size=args.batch, gradient_accumulation_steps=1, max_grad_norm=1.0,
                       optim="adamw", mixed_precision="no", seed=0, eval_steps=never, save_steps=never,
                       save_total_limit=1, logging_steps=1, sample_steps=0, use_cpu=True,
                       lora={"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "auto"},
                       text={"text_format": "raw", "max_length": args.seq, "packing": packing,
                             "separate_documents": separate})


# ----------------------------------------------------------------------------- timing

class Clock:
    """A (wall, cpu) stamp after every optimizer step."""

    def __init__(self):
        self.stamps: list[tuple[float, float]] = []

    def stamp(self) -> None:
        self.stamps.append((time.perf_counter(), time.process_time()))

    def rates(self, warmup: int, steps: int) -> dict:
        """Steps/s over steps warmup+1 .. warmup+steps (stamp i is taken after step i+1)."""
        s = self.stamps
        if len(s) < warmup + steps or warmup < 1:
            raise RuntimeError(f"only {len(s)} steps stamped (need {warmup + steps}, warm-up >= 1)")
        wall = s[warmup + steps - 1][0] - s[warmup - 1][0]
        cpu = s[warmup + steps - 1][1] - s[warmup - 1][1]
        per_step = [s[i][0] - s[i - 1][0] for i in range(warmup, warmup + steps)]
        return {"steps_s": steps / wall, "cpu_steps_s": steps / cpu, "wall": wall,
                "median_step_ms": 1000 * statistics.median(per_step)}


def prepare_minimal(folder: Path, dataset, collate, config):
    """The reference: PEFT + Accelerate and nothing else. Built in the studio's order (seed, weights, LoRA,
    Accelerator, seed again, loader, optimizer, scheduler) so both loops draw the same random numbers.
    Returns ``step()``: one optimizer step (a new epoch when the loader runs out), giving back the loss."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM, get_scheduler

    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, use_safetensors=True)
    lora = config.lora
    model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                                             task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=config.gradient_accumulation_steps)
    set_seed(config.seed)
    loader = DataLoader(dataset, batch_size=config.per_device_train_batch_size, shuffle=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(config.seed))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.lr_scheduler_type, optimizer,
                              num_warmup_steps=min(config.warmup_steps, config.max_steps),
                              num_training_steps=config.max_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    model.train()
    batches = iter(loader)

    def step():
        nonlocal batches
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        with accelerator.accumulate(model):
            loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"]).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        return loss.detach()

    return step


def run_minimal(folder: Path, dataset, collate, config, clock: Clock) -> list[float]:
    step = prepare_minimal(folder, dataset, collate, config)
    losses = []
    for _ in range(config.max_steps):
        losses.append(step())
        clock.stamp()
    return [float(x) for x in losses]


def counting_backend():
    """A TextBackend whose collate notes each batch's (useful tokens, rows, width); useful = attention mask."""
    from studio.models.text import TextBackend

    class CountingTextBackend(TextBackend):
        def __init__(self):
            self.batches: list[tuple[int, int, int]] = []

        def collate(self, handle, config):
            inner = super().collate(handle, config)

            def collate(items):
                batch = inner(items)
                self.batches.append((int(batch["attention_mask"].sum()), *batch["input_ids"].shape))
                return batch
            return collate

    return CountingTextBackend()


def make_store_hooks(scratch: Path, on_progress):
    """The worker's StoreHooks on a fresh SQLite store (with the project/dataset/run rows a real run has),
    calling ``on_progress(step, total)`` after each step's progress report."""
    from studio.settings import load_settings
    from studio.store import open_store
    from studio.store.tables import Dataset, DatasetVersion, Project, Run
    from studio.training.worker import StoreHooks

    store = open_store(load_settings(home=scratch / "studio_home"))
    with store.session() as session:
        project = Project(name="bench")
        session.add(project)
        session.flush()
        dataset = Dataset(project_id=project.id, name="bench", modality="text")
        session.add(dataset)
        session.flush()
        version = DatasetVersion(dataset_id=dataset.id, version=1, path="datasets/bench/v1")
        session.add(version)
        session.flush()
        run = Run(project_id=project.id, dataset_version_id=version.id, model_ref="tiny", method="lora",
                  modality="text", status="running", output_dir="runs/1")
        session.add(run)
        session.flush()
        run_id = run.id

    class TimedStoreHooks(StoreHooks):
        def progress_(self, step: int, total: int) -> None:
            super().progress_(step, total)
            on_progress(step, total)

    hooks = TimedStoreHooks(store, run_id)
    hooks.log = _noop
    return store, hooks, run_id


def run_studio(folder: Path, rows: list[dict], config, clock: Clock, with_store: bool, scratch: Path,
               progress=None):
    """The studio's loop; returns (losses, backend) — the backend holds the batches' token counts.
    ``progress`` replaces the clock's stamp as what is called after each step's progress report."""
    from studio.training.loop import Hooks, train_in_process

    backend = counting_backend()
    handle = backend.load(str(folder), "lora", config)
    store = None
    progress = progress or (lambda step, total: clock.stamp())
    if with_store:
        store, hooks, run_id = make_store_hooks(scratch, progress)
    else:
        hooks = Hooks(log=_noop, progress=progress)
    try:
        result = train_in_process(backend, handle, {"train": rows}, scratch, config,
                                  output_dir=scratch / "studio_home" / "runs" / "1", hooks=hooks)
        if with_store:
            hooks.flush()
            from sqlalchemy import func, select

            from studio.store.tables import Metric
            with store.session() as session:
                written = session.scalar(select(func.count()).select_from(Metric).where(Metric.run_id == run_id))
            assert written > 0, "StoreHooks wrote no metrics"
        losses = [h["value"] for h in result["history"] if h["name"] == "train_loss"]
    finally:
        if store is not None:
            store.close()
    return losses, backend


# ----------------------------------------------------------------------------- the two experiments

def run_lockstep(folder: Path, rows: list[dict], dataset, collate, config, scratch: Path,
                 with_store: bool) -> tuple[Clock, Clock]:
    """Both loops in one process, their steps alternating: after each studio step (in its progress hook) the
    minimal loop takes one step. Each loop's clock holds only its own steps' time, and both loops see the
    same moment-to-moment load on the machine. (The two loops share torch's random generator here, so
    their dropout masks, and losses, differ from the separate runs'.)"""
    studio, minimal = Clock(), Clock()
    wall = cpu = 0.0           # time spent in the minimal loop so far, kept out of the studio's clock
    mini_step = prepare_minimal(folder, dataset, collate, config)

    def progress(step: int, total: int) -> None:
        nonlocal wall, cpu
        t0, c0 = time.perf_counter(), time.process_time()
        studio.stamps.append((t0 - wall, c0 - cpu))   # the studio's own time: the minimal loop's taken out
        mini_step()
        t1, c1 = time.perf_counter(), time.process_time()
        wall, cpu = wall + t1 - t0, cpu + c1 - c0
        minimal.stamps.append((wall, cpu))            # the minimal loop's time, summed step by step

    run_studio(folder, rows, config, studio, with_store, scratch, progress=progress)
    return studio, minimal


def loop_overhead(args, folder: Path, rows: list[dict]) -> dict:
    from studio.models.text import TextBackend

    total = args.warmup + args.steps
    config = make_config(args, total, packing=True)
    probe = TextBackend()
    handle = probe.load(str(folder), "lora", config)
    dataset = probe.datasets(handle, {"train": rows}, Path("."), config)["train"]
    collate = probe.collate(handle, config)
    if len(dataset) < total * args.batch:
        raise SystemExit(f"the packed dataset has {len(dataset)} blocks; {total * args.batch} needed for one epoch")
    variants = ["minimal", "studio"] + ([] if args.no_store else ["studio+db"])
    results: dict[str, list[dict]] = {v: [] for v in variants}
    losses: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        order = variants[round_ % len(variants):] + variants[:round_ % len(variants)]
        for variant in order:
            clock = Clock()
            with tempfile.TemporaryDirectory() as scratch:
                started_load = loadavg()
                if variant == "minimal":
                    run_losses = run_minimal(folder, dataset, collate, config, clock)
                else:
                    run_losses, _ = run_studio(folder, rows, config, clock, variant == "studio+db", Path(scratch))
            rate = clock.rates(args.warmup, args.steps)
            rate["load"] = started_load
            results[variant].append(rate)
            losses.setdefault(variant, run_losses)
            print(f"  round {round_ + 1}/{args.rounds} {variant:10s} {rate['steps_s']:6.3f} steps/s (cpu "
                  f"{rate['cpu_steps_s']:6.3f}, median step {rate['median_step_ms']:6.1f} ms, load {started_load})",
                  flush=True)
    lockstep: dict[str, list[dict]] = {v: [] for v in variants[1:]}
    for round_ in range(args.lockstep_rounds):
        for variant in variants[1:]:
            with tempfile.TemporaryDirectory() as scratch:
                started_load = loadavg()
                studio, minimal = run_lockstep(folder, rows, dataset, collate, config, Path(scratch),
                                               with_store=variant == "studio+db")
            pair = {"studio": studio.rates(args.warmup, args.steps),
                    "minimal": minimal.rates(args.warmup, args.steps), "load": started_load}
            lockstep[variant].append(pair)
            print(f"  lockstep {round_ + 1}/{args.lockstep_rounds} {variant:10s} vs minimal: "
                  f"{pair['studio']['steps_s']:6.3f} vs {pair['minimal']['steps_s']:6.3f} steps/s (median step "
                  f"{pair['studio']['median_step_ms']:.1f} vs {pair['minimal']['median_step_ms']:.1f} ms, "
                  f"load {started_load})", flush=True)
    agree = max(abs(a - b) for a, b in zip(losses["minimal"], losses["studio"]))
    return {"results": results, "lockstep": lockstep, "loss_diff": agree, "variants": variants,
            "blocks": len(dataset), "first_loss": losses["minimal"][0], "last_loss": losses["minimal"][-1]}


def packing_gain(args, folder: Path, rows_by_case: dict[str, list[dict]]) -> dict:
    total = args.warmup + args.steps
    out = {}
    for case, rows in rows_by_case.items():
        per_mode: dict[str, list[dict]] = {mode: [] for mode in PACKING_MODES}
        for round_ in range(args.packing_rounds):
            order = PACKING_MODES[round_ % 3:] + PACKING_MODES[:round_ % 3]
            for mode in order:
                config = make_config(args, total, packing=mode != "padding", separate=mode == "packing")
                clock = Clock()
                with tempfile.TemporaryDirectory() as scratch:
                    started_load = loadavg()
                    _, backend = run_studio(folder, rows, config, clock, False, Path(scratch))
                rate = clock.rates(args.warmup, args.steps)
                # accelerate's loader fetches a batch ahead; batches are still used in order: batch i is step i+1's
                timed = backend.batches[args.warmup:args.warmup + args.steps]
                useful = sum(b[0] for b in timed)
                slots = sum(b[1] * b[2] for b in timed)
                rate.update(useful_tok_s=useful / rate["wall"], useful_per_step=useful / len(timed),
                            useful_share=useful / slots, width=statistics.mean(b[2] for b in timed),
                            load=started_load)
                per_mode[mode].append(rate)
                print(f"  {case} round {round_ + 1}/{args.packing_rounds} {mode:8s} {rate['useful_tok_s']:8.0f} "
                      f"useful tok/s ({rate['steps_s']:.3f} steps/s, {rate['useful_per_step']:.0f} useful "
                      f"tokens/step, share {rate['useful_share']:.0%}, load {started_load})", flush=True)
        from studio.models.text import TextBackend
        backend = TextBackend()
        config = make_config(args, total, packing=False)
        handle = backend.load(str(folder), "lora", config)
        tokenizer = handle.parts.tokenizer
        lengths = [len(ids) + 1 for ids in tokenizer([r["text"] for r in rows])["input_ids"]]
        stats = {"docs": len(rows), "tokens": sum(lengths), "min": min(lengths), "median": statistics.median(lengths),
                 "max": max(lengths), "truncated": sum(max(0, n - args.seq) for n in lengths) / sum(lengths)}
        out[case] = {"modes": per_mode, "stats": stats, "mask": mask_cost(args, folder, rows)}
    return out


def mask_cost(args, folder: Path, rows: list[dict]) -> dict:
    """What keeping packed documents apart costs a step, measured in lockstep: one LoRA model, the same packed
    tokens collated both ways (with restarting ``position_ids``, and without), forward + backward on each in turn
    (no optimizer step: the weights stay put), so both see the same moment-to-moment load."""
    from studio.models.text import TextBackend

    backend = TextBackend()
    handle = backend.load(str(folder), "lora", make_config(args, 1, True))
    batches = {}
    for separate in (True, False):
        config = make_config(args, 1, True, separate=separate)
        data = backend.datasets(handle, {"train": rows}, Path("."), config)["train"]
        collate = backend.collate(handle, config)
        batches[separate] = [collate([data[i] for i in range(k, k + args.batch)])
                             for k in range(0, 8 * args.batch, args.batch)]
    times: dict[bool, list[float]] = {True: [], False: []}
    handle.module.train()
    for step in range(args.warmup + args.steps):
        for separate in ((True, False) if step % 2 == 0 else (False, True)):
            started = time.perf_counter()
            handle.module(batches[separate][step % 8]).backward()
            if step >= args.warmup:
                times[separate].append(time.perf_counter() - started)
    return {"apart_ms": 1000 * med(times[True]), "shared_ms": 1000 * med(times[False]),
            "ratio": med(a / b for a, b in zip(times[True], times[False]))}


# ----------------------------------------------------------------------------- report

def med(values) -> float:
    return statistics.median(values)


def print_report(args, info: dict, overhead: dict | None, packing: dict | None) -> None:
    print()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch threads {args.threads}; "
          f"load average before {info['load_before']}, after {info['load_after']}")
    if args.quick:
        print("QUICK SMOKE RUN: a smaller model and a few steps; the ratios and verdicts below are noise, "
              "not measurements")
    print(f"model: tiny Llama hidden {args.hidden}, {args.layers} layers, vocab {info['vocab']}, LoRA r 8 on q/k/v/o "
          f"({info['trainable']:,} trainable of {info['params']:,}); batch {args.batch} x {args.seq} tokens; "
          f"{args.steps} timed steps after {args.warmup} warm-up; torch {info['torch']}")
    if overhead:
        res = overhead["results"]
        base = med(r["steps_s"] for r in res["minimal"])
        base_cpu = med(r["cpu_steps_s"] for r in res["minimal"])
        print()
        print(f"1. loop overhead ({args.rounds} rounds, medians; packed data, {overhead['blocks']} blocks)")
        print(f"{'loop':12s} {'steps/s':>8s} {'range':>15s} {'step ms':>8s} {'cpu steps/s':>11s} {'vs minimal':>11s} "
              f"{'paired':>8s}")
        for variant in overhead["variants"]:
            rows = res[variant]
            rate = med(r["steps_s"] for r in rows)
            paired = [r["steps_s"] / m["steps_s"] for r, m in zip(rows, res["minimal"])]
            low, high = min(r["steps_s"] for r in rows), max(r["steps_s"] for r in rows)
            print(f"{variant:12s} {rate:8.3f} {low:7.3f}-{high:<7.3f} "
                  f"{med(r['median_step_ms'] for r in rows):8.1f} {med(r['cpu_steps_s'] for r in rows):11.3f} "
                  f"{rate / base:10.3f}x {med(paired):7.3f}x")
        if any(overhead["lockstep"].values()):
            print(f"lockstep: both loops in one process, steps alternating ({args.lockstep_rounds} runs each, medians)")
            print(f"{'loop':12s} {'steps/s':>8s} {'minimal':>8s} {'step ms':>8s} {'minimal':>8s} {'ratio':>7s} "
                  f"{'cpu ratio':>9s}")
            for variant, pairs in overhead["lockstep"].items():
                st, m = [p["studio"] for p in pairs], [p["minimal"] for p in pairs]
                print(f"{variant:12s} {med(r['steps_s'] for r in st):8.3f} {med(r['steps_s'] for r in m):8.3f} "
                      f"{med(r['median_step_ms'] for r in st):8.1f} {med(r['median_step_ms'] for r in m):8.1f} "
                      f"{med(a['steps_s'] / b['steps_s'] for a, b in zip(st, m)):6.3f}x "
                      f"{med(a['cpu_steps_s'] / b['cpu_steps_s'] for a, b in zip(st, m)):8.3f}x")
        for variant in overhead["variants"][1:]:
            paired = med(r["steps_s"] / m["steps_s"] for r, m in zip(res[variant], res["minimal"]))
            cpu = med(r["cpu_steps_s"] for r in res[variant]) / base_cpu
            pairs = overhead["lockstep"].get(variant) or []
            locked = med(p["studio"]["steps_s"] / p["minimal"]["steps_s"] for p in pairs) if pairs else None
            judged = locked if locked is not None else paired
            verdict = "MET" if 1 - judged <= TARGET_OVERHEAD else "NOT MET"
            how = "lockstep" if pairs else "separate runs, paired"
            print(f"   {variant}: {judged:.3f}x minimal's steps/s ({how}); separate runs: {paired:.3f}x paired wall, "
                  f"{cpu:.3f}x cpu time -> target: within {TARGET_OVERHEAD:.0%} ({1 - TARGET_OVERHEAD:.2f}x or "
                  f"better): {verdict}")
        print(f"   losses of the two loops agree to {overhead['loss_diff']:.2e} (first {overhead['first_loss']:.3f}, "
              f"last {overhead['last_loss']:.3f})")
    if packing:
        print()
        print(f"2. packing vs padding (studio loop, {args.packing_rounds} rounds, medians; max_length {args.seq})")
        print(f"{'documents':26s} {'mode':8s} {'useful tok/s':>12s} {'steps/s':>8s} {'useful/step':>11s} "
              f"{'share':>6s} {'width':>6s} {'gain':>6s}")
        for case, found in packing.items():
            s = found["stats"]
            label = f"{case} ({s['docs']} docs)"
            base = med(r["useful_tok_s"] for r in found["modes"]["padding"])
            for mode in PACKING_MODES:
                rows = found["modes"][mode]
                rate = med(r["useful_tok_s"] for r in rows)
                print(f"{label:26s} {mode:8s} {rate:12.0f} {med(r['steps_s'] for r in rows):8.3f} "
                      f"{med(r['useful_per_step'] for r in rows):11.0f} {med(r['useful_share'] for r in rows):6.0%} "
                      f"{med(r['width'] for r in rows):6.1f} {rate / base:5.2f}x")
                label = ""
            pk, pd = found["modes"]["packing"], found["modes"]["padding"]
            gain = med(a["useful_tok_s"] / b["useful_tok_s"] for a, b in zip(pk, pd))
            print(f"   {case}: token lengths {s['min']}-{s['max']} (median {s['median']:.0f}), {s['tokens']:,} "
                  f"tokens; padding truncates {s['truncated']:.0%} of them away. Packing gain (paired) {gain:.2f}x "
                  f"-> target >= {TARGET_PACKING}x: {'MET' if gain >= TARGET_PACKING else 'NOT MET'}")
            apart = med(a["steps_s"] / b["steps_s"] for a, b in zip(pk, found["modes"]["shared"]))
            print(f"   keeping packed documents apart (positions restart, attention within each document): "
                  f"{apart:.3f}x the steps/s of packing that lets them see each other (paired separate runs)")
            cost = found["mask"]
            print(f"   lockstep forward+backward: {cost['apart_ms']:.1f} ms apart vs {cost['shared_ms']:.1f} ms "
                  f"seeing each other a step (median ratio {cost['ratio']:.3f})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: smaller model, few steps, one round")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--rounds", type=int, default=None, help="loop-overhead rounds (default 5)")
    parser.add_argument("--packing-rounds", type=int, default=None, help="packing rounds per case (default 3)")
    parser.add_argument("--lockstep-rounds", type=int, default=None,
                        help="runs of both loops in one process, steps alternating (default 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default 60)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps per run (default 5)")
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--docs", type=int, default=None, help="documents per mixed-length set (default 1000)")
    parser.add_argument("--only", choices=["overhead", "packing", "mask"], default=None,
                        help="mask: only the lockstep cost of keeping packed documents apart")
    parser.add_argument("--no-store", action="store_true", help="leave out the studio+db (SQLite StoreHooks) variant")
    parser.add_argument("--no-uniform", action="store_true", help="packing: only the log-uniform documents")
    args = parser.parse_args(argv)
    quick = {"rounds": 1, "lockstep_rounds": 1, "packing_rounds": 1, "steps": 6, "warmup": 2, "hidden": 128,
             "layers": 2, "docs": 300}
    full = {"rounds": 5, "lockstep_rounds": 2, "packing_rounds": 3, "steps": 60, "warmup": 5, "hidden": 256,
            "layers": 4, "docs": 1000}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.no_uniform = True

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.threads)
    from studio.data.read_text import split_documents
    from studio.examples.text import make_corpus
    from studio.models.text import TextBackend, train_tokenizer

    info = {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "load_before": loadavg(),
            "torch": torch.__version__}
    corpus = make_corpus(size_kb=100, seed=0)
    tokenizer = train_tokenizer(split_documents(corpus, "blank_lines"))
    words = corpus.split()
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_model_folder(Path(tmp) / "tiny-llama", tokenizer, args.hidden, args.layers, args.seq)
        cases = {"log-uniform 10-400": make_documents(words, tokenizer, args.docs, 10, 400, "log-uniform", seed=1)}
        if not args.no_uniform:
            cases["uniform 10-400"] = make_documents(words, tokenizer, args.docs, 10, 400, "uniform", seed=2)
        handle = TextBackend().load(str(folder), "lora", make_config(args, 1, True))
        info["trainable"], info["params"] = handle.parameter_counts()
        info["vocab"] = len(tokenizer)
        print(f"torch threads {torch.get_num_threads()}, load {info['load_before']}; "
              f"{'quick smoke run' if args.quick else 'full run'}", flush=True)
        overhead = packing = None
        if args.only in (None, "overhead"):
            print("1. loop overhead", flush=True)
            overhead = loop_overhead(args, folder, cases["log-uniform 10-400"])
        if args.only in (None, "packing"):
            print("2. packing vs padding", flush=True)
            packing = packing_gain(args, folder, cases)
        if args.only == "mask":
            cost = mask_cost(args, folder, cases["log-uniform 10-400"])
            print(f"keeping packed documents apart, lockstep forward+backward ({args.steps} steps each): "
                  f"{cost['apart_ms']:.1f} ms vs {cost['shared_ms']:.1f} ms a step when they see each other "
                  f"(median ratio {cost['ratio']:.3f})")
        assert torch.get_num_threads() == args.threads, "something changed torch's thread count during the runs"
    info["load_after"] = loadavg()
    print_report(args, info, overhead, packing)


if __name__ == "__main__":
    main()

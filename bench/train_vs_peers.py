"""Benchmark: the studio's LoRA training against the tools a user would otherwise pick, side by side.

Three loops train the same ~20 M-parameter Llama (random init from a ``LlamaConfig``: hidden 512, 6 layers, 8
heads, vocabulary ~1.1 k from a BPE tokenizer trained on the example stories; saved to a folder and loaded back as
a Hub model is) with the same LoRA (r 8, alpha 16, dropout 0.05 on q/k/v/o), AdamW at 1e-3, cosine schedule after
10 warm-up steps, clipping at 1.0, fp32, batches of 8 rows of at most 128 tokens, logging every step, on the same
documents (token lengths log-uniform in 10-400, imported once through ``studio data import``; the peers read the
imported training split back):

- ``studio``: ``studio train --dataset ... --model FOLDER --method lora`` as a user runs it (the CLI queues the
  run, starts the worker with ``accelerate launch``, which writes its metrics to the store); its text packing keeps
  documents apart (positions restart at each document: attention stays within it);
- ``trainer``: Hugging Face ``Trainer`` with ``DataCollatorForLanguageModeling`` (each batch padded to its
  longest row, the common recipe), documents truncated at 128 tokens;
- ``trl``: TRL ``SFTTrainer`` with ``packing=True`` (best-fit packing, padding-free: position ids restart per
  document, so it too keeps documents apart).

Each run is its own process; the loops alternate (the order rotates every round). A step's time is from the end of
the step before to its end (data loading, forward, backward, optimizer, logging: everything a user waits for); the
steady state is steps ``--warmup``+1 .. the last. Useful tokens are the real (non-padding) tokens of the batches
those steps trained on; "slots" count padding too (what the model computed).

MFU (model FLOPs utilisation): useful tokens/s x the model FLOPs a token costs / this CPU's own fp32 matmul rate,
measured with a large GEMM on the same thread count just before each run (on a shared machine the rate a run can
get moves with the load; each run is held against the rate measured beside it). With LoRA the frozen weights take no gradient, so a
token costs 2 x M (forward) + 2 x M (backward through the activations) for the M weights in matmuls (every
linear layer and the head; the embedding lookup is none), plus 6 x the LoRA weights; attention scores
(``QK^T``, ``AV``: at most 2 x 2 x 128 x 512 per token and layer, under 3 % here) are left out, which understates
every loop's MFU alike. ``--profile`` breaks one forward + backward into matmul and the rest (torch.profiler).

    .venv/bin/python bench/train_vs_peers.py                 # 3 rounds, 25 steps a run (about 20 min on 2 busy cores)
    .venv/bin/python bench/train_vs_peers.py --quick         # smoke run: small model, 6 steps, 1 round
    .venv/bin/python bench/train_vs_peers.py --rounds 2 --steps 20 --profile
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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

from train_overhead import build_model_folder, cpu_model, loadavg, make_documents  # noqa: E402

LOOPS = ["studio", "trainer", "trl"]
TARGETS = {"trainer": 2.5, "trl": 1.8}  # the studio's useful tokens/s over each peer's (issue 16)
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05}
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]  # the Llama family's 'auto' preset
NEVER = 10 ** 9


# ----------------------------------------------------------------------------- the studio, through its CLI

def cli_env(home: Path | None, threads: int) -> dict:
    return {**os.environ, **({"STUDIO_HOME": str(home)} if home else {}), "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}


def studio_cli(home: Path, threads: int, *words: str) -> str:
    done = subprocess.run([sys.executable, "-m", "studio.cli", *words], cwd=ROOT, env=cli_env(home, threads),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"studio {' '.join(words[:2])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def import_documents(home: Path, rows: list[dict], scratch: Path) -> tuple[int, list[str]]:
    """The documents as a dataset (``studio data import``); returns its id and the training split's texts."""
    from studio.data.service import get_version, read_manifest
    from studio.settings import load_settings
    from studio.store import open_store

    source = scratch / "documents.jsonl"
    source.write_text("".join(json.dumps({"text": row["text"]}) + "\n" for row in rows))
    answer = json.loads(studio_cli(home, 1, "data", "import", str(source), "--name", "bench", "--modality", "text",
                                   "--split", "0.95,0.05,0", "--json").strip().splitlines()[-1])
    store = open_store(load_settings(home=home))
    train = read_manifest(store, get_version(store, f"{answer['dataset_id']}"), "train")
    return answer["dataset_id"], [row["text"] for row in train]


def run_studio(args, home: Path, dataset_id: int, folder: Path) -> dict:
    """One ``studio train``; its per-step timings and token counts read back from the run's metrics."""
    from sqlalchemy import select

    from studio.settings import load_settings
    from studio.store import open_store
    from studio.store.tables import Metric, Run

    settings = ["learning_rate=1e-3", "lr_scheduler_type=cosine", "warmup_steps=10", "max_grad_norm=1.0",
                f"per_device_train_batch_size={args.batch}", "logging_steps=1", f"eval_steps={NEVER}",
                f"save_steps={NEVER}", "sample_steps=0", "seed=0", "use_cpu=true", "text_format=raw",
                f"max_length={args.seq}", "packing=true", "separate_documents=true", "target_modules=auto",
                *(f"{k}={v}" for k, v in LORA.items()), *args.studio_set]
    store = open_store(load_settings(home=home))
    with store.session() as session:
        before = session.scalars(select(Run.id).order_by(Run.id.desc())).first() or 0
    command = studio_process(home, args.threads, "train", "--dataset", str(dataset_id), "--model", str(folder),
                             "--method", "lora", "--max-steps", str(args.steps),
                             *(word for pair in settings for word in ("--set", pair)))
    cpu_samples = follow_worker_cpu(command, store, before, home)
    if command.wait() != 0:
        raise RuntimeError(f"studio train failed:\n{command.stdout.read()[-3000:]}")
    with store.session() as session:
        run_id = session.scalars(select(Run.id).order_by(Run.id.desc())).first()
        metrics = session.execute(select(Metric.step, Metric.name, Metric.value).where(Metric.run_id == run_id)).all()
    by_step: dict[int, dict[str, float]] = {}
    for step, name, value in metrics:
        by_step.setdefault(step, {})[name] = value
    steps = [by_step[s] for s in range(1, args.steps + 1)]
    # A step's tokens: its tokens/s over its items/s (same seconds) times its items (the batch).
    tokens = [round(args.batch * m["tokens_per_second"] / m["items_per_second"]) for m in steps]
    return {"ends": [m["elapsed_seconds"] for m in steps], "tokens": tokens, "slots": [args.batch * args.seq] * len(tokens),
            "cpu_samples": cpu_samples}


def studio_process(home: Path, threads: int, *words: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "studio.cli", *words], cwd=ROOT, env=cli_env(home, threads),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def follow_worker_cpu(command: subprocess.Popen, store, before: int, home: Path) -> list[tuple[int, float]]:
    """(steps done, the training worker's CPU seconds) every 0.2 s while ``studio train`` runs: the worker's CPU time
    per step, which a machine others are using changes far less than the wall clock's. The run's row says its steps
    done at least every 0.5 s (with its metrics)."""
    import psutil
    from sqlalchemy import select

    from studio.store.tables import Run

    samples: list[tuple[int, float]] = []
    worker = None
    while command.poll() is None:
        time.sleep(0.2)
        if worker is None:  # started detached (its own session), so found by its command line and STUDIO_HOME
            worker = next((p for p in psutil.process_iter(["cmdline"]) if is_worker_of(p, home)), None)
            continue
        try:
            times = worker.cpu_times()
        except psutil.NoSuchProcess:
            break
        with store.session() as session:
            done = session.scalars(select(Run.steps_done).where(Run.id > before)).first()
        samples.append((done or 0, times.user + times.system))
    return samples


def is_worker_of(process, home: Path) -> bool:
    import psutil

    try:
        words = process.info["cmdline"] or []
        return ("studio.training.worker" in words and "accelerate.commands.launch" not in " ".join(words)
                and process.environ().get("STUDIO_HOME") == str(home))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def cpu_per_step(samples: list[tuple[int, float]], warmup: int, last: int) -> float:
    """CPU seconds a step over steps warmup+1 .. last, from (steps done, CPU seconds) samples: from the first sample
    that saw step ``warmup`` done to the first that saw ``last`` done."""
    start = next((s, c) for s, c in samples if s >= warmup)
    end = next((s, c) for s, c in samples if s >= last)
    return (end[1] - start[1]) / (end[0] - start[0])

# ----------------------------------------------------------------------------- the peers (each in a child process)

def peer_child(args) -> None:
    """``--child trainer|trl``: trains in this process and prints its step ends and token counts as JSON."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    texts = json.loads(Path(args.data).read_text())
    tokenizer = AutoTokenizer.from_pretrained(args.folder)
    ends: list[float] = []
    counted: list[tuple[int, int]] = []  # (useful tokens, slots) of each batch, in the order they were made

    cpu: list[float] = []

    class StepEnds(TrainerCallback):
        def on_step_end(self, *_args, **_kwargs):
            ends.append(time.perf_counter())
            cpu.append(time.process_time())

    def counting(collate):
        def collate_and_count(features):
            batch = collate(features)
            mask = batch.get("attention_mask")
            useful = int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
            counted.append((useful, int(batch["input_ids"].numel())))
            return batch
        return collate_and_count

    common = dict(output_dir=str(Path(args.scratch) / args.child), per_device_train_batch_size=args.batch,
                  max_steps=args.steps, learning_rate=1e-3, lr_scheduler_type="cosine", warmup_steps=10,
                  max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                  disable_tqdm=True, dataloader_num_workers=0)
    model = AutoModelForCausalLM.from_pretrained(args.folder, dtype=torch.float32)
    trainer = peer_trainer(args.child, model, tokenizer, texts, common, args.seq, counting, StepEnds())
    trainer.train()
    print(json.dumps({"ends": [t - ends[0] for t in ends], "cpu": cpu, "tokens": [u for u, _ in counted[:len(ends)]],
                      "slots": [s for _, s in counted[:len(ends)]]}))


def peer_trainer(loop: str, model, tokenizer, texts: list[str], common: dict, seq: int, counting, callback):
    """The peer ``loop`` ('trainer': ``Trainer`` with each batch padded to its longest row; 'trl': ``SFTTrainer`` with
    packing) set to train ``model`` with the bench's LoRA on ``texts``; ``counting`` wraps its collate function."""
    from peft import LoraConfig

    lora = LoraConfig(**LORA, target_modules=TARGET_MODULES, task_type="CAUSAL_LM")
    if loop == "trainer":
        from peft import get_peft_model
        from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

        rows = [tokenizer(text, truncation=True, max_length=seq) for text in texts]
        rows = [{"input_ids": r["input_ids"], "attention_mask": r["attention_mask"]} for r in rows]
        return Trainer(model=get_peft_model(model, lora), args=TrainingArguments(**common), train_dataset=rows,
                       data_collator=counting(DataCollatorForLanguageModeling(tokenizer, mlm=False)),
                       callbacks=[callback])
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    trainer = SFTTrainer(model=model, args=SFTConfig(**common, max_length=seq, packing=True, dataset_text_field="text"),
                         train_dataset=Dataset.from_list([{"text": t} for t in texts]), processing_class=tokenizer,
                         peft_config=lora, callbacks=[callback])
    trainer.data_collator = counting(trainer.data_collator)
    return trainer


def run_peer(args, loop: str, folder: Path, data: Path, scratch: Path) -> dict:
    env = cli_env(None, args.threads)
    done = subprocess.run([sys.executable, __file__, "--child", loop, "--folder", str(folder), "--data", str(data),
                           "--scratch", str(scratch), "--steps", str(args.steps), "--batch", str(args.batch),
                           "--seq", str(args.seq), "--threads", str(args.threads)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{loop} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- measuring

def steady(run: dict, warmup: int) -> dict:
    """Useful and slot tokens/s over steps warmup+1 .. the last (``ends[i]``: when step i+1 ended), and the useful
    tokens/s of the quietest quarter of those steps (the upper quartile of the per-step rates: on a machine others
    are using, what the loop does when it has the core to itself)."""
    ends, last = run["ends"], len(run["ends"])
    seconds = ends[last - 1] - ends[warmup - 1]
    per_step = sorted(run["tokens"][i] / (ends[i] - ends[i - 1]) for i in range(warmup, last))
    if "cpu" in run:
        cpu_step = (run["cpu"][last - 1] - run["cpu"][warmup - 1]) / (last - warmup)
    else:
        cpu_step = cpu_per_step(run["cpu_samples"], warmup, last)
    return {"tokens_s": sum(run["tokens"][warmup:last]) / seconds, "slots_s": sum(run["slots"][warmup:last]) / seconds,
            "cpu_tokens_s": sum(run["tokens"][warmup:last]) / (cpu_step * (last - warmup)),
            "quiet_tokens_s": per_step[(3 * len(per_step)) // 4], "step_s": seconds / (last - warmup),
            "real_share": sum(run["tokens"][warmup:]) / sum(run["slots"][warmup:])}


def matmul_rate(threads: int, size: int = 2048, repeats: int = 6) -> float:
    """This CPU's fp32 GEMM rate (FLOP/s) on ``threads`` threads: the best of a few ``size``-square products."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):  # CPU time, as the runs' CPU-time rates (the wall clock counts other people's work)
        started = time.process_time()
        torch.mm(a, b)
        best = min(best, time.process_time() - started)
    return 2 * size ** 3 / best


def flops_per_token(folder: Path) -> tuple[float, int, int]:
    """(model FLOPs a trained token costs with LoRA, weights in matmuls, LoRA weights): see the module's doc."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    in_matmuls = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    peft = get_peft_model(model, LoraConfig(**LORA, target_modules=TARGET_MODULES, task_type="CAUSAL_LM"))
    lora = sum(p.numel() for p in peft.parameters() if p.requires_grad)
    return 4 * in_matmuls + 6 * lora, in_matmuls, lora


def profile_step(folder: Path, texts: list[str], args) -> dict:
    """Where one forward + backward of a packed batch spends its time: matmul kernels vs the rest (self CPU time)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32),
                           LoraConfig(**LORA, target_modules=TARGET_MODULES, task_type="CAUSAL_LM"))
    stream = [t for text in texts for t in tokenizer(text)["input_ids"]][:args.batch * args.seq]
    ids = torch.tensor(stream).reshape(args.batch, args.seq)
    for _ in range(2):
        model(input_ids=ids, labels=ids).loss.backward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            model(input_ids=ids, labels=ids).loss.backward()
    matmul_ops = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward")
    share: dict[str, float] = {}
    for event in prof.key_averages():
        if event.self_cpu_time_total > 0:
            share[event.key] = event.self_cpu_time_total
    total = sum(share.values())
    matmul = sum(v for k, v in share.items() if k in matmul_ops)
    top = sorted(((v / total, k) for k, v in share.items() if k not in matmul_ops), reverse=True)[:6]
    return {"matmul": matmul / total, "rest": top}


def med(values) -> float:
    return statistics.median(values)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=25, help="optimizer steps a run")
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the steady state")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--docs", type=int, default=700)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=LOOPS, default=LOOPS)
    parser.add_argument("--studio-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra studio settings (a lever on its own: torch_compile=true)")
    parser.add_argument("--profile", action="store_true", help="where a forward + backward's time goes")
    parser.add_argument("--save", metavar="JSON", help="write every run's per-step figures here")
    parser.add_argument("--report", metavar="JSON", help="only print the report of a --save file")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", choices=["trainer", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return peer_child(args)
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        return report(args, {"load_before": "?", "load_after": "?"}, saved["results"], saved["per_token"], None)
    if args.quick:
        args.rounds, args.steps, args.warmup, args.hidden, args.layers, args.docs = 1, 6, 2, 128, 2, 200

    import torch

    from studio.data.read_text import split_documents
    from studio.examples.text import make_corpus
    from studio.models.text import train_tokenizer

    info = {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "load_before": loadavg(),
            "torch": torch.__version__}
    corpus = make_corpus(size_kb=100, seed=0)
    tokenizer = train_tokenizer(split_documents(corpus, "blank_lines"))
    rows = make_documents(corpus.split(), tokenizer, args.docs, 10, 400, "log-uniform", seed=1)
    results: dict[str, list[dict]] = {loop: [] for loop in args.only}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        folder = build_model_folder(scratch / "llama-20m", tokenizer, args.hidden, args.layers, args.seq)
        per_token, in_matmuls, lora = flops_per_token(folder)
        dataset_id, texts = import_documents(scratch / "home", rows, scratch)
        data = scratch / "train.json"
        data.write_text(json.dumps(texts))
        print(f"{info['cpu']}, {args.threads} thread(s), load {info['load_before']}; model {in_matmuls / 1e6:.1f} M "
              f"weights in matmuls, {lora:,} LoRA; {len(texts)} training documents", flush=True)
        for round_ in range(args.rounds):
            order = args.only[round_ % len(args.only):] + args.only[:round_ % len(args.only)]
            for loop in order:
                gemm = matmul_rate(args.threads)
                run = (run_studio(args, scratch / "home", dataset_id, folder) if loop == "studio"
                       else run_peer(args, loop, folder, data, scratch))
                found = {**steady(run, args.warmup), "gemm": gemm, "raw": run, "load": loadavg()}
                found["mfu"] = found["cpu_tokens_s"] * per_token / gemm
                results[loop].append(found)
                if args.save:
                    Path(args.save).write_text(json.dumps({"per_token": per_token, "results": results}))
                print(f"round {round_ + 1} {loop:8s} {found['tokens_s']:8.1f} useful tokens/s "
                      f"(quietest quarter {found['quiet_tokens_s']:.1f}; by CPU time {found['cpu_tokens_s']:.1f}) "
                      f"({found['slots_s']:.1f} slots/s, {found['step_s']:.3f} s a step, "
                      f"{100 * found['real_share']:.0f} % real; GEMM {gemm / 1e9:.1f} GFLOP/s, MFU "
                      f"{100 * found['mfu']:.0f} %)", flush=True)
        profiled = profile_step(folder, texts, args) if args.profile else None
    info["load_after"] = loadavg()
    report(args, info, results, per_token, profiled)


def report(args, info: dict, results: dict, per_token: float, profiled: dict | None) -> None:
    print(f"\nload {info['load_before']} -> {info['load_after']}; median of {args.rounds} round(s), steps "
          f"{args.warmup + 1}-{args.steps}")
    print("| loop | useful tokens per CPU second | useful tokens/s, wall clock (quietest quarter of the steps) | "
          "slots/s | real tokens of the slots | s a step | MFU (useful tokens, CPU time) | studio over it: by CPU "
          "time (wall clock; quietest quarter), median of rounds |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")

    def ratio_of(loop: str, key: str) -> float:
        return med([s[key] / r[key] for s, r in zip(results["studio"], results[loop])])

    for loop, found in results.items():
        ratio = ""
        if loop != "studio" and "studio" in results:
            ratio = (f"**{ratio_of(loop, 'cpu_tokens_s'):.2f}×** ({ratio_of(loop, 'tokens_s'):.2f}×; "
                     f"{ratio_of(loop, 'quiet_tokens_s'):.2f}×; target {TARGETS[loop]}×)")
        print(f"| {loop} | {med([r['cpu_tokens_s'] for r in found]):,.0f} | "
              f"{med([r['tokens_s'] for r in found]):,.0f} ({med([r['quiet_tokens_s'] for r in found]):,.0f}) | "
              f"{med([r['slots_s'] for r in found]):,.0f} | {100 * med([r['real_share'] for r in found]):.0f} % | "
              f"{med([r['step_s'] for r in found]):.3f} | {100 * med([r['mfu'] for r in found]):.0f} % | {ratio} |")
    gemms = [r["gemm"] for found in results.values() for r in found]
    print(f"model FLOPs a token: {per_token / 1e6:.1f} M; ceiling: fp32 GEMM {med(gemms) / 1e9:.1f} GFLOP/s (median "
          f"before the runs, {min(gemms) / 1e9:.1f}-{max(gemms) / 1e9:.1f}) = {med(gemms) / per_token:,.0f} tokens/s")
    if profiled:
        print(f"one forward + backward (packed batch): matmul kernels {100 * profiled['matmul']:.0f} % of the self "
              f"CPU time; the rest: " + ", ".join(f"{k} {100 * v:.1f} %" for v, k in profiled["rest"]))


if __name__ == "__main__":
    main()

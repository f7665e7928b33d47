"""Benchmark: what a deployment serves (``studio.serving``), batched against one request at a time, and how fast its
response cache answers.

Set-up (not timed): a temporary ``STUDIO_HOME`` with the stories example imported and two text runs trained by the
worker's own code in this process (``run_in_process`` of ``bench/generate.py``):
  - a GPT-2-small-shaped model (12 layers, 768 wide, 124 M parameters; ``random_model`` of ``bench/quantize.py``,
    random-initialised from a config, no download) with a LoRA adapter trained for one step: served as base +
    adapter, as a fine-tuned checkpoint is;
  - ``starter-text`` trained from scratch for two steps.

For each model two deployments run side by side, each in its serving process as the Deploy tab starts them
(``service.start_deployment``): one with the studio's batching (``serve_max_batch`` 32, the default), one with
``serve_max_batch`` 1, every request alone. At 1, 8 and 32 concurrent clients (threads, each a keep-alive HTTP
connection sending ``POST /v1/completions`` one after another: a closed loop), the two deployments are measured in
turn with the same prompts (``--max-tokens`` new tokens, temperature 0.8, no seed: nothing is cached), ``--rounds``
rounds each; reported: requests/s (answered requests over the wall time of the round), p50 and p95 latency seen by
the clients, generated tokens/s, and the text batches the deployment ran (its ``studio_serving_batches_total``).
The ratio batched / one-at-a-time of requests/s is the target (at least 3x at 32 clients).

Cache: one seeded request sent once (a miss: the model runs) then ``--hits`` times again (answered from the cache,
``X-Cache: hit``); reported: the client's p50/p95 of the hits and the deployment's own p50/p95 for them (its
latency histogram, read from ``/metrics`` with ``studio.serving.watch``). Target: under 5 ms.

int8 against fp32 weight memory is measured by ``bench/quantize.py``.

    .venv/bin/python bench/serve.py                    # both models (several minutes on 2 busy cores)
    .venv/bin/python bench/serve.py --models starter   # the starter only (about a minute)

The serving processes run torch on ``--threads`` threads (``OMP_NUM_THREADS``; 1 by default, as the other
benchmarks). The clients run in this process; on a 2-core machine they share the CPU with the deployment.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from generate import cpu_model, loadavg, quiet, run_in_process  # noqa: E402 - the lab's runs, as bench/generate.py
from quantize import random_model  # noqa: E402 - the GPT-2-small shape bench/quantize.py measures

TARGET_RATIO = 3.0     # batched at least 3x the requests/s of one-at-a-time at 32 clients
TARGET_HIT_MS = 5.0    # a cache hit answered in under 5 ms
CLIENTS = (1, 8, 32)
PROMPTS = ["Once upon a time", "Mia found a", "The old dog", "In the morning", "The little fox", "Tom and Sam"]


# ----------------------------------------------------------------------------- clients

class Client:
    """One keep-alive HTTP connection to a deployment."""

    def __init__(self, url: str):
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=600)

    def complete(self, body: dict) -> tuple[float, dict, dict]:
        """(seconds, the answer, its headers) of one ``POST /v1/completions``."""
        started = time.perf_counter()
        self.connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        payload = response.read()
        seconds = time.perf_counter() - started
        if response.status != 200:
            raise SystemExit(f"the deployment answered {response.status}: {payload[:500]!r}")
        return seconds, json.loads(payload), dict(response.getheaders())

    def close(self) -> None:
        self.connection.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def batches(url: str) -> float:
    from studio.serving.watch import fetch

    return fetch(f"{url}/metrics").batches


def burst(url: str, model: str, clients: int, per_client: int, max_tokens: int) -> dict:
    """``clients`` threads each sending ``per_client`` requests one after another; the round's figures."""
    latencies: list[float] = []
    tokens = [0]
    lock = threading.Lock()
    connections = [Client(url) for _ in range(clients)]
    ready = threading.Barrier(clients + 1)

    def work(index: int) -> None:
        ready.wait()
        for n in range(per_client):
            prompt = PROMPTS[(index + n) % len(PROMPTS)]
            seconds, answer, _ = connections[index].complete(
                {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.8})
            with lock:
                latencies.append(seconds)
                tokens[0] += answer["usage"]["completion_tokens"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    batches_before = batches(url)
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return {"requests": len(latencies), "wall": wall, "rps": len(latencies) / wall, "tokens_s": tokens[0] / wall,
            "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "batches": batches(url) - batches_before}


def cache_hits(url: str, model: str, hits: int, max_tokens: int) -> dict:
    """A seeded request once (a miss), then ``hits`` times again: client and deployment latencies of the hits."""
    from studio.serving.watch import between, fetch

    client = Client(url)
    body = {"model": model, "prompt": "Once upon a time", "max_tokens": max_tokens, "seed": 7, "temperature": 0.8}
    miss, first, headers = client.complete(body)
    assert headers.get("X-Cache", headers.get("x-cache")) != "hit", "the first seeded request was a hit"
    before = fetch(f"{url}/metrics")
    seen = []
    for _ in range(hits):
        seconds, answer, headers = client.complete(body)
        assert headers.get("X-Cache", headers.get("x-cache")) == "hit" and answer.get("cached") is True
        assert answer["choices"][0]["text"] == first["choices"][0]["text"]
        seen.append(seconds)
    served = between(before, fetch(f"{url}/metrics"))
    client.close()
    return {"miss_ms": miss * 1000, "client_p50_ms": percentile(seen, 50) * 1000,
            "client_p95_ms": percentile(seen, 95) * 1000, "server_p50_ms": served["p50_ms"],
            "server_p95_ms": served["p95_ms"]}


# ----------------------------------------------------------------------------- the measurements

def deploy(store, ref: str, name: str, one_at_a_time: bool) -> dict:
    from studio.serving.service import start_deployment

    settings = {"serve_max_batch": 1} if one_at_a_time else {}
    return start_deployment(store, [ref], name=name, settings=settings, wait=True)


def measure_model(args, store, label: str, ref: str) -> dict:
    from studio.serving.service import stop_deployment

    started = time.perf_counter()
    modes = {"batched": deploy(store, ref, f"{label}-batched", False),
             "one at a time": deploy(store, ref, f"{label}-alone", True)}
    print(f"  {label}: two deployments answering ({time.perf_counter() - started:.0f} s)", file=sys.stderr,
          flush=True)
    model = modes["batched"]["models"][0]["name"]
    try:
        for found in modes.values():  # warm-up: the first requests pay for lazy set-up
            burst(found["url"], model, 2, 1, args.max_tokens)
        rows = []
        for clients in CLIENTS:
            per_client = max(2, args.requests // clients)
            rounds: dict[str, list[dict]] = {mode: [] for mode in modes}
            for round_ in range(args.rounds):
                order = list(modes) if round_ % 2 == 0 else list(reversed(modes))  # who goes first alternates
                for mode in order:
                    rounds[mode].append(burst(modes[mode]["url"], model, clients, per_client, args.max_tokens))
            for mode, found in rounds.items():
                rows.append({"clients": clients, "mode": mode, **{key: statistics.median(r[key] for r in found)
                                                                   for key in found[0]}})
            print(f"  {label}: {clients} clients measured ({time.perf_counter() - started:.0f} s)", file=sys.stderr,
                  flush=True)
        cache = cache_hits(modes["batched"]["url"], model, args.hits, args.max_tokens)
        weights = modes["batched"]["report"].get("quantize", {}).get("weight_bytes_before")
    finally:
        for found in modes.values():
            stop_deployment(store, found["deployment_id"])
    return {"rows": rows, "cache": cache, "weights": weights}


def print_report(args, info: dict, results: dict) -> None:
    print(f"\n{info['cpu']}, {os.cpu_count()} cores, load average before {info['load_before']} / after "
          f"{loadavg()}; torch {info['torch']}, {args.threads} thread(s) per serving process; {args.max_tokens} new "
          f"tokens per request, temperature 0.8, no seed; median of {args.rounds} rounds (who goes first "
          f"alternates); set-up {info['setup_s']:.0f} s\n")
    for label, found in results.items():
        weights = f", {found['weights'] / 2**20:.0f} MiB of weights" if found["weights"] else ""
        print(f"**{label}**{weights}\n")
        print("| clients | mode | requests | requests/s | p50 latency (s) | p95 latency (s) | tokens/s | batches | "
              "batched / one at a time |")
        print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        by = {(r["clients"], r["mode"]): r for r in found["rows"]}
        for row in found["rows"]:
            ratio = ""
            if row["mode"] == "batched":
                value = row["rps"] / by[(row["clients"], "one at a time")]["rps"]
                met = "" if row["clients"] != 32 else (" (target met)" if value >= TARGET_RATIO else " (under target)")
                ratio = f"{value:.2f}x{met}"
            print(f"| {row['clients']} | {row['mode']} | {row['requests']:.0f} | {row['rps']:.2f} | {row['p50']:.3f} | "
                  f"{row['p95']:.3f} | {row['tokens_s']:.0f} | {row['batches']:.0f} | {ratio} |")
        cache = found["cache"]
        met = "met" if cache["server_p95_ms"] is not None and cache["server_p95_ms"] < TARGET_HIT_MS else "not met"
        print(f"\nCache ({args.hits} hits of one seeded request; the miss took {cache['miss_ms']:.0f} ms): "
              f"client p50 {cache['client_p50_ms']:.2f} ms, p95 {cache['client_p95_ms']:.2f} ms; the deployment's "
              f"own p50 {cache['server_p50_ms']:.2f} ms, p95 {cache['server_p95_ms']:.2f} ms (target under "
              f"{TARGET_HIT_MS:.0f} ms: {met})\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="gpt2-small,starter", help="comma-separated: gpt2-small, starter")
    parser.add_argument("--max-tokens", type=int, default=16, help="new tokens per request")
    parser.add_argument("--requests", type=int, default=16,
                        help="requests per round (each client sends at least 2: 64 at 32 clients)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hits", type=int, default=200, help="cache hits timed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each serving process")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the serving processes inherit it (torch reads it at start)

    import torch

    from studio.data.service import get_version, import_dataset, read_manifest
    from studio.examples.text import make_corpus
    from studio.models.text import train_tokenizer
    from studio.settings import load_settings
    from studio.store import open_store
    from studio.training.config import TrainConfig

    quiet(diffusers_too=False)
    torch.set_num_threads(args.threads)
    info = {"cpu": cpu_model(), "load_before": loadavg(), "torch": torch.__version__}
    wanted = args.models.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        (root / "stories.txt").write_text(make_corpus(size_kb=30, seed=3))
        store = open_store(load_settings(home=root / "home"))
        dataset = str(import_dataset(store, [root / "stories.txt"], name="stories")["dataset_id"])
        one_step = dict(max_steps=1, save_steps=1, eval_steps=10**6, warmup_steps=0, learning_rate=1e-3,
                        per_device_train_batch_size=2, seed=0, use_cpu=True, text={"max_length": 64})
        refs = {}
        if "gpt2-small" in wanted:
            train = read_manifest(store, get_version(store, dataset), "train")
            folder = random_model("gpt2-small", train_tokenizer([r["text"] for r in train]), root / "models")
            refs["GPT-2 small shape + LoRA"] = str(run_in_process(store, dataset, str(folder), "lora",
                                                                  TrainConfig(**one_step)))
        if "starter" in wanted:
            refs["starter-text"] = str(run_in_process(store, dataset, "starter-text", "scratch",
                                                      TrainConfig(**{**one_step, "max_steps": 2, "save_steps": 2})))
        info["setup_s"] = time.perf_counter() - started
        results = {label: measure_model(args, store, label.split()[0].lower(), ref) for label, ref in refs.items()}
        store.close()
    print_report(args, info, results)


if __name__ == "__main__":
    main()

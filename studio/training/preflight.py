"""Pre-flight: a few real training steps in a separate process, to measure time per step and peak memory
before committing to a run (the answer to "will it fit, and how long will it take?").

    python -m studio.training.preflight   < {"dataset": "1:1", "model": "...", "method": "...", "config": {...}}
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from studio.data.service import get_version, read_manifest
from studio.models.catalog import fit_verdict
from studio.models.registry import backend_for
from studio.settings import load_settings
from studio.store import Store, open_store
from studio.training.config import TrainConfig
from studio.training.jobs import check_possible
from studio.training.loop import Hooks, make_loader, total_steps_for, train

MEASURED_STEPS = 4


def _peak_memory() -> tuple[str, float, float]:
    """(device, peak bytes used by this process, bytes the device has)."""
    import resource

    import torch

    if torch.cuda.is_available():
        return (torch.cuda.get_device_name(0), float(torch.cuda.max_memory_allocated()),
                float(torch.cuda.get_device_properties(0).total_memory))
    total = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return "CPU", float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024), total


def measure(spec: dict) -> dict:
    """Runs in the child process: load, train MEASURED_STEPS steps, report."""
    store = open_store(load_settings())
    version = get_version(store, spec["dataset"])
    config = TrainConfig.model_validate(spec["config"])
    rows = {split: read_manifest(store, version, split) for split in ("train", "validation")}
    backend = backend_for(version.dataset.modality)
    handle = backend.load(spec["model"], spec["method"], config, rows["train"])
    train_set = backend.datasets(handle, rows, store.path(version.path), config)["train"]
    batches = len(make_loader(train_set, backend.collate(handle, config), config.per_device_train_batch_size,
                              config.seed, shuffle=False))
    processes = config.num_processes * config.num_nodes  # each process, on every machine, has its share
    total = total_steps_for(config, math.ceil(batches / processes))
    trial = config.model_copy(update={"max_steps": MEASURED_STEPS, "eval_steps": 10**6, "save_steps": 10**6,
                                      "sample_steps": 0, "report_to": []})
    seen: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        rows_no_validation = {"train": rows["train"], "validation": []}  # measure training, not evaluation
        train(backend, handle, rows_no_validation, store.path(version.path), trial, Path(scratch),
              Hooks(log=lambda m: None, metric=lambda step, name, value: seen.append(
                  {"step": step, "name": name, "value": value})))
    elapsed = {h["step"]: h["value"] for h in seen if h["name"] == "elapsed_seconds"}
    # The first step pays for warm-up (allocation, kernel selection): time the later ones.
    per_step = (elapsed[MEASURED_STEPS] - elapsed[1]) / (MEASURED_STEPS - 1)
    device, peak, available = _peak_memory()
    trainable, all_params = handle.parameter_counts()
    return {"seconds_per_step": per_step, "total_steps": total, "estimated_seconds": per_step * total,
            "peak_memory_bytes": peak, "device": device, "device_memory_bytes": available,
            "verdict": fit_verdict(peak, available), "trainable_parameters": trainable,
            "total_parameters": all_params}


def preflight(store: Store, dataset_ref: str, model_ref: str, method: str, config: TrainConfig,
              timeout: int = 900) -> dict:
    """Measure in a child process (the caller never loads a model). Raises RuntimeError with the child's
    last lines when it fails; settings that cannot run here raise ``RunError`` first, as creating the run would."""
    check_possible(store, get_version(store, dataset_ref), model_ref, method, config)
    env = {**os.environ, "STUDIO_HOME": str(store.home)}
    if store.settings.database_url:
        env["STUDIO_DATABASE_URL"] = store.settings.database_url
    if config.use_cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    spec = {"dataset": dataset_ref, "model": model_ref, "method": method, "config": config.model_dump()}
    done = subprocess.run([sys.executable, "-m", "studio.training.preflight"], input=json.dumps(spec),
                          capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError("pre-flight failed: " + "\n".join(done.stderr.strip().splitlines()[-8:]))
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    print(json.dumps(measure(json.loads(sys.stdin.read()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A run on several machines: ``python -m studio.training.ray_train RUN_ID``, the Ray job's entrypoint (the Ray
launcher submits it for a run with ``num_nodes`` > 1).

It runs Ray Train's ``TorchTrainer`` with ``num_nodes × num_processes`` workers, each the same worker code as
``accelerate launch`` starts (``worker.work``): Ray Train places the workers, starts the torch process group and sets
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``, ``MASTER_ADDR`` and the device; Accelerate, in the one loop, finds the
group already there and uses it. So the loop, the store hooks, the heartbeat and the stop/save/sample flags are
those of every other run; this module only asks Ray for the workers and says why they ended.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime

from studio import processes
from studio.settings import load_settings
from studio.status import RunStatus
from studio.store import open_store
from studio.store.tables import Run
from studio.training.config import TrainConfig
from studio.training.jobs import finish_run
from studio.training.runs import log_path
from studio.training.worker import work


def workers_of(config: TrainConfig) -> int:
    """Ray Train workers (processes) of a run: ``num_processes`` on each of ``num_nodes`` machines."""
    return config.num_nodes * config.num_processes


def scaling(config: TrainConfig, memory_gb: float = 0.0):
    """What the run asks Ray for: one worker per process, each with one CPU, one GPU unless ``use_cpu``, and
    ``STUDIO_RAY_MEMORY_GB`` of memory."""
    from ray.train import ScalingConfig

    per_worker = {"CPU": 1, **({"GPU": 1} if not config.use_cpu else {}),
                  **({"memory": int(memory_gb * 2**30)} if memory_gb else {})}
    return ScalingConfig(num_workers=workers_of(config), use_gpu=not config.use_cpu, resources_per_worker=per_worker)


def _train_worker(loop_config: dict) -> None:
    """One Ray Train worker: the studio's worker, with the process group Ray Train started."""
    import torch

    if not torch.cuda.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "1"  # as `accelerate launch` on a node without CUDA: gloo ranks
    if (status := work(loop_config["run_id"])) != 0:
        # the run's row already says why (rank 0 wrote it); Ray Train is told so that it ends the other workers
        raise RuntimeError(f"the training worker of rank {os.environ.get('RANK')} ended with status {status}")


def main(argv: list[str] | None = None) -> int:
    from ray.train import FailureConfig, RunConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    parser = argparse.ArgumentParser(description="Gen Studio: one run on several machines through Ray Train")
    parser.add_argument("run_id", type=int)
    run_id = parser.parse_args(argv).run_id
    store = open_store(load_settings())
    with store.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise SystemExit(f"no run {run_id}")
        config = TrainConfig.model_validate(run.config)
        output_dir = store.path(run.output_dir)
    print(f"run {run_id}: Ray Train with {workers_of(config)} worker(s) ({config.num_nodes} machine(s) x "
          f"{config.num_processes} process(es)){' on CPUs' if config.use_cpu else ', one GPU each'}", flush=True)
    # No retries by Ray Train: a worker that dies fails the run, which the person resumes from its last checkpoint
    # (the studio's checkpoints, under STUDIO_HOME, not Ray's). Each attempt has a folder of its own: Ray Train loads
    # the state an earlier attempt left in a folder of the same name (its checkpoint manager's).
    trainer = TorchTrainer(_train_worker, train_loop_config={"run_id": run_id},
                           scaling_config=scaling(config, store.settings.ray_memory_gb),
                           run_config=RunConfig(name=f"attempt-{datetime.now():%Y%m%d-%H%M%S}",
                                                storage_path=str(output_dir / "ray"),
                                                failure_config=FailureConfig(max_failures=0)))
    try:
        trainer.fit()
    except TrainingFailedError as error:
        print(f"run {run_id} failed: {error}", file=sys.stderr, flush=True)
        # The first to end the run says why: a worker that failed in the loop has written its traceback already.
        finish_run(store, run_id, RunStatus.FAILED, f"Ray Train's workers failed: {error}\n\nLast lines of its log:\n"
                                                    f"{processes.log_tail(log_path(store, run_id))}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

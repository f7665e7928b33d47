"""The training worker: ``accelerate launch -m studio.training.worker RUN_ID``.

It reads its run from the store, trains with the one loop, and writes metrics, checkpoints and
samples back as they happen; it polls the store for stop / save-now / sample-now requests. It is
started detached by the dispatcher, so the web process never trains.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select, update

from studio.data.service import read_manifest
from studio.models.common import quiet_import_noise
from studio.models.registry import backend_for, objective_trained
from studio.settings import load_settings
from studio.status import RunStatus
from studio.store import Store, open_store
from studio.store.tables import Checkpoint, ControlFlag, DatasetVersion, Metric, Run, RunSample
from studio.training.config import TrainConfig
from studio.training.jobs import finish_run
from studio.training.loop import Hooks, train

HEARTBEAT_SECONDS = 5
FLUSH_SECONDS = 0.5


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


class StoreHooks(Hooks):
    """Loop hooks that write to the store: metrics in small batches, flags polled at most every 0.5 s."""

    def __init__(self, store: Store, run_id: int):
        super().__init__(metric=self.metric_, log=self.log_, checkpoint=self.checkpoint_, samples=self.samples_,
                         should_stop=lambda: self._flag("stop"), should_save=lambda: self._flag("save"),
                         should_sample=lambda: self._flag("sample"), progress=self.progress_)
        self.store, self.run_id = store, run_id
        self.pending: list[Metric] = []
        self.flushed_at = 0.0
        self.flags_at = 0.0
        self.progress_at = 0.0
        self.open_flags: dict[str, int] = {}

    def metric_(self, step: int, name: str, value: float) -> None:
        self.pending.append(Metric(run_id=self.run_id, step=step, name=name, value=float(value)))
        if time.monotonic() - self.flushed_at > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            with self.store.session() as session:
                session.add_all(self.pending)
            self.pending = []
        self.flushed_at = time.monotonic()

    def log_(self, message: str) -> None:
        print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)

    def progress_(self, step: int, total: int) -> None:
        if step == total or step == 1 or time.monotonic() - self.progress_at > FLUSH_SECONDS:
            self.progress_at = time.monotonic()
            with self.store.session() as session:  # metrics and progress in one commit: each commit waits on disk
                session.add_all(self.pending)
                session.execute(update(Run).where(Run.id == self.run_id).values(steps_done=step, total_steps=total))
            self.pending, self.flushed_at = [], time.monotonic()

    def checkpoint_(self, step: int, folder: Path, best_val: float | None) -> None:
        self.flush()
        relative = str(folder.relative_to(self.store.home))
        with self.store.session() as session:
            run = session.get(Run, self.run_id)
            session.add(Checkpoint(run_id=self.run_id, step=step, path=relative, is_adapter=run.method == "lora",
                                   val_loss=best_val))
            run.best_val_loss = best_val
            # Checkpoints the loop deleted (keeping the last K) leave the table too.
            for old in session.scalars(select(Checkpoint).where(Checkpoint.run_id == self.run_id)):
                if old.path != relative and not self.store.path(old.path).exists():
                    session.delete(old)
        self._handled("save")

    def samples_(self, step: int, samples) -> None:
        with self.store.session() as session:
            for sample in samples:
                path = str(Path(sample.path).relative_to(self.store.home)) if sample.path else None
                session.add(RunSample(run_id=self.run_id, step=step, prompt=sample.prompt, seed=sample.seed,
                                      text=sample.text, path=path))
        self._handled("sample")

    def _flag(self, kind: str) -> bool:
        if time.monotonic() - self.flags_at > FLUSH_SECONDS:
            self.flags_at = time.monotonic()
            with self.store.session() as session:
                flags = session.scalars(select(ControlFlag).where(ControlFlag.run_id == self.run_id,
                                                                  ControlFlag.handled_at.is_(None))).all()
                self.open_flags = {f.kind: f.id for f in flags}
        return kind in self.open_flags

    def _handled(self, kind: str) -> None:
        if kind in self.open_flags:
            with self.store.session() as session:
                session.execute(update(ControlFlag).where(ControlFlag.run_id == self.run_id, ControlFlag.kind == kind,
                                                          ControlFlag.handled_at.is_(None)).values(handled_at=_now()))
            self.open_flags.pop(kind)


def _heartbeat(store: Store, run_id: int, stop: threading.Event) -> None:
    # several beats per timeout, so one beat held up by a busy machine is not taken for a dead worker
    every = min(HEARTBEAT_SECONDS, store.settings.heartbeat_timeout_seconds / 4)
    while not stop.wait(every):
        with store.session() as session:
            session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=_now()))


class _SharedTensorNote(logging.Filter):
    """Accelerate warns at every checkpoint of a model whose output layer shares the input embedding's weights that
    it saved the shared tensor once; that is what such models need (loading ties them again), so the log says it
    once, in plain words, instead."""

    def __init__(self, say):
        super().__init__()
        self.say, self.said = say, False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Removed shared tensor" not in record.getMessage():  # accelerate puts "[RANK 0] " before it
            return True
        if not self.said:
            self.said = True
            self.say("weights shared by two layers (the output layer reuses the embedding) are saved once in each "
                     "checkpoint, as they should be")
        return False


def quiet_libraries(say) -> None:
    """A log read by people, line by line: no progress bars (a checkpoint's "Writing model shards" bar is carriage
    returns in a file), and no warning about what is expected."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by huggingface_hub and by transformers when imported
    logging.getLogger("accelerate.utils.other").addFilter(_SharedTensorNote(say))
    quiet_import_noise()


def run_worker(store: Store, run_id: int) -> RunStatus:
    main = _rank() == 0
    with store.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise SystemExit(f"no run {run_id}")
        version = session.get(DatasetVersion, run.dataset_version_id)
        version.dataset  # load while the session is open
    if main:
        with store.session() as session:
            session.execute(update(Run).where(Run.id == run_id).values(
                status=RunStatus.RUNNING, started_at=_now(), heartbeat_at=_now()))
    config = TrainConfig.model_validate(run.config)
    rows = {split: read_manifest(store, version, split) for split in ("train", "validation")}
    hooks = StoreHooks(store, run_id) if main else Hooks(log=lambda m: None)
    quiet_libraries(hooks.log)
    backend = backend_for(run.modality)
    hooks.log(f"run {run_id}: {run.method} ({objective_trained(run.model_ref, config.objective)}) on {run.model_ref}, "
              f"dataset {version.dataset.name} v{version.version} "
              f"({len(rows['train'])} train / {len(rows['validation'])} validation items)")
    hooks.log(f"loading the model ({run.model_ref})")  # what `studio train` shows until the first step
    handle = backend.load(run.model_ref, run.method, config, rows["train"])
    trainable, total = handle.parameter_counts()
    hooks.log(f"parameters: {trainable:,} trainable of {total:,}")
    resume_from = store.path(run.resume_from) if run.resume_from else None
    result = train(backend, handle, rows, store.path(version.path), config, store.path(run.output_dir), hooks,
                   resume_from=resume_from)
    if main:
        hooks.flush()
        if result.checkpoints:
            final = Path(result.checkpoints[-1]) / "model"
            hooks.log(f"final model: {final}")
    return result.status


def work(run_id: int) -> int:
    """One process's part of the run, however it was started (``accelerate launch`` here, or a Ray Train worker:
    ``ray_train``); the main process (rank 0) beats and ends the run's row. Returns the exit status."""
    store = open_store(load_settings())
    main_process = _rank() == 0
    stop_heartbeat = threading.Event()
    if main_process:
        threading.Thread(target=_heartbeat, args=(store, run_id, stop_heartbeat), daemon=True).start()
    try:
        status = run_worker(store, run_id)
    except BaseException as error:  # noqa: BLE001 - whatever kills the run is written down for the person
        tail = "".join(traceback.format_exception(error))[-4000:]
        print(tail, file=sys.stderr, flush=True)
        if main_process:
            finish_run(store, run_id, RunStatus.FAILED, f"{type(error).__name__}: {error}\n\n{tail}", was=None)
        return 1
    finally:
        stop_heartbeat.set()
    if main_process:
        finish_run(store, run_id, status, was=None)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Gen Studio training worker (started by the dispatcher)")
    parser.add_argument("run_id", type=int)
    return work(parser.parse_args(argv).run_id)


if __name__ == "__main__":
    sys.exit(main())

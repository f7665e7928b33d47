"""Batching: concurrent text requests run as one padded batch instead of one by one.

A worker thread waits for the first job, collects more for ``window_s`` (or until ``max_batch`` rows wait), then
runs the oldest job's model with every waiting job of that model that fits, as ONE batch (each job's choices are
rows of it). Jobs of other models wait for the next batch: one model lock, adapters switch between batches.
Streaming jobs ride the same batches: their rows' ``on_text`` hears each token's text."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from studio.serving.engine import Row, RowResult


@dataclass
class Job:
    model: str
    rows: list[Row]
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """``run(model, rows) -> results`` runs one batch; ``on_batch(model, rows, results, seconds)`` hears each
    (metrics); ``on_queue(rows waiting)`` hears the queue's length. ``batches`` counts the batches run."""

    def __init__(self, run: Callable[[str, list[Row]], list[RowResult]], window_s: float, max_batch: int,
                 on_batch: Callable | None = None, on_queue: Callable[[int], None] | None = None):
        self.run, self.window_s, self.max_batch = run, float(window_s), max(1, int(max_batch))
        self.on_batch = on_batch or (lambda *args: None)
        self.on_queue = on_queue or (lambda waiting: None)
        self.batches = 0
        self._waiting: list[Job] = []
        self._changed = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._work, name="serving-batcher", daemon=True)
        self._thread.start()

    def submit(self, model: str, rows: list[Row]) -> Future:
        """Queues a request's rows; the future gets their results (or the batch's exception)."""
        job = Job(model, rows)
        with self._changed:
            if self._stopped:
                raise RuntimeError("the deployment is stopping")
            self._waiting.append(job)
            self._report()
            self._changed.notify_all()
        return job.future

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        self._thread.join(timeout=30)

    def _report(self) -> None:
        self.on_queue(sum(len(job.rows) for job in self._waiting))

    def _work(self) -> None:
        while True:
            jobs = self._collect()
            if jobs is None:
                return
            self._run(jobs)

    def _collect(self) -> list[Job] | None:
        """The next batch: the oldest job and the waiting jobs of its model that fit beside it."""
        with self._changed:
            while not self._waiting and not self._stopped:
                self._changed.wait()
            if self._stopped:
                for job in self._waiting:
                    job.future.set_exception(RuntimeError("the deployment is stopping"))
                return None
            deadline = self._waiting[0].arrived + self.window_s
            while (sum(len(j.rows) for j in self._waiting) < self.max_batch and time.monotonic() < deadline
                   and not self._stopped):
                self._changed.wait(max(0.0, deadline - time.monotonic()))
            model = self._waiting[0].model
            taken, size = [], 0
            for job in list(self._waiting):
                if job.model == model and (not taken or size + len(job.rows) <= self.max_batch):
                    taken.append(job)
                    size += len(job.rows)
                    self._waiting.remove(job)
            self._report()
            return taken

    def _run(self, jobs: list[Job]) -> None:
        rows = [row for job in jobs for row in job.rows]
        started = time.perf_counter()
        try:
            results = self.run(jobs[0].model, rows)
        except BaseException as error:  # noqa: BLE001 - every waiting request hears what failed
            for job in jobs:
                job.future.set_exception(error)
            return
        self.batches += 1
        self.on_batch(jobs[0].model, rows, results, time.perf_counter() - started)
        for job in jobs:
            job.future.set_result(results[:len(job.rows)])
            results = results[len(job.rows):]

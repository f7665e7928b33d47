"""Runs through the Ray launcher (``STUDIO_RAY_ADDRESS``), against a real local Ray head that declares two fake GPUs
(``ray start --head --num-cpus 2 --num-gpus 2`` on a CPU machine) and has Ray's token authentication on, with a
PostgreSQL store as a cluster needs: Ray places the runs (two at once, the third when one ends), a run asking for
more than the cluster has waits saying so, stop works through the store, a worker killed under Ray fails its run
with the log's end and resumes, a run on two machines (Ray Train) learns as the same run in one process does, and
without the token the cluster refuses the studio, saying so."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import pytest

from studio.data.service import import_dataset
from studio.settings import load_settings
from studio.status import RUN_ENDED
from studio.store import open_store
from studio.store.tables import Run, Task
from studio.training import jobs
from studio.training.launchers import ray_headers
from studio.training.runs import metric_rows, run_summary
from test_jobs import text_config, wait_until

pytestmark = pytest.mark.slow
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Head:
    address: str  # the Jobs API's
    token: str  # what its token authentication accepts


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head of this test's own, in a process group of its own (ended by its id, never `ray stop`, which would
    stop every Ray on the machine), with token authentication on and a token of its own (``RAY_AUTH_TOKEN`` in the
    head's environment: its jobs' drivers connect with it). This process keeps ``RAY_AUTH_MODE=disabled``, so its
    Ray client sends no token by itself (nor the one in ~/.ray, which this test does not own): the studio must send
    STUDIO_RAY_TOKEN."""
    job_submission = pytest.importorskip("ray.job_submission",
                                         reason="the ray extra is not installed (pip install -e .[ray])")
    auth = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    before = {name: os.environ.get(name) for name in auth}
    os.environ.update(auth)
    token = secrets.token_hex(32)
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    dashboard = free_port()
    head = subprocess.Popen([RAY, "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "2",
                             "--port", str(free_port()), "--dashboard-host", "127.0.0.1", "--dashboard-port",
                             str(dashboard), "--include-dashboard", "true", "--disable-usage-stats",
                             "--temp-dir", temp], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT,
                            env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 180
    while True:
        try:
            job_submission.JobSubmissionClient(address, headers=ray_headers(token)).list_jobs()  # up, and lets us in
            break
        except Exception:  # noqa: BLE001 - not up yet, whatever the client says
            assert head.poll() is None and time.time() < deadline, "the Ray head did not come up"
            time.sleep(1)
    yield Head(address, token)
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(30)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)  # whatever of its group is left
    shutil.rmtree(temp, ignore_errors=True)
    for name, value in before.items():
        os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


@pytest.fixture
def ray_store(ray_head, postgres_url, tmp_path):
    store = open_store(load_settings(home=tmp_path / "home", database_url=postgres_url, ray_address=ray_head.address,
                                     ray_token=ray_head.token))
    corpus = tmp_path / "tales.txt"
    corpus.write_text("\n\n".join(f"The {a} fox saw the {b} hen near the {c} barn and ran home."
                                  for a in ("red", "quick", "old", "small") for b in ("white", "brown", "tiny")
                                  for c in ("big", "green", "far")))
    yield store, str(import_dataset(store, [corpus], name="tales")["dataset_id"])
    for run_id in _working(store):  # leave no job on the head for the next test
        jobs.request(store, run_id, "stop")
    store.close()


def _working(store) -> list[int]:
    with store.session() as session:
        return [run.id for run in session.query(Run).filter(Run.status.in_(("starting", "running")))]



def test_ray_places_three_one_gpu_runs_two_at_a_time(ray_store):
    store, dataset = ray_store
    run_ids = [jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=40, use_cpu=False))
               for _ in range(3)]
    assert sorted(jobs.dispatch(store)) == run_ids  # all handed to Ray, which places them
    most_running, waited = 0, set()
    deadline = time.time() + 600
    while not all(run_summary(store, r)["status"] in RUN_ENDED for r in run_ids):
        assert time.time() < deadline, [run_summary(store, r) for r in run_ids]
        jobs.dispatch(store)
        summaries = [run_summary(store, r) for r in run_ids]
        most_running = max(most_running, sum(s["status"] == "running" for s in summaries))
        waited |= {s["run_id"] for s in summaries
                   if (s["placement"]["wait_reason"] or "").startswith("waits for Ray to free 1 GPU(s)")}
        time.sleep(0.5)
    assert most_running == 2
    assert waited  # the one Ray held back said what it waited for
    summaries = [run_summary(store, r) for r in run_ids]
    assert [s["status"] for s in summaries] == ["completed"] * 3, summaries
    assert all(s["placement"]["launcher"] == "ray" and s["placement"]["job_id"] for s in summaries)
    with store.session() as session:
        runs = sorted((session.get(Run, r) for r in run_ids), key=lambda run: run.started_at)
        assert runs[2].started_at >= min(runs[0].ended_at, runs[1].ended_at)
    assert "train loss" in jobs.log_tail(store, run_ids[0], lines=200) or "step" in jobs.log_tail(store, run_ids[0])


def test_a_run_larger_than_the_cluster_waits_saying_so_and_stops(ray_store):
    store, dataset = ray_store
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch",
                             text_config(max_steps=1, num_processes=3, use_cpu=False))
    waiting = wait_until(store, run_id, lambda s: s["placement"]["wait_reason"], timeout=60)
    assert waiting["status"] == "starting"
    assert waiting["placement"]["wait_reason"].startswith("waits for Ray to free 3 GPU(s) and 3 CPU(s)")
    jobs.request(store, run_id, "stop")
    assert wait_until(store, run_id, lambda s: s["status"] in RUN_ENDED, timeout=60)["status"] == "stopped"


def test_a_killed_ray_worker_fails_its_run_with_the_log_and_the_run_resumes(ray_store):
    import psutil

    store, dataset = ray_store
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=400, use_cpu=False))
    wait_until(store, run_id, lambda s: s["status"] == "running" and s["checkpoints"])
    workers = [p for p in psutil.process_iter(["cmdline"])
               if (p.info["cmdline"] or [])[-2:] == ["studio.training.worker", str(run_id)]
               and p.environ().get("STUDIO_HOME") == str(store.home)]
    assert workers
    for worker in workers:
        worker.kill()  # as a node's OOM killer would
    failed = wait_until(store, run_id, lambda s: s["status"] in RUN_ENDED, timeout=120)
    assert failed["status"] == "failed"
    assert "the Ray job" in failed["error"] and "Last lines of its log" in failed["error"]

    saved = int(failed["checkpoints"][-1].rsplit("-", 1)[1])
    jobs.resume(store, run_id)
    wait_until(store, run_id, lambda s: s["status"] == "running" and s["steps"] > saved + 1)
    jobs.request(store, run_id, "stop")  # through the store's flag, which the worker under Ray reads
    assert wait_until(store, run_id, lambda s: s["status"] in RUN_ENDED)["status"] == "stopped"


def test_a_two_process_run_trains_on_a_node_without_cuda_as_two_gloo_ranks(ray_store):
    store, dataset = ray_store
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch",
                             text_config(max_steps=3, num_processes=2, use_cpu=False))
    done = wait_until(store, run_id, lambda s: s["status"] in RUN_ENDED)
    assert done["status"] == "completed", done["error"]
    assert done["steps"] == 3


def curve(store, run_id: int, name: str) -> dict[int, float]:
    return {row["step"]: row["value"] for row in metric_rows(store, run_id)[0] if row["name"] == name}


def test_a_run_on_two_machines_through_ray_train_learns_as_the_same_run_in_one_process(ray_store):
    """Ray Train's TorchTrainer with two workers (num_nodes=2, one process each, 4 items each) against one process
    with 8 items: the same 8 items make each optimizer step, so the two runs follow one trajectory."""
    store, dataset = ray_store
    same = dict(max_steps=6, eval_steps=2, save_steps=6, sample_steps=0, use_cpu=True, seed=7)
    one = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(per_device_train_batch_size=8, **same))
    assert wait_until(store, one, lambda s: s["status"] in RUN_ENDED, timeout=300)["status"] == "completed"
    two = jobs.create_run(store, dataset, "starter-text", "scratch",
                          text_config(per_device_train_batch_size=4, num_nodes=2, **same))
    done = wait_until(store, two, lambda s: s["status"] in RUN_ENDED, timeout=300)
    assert done["status"] == "completed", done["error"]
    log = jobs.log_tail(store, two, lines=400)
    assert "Ray Train with 2 worker(s) (2 machine(s) x 1 process(es)) on CPUs" in log
    assert "2 process(es) on cpu" in log  # the loop saw the two ranks Ray Train started
    # Within 1%, not exactly: each rank's loss is the mean over its own tokens (the last packed sequence is shorter),
    # and validation averages batches of 4 rather than of 8; measured: 0.3% at most.
    for name in ("val_loss", "train_loss"):
        alone, spread = curve(store, one, name), curve(store, two, name)
        assert sorted(spread) == sorted(alone), name
        print(name, alone, spread)
        assert [spread[step] for step in sorted(spread)] == pytest.approx([alone[s] for s in sorted(alone)], rel=0.01)
    assert curve(store, two, "val_loss")[6] < curve(store, two, "val_loss")[0]  # and it learnt


def test_without_its_token_the_cluster_refuses_the_studio_saying_so(ray_head, postgres_url, tmp_path):
    store = open_store(load_settings(home=tmp_path / "home", database_url=postgres_url, ray_address=ray_head.address))
    corpus = tmp_path / "tales.txt"
    corpus.write_text("The red fox ran home.\n\nThe old hen sat still.\n\n" * 8)
    dataset = str(import_dataset(store, [corpus], name="tales")["dataset_id"])
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=1))
    jobs.dispatch(store)
    failed = run_summary(store, run_id)
    assert failed["status"] == "failed"
    assert f"could not start the worker: Ray at {ray_head.address} refused the job" in failed["error"]
    assert "Authentication required" in failed["error"], failed["error"]
    store.close()


def test_metrics_and_exports_go_to_the_cluster_as_ray_jobs_and_imports_stay_here(ray_store, tmp_path):
    from studio.tasks import service as tasks
    from studio.tasks.service import stage_files

    store, dataset = ray_store
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=2, sample_steps=0))
    assert wait_until(store, run_id, lambda s: s["status"] in RUN_ENDED)["status"] == "completed"
    corpus = tmp_path / "more.txt"
    corpus.write_text("The brown hen ran to the barn.\n\nThe fox sat still by the gate.\n\n" * 4)
    submitted = {"metrics": tasks.submit(store, "metrics", {"ref": str(run_id), "max_items": 8, "prompts": 1,
                                                            "samples": 1, "max_new_tokens": 4}),
                 "export": tasks.submit(store, "export", {"ref": str(run_id), "fmt": "merged"}),
                 "import": tasks.submit(store, "import", {"paths": stage_files(store, [corpus]), "project": "default"})}
    deadline = time.time() + 300
    while not all(tasks.view(store, t)["status"] in ("completed", "failed", "cancelled") for t in submitted.values()):
        assert time.time() < deadline, [tasks.view(store, t) for t in submitted.values()]
        tasks.dispatch(store)
        time.sleep(0.5)
    views = {kind: tasks.view(store, task_id) for kind, task_id in submitted.items()}
    assert {kind: v["status"] for kind, v in views.items()} == dict.fromkeys(submitted, "completed"), views
    with store.session() as session:
        rows = {kind: session.get(Task, task_id) for kind, task_id in submitted.items()}
        for kind in ("metrics", "export"):  # Ray jobs: no pid of this machine's, the job's id instead
            assert (rows[kind].launcher, rows[kind].pid) == ("ray", None)
            assert rows[kind].job_id.startswith(f"studio-task-{submitted[kind]}-")
            assert rows[kind].host.startswith("ray:")
        assert rows["import"].launcher == "local" and rows["import"].pid is not None
    assert views["metrics"]["result"]["ref"].startswith(f"{run_id}:")
    # the job's output is in the task's log under STUDIO_HOME, as a local worker's is
    assert f"task {submitted['export']} completed" in store.path(f"tasks/{submitted['export']}.log").read_text()


def test_killed_ray_train_workers_fail_the_run_with_the_log_and_it_resumes_on_two_machines(ray_store):
    import psutil

    store, dataset = ray_store
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch",
                             text_config(max_steps=400, num_nodes=2, sample_steps=0))
    wait_until(store, run_id, lambda s: s["status"] == "running" and s["checkpoints"])
    workers = [p for p in psutil.process_iter(["cmdline"]) if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])
               and p.environ().get("STUDIO_HOME") == str(store.home)]
    assert len(workers) == 2, [p.info["cmdline"] for p in workers]
    for worker in workers:
        worker.kill()  # both ranks, as a node's end would: neither writes the run's end, Ray Train's driver does
    failed = wait_until(store, run_id, lambda s: s["status"] in RUN_ENDED, timeout=120)
    assert failed["status"] == "failed"
    assert "Ray Train's workers failed" in failed["error"] and "Last lines of its log" in failed["error"]

    saved = int(failed["checkpoints"][-1].rsplit("-", 1)[1])
    jobs.resume(store, run_id)
    resumed = wait_until(store, run_id, lambda s: s["status"] == "running" and s["steps"] > saved + 1)
    assert resumed["placement"]["launcher"] == "ray"
    jobs.request(store, run_id, "stop")  # rank 0 reads the flag and every rank stops with it
    assert wait_until(store, run_id, lambda s: s["status"] in RUN_ENDED)["status"] == "stopped"
    assert f"resumed from step-{saved:07d}" in jobs.log_tail(store, run_id, lines=400)

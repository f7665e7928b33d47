"""Placement on a device pool (studio.placement) and the local launcher: the policy on its own, then real workers on
two fake GPUs (``STUDIO_GPUS=0,1`` on a machine without CUDA: they train on the CPU but hold their slot)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from studio import placement
from studio.data.service import import_dataset
from studio.status import RUN_ENDED, RunStatus
from studio.store.tables import DeviceClaim, Run
from studio.training import jobs
from studio.training.launchers import LocalLauncher
from studio.training.runs import run_summary, where_text
from test_jobs import text_config, wait_until

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
WINDOW = timedelta(seconds=300)


def waiting(run_id: int, wants: int, minutes_ago: float = 0) -> placement.Waiting:
    return placement.Waiting(run_id, wants, NOW - timedelta(minutes=minutes_ago))


def test_every_queued_run_that_fits_starts_oldest_first():
    chosen = placement.plan([waiting(1, 1), waiting(2, 1), waiting(3, 1)], ["0", "1"], ["0", "1"], NOW, WINDOW)
    assert chosen.start == {1: ["0"], 2: ["1"]}
    assert chosen.waits == {3: "waits for 1 free GPUs (2 of 2 busy)"}


def test_a_large_request_lets_smaller_later_runs_start_only_within_the_backfill_window():
    pool = ["0", "1", "2", "3"]
    fresh = placement.plan([waiting(1, 4, minutes_ago=1), waiting(2, 1)], ["2", "3"], pool, NOW, WINDOW)
    assert fresh.start == {2: ["2"]}  # backfill: the 4-GPU run could not use the two free ones anyway
    starving = placement.plan([waiting(1, 4, minutes_ago=6), waiting(2, 1)], ["2", "3"], pool, NOW, WINDOW)
    assert starving.start == {}  # past the window: the free GPUs wait for the large run
    assert starving.waits[2] == "waits behind run #1, which has waited longest for 4 GPUs"


def test_a_request_larger_than_the_pool_waits_with_the_reason_and_holds_no_one_up():
    chosen = placement.plan([waiting(1, 3, minutes_ago=60), waiting(2, 1)], ["0", "1"], ["0", "1"], NOW, WINDOW)
    assert chosen.start == {2: ["0"]}
    assert "asks for 3 GPUs; this studio has 2 (0, 1)" in chosen.waits[1]


def test_the_pool_is_the_declared_gpus_else_one_cpu_slot(stores, monkeypatch):
    assert placement.pool(stores(gpus=" 0, 1,1 ").settings) == ["0", "1"]
    monkeypatch.setattr(placement, "visible_gpus", lambda: [])
    assert placement.pool(stores().settings) == ["cpu"]
    assert placement.devices_wanted(4, ["cpu"]) == 1  # a CPU run's processes share the one slot
    assert placement.cuda_visible(["1", "3"]) == {"CUDA_VISIBLE_DEVICES": "1,3"} and placement.cuda_visible(["cpu"]) == {}


@pytest.fixture
def gpu_store(stores, tmp_path):
    """A store whose pool is two fake GPUs, and a small text dataset."""
    store = stores(gpus="0,1")
    corpus = tmp_path / "tales.txt"
    corpus.write_text("\n\n".join(f"The {a} fox saw the {b} hen near the {c} barn and ran home."
                                  for a in ("red", "quick", "old", "small") for b in ("white", "brown", "tiny")
                                  for c in ("big", "green", "far")))
    return store, str(import_dataset(store, [corpus], name="tales")["dataset_id"])


def cli_runs(store) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "studio.cli", "runs", "list", "--json"], capture_output=True,
                          text=True, env={**os.environ, "STUDIO_HOME": str(store.home), "STUDIO_GPUS": "0,1"},
                          timeout=120, check=True)
    return json.loads(done.stdout)["runs"]


def statuses(store, run_ids) -> list[str]:
    return [run_summary(store, run_id)["status"] for run_id in run_ids]


@pytest.mark.slow
def test_three_one_gpu_runs_on_two_gpus_run_two_at_a_time(gpu_store):
    store, dataset = gpu_store
    run_ids = [jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=40, use_cpu=False))
               for _ in range(3)]
    assert sorted(jobs.dispatch(store)) == run_ids[:2]
    third = run_summary(store, run_ids[2])
    assert third["status"] == "queued" and third["placement"]["wait_reason"] == "waits for 1 free GPUs (2 of 2 busy)"
    assert where_text(third) == third["placement"]["wait_reason"]
    held = {run_summary(store, r)["placement"]["devices"][0] for r in run_ids[:2]}
    assert held == {"0", "1"}

    seen_together, most_at_once = None, 0
    deadline = time.time() + 400
    while not all(s in RUN_ENDED for s in statuses(store, run_ids)):
        assert time.time() < deadline, [run_summary(store, r) for r in run_ids]
        jobs.dispatch(store)
        working = [s for s in statuses(store, run_ids) if s in ("starting", "running")]
        most_at_once = max(most_at_once, len(working))
        if seen_together is None and working.count("running") == 2:
            listed = [r for r in cli_runs(store) if r["status"] == "running"]
            if len(listed) == 2:  # still both running when the CLI looked
                seen_together = listed
        with store.session() as session:
            claims = session.query(DeviceClaim).all()
            assert len(claims) <= 2 and {c.device for c in claims} <= {"0", "1"}
        time.sleep(0.5)
    assert most_at_once == 2
    assert statuses(store, run_ids) == ["completed"] * 3
    assert seen_together is not None, "`studio runs list --json` never showed two runs running together"
    assert sorted(r["placement"]["devices"][0] for r in seen_together) == ["0", "1"]
    assert all(r["placement"]["launcher"] == "local" for r in seen_together)
    with store.session() as session:
        runs = [session.get(Run, r) for r in run_ids]
        assert runs[2].started_at >= min(runs[0].ended_at, runs[1].ended_at)  # the third waited for a free GPU
        assert session.query(DeviceClaim).count() == 0


def test_a_run_asking_for_more_gpus_than_the_pool_has_waits_saying_why(gpu_store):
    store, dataset = gpu_store
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch",
                             text_config(max_steps=1, num_processes=3, use_cpu=False))
    assert jobs.dispatch(store) == []
    summary = run_summary(store, run_id)
    assert summary["status"] == "queued"
    assert summary["placement"]["wait_reason"].startswith("asks for 3 GPUs; this studio has 2 (0, 1)")
    from studio.ui.train_tab import runs_table

    assert runs_table(store)[0][2] == summary["placement"]["wait_reason"]  # the Train tab's "where / waits for"
    jobs.request(store, run_id, "stop")  # a queued run stops without ever starting
    assert run_summary(store, run_id)["status"] == "stopped"


def test_a_run_started_from_another_machine_is_judged_by_its_heartbeat_alone(gpu_store):
    store, dataset = gpu_store
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=1))
    with store.session() as session:  # a pid that is not alive here, on another host, beating a moment ago
        run = session.get(Run, run_id)
        run.status, run.pid, run.host = RunStatus.RUNNING, 999_999, "another-node"
        run.heartbeat_at, run.launcher = datetime.now(timezone.utc), "local"
    with store.session() as session:
        assert LocalLauncher().gone(store, session.get(Run, run_id)) is None
        session.get(Run, run_id).heartbeat_at = datetime.now(timezone.utc) - timedelta(hours=1)
    with store.session() as session:
        assert "stopped sending heartbeats" in LocalLauncher().gone(store, session.get(Run, run_id))


def test_ray_with_a_sqlite_store_is_refused_saying_what_a_cluster_needs(stores, tmp_path):
    store = stores(ray_address="http://127.0.0.1:8265")
    corpus = tmp_path / "tales.txt"
    corpus.write_text("The red fox ran home.\n\nThe old hen sat still.")
    dataset = str(import_dataset(store, [corpus], name="tales")["dataset_id"])
    with pytest.raises(jobs.RunError, match="PostgreSQL database every node can reach"):
        jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=1))


@pytest.mark.slow
def test_a_worker_whose_heartbeat_stops_fails_with_its_log_tail_and_resumes_from_its_checkpoint(gpu_store, stores):
    _, dataset = gpu_store
    store = stores(gpus="0,1", heartbeat_timeout_seconds=10)  # its workers beat every 2.5 s
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=300, use_cpu=False))
    jobs.dispatch(store)
    wait_until(store, run_id, lambda s: s["checkpoints"] and s["status"] == "running")
    with store.session() as session:
        pid = session.get(Run, run_id).pid
    os.killpg(pid, signal.SIGSTOP)  # hung, not dead: only its silence in the store gives it away
    try:
        failed = wait_until(store, run_id, lambda s: s["status"] in RUN_ENDED, timeout=60)
    finally:
        os.killpg(pid, signal.SIGKILL)
    assert failed["status"] == "failed" and "stopped sending heartbeats" in failed["error"]
    assert "Last lines of its log" in failed["error"] and "parameters:" in failed["error"]
    assert failed["placement"]["devices"] == ["0"]
    with store.session() as session:
        assert session.query(DeviceClaim).count() == 0  # its GPU is free again

    saved = int(failed["checkpoints"][-1].rsplit("-", 1)[1])
    jobs.resume(store, run_id)
    resumed = wait_until(store, run_id, lambda s: s["status"] == "running" and s["steps"] > saved + 1)
    assert resumed["error"] is None
    jobs.request(store, run_id, "stop")
    assert wait_until(store, run_id, lambda s: s["status"] in RUN_ENDED)["status"] == "stopped"



def test_a_deployment_holds_its_gpu_until_it_ends_and_runs_are_placed_around_it(gpu_store):
    from studio.store.tables import Deployment

    store, dataset = gpu_store
    with store.session() as session:
        row = Deployment(name="tales", models=[], quantize="none", host="127.0.0.1", settings={}, report={},
                         status="running")
        session.add(row)
        session.flush()
        deployment_id = row.id
    assert placement.claim_one(store, "deployment", deployment_id) == "0"
    run_ids = [jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=1, use_cpu=False))
               for _ in range(2)]
    chosen = jobs._plan(store, jobs.launcher_for(store.settings))
    assert chosen.start == {run_ids[0]: ["1"]} and run_ids[1] in chosen.waits
    assert placement.usage(store)["busy"] == {"0": f"deployment {deployment_id}"}
    with store.session() as session:
        session.get(Deployment, deployment_id).status = "stopped"
    with store.session() as session:
        placement.release_ended(session)
    assert placement.usage(store)["free"] == ["0", "1"]


def test_generate_declares_the_first_visible_gpu_while_its_set_runs(stores, monkeypatch):
    from studio.generation.cache import ModelCache
    from studio.generation.service import _claim_gpu
    from studio.store.tables import SampleSet

    store = stores(gpus="2,3")
    with store.session() as session:
        row = SampleSet(modality="text", base_model="m", status="running")
        session.add(row)
        session.flush()
        set_id = row.id
    _claim_gpu(store, set_id, ModelCache(1, device="cpu"))
    assert placement.usage(store)["busy"] == {}  # generating on the CPU holds no GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,2")
    _claim_gpu(store, set_id, ModelCache(1, device="cuda"))
    assert placement.usage(store)["busy"] == {"3": f"generation {set_id}"}  # cuda:0 is the first visible GPU
    with store.session() as session:
        session.get(SampleSet, set_id).status = "interrupted"
    with store.session() as session:
        placement.release_ended(session)  # a set that ended without releasing (its process died) frees it
    assert placement.usage(store)["free"] == ["2", "3"]


def test_a_ray_job_asks_one_gpu_and_one_cpu_per_process_and_the_memory_set(stores):
    from studio.training.launchers import ray_resources

    store = stores(ray_memory_gb=1.5)
    two = Run(config=text_config(num_processes=2, use_cpu=False).model_dump())
    assert ray_resources(two, store.settings) == {"entrypoint_num_gpus": 2, "entrypoint_num_cpus": 2,
                                                  "entrypoint_memory": 3 * 2**30}
    on_cpu = Run(config=text_config(num_processes=1, use_cpu=True).model_dump())
    assert ray_resources(on_cpu, stores().settings) == {"entrypoint_num_gpus": None, "entrypoint_num_cpus": 1,
                                                        "entrypoint_memory": None}


def test_a_run_on_several_machines_asks_ray_train_for_its_workers_and_nothing_for_its_driver(stores):
    from studio.training.launchers import ray_request, ray_resources
    from studio.training.ray_train import scaling

    config = text_config(num_processes=2, num_nodes=3, use_cpu=False)
    run = Run(config=config.model_dump())
    assert ray_resources(run, stores().settings) == {"entrypoint_num_cpus": 0}  # the driver only drives
    assert ray_request(run) == (6, 6)  # what its wait reason names
    workers = scaling(config, memory_gb=1.5)
    assert (workers.num_workers, workers.use_gpu) == (6, True)
    assert workers.resources_per_worker == {"CPU": 1, "GPU": 1, "memory": int(1.5 * 2**30)}
    on_cpus = scaling(text_config(num_nodes=2, use_cpu=True))
    assert (on_cpus.num_workers, on_cpus.use_gpu, on_cpus.resources_per_worker) == (2, False, {"CPU": 1})


def test_several_machines_need_a_ray_cluster_and_no_accelerate_config(stores, tmp_path):
    store = stores()
    corpus = tmp_path / "tales.txt"
    corpus.write_text("The red fox ran home.\n\nThe old hen sat still.")
    dataset = str(import_dataset(store, [corpus], name="tales")["dataset_id"])
    with pytest.raises(jobs.RunError, match=r"num_nodes 2 trains on several machines, which needs a Ray cluster: "
                                            r"set STUDIO_RAY_ADDRESS"):
        jobs.create_run(store, dataset, "starter-text", "scratch", text_config(max_steps=1, num_nodes=2))
    accelerate_yaml = tmp_path / "accelerate.yaml"
    accelerate_yaml.write_text("compute_environment: LOCAL_MACHINE\n")
    problems = jobs.several_machines_problems(
        text_config(num_nodes=2, accelerate_config_file=str(accelerate_yaml)), "http://head:8265")
    assert problems == ["accelerate_config_file is for accelerate launch on one machine; with num_nodes above 1 Ray "
                        "Train starts the processes: clear it"]
    assert jobs.several_machines_problems(text_config(num_nodes=1), "") == []


def test_the_ray_token_goes_to_the_jobs_api_only_never_into_a_jobs_variables(stores):
    from studio.training.launchers import cluster_env, ray_headers

    settings = stores(ray_token="s3cret").settings
    assert ray_headers(settings.ray_token) == {"Authorization": "Bearer s3cret"}
    assert ray_headers("") is None  # Ray's own client then decides (RAY_AUTH_MODE=token and its token files)
    assert "STUDIO_RAY_TOKEN" not in cluster_env(settings) and "s3cret" not in cluster_env(settings).values()
    assert "STUDIO_RAY_TOKEN" in settings.as_env()  # (as_env is every setting: the cluster's copy leaves it out)


def test_a_worker_on_another_machine_is_judged_by_its_heartbeat_not_a_local_pid(tmp_path):
    """Runs and tasks alike: dispatchers on several machines share one PostgreSQL store."""
    from studio import processes

    now, log = datetime.now(timezone.utc), tmp_path / "worker.log"
    log.write_text("step 9\n")
    dead_here = 999_999  # no such process on this machine
    assert "process died" in processes.worker_gone(dead_here, now, timedelta(minutes=3), log)
    assert processes.worker_gone(dead_here, now, timedelta(minutes=3), log, host="another-node") is None
    silent = processes.worker_gone(dead_here, now - timedelta(hours=1), timedelta(minutes=3), log, host="another-node")
    assert "stopped sending heartbeats" in silent and "step 9" in silent

"""Where a run's worker process runs: one seam, ``Launcher``, with two implementations.

- ``LocalLauncher``: a detached process on this machine (``accelerate launch``), pinned to the devices the pool gave
  it with ``CUDA_VISIBLE_DEVICES``.
- ``RayLauncher`` (``STUDIO_RAY_ADDRESS``): a Ray job through the Jobs API, with the run's resource request (GPUs,
  CPUs) as the entrypoint's; Ray places it on a node and queues it until the resources are free, so the studio grows
  no scheduler of its own. Its output is written to the run's ``train.log`` (``STUDIO_HOME`` is shared storage) and
  read back through Ray when that is missing.

Either way the worker talks to the run's row only: heartbeat, metrics, stop/save/sample flags. So liveness is its
heartbeat in the store (``STUDIO_HEARTBEAT_TIMEOUT_SECONDS``); a launcher only adds what it knows sooner (the local
process died; the Ray job failed). Slurm or Kubernetes would be a third class with the same five methods.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timedelta

from studio import processes
from studio.placement import cuda_visible
from studio.settings import Settings
from studio.status import RunStatus
from studio.store import Store
from studio.store.tables import Run
from studio.training.runs import log_path

LOCAL, RAY = "local", "ray"
SQLITE_WITH_RAY = ("STUDIO_RAY_ADDRESS is set but the store is SQLite, a file on this machine: Ray's nodes must all "
                   "reach the store. Set STUDIO_DATABASE_URL to a PostgreSQL database every node can reach (and keep "
                   "STUDIO_HOME on storage every node mounts), or unset STUDIO_RAY_ADDRESS to train here")


class LaunchError(RuntimeError):
    """A worker could not be started; the message says why."""


class Launcher:
    """Starts, watches and stops the worker of one run."""

    name = ""
    places_devices = True  # whether the studio's own pool places its runs (False: the cluster does)

    def start(self, store: Store, run: Run, command: list[str], env: dict[str, str], devices: list[str]) -> dict:
        """Starts the worker; returns what to record on the run (``pid``, ``job_id``, ``host``)."""
        raise NotImplementedError

    def gone(self, store: Store, run: Run) -> str | None:
        """Why the run's worker counts as gone (with its log's end), None while it lives or is being started."""
        raise NotImplementedError

    def waiting(self, store: Store, run: Run) -> str | None:
        """What a started run's worker still waits for before it runs (a Ray job waiting for resources)."""
        return None

    def stop(self, store: Store, run: Run) -> None:
        """Ends a worker that cannot read its stop flag (not started yet). A running one stops through the flag."""

    def log_tail(self, store: Store, run: Run, lines: int = 30) -> str:
        return processes.log_tail(log_path(store, run.id), lines)


class LocalLauncher(Launcher):
    name = LOCAL

    def start(self, store, run, command, env, devices):
        pid = processes.start_detached(command, log_path(store, run.id), store.settings, **env, **cuda_visible(devices))
        return {"pid": pid, "host": processes.this_host()}

    def gone(self, store, run):
        timeout = timedelta(seconds=store.settings.heartbeat_timeout_seconds)
        here = run.host in (None, processes.this_host())
        if here and run.status == RunStatus.STARTING and processes.process_alive(run.pid):
            return None  # accelerate and the worker are still importing: the worker beats once it has started
        return processes.worker_gone(run.pid, run.heartbeat_at, timeout, log_path(store, run.id), host=run.host)


class RayLauncher(Launcher):
    name = RAY
    places_devices = False

    def __init__(self, settings: Settings):
        check_ray_settings(settings)
        self.address = settings.ray_address

    def client(self):
        from ray.job_submission import JobSubmissionClient  # Ray is an extra: imported only when a cluster is set

        return JobSubmissionClient(self.address)

    def start(self, store, run, command, env, devices):
        log = shlex.quote(str(log_path(store, run.id)))
        # The node Ray picks decides whether it trains on GPUs: one without a driver trains on the CPU (gloo ranks
        # for several processes). bash -o pipefail: the job fails when the worker does; its output goes both to
        # Ray and to train.log.
        script = (f"{{ nvidia-smi -L >/dev/null 2>&1 || export ACCELERATE_USE_CPU=1; {shlex.join(command)}; }} "
                  f"2>&1 | tee -a {log}")
        entrypoint = f"bash -o pipefail -c {shlex.quote(script)}"
        try:
            job_id = self.client().submit_job(
                entrypoint=entrypoint, submission_id=f"studio-run-{run.id}-{int(datetime.now().timestamp())}",
                runtime_env={"env_vars": {**store.settings.as_env(), **env, "PYTHONUNBUFFERED": "1",
                                          "PYTHONPATH": str(processes.ROOT)}},
                metadata={"studio_run": str(run.id)}, **ray_resources(run, store.settings))
        except Exception as error:  # noqa: BLE001 - the cluster's refusal, whatever its kind, is the reason shown
            raise LaunchError(f"Ray at {self.address} refused the job: {error}") from error
        return {"job_id": job_id, "host": f"ray:{self.address}"}

    def _status(self, run: Run):
        try:
            return self.client().get_job_info(run.job_id)
        except Exception:  # noqa: BLE001 - the cluster unreachable for a moment is not the run's death
            return None

    def gone(self, store, run):
        if run.job_id is None:
            return None  # claimed a moment ago by a dispatcher that is submitting it right now
        info = self._status(run)
        status = str(getattr(info, "status", "")).rsplit(".", 1)[-1]
        if status in ("FAILED", "STOPPED", "SUCCEEDED"):
            # SUCCEEDED with the run still active: the worker ended without writing its end (killed in between)
            why = getattr(info, "message", "") or status.lower()
            return f"the Ray job {run.job_id} ended ({status}: {why}). Last lines of its log:\n{self.log_tail(store, run)}"
        if status == "PENDING":
            return None  # Ray holds it until resources free up: no heartbeat is expected yet
        timeout = timedelta(seconds=store.settings.heartbeat_timeout_seconds)  # its host is "ray:…": no pid to ask
        return processes.worker_gone(None, run.heartbeat_at, timeout, log_path(store, run.id), host=run.host)

    def waiting(self, store, run):
        info = run.job_id and self._status(run)
        if info is None or str(info.status).rsplit(".", 1)[-1] != "PENDING":
            return None
        gpus, cpus = ray_request(run)
        return f"waits for Ray to free {gpus} GPU(s) and {cpus} CPU(s) on one node (job {run.job_id})"

    def stop(self, store, run):
        if run.job_id:
            try:
                self.client().stop_job(run.job_id)
            except Exception:  # noqa: BLE001 - an ended or unknown job needs no stopping
                pass

    def log_tail(self, store, run, lines=30):
        if log_path(store, run.id).exists() or not run.job_id:
            return super().log_tail(store, run, lines)
        try:  # STUDIO_HOME not shared after all, or the job never started: what Ray kept
            return "\n".join(self.client().get_job_logs(run.job_id).splitlines()[-lines:])
        except Exception:  # noqa: BLE001
            return ""


def ray_request(run: Run) -> tuple[int, int]:
    """(GPUs, CPUs) a run asks Ray for: one of each per process (no GPU for a use_cpu run). Fake GPUs count too
    (``ray start --num-gpus 2`` on a CPU machine), so the placement is testable without CUDA."""
    from studio.training.config import TrainConfig

    config = TrainConfig.model_validate(run.config)
    return (0 if config.use_cpu else config.num_processes), config.num_processes


def ray_resources(run: Run, settings: Settings) -> dict:
    """The Ray job's entrypoint resources for the run: GPUs, CPUs and, with ``STUDIO_RAY_MEMORY_GB``, memory."""
    gpus, cpus = ray_request(run)
    memory = int(settings.ray_memory_gb * 2**30) * cpus  # one CPU per process
    return {"entrypoint_num_gpus": gpus or None, "entrypoint_num_cpus": cpus, "entrypoint_memory": memory or None}


def check_ray_settings(settings: Settings) -> None:
    """Refuses Ray with a store only this machine reaches."""
    if settings.ray_address and settings.db_url.startswith("sqlite"):
        raise LaunchError(SQLITE_WITH_RAY)


def launcher_for(settings: Settings, name: str | None = None) -> Launcher:
    """The launcher named ``name`` (a run's recorded one), else the one the settings choose for new runs."""
    name = name or (RAY if settings.ray_address else LOCAL)
    return RayLauncher(settings) if name == RAY else LocalLauncher()


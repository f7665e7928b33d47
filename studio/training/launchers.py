"""Where a run's worker process runs: one seam, ``Launcher``, with two implementations.

- ``LocalLauncher``: a detached process on this machine (``accelerate launch``), pinned to the devices the pool gave
  it with ``CUDA_VISIBLE_DEVICES``.
- ``RayLauncher`` (``STUDIO_RAY_ADDRESS``): a Ray job through the Jobs API, with the run's resource request (GPUs,
  CPUs) as the entrypoint's; Ray places it on a node and queues it until the resources are free, so the studio grows
  no scheduler of its own. Its output is written to the run's ``train.log`` (``STUDIO_HOME`` is shared storage) and
  read back through Ray when that is missing. A run on several machines (``num_nodes`` > 1) is a job whose
  entrypoint drives Ray Train (``ray_train``); the heavy background tasks (metrics, exports) go through ``submit``
  too. ``STUDIO_RAY_TOKEN`` is sent to the Jobs API as a bearer token (a cluster with ``RAY_AUTH_MODE=token``).

Either way the worker talks to the run's row only: heartbeat, metrics, stop/save/sample flags. So liveness is its
heartbeat in the store (``STUDIO_HEARTBEAT_TIMEOUT_SECONDS``); a launcher only adds what it knows sooner (the local
process died; the Ray job failed). Slurm or Kubernetes would be a third class with the same five methods.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timedelta
from pathlib import Path

from studio import processes
from studio.placement import cuda_visible
from studio.settings import Settings
from studio.status import RunStatus
from studio.store import Store
from studio.store.tables import Run
from studio.training.config import TrainConfig
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
        self.address, self.token = settings.ray_address, settings.ray_token

    def client(self):
        from ray.job_submission import JobSubmissionClient  # Ray is an extra: imported only when a cluster is set

        # Ray's client sends a token only when this process has RAY_AUTH_MODE=token; STUDIO_RAY_TOKEN is sent as is.
        return JobSubmissionClient(self.address, headers=ray_headers(self.token))

    def start(self, store, run, command, env, devices):
        return self.submit(store, f"run-{run.id}", command, env, log_path(store, run.id),
                           ray_resources(run, store.settings))

    def submit(self, store: Store, name: str, command: list[str], env: dict[str, str], log: Path,
               resources: dict) -> dict:
        """Submits ``command`` as a Ray job (``name``: "run-3", "task-7") asking ``resources`` for its entrypoint;
        its output goes to ``log`` too. Returns what to record on the row (``job_id``, ``host``). Runs and the
        heavy background tasks go through here."""
        # The node Ray picks decides whether it trains on GPUs: one without a driver trains on the CPU (gloo ranks
        # for several processes). bash -o pipefail: the job fails when the worker does; its output goes both to
        # Ray and to the log under STUDIO_HOME.
        script = (f"{{ nvidia-smi -L >/dev/null 2>&1 || export ACCELERATE_USE_CPU=1; {shlex.join(command)}; }} "
                  f"2>&1 | tee -a {shlex.quote(str(log))}")
        entrypoint = f"bash -o pipefail -c {shlex.quote(script)}"
        try:
            job_id = self.client().submit_job(
                entrypoint=entrypoint, submission_id=f"studio-{name}-{int(datetime.now().timestamp())}",
                runtime_env={"env_vars": {**cluster_env(store.settings), **env, "PYTHONUNBUFFERED": "1",
                                          "PYTHONPATH": str(processes.ROOT)}},
                metadata={"studio": name}, **resources)
        except Exception as error:  # noqa: BLE001 - the cluster's refusal, whatever its kind, is the reason shown
            raise LaunchError(f"Ray at {self.address} refused the job: {error}") from error
        return {"job_id": job_id, "host": f"ray:{self.address}"}

    def job_state(self, job_id: str | None) -> tuple[str, str]:
        """(status word: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED; Ray's message); ("", "") when the cluster
        does not answer for a moment, which is not the job's end."""
        try:
            info = self.client().get_job_info(job_id)
        except Exception:  # noqa: BLE001 - the cluster unreachable for a moment is not the run's death
            return "", ""
        return str(info.status).rsplit(".", 1)[-1], info.message or ""

    def job_gone(self, store: Store, job_id: str | None, log: Path, heartbeat_at, host: str | None,
                 timeout: timedelta | None = None) -> str | None:
        """Why the worker of a Ray job counts as gone (with its log's end), None while it lives or waits; silent for
        ``timeout`` (by default ``STUDIO_HEARTBEAT_TIMEOUT_SECONDS``) counts as gone."""
        if job_id is None:
            return None  # claimed a moment ago by a dispatcher that is submitting it right now
        status, message = self.job_state(job_id)
        if status in ("FAILED", "STOPPED", "SUCCEEDED"):
            # SUCCEEDED with the row still active: the worker ended without writing its end (killed in between)
            return (f"the Ray job {job_id} ended ({status}: {message or status.lower()}). Last lines of its log:\n"
                    f"{self.job_log_tail(job_id, log)}")
        if status == "PENDING":
            return None  # Ray holds it until resources free up: no heartbeat is expected yet
        timeout = timeout or timedelta(seconds=store.settings.heartbeat_timeout_seconds)
        return processes.worker_gone(None, heartbeat_at, timeout, log, host=host)  # host "ray:…": no pid to ask

    def gone(self, store, run):
        return self.job_gone(store, run.job_id, log_path(store, run.id), run.heartbeat_at, run.host)

    def waiting(self, store, run):
        status = self.job_state(run.job_id)[0] if run.job_id else ""
        gpus, cpus = ray_request(run)
        if status == "RUNNING" and on_several_machines(run):
            # The entrypoint runs; Ray Train waits until every worker has its resources, then they start and the
            # first of them marks the run running.
            return (f"waits for Ray Train's {cpus} worker(s) to be placed and started ({gpus} GPU(s) and {cpus} "
                    f"CPU(s) in all; job {run.job_id})")
        if status != "PENDING":
            return None
        return f"waits for Ray to free {gpus} GPU(s) and {cpus} CPU(s) on one node (job {run.job_id})"

    def stop(self, store, run):
        self.stop_job(run.job_id)

    def stop_job(self, job_id: str | None) -> None:
        if job_id:
            try:
                self.client().stop_job(job_id)
            except Exception:  # noqa: BLE001 - an ended or unknown job needs no stopping
                pass

    def log_tail(self, store, run, lines=30):
        return self.job_log_tail(run.job_id, log_path(store, run.id), lines)

    def job_log_tail(self, job_id: str | None, log: Path, lines: int = 30) -> str:
        if log.exists() or not job_id:
            return processes.log_tail(log, lines)
        try:  # STUDIO_HOME not shared after all, or the job never started: what Ray kept
            return "\n".join(self.client().get_job_logs(job_id).splitlines()[-lines:])
        except Exception:  # noqa: BLE001
            return ""


def ray_request(run: Run) -> tuple[int, int]:
    """(GPUs, CPUs) a run asks Ray for: one of each per process (no GPU for a use_cpu run), on every machine of a
    run on several. Fake GPUs count too (``ray start --num-gpus 2`` on a CPU machine), so the placement is testable
    without CUDA."""
    config = TrainConfig.model_validate(run.config)
    processes_in_all = config.num_processes * config.num_nodes
    return (0 if config.use_cpu else processes_in_all), processes_in_all


def on_several_machines(run: Run) -> bool:
    return TrainConfig.model_validate(run.config).num_nodes > 1


def ray_resources(run: Run, settings: Settings) -> dict:
    """The Ray job's entrypoint resources for the run: GPUs, CPUs and, with ``STUDIO_RAY_MEMORY_GB``, memory. A run
    on several machines asks nothing for its entrypoint, which only drives Ray Train: its workers ask for theirs."""
    if on_several_machines(run):
        return {"entrypoint_num_cpus": 0}
    gpus, cpus = ray_request(run)
    return entrypoint_resources(cpus, gpus, settings)


def entrypoint_resources(cpus: float, gpus: float, settings: Settings) -> dict:
    """A Ray job's entrypoint request: ``cpus`` CPUs, ``gpus`` GPUs and ``STUDIO_RAY_MEMORY_GB`` of memory per CPU
    (a training process has one)."""
    memory = int(settings.ray_memory_gb * 2**30 * cpus)
    return {"entrypoint_num_gpus": gpus or None, "entrypoint_num_cpus": cpus, "entrypoint_memory": memory or None}


def ray_headers(token: str) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {token}"} if token else None


def cluster_env(settings: Settings) -> dict[str, str]:
    """The settings a Ray job's worker reads, as variables: not the cluster's own token, which the job has no use
    for and which the dashboard would show with the job."""
    return {name: value for name, value in settings.as_env().items() if name != "STUDIO_RAY_TOKEN"}


def check_ray_settings(settings: Settings) -> None:
    """Refuses Ray with a store only this machine reaches."""
    if settings.ray_address and settings.db_url.startswith("sqlite"):
        raise LaunchError(SQLITE_WITH_RAY)


def launcher_for(settings: Settings, name: str | None = None) -> Launcher:
    """The launcher named ``name`` (a run's recorded one), else the one the settings choose for new runs."""
    name = name or (RAY if settings.ray_address else LOCAL)
    return RayLauncher(settings) if name == RAY else LocalLauncher()


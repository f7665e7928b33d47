"""Runs as jobs: create, queue, dispatch to a worker, stop, resume, reap dead workers.

The store is the control plane (ai-toolkit's idea): any process that dispatches (the web process, or the CLI when no
web process runs) places queued runs on the device pool (``studio.placement``) by inserting their ``DeviceClaim``
rows; the primary key lets only one claim of a device win, so two dispatchers never start two runs on one GPU. The
worker starts through a launcher (``launchers``: local processes, or Ray jobs when ``STUDIO_RAY_ADDRESS`` is set).
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from studio import placement, processes
from studio.data.preferences import EXAMPLE, PAIR, THUMBS, count_kinds
from studio.data.prompts import prompts_of
from studio.data.service import get_version, read_manifest
from studio.models.common import adapter_base, read_marker
from studio.models.preference import needs as preference_needs, usable
from studio.models.registry import family_of, modality_of, objective_trained
from studio.status import DEPLOY_ACTIVE, RUN_ACTIVE, RUN_ENDED, RUN_WORKING, RunStatus
from studio.store import Store, record_action
from studio.store.disk import low_space
from studio.store.projects import check_project_name, project_name, remove_folders
from studio.store.tables import Checkpoint, ControlFlag, Deployment, Metric, Run, RunSample
from studio.settings import secret_variables
from studio.training.config import METHODS, TrainConfig, changed_settings
from studio.training import trackers
from studio.training.launchers import LaunchError, Launcher, check_ray_settings, launcher_for
from studio.training.runs import checkpoints, log_path, run_of_folder

KIND_WORDS = {EXAMPLE: "examples", PAIR: "preference pairs", THUMBS: "thumbs up/down"}
# Hugging Face's 'constant' has no warm-up; running it with one anyway would change what the name means for configs
# carried over, and ignoring the warm-up asked for was the old, silent behaviour: the run is refused instead.
CONSTANT_HAS_NO_WARMUP = ("lr_scheduler_type 'constant' has no warm-up, but warmup_steps or warmup_ratio asks for one: "
                          "pick 'constant_with_warmup', or set warmup_steps=0 and warmup_ratio=0")


class RunError(ValueError):
    """A run cannot be created or changed as asked; the message says why."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def create_run(store: Store, dataset_ref: str, model_ref: str, method: str, config: TrainConfig,
               project: str | None = None, created_by: str | None = None) -> int:
    """A queued run, after checking the dataset, the method and that the model fits the data. The run belongs to
    its dataset's project; ``project``, when given, must be that project (a run never crosses projects, so
    deleting one project never breaks another)."""
    if method not in METHODS:
        raise RunError(f"method must be one of {', '.join(METHODS)}")
    if message := low_space(store, "start a training run"):
        raise RunError(message)
    try:
        check_ray_settings(store.settings)
    except LaunchError as error:
        raise RunError(str(error)) from None
    version = get_version(store, dataset_ref)
    modality = version.dataset.modality
    start, model_ref = model_ref, start_folder(store, model_ref, modality)
    model_modality = modality_of(model_ref)
    if model_modality and model_modality != modality:
        raise RunError(f"{model_ref} is a {model_modality} model but dataset '{version.dataset.name}' is {modality}")
    if version.splits.get("train", 0) == 0:
        raise RunError(f"dataset '{version.dataset.name}' v{version.version} has no training items")
    check_possible(store, version, model_ref, method, config)
    config = with_sample_prompts(store, version, config)
    with store.session() as session:
        owner = project_name(session, version.dataset.project_id)
        if project is not None and check_project_name(project) != owner:
            raise RunError(f"dataset '{version.dataset.name}' is in project '{owner}', not '{project}': pick a "
                           f"dataset version of '{project}' (or train in '{owner}')")
        run = Run(project_id=version.dataset.project_id, dataset_version_id=version.id, model_ref=model_ref,
                  method=method, modality=modality, config=config.model_dump(), status=RunStatus.QUEUED,
                  created_by=created_by)
        session.add(run)
        session.flush()
        run.output_dir = f"runs/{run.id}"
        record_action(session, created_by, "run.create", f"run:{run.id}", project=owner,
                      details={"dataset": f"{version.dataset_id}:{version.version}", "model": model_ref,
                               "method": method, "objective": objective_trained(model_ref, config.objective),
                               **({"start": start} if start != model_ref else {})})
    store.path(f"runs/{run.id}").mkdir(parents=True, exist_ok=True)
    return run.id


START = re.compile(r"(\d+)(?::(\d+))?")


def start_folder(store: Store, model_ref: str, modality: str) -> str:
    """``RUN_ID[:STEP]`` → that run's checkpoint's model folder (its last checkpoint without a step), refused unless
    the run trained a model of ``modality``; anything else is returned as it is. The run's ``model_ref`` is that
    folder: Generate follows it back to the start's run (``generation.variants.origin``)."""
    found = START.fullmatch(model_ref.strip())
    if found is None or Path(model_ref).expanduser().is_dir():
        return model_ref
    run_id, step = int(found.group(1)), found.group(2) and int(found.group(2))
    with store.session() as session:
        run = session.get(Run, run_id)
        run_modality = run and run.modality
    if run is None:
        raise RunError(f"no run {run_id} to start from (see `studio runs list`)")
    if run_modality != modality:
        raise RunError(f"run {run_id} trained a {run_modality} model, which cannot learn from a {modality} dataset: "
                       f"start from a run of the same kind of model, or from a {modality} model")
    saved = [c for c in checkpoints(store, run_id) if Path(c["model_path"]).is_dir()]
    chosen = next((c for c in saved if c["step"] == step), None) if step is not None else (saved or [None])[-1]
    if chosen is None:
        steps = ", ".join(str(c["step"]) for c in saved) or "none yet"
        raise RunError(f"run {run_id} has no checkpoint{f' at step {step}' if step is not None else ''} to start "
                       f"from (its checkpoints: {steps})")
    return chosen["model_path"]


def check_possible(store: Store, version, model_ref: str, method: str, config: TrainConfig) -> None:
    """Refuses, before a run exists, settings that this machine, the model or the dataset make impossible: each
    would otherwise fail in the worker seconds after the run started, or (fp16 on a CPU) silently train as
    something else. The message names every such setting and what to pick instead."""
    import importlib.util

    from studio.models.audio import other_rate
    from studio.models.text import CHAT_NEEDS_CONVERSATIONS, FLASH_ATTENTION_NEEDS, LIGER_NEEDS, QLORA_NEEDS, \
        flash_attention_missing

    modality = version.dataset.modality
    reasons = []
    family = family_of(model_ref)
    if family is not None and (problem := family.method_problem(model_ref, method)):
        reasons.append(problem)
    if family is not None and family.library == "diffusers" and adapter_base(Path(model_ref).expanduser(), model_ref) \
            and not (method == "lora" and config.lora.continue_adapter):
        reasons.append(f"'{model_ref}' is a LoRA adapter of an image or audio model: train it further with method "
                       f"'lora' and continue_adapter on (folding it into the weights is not supported for these yet)")
    if family is not None:
        reasons += settings_not_applying(family, config)
    if family is not None and config.objective not in family.objectives:
        reasons.append(f"objective '{config.objective}' is not one the {family.name} family trains with: "
                       f"{', '.join(family.objectives)}")
    elif needed := preference_needs(config.objective):
        counts = count_kinds(read_manifest(store, version, "train"))
        if not usable(config.objective, counts):
            has = ", ".join(f"{n} {KIND_WORDS[kind]}" for kind, n in counts.items())
            reasons.append(f"objective '{config.objective}' learns from {needed}; the training split of dataset "
                           f"'{version.dataset.name}' v{version.version} has {has}")
    if config.mixed_precision == "fp16" and on_cpu(config):
        # accelerate turns fp16 off on a CPU without a word; bf16 it does run (CPU autocast).
        reasons.append("number precision fp16 needs a GPU: on the CPU the run would be 32-bit while claiming fp16. "
                       "Pick 'no' (32-bit) or 'bf16', which the CPU runs")
    if config.lora.load_in_4bit:
        if method != "lora" or modality != "text":
            reasons.append("load_in_4bit (QLoRA) is for the LoRA method on text models; turn it off")
        elif on_cpu(config) or importlib.util.find_spec("bitsandbytes") is None:
            reasons.append(QLORA_NEEDS)
    if config.optim == "adamw_8bit" and (on_cpu(config) or importlib.util.find_spec("bitsandbytes") is None):
        from studio.training.loop import ADAMW_8BIT_NEEDS

        reasons.append(ADAMW_8BIT_NEEDS)
    if config.liger_kernels and (modality != "text" or on_cpu(config)
                                 or importlib.util.find_spec("liger_kernel") is None):
        reasons.append(LIGER_NEEDS if modality == "text" else
                       "liger_kernels is for Llama-family text models; turn it off for this dataset")
    reasons += trackers.missing_packages(config.report_to)
    if modality == "text" and config.text.text_format == "chat" and _has_plain_text(store, version):
        reasons.append(CHAT_NEEDS_CONVERSATIONS)
    if modality == "text" and flash_attention_missing(config):
        reasons.append(FLASH_ATTENTION_NEEDS)
    if config.lr_scheduler_type == "constant" and (config.warmup_steps or config.warmup_ratio):
        reasons.append(CONSTANT_HAS_NO_WARMUP)
    reasons += several_machines_problems(config, store.settings.ray_address)
    saved = _saved_model_marker(model_ref)
    if saved.get("prediction_type") == "flow_matching" and config.diffusion.prediction_type in ("epsilon",
                                                                                                  "v_prediction"):
        reasons.append(f"'{model_ref}' was trained with flow matching: set prediction_type to 'auto' or "
                       f"'flow_matching'")
    rate = saved.get("sample_rate")
    if modality == "audio" and rate and config.audio.sample_rate not in (0, rate):
        reasons.append(other_rate(model_ref, rate))
    if reasons:
        raise RunError("; ".join(reasons))


def settings_not_applying(family, config: TrainConfig) -> list[str]:
    """Settings changed from their defaults that ``family``'s runs would not read (``Family.ignores``): each named,
    with why, rather than trained without them."""
    return [f"{', '.join(changed)}: not used by the {family.name} family ({why}); leave "
            f"{'them' if len(changed) > 1 else 'it'} at the default"
            for name, why in family.ignores if (changed := changed_settings(config, [name]))]


def several_machines_problems(config: TrainConfig, ray_address: str) -> list[str]:
    """Why a run on several machines (``num_nodes`` > 1) cannot go as asked: Ray Train places its workers, so it
    needs the Ray cluster; and it starts them itself, so an `accelerate config` file has nothing to set."""
    if config.num_nodes == 1:
        return []
    problems = []
    if not ray_address:
        problems.append(f"num_nodes {config.num_nodes} trains on several machines, which needs a Ray cluster: set "
                        f"STUDIO_RAY_ADDRESS to its address (http://HEAD:8265), or set num_nodes=1")
    if config.accelerate_config_file:
        problems.append("accelerate_config_file is for accelerate launch on one machine; with num_nodes above 1 "
                        "Ray Train starts the processes: clear it")
    return problems


def _has_plain_text(store: Store, version) -> bool:
    """Whether any training or validation row is plain text (not a conversation). The import's statistics
    answer most versions without reading the manifest."""
    from studio.models.text import row_messages

    formats = ((version.report or {}).get("stats") or {}).get("formats")
    if formats is not None and not formats.get("text"):
        return False
    if formats is not None and set(formats) == {"text"}:
        return True
    return any(row_messages(row) is None for row in read_manifest(store, version)
               if row["split"] in ("train", "validation"))


def _saved_model_marker(model_ref: str) -> dict:
    """What a model folder saved by the studio says about itself (empty for anything else)."""
    try:
        return read_marker(Path(model_ref).expanduser())
    except ValueError:
        return {}


def with_sample_prompts(store: Store, version, config: TrainConfig, how_many: int = 3) -> TrainConfig:
    """``config`` with a few prompts from the dataset's validation split (else its training split) when samples are
    on and none were given: the samples made during training show what the model makes, not only its loss."""
    if not config.sample_steps or config.sample_prompts:
        return config
    folder = store.path(version.path)
    prompts = (prompts_of(read_manifest(store, version, "validation", limit=50), folder, how_many)
               or prompts_of(read_manifest(store, version, "train", limit=50), folder, how_many))
    return config.model_copy(update={"sample_prompts": prompts})


def launch_command(run_id: int, config: TrainConfig, *, for_cluster: bool = False,
                   cpu: bool | None = None) -> list[str]:
    """The exact ``accelerate launch`` command that runs this run's worker (on the CPU when ``cpu``; None: when
    this machine has no CUDA or the config says so)."""
    cpu = on_cpu(config) if cpu is None else cpu
    command = ["accelerate", "launch"] if for_cluster else [sys.executable, "-m", "accelerate.commands.launch"]
    if config.accelerate_config_file:
        # DeepSpeed / FSDP / multi-node settings live in accelerate's own config file; our flags below
        # still win where both speak.
        command += ["--config_file", config.accelerate_config_file]
    command += ["--num_processes", str(config.num_processes), "--num_machines", "1",
                "--mixed_precision", config.mixed_precision, "--dynamo_backend", "no"]
    if config.num_processes > 1:
        # Several processes: NCCL on GPUs, or gloo ranks on the CPU when ACCELERATE_USE_CPU=1 is set
        # (accelerate refuses --cpu together with --multi_gpu).
        command.append("--multi_gpu")
    elif cpu:
        command.append("--cpu")
    if cpu and not for_cluster:
        command += ["--num_cpu_threads_per_process", str(cpu_threads_per_process(config.num_processes))]
    return command + ["-m", "studio.training.worker", str(run_id)]


def ray_train_command(run_id: int) -> list[str]:
    """The Ray job's entrypoint of a run on several machines: Ray Train's TorchTrainer around the same worker."""
    return [sys.executable, "-m", "studio.training.ray_train", str(run_id)]


def cpu_threads_per_process(processes: int) -> int:
    """What accelerate picks for CPU training when not told (OMP_NUM_THREADS, else the physical cores shared among
    the processes), told: when it picks, it writes a warning at the top of every run's log."""
    import os

    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, cores // max(processes, 1))


def on_cpu(config: TrainConfig) -> bool:
    return config.use_cpu or not _cuda_available()


@functools.lru_cache(maxsize=1)
def _cuda_available() -> bool:
    # Asked in a child process: importing torch in the web process would slow every page for nothing.
    try:
        done = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                              capture_output=True, text=True, timeout=60)
        return done.stdout.strip() == "True"
    except (OSError, subprocess.TimeoutExpired):
        return False


def copyable_commands(store: Store, run_id: int) -> dict[str, str]:
    """Shell commands to run the same config outside the studio: here, and on a multi-node cluster; ``secrets``
    names the variables they refer to rather than show (to be set where they run)."""
    with store.session() as session:
        run = session.get(Run, run_id)
        config = TrainConfig.model_validate(run.config)
    variables = {"STUDIO_HOME": str(store.home), "ACCELERATE_USE_CPU": "1" if on_cpu(config) else None,
                 "STUDIO_DATABASE_URL": store.settings.database_url}
    variables = {name: value for name, value in variables.items() if value}
    env = "".join(f"{name}={_shell_value(name, value)} " for name, value in variables.items())
    single = env + shlex.join(launch_command(run_id, config, for_cluster=True))
    multi = [a for a in launch_command(run_id, config, for_cluster=True) if a != "--cpu"]
    if "--multi_gpu" not in multi:
        multi.insert(2, "--multi_gpu")
    at = multi.index("--num_machines")
    multi[at + 1] = "$NUM_MACHINES"
    multi[at:at] = ["--machine_rank", "$MACHINE_RANK", "--main_process_ip", "$MAIN_IP", "--main_process_port", "29500"]
    return {"single_node": single, "multi_node": env + " ".join(multi),
            "secrets": sorted(secret_variables() & variables.keys())}


def _shell_value(variable: str, value: str) -> str:
    """``value`` quoted for a shell, or for a secret (the database URL's password) a reference to the variable,
    to be set where the command runs: a copied command ends up in shell histories, chats and tickets."""
    return f'"${variable}"' if variable in secret_variables() else shlex.quote(value)


def _queue(session) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.status == RunStatus.QUEUED)
                                .order_by(Run.queued_at, Run.created_at, Run.id)))


def _plan(store: Store, launcher: Launcher) -> placement.Plan:
    """This round's placement: with the studio's pool, which queued runs fit the free devices; with a cluster that
    places runs itself (Ray), every queued run is handed over in order."""
    with store.session() as session:
        queue = _queue(session)
        if not launcher.places_devices:
            return placement.Plan({run.id: [] for run in queue}, {})
        devices = placement.pool(store.settings)
        free = placement.free_devices(session, devices)
    waiting = [placement.Waiting(run.id, placement.devices_wanted(TrainConfig.model_validate(run.config)
                                                                   .num_processes, devices),
                                 run.queued_at or run.created_at) for run in queue]
    return placement.plan(waiting, free, devices, _now(), timedelta(seconds=store.settings.backfill_seconds))


def _claim(store: Store, run_id: int, devices: list[str], launcher: Launcher) -> Run | None:
    """Claims the run (queued → starting) and its devices in one transaction; None when another dispatcher took
    the run or one of the devices first."""
    try:
        with store.session() as session:
            placement.claim(session, "run", run_id, devices)
            claimed = session.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.QUEUED).values(
                status=RunStatus.STARTING, pid=None, job_id=None, heartbeat_at=_now(), wait_reason=None,
                devices=",".join(devices) or launcher.name, launcher=launcher.name)).rowcount
            if claimed != 1:
                raise IntegrityError("run already taken", None, Exception())
    except IntegrityError:
        return None
    with store.session() as session:
        return session.get(Run, run_id)


def _start_worker(store: Store, run: Run, launcher: Launcher, devices: list[str]) -> None:
    config = TrainConfig.model_validate(run.config)
    store.path(run.output_dir).mkdir(parents=True, exist_ok=True)
    # A cluster's nodes decide for themselves whether they have CUDA; here, this machine's answer is the one.
    cpu = config.use_cpu if not launcher.places_devices else on_cpu(config)
    command = ray_train_command(run.id) if config.num_nodes > 1 else launch_command(run.id, config, cpu=cpu)
    try:
        started = launcher.start(store, run, command,
                                 {"ACCELERATE_USE_CPU": "1"} if cpu else {}, devices)
    except (OSError, LaunchError) as error:
        finish_run(store, run.id, RunStatus.FAILED, f"could not start the worker: {error}")
        return
    with store.session() as session:
        session.execute(update(Run).where(Run.id == run.id).values(**started, heartbeat_at=_now()))


def log_tail(store: Store, run_id: int, lines: int = 30) -> str:
    with store.session() as session:
        run = session.get(Run, run_id)
    if run is None or not run.launcher:
        return processes.log_tail(log_path(store, run_id), lines)
    return launcher_for(store.settings, run.launcher).log_tail(store, run, lines)


def finish_run(store: Store, run_id: int, status: RunStatus, error: str | None = None, *,
               was: tuple[RunStatus, ...] | None = RUN_ACTIVE) -> None:
    """Ends the run as ``status`` (with ``error``, the reason a person reads) if its status is one of ``was``: a
    dispatcher that gave up on a worker, or could not start one, ends only a run that has not ended meanwhile. Its
    own worker passes None, since what it says happened is what happened, even after a dispatcher gave up on it (a
    heartbeat held up by a long checkpoint write). An ended run answers no more requests, and frees the device."""
    with store.session() as session:
        ending = update(Run).where(Run.id == run_id)
        if was is not None:
            ending = ending.where(Run.status.in_(was))
        session.execute(ending.values(status=status, ended_at=_now(), error_tail=error))
        session.execute(update(ControlFlag).where(ControlFlag.run_id == run_id, ControlFlag.handled_at.is_(None))
                        .values(handled_at=_now()))
        placement.release(session, "run", run_id)


def reap(store: Store) -> list[int]:
    """Mark runs whose worker is gone (no heartbeat for long; its process died; its Ray job ended) as failed, with
    their log tail, and free the devices of runs that ended however they ended."""
    processes.reap_children()  # workers that ended by themselves too: their runs are not looked at again below
    failed = []
    with store.session() as session:
        active = session.scalars(select(Run).where(Run.status.in_(RUN_WORKING))).all()
    for run in active:
        launcher = launcher_for(store.settings, run.launcher)
        if gone := launcher.gone(store, run):
            finish_run(store, run.id, RunStatus.FAILED, gone)
            failed.append(run.id)
        elif run.status == RunStatus.STARTING:
            _note_starting(store, run, launcher)
    with store.session() as session:
        placement.release_ended(session)
    return failed


def _note_starting(store: Store, run: Run, launcher: Launcher) -> None:
    """A started run that is not running yet: what it waits for (a Ray job waiting for resources), and a stop asked
    meanwhile, which its worker would only read once it runs."""
    with store.session() as session:
        stop = session.scalars(select(ControlFlag.id).where(ControlFlag.run_id == run.id, ControlFlag.kind == "stop",
                                                            ControlFlag.handled_at.is_(None))).first()
    reason = launcher.waiting(store, run)
    if stop is not None and reason is not None:
        launcher.stop(store, run)
        finish_run(store, run.id, RunStatus.STOPPED, was=(RunStatus.STARTING,))
        return
    # While the cluster holds the job back, the dispatcher vouches for it: its heartbeat then counts from the moment
    # the job runs, not from its submission.
    beat = {"heartbeat_at": _now()} if reason is not None else {}
    if reason != run.wait_reason or beat:
        with store.session() as session:
            session.execute(update(Run).where(Run.id == run.id, Run.status == RunStatus.STARTING)
                            .values(wait_reason=reason, **beat))


def dispatch(store: Store) -> list[int]:
    """One round: reap dead workers, then start every queued run whose request fits (``studio.placement``);
    returns the runs started."""
    reap(store)
    launcher = launcher_for(store.settings)
    chosen = _plan(store, launcher)
    started = []
    for run_id, devices in chosen.start.items():
        run = _claim(store, run_id, devices, launcher)
        if run is None:
            break  # another dispatcher is placing runs this moment: its round decides, ours would be stale
        _start_worker(store, run, launcher, devices)
        started.append(run_id)
    with store.session() as session:
        for run_id, reason in chosen.waits.items():
            session.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.QUEUED)
                            .values(wait_reason=reason))
    return started


def record_run_action(session, actor: str | None, action: str, run: Run, details: dict | None = None) -> None:
    record_action(session, actor, action, f"run:{run.id}", project=project_name(session, run.project_id),
                  details=details)


def request(store: Store, run_id: int, kind: str, actor: str | None = None) -> int:
    """Ask a run to stop, save now or sample now; returns the steps it had done. A queued run that is asked to stop
    never starts."""
    if kind not in ("stop", "save", "sample"):
        raise RunError("kind must be stop, save or sample")
    with store.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise RunError(f"no run {run_id}")
        if kind == "stop" and run.status == RunStatus.QUEUED:
            run.status, run.ended_at = RunStatus.STOPPED, _now()
            record_run_action(session, actor, "run.stop", run, {"was": RunStatus.QUEUED})
            return run.steps_done
        if run.status not in RUN_WORKING:
            raise RunError(f"run {run_id} is {run.status}, not running")
        if kind == "sample" and not (run.config or {}).get("sample_prompts"):
            raise RunError(f"run {run_id} has no sample prompts (give sample_prompts when starting a run)")
        session.add(ControlFlag(run_id=run_id, kind=kind))
        record_run_action(session, actor, f"run.{kind}", run)
        return run.steps_done


def request_outcome(store: Store, run_id: int, kind: str, since_step: int) -> str | None:
    """What came of a ``request`` made when the run had done ``since_step`` steps: None while it waits, else a
    sentence for the person who asked (the samples or checkpoint made since, or the run ended without them)."""
    with store.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            return f"Run #{run_id} was deleted."
        waiting = session.scalars(select(ControlFlag.id).where(ControlFlag.run_id == run_id, ControlFlag.kind == kind,
                                                               ControlFlag.handled_at.is_(None))).first()
        if waiting is not None and run.status in RUN_WORKING:
            return None
        made = {"sample": RunSample, "save": Checkpoint}.get(kind)
        step = made and session.scalar(select(func.max(made.step)).where(made.run_id == run_id,
                                                                          made.step >= since_step))
        status, steps_done = run.status, run.steps_done
    if kind == "stop":
        return (f"Run #{run_id} stopped at step {steps_done}; its checkpoint was saved." if status == RunStatus.STOPPED
                else f"Run #{run_id} ended ({status}) at step {steps_done} before it could stop.")
    if step is not None:
        return (f"Samples made at step {step}: see them below." if kind == "sample"
                else f"Checkpoint saved at step {step}.")
    return (f"Run #{run_id} ended ({status}) at step {steps_done} before making the "
            f"{'samples' if kind == 'sample' else 'checkpoint'}.")


def resume(store: Store, run_id: int, checkpoint_step: int | None = None, actor: str | None = None) -> None:
    """Queue a stopped/failed/completed run again, continuing from a checkpoint (the last by default)."""
    with store.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise RunError(f"no run {run_id}")
        if run.status not in RUN_ENDED:
            raise RunError(f"run {run_id} is {run.status}; only a finished run can be resumed")
        query = select(Checkpoint).where(Checkpoint.run_id == run_id)
        if checkpoint_step is not None:
            query = query.where(Checkpoint.step == checkpoint_step)
        checkpoint = session.scalars(query.order_by(Checkpoint.step.desc())).first()
        if checkpoint is None or not store.path(checkpoint.path).exists():
            raise RunError(f"run {run_id} has no checkpoint{f' at step {checkpoint_step}' if checkpoint_step else ''} "
                           "to resume from")
        run.status, run.resume_from, run.error_tail, run.ended_at = RunStatus.QUEUED, checkpoint.path, None, None
        run.queued_at, run.wait_reason = _now(), None  # it joins the queue's end again
        abandoned = forget_after(store, session, run, checkpoint)
        record_run_action(session, actor, "run.resume", run, {"checkpoint_step": checkpoint.step})
    remove_folders(store, abandoned)


def forget_after(store: Store, session, run: Run, checkpoint: Checkpoint) -> list[str]:
    """Drop what the abandoned attempt recorded after ``checkpoint``: the resumed run trains those steps again,
    and every step must have one value (the history would hold two and the loss plot draw both). Its later
    checkpoints go too: left in place, "the last checkpoint" of a later resume would be the abandoned attempt's,
    and keeping the last K would delete the new attempt's checkpoints before them. Returns their folders, to
    remove once the transaction is committed; refused while another run was trained from one of them."""
    later = list(session.scalars(select(Checkpoint).where(Checkpoint.run_id == run.id,
                                                          Checkpoint.step > checkpoint.step)))
    folders = [store.path(c.path).resolve() for c in later]
    for other in session.scalars(select(Run).where(Run.id != run.id)):
        model = Path(other.model_ref).expanduser().resolve()
        if any(model == folder or folder in model.parents for folder in folders):
            raise RunError(f"run {other.id} was trained from a later checkpoint of run {run.id}: resume from the "
                           f"last checkpoint, or delete run {other.id} first")
    for table in (Metric, RunSample, Checkpoint):
        session.execute(delete(table).where(table.run_id == run.id, table.step > checkpoint.step))
    run.steps_done, run.best_val_loss = checkpoint.step, checkpoint.val_loss
    return [c.path for c in later]


def purge_run(session, run: Run) -> list[str]:
    """Delete a finished run's rows (metrics, checkpoints, flags, samples, a stale device claim); returns its
    folder and its Share-tab exports, to remove once the transaction is committed."""
    for table in (Metric, Checkpoint, ControlFlag, RunSample):
        session.execute(delete(table).where(table.run_id == run.id))
    placement.release(session, "run", run.id)
    session.delete(run)
    return [f"runs/{run.id}", f"exports/run{run.id}-*"]  # its folder, and what the Share tab exported of it


def trained_from(store: Store, session, run_ids: set[int]) -> tuple[int, int] | None:
    """``(child, parent)`` when a run outside ``run_ids`` was trained from a checkpoint folder of one inside:
    deleting the parent's folder would take the child's model away."""
    for other in session.scalars(select(Run).where(Run.id.not_in(run_ids))):
        parent = run_of_folder(store, other.model_ref)
        if parent in run_ids:
            return other.id, parent
    return None


def serving(session, run_id: int) -> str | None:
    """The name of a starting or running deployment that serves a checkpoint of run ``run_id`` (its models' refs
    are ``RUN:STEP`` or ``base``), or None: deleting the run's folder would pull the weights from under it."""
    for deployment in session.scalars(select(Deployment).where(Deployment.status.in_(DEPLOY_ACTIVE))):
        if any(str(model.get("ref", "")).partition(":")[0] == str(run_id) for model in deployment.models or []):
            return deployment.name
    return None


def delete_run(store: Store, run_id: int, actor: str | None = None) -> None:
    with store.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise RunError(f"no run {run_id}")
        if run.status in RUN_WORKING:
            raise RunError(f"run {run_id} is {run.status}: stop it first")
        if child := trained_from(store, session, {run_id}):
            raise RunError(f"run {child[0]} was trained from a checkpoint of run {run_id}: delete run {child[0]} "
                           "first")
        if served := serving(session, run_id):
            raise RunError(f"deployment '{served}' serves a checkpoint of run {run_id}: stop it first (Deploy tab "
                           f"or `studio deploy stop`)")
        record_run_action(session, actor, "run.delete", run, {"model": run.model_ref, "method": run.method})
        folders = purge_run(session, run)
    remove_folders(store, folders)

"""The training loop, written once for every modality (nanoGPT-style: read it top to bottom).

The backend supplies the model (``handle.module(batch) -> loss``), datasets, collate function and
samples; the objective (``objectives.py``) what a step does with a batch (SFT: the module's loss, one optimizer
step); Accelerate supplies devices, mixed precision, gradient accumulation and multi-process training. The
outside world (the worker, or a test) listens through ``Hooks``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from studio.data.augment import start_epoch
from studio.models.base import Backend, Handle, Sample
from studio.models.common import COUNTERS_ADDED_LATER, is_out_of_memory
from studio.status import RunStatus
from studio.training.config import TrainConfig, augmentation_of, describe_augmentation
from studio.training import trackers
from studio.training.ema import ExponentialAverage
from studio.training.objectives import Objective, Optimizing, Step, objective_for


def _noop(*_args, **_kwargs):
    return None


def _never() -> bool:
    return False


@dataclass
class Hooks:
    """How the loop reports and is steered. Only the main process's hooks are called for output;
    the control questions are asked on the main process and its answer is shared with every rank."""
    metric: Callable[[int, str, float], None] = _noop
    log: Callable[[str], None] = print
    checkpoint: Callable[[int, Path, float | None], None] = _noop
    samples: Callable[[int, list[Sample]], None] = _noop
    should_stop: Callable[[], bool] = _never
    should_save: Callable[[], bool] = _never
    should_sample: Callable[[], bool] = _never
    progress: Callable[[int, int], None] = _noop  # (step, total steps)


@dataclass
class Result:
    status: RunStatus                # COMPLETED | STOPPED
    steps: int
    history: list[dict] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    best_val_loss: float | None = None


SAY_EVERY_SECONDS = 2.0  # a step line in the log at most this often (and at the first and last step)
UNTRAINED = "step-0000000"  # a run from scratch keeps its untrained start: what Generate compares with as its base


def early_stop_reason(evaluations: int, best: float | None, best_step: int | None) -> str:
    """Why early stopping ended a run (the log, `studio runs show` and the Train tab say the same)."""
    since = f" since its best, {best:.4f} at step {best_step}" if best is not None and best_step is not None else ""
    return f"the validation loss did not improve in {evaluations} evaluation(s){since} (early_stopping_patience)"

# ----------------------------------------------------------------------------- building blocks

ADAMW_8BIT_NEEDS = ("8-bit AdamW (optim adamw_8bit) needs a CUDA GPU and the bitsandbytes package (pip install "
                    "bitsandbytes); pick adamw")


def make_optimizer(params: list, config: TrainConfig):
    import importlib.util

    import torch

    if config.optim == "adamw_8bit":  # bitsandbytes' 8-bit states live on CUDA only (the job refuses it elsewhere)
        if config.use_cpu or not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError(ADAMW_8BIT_NEEDS)
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    if config.optim == "sgd":
        return torch.optim.SGD(params, lr=config.learning_rate, momentum=0.9, weight_decay=config.weight_decay)
    if config.optim == "adafactor":
        from transformers.optimization import Adafactor
        return Adafactor(params, lr=config.learning_rate, weight_decay=config.weight_decay,
                         scale_parameter=False, relative_step=False)
    try:  # one fused kernel for every weight's update instead of a handful per tensor; not every device has it
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)


def make_scheduler(optimizer, config: TrainConfig, total_steps: int):
    """The learning-rate schedule counted in optimizer steps: ``train`` steps it once per optimizer step, however
    many processes there are (warm-up and decay then take the same steps with 1 process or 8)."""
    from transformers import get_scheduler

    shape = {"cosine_with_restarts": {"num_cycles": config.num_cycles},
             "polynomial": {"power": config.power}}.get(config.lr_scheduler_type)
    return get_scheduler(config.lr_scheduler_type, optimizer, num_warmup_steps=warmup_steps_for(config, total_steps),
                         num_training_steps=total_steps, scheduler_specific_kwargs=shape)


def warmup_steps_for(config: TrainConfig, total_steps: int) -> int:
    """Optimizer steps of warm-up: ``warmup_ratio`` of the run where it is set, else ``warmup_steps``; none for the
    'constant' schedule (runs saved before the studio refused constant with warm-up keep running as they did)."""
    if config.lr_scheduler_type == "constant":
        return 0
    wanted = math.ceil(config.warmup_ratio * total_steps) if config.warmup_ratio > 0 else config.warmup_steps
    return min(wanted, total_steps)


def total_steps_for(config: TrainConfig, batches_per_epoch: int) -> int:
    """Optimizer steps of the run. ``batches_per_epoch`` is one process's share of an epoch (the loader after
    ``accelerator.prepare`` splits it); an epoch's last, shorter accumulation window still makes a step."""
    if config.max_steps > 0:
        return config.max_steps
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    return max(1, math.ceil(steps_per_epoch * config.num_train_epochs))


def make_loader(dataset, collate, batch_size: int, seed: int, shuffle: bool, workers: int = 0,
                pin_memory: bool = False):
    """Batches of ``dataset`` in a seeded order. ``workers`` processes read and collate them (images and audio
    decoded off the training process; the order and contents are those of ``workers=0``); ``pin_memory`` (CUDA
    only) lets the copy to the GPU overlap the step."""
    import torch
    from torch.utils.data import DataLoader

    # Workers start again each epoch (not persistent): a new iterator draws its seed from the generator as one
    # without workers does, so the next epoch's order is the same as without workers.
    loading = {"num_workers": workers, "pin_memory": pin_memory}
    batches = dataset.batches(batch_size, seed, shuffle) if hasattr(dataset, "batches") else None
    if batches is not None:  # the dataset groups its items itself (images bucketed by shape)
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, **loading)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator,
                      drop_last=False, **loading)


COMPILE_FAILED = "torch.compile failed, training without it"


def compiled_step(objective: Objective, module, config: TrainConfig, say: Callable[[str], None]):
    """``objective.step`` with the module compiled (``torch_compile``), falling back to the module as it is for the
    rest of the run when compiling fails. Compiling happens on the first call (and again for a new batch shape), so
    the failure shows there: a failed forward has added no gradient, and the same batch is stepped again uncompiled."""
    if not config.torch_compile:
        return objective.step
    import torch

    state = {"module": torch.compile(module)}

    def step(run: Optimizing, batch) -> Step:
        if state["module"] is None:
            return objective.step(run, batch)
        try:
            return objective.step(replace(run, module=state["module"]), batch)
        except Exception as error:  # noqa: BLE001 - whatever the compiler raised; a real fault recurs uncompiled
            if is_out_of_memory(error):
                raise
            first_line = next(iter(str(error).strip().splitlines()), "")
            say(f"{COMPILE_FAILED} ({type(error).__name__}: {first_line[:200]})")
            state["module"] = None
            return objective.step(run, batch)

    return step


def evaluate(accelerator, module, loader, loss_of: Callable) -> tuple[float | None, dict[str, float]]:
    """Mean validation loss (``loss_of(module, batch)``) over every process's share of the validation set, and the
    mean of each metric the objective reports beside it (a ``Step``'s), over the batches that have it."""
    import torch

    if loader is None or len(loader) == 0:
        return None, {}
    module.eval()
    losses, metrics = [], {}
    with torch.no_grad():
        for batch in loader:
            found = loss_of(module, batch)
            loss = found.loss if isinstance(found, Step) else found
            losses.append(accelerator.gather_for_metrics(loss.detach().float().reshape(1)))
            for name, value in (found.metrics if isinstance(found, Step) else {}).items():
                metrics.setdefault(name, []).append(accelerator.gather_for_metrics(
                    torch.tensor([value], device=accelerator.device)))
    module.train()
    return float(torch.cat(losses).mean()), {name: float(torch.cat(v).nanmean()) for name, v in metrics.items()}


def window_means(accelerator, window: dict[str, list[float]]) -> dict[str, float]:
    """The mean of each metric an objective reported over a logging window, NaNs (a batch without such answers) left
    out, and with several processes over all of theirs, as the training loss is. Every process names the same metrics
    (an objective reports the same names for every batch)."""
    import torch

    means = {}
    for name, values in sorted(window.items()):
        known = [v for v in values if not math.isnan(v)]
        means[name] = sum(known) / len(known) if known else math.nan
    if accelerator.num_processes > 1 and means:
        local = torch.tensor(list(means.values()), dtype=torch.float64, device=accelerator.device)
        gathered = accelerator.gather(local.reshape(1, -1))
        means = dict(zip(means, gathered.nanmean(dim=0).tolist()))
    return {name: value for name, value in means.items() if not math.isnan(value)}


def batch_size_of(batch) -> int:
    for value in batch.values():
        if hasattr(value, "shape"):
            return int(value.shape[0])
    return 1


def tokens_in(batch):
    """The batch's real (unpadded) tokens: a tensor where the batch is (read only at the logging steps), else 0."""
    mask = batch.get("attention_mask") if isinstance(batch, dict) else None
    return mask.sum() if mask is not None else 0


def _shared_flags(accelerator, hooks: Hooks, out_of_time: Callable[[], bool] = _never
                  ) -> tuple[bool, bool, bool, bool]:
    """stop / save / sample / out of time, decided on the main process and broadcast so every rank agrees (each
    rank's clock says a little else: ranks deciding alone would stop at different steps and hang)."""
    import torch
    from accelerate.utils import broadcast

    if accelerator.num_processes == 1:  # nothing to share: no tensor, so no wait for the GPU
        return bool(hooks.should_stop()), bool(hooks.should_save()), bool(hooks.should_sample()), bool(out_of_time())
    flags = torch.zeros(4, device=accelerator.device)
    if accelerator.is_main_process:
        flags = torch.tensor([hooks.should_stop(), hooks.should_save(), hooks.should_sample(), out_of_time()],
                             dtype=torch.float32, device=accelerator.device)
    if accelerator.num_processes > 1:
        flags = broadcast(flags)
    return bool(flags[0]), bool(flags[1]), bool(flags[2]), bool(flags[3])


def budget_reason(minutes: float) -> str:
    """Why the time budget ended a run (the log says it)."""
    return f"its time budget of {minutes:g} minute(s) was spent (max_minutes)"


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(accelerator, backend: Backend, handle: Handle, output_dir: Path, step: int, state: dict,
                    keep: int, ema: ExponentialAverage | None = None) -> Path:
    """``checkpoints/step-N/``: Accelerate state (model, optimizer, scheduler, RNG) for resuming, the
    backend's own model folder for generating (the EMA weights when averaging), and trainer_state.json. Keeps the
    last ``keep``."""
    folder = output_dir / "checkpoints" / f"step-{step:07d}"
    accelerator.save_state(str(folder / "state"))
    if accelerator.is_main_process:
        with ema.applied() if ema else nullcontext():
            backend.save(handle, folder / "model")
        (folder / "trainer_state.json").write_text(json.dumps({**state, "step": step}, indent=1))
        rotated = [f for f in sorted((output_dir / "checkpoints").glob("step-*")) if f.name != UNTRAINED]
        for old in rotated[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return folder


# ----------------------------------------------------------------------------- the loop

def load_training_state(accelerator, module, folder: Path) -> None:
    """``accelerator.load_state``, strict unless the saved weights lack only counters added since they were saved
    (``common.COUNTERS_ADDED_LATER``: the checkpoint resumes with them at 0)."""
    strict = True
    saved = folder / "model.safetensors"
    if saved.is_file():
        from safetensors import safe_open

        with safe_open(str(saved), framework="pt") as weights:
            missing = set(accelerator.unwrap_model(module).state_dict()) - set(weights.keys())
        strict = not missing or not missing <= COUNTERS_ADDED_LATER
    accelerator.load_state(str(folder), **({} if strict else {"strict": False}))


def train(backend: Backend, handle: Handle, rows: dict[str, list[dict]], root: Path, config: TrainConfig,
          output_dir: Path, hooks: Hooks | None = None, resume_from: Path | None = None,
          objective: Objective | None = None) -> Result:
    """Trains ``handle`` with ``objective`` (by default its family's first, SFT)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    hooks = hooks or Hooks()
    output_dir.mkdir(parents=True, exist_ok=True)
    objective = objective or objective_for(handle, config.objective, config.preference, config)
    # An objective whose passes each train some of the module's weights (a GAN's: one network a pass) tells
    # DistributedDataParallel that the others get no gradient in that pass.
    passes = [DistributedDataParallelKwargs(find_unused_parameters=True)] \
        if getattr(objective, "partial_passes", False) else []
    # step_scheduler_with_optimizer=False: Accelerate would otherwise step the schedule once per process at each
    # optimizer step (its convention for schedules counted in single-process batches); ours counts optimizer
    # steps, and the loop steps it itself, once per optimizer step that was taken.
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=config.use_cpu,
                              gradient_accumulation_steps=config.gradient_accumulation_steps,
                              step_scheduler_with_optimizer=False, kwargs_handlers=passes,
                              log_with=config.report_to or None, project_dir=str(output_dir / "tensorboard"))
    main = accelerator.is_main_process
    say = hooks.log if main else _noop
    set_seed(config.seed)
    trackers.start(accelerator, config.report_to, config.model_dump(), output_dir, say)

    if (section := augmentation_of(config, handle.modality)) is not None and section.active():
        say(f"augmentation: {describe_augmentation(config, handle.modality)}")
    say("preparing the data")  # tokenising, or caching latents, can take a while before the first step
    datasets = backend.datasets(handle, rows, root, config)
    collate = backend.collate(handle, config)
    micro_batch = config.per_device_train_batch_size
    loading = {"workers": config.dataloader_workers,
               "pin_memory": config.dataloader_workers > 0 and accelerator.device.type == "cuda"}
    train_loader = make_loader(datasets["train"], collate, micro_batch, config.seed, shuffle=True, **loading)
    val_set = datasets.get("validation")
    has_validation = val_set is not None and len(val_set) > 0
    val_loader = make_loader(val_set, collate, micro_batch, config.seed, shuffle=False,
                             **loading) if has_validation else None

    module = handle.module
    groups = objective.parameter_groups(handle)
    # Each optimizer and its schedule are made from its own settings where the objective has several (a GAN's
    # discriminator at its own rate), else from the run's.
    own_settings = getattr(objective, "optimizer_configs", None)
    settings = own_settings(config) if own_settings else [config] * len(groups)
    optimizers = [make_optimizer(group, own) for group, own in zip(groups, settings)]
    module, *optimizers, train_loader = accelerator.prepare(module, *optimizers, train_loader)
    if val_loader is not None:
        val_loader = accelerator.prepare(val_loader)
    # Counted after prepare: each process goes through its own share of an epoch, in batches of ``micro_batch``
    # (the batch size is per process; one optimizer step takes micro_batch x processes x accumulation items).
    total = total_steps_for(config, len(train_loader))
    schedulers = [accelerator.prepare(make_scheduler(optimizer.optimizer, own, total))
                  for optimizer, own in zip(optimizers, settings)]
    optimizing = Optimizing(accelerator, module, optimizers, schedulers, config.max_grad_norm)
    take_step = compiled_step(objective, module, config, say)  # validation and checkpoints use ``module`` itself
    ema = None
    if config.diffusion.ema_decay > 0:  # registered before a resume loads the state it is part of
        ema = ExponentialAverage([p for p in module.parameters() if p.requires_grad], config.diffusion.ema_decay)
        accelerator.register_for_checkpointing(ema)
    averaged = ema.applied if ema else nullcontext  # what validation, samples and saved models see
    if hasattr(objective, "start"):  # before a resume loads its state: a reference is made of the start
        objective.start(handle, accelerator)

    step, epoch, skip_batches = 0, 0, 0
    best_val, best_step, evals_without_gain = None, None, 0
    trained_before = 0.0  # seconds of training of earlier attempts (a resume's): the time budget counts them
    # Evaluations after warm-up steps do not count against the patience: the first step runs at rate 0, and a loss
    # that has not improved yet while the rate is still rising says nothing about the run being done.
    warmup = warmup_steps_for(config, total)
    if resume_from is not None:
        load_training_state(accelerator, module, resume_from / "state")
        saved = json.loads((resume_from / "trainer_state.json").read_text())
        step, epoch, best_val = saved["step"], saved.get("epoch", 0), saved.get("best_val")
        best_step = saved.get("best_step")
        skip_batches = saved.get("batches_into_epoch", 0)
        trained_before = saved.get("trained_seconds", 0.0)
        say(f"resumed from {resume_from.name} at step {step}")

    history: list[dict] = []
    checkpoints: list[str] = []

    def record(name: str, value: float) -> None:
        if main:
            history.append({"step": step, "name": name, "value": value})
            hooks.metric(step, name, value)
            if config.report_to:
                accelerator.log({name: value}, step=step)

    def run_validation() -> None:
        nonlocal best_val, best_step, evals_without_gain
        with averaged():
            val_loss, val_metrics = evaluate(accelerator, module, val_loader, objective.loss)
        if val_loss is None:
            return
        record("val_loss", val_loss)
        for name, value in val_metrics.items():
            if not math.isnan(value):
                record(f"val_{name}", value)
        if best_val is None or val_loss < best_val:
            best_val, best_step, evals_without_gain = val_loss, step, 0
        elif step > warmup:
            evals_without_gain += 1
        say(f"validation loss {val_loss:.4f} at step {step} (best {best_val:.4f} at step {best_step})")
        for warning in objective.warnings(step, val_metrics) if hasattr(objective, "warnings") else []:
            record("warnings", 1.0)  # a mark on the curves at the step; the log says what
            say(f"warning: {warning}")

    def checkpoint(batches_into_epoch: int) -> None:
        state = {"epoch": epoch, "best_val": best_val, "best_step": best_step, "batches_into_epoch": batches_into_epoch,
                 "micro_batch": micro_batch, "gradient_accumulation_steps": accelerator.gradient_accumulation_steps,
                 "trained_seconds": trained_seconds()}
        folder = save_checkpoint(accelerator, backend, handle, output_dir, step, state, config.save_total_limit, ema)
        checkpoints.append(str(folder))
        if main:
            hooks.checkpoint(step, folder, best_val)
            say(f"checkpoint saved at step {step}")

    def sample() -> None:
        if main and config.sample_prompts:
            module.eval()
            with averaged():
                outputs = backend.generate(handle, config.sample_prompts, [config.seed] * len(config.sample_prompts),
                                           {}, output_dir / "samples" / f"step-{step:07d}")
            module.train()
            hooks.samples(step, outputs)
            say(f"samples made at step {step} ({len(outputs)} prompt(s))")

    started = time.perf_counter()  # set again at the first step, where the time budget starts counting

    def trained_seconds() -> float:
        return trained_before + time.perf_counter() - started

    def out_of_time() -> bool:
        return config.max_minutes > 0 and trained_seconds() >= config.max_minutes * 60

    if resume_from is None:
        run_validation()  # every curve starts at the untrained model
        if handle.method == "scratch":
            checkpoint(0)
    say(f"training {total} steps: {len(train_loader)} batches of {micro_batch} per epoch per process, "
        f"{accelerator.num_processes} process(es) on {accelerator.device}")
    module.train()
    started, first_step = time.perf_counter(), step
    window_loss, window_items, window_tokens, window_started = 0.0, 0, 0, time.perf_counter()
    window_metrics: dict[str, list[float]] = {}
    # The ETA is the mean time per step since this attempt's first step (which carries one-off costs), evaluations
    # and checkpoints included: it neither starts far off nor jumps at each evaluation as the last step's time would.
    paced_from: tuple[float, int] | None = None
    said_at = 0.0
    status = RunStatus.COMPLETED
    while step < total and status == RunStatus.COMPLETED:
        # Before the loader's workers start (they copy the dataset): the epoch is part of every item's augmentation.
        start_epoch(datasets["train"], epoch)
        loader = accelerator.skip_first_batches(train_loader, skip_batches) if skip_batches else train_loader
        batches_into_epoch = skip_batches
        skip_batches = 0
        for batch in loader:
            batches_into_epoch += 1
            try:
                with accelerator.accumulate(module):
                    taken = take_step(optimizing, batch)  # forward, backward, optimizer and schedule steps
            except Exception as error:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not is_out_of_memory(error) or micro_batch == 1:
                    raise
                for optimizer in optimizers:
                    optimizer.zero_grad()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                micro_batch //= 2
                accelerator.gradient_accumulation_steps *= 2
                say(f"out of memory: micro-batch halved to {micro_batch}, gradient accumulation doubled to "
                    f"{accelerator.gradient_accumulation_steps}; going on")
                train_loader = accelerator.prepare(make_loader(datasets["train"], collate, micro_batch,
                                                               config.seed + epoch, shuffle=True, **loading))
                if has_validation:
                    val_loader = accelerator.prepare(make_loader(val_set, collate, micro_batch, config.seed,
                                                                 shuffle=False, **loading))
                break
            # Added up where the loss is (no wait for the GPU at every micro-batch); read at the logging steps.
            window_loss = window_loss + taken.loss.detach().float()
            for name, value in taken.metrics.items():
                window_metrics.setdefault(name, []).append(value)
            window_items += batch_size_of(batch)
            window_tokens = window_tokens + tokens_in(batch)
            if not accelerator.sync_gradients:
                continue
            step += 1
            if ema is not None:
                ema.update()
            now = time.perf_counter()
            seconds = now - window_started  # training only: the last step's evaluation or samples are not in it
            paced_from = paced_from or (now, step)
            if step % config.logging_steps == 0 or step == total:
                micro_steps = accelerator.gradient_accumulation_steps
                if accelerator.num_processes > 1:  # the loss of the whole step's items, not of one rank's share
                    window_loss = accelerator.reduce(window_loss, reduction="mean")
                train_loss = float(window_loss) / micro_steps  # the one wait for the device in a logging window
                record("train_loss", train_loss)
                for name, value in window_means(accelerator, window_metrics).items():  # a preference
                    record(name, value)  # objective's rewards, a GAN's losses: of every process's items
                record("learning_rate", taken.learning_rate)
                if taken.grad_norm is not None:
                    record("grad_norm", float(taken.grad_norm))
                speed = window_items * accelerator.num_processes / max(seconds, 1e-9)
                record("items_per_second", speed)
                if tokens := int(window_tokens):
                    record("tokens_per_second", tokens * accelerator.num_processes / max(seconds, 1e-9))
                record("elapsed_seconds", now - started)
                eta = None
                if step > paced_from[1] or step == total:
                    eta = (now - paced_from[0]) / max(step - paced_from[1], 1) * (total - step)
                    record("eta_seconds", eta)
                if step == first_step + 1 or step == total or now - said_at >= SAY_EVERY_SECONDS:
                    said_at = now
                    say(f"step {step}/{total} · loss {train_loss:.4f} · learning rate "
                        f"{taken.learning_rate:.2e} · {speed:,.1f} items/s"
                        + (f" · about {eta:,.0f} s left" if eta else ""))
            window_loss, window_items, window_tokens, window_metrics = 0.0, 0, 0, {}
            if main:
                hooks.progress(step, total)
            stop, save_now, sample_now, spent = _shared_flags(accelerator, hooks, out_of_time)
            if spent and step < total and not stop:  # the time budget ends the run as completed, as early stopping
                # does: this step is its last (validated, sampled and saved below)
                record("time_budget_stopped", config.max_minutes)
                say(f"stopped at step {step} of {total} because {budget_reason(config.max_minutes)}")
                total = step
                if main:
                    hooks.progress(step, total)
            if step % config.eval_steps == 0 or step == total:
                run_validation()
            if config.early_stopping_patience and evals_without_gain >= config.early_stopping_patience:
                record("early_stopped", evals_without_gain)
                reason = early_stop_reason(evals_without_gain, best_val, best_step)
                say(f"stopped early at step {step} because {reason}")
                status = RunStatus.COMPLETED
                total = step
                if main:
                    hooks.progress(step, total)  # the run's row ends at this step, not at the planned total
            if (config.sample_steps and (step % config.sample_steps == 0 or step >= total)) or sample_now:
                sample()
            if stop:
                status = RunStatus.STOPPED
                say(f"stop requested: stopping after step {step}")
            if step % config.save_steps == 0 or save_now or stop or step >= total:
                checkpoint(batches_into_epoch)
            if step >= total or stop:
                break
            window_started = time.perf_counter()  # after this step's evaluation, samples and checkpoint
        else:
            epoch += 1  # the loader ran out: a new epoch (after an out-of-memory break, the same one goes on)

    accelerator.end_training()
    return Result(status=status, steps=step, history=history, checkpoints=checkpoints, best_val_loss=best_val)


def train_in_process(backend: Backend, handle: Handle, rows_by_split: dict[str, list[dict]], root: Path,
                     config: TrainConfig, output_dir: Path | None = None, hooks: Hooks | None = None) -> dict:
    """Run the loop in this process (tests, notebooks). Returns ``{"history", "steps", "status",
    "checkpoints", "best_val_loss"}``; ``history`` holds ``{"step", "name", "value"}`` rows."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        result = train(backend, handle, rows_by_split, Path(root), config, Path(output_dir or scratch),
                       hooks or Hooks(log=_noop))
    return {"history": result.history, "steps": result.steps, "status": result.status,
            "checkpoints": result.checkpoints, "best_val_loss": result.best_val_loss}

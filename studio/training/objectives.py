"""What one training step does: the objective a run trains with.

The loop (``loop.py``) is written once; it hands each micro-batch to the run's objective. ``sft`` (supervised
fine-tuning, what every family trains with today) asks the family's module for the batch's loss
(``handle.module(batch) -> loss``) and takes one optimizer step over every trainable weight. An objective that
needs more owns its step and keeps the loop as it is: a preference objective (DPO-style) scores a chosen and a
rejected answer against a frozen reference; an adversarial one (a GAN's) has an optimizer per network and
alternates them. A family declares the objectives it trains with (``Family.objectives``); ``objective_for``
refuses any other.

Adding one: a class with ``name``, ``parameter_groups``, ``loss`` and ``step`` (``Objective``) in ``OBJECTIVES``,
and its name in the ``objectives`` of the families that train with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from studio.models.base import Handle

SFT = "sft"


@dataclass
class Optimizing:
    """What a step works with, each prepared by Accelerate: the module, and per parameter group (in the order of
    ``parameter_groups``) an optimizer and its learning-rate schedule."""
    accelerator: Any
    module: Any
    optimizers: list
    schedulers: list
    max_grad_norm: float  # 0: no clipping


@dataclass
class Step:
    """What a step reports: the micro-batch's loss (a tensor, logged as train_loss), the learning rate it ran at,
    and the gradient norm before clipping when it clipped."""
    loss: Any
    learning_rate: float
    grad_norm: Any = None


class Objective(Protocol):
    name: str

    def parameter_groups(self, handle: Handle) -> list[list]:
        """The weights of each optimizer: one group for SFT (every trainable weight), one per network for a GAN."""

    def loss(self, module, batch):
        """The loss of a batch: what validation averages."""

    def step(self, run: Optimizing, batch) -> Step:
        """One micro-batch inside ``accelerator.accumulate``: forward, backward and the optimizer steps (which
        Accelerate holds back until the accumulation window ends)."""


class SupervisedFineTuning:
    name = SFT

    def parameter_groups(self, handle: Handle) -> list[list]:
        return [handle.trainable_parameters()]

    def loss(self, module, batch):
        return module(batch)

    def step(self, run: Optimizing, batch) -> Step:
        accelerator, [optimizer], [scheduler] = run.accelerator, run.optimizers, run.schedulers
        loss = self.loss(run.module, batch)
        accelerator.backward(loss)
        grad_norm = None
        if accelerator.sync_gradients and run.max_grad_norm > 0:
            grad_norm = accelerator.clip_grad_norm_(run.module.parameters(), run.max_grad_norm)
        used_rate = scheduler.get_last_lr()[0]  # the rate this step runs at (logged, not the next one)
        optimizer.step()
        if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
            scheduler.step()
        optimizer.zero_grad()
        return Step(loss, used_rate, grad_norm)


OBJECTIVES: dict[str, Objective] = {SFT: SupervisedFineTuning()}


def objective_for(handle: Handle, name: str | None = None) -> Objective:
    """The objective ``name`` (by default the first of the handle's family: 'sft'), refused when the family does not
    train with it."""
    family = handle.family
    declared = family.objectives if family is not None else (SFT,)
    name = name or declared[0]
    if name not in declared or name not in OBJECTIVES:
        owner = f"the {family.name} family" if family is not None else f"'{handle.model_ref}'"
        raise ValueError(f"objective must be one that {owner} trains with: {', '.join(declared)} (got '{name}')")
    return OBJECTIVES[name]

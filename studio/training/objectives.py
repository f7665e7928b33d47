"""What one training step does: the objective a run trains with.

The loop (``loop.py``) is written once; it hands each micro-batch to the run's objective. ``sft`` (supervised
fine-tuning, what every family trains with today) asks the family's module for the batch's loss
(``handle.module(batch) -> loss``) and takes one optimizer step over every trainable weight. An objective that
needs more owns its step and keeps the loop as it is: a preference objective (DPO-style) scores a chosen and a
rejected answer against a frozen reference; an adversarial one (a GAN's) has an optimizer per network and
alternates them. A family declares the objectives it trains with (``Family.objectives``); ``objective_for``
refuses any other. A family whose examples are learned by a step of its own (``Family.own_step``: the GAN's
``adversarial``, the VAE's ``variational``) takes that step where a run asks for ``sft``.

An objective may also say, per optimizer, the settings its optimizer and learning-rate schedule are made from
(``optimizer_configs``: a GAN's discriminator at its own rate), and what a validation's metrics warn of
(``warnings``: a GAN's mode collapse); the loop asks for both when the objective has them.

The preference objectives (``dpo``, ``orpo``, ``kto``) are one class over every family: the family's module
scores each example (``studio.models.preference``: a language model's log-probability of the answer, a diffusion
model's minus its denoising error), and the loss is TRL's formula over the policy's and the reference's scores,
so Diffusion-DPO is DPO over diffusion scores. The reference is the same weights with the LoRA adapters switched
off (or, going on with a start's adapter, a frozen copy of that adapter), or (full fine-tuning) a frozen copy made
once, before any step or resume.

Adding one: a class with ``name``, ``parameter_groups``, ``loss`` and ``step`` (``Objective``) in ``OBJECTIVES``
(a function of the run's preference options that makes it), and its name in the ``objectives`` of the families
that train with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from studio.models.base import Handle
from studio.models.options import PreferenceOptions, VaeOptions
from studio.models.preference import LABEL, PAIRS, SCORE

SFT, DPO, ORPO, KTO, ADVERSARIAL, VARIATIONAL = "sft", "dpo", "orpo", "kto", "adversarial", "variational"


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
    the gradient norm before clipping when it clipped, and metrics of the batch to log beside the loss (a
    preference objective's rewards, named as TRL names them). ``loss`` may return one too: its metrics are logged
    for validation, ``val_`` before their names."""
    loss: Any
    learning_rate: float = 0.0
    grad_norm: Any = None
    metrics: dict[str, float] = field(default_factory=dict)


class Objective(Protocol):
    name: str

    def parameter_groups(self, handle: Handle) -> list[list]:
        """The weights of each optimizer: one group for SFT (every trainable weight), one per network for a GAN."""

    def loss(self, module, batch):
        """The loss of a batch: what validation averages (a tensor, or a ``Step`` with metrics)."""

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
        found = self.loss(run.module, batch)
        loss, metrics = (found.loss, found.metrics) if isinstance(found, Step) else (found, {})
        return self.take(run, loss, metrics)

    def take(self, run: Optimizing, loss, metrics: dict[str, float]) -> Step:
        """Backward of ``loss``, clipping, and one step of the optimizer and its schedule."""
        accelerator, [optimizer], [scheduler] = run.accelerator, run.optimizers, run.schedulers
        accelerator.backward(loss)
        grad_norm = None
        if accelerator.sync_gradients and run.max_grad_norm > 0:
            grad_norm = accelerator.clip_grad_norm_(run.module.parameters(), run.max_grad_norm)
        used_rate = scheduler.get_last_lr()[0]  # the rate this step runs at (logged, not the next one)
        optimizer.step()
        if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
            scheduler.step()
        optimizer.zero_grad()
        return Step(loss, used_rate, grad_norm, metrics)


# ----------------------------------------------------------------------------- preferences

def log1mexp(x):
    """log(1 - exp(x)) for x < 0, accurate at both ends (as TRL's ORPO computes it)."""
    import torch

    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def dpo_losses(options: PreferenceOptions, chosen_logratios, rejected_logratios, chosen_counts, rejected_counts):
    """Per-pair DPO loss from the policy's minus the reference's scores, as TRL's ``DPOTrainer._compute_loss``
    (trl/trainer/dpo_trainer.py, 1.16) writes them: ``sigmoid`` (with label smoothing as TRL 0.x's cDPO),
    ``hinge``, and ``ipo`` on length-normalised scores (TRL 1.16's extra per-sequence probability weighting of
    IPO is left out)."""
    import torch
    import torch.nn.functional as F

    beta = options.beta
    delta = chosen_logratios - rejected_logratios
    if options.loss_type == "hinge":
        return torch.relu(1 - beta * delta)
    if options.loss_type == "ipo":
        normalised = chosen_logratios / chosen_counts.clamp(min=1) - rejected_logratios / rejected_counts.clamp(min=1)
        return (normalised - 1 / (2 * beta)) ** 2
    smoothing = options.label_smoothing
    return -F.logsigmoid(beta * delta) * (1 - smoothing) - F.logsigmoid(-beta * delta) * smoothing


class PreferenceObjective(SupervisedFineTuning):
    """DPO, ORPO or KTO over any family's per-example scores (see the module's docstring): SFT's step and
    optimizer, with this loss."""

    def __init__(self, name: str, options: PreferenceOptions):
        self.name, self.options = name, options
        self.frozen = None  # full fine-tuning: the reference, a frozen copy of the start

    def start(self, handle: Handle, accelerator) -> None:
        """Before the first step (and before a resume loads its state): with full fine-tuning and a reference to
        compare with, a frozen copy of the start; with LoRA the reference is in the LoRA layers
        (``common.reference_weights``)."""
        import copy

        if self.name == ORPO or handle.method == "lora":
            return
        self.frozen = copy.deepcopy(handle.module).requires_grad_(False).eval().to(accelerator.device)

    def reference_scores(self, module, batch):
        import torch
        from accelerate.utils import extract_model_from_parallel

        from studio.models.common import reference_weights

        with torch.no_grad():
            if self.frozen is not None:
                return self.frozen(batch)
            inner = extract_model_from_parallel(module)
            with reference_weights(inner):
                return inner(batch)

    def loss(self, module, batch) -> Step:
        import torch

        # Policy and reference draw the same noise (diffusion); validation the same every time, so it compares.
        seed = int(torch.randint(0, 2 ** 31 - 1, ())) if module.training else 0
        scored = {**batch, SCORE: seed}
        # The reference first: its no-grad pass then runs before the policy's activations are held for backward,
        # not on top of them (a lower peak).
        reference = (None, None) if self.name == ORPO else self.reference_scores(module, scored)
        scores, counts = module(scored)
        if self.name == KTO:
            return self._kto(scores, reference[0], batch[LABEL].to(scores.device))
        if not batch.get(PAIRS):
            raise ValueError(f"{self.name} learns from preference pairs; this batch has none")
        chosen, rejected = scores.chunk(2)
        chosen_counts, rejected_counts = counts.float().chunk(2)
        if self.name == ORPO:
            return self._orpo(chosen, rejected, chosen_counts, rejected_counts)
        reference_chosen, reference_rejected = reference[0].chunk(2)
        chosen_logratios, rejected_logratios = chosen - reference_chosen, rejected - reference_rejected
        losses = dpo_losses(self.options, chosen_logratios, rejected_logratios, chosen_counts, rejected_counts)
        beta = self.options.beta
        return Step(losses.mean(), metrics=pair_metrics(beta * chosen_logratios, beta * rejected_logratios))

    def _orpo(self, chosen, rejected, chosen_counts, rejected_counts) -> Step:
        """ORPO (Hong et al. 2024) as TRL's ``ORPOTrainer.odds_ratio_loss`` (trl/experimental/orpo/orpo_trainer.py):
        the chosen answers' negative log-likelihood per token minus beta times the log-sigmoid of the log odds
        ratio of the length-normalised log-probabilities; rewards are beta times those."""
        import torch.nn.functional as F

        nll = -chosen.sum() / chosen_counts.sum().clamp(min=1)
        chosen_mean, rejected_mean = (chosen / chosen_counts.clamp(min=1)).float(),             (rejected / rejected_counts.clamp(min=1)).float()
        log_odds = (chosen_mean - rejected_mean) - (log1mexp(chosen_mean) - log1mexp(rejected_mean))
        beta = self.options.beta
        loss = nll - beta * F.logsigmoid(log_odds).mean()
        return Step(loss, metrics=pair_metrics(beta * chosen_mean.detach(), beta * rejected_mean.detach()))

    def _kto(self, scores, reference, labels) -> Step:
        """KTO (Ethayarajh et al. 2024) as TRL's ``KTOTrainer`` (trl/trainer/kto_trainer.py, loss_type 'kto'): the
        batch's second half (each prompt with another row's answer) estimates the KL term, detached and clamped
        at 0 (over this process's batch: TRL also averages it over processes)."""
        import torch

        logratios = scores - reference
        matched, mismatched = logratios.chunk(2)
        kl = mismatched.mean().detach().clamp(min=0)
        beta, options = self.options.beta, self.options
        chosen, rejected = matched[labels], matched[~labels]
        losses = torch.cat([options.desirable_weight * (1 - torch.sigmoid(beta * (chosen - kl))),
                            options.undesirable_weight * (1 - torch.sigmoid(beta * (kl - rejected)))])
        # Every batch names every metric (NaN where it has no such answers): processes gather them in step.
        nan = float("nan")
        metrics = {"kl": float(kl),
                   "rewards/chosen": float(beta * chosen.detach().mean()) if len(chosen) else nan,
                   "rewards/rejected": float(beta * rejected.detach().mean()) if len(rejected) else nan}
        metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
        return Step(losses.mean(), metrics=metrics)


def pair_metrics(chosen_rewards, rejected_rewards) -> dict[str, float]:
    """TRL's reward metrics of a batch of pairs."""
    chosen_rewards, rejected_rewards = chosen_rewards.detach().float(), rejected_rewards.detach().float()
    return {"rewards/chosen": float(chosen_rewards.mean()), "rewards/rejected": float(rejected_rewards.mean()),
            "rewards/accuracies": float((chosen_rewards > rejected_rewards).float().mean()),
            "rewards/margins": float((chosen_rewards - rejected_rewards).mean())}


# ----------------------------------------------------------------------------- adversarial (GAN)

class frozen:
    """``module``'s weights take no gradient in the ``with`` block (the discriminator during the generator's
    step, so its gradients stay those of its own step)."""

    def __init__(self, module):
        self.parameters = [p for p in module.parameters() if p.requires_grad]

    def __enter__(self):
        for parameter in self.parameters:
            parameter.requires_grad_(False)

    def __exit__(self, *_exc):
        for parameter in self.parameters:
            parameter.requires_grad_(True)


class Adversarial:
    """A GAN's step (``studio.models.gan``): a discriminator step (hinge loss, R1 penalty) then a generator step,
    each with its own optimizer and schedule, then one step of the generator's moving average. The module's
    ``forward(batch, part)`` does each pass, so Accelerate wraps one module. ``train_loss`` is the generator's
    loss; both losses, the discriminator's mean score on real and generated pictures, and at validation the
    mode-collapse monitor (``gan/diversity``) are metrics the Train tab plots."""
    name = ADVERSARIAL
    partial_passes = True  # each pass trains one network: with several processes, DDP is told the other's weights
    #                        get no gradient in it (find_unused_parameters)

    def __init__(self, options=None):
        self.floor = options.diversity_floor if options is not None else 0.0

    def parameter_groups(self, handle: Handle) -> list[list]:
        """The generator's weights, then the discriminator's, each with Adam's first moment off (beta1 0, beta2 0.99,
        as StyleGAN2 trains): momentum from the other network's older moves makes the two oscillate."""
        module = handle.module
        return [[{"params": [p for p in network.parameters() if p.requires_grad], "betas": (0.0, 0.99)}]
                for network in (module.generator, module.discriminator)]

    def optimizer_configs(self, config) -> list:
        """The generator's at the run's settings, the discriminator's at its own rate on the same schedule."""
        rate = config.gan.discriminator_learning_rate or config.learning_rate
        return [config, config.model_copy(update={"learning_rate": rate})]

    def loss(self, module, batch) -> Step:
        from studio.models.gan import VALIDATION

        found = module(batch, part=VALIDATION)
        metrics = {"gan/d_real": float(found["real"]), "gan/d_fake": float(found["fake"]),
                   "gan/diversity": float(found["diversity"])}
        return Step(found["hinge"], metrics=metrics)

    def warnings(self, step: int, metrics: dict[str, float]) -> list[str]:
        """Mode collapse, once the generator has trained: its pictures of one caption closer than the floor."""
        diversity = metrics.get("gan/diversity")
        if step == 0 or diversity is None or diversity >= self.floor:
            return []
        return [f"possible mode collapse: samples of one caption differ by {diversity:.3f} across seeds, under the "
                f"floor of {self.floor:g} (gan.diversity_floor); try a lower learning rate or a stronger R1 penalty"]

    def step(self, run: Optimizing, batch) -> Step:
        from accelerate.utils import extract_model_from_parallel

        from studio.models.gan import DISCRIMINATOR, GENERATOR

        accelerator = run.accelerator
        inner = extract_model_from_parallel(run.module)
        judged = run.module(batch, part=DISCRIMINATOR)
        self._update(run, 1, judged["loss"], inner.discriminator)
        with frozen(inner.discriminator):
            generated = run.module(batch, part=GENERATOR)
            rate, grad_norm = self._update(run, 0, generated["loss"], inner.generator)
        if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
            inner.update_average()
        metrics = {"gan/generator_loss": float(generated["loss"].detach()),
                   "gan/discriminator_loss": float(judged["loss"].detach()),
                   "gan/d_real": float(judged["real"]), "gan/d_fake": float(judged["fake"])}
        return Step(generated["loss"], rate, grad_norm, metrics)

    def _update(self, run: Optimizing, index: int, loss, network):
        """Backward, clipping, one optimizer and schedule step of network ``index`` (0 generator, 1 discriminator).
        Returns the rate it ran at and the gradient norm when it clipped."""
        accelerator, optimizer, scheduler = run.accelerator, run.optimizers[index], run.schedulers[index]
        accelerator.backward(loss)
        grad_norm = None
        if accelerator.sync_gradients and run.max_grad_norm > 0:
            grad_norm = accelerator.clip_grad_norm_(network.parameters(), run.max_grad_norm)
        used_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
            scheduler.step()
        optimizer.zero_grad()
        return used_rate, grad_norm


# ----------------------------------------------------------------------------- variational (VAE)

def kl_weight_at(options, step: int) -> float:
    """The KL term's weight (beta) at optimizer step ``step`` (0 the first): rising linearly from 0 to
    ``options.kl_weight`` over ``options.kl_warmup_steps`` steps, then held."""
    if options.kl_warmup_steps <= 0:
        return options.kl_weight
    return options.kl_weight * min(1.0, step / options.kl_warmup_steps)


def steps_taken(run: Optimizing) -> int:
    """Optimizer steps taken so far: the count of the first schedule's, which a checkpoint saves and a resume loads
    (so a resumed run goes on where its warm-up was). Accelerate's wrapper holds the schedule as ``scheduler``."""
    scheduler = run.schedulers[0]
    return int(getattr(scheduler, "scheduler", scheduler).last_epoch)


class Variational(SupervisedFineTuning):
    """A VAE's step (``studio.models.vae``): SFT's one optimizer over encoder and decoder, on the reconstruction error
    plus the KL term weighted by ``kl_weight_at`` the step (its warm-up). The step number is what SFT's step lacks,
    hence a step of its own. Validation's loss is the full negative ELBO (weight 1, whatever the run's). The
    reconstruction error, the KL term and (training) the weight it took are metrics the Train tab plots
    (``vae/recon``, ``vae/kl``, ``vae/beta``)."""
    name = VARIATIONAL

    def __init__(self, options: VaeOptions | None = None):
        self.options = options if options is not None else VaeOptions()

    def loss(self, module, batch) -> Step:
        found = module(batch, kl_weight=1.0)
        return Step(found["loss"], metrics={"vae/recon": float(found["recon"]), "vae/kl": float(found["kl"])})

    def step(self, run: Optimizing, batch) -> Step:
        beta = kl_weight_at(self.options, steps_taken(run))
        found = run.module(batch, kl_weight=beta)
        metrics = {"vae/recon": float(found["recon"]), "vae/kl": float(found["kl"]), "vae/beta": beta}
        return self.take(run, found["loss"], metrics)


SUPERVISED = SupervisedFineTuning()
OBJECTIVES: dict[str, Callable[[PreferenceOptions], Objective]] = {
    SFT: lambda options: SUPERVISED,
    **{name: (lambda options, name=name: PreferenceObjective(name, options)) for name in (DPO, ORPO, KTO)},
}
# A family's own (Family.own_step), each made from its section of the run's config.
OWN_STEPS: dict[str, Callable[[Any], Objective]] = {
    ADVERSARIAL: lambda config: Adversarial(getattr(config, "gan", None)),
    VARIATIONAL: lambda config: Variational(getattr(config, "vae", None)),
}


def objective_for(handle: Handle, name: str | None = None, options: PreferenceOptions | None = None,
                  config=None) -> Objective:
    """The objective ``name`` (by default the first of the handle's family: 'sft'), refused when the family does not
    train with it; a preference objective learns with ``options``. A family with a step of its own
    (``Family.own_step``) takes it for 'sft', made from the run's ``config`` (its section of it: ``config.gan``,
    ``config.vae``)."""
    family = handle.family
    declared = family.objectives if family is not None else (SFT,)
    name = name or declared[0]
    if name not in declared or name not in OBJECTIVES:
        owner = f"the {family.name} family" if family is not None else f"'{handle.model_ref}'"
        raise ValueError(f"objective must be one that {owner} trains with: {', '.join(declared)} (got '{name}')")
    if family is not None and family.objective_trained(name) != name:
        return OWN_STEPS[family.own_step](config)
    return OBJECTIVES[name](options or PreferenceOptions())

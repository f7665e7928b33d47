"""Objectives: the loop hands each batch to the run's objective. SFT is every family's today; an objective that owns
its step with an optimizer per parameter group (the shape of a GAN's) trains, validates, checkpoints and resumes
through the same loop; a family is held to the objectives it declares."""

from __future__ import annotations

import pytest

from studio.models.base import Handle, Parts
from studio.models.registry import FAMILIES
from studio.training.loop import Hooks, train
from studio.training.objectives import OBJECTIVES, SFT, Step, objective_for
from test_loop import config, rows, values
from toy_backend import ToyBackend


class TakingTurns:
    """Two optimizers, one for the toy regression's weight and one for its bias, stepping in turn."""
    name = "turns"

    def __init__(self):
        self.updates = [0, 0]
        self.validation_batches = 0

    def parameter_groups(self, handle):
        return [[handle.module.linear.weight], [handle.module.linear.bias]]

    def loss(self, module, batch):
        self.validation_batches += not module.training
        return module(batch)

    def step(self, run, batch):
        turn = sum(self.updates) % 2
        loss = self.loss(run.module, batch)
        run.accelerator.backward(loss)
        rate = run.schedulers[turn].get_last_lr()[0]
        run.optimizers[turn].step()
        run.schedulers[turn].step()
        for optimizer in run.optimizers:
            optimizer.zero_grad()
        self.updates[turn] += 1
        return Step(loss, rate)


def train_with(objective, out, resume_from=None, **changes):
    backend = ToyBackend()
    handle = backend.load("toy", "scratch", None)
    start = [handle.module.linear.weight.item(), handle.module.linear.bias.item()]
    result = train(backend, handle, rows(), out, config(**changes), out / "out", Hooks(log=lambda m: None),
                   resume_from=resume_from, objective=objective)
    return result, start, [handle.module.linear.weight.item(), handle.module.linear.bias.item()]


def test_an_objective_with_an_optimizer_per_group_owns_the_step_without_forking_the_loop(tmp_path):
    turns = TakingTurns()
    result, start, end = train_with(turns, tmp_path, max_steps=40)
    assert result.status == "completed" and result.steps == 40
    assert turns.updates == [20, 20]  # each optimizer took every other step
    assert start[0] != end[0] and start[1] != end[1]
    val = values(result.history, "val_loss")
    assert [s for s, _ in val] == [0, 10, 20, 30, 40] and val[-1][1] < val[0][1] * 0.2
    assert turns.validation_batches == 5 * 2  # validation asks the objective for the loss: 5 times 2 batches of 8
    assert values(result.history, "learning_rate") and not values(result.history, "grad_norm")  # it did not clip
    state = tmp_path / "out" / "checkpoints" / "step-0000040" / "state"
    assert {"optimizer.bin", "optimizer_1.bin", "scheduler.bin", "scheduler_1.bin"} <= {p.name for p in state.iterdir()}


def test_a_run_with_two_optimizers_resumes_from_its_checkpoint(tmp_path):
    train_with(TakingTurns(), tmp_path, max_steps=20)
    resumed, _, _ = train_with(TakingTurns(), tmp_path, max_steps=40,
                               resume_from=tmp_path / "out" / "checkpoints" / "step-0000020")
    assert [s for s, _ in values(resumed.history, "train_loss")][0] == 21 and resumed.steps == 40


def test_the_objective_is_the_familys_and_one_it_does_not_declare_is_refused():
    toy = Handle(modality="toy", model_ref="toy", method="scratch", module=None)
    text = Handle(modality="text", model_ref="starter-text", method="scratch", module=None,
                  parts=Parts(family="starter-text"))
    assert objective_for(toy) is objective_for(text) is OBJECTIVES[SFT](None)
    assert all(set(family.objectives) <= set(OBJECTIVES) for family in FAMILIES.values())
    image = Handle(modality="image", model_ref="starter-image", method="scratch", module=None,
                   parts=Parts(family="starter-image"))
    assert objective_for(image, "dpo").name == "dpo"  # Diffusion-DPO
    with pytest.raises(ValueError, match=r"the starter-image family trains with: sft, dpo \(got 'kto'\)"):
        objective_for(image, "kto")

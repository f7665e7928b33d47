"""Preference objectives on text, through the one loop: DPO, ORPO and KTO move a tiny model the way the pairs
point; the reference is the adapters switched off (LoRA: no second copy) or a frozen copy (full); two processes
learn as one; a resumed DPO run goes on as if never stopped.

The base is the starter trained to end its answers with 'yes' or 'no' about half the time each
(``preference_text.py``); the preferences all prefer 'yes'."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from preference_text import base_config, build_base, share_saying_yes, split_rows
from studio.models.text import TextBackend
from studio.training.loop import Hooks, train
from studio.training.objectives import objective_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent
# The settings recommended for the starter's models (catalog.OBJECTIVE_RECOMMENDED) are these, measured here: 45 %
# of the base's answers end with 'yes'; after 30 steps 95 % (dpo), 90 % (orpo, kto).
PREFERENCE = dict(learning_rate=5e-4, per_device_train_batch_size=8, max_steps=30, warmup_steps=0,
                  lr_scheduler_type="constant", eval_steps=10, save_steps=10, preference={"beta": 0.5})


@pytest.mark.parametrize("objective", ["dpo", "orpo", "kto"])
def test_the_recommended_settings_are_the_measured_ones(base, objective):
    from studio.models.registry import recommended_for
    from studio.training.config import apply_overrides

    recommended = apply_overrides(base_config(), recommended_for(str(base), objective))
    measured = base_config(**{k: v for k, v in PREFERENCE.items() if k != "save_steps"})
    assert recommended == measured
    assert recommended_for("starter-text", "sft") == recommended_for("starter-text")  # SFT: the starter's own


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    import torch

    folder = tmp_path_factory.mktemp("base") / "model"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # set up before the tests' one_torch_thread: one thread is several times faster here
    try:
        build_base(folder)
    finally:
        torch.set_num_threads(threads)
    return folder


def preference_run(base, out: Path, objective: str, method: str = "full", resume_from=None, **changes):
    backend = TextBackend()
    config = base_config(**{**PREFERENCE, "objective": objective, **changes})
    handle = backend.load(str(base), method, config)
    kind = "thumbs" if objective == "kto" else "pair"
    result = train(backend, handle, split_rows(kind), out, config, out / "out", Hooks(log=lambda m: None),
                   resume_from=resume_from)
    return backend, handle, result


def values(history, name):
    return [(h["step"], h["value"]) for h in history if h["name"] == name]


@pytest.mark.parametrize("objective", ["dpo", "orpo", "kto"])
def test_a_preference_objective_moves_the_model_the_way_the_pairs_point(base, tmp_path, objective):
    backend = TextBackend()
    before = share_saying_yes(backend, backend.load(str(base), "full", base_config()))
    _, handle, result = preference_run(base, tmp_path, objective)
    after = share_saying_yes(backend, handle)
    assert 0.3 <= before <= 0.6 and after >= 0.8, (before, after)
    history = result.history
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "val_rewards/margins"):
        assert values(history, name), name
    assert values(history, "val_rewards/margins")[-1][1] > values(history, "val_rewards/margins")[0][1]
    if objective == "dpo":  # held-out pairs: the chosen answer's reward beats the rejected one's
        assert values(history, "val_rewards/accuracies")[-1][1] >= 0.9
        assert values(history, "val_loss")[-1][1] < 0.5 * values(history, "val_loss")[0][1]


def test_with_lora_the_reference_is_the_base_with_the_adapter_off_and_no_copy(base, tmp_path):
    import torch

    backend = TextBackend()
    config = base_config(objective="dpo")
    plain = backend.load(str(base), "full", config)
    handle = backend.load(str(base), "lora", config)
    objective = objective_for(handle, "dpo", config.preference)
    objective.start(handle, None)
    assert objective.frozen is None
    with torch.no_grad():  # the adapter learns something, so that switching it off is seen
        for name, parameter in handle.module.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.5)
    collate = backend.collate(handle, config)
    batch = collate([backend.datasets(handle, split_rows("pair"), Path("."), config)["train"][i] for i in range(4)])
    with torch.no_grad():
        reference, _ = objective.reference_scores(handle.module, {**batch, "score_seed": 0})
        base_scores, _ = plain.module({**batch, "score_seed": 0})
        policy, _ = handle.module({**batch, "score_seed": 0})
    assert torch.allclose(reference, base_scores, atol=1e-4) and not torch.allclose(policy, base_scores, atol=1e-2)
    assert all(p.requires_grad for n, p in handle.module.named_parameters() if "lora_" in n)  # switched back on
    base_count = sum(p.numel() for p in plain.module.parameters())
    lora_count = sum(p.numel() for n, p in handle.module.named_parameters() if "lora_" in n)
    assert sum(p.numel() for p in handle.module.parameters()) == base_count + lora_count  # one copy of the weights


def test_a_dpo_loss_scores_the_reference_first_and_keeps_no_key_value_cache(base):
    """The reference's no-grad pass runs before the policy's activations are held for backward, not on top of
    them, and neither pass keeps a generation cache: both lower a DPO step's peak memory (docs/PERFORMANCE.md)."""
    import torch

    backend = TextBackend()
    config = base_config(objective="dpo")
    handle = backend.load(str(base), "lora", config)
    objective = objective_for(handle, "dpo", config.preference)
    objective.start(handle, None)
    passes = []
    causal_lm = handle.module.model.get_base_model()
    hook = causal_lm.register_forward_hook(
        lambda module, args, output: passes.append((torch.is_grad_enabled(), output.past_key_values)))
    collate = backend.collate(handle, config)
    batch = collate([backend.datasets(handle, split_rows("pair"), Path("."), config)["train"][i] for i in range(4)])
    try:
        handle.module.train()
        objective.loss(handle.module, batch).loss.backward()
    finally:
        hook.remove()
    assert [grad for grad, _ in passes] == [False, True]  # the reference, then the policy
    assert all(cache is None for _, cache in passes)


def test_with_full_fine_tuning_the_reference_is_a_frozen_copy_that_stays(base, tmp_path):
    import torch

    backend = TextBackend()
    config = base_config(**{**PREFERENCE, "objective": "dpo", "max_steps": 5})
    handle = backend.load(str(base), "full", config)
    start = {k: v.clone() for k, v in handle.module.state_dict().items()}
    objective = objective_for(handle, "dpo", config.preference)
    train(backend, handle, split_rows("pair"), tmp_path, config, tmp_path / "out", Hooks(log=lambda m: None),
          objective=objective)
    frozen = objective.frozen.state_dict()
    assert all(torch.equal(frozen[k], start[k]) for k in start)  # the reference did not move ...
    assert not all(torch.equal(handle.module.state_dict()[k], start[k]) for k in start)  # ... the model did
    assert not any(p.requires_grad for p in objective.frozen.parameters())


def test_a_resumed_dpo_run_goes_on_with_the_same_losses(base, tmp_path):
    _, _, whole = preference_run(base, tmp_path / "whole", "dpo", max_steps=20)
    preference_run(base, tmp_path / "cut", "dpo", max_steps=10)
    checkpoint = tmp_path / "cut" / "out" / "checkpoints" / "step-0000010"
    _, _, resumed = preference_run(base, tmp_path / "cut", "dpo", max_steps=20, resume_from=checkpoint)
    expected = [v for s, v in values(whole.history, "train_loss") if s > 10]
    assert [v for _, v in values(resumed.history, "train_loss")] == pytest.approx(expected, rel=1e-4)
    assert values(resumed.history, "val_loss")[-1][1] == pytest.approx(values(whole.history, "val_loss")[-1][1],
                                                                        rel=1e-4)


@pytest.mark.slow  # two accelerate ranks in two processes
def test_two_processes_learn_dpo_as_one(base, tmp_path):
    _, _, one = preference_run(base, tmp_path / "one", "dpo", max_steps=10, per_device_train_batch_size=8)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = base_config(**{**PREFERENCE, "objective": "dpo", "max_steps": 10, "per_device_train_batch_size": 4})
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
               "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
               str(ROOT / "tests" / "preference_text.py"), config.model_dump_json(), str(base), str(tmp_path)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    two = json.loads((tmp_path / "history.json").read_text())
    # The validation loss averages every pair on both processes: the same pairs, the same weights, the same loss.
    assert [v for _, v in values(two["history"], "val_loss")] == pytest.approx(
        [v for _, v in values(one.history, "val_loss")], rel=1e-3)
    assert [v for _, v in values(two["history"], "val_rewards/accuracies")] == pytest.approx(
        [v for _, v in values(one.history, "val_rewards/accuracies")], abs=1e-6)

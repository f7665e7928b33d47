"""The learning-rate schedules (issue 16): constant_with_warmup, cosine_with_restarts, polynomial and warmup_ratio, as
the loop logs the rate each step ran at; and 'constant' with a warm-up refused before the run exists rather than the
warm-up silently ignored."""

from __future__ import annotations

import math

import pytest

from studio.store.tables import Run
from studio.training import jobs
from studio.training.config import TrainConfig
from test_jobs import corpus_store  # noqa: F401 - fixture
from test_loop import run, values

PEAK = 0.2  # test_loop's learning rate


def rates(tmp_path, **changes) -> list[float]:
    result, _, _ = run(tmp_path, eval_steps=100, save_steps=100, **changes)
    curve = values(result.history, "learning_rate")
    assert [step for step, _ in curve] == list(range(1, result.steps + 1))
    return [rate for _, rate in curve]


def test_constant_with_warmup_rises_then_stays(tmp_path):
    assert rates(tmp_path, max_steps=8, warmup_steps=4, lr_scheduler_type="constant_with_warmup") == \
        pytest.approx([0, 0.05, 0.1, 0.15, PEAK, PEAK, PEAK, PEAK])


def test_warmup_ratio_takes_the_place_of_warmup_steps(tmp_path):
    curve = rates(tmp_path, max_steps=12, warmup_steps=10, warmup_ratio=0.25, lr_scheduler_type="constant_with_warmup")
    assert curve == pytest.approx([0, PEAK / 3, 2 * PEAK / 3] + [PEAK] * 9)  # 3 of 12 steps: a quarter


def test_cosine_with_restarts_starts_again_from_the_peak(tmp_path):
    curve = rates(tmp_path, max_steps=20, warmup_steps=0, lr_scheduler_type="cosine_with_restarts", num_cycles=2)
    assert curve[0] == pytest.approx(PEAK) and curve[9] < 0.05 * PEAK  # the first cosine runs down ...
    assert curve[10] == pytest.approx(PEAK)  # ... and the second starts at the peak again
    assert curve[10:] == pytest.approx(curve[:10])
    plain = rates(tmp_path / "plain", max_steps=20, warmup_steps=0, lr_scheduler_type="cosine")
    assert plain[10] < 0.6 * PEAK


def test_polynomial_decays_with_its_power(tmp_path):
    linear = rates(tmp_path / "linear", max_steps=10, warmup_steps=0, lr_scheduler_type="polynomial")
    squared = rates(tmp_path / "squared", max_steps=10, warmup_steps=0, lr_scheduler_type="polynomial", power=2.0)
    assert linear == pytest.approx([PEAK * (1 - n / 10) for n in range(10)], abs=1e-6)
    assert squared == pytest.approx([PEAK * (1 - n / 10) ** 2 for n in range(10)], abs=1e-6)


@pytest.mark.parametrize("warmup", [dict(warmup_steps=10), dict(warmup_steps=0, warmup_ratio=0.1)])
def test_constant_with_a_warmup_is_refused_before_the_run_exists(corpus_store, warmup):  # noqa: F811
    store, dataset = corpus_store
    config = TrainConfig(lr_scheduler_type="constant", use_cpu=True, **warmup)
    with pytest.raises(jobs.RunError, match="'constant' has no warm-up.*pick 'constant_with_warmup'"):
        jobs.create_run(store, dataset, "starter-text", "scratch", config)
    with store.session() as session:
        assert session.query(Run).count() == 0
    run_id = jobs.create_run(store, dataset, "starter-text", "scratch",
                             TrainConfig(lr_scheduler_type="constant", warmup_steps=0, use_cpu=True))
    assert math.isfinite(run_id)

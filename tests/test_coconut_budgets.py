"""Coconut's stage budgets: the run's steps split evenly or as the official schedule splits its epochs
(CoT stage and each partly latent stage 3 of 25 epochs, the all-latent stage the rest)."""

from __future__ import annotations

import pytest

from baselines.coconut import Coconut, stage_budgets
from harness.config import load_config, parse_override
from harness.context import RunContext
from harness.errors import BadInput


def test_even_and_reference_budgets_sum_to_the_run_budget():
    for total in (0, 1, 7, 8, 100, 599, 600, 601, 10_000):
        for max_stage in (0, 1, 3, 5):
            for split in ("even", "reference"):
                epochs = max(25, 3 * max_stage + 1)
                budgets = stage_budgets(total, max_stage, split, 3, epochs)
                assert len(budgets) == max_stage + 1 and sum(budgets) == total and min(budgets) >= 0
    assert stage_budgets(600, 3, "even") == [150, 150, 150, 150]
    assert stage_budgets(601, 3, "even") == [150, 150, 150, 151]  # the remainder to the last stages


def test_the_reference_split_is_the_official_schedule():
    # args/gsm_coconut.yaml: 25 epochs, stage = epoch // 3 capped at the last; in steps, one epoch = 600 / 25 = 24
    epoch_stages = [min(epoch // 3, 3) for epoch in range(25)]
    assert [epoch_stages.count(s) for s in range(4)] == [3, 3, 3, 16]
    assert stage_budgets(600, 3, "reference") == [24 * 3, 24 * 3, 24 * 3, 24 * 16]
    budgets = stage_budgets(600, 3, "reference")
    assert budgets[-1] / 600 > 0.5  # the all-latent stage gets most of the budget, evenly it gets a quarter
    assert stage_budgets(250, 3, "reference", epochs_per_stage=2, num_epochs=10) == [50, 50, 50, 100]
    assert stage_budgets(600, 0, "reference") == [600]  # one stage: all of it


def coconut(tmp_path, **options) -> Coconut:
    setting = "method_options={" + ", ".join(f"{k}: {v}" for k, v in options.items()) + "}"
    config = load_config("tiny", None, [parse_override("method=coconut"), parse_override(setting)])
    return Coconut(RunContext(config, tmp_path / "r", tmp_path))


def test_the_method_trains_each_stage_its_share(tmp_path):
    method = coconut(tmp_path, stage_budget="reference")
    assert method.ctx.config.train.steps == 600
    assert [method.stage_steps(s) for s in range(4)] == [72, 72, 72, 384]
    assert [coconut(tmp_path).stage_steps(s) for s in range(4)] == [72, 72, 72, 384]  # the default
    assert [coconut(tmp_path, stage_budget="even").stage_steps(s) for s in range(4)] == [150, 150, 150, 150]
    five = coconut(tmp_path, stage_budget="reference", max_stage=5, num_epochs=30)
    assert [five.stage_steps(s) for s in range(6)] == [60, 60, 60, 60, 60, 300]
    for bad in ({"stage_budget": "uneven"}, {"epochs_per_stage": 0}, {"num_epochs": 9},  # 9 <= 3 * 3: no last stage
                {"max_stage": 9}):
        with pytest.raises(BadInput):
            coconut(tmp_path, **{"stage_budget": "reference", **bad})
    assert coconut(tmp_path, stage_budget="even", max_stage=9).stage_steps(9) == 60  # epochs: the reference split's

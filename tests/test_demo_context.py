"""The demo plan's scaling rules (``regionclip.demo.context``): the linear LR rule, warm-up as the official
fraction of the schedule with its floor and cap, and the stage TrainConfigs built from them."""

from __future__ import annotations

import pytest

from regionclip.demo.context import (
    OFFICIAL_DETECTOR,
    OFFICIAL_PRETRAIN,
    OFFICIAL_RPN,
    PLANS,
    WARMUP_FLOOR,
    scaled_lr,
    scaled_train_config,
    scaled_warmup,
)


def test_linear_scaling_rule_from_the_official_batches():
    assert scaled_lr(OFFICIAL_PRETRAIN, 8) == pytest.approx(0.002 * 8 / 96)
    assert scaled_lr(OFFICIAL_DETECTOR, 8) == pytest.approx(0.001)
    assert scaled_lr(OFFICIAL_RPN, 8) == pytest.approx(0.01)
    assert PLANS["default"].detector_lr == pytest.approx(0.001)
    assert PLANS["default"].pretrain_lr == pytest.approx(0.002 / 12)


def test_warmup_is_the_official_fraction_with_a_floor_and_a_cap():
    # 90k-step official schedule, 5000 warm-up: 2% of the steps, under the floor for any CPU schedule
    assert scaled_warmup(OFFICIAL_DETECTOR, 130) == WARMUP_FLOOR
    # long enough for the fraction to exceed the floor: ceil(9000 * 5000 / 90000) = 500
    assert scaled_warmup(OFFICIAL_DETECTOR, 9000) == 500
    # the quick smoke-test schedules: at most a third of the steps
    assert scaled_warmup(OFFICIAL_DETECTOR, 12) == 4
    assert scaled_warmup(OFFICIAL_DETECTOR, 2) == 1


def test_scaled_train_config_carries_the_rules_and_the_extra_fields():
    cfg = scaled_train_config(OFFICIAL_PRETRAIN, 100, 8, 3, clip_grad_norm_per_param=5.0)
    assert (cfg.max_steps, cfg.batch_size, cfg.seed) == (100, 8, 3)
    assert cfg.lr == pytest.approx(scaled_lr(OFFICIAL_PRETRAIN, 8))
    assert cfg.warmup_steps == scaled_warmup(OFFICIAL_PRETRAIN, 100)
    assert tuple(cfg.lr_milestones) == OFFICIAL_PRETRAIN.milestones
    assert cfg.clip_grad_norm_per_param == 5.0
    assert (cfg.checkpoint_every, cfg.log_every) == (33, 5)
    rpn = scaled_train_config(OFFICIAL_RPN, 30, 8, 0, logs=10)
    assert (rpn.checkpoint_every, rpn.log_every) == (10, 3)
    assert scaled_train_config(OFFICIAL_RPN, 2, 8, 0).log_every == 1  # never 0

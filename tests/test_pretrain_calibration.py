"""The scale-matched pretraining settings (regionclip.pretrain.calibration): τ from the teacher's logit scale,
the kept-fraction threshold, gradient norms per loss and the loss-weight rule."""

from __future__ import annotations

import math

import pytest
import torch

from regionclip.clip import create_model
from regionclip.pretrain.calibration import (
    UNDEFINED_BELOW,
    balance_loss_weights,
    dominant_losses,
    kept_fraction_threshold,
    loss_gradient_norms,
    teacher_temperature,
    teacher_top_probabilities,
)
from test_pretrain_task import make_batch, make_task


def test_teacher_temperature_is_one_over_the_learned_scale():
    model = create_model("RN-micro")
    with torch.no_grad():
        model.logit_scale.fill_(math.log(14.0))
    assert teacher_temperature(model) == pytest.approx(1 / 14.0, rel=1e-6)


def test_kept_fraction_threshold_keeps_that_fraction():
    top = torch.rand(10_000, generator=torch.Generator().manual_seed(0))
    for fraction in (0.01, 0.2, 0.5):
        t = kept_fraction_threshold(top, fraction)
        assert float((top > t).float().mean()) == pytest.approx(fraction, abs=2e-3)
    assert kept_fraction_threshold(top, 1.0) == 0.0
    with pytest.raises(ValueError, match="fraction"):
        kept_fraction_threshold(top, 0.0)
    with pytest.raises(ValueError, match="no regions"):
        kept_fraction_threshold(torch.zeros(0), 0.5)


def test_loss_weight_rule():
    ones = {"a": 1.0, "b": 1.0, "c": 1.0}
    # one loss 20x the largest other: scaled to that norm
    assert balance_loss_weights({"a": 20.0, "b": 1.0, "c": 0.5}, ones) == {"a": 0.05, "b": 1.0, "c": 1.0}
    # within 10x: official weights stay
    assert balance_loss_weights({"a": 9.0, "b": 1.0, "c": 0.5}, ones) == ones
    # the others vanish (below UNDEFINED_BELOW of it): undefined, nothing rescaled
    tiny = 0.5 * UNDEFINED_BELOW * 13.0
    assert balance_loss_weights({"a": 13.0, "b": tiny, "c": 0.0}, ones) == ones


def test_gradient_norms_per_loss_and_top_probabilities():
    task = make_task(threshold=0.0)
    batch = make_batch(task)
    norms = loss_gradient_norms(task, batch)
    assert set(norms) == {"loss_region_concept", "loss_region_distill", "loss_image_text"}
    assert all(math.isfinite(v) and v >= 0 for v in norms.values())
    assert norms["loss_image_text"] > 0
    assert all(p.grad is None for p in task.student.parameters())  # nothing left behind
    # doubling a weight doubles that loss's gradient norm
    task.loss_weights["loss_image_text"] = 2.0
    assert loss_gradient_norms(task, batch)["loss_image_text"] == pytest.approx(
        2 * norms["loss_image_text"], rel=1e-4
    )
    top = teacher_top_probabilities(task, batch)
    assert top.ndim == 1 and top.numel() > 0
    assert bool(((top > 0) & (top <= 1)).all())
    assert float(top.min()) >= 1.0 / task.concepts.shape[0] - 1e-6  # a max of a softmax is >= uniform


def test_dominant_losses():
    assert dominant_losses({"a": 20.0, "b": 1.0, "c": 0.5}) == ["a"]
    assert dominant_losses({"a": 9.0, "b": 1.0, "c": 0.5}) == []  # under 10x the next
    assert dominant_losses({"a": 14.1, "b": 0.0172, "c": 1e-6}) == ["a"]  # the 750-step teacher's step 0
    assert dominant_losses({"a": 1.0}) == []  # nothing to compare with

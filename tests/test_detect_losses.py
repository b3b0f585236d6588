"""Tests of regionclip.detect.losses against hand computations (method reference §6.3)."""

import math

import pytest
import torch

from regionclip.detect.losses import (
    box_regression_loss,
    focal_scaled_cross_entropy,
    mask_loss,
    weighted_cross_entropy,
)

LOGITS = [[2.0, 0.0, 1.0], [0.5, 1.5, -1.0], [0.0, 0.0, 3.0]]  # K = 2, background = column 2
TARGETS = [0, 1, 2]


def _ce(row, t):
    lse = math.log(sum(math.exp(v) for v in row))
    return lse - row[t]


def test_focal_scaled_ce_by_hand():
    terms = []
    for row, t in zip(LOGITS, TARGETS, strict=True):
        ce = _ce(row, t)
        p = math.exp(-ce)
        term = ce * (1 - p) ** 0.5
        terms.append(term * (0.2 if t == 2 else 1.0))
    expected = sum(terms) / 3  # plain mean over all RoIs, background rows scaled by 0.2
    got = focal_scaled_cross_entropy(torch.tensor(LOGITS), torch.tensor(TARGETS), gamma=0.5, bg_weight=0.2)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_weighted_ce_by_hand_is_weighted_mean():
    ces = [_ce(row, t) for row, t in zip(LOGITS, TARGETS, strict=True)]
    expected = (ces[0] + ces[1] + 0.8 * ces[2]) / (1 + 1 + 0.8)
    got = weighted_cross_entropy(torch.tensor(LOGITS), torch.tensor(TARGETS), bg_weight=0.8)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    plain_mean = (ces[0] + ces[1] + 0.8 * ces[2]) / 3
    assert abs(got.item() - plain_mean) > 1e-3  # different normalisation from the COCO loss


def test_focal_loss_finite_gradient_for_confident_rows():
    logits = torch.tensor([[200.0, 0.0, 0.0], [0.0, 0.0, 200.0]], requires_grad=True)
    loss = focal_scaled_cross_entropy(logits, torch.tensor([0, 2]))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.isfinite(logits.grad).all()


def test_box_loss_by_hand():
    pred = torch.tensor(
        [[1.0, 2.0, 3.0, 4.0], [9.0, 9.0, 9.0, 9.0], [0.0, 0.0, 0.0, -1.0]], requires_grad=True
    )
    fg = torch.tensor([True, False, True])
    target = torch.tensor([[0.0, 2.0, 4.0, 4.0], [0.0, 0.0, 0.0, 1.0]])
    loss = box_regression_loss(pred, target, fg, num_rois=5)
    assert loss.item() == pytest.approx((1 + 0 + 1 + 0 + 0 + 0 + 0 + 2) / 5)
    loss.backward()
    assert pred.grad[1].abs().sum() == 0  # background rows get no box gradient


def test_box_loss_zero_foreground_is_exactly_zero_with_graph():
    pred = torch.randn(4, 4, requires_grad=True)
    loss = box_regression_loss(pred, torch.zeros(0, 4), torch.zeros(4, dtype=torch.bool), num_rois=4)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert pred.grad.abs().sum() == 0


def test_losses_on_zero_rois_are_zero_and_finite():
    empty = torch.zeros(0, 3, requires_grad=True)
    targets = torch.zeros(0, dtype=torch.long)
    for loss in (focal_scaled_cross_entropy(empty, targets), weighted_cross_entropy(empty, targets)):
        assert loss.item() == 0.0 and loss.requires_grad
    assert mask_loss(torch.zeros(0, 4, 4, requires_grad=True), torch.zeros(0, 4, 4)).item() == 0.0


def test_mask_loss_by_hand():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 0.0]]])
    targets = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = -(math.log(sig(0)) + math.log(sig(2)) + math.log(1 - sig(-1)) + math.log(1 - sig(0))) / 4
    assert mask_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)

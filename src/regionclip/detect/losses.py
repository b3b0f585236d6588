"""Detector losses, exact formulas of the official code (method reference §6.2-6.3, §11 item 4).

Logits are ``[N, K+1]`` with the background LAST (index K); targets ``[N]`` long in ``0..K``.

* COCO, :func:`focal_scaled_cross_entropy`: ``l_n = CE_n * (1 - p_{n,t_n})^gamma`` (gamma 0.5), times
  ``bg_weight`` (0.2) when ``t_n = K``; loss = plain mean over all N RoIs.
* LVIS, :func:`weighted_cross_entropy`: ``F.cross_entropy(s, t, weight=[1, ..., 1, bg_weight])`` (0.8),
  i.e. the WEIGHTED mean ``sum w CE / sum w`` (a different normalisation from COCO's).
* :func:`box_regression_loss`: L1 (smooth-L1 with beta 0) over foreground deltas, summed, divided by the
  number of sampled RoIs of the whole batch; exactly 0 (with a graph) when there is no foreground.
* :func:`mask_loss`: per-pixel binary cross-entropy on foreground RoIs (detectron2's mask R-CNN loss).

Every function returns a finite scalar with a graph even for zero RoIs (then 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def focal_scaled_cross_entropy(
    logits: Tensor, targets: Tensor, gamma: float = 0.5, bg_weight: float = 0.2
) -> Tensor:
    """Official COCO loss: mean over RoIs of ``CE * (1 - p_t)^gamma``, background rows scaled by ``bg_weight``.

    ``1 - p_t`` is computed as ``-expm1(-CE)`` and floored at 1e-12 before the power, so a perfectly
    classified RoI (``p_t`` = 1 in float) contributes ~0 with a finite gradient instead of ``0 * inf``.
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    one_minus_p = (-torch.expm1(-ce)).clamp(min=1e-12)
    loss = ce * one_minus_p**gamma
    background = logits.shape[1] - 1
    loss = torch.where(targets == background, loss * bg_weight, loss)
    return loss.mean()


def weighted_cross_entropy(logits: Tensor, targets: Tensor, bg_weight: float = 0.8) -> Tensor:
    """Official LVIS loss: cross-entropy with class weights ``[1, ..., 1, bg_weight]``, weighted mean."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    weight = torch.ones(logits.shape[1], dtype=torch.float32, device=logits.device)
    weight[-1] = bg_weight
    return F.cross_entropy(logits.float(), targets, weight=weight)


def box_regression_loss(
    pred_deltas: Tensor, target_deltas: Tensor, foreground: Tensor, num_rois: int
) -> Tensor:
    """Sum of |pred - target| over foreground rows, divided by ``num_rois`` (all sampled RoIs, all images).

    pred_deltas: ``[N, 4]``; target_deltas: ``[F, 4]`` for the ``F`` foreground rows; foreground: ``[N]`` bool.
    """
    diff = pred_deltas[foreground].float() - target_deltas.float()
    return diff.abs().sum() / max(num_rois, 1)


def mask_loss(mask_logits: Tensor, mask_targets: Tensor) -> Tensor:
    """Mean per-pixel BCE of foreground ``mask_logits`` ``[F, m, m]`` against 0/1 ``mask_targets`` ``[F, m, m]``."""
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(mask_logits.float(), mask_targets.float())


class FocalScaledCrossEntropy(nn.Module):
    """:func:`focal_scaled_cross_entropy` with fixed ``gamma`` and ``bg_weight`` (the COCO recipe)."""

    def __init__(self, gamma: float = 0.5, bg_weight: float = 0.2):
        super().__init__()
        self.gamma = gamma
        self.bg_weight = bg_weight

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return focal_scaled_cross_entropy(logits, targets, self.gamma, self.bg_weight)


class WeightedCrossEntropy(nn.Module):
    """:func:`weighted_cross_entropy` with a fixed ``bg_weight`` (the LVIS recipe)."""

    def __init__(self, bg_weight: float = 0.8):
        super().__init__()
        self.bg_weight = bg_weight

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return weighted_cross_entropy(logits, targets, self.bg_weight)

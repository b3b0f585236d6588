"""RoI matching and sampling for detector training (method reference §6.1, detectron2 defaults).

Per image: the ground-truth boxes are appended to the proposals; each RoI is matched to the GT box of
highest IoU; IoU >= 0.5 is foreground (label = that GT's class), anything lower is background (label = K,
no ignore band); then up to ``rois_per_image`` (512) RoIs are drawn at random with at most
``positive_fraction`` (25%) foreground (torchvision's ``BalancedPositiveNegativeSampler``, the same rule as
detectron2's ``subsample_labels``; randomness from torch's global generator).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
from torchvision.ops import box_iou


@dataclass
class SampledRoIs:
    """The sampled RoIs of a batch.

    boxes: ``list[Tensor[n_i, 4]]`` xyxy input pixels, one per image; labels: ``[R]`` long (``R = sum n_i``),
    class index in ``0..K-1`` or ``K`` for background; gt_boxes: ``[R, 4]`` the matched GT box (the RoI itself
    for background rows, so that encoding it is finite); gt_indices: ``list[Tensor[n_i]]`` long index of the
    matched GT in its image (-1 for background).
    """

    boxes: list[Tensor]
    labels: Tensor
    gt_boxes: Tensor
    gt_indices: list[Tensor]

    @property
    def foreground(self) -> Tensor:
        """``[R]`` bool: foreground RoIs."""
        return self.gt_indices_cat >= 0

    @property
    def gt_indices_cat(self) -> Tensor:
        return torch.cat(self.gt_indices)


def match_proposals(proposals: Tensor, gt_boxes: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """Index ``[P]`` long of the best GT for each proposal, or -1 when its best IoU < ``iou_threshold``.

    proposals: ``[P, 4]``; gt_boxes: ``[G, 4]`` (G may be 0: every proposal is background).
    Ties between GT boxes go to the first one (``max`` returns the first maximum).
    """
    if gt_boxes.shape[0] == 0:
        return torch.full((proposals.shape[0],), -1, dtype=torch.long, device=proposals.device)
    best_iou, best = box_iou(proposals, gt_boxes).max(dim=1)
    return torch.where(best_iou >= iou_threshold, best, torch.full_like(best, -1))


class RoISampler:
    """Append GT to proposals, match (IoU >= fg_iou_threshold) and subsample (512 RoIs, 25% fg) per image."""

    def __init__(
        self, rois_per_image: int = 512, positive_fraction: float = 0.25, fg_iou_threshold: float = 0.5
    ):
        self.rois_per_image = rois_per_image
        self.positive_fraction = positive_fraction
        self.fg_iou_threshold = fg_iou_threshold
        self._sampler = BalancedPositiveNegativeSampler(rois_per_image, positive_fraction)

    def __call__(
        self, proposals: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor], num_classes: int
    ) -> SampledRoIs:
        """proposals, gt_boxes: ``list[Tensor[*, 4]]`` per image; gt_labels: ``list[Tensor[G_i]]`` long in
        ``0..num_classes-1``. Background label is ``num_classes``."""
        boxes_out, labels_out, gt_out, idx_out = [], [], [], []
        for props, gts, labels in zip(proposals, gt_boxes, gt_labels, strict=True):
            gts = gts.to(props.dtype)
            rois = torch.cat([props, gts])
            matched = match_proposals(rois, gts, self.fg_iou_threshold)
            # torchvision's sampler convention: 1 positive, 0 negative (no ignore label here).
            pos_mask, neg_mask = self._sampler([(matched >= 0).to(torch.long)])
            chosen = torch.cat([torch.nonzero(pos_mask[0]).flatten(), torch.nonzero(neg_mask[0]).flatten()])
            rois, matched = rois[chosen], matched[chosen]
            fg = matched >= 0
            safe = matched.clamp(min=0)
            label = torch.full_like(matched, num_classes)
            if gts.shape[0] > 0:
                label = torch.where(fg, labels.to(rois.device)[safe], label)
                gt_box = torch.where(fg[:, None], gts[safe], rois)
            else:
                gt_box = rois.clone()
            boxes_out.append(rois)
            labels_out.append(label)
            gt_out.append(gt_box)
            idx_out.append(matched)
        return SampledRoIs(boxes_out, torch.cat(labels_out), torch.cat(gt_out), idx_out)

"""Detector inference post-processing (method reference §6.5, §7, §11 item 3).

Per image, following the official ``fast_rcnn_inference_single_image``:

1. class probabilities = softmax over the K vocabulary classes + background (the background column is
   dropped after step 3), or the frozen-classifier ensemble's scores in their place
   (:mod:`regionclip.detect.ensemble`; everything below applies to them unchanged);
2. optional RPN-score fusion ``score = sqrt(p * o)``: ``"logit"`` is the official one, with ``o`` the RAW
   objectness logit, so proposals with ``o < 0`` get NaN in every column; ``"sigmoid"`` uses sigmoid(o);
   ``"none"`` keeps p;
3. rows with any non-finite box coordinate or score are DROPPED (this is how the official code silently
   discards the NaN rows of step 2);
4. boxes: the proposals moved by the class-agnostic deltas (or unchanged: ``apply_box_deltas=False``, the
   zero-shot setting), clipped to the image;
5. every (box, class) pair with score > ``score_thresh`` is a candidate;
6. per-class soft-NMS (Gaussian, sigma 0.5, prune 0.001; scores replaced by the decayed ones) or hard NMS
   (``torchvision.ops.batched_nms`` at ``nms_thresh``);
7. the ``max_dets`` highest-scoring detections are kept.

A detector holds these settings as one frozen :class:`InferenceSettings` (built from its
:class:`~regionclip.detect.config.DetectorConfig`; the zero-shot ones come from
:func:`~regionclip.detect.config.zero_shot_config`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from regionclip.detect.soft_nms import batched_soft_nms
from regionclip.structures import clip_boxes

ScoreFusion = Literal["none", "logit", "sigmoid"]
NmsKind = Literal["soft", "hard"]


@dataclass(frozen=True)
class InferenceSettings:
    """The test-time settings of a detector (steps 2-7 of the module doc, plus how the trunk runs); one frozen
    value per detector, changed only by making a copy (:meth:`replace`)."""

    score_thresh: float = 0.001  # (box, class) pairs with score > this are candidates
    nms: NmsKind = "soft"  # per-class NMS: Gaussian soft-NMS (official scripts) or hard NMS
    nms_thresh: float = 0.5  # IoU threshold of hard NMS
    soft_nms_sigma: float = 0.5  # soft-NMS decay exp(-IoU^2 / sigma) (official, no factor 2)
    soft_nms_prune: float = 0.001  # soft-NMS drops candidates whose decayed score is <= this
    max_dets: int = 100  # detections kept per image
    score_fusion: ScoreFusion = "none"  # RPN-score fusion: none | logit (official quirk) | sigmoid
    apply_box_deltas: bool = True  # move proposals by the regressor's deltas (False: zero-shot, GT boxes)
    batched_inference: bool = False  # trunk + RPN on the padded batch (default: per image, exact)

    @classmethod
    def from_config(cls, cfg: Any) -> InferenceSettings:
        """The settings of a (recipe-resolved) :class:`~regionclip.detect.config.DetectorConfig`."""
        values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)}
        missing = [name for name, value in values.items() if value is None]
        if missing:
            raise ValueError(f"inference settings {missing} are unset (resolve the recipe first)")
        return cls(**values)

    def replace(self, **overrides: Any) -> InferenceSettings:
        """A copy with the overrides that are not ``None`` (the keyword settings of ``predict``)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class Detections:
    """Detections of one image, sorted by score (descending).

    boxes: ``[M, 4]`` float, xyxy in pixels of the input image (the ``ImageBatch`` size, before any
    rescaling to the original resolution); scores: ``[M]`` float (soft-NMS scores when soft-NMS is used; with
    ``"logit"`` fusion they can exceed 1); labels: ``[M]`` long, indices into the vocabulary (rows of the
    class embeddings given to ``predict``); region_embeddings: ``[M, D]`` unnormalised embeddings of the
    source regions (the proposal each detection came from); masks: ``[M, m, m]`` mask probabilities in
    box coordinates (m = 14 for RN50) when the detector has a mask head, else ``None``.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    region_embeddings: Tensor
    masks: Tensor | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to(self, device: torch.device | str) -> Detections:
        masks = None if self.masks is None else self.masks.to(device)
        return Detections(
            self.boxes.to(device),
            self.scores.to(device),
            self.labels.to(device),
            self.region_embeddings.to(device),
            masks,
        )


def fuse_scores(probs: Tensor, objectness: Tensor, fusion: ScoreFusion) -> Tensor:
    """Fuse class probabilities ``[R, K+1]`` with RPN objectness logits ``[R]`` (see module docstring).

    ``"logit"`` reproduces the official quirk: ``sqrt(p * o)`` with the raw logit ``o``; NaN rows for o < 0.
    """
    if fusion == "none":
        return probs
    if fusion == "logit":
        return (probs * objectness[:, None]) ** 0.5
    if fusion == "sigmoid":
        return (probs * objectness.sigmoid()[:, None]) ** 0.5
    raise ValueError(f"score fusion: expected 'none', 'logit' or 'sigmoid', got {fusion!r}")


def postprocess_image(
    logits: Tensor,
    pred_boxes: Tensor,
    objectness: Tensor,
    region_embeddings: Tensor,
    image_size: tuple[int, int],
    score_thresh: float = 0.001,
    nms: NmsKind = "soft",
    nms_thresh: float = 0.5,
    soft_nms_sigma: float = 0.5,
    soft_nms_prune: float = 0.001,
    max_dets: int = 100,
    score_fusion: ScoreFusion = "none",
    probs: Tensor | None = None,
) -> Detections:
    """Detections of one image from its R regions.

    logits: ``[R, K+1]`` (background last); pred_boxes: ``[R, 4]`` boxes to report (proposals with or without deltas applied), xyxy input pixels;
    objectness: ``[R]`` raw RPN logits (used by score fusion only); region_embeddings: ``[R, D]``;
    image_size: ``(H, W)`` used to clip the boxes; probs: optional ``[R, K+1]`` class scores used instead of
    ``softmax(logits)`` (the frozen-classifier ensemble, :mod:`regionclip.detect.ensemble`).
    """
    probs = logits.float().softmax(dim=1) if probs is None else probs.float()
    scores = fuse_scores(probs, objectness.float(), score_fusion)
    boxes = clip_boxes(pred_boxes.float(), image_size)
    finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    region_index = torch.nonzero(finite).flatten()
    scores, boxes = scores[finite, :-1], boxes[finite]

    candidates = torch.nonzero(scores > score_thresh)  # [C, 2]: (row, class)
    rows, labels = candidates[:, 0], candidates[:, 1]
    cand_boxes, cand_scores = boxes[rows], scores[rows, labels]
    if nms == "soft":
        keep, cand_scores = batched_soft_nms(
            cand_boxes, cand_scores, labels, soft_nms_sigma, soft_nms_prune, box_ids=rows
        )
    elif nms == "hard":
        keep = batched_nms(cand_boxes, cand_scores, labels, nms_thresh)
        cand_scores = cand_scores[keep]
    else:
        raise ValueError(f"nms: expected 'soft' or 'hard', got {nms!r}")
    # Both NMS variants return indices sorted by score, descending.
    keep, cand_scores = keep[:max_dets], cand_scores[:max_dets]
    source = region_index[rows[keep]]
    return Detections(
        boxes=cand_boxes[keep],
        scores=cand_scores,
        labels=labels[keep],
        region_embeddings=region_embeddings[source],
    )

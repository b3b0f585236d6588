"""Scale-matched pretraining settings (issue 12's plan, docs/world.md "Plan for issue 12").

The official pretraining constants mean something only at the official scale: the pseudo-label τ 0.01 is
OpenAI CLIP's own 1 / logit_scale, the confidence threshold 0.1 is 476x the uniform probability on the
4,764-concept pool. For a teacher and pool of another scale the same roles are kept by rules:

- :func:`teacher_temperature`: τ_PL = 1 / the teacher's learned logit scale;
- :func:`kept_fraction_threshold`: the threshold that keeps a target fraction of regions (the (1 - f)
  quantile of the teacher's top-1 probabilities);
- :func:`loss_gradient_norms` / :func:`dominant_losses`: the gradient norm of each loss on one batch, and
  which loss dominates (a norm more than ``ratio`` times every other's); :func:`balance_loss_weights`
  rescales such a loss (not used by the demo, whose student starts as the teacher, so that its region losses
  start near 0 by construction: docs/world.md).

Pure functions over the pretraining task and tensors; the demo's ``calibrate`` stage gathers the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from regionclip.clip.model import CLIP
from regionclip.pretrain.task import PretrainBatch, PretrainTask, sample_boxes

LOSS_WEIGHT_KEYS = {
    "loss_region_concept": "weight_region_concept",
    "loss_region_distill": "weight_region_distill",
    "loss_image_text": "weight_image_text",
}  # loss name in the task's output -> its LossConfig weight field
# When every other loss's step-0 gradient is below this fraction of one loss's, the rule is not applied: the
# region losses vanish at step 0 by construction (the student starts as the teacher, so the distillation KL is
# at its minimum, and a batch with one distinct pseudo-label makes the region-concept softmax trivial); scaling
# the remaining loss down to their norm would switch it off, which no rule intends (measured 2026-12-01 on the
# version-3 world: image-text 13.8 against 8e-6 and 0).
UNDEFINED_BELOW = 1e-3


def teacher_temperature(model: CLIP) -> float:
    """1 / exp(logit_scale) of ``model``: the temperature of its own image-text softmax (0.01 for OpenAI's)."""
    return float(1.0 / model.logit_scale.detach().float().exp())


def kept_fraction_threshold(top_prob: Tensor, fraction: float) -> float:
    """The teacher confidence threshold that keeps ``fraction`` of the regions.

    top_prob: ``[R]`` the teacher's top-1 pseudo-label probability of each region; fraction in (0, 1].
    Returns the (1 - fraction) quantile, so ``top_prob > threshold`` keeps about ``fraction`` of them.
    """
    if top_prob.numel() == 0:
        raise ValueError("kept_fraction_threshold: no regions")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"kept_fraction_threshold: fraction must be in (0, 1], got {fraction}")
    if fraction >= 1.0:
        return 0.0
    return float(torch.quantile(top_prob.double().flatten(), 1.0 - fraction))


@torch.no_grad()
def teacher_top_probabilities(task: PretrainTask, batch: PretrainBatch) -> Tensor:
    """The teacher's top-1 pseudo-label probability ``[R]`` of the regions ``task`` samples for ``batch``
    (proposals, sampling, τ_PL and pool as in training)."""
    device = task.concepts.device
    images = task._images(batch, device)
    given = None if batch.boxes is None else [b.to(device) for b in batch.boxes]
    proposals = task.proposals(images, given)
    boxes = [p.boxes.to(images.tensor.dtype) for p in proposals]
    boxes = [sample_boxes(b, task.regions_per_image) for b in boxes]
    regions = torch.nn.functional.normalize(task.teacher(images.tensor, boxes).float(), dim=-1)
    concepts = torch.nn.functional.normalize(task.teacher_concepts, dim=-1)
    probs = (regions @ concepts.T / task.pseudo_label_temperature).softmax(dim=-1)
    return probs.max(dim=-1).values.cpu()


def loss_gradient_norms(task: PretrainTask, batch: PretrainBatch) -> dict[str, float]:
    """The L2 norm of each loss's gradient with respect to the student's trainable parameters on ``batch``
    (weights as configured in ``task``; a loss with weight 0 is absent)."""
    task.train()
    params = [p for p in task.student.parameters() if p.requires_grad]
    losses = task(batch).losses
    norms = {}
    for name, loss in losses.items():
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        total = sum(float(g.double().pow(2).sum()) for g in grads if g is not None)
        norms[name] = math.sqrt(total)
    task.zero_grad(set_to_none=True)
    return norms


def dominant_losses(norms: Mapping[str, float], ratio: float = 10.0) -> list[str]:
    """The losses whose gradient norm is more than ``ratio`` times every other loss's (at most one unless
    ``ratio`` < 1), in the order of ``norms``."""
    out = []
    for name, norm in norms.items():
        others = [v for k, v in norms.items() if k != name]
        if others and norm > ratio * max(others):
            out.append(name)
    return out


def balance_loss_weights(
    norms: Mapping[str, float], weights: Mapping[str, float], ratio: float = 10.0
) -> dict[str, float]:
    """The plan's loss-weight rule: weights stay official unless one loss's gradient norm is more than
    ``ratio`` times the largest of the others; then that loss's weight is scaled so that its norm equals that
    largest other norm. norms: loss name -> measured norm (at ``weights``); returns new weights by loss name."""
    out = dict(weights)
    for name, norm in norms.items():
        others = [v for k, v in norms.items() if k != name]
        if not others:
            continue
        largest = max(others)
        if largest < UNDEFINED_BELOW * norm:
            continue  # the other losses vanish at step 0 (see UNDEFINED_BELOW): the comparison is undefined
        if norm > ratio * largest:
            out[name] = weights[name] * largest / norm
    return out

"""The demo's teacher report and calibration stage (issue 12's plan, docs/world.md "Plan for issue 12").

- :func:`stage_calibrate`: the scale-matched pretraining settings, computed once from val and the first train
  images, never from a CLIP-vs-RegionCLIP number: τ_PL = 1 / the teacher's logit scale; the share ``f`` of
  the pretraining regions (RPN proposals of the pretraining preset) that are objects (IoU >= 0.5 to a GT box,
  100 val images); the confidence threshold that keeps ``f`` of the teacher's regions on the first 200 train
  images; the gradient norm of each loss on the first batch (reported; the loss weights stay official).
"""

from __future__ import annotations

import random

import torch
from torchvision.ops import box_iou

from regionclip.clip.checkpoint import load_clip
from regionclip.data.coco import CocoDetection
from regionclip.data.pairs import CocoCaptions, pretrain_transform
from regionclip.data.transforms import detector_test_transform
from regionclip.demo.context import DemoContext, _world_paths
from regionclip.demo.stages import pretrain_config
from regionclip.pretrain.calibration import (
    LOSS_WEIGHT_KEYS,
    dominant_losses,
    kept_fraction_threshold,
    loss_gradient_norms,
    teacher_temperature,
    teacher_top_probabilities,
)
from regionclip.pretrain.task import PretrainBatch, build_pretrain_task
from regionclip.proposals.config import ProposalConfig
from regionclip.proposals.loading import build_proposal_generator
from regionclip.structures import ImageBatch

CALIBRATION_VAL_IMAGES = 100  # val images for the object share f of the pretraining regions
CALIBRATION_TRAIN_IMAGES = 200  # train images whose regions give the threshold quantile
LOSS_RATIO = 10.0  # the loss-weight rule's ratio of gradient norms


@torch.no_grad()
def object_share(ctx: DemoContext, n_images: int = CALIBRATION_VAL_IMAGES) -> dict:
    """The share of the pretraining regions that are objects: RPN proposals of the ``pretraining`` preset on
    the first ``n_images`` val images (at the pretraining resolution) with IoU >= 0.5 to a GT box."""
    paths, size = _world_paths(ctx), ctx.plan.image_size
    proposals = build_proposal_generator(
        ProposalConfig(kind="rpn", rpn_checkpoint=ctx.results["rpn"]["checkpoint"], preset="pretraining")
    ).eval()
    dataset = CocoDetection(
        paths["val_json"], paths["val_images"], None, detector_test_transform(size, 2 * size)
    )
    objects, total = 0, 0
    for index in range(min(n_images, len(dataset))):
        sample = dataset[index]
        boxes = proposals(ImageBatch.from_images([sample.image]), None)[0].boxes
        if boxes.numel() and sample.boxes.numel():
            objects += int((box_iou(boxes, sample.boxes).max(dim=1).values >= 0.5).sum())
        total += int(boxes.shape[0])
    return {
        "images": min(n_images, len(dataset)),
        "regions": total,
        "objects": objects,
        "f": objects / max(1, total),
    }


def _train_batches(ctx: DemoContext, tokenize, n_images: int, batch: int) -> list[PretrainBatch]:
    """The first ``n_images`` train scenes at the pretraining resolution (no flip), one caption each."""
    paths, size = _world_paths(ctx), ctx.plan.image_size
    dataset = CocoCaptions(
        paths["captions_train"], paths["train_images"], transform=pretrain_transform(size, 2 * size, 0.0)
    )
    random.seed(ctx.seed)
    out = []
    for start in range(0, min(n_images, len(dataset)), batch):
        samples = [dataset[i] for i in range(start, min(start + batch, n_images, len(dataset)))]
        out.append(PretrainBatch([s.image for s in samples], tokenize([s.caption for s in samples])))
    return out


def stage_calibrate(ctx: DemoContext) -> dict:
    """τ_PL, the kept-fraction threshold and the loss weights of the plan (see the module doc)."""
    teacher = load_clip(ctx.results["clip"]["checkpoint"])
    tau = teacher_temperature(teacher)
    share = object_share(ctx)
    cfg = pretrain_config(ctx, {"pseudo_label_temperature": tau, "temperature": tau, "threshold": 0.0})
    torch.manual_seed(ctx.seed)
    task = build_pretrain_task(cfg)
    batches = _train_batches(ctx, teacher.tokenize, CALIBRATION_TRAIN_IMAGES, ctx.plan.pretrain_batch)
    top = torch.cat([teacher_top_probabilities(task, b) for b in batches])
    # at least one region's worth kept: a world whose proposals hit no object at all keeps the most confident
    threshold = kept_fraction_threshold(top, max(share["f"], 1.0 / top.numel()))
    # gradient norms on the first batch with the calibrated threshold, at the official weights 1, 1, 1
    task.threshold = threshold
    torch.manual_seed(ctx.seed)
    norms = loss_gradient_norms(task, batches[0])
    # The weights stay official (1, 1, 1) and the norms are reported, saying which loss dominates
    # (experiments.md: "measure the gradient norms at step 0; say so if one dominates"). Rescaling by step-0
    # norms (balance_loss_weights) is not applied: the student starts as the teacher, so both region losses
    # measure its distance from the teacher, near 0 at step 0 by construction (the kept regions are the
    # teacher's most confident), and a rescale would switch the image-text loss off, which the rule never
    # meant (docs/world.md; with the 750-step teacher it would have weighted image-text 0.0012).
    weights = {name: 1.0 for name in LOSS_WEIGHT_KEYS}
    dominant = dominant_losses(norms, LOSS_RATIO)
    return {
        "pseudo_label_temperature": tau,
        "temperature": tau,
        "teacher_logit_scale": 1.0 / tau,
        "object_share": share,
        "threshold": threshold,
        "threshold_regions": int(top.numel()),
        "kept_fraction_at_threshold": float((top > threshold).float().mean()),
        "uniform_probability": 1.0 / task.concepts.shape[0],
        "gradient_norms_step0": norms,
        "loss_weights": {LOSS_WEIGHT_KEYS[k]: v for k, v in weights.items()},
        "loss_weight_rule_applied": False,
        "dominant_losses": dominant,
    }


def _history_fraction(ctx: DemoContext) -> tuple[float, float] | None:
    """Mean kept fraction over the first and the last tenth of the pretraining log (None without a log)."""
    history = [h for h in ctx.results.get("pretrain", {}).get("history", []) if "kept_fraction" in h]
    if not history:
        return None
    tenth = max(1, len(history) // 10)
    first = sum(h["kept_fraction"] for h in history[:tenth]) / tenth
    last = sum(h["kept_fraction"] for h in history[-tenth:]) / tenth
    return first, last


def calibration_markdown(ctx: DemoContext) -> str:
    """The results.md section on the teacher (Fig. 1b in miniature) and the scale-matched settings."""
    clip = ctx.results.get("clip", {}).get("teacher")
    c = ctx.results.get("calibrate")
    if not clip or not c:
        return ""
    zs, i2t = clip["web_val_zero_shot"], clip["scene_image_to_text"]
    region = ctx.results.get("zeroshot", {}).get("models", {}).get("CLIP", {}).get("gt_boxes", {})
    region_top1 = region.get("region_acc_top1", float("nan"))
    share, norms = c["object_share"], c["gradient_norms_step0"]
    kept = _history_fraction(ctx)
    kept_line = (
        f" Kept fraction through pretraining: {100 * kept[0]:.1f}% in the first tenth of the log, "
        f"{100 * kept[1]:.1f}% in the last."
        if kept
        else ""
    )
    dominant = c.get("dominant_losses") or []
    said = (
        f"{', '.join(d.removeprefix('loss_') for d in dominant)} dominates (norm > 10x every other's)"
        if dominant
        else "no loss dominates (none has a norm > 10x every other's)"
    )
    weights = ", ".join(f"{k.removeprefix('weight_')} {v:g}" for k, v in c["loss_weights"].items())
    return f"""## The teacher and the scale-matched plan

**The teacher, like CLIP where it matters (paper Fig. 1b in miniature).** Image-level zero-shot top-1 on the
{zs["images"]} held-out web images (`web_val`, never trained on): **{zs["top1"]:.1f}%**
({zs["top1_single_object"]:.1f}% on the {zs["single_object_images"]} single-object ones); region top-1 on
the GT boxes of the test scenes (the table's first row): **{region_top1:.1f}%**. Its text tower on the scene captions it never saw:
image-to-text top-1 {i2t["top1"]:.1f}% within batches of {i2t["batch"]} val scene pairs (chance
{i2t["chance"]:.1f}%).

**Settings derived from the official ones** (rules in docs/world.md, "Plan for issue 12"; computed once, from
val and the first train images, before any comparison):
- pseudo-label temperature τ_PL = 1 / the teacher's logit scale {c["teacher_logit_scale"]:.2f} =
  **{c["pseudo_label_temperature"]:.4f}** (official 0.01 = 1 / OpenAI CLIP's 100); the student's τ the same;
- confidence threshold **{c["threshold"]:.3f}**: the share of the pretraining regions (RPN proposals of
  the pretraining preset, {share["regions"]} on {share["images"]} val images) that are objects (IoU >= 0.5 to
  a GT box) is f = {100 * share["f"]:.2f}%, and the threshold is the (1 - f) quantile of the teacher's top-1
  probability over the {c["threshold_regions"]} sampled regions of the first train images (official 0.1 =
  476x uniform on 4,764 concepts; here uniform is {c["uniform_probability"]:.4f}).{kept_line}
- loss weights: gradient norms on the first batch: region-concept {norms.get("loss_region_concept", 0):.3g},
  distillation {norms.get("loss_region_distill", 0):.3g}, image-text {norms.get("loss_image_text", 0):.3g};
  {said}. The weights stay official ({weights}): the student starts as the teacher, so the
  region losses start near 0 by construction and step-0 norms cannot say that a region signal is drowned;
- learning rates by the linear scaling rule from the official batch, warm-up as the official fraction of the
  schedule with a floor of 30 steps: pretraining {ctx.plan.pretrain_lr:.3g} (official 0.002 at 96 images),
  detectors {ctx.plan.detector_lr:.3g} (0.002 at 16).
"""

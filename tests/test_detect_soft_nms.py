"""Tests of regionclip.detect.soft_nms: vectorised per-class soft-NMS against the reference loop."""

import math

import pytest
import torch

from regionclip.detect.soft_nms import batched_soft_nms, soft_nms_reference


def _random_boxes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 60 + 1
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g)


def _per_class_reference(boxes, scores, classes):
    out = {}
    for c in classes.unique().tolist():
        idx = torch.nonzero(classes == c).flatten()
        keep, soft = soft_nms_reference(boxes[idx], scores[idx])
        out.update(zip(idx[keep].tolist(), soft.tolist(), strict=True))
    return out


@pytest.mark.parametrize("seed,num_classes", [(0, 7), (1, 7), (2, 7), (3, 1), (4, 2)])
def test_batched_soft_nms_matches_reference_loop(seed, num_classes):
    # one or two classes: long rows, so the periodic re-packing of the candidate grid is exercised
    boxes, scores = _random_boxes(200, seed)
    classes = torch.randint(0, num_classes, (200,), generator=torch.Generator().manual_seed(100 + seed))
    keep, soft = batched_soft_nms(boxes, scores, classes)
    expected = _per_class_reference(boxes, scores, classes)
    assert sorted(keep.tolist()) == sorted(expected)
    for i, s in zip(keep.tolist(), soft.tolist(), strict=True):
        assert abs(s - expected[i]) < 1e-6
    assert torch.all(soft[:-1] >= soft[1:])  # sorted descending


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_soft_nms_with_shared_boxes_matches_reference(seed):
    # Class-agnostic boxes: every region is a candidate of several classes (box_ids = region index).
    boxes, _ = _random_boxes(120, seed)
    g = torch.Generator().manual_seed(200 + seed)
    scores = torch.rand(120, 5, generator=g)
    pairs = torch.nonzero(scores > 0.3)
    rows, classes = pairs[:, 0], pairs[:, 1]
    flat_boxes, flat_scores = boxes[rows], scores[rows, classes]
    keep, soft = batched_soft_nms(flat_boxes, flat_scores, classes, box_ids=rows)
    keep_plain, soft_plain = batched_soft_nms(flat_boxes, flat_scores, classes)
    expected = _per_class_reference(flat_boxes, flat_scores, classes)
    assert sorted(keep.tolist()) == sorted(expected) == sorted(keep_plain.tolist())
    for i, s in zip(keep.tolist(), soft.tolist(), strict=True):
        assert abs(s - expected[i]) < 1e-6


def test_soft_nms_ties_pick_first_in_input_order():
    # Two identical boxes with equal scores: the first one is picked with its full score, the second is
    # decayed by exp(-1 / 0.5) (IoU 1) and picked next; a distant box is untouched.
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
    scores = torch.tensor([0.5, 0.5, 0.3])
    keep, soft = soft_nms_reference(boxes, scores)
    assert keep.tolist() == [0, 2, 1]
    assert soft.tolist() == pytest.approx([0.5, 0.3, 0.5 * math.exp(-2.0)])
    for ids in (None, torch.tensor([0, 0, 1])):
        bkeep, bsoft = batched_soft_nms(boxes, scores, torch.zeros(3, dtype=torch.long), box_ids=ids)
        assert bkeep.tolist() == [0, 2, 1]
        assert torch.allclose(bsoft, soft)


def test_soft_nms_gaussian_has_no_factor_two_and_prunes():
    # Box B overlaps A with IoU 0.5: decay exp(-0.25 / 0.5) (official sigma quirk, not exp(-0.25 / 1)).
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.6, 0.0011])
    keep, soft = soft_nms_reference(boxes, scores)
    assert keep.tolist() == [0, 1]  # the third is decayed below 0.001 (IoU 1) and pruned
    assert soft[1].item() == pytest.approx(0.6 * math.exp(-0.25 / 0.5))
    bkeep, bsoft = batched_soft_nms(boxes, scores, torch.zeros(3, dtype=torch.long))
    assert bkeep.tolist() == [0, 1]
    assert torch.allclose(bsoft, soft)


def test_classes_do_not_interact():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8])
    keep, soft = batched_soft_nms(boxes, scores, torch.tensor([0, 1]))
    assert keep.tolist() == [0, 1]
    assert soft.tolist() == pytest.approx([0.9, 0.8])


def test_soft_nms_empty():
    keep, soft = batched_soft_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert keep.shape == (0,) and soft.shape == (0,)
    keep, soft = soft_nms_reference(torch.zeros(0, 4), torch.zeros(0))
    assert keep.shape == (0,) and soft.shape == (0,)


def _official_global_loop(boxes, scores, classes, sigma=0.5, prune=0.001):
    """The official batched soft-NMS written out: boxes of each class offset apart, ONE greedy loop over all."""
    shifted = boxes + (classes.float() * (float(boxes.max()) + 1.0))[:, None]
    idx, alive_scores, out = torch.arange(len(scores)), scores.clone(), {}
    while alive_scores.numel():
        top = int(torch.argmax(alive_scores))
        out[int(idx[top])] = float(alive_scores[top])
        x1 = torch.maximum(shifted[top, 0], shifted[:, 0])
        y1 = torch.maximum(shifted[top, 1], shifted[:, 1])
        x2 = torch.minimum(shifted[top, 2], shifted[:, 2])
        y2 = torch.minimum(shifted[top, 3], shifted[:, 3])
        inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
        area = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
        iou = inter / (area[top] + area - inter)
        alive_scores = alive_scores * torch.exp(-(iou**2) / sigma)
        keep = alive_scores > prune
        keep[top] = False
        shifted, alive_scores, idx = shifted[keep], alive_scores[keep], idx[keep]
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_soft_nms_with_score_threshold_below_prune_matches_the_official_global_loop(seed):
    # candidates above a 0.0001 score threshold, many of them below the 0.001 prune threshold, and classes
    # whose candidates are ALL below it: the official global loop drops those at its first iteration
    g = torch.Generator().manual_seed(50 + seed)
    boxes, _ = _random_boxes(150, seed)
    classes = torch.randint(0, 12, (150,), generator=g)
    scores = torch.rand(150, generator=g) * 0.002 + 0.0001
    scores[classes < 6] = torch.rand(int((classes < 6).sum()), generator=g) * 0.0008 + 0.0001  # all < prune
    keep, soft = batched_soft_nms(boxes, scores, classes)
    expected = _official_global_loop(boxes, scores, classes)
    assert sorted(keep.tolist()) == sorted(expected)
    for i, s in zip(keep.tolist(), soft.tolist(), strict=True):
        assert abs(s - expected[i]) <= 1e-5 * expected[i]
    assert int((classes[keep] < 6).sum()) <= 1  # at most the global top pick survives from those classes
    # the per-class semantics (option) keeps each such class's top candidate instead
    per_class, _ = batched_soft_nms(boxes, scores, classes, official_prune=False)
    assert len(set(classes[per_class].tolist())) == len(set(classes.tolist()))

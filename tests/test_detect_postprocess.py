"""Tests of regionclip.detect.postprocess: fusion NaN-drop, thresholds, NMS options, top-k."""

import dataclasses
import math

import pytest
import torch

from regionclip.detect.config import DetectorConfig, resolve_recipe
from regionclip.detect.postprocess import InferenceSettings, fuse_scores, postprocess_image


def _logits_for(probs):
    return torch.log(torch.tensor(probs))


def test_fuse_scores_modes():
    probs = torch.tensor([[0.5, 0.5], [0.2, 0.8]])
    obj = torch.tensor([4.0, -1.0])
    logit = fuse_scores(probs, obj, "logit")
    assert logit[0].tolist() == pytest.approx([math.sqrt(2.0), math.sqrt(2.0)])  # can exceed 1
    assert torch.isnan(logit[1]).all()  # negative logit -> NaN row (official quirk)
    sig = fuse_scores(probs, obj, "sigmoid")
    assert sig[1, 0].item() == pytest.approx(math.sqrt(0.2 / (1 + math.e)))
    assert torch.equal(fuse_scores(probs, obj, "none"), probs)


def test_logit_fusion_drops_rows_with_negative_objectness():
    # Two identical well-separated regions; the second has a negative RPN logit and must vanish.
    logits = _logits_for([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    boxes = torch.tensor([[0.0, 0, 10, 10], [30, 30, 40, 40], [60, 60, 70, 70]])
    emb = torch.arange(3.0)[:, None].repeat(1, 4)
    obj = torch.tensor([1.0, -0.5, 4.0])
    det = postprocess_image(
        logits, boxes, obj, emb, (100, 100), score_thresh=0.3, nms="hard", score_fusion="logit"
    )
    assert sorted(set(det.region_embeddings[:, 0].tolist())) == [0.0, 2.0]
    top = det.scores.argmax()
    assert det.labels[top].item() == 1 and det.scores[top].item() == pytest.approx(
        math.sqrt(0.8 * 4.0), rel=1e-5
    )
    none = postprocess_image(
        logits, boxes, obj, emb, (100, 100), score_thresh=0.3, nms="hard", score_fusion="none"
    )
    assert sorted(set(none.region_embeddings[:, 0].tolist())) == [0.0, 1.0, 2.0]


def test_threshold_clip_labels_and_topk():
    logits = _logits_for([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    boxes = torch.tensor([[-5.0, -5, 10, 10], [20, 20, 200, 40]])
    obj = torch.zeros(2)
    emb = torch.randn(2, 4)
    det = postprocess_image(logits, boxes, obj, emb, (50, 60), score_thresh=0.25, nms="soft")
    # candidates (row, class, score): (0, 0, .5), (0, 1, .3), (1, 1, .6); background dropped; disjoint boxes
    assert det.labels.tolist() == [1, 0, 1]
    assert det.scores.tolist() == pytest.approx([0.6, 0.5, 0.3 * math.exp(-(0.0**2) / 0.5)])
    assert det.boxes[0].tolist() == [20.0, 20.0, 60.0, 40.0]  # clipped to W = 60
    assert det.boxes[1].tolist() == [0.0, 0.0, 10.0, 10.0]
    assert torch.equal(det.region_embeddings[0], emb[1])
    top1 = postprocess_image(logits, boxes, obj, emb, (50, 60), score_thresh=0.25, nms="soft", max_dets=1)
    assert len(top1) == 1 and top1.labels.tolist() == [1]


def test_hard_vs_soft_nms_on_overlapping_boxes():
    logits = _logits_for([[0.9, 0.1], [0.8, 0.2]])
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9]])  # IoU 0.9
    obj, emb = torch.zeros(2), torch.zeros(2, 3)
    hard = postprocess_image(logits, boxes, obj, emb, (20, 20), score_thresh=0.5, nms="hard")
    assert len(hard) == 1 and hard.scores.item() == pytest.approx(0.9)
    soft = postprocess_image(logits, boxes, obj, emb, (20, 20), score_thresh=0.5, nms="soft")
    assert len(soft) == 2
    assert soft.scores[1].item() == pytest.approx(0.8 * math.exp(-(0.9**2) / 0.5), rel=1e-5)


def test_no_candidates_gives_empty_detections():
    logits = _logits_for([[0.1, 0.9]])
    det = postprocess_image(
        logits, torch.tensor([[0.0, 0, 5, 5]]), torch.zeros(1), torch.zeros(1, 3), (10, 10), score_thresh=0.5
    )
    assert len(det) == 0 and det.region_embeddings.shape == (0, 3) and det.labels.dtype == torch.long


def test_inference_settings_are_one_frozen_value():
    lvis = InferenceSettings.from_config(resolve_recipe(DetectorConfig(recipe="lvis")))
    assert (lvis.score_thresh, lvis.nms, lvis.max_dets, lvis.score_fusion) == (0.02, "soft", 300, "logit")
    with pytest.raises(dataclasses.FrozenInstanceError):
        lvis.score_thresh = 0.5  # type: ignore[misc]
    changed = lvis.replace(score_thresh=0.5, nms=None)
    assert changed.score_thresh == 0.5 and changed.nms == "soft" and lvis.score_thresh == 0.02
    with pytest.raises(ValueError, match="unset"):
        InferenceSettings.from_config(DetectorConfig())  # recipe not resolved

"""Tests of regionclip.detect.heads and regionclip.detect.sampling."""

import math

import pytest
import torch
import torch.nn.functional as F

from regionclip.detect.heads import BoxRegressor, BoxTransform, MaskHead, TextEmbeddingClassifier
from regionclip.detect.sampling import RoISampler, match_proposals


def test_classifier_background_logit_is_exactly_zero_and_tau():
    torch.manual_seed(0)
    clf = TextEmbeddingClassifier(8, temperature=0.01)
    x, w = torch.randn(5, 8), torch.randn(3, 8) * 7.0  # class embeddings are normalised at use
    logits = clf(x, w)
    assert logits.shape == (5, 4)
    assert torch.all(logits[:, 3] == 0.0)
    cos = F.normalize(x, dim=-1) @ F.normalize(w, dim=-1).t()
    assert torch.allclose(logits[:, :3], cos * 100.0, atol=1e-4)
    assert not clf.background.requires_grad
    assert torch.all(clf.background == 0)


def test_classifier_vocabulary_is_a_call_argument():
    clf = TextEmbeddingClassifier(8)
    x = torch.randn(2, 8)
    assert clf(x, torch.randn(17, 8)).shape == (2, 18)
    assert clf(x, torch.randn(1, 8)).shape == (2, 2)


def test_learnable_background_is_normalised_and_trained():
    torch.manual_seed(0)
    clf = TextEmbeddingClassifier(8, learnable_background=True)
    assert clf.background.requires_grad
    x = torch.randn(4, 8)
    logits = clf(x, torch.randn(2, 8))
    expected = F.normalize(x, dim=-1) @ F.normalize(clf.background.detach(), dim=0) / 0.01
    assert torch.allclose(logits[:, 2], expected, atol=1e-4)
    logits[:, 2].sum().backward()
    assert clf.background.grad.abs().sum() > 0


def test_box_regressor_init():
    torch.manual_seed(0)
    reg = BoxRegressor(256)
    assert torch.all(reg.linear.bias == 0)
    assert reg.linear.weight.std().item() == pytest.approx(0.001, rel=0.1)


def test_box_transform_by_hand_and_round_trip():
    bt = BoxTransform((10.0, 10.0, 5.0, 5.0))
    src = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    dst = torch.tensor([[5.0, 0.0, 25.0, 20.0]])  # centre x 5 -> 15, width 10 -> 20
    deltas = bt.encode(src, dst)
    assert deltas[0].tolist() == pytest.approx([10 * 10 / 10, 0.0, 5 * math.log(2), 0.0])
    assert torch.allclose(bt.decode(deltas, src), dst, atol=1e-5)
    huge = bt.decode(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), src)  # dw clamped at log(1000/16)
    assert huge[0, 2] - huge[0, 0] == pytest.approx(10 * 1000 / 16, rel=1e-4)


def test_mask_head_shape():
    head = MaskHead(32)
    assert head(torch.randn(3, 32, 7, 7)).shape == (3, 14, 14)


def test_match_proposals_threshold_and_empty_gt():
    props = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 4], [50, 50, 60, 60]])
    gt = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 61]])
    # IoUs with gt0: 1, 0.5 (>= 0.5 is fg), 0.4 (bg); props[3] with gt1: 100/110.
    assert match_proposals(props, gt).tolist() == [0, 0, -1, 1]
    assert match_proposals(props, torch.zeros(0, 4)).tolist() == [-1, -1, -1, -1]


def test_sampler_appends_gt_and_balances():
    torch.manual_seed(0)
    sampler = RoISampler(rois_per_image=8, positive_fraction=0.25)
    gt = torch.tensor([[0.0, 0, 10, 10]])
    props = torch.cat([gt.repeat(5, 1), torch.tensor([[50.0, 50, 60, 60]]).repeat(20, 1)])
    rois = sampler([props], [gt], [torch.tensor([2])], num_classes=3)
    assert rois.boxes[0].shape == (8, 4)
    assert int((rois.labels == 2).sum()) == 2 and int((rois.labels == 3).sum()) == 6
    fg = rois.labels < 3
    assert torch.equal(rois.gt_boxes[fg], gt.repeat(2, 1))
    # zero GT and zero proposals: nothing sampled; zero GT with proposals: all background
    empty = sampler([torch.zeros(0, 4)], [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)], 3)
    assert empty.labels.numel() == 0
    only_bg = sampler([props[:3]], [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)], 3)
    assert only_bg.labels.tolist() == [3, 3, 3]
    # GT is appended: with no proposals at all, the GT box itself is a foreground RoI
    gt_only = sampler([torch.zeros(0, 4)], [gt], [torch.tensor([1])], 3)
    assert gt_only.labels.tolist() == [1]

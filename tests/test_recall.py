"""Tests of COCO-style proposal recall: greedy one-to-one covering IoUs and AR@K, checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from regionclip.eval.recall import IOU_THRESHOLDS, ProposalRecall, covering_overlaps, format_recall_table


def test_iou_thresholds_are_coco_proposal_thresholds():
    assert IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_covering_overlaps_by_hand():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    props = torch.tensor([[0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 8.0]])  # IoU 0.5 and 0.8
    assert covering_overlaps(props, gt).tolist() == pytest.approx([0.8])
    assert covering_overlaps(props[:1], gt).tolist() == pytest.approx([0.5])
    assert covering_overlaps(torch.zeros(0, 4), gt).tolist() == [0.0]
    assert covering_overlaps(props, torch.zeros(0, 4)).shape == (0,)


def test_one_proposal_covers_only_one_gt():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0]])
    props = torch.tensor([[0.0, 0.0, 10.0, 10.0]])  # IoU 1.0 with the first, 0.9 with the second
    assert covering_overlaps(props, gt).tolist() == pytest.approx([1.0, 0.0])
    # greedy: the GT with the best remaining IoU takes its proposal first
    props2 = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])
    assert covering_overlaps(props2, gt).tolist() == pytest.approx([1.0, 5.0 / 9.0])


def test_average_recall_by_hand_with_limits_and_objectness_order():
    evaluator = ProposalRecall(limits=[1, 2])
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    props = torch.tensor([[0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 10.0]])
    # the exact box has the higher objectness, so it is the top-1 proposal despite coming second
    evaluator.process(props, torch.tensor([0.1, 2.0]), gt, torch.tensor([0]))
    # second image: one GT, covered at IoU 0.5 only
    evaluator.process(props[:1], None, gt, torch.tensor([0]))
    res = evaluator.evaluate()["all"]
    assert res["num_gt"] == 2
    # image 1: IoU 1 -> recalled at every threshold; image 2: IoU 0.5 -> only at 0.5
    assert res["AR@1"] == pytest.approx((1.0 + 0.1) / 2)
    assert res["R@1@0.5"] == pytest.approx(1.0)
    assert res["R@1@0.75"] == pytest.approx(0.5)
    assert res["AR@2"] == pytest.approx(res["AR@1"])


def test_groups_and_empty_groups():
    evaluator = ProposalRecall(limits=[10], groups={"base": {0}, "novel": {1}, "none": {7}})
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    evaluator.process(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), None, gt, torch.tensor([0, 1]))
    res = evaluator.evaluate()
    assert res["base"]["AR@10"] == pytest.approx(1.0)
    assert res["novel"]["AR@10"] == pytest.approx(0.0)
    assert res["all"]["AR@10"] == pytest.approx(0.5)
    assert res["none"]["num_gt"] == 0 and math.isnan(res["none"]["AR@10"])
    table = format_recall_table(res)
    assert "base" in table and "novel" in table and "50.0" in table and "-" in table


def test_no_proposals_gives_zero_recall():
    evaluator = ProposalRecall(limits=[100])
    evaluator.process(
        torch.zeros(0, 4), torch.zeros(0), torch.tensor([[0.0, 0.0, 5.0, 5.0]]), torch.tensor([3])
    )
    assert evaluator.evaluate()["all"]["AR@100"] == 0.0
    evaluator.reset()
    assert evaluator.num_images == 0

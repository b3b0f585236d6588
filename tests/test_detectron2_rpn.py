"""Tests of the detectron2-layout RPNs (regionclip.proposals.detectron2): anchors, decoding, input conversion,
parameter layout and the proposal selection."""

from __future__ import annotations

import math

import pytest
import torch

from regionclip.proposals.detectron2 import (
    Detectron2RPNConfig,
    apply_deltas,
    build_detectron2_rpn,
    cell_anchors,
    grid_anchors,
    to_detectron2_input,
)
from regionclip.structures import ImageBatch

MICRO = dict(width=8, stage_blocks=(1, 1, 1, 1), fpn_channels=16)


def test_cell_anchors_are_detectron2s_unrounded_boxes():
    a = cell_anchors((32.0, 64.0), (0.5, 1.0, 2.0))
    assert a.shape == (6, 4)
    w = math.sqrt(32.0**2 / 0.5)  # 45.2548..., torchvision would round it to 45
    assert torch.allclose(a[0], torch.tensor([-w / 2, -0.5 * w / 2, w / 2, 0.5 * w / 2]))
    assert torch.equal(a[1], torch.tensor([-16.0, -16.0, 16.0, 16.0]))
    assert torch.equal(a[4], torch.tensor([-32.0, -32.0, 32.0, 32.0]))  # size-major order
    assert a[0, 2].item() != round(a[0, 2].item())


def test_grid_anchors_location_major_offset_zero():
    cell = torch.tensor([[-1.0, -1.0, 1.0, 1.0], [-2.0, -2.0, 2.0, 2.0]])
    g = grid_anchors(cell, stride=16, height=2, width=3)
    assert g.shape == (12, 4)
    assert torch.equal(g[0], cell[0]) and torch.equal(g[1], cell[1])
    assert torch.equal(g[2], cell[0] + torch.tensor([16.0, 0, 16, 0]))  # next cell along x
    assert torch.equal(g[6], cell[0] + torch.tensor([0.0, 16, 0, 16]))  # first cell of the second row


def test_apply_deltas():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    assert torch.equal(apply_deltas(torch.zeros(1, 4), anchors), anchors)
    out = apply_deltas(torch.tensor([[0.1, -0.5, math.log(2.0), 0.0]]), anchors)
    assert torch.allclose(out, torch.tensor([[-4.0, -10.0, 16.0, 10.0]]))  # centre (6, 0), size 20 x 20
    huge = apply_deltas(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), anchors)
    assert torch.isfinite(huge).all()  # dw, dh clamped at log(1000/16)
    assert torch.allclose(huge[0, 2] - huge[0, 0], torch.tensor(10.0 * 1000 / 16))


def test_detectron2_input_is_bgr_255_minus_mean_zero_padded():
    red = torch.zeros(3, 4, 5)
    red[0] = 1.0
    batch = ImageBatch.from_images([red, torch.zeros(3, 6, 3)])
    x = to_detectron2_input(batch, size_divisibility=0)
    assert x.shape == (2, 3, 6, 5)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([-103.53, -116.28, 255.0 - 123.675]), atol=1e-3)
    assert torch.equal(x[0, :, 4:], torch.zeros(3, 2, 5))  # padding is zero after normalisation
    assert torch.equal(x[1, :, :, 3:], torch.zeros(3, 6, 2))
    assert to_detectron2_input(batch, size_divisibility=32).shape == (2, 3, 32, 32)


def test_parameter_layout_of_official_architectures():
    with torch.device("meta"):
        c4 = build_detectron2_rpn(Detectron2RPNConfig()).state_dict()
        fpn = build_detectron2_rpn(Detectron2RPNConfig(arch="R50-FPN")).state_dict()
    assert tuple(c4["backbone.res4.5.conv3.norm.running_var"].shape) == (1024,)
    assert tuple(c4["backbone.res2.0.conv1.weight"].shape) == (64, 64, 1, 1)
    assert tuple(c4["rpn_head.objectness_logits.weight"].shape) == (15, 1024, 1, 1)
    assert tuple(c4["rpn_head.anchor_deltas.weight"].shape) == (60, 1024, 1, 1)
    assert not any(k.startswith("backbone.res5") for k in c4)
    assert tuple(fpn["backbone.bottom_up.res5.0.shortcut.weight"].shape) == (2048, 1024, 1, 1)
    assert tuple(fpn["backbone.fpn_lateral5.weight"].shape) == (256, 2048, 1, 1)
    assert tuple(fpn["rpn_head.objectness_logits.weight"].shape) == (3, 256, 1, 1)
    assert not any("cell_anchors" in k for k in fpn)  # anchors are not saved (detectron2: non-persistent)


def test_stride_in_1x1_conv():
    rpn = build_detectron2_rpn(Detectron2RPNConfig(**MICRO))
    block = rpn.backbone.res3[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1) and block.shortcut.stride == (2, 2)


@pytest.mark.parametrize("arch", ["R50-C4", "R50-FPN"])
def test_proposals_inside_image_sorted_and_capped(arch):
    torch.manual_seed(0)
    rpn = build_detectron2_rpn(Detectron2RPNConfig(arch=arch, post_nms_topk=20, **MICRO))
    batch = ImageBatch.from_images([torch.rand(3, 50, 70), torch.rand(3, 40, 30)])
    props = rpn(batch)
    assert len(props) == 2
    for p, (h, w) in zip(props, batch.image_sizes, strict=True):
        assert 0 < len(p) <= 20
        assert (p.boxes[:, 2] <= w).all() and (p.boxes[:, 3] <= h).all() and (p.boxes >= 0).all()
        assert ((p.boxes[:, 2] - p.boxes[:, 0]) > 0).all()
        assert (p.objectness[:-1] >= p.objectness[1:]).all()


def test_lsj_variant_and_fpn_level_count():
    rpn = build_detectron2_rpn(Detectron2RPNConfig(arch="R50-FPN", fpn_norm=True, head_convs=2, **MICRO))
    feats = rpn.backbone(torch.zeros(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2, 1]  # P2..P6, P6 = stride-2 max-pool of P5
    assert "rpn_head.conv.conv1.weight" in rpn.state_dict()
    assert "backbone.fpn_output3.norm.running_mean" in rpn.state_dict()
    with pytest.raises(ValueError, match="one anchor size per level"):
        build_detectron2_rpn(Detectron2RPNConfig(arch="R50-FPN", anchor_sizes=(32.0,), **MICRO))

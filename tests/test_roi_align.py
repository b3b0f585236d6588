"""RoIAlign as a matrix product (regionclip.roi_align) against torchvision's roi_align, forward and backward."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from regionclip.roi_align import MAX_WEIGHT_ELEMENTS, roi_align_auto, roi_align_matmul, roi_align_weights


def _boxes(generator: torch.Generator, n: int, size: float) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * size * 1.1 - 0.05 * size  # some start outside the map
    wh = torch.rand(n, 2, generator=generator) * size * 0.8 + 1.0
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("sampling_ratio,aligned", [(0, True), (2, False)])
def test_matmul_equals_torchvision_forward_and_backward(sampling_ratio, aligned):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(3, 5, 7, 9, generator=g)
    boxes = [_boxes(g, 4, 120.0), _boxes(g, 0, 120.0), _boxes(g, 6, 120.0)]  # an image without boxes
    a = features.clone().requires_grad_()
    b = features.clone().requires_grad_()
    ref = roi_align(a, boxes, 4, 1 / 16, sampling_ratio, aligned)
    out = roi_align_matmul(b, boxes, 4, 1 / 16, sampling_ratio, aligned)
    assert out.shape == ref.shape == (10, 5, 4, 4)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    upstream = torch.randn(ref.shape, generator=g)
    (ref * upstream).sum().backward()
    (out * upstream).sum().backward()
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-5)


def test_weights_sum_to_one_inside_the_map():
    weights = roi_align_weights(8, 8, torch.tensor([[16.0, 16.0, 96.0, 80.0]]), 3, 1 / 16, 0, True)
    assert weights.shape == (1, 64, 3, 3)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(1, 3, 3))  # bilinear weights of inside samples


def test_auto_uses_matmul_only_when_training_on_small_maps(monkeypatch):
    calls = []
    monkeypatch.setattr("regionclip.roi_align.roi_align_matmul", lambda *a, **k: calls.append("matmul") or 0)
    features = torch.randn(1, 2, 4, 4)
    boxes = [torch.tensor([[0.0, 0.0, 32.0, 32.0]])]
    roi_align_auto(features, boxes, 2, 1 / 16)  # no gradient needed: torchvision
    assert calls == []
    roi_align_auto(features.requires_grad_(), boxes, 2, 1 / 16)
    assert calls == ["matmul"]
    with torch.no_grad():
        roi_align_auto(features, boxes, 2, 1 / 16)
    big = torch.randn(1, 1, 64, 64, requires_grad=True)
    many = [torch.tensor([[0.0, 0.0, 512.0, 512.0]]).repeat(MAX_WEIGHT_ELEMENTS // (64 * 64 * 4) + 1, 1)]
    roi_align_auto(big, many, 2, 1 / 16)  # weights over the bound: torchvision
    assert calls == ["matmul"]

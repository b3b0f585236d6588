"""RoIAlign as a matrix product, for training on a CPU (same numbers as ``torchvision.ops.roi_align``).

RoIAlign is linear in the feature map: each output cell is a fixed weighted sum of feature-map pixels (the
bilinear weights of its sampling points, averaged). Running torchvision's ``roi_align`` on a *basis* map
with one channel per pixel (channel ``j`` is 1 at pixel ``j``, 0 elsewhere) returns exactly those weights,
``[R, H*W, r, r]``; the pooled features of image ``i`` are then one matrix product of its ``[C, H*W]`` map
with its RoIs' weights. The backward pass is another matrix product, where torchvision's CPU
``roi_align`` backward scatters sample by sample on one thread (measured in the miniature-world detector
step: 200 ms of a 1.2 s step, for 256 RoIs of 6x6 on 512-channel 10x10 maps).

:func:`roi_align_auto` uses the product when autograd needs the features' gradient on a CPU and the weights
stay small (:data:`MAX_WEIGHT_ELEMENTS`); elsewhere (a GPU, inference, large maps such as RN50 at 800 px)
it calls torchvision. The two agree to float rounding (sums in another order), forward and backward.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align

MAX_WEIGHT_ELEMENTS = 1 << 24  # R x H*W x r x r weights of the matrix form at most (64 MB in fp32)


def roi_align_weights(
    height: int,
    width: int,
    boxes: Tensor,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The RoIAlign weights ``[R, H*W, r, r]`` of ``boxes`` ``[R, 4]`` (xyxy input pixels) on an ``H x W`` map.

    Entry ``[k, j, y, x]`` is the weight of pixel ``j`` (row-major) in output cell ``(y, x)`` of box ``k``.
    """
    pixels = height * width
    basis = torch.eye(pixels, dtype=dtype, device=boxes.device).view(1, pixels, height, width)
    return roi_align(basis, [boxes.to(dtype)], output_size, spatial_scale, sampling_ratio, aligned)


def roi_align_matmul(
    features: Tensor,
    boxes: list[Tensor],
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> Tensor:
    """``torchvision.ops.roi_align(features, boxes, ...)`` computed as one matrix product per image.

    features: ``[B, C, H, W]``; boxes: one ``[N_i, 4]`` tensor (xyxy input pixels) per image. Returns
    ``[sum N_i, C, r, r]`` in the order of ``boxes``.
    """
    b, c, h, w = features.shape
    if len(boxes) != b:
        raise ValueError(f"roi_align_matmul: {len(boxes)} box tensors for a batch of {b} feature maps")
    r = output_size
    outs = []
    for i, image_boxes in enumerate(boxes):
        if image_boxes.shape[0] == 0:
            outs.append(features.new_zeros((0, c, r, r)))
            continue
        weights = roi_align_weights(
            h, w, image_boxes, r, spatial_scale, sampling_ratio, aligned, features.dtype
        )
        pooled = features[i].reshape(c, h * w) @ weights.permute(1, 0, 2, 3).reshape(h * w, -1)  # [C, N*r*r]
        outs.append(pooled.view(c, -1, r, r).transpose(0, 1))
    return torch.cat(outs).contiguous()


def roi_align_auto(
    features: Tensor,
    boxes: list[Tensor],
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> Tensor:
    """RoIAlign by :func:`roi_align_matmul` when training on a CPU with small weights, else torchvision's."""
    _, _, h, w = features.shape
    num_boxes = sum(int(bx.shape[0]) for bx in boxes)
    use_matmul = (
        features.device.type == "cpu"
        and torch.is_grad_enabled()
        and features.requires_grad
        and num_boxes * h * w * output_size * output_size <= MAX_WEIGHT_ELEMENTS
    )
    if use_matmul:
        return roi_align_matmul(features, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    return roi_align(features, boxes, output_size, spatial_scale, sampling_ratio, aligned)

"""Conventions and small containers shared by every stage.

Boxes: every box in regionclip is ``(x1, y1, x2, y2)`` in pixels of the (resized) input image, as a float
tensor of shape ``[N, 4]``, unless its name says otherwise (``boxes_xywh`` for COCO JSON, ``*_norm`` for
[0, 1] coordinates). A batch of boxes is a ``list[Tensor[N_i, 4]]``, one tensor per image; region
embeddings of such a batch are concatenated in the same order (``[sum N_i, D]``).

Images: a single image is a float tensor ``[3, H, W]`` with RGB values in [0, 1]. ``ImageBatch`` holds a
batch normalised with the CLIP mean and std and zero-padded bottom/right to the largest size (padding after
normalisation, as the official code does), with each image's size before padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# CLIP's pixel statistics (RGB, values in [0, 1]); the one place they are defined.
CLIP_PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize_image(image: Tensor) -> Tensor:
    """CLIP normalisation of ``image`` ``[..., 3, H, W]`` (RGB in [0, 1], or uint8 in [0, 255])."""
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    mean = torch.tensor(CLIP_PIXEL_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(CLIP_PIXEL_STD, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image - mean) / std


@dataclass
class ImageBatch:
    """A padded batch of CLIP-normalised images.

    tensor: ``[B, 3, H_pad, W_pad]`` float, zero padding bottom/right (after normalisation).
    image_sizes: ``[(H_i, W_i)]`` of each image before padding.
    """

    tensor: Tensor
    image_sizes: list[tuple[int, int]]

    @classmethod
    def from_images(cls, images: list[Tensor], size_divisibility: int = 0) -> ImageBatch:
        """Normalise and pad ``images`` (each ``[3, H_i, W_i]``, RGB in [0, 1] or uint8)."""
        if len(images) == 0:
            raise ValueError("ImageBatch.from_images: got no images")
        normed = [normalize_image(img) for img in images]
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in normed]
        max_h = max(h for h, _ in sizes)
        max_w = max(w for _, w in sizes)
        if size_divisibility > 1:
            max_h = (max_h + size_divisibility - 1) // size_divisibility * size_divisibility
            max_w = (max_w + size_divisibility - 1) // size_divisibility * size_divisibility
        tensor = normed[0].new_zeros((len(normed), 3, max_h, max_w))
        for i, img in enumerate(normed):
            tensor[i, :, : img.shape[-2], : img.shape[-1]] = img
        return cls(tensor, sizes)

    def to(self, device: torch.device | str) -> ImageBatch:
        return ImageBatch(self.tensor.to(device), list(self.image_sizes))

    def __len__(self) -> int:
        return self.tensor.shape[0]


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip ``boxes`` ``[N, 4]`` (xyxy) to an image of ``size`` ``(H, W)``."""
    h, w = size
    x1 = boxes[:, 0].clamp(0, w)
    y1 = boxes[:, 1].clamp(0, h)
    x2 = boxes[:, 2].clamp(0, w)
    y2 = boxes[:, 3].clamp(0, h)
    return torch.stack([x1, y1, x2, y2], dim=1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``boxes`` ``[N, 4]`` (xyxy); zero for degenerate boxes."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def xywh_to_xyxy(boxes_xywh: Tensor) -> Tensor:
    """COCO ``(x, y, w, h)`` ``[N, 4]`` to ``(x1, y1, x2, y2)``."""
    x, y, w, h = boxes_xywh.unbind(-1)
    return torch.stack([x, y, x + w, y + h], dim=-1)


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``(x1, y1, x2, y2)`` ``[N, 4]`` to COCO ``(x, y, w, h)``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x1, y1, x2 - x1, y2 - y1], dim=-1)


@dataclass
class StepOutput:
    """What a training task's ``forward(batch)`` returns.

    losses: named scalar tensors ``loss_*`` (the loop sums them and back-propagates the sum);
    metrics: named floats for logging only (no gradients).
    """

    losses: dict[str, Tensor]
    metrics: dict[str, float]

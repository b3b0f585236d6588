"""Detection transforms on ``(PIL image, boxes)`` pairs (method reference §6.4, §6.5, §11 item 9).

``ResizeShortestEdge`` follows detectron2's transform of the same name: the short side is drawn from
``short_sizes``, the long side is capped at ``max_size``, and the new size is rounded with ``int(x + 0.5)``;
the image is resized with PIL (bilinear for the detector, bicubic for pretraining). Boxes are
``Tensor[N, 4]`` xyxy in pixels of the image they come with and are scaled with it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

import torch
from PIL import Image
from torch import Tensor

_PIL_INTERPOLATION = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def shortest_edge_size(height: int, width: int, short_size: int, max_size: int) -> tuple[int, int]:
    """New ``(H, W)``: short side ``short_size``, long side at most ``max_size``, rounded ``int(x + 0.5)``."""
    scale = short_size / min(height, width)
    if height < width:
        new_h, new_w = float(short_size), scale * width
    else:
        new_h, new_w = scale * height, float(short_size)
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def scale_boxes(boxes: Tensor, sy: float, sx: float) -> Tensor:
    """Multiply x coordinates of ``boxes`` ``[N, 4]`` (xyxy) by ``sx`` and y coordinates by ``sy``."""
    factors = torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype, device=boxes.device)
    return boxes * factors


class ResizeShortestEdge:
    """Resize so the short side is one of ``short_sizes`` (long side capped at ``max_size``).

    sample: ``"choice"`` draws one of ``short_sizes``; ``"range"`` draws an integer in
    ``[min(short_sizes), max(short_sizes)]``. A single size (test time, 800/1333) is deterministic.
    """

    def __init__(
        self,
        short_sizes: int | Sequence[int],
        max_size: int,
        interpolation: Literal["bilinear", "bicubic"] = "bilinear",
        sample: Literal["choice", "range"] = "choice",
    ):
        sizes = (short_sizes,) if isinstance(short_sizes, int) else tuple(int(s) for s in short_sizes)
        if not sizes or min(sizes) <= 0:
            raise ValueError(
                f"ResizeShortestEdge: short_sizes must be positive integers, got {short_sizes!r}"
            )
        if interpolation not in _PIL_INTERPOLATION:
            raise ValueError(
                f"ResizeShortestEdge: interpolation must be bilinear or bicubic, got {interpolation!r}"
            )
        if sample not in ("choice", "range"):
            raise ValueError(f"ResizeShortestEdge: sample must be 'choice' or 'range', got {sample!r}")
        self.short_sizes = sizes
        self.max_size = int(max_size)
        self.interpolation = interpolation
        self.sample = sample

    def draw_size(self, rng: random.Random | None = None) -> int:
        rng = rng or random
        if len(self.short_sizes) == 1:
            return self.short_sizes[0]
        if self.sample == "choice":
            return self.short_sizes[rng.randrange(len(self.short_sizes))]
        return rng.randint(min(self.short_sizes), max(self.short_sizes))

    def __call__(
        self, image: Image.Image, boxes: Tensor, rng: random.Random | None = None
    ) -> tuple[Image.Image, Tensor]:
        width, height = image.size
        new_h, new_w = shortest_edge_size(height, width, self.draw_size(rng), self.max_size)
        if (new_h, new_w) != (height, width):
            image = image.resize((new_w, new_h), _PIL_INTERPOLATION[self.interpolation])
        return image, scale_boxes(boxes, new_h / height, new_w / width)

    def __repr__(self) -> str:
        return (
            f"ResizeShortestEdge(short_sizes={self.short_sizes}, max_size={self.max_size}, "
            f"interpolation={self.interpolation!r}, sample={self.sample!r})"
        )


class RandomHorizontalFlip:
    """Mirror the image left-right with probability ``p``; boxes become ``(W - x2, y1, W - x1, y2)``."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(
        self, image: Image.Image, boxes: Tensor, rng: random.Random | None = None
    ) -> tuple[Image.Image, Tensor]:
        rng = rng or random
        if self.p <= 0.0 or (self.p < 1.0 and rng.random() >= self.p):
            return image, boxes
        width = image.size[0]
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        flipped = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        return image, flipped

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Apply ``transforms`` in order to an ``(image, boxes)`` pair."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(
        self, image: Image.Image, boxes: Tensor, rng: random.Random | None = None
    ) -> tuple[Image.Image, Tensor]:
        for t in self.transforms:
            image, boxes = t(image, boxes, rng)
        return image, boxes

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def detector_train_transform(
    short_sizes: Sequence[int] = tuple(range(640, 801, 32)), max_size: int = 1333, flip_p: float = 0.5
) -> Compose:
    """The detector's training augmentation (§6.4): short side in {640, 672, ..., 800}, max 1333, flip."""
    return Compose(
        [ResizeShortestEdge(short_sizes, max_size, "bilinear", "choice"), RandomHorizontalFlip(flip_p)]
    )


def detector_test_transform(
    short_size: int = 800, max_size: int = 1333, interpolation: Literal["bilinear", "bicubic"] = "bilinear"
) -> Compose:
    """The detector's test resize (§6.5): short side 800, max 1333, PIL bilinear (or a checkpoint's recorded
    ``interpolation``), no flip."""
    return Compose([ResizeShortestEdge((short_size,), max_size, interpolation)])


class ResizeSquare:
    """Resize the shorter side to ``size`` and centre-crop to ``size x size`` (CLIP's image-level input)."""

    def __init__(self, size: int, interpolation: str = "bicubic"):
        self.size = size
        self.resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]

    def __call__(
        self, image: Image.Image, boxes: Tensor, rng: random.Random | None = None
    ) -> tuple[Image.Image, Tensor]:
        width, height = image.size
        scale = self.size / min(width, height)
        new_w, new_h = max(self.size, round(width * scale)), max(self.size, round(height * scale))
        image = image.resize((new_w, new_h), self.resample)
        left, top = (new_w - self.size) // 2, (new_h - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        boxes = scale_boxes(boxes, new_h / height, new_w / width) - boxes.new_tensor([left, top, left, top])
        return image, boxes

    def __repr__(self) -> str:
        return f"ResizeSquare({self.size})"

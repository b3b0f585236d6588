"""The proposal interface shared by the RPN, random boxes and given boxes.

A proposal generator maps an :class:`~regionclip.structures.ImageBatch` to one :class:`Proposals` per image:
boxes in xyxy input pixels (inside each image's unpadded size) with an objectness score each. Generators
used by later stages are frozen and always run in eval mode (the official "offline" RPN).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from regionclip.structures import ImageBatch, clip_boxes


@dataclass
class Proposals:
    """Proposals of one image.

    boxes: ``[N, 4]`` float, xyxy input pixels; objectness: ``[N]`` float, the RPN's raw objectness *logit*
    (official: the value that RPN-score fusion uses), zeros for random or given boxes.
    """

    boxes: Tensor
    objectness: Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to(self, device: torch.device | str) -> Proposals:
        return Proposals(self.boxes.to(device), self.objectness.to(device))


class ProposalGenerator(nn.Module):
    """Base class: ``forward(images, given_boxes=None) -> list[Proposals]``, one per image."""

    def forward(self, images: ImageBatch, given_boxes: list[Tensor] | None = None) -> list[Proposals]:
        raise NotImplementedError


class GivenBoxes(ProposalGenerator):
    """Proposals are boxes given with the images (ground truth or the user's), clipped to each image."""

    def forward(self, images: ImageBatch, given_boxes: list[Tensor] | None = None) -> list[Proposals]:
        if given_boxes is None or len(given_boxes) != len(images):
            got = "none" if given_boxes is None else f"{len(given_boxes)}"
            raise ValueError(f"GivenBoxes: expected one box tensor per image ({len(images)}), got {got}")
        out = []
        for boxes, size in zip(given_boxes, images.image_sizes, strict=True):
            boxes = clip_boxes(boxes.to(images.tensor.device, torch.float32).reshape(-1, 4), size)
            out.append(Proposals(boxes, boxes.new_zeros(boxes.shape[0])))
        return out


class TopProposals(ProposalGenerator):
    """The first ``k`` proposals of another generator's (objectness-sorted) output per image.

    For evaluating with fewer proposals than the RPN preset keeps (e.g. 300 instead of the official 1000),
    where the region head's cost, linear in the number of proposals, matters (CPU runs).
    """

    def __init__(self, generator: ProposalGenerator, k: int):
        super().__init__()
        if k < 1:
            raise ValueError(f"TopProposals: k must be >= 1, got {k}")
        self.generator = generator
        self.k = k

    def forward(self, images: ImageBatch, given_boxes: list[Tensor] | None = None) -> list[Proposals]:
        out = self.generator(images, given_boxes)
        return [Proposals(p.boxes[: self.k], p.objectness[: self.k]) for p in out]

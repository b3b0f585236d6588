"""Random regions: the paper's region-type ablation (method reference §4.1, §2.7, ``CROP_REGION_TYPE="RANDOM"``).

Two distributions (``style``):

``official`` (default, the official ``create_rand_boxes``): one set of ``count`` boxes for the whole batch,
drawn on the *padded* batch size ``(H_pad, W_pad)``: the top-left corner is uniform over the ``grid``-px
cells (``x1 = grid * k``, with room for ``min_size`` to its right and below), the bottom-right corner is
uniform (continuous) in ``[x1 + min_size, W_pad] x [y1 + min_size, H_pad]``. A side's mean is about a
quarter of the padded side. Boxes may reach into the padding of the smaller images, as in the official code.

``lattice`` (the earlier variant, an option): each box has its corners on a ``grid``-pixel lattice (official: 8 px) of the image, the image's right and
bottom edges included, lies inside the image's *unpadded* size, and has both sides >= ``min_size`` (clamped
to the image's own size for images smaller than that). Every image gets its own boxes; with
``same_for_batch`` one set is drawn for the whole batch inside the smallest image of the batch.

Boxes come from the generator's own ``torch.Generator``
seeded with ``seed`` (two generators with the same seed give the same sequence of boxes), or from torch's
global RNG when ``seed`` is None. Objectness is zero.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from regionclip.proposals.base import ProposalGenerator, Proposals
from regionclip.structures import ImageBatch

_MAX_ROUNDS = 64


def _axis_points(length: int, grid: int) -> Tensor:
    """Lattice coordinates ``0, grid, 2*grid, ...`` below ``length``, plus ``length`` itself."""
    points = torch.arange(0, length, grid, dtype=torch.float32)
    return torch.cat([points, torch.tensor([float(length)])]).unique()


def _random_spans(length: int, grid: int, min_size: float, count: int, gen: torch.Generator | None) -> Tensor:
    """``count`` spans ``[lo, hi]`` ``[count, 2]`` on the lattice of ``[0, length]`` with ``hi - lo >= min_size``."""
    points = _axis_points(length, grid)
    min_size = min(min_size, float(points[-1] - points[0]))
    spans = torch.empty((0, 2))
    for _ in range(_MAX_ROUNDS):
        idx = torch.randint(0, len(points), (2 * count, 2), generator=gen)
        pair = points[idx].sort(dim=1).values
        ok = (pair[:, 1] - pair[:, 0] >= min_size) & (pair[:, 1] > pair[:, 0])
        spans = torch.cat([spans, pair[ok]])[:count]
        if spans.shape[0] == count:
            return spans
    # Practically unreachable (needs a lattice where almost no span is long enough): fill with full spans.
    full = torch.tensor([[points[0], points[-1]]]).expand(count - spans.shape[0], 2)
    return torch.cat([spans, full])


def _official_spans(
    length: int, grid: int, min_size: float, count: int, gen: torch.Generator | None
) -> Tensor:
    """``count`` spans ``[lo, hi]`` ``[count, 2]``: ``lo`` uniform on the ``grid`` cells with ``lo + min_size <=
    length``, ``hi`` uniform in ``[lo + min_size, length]`` (the whole ``[0, length]`` when it is shorter)."""
    if length < min_size:
        return torch.tensor([[0.0, float(length)]]).expand(count, 2).clone()
    cells = int((length - min_size) // grid) + 1
    lo = torch.randint(0, cells, (count,), generator=gen).float() * grid
    hi = lo + min_size + torch.rand(count, generator=gen) * (length - lo - min_size)
    return torch.stack([lo, hi], dim=1)


class RandomBoxes(ProposalGenerator):
    """``count`` random boxes per image (see the module doc); ``forward`` ignores ``given_boxes``."""

    def __init__(
        self,
        count: int = 100,
        min_size: float = 8.0,
        grid: int = 8,
        same_for_batch: bool = False,
        seed: int | None = 0,
        style: Literal["official", "lattice"] = "official",
    ):
        super().__init__()
        if style not in ("official", "lattice"):
            raise ValueError(f"RandomBoxes: style must be 'official' or 'lattice', got {style!r}")
        if count < 0 or grid < 1 or min_size < 0:
            raise ValueError(
                f"RandomBoxes: need count >= 0, grid >= 1, min_size >= 0 (got {count}, {grid}, {min_size})"
            )
        self.count = count
        self.min_size = float(min_size)
        self.grid = grid
        self.same_for_batch = same_for_batch
        self.style = style
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def sample(self, size: tuple[int, int]) -> Tensor:
        """``[count, 4]`` random boxes (xyxy pixels, float32, CPU) inside a ``size`` ``(H, W)`` image (``style``)."""
        h, w = size
        if self.style == "official":
            xs = _official_spans(w, self.grid, self.min_size, self.count, self.generator)
            ys = _official_spans(h, self.grid, self.min_size, self.count, self.generator)
            return torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], dim=1)
        xs = _random_spans(w, self.grid, self.min_size, self.count, self.generator)
        ys = _random_spans(h, self.grid, self.min_size, self.count, self.generator)
        return torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], dim=1)

    def forward(self, images: ImageBatch, given_boxes: list[Tensor] | None = None) -> list[Proposals]:
        device = images.tensor.device
        if self.style == "official":
            shared = self.sample(tuple(images.tensor.shape[-2:])).to(device)  # the padded size
            boxes = [shared.clone() for _ in images.image_sizes]
        elif self.same_for_batch:
            smallest = (min(h for h, _ in images.image_sizes), min(w for _, w in images.image_sizes))
            shared = self.sample(smallest).to(device)
            boxes = [shared.clone() for _ in images.image_sizes]
        else:
            boxes = [self.sample(size).to(device) for size in images.image_sizes]
        return [Proposals(b, b.new_zeros(b.shape[0])) for b in boxes]

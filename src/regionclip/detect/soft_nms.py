"""Per-class Gaussian soft-NMS, vectorised over classes (method reference §6.5, §11 item 11).

Official semantics (detectron2 fork, Gaussian mode), for the candidates of one class:

    while candidates remain:
        pick the candidate with the highest current score (ties: the first in input order);
        output it with its current score;
        multiply every candidate's score by  d = exp(-IoU(picked, candidate)^2 / sigma)   (sigma = 0.5,
            note: NO factor 2, an official quirk);
        remove the picked one and every candidate whose score is now <= prune (0.001).

The official code runs all classes at once through the coordinate-offset trick, one Python iteration per
*output box over all classes* (65 000 iterations for 1000 boxes x 65 classes, ~80 s on a CPU).
:func:`batched_soft_nms` here pads the candidates into a ``[C, L]`` grid (one row per class, input order
kept inside a class) and runs the loop above for all classes at once: one iteration per pick *rank*
(at most ``L``, the largest class), each a handful of ``[C, L]`` tensor ops (the IoU of every class's
picked box with its own candidates). No Python loop over boxes or classes.

Equivalence with the official batched run: classes never interact (offset boxes have IoU exactly 0, so the
decay is exactly 1), so the kept set and scores are the same per class, with one corner reproduced
explicitly: the official global loop prunes every class's candidates already scoring <= prune at its first
iteration (all but the global top pick), while a per-class loop would keep each class's top one until its
own first pick. This matters when the score threshold is below the prune threshold (e.g. 0.0001 < 0.001):
:func:`batched_soft_nms` removes those candidates first (``official_prune=True``, default), which makes it
equal to the official global run; ``official_prune=False`` gives the per-class semantics. The output is sorted by soft score, descending (ties: by class, then pick order), which is
the official pick order up to ties between classes.

:func:`soft_nms_reference` is the straightforward single-class loop, kept for tests and the benchmark.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou


def soft_nms_reference(
    boxes: Tensor, scores: Tensor, sigma: float = 0.5, prune: float = 0.001
) -> tuple[Tensor, Tensor]:
    """Single-class Gaussian soft-NMS as a plain loop (one Python iteration per picked box).

    boxes: ``[N, 4]`` xyxy; scores: ``[N]``. Returns ``(keep, soft_scores)``: ``keep`` ``[M]`` long indices
    into the input in pick order, ``soft_scores`` ``[M]`` their scores when picked (non-increasing).
    Ties pick the lowest input index (``torch.argmax`` returns the first maximum; order is preserved).
    """
    idx = torch.arange(boxes.shape[0], device=boxes.device)
    boxes, scores = boxes.clone(), scores.clone()
    keep, kept_scores = [], []
    while scores.numel() > 0:
        top = int(torch.argmax(scores))
        keep.append(int(idx[top]))
        kept_scores.append(scores[top].clone())
        iou = box_iou(boxes[top : top + 1], boxes)[0]
        scores = scores * torch.exp(-(iou**2) / sigma)
        alive = scores > prune
        alive[top] = False
        boxes, scores, idx = boxes[alive], scores[alive], idx[alive]
    keep_t = torch.tensor(keep, dtype=torch.long, device=boxes.device)
    scores_t = torch.stack(kept_scores) if kept_scores else boxes.new_zeros((0,))
    return keep_t, scores_t


def _pairwise_iou_rows(picked: Tensor, boxes: Tensor) -> Tensor:
    """IoU of ``picked`` ``[C, 4]`` with each row's boxes ``boxes`` ``[C, L, 4]`` -> ``[C, L]``."""
    p = picked[:, None, :]
    lt = torch.maximum(p[..., :2], boxes[..., :2])
    rb = torch.minimum(p[..., 2:], boxes[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_p = (p[..., 2] - p[..., 0]) * (p[..., 3] - p[..., 1])
    area_b = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return inter / (area_p + area_b - inter)


def batched_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    sigma: float = 0.5,
    prune: float = 0.001,
    box_ids: Tensor | None = None,
    official_prune: bool = True,
) -> tuple[Tensor, Tensor]:
    """Gaussian soft-NMS applied independently per category, all categories at once.

    boxes: ``[N, 4]`` xyxy; scores: ``[N]``; idxs: ``[N]`` long category of each box; box_ids: optional
    ``[N]`` long in ``0..U-1``, equal for identical boxes (class-agnostic boxes: the region index). With
    ``box_ids`` the ``[U, U]`` decay matrix is computed once and each step is a gather; without it, each
    step computes the IoU of every category's pick with its candidates. Returns ``(keep, soft_scores)``:
    ``keep`` ``[M]`` long indices into the input and ``soft_scores`` ``[M]`` the decayed scores, sorted by
    soft score descending (ties: pick rank, then category). Per category, the kept set and scores equal
    :func:`soft_nms_reference` on that category's boxes (after the official first prune, see the module doc;
    ``official_prune=False`` skips it).
    """
    n = boxes.shape[0]
    device = boxes.device
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=device), scores.new_zeros((0,))
    if official_prune and bool((scores <= prune).any()):
        survive = scores > prune
        survive[torch.argmax(scores)] = True  # the official first pick is output whatever its score
        source = torch.nonzero(survive).flatten()
        keep, soft = batched_soft_nms(
            boxes[source],
            scores[source],
            idxs[source],
            sigma,
            prune,
            None if box_ids is None else box_ids[source],
            official_prune=False,
        )
        return source[keep], soft
    # Group by category, keeping input order inside a category (stable sort), into a padded [C, L] grid.
    order = torch.sort(idxs, stable=True).indices
    _, counts = torch.unique_consecutive(idxs[order], return_counts=True)
    num_cats, width = counts.shape[0], int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    row = torch.repeat_interleave(torch.arange(num_cats, device=device), counts)
    col = torch.arange(n, device=device) - starts[row]
    grid_scores = scores.new_zeros((num_cats, width))
    grid_scores[row, col] = scores[order]
    grid_index = torch.zeros((num_cats, width), dtype=torch.long, device=device)
    grid_index[row, col] = order
    alive = torch.zeros((num_cats, width), dtype=torch.bool, device=device)
    alive[row, col] = True

    grid: dict[str, Tensor] = {"scores": grid_scores, "index": grid_index, "alive": alive}
    if box_ids is not None:
        unique_ids, inverse = torch.unique(box_ids, return_inverse=True)
        corners = torch.zeros((unique_ids.shape[0], 4), dtype=boxes.dtype, device=device)
        corners[inverse] = boxes
        decay_matrix = torch.exp(-(box_iou(corners, corners) ** 2) / sigma).to(scores.dtype)
        grid["ids"] = torch.zeros((num_cats, width), dtype=torch.long, device=device)
        grid["ids"][row, col] = inverse[order]
    else:
        grid["boxes"] = boxes.new_zeros((num_cats, width, 4))
        grid["boxes"][row, col] = boxes[order]

    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=device)
    picks, pick_scores = [], []
    for step in range(width):
        if step % _COMPACT_EVERY == 0 and step > 0:
            grid = _compact(grid)
        alive, grid_scores = grid["alive"], grid["scores"]
        has = alive.any(dim=1)
        if not bool(has.any()):
            break
        rows = torch.arange(alive.shape[0], device=device)
        best_score, best = torch.where(alive, grid_scores, neg_inf).max(dim=1)  # first maximum on ties
        picks.append(grid["index"][rows, best][has])
        pick_scores.append(best_score[has])
        if box_ids is not None:
            ids = grid["ids"]
            decay = decay_matrix[ids[rows, best][:, None], ids]
        else:
            iou = _pairwise_iou_rows(grid["boxes"][rows, best], grid["boxes"])
            decay = torch.exp(-(iou**2) / sigma).to(scores.dtype)
        grid["scores"] = grid_scores * decay
        alive = alive & (grid["scores"] > prune)
        alive[rows, best] = False
        grid["alive"] = alive
    keep, soft = torch.cat(picks), torch.cat(pick_scores)
    sort = torch.sort(soft, descending=True, stable=True).indices
    return keep[sort], soft[sort]


_COMPACT_EVERY = 16  # steps between re-packings of the candidate grid


def _compact(grid: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop dead candidates: keep rows with any alive entry and pack alive entries left (order kept)."""
    alive = grid["alive"]
    counts = alive.sum(dim=1)
    width = int(counts.max()) if counts.numel() else 0
    if width > 0.75 * alive.shape[1] and bool((counts > 0).all()):
        return grid
    live_rows = torch.nonzero(counts > 0).flatten()
    cols = torch.sort((~alive[live_rows]).to(torch.uint8), dim=1, stable=True).indices[:, :width]
    rows = live_rows[:, None]
    return {key: value[rows, cols] for key, value in grid.items()}

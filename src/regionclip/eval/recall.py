"""Proposal recall: COCO-style average recall AR@K of region proposals (method reference §6.1; the
detectron2 / Detectron ``evaluate_box_proposals`` protocol).

Per image, the top-K proposals (by decreasing objectness; ties keep their order) are matched one-to-one to
the ground-truth boxes greedily: repeatedly the GT box whose best remaining IoU is the largest takes that
proposal, and both leave the pool. Each GT box so gets one "covering" IoU (0 when unmatched). Recall at an
IoU threshold t is the fraction of GT boxes (over the whole set) with covering IoU >= t; AR@K is the mean
recall over t = 0.50, 0.55, ..., 0.95. Crowd boxes are excluded from the GT. Results are reported for all
GT boxes and for category groups (e.g. the base and novel classes of an open-vocabulary split).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
DEFAULT_LIMITS = (100, 300, 1000)


def covering_overlaps(proposals: Tensor, gt_boxes: Tensor) -> Tensor:
    """Covering IoU ``[G]`` of each GT box under greedy one-to-one matching with ``proposals`` ``[P, 4]``."""
    g = gt_boxes.shape[0]
    covered = torch.zeros(g, dtype=torch.float64)
    if g == 0 or proposals.shape[0] == 0:
        return covered
    iou = box_iou(proposals.double().cpu(), gt_boxes.double().cpu())  # [P, G]
    for _ in range(min(proposals.shape[0], g)):
        best_iou, best_prop = iou.max(dim=0)  # best remaining proposal per GT
        gt_idx = int(best_iou.argmax())
        if best_iou[gt_idx] < 0:
            break
        covered[gt_idx] = best_iou[gt_idx]
        iou[best_prop[gt_idx], :] = -1.0
        iou[:, gt_idx] = -1.0
    return covered


class ProposalRecall:
    """Accumulates covering IoUs over images: ``reset() / process(...) / evaluate()``.

    limits: the K of AR@K; groups: name -> category ids (e.g. ``{"base": {...}, "novel": {...}}``);
    the group ``all`` (every non-crowd GT box) is always reported.
    """

    def __init__(
        self,
        limits: Sequence[int] = DEFAULT_LIMITS,
        groups: Mapping[str, set[int]] | None = None,
        thresholds: Sequence[float] = IOU_THRESHOLDS,
    ):
        self.limits = tuple(int(k) for k in limits)
        self.groups = {name: set(ids) for name, ids in (groups or {}).items()}
        self.thresholds = tuple(float(t) for t in thresholds)
        self.reset()

    def reset(self) -> None:
        self._overlaps: dict[int, list[Tensor]] = {k: [] for k in self.limits}
        self._labels: list[Tensor] = []
        self.num_images = 0

    def process(
        self, proposal_boxes: Tensor, objectness: Tensor | None, gt_boxes: Tensor, gt_labels: Tensor
    ) -> None:
        """One image: proposals ``[P, 4]`` (+ ``[P]`` scores or None), non-crowd GT ``[G, 4]`` and labels ``[G]``."""
        proposal_boxes = proposal_boxes.detach().reshape(-1, 4).cpu()
        if objectness is not None and proposal_boxes.shape[0] > 0:
            order = torch.sort(objectness.detach().cpu().float(), descending=True, stable=True).indices
            proposal_boxes = proposal_boxes[order]
        gt_boxes = gt_boxes.detach().reshape(-1, 4).cpu()
        for k in self.limits:
            self._overlaps[k].append(covering_overlaps(proposal_boxes[:k], gt_boxes))
        self._labels.append(gt_labels.detach().reshape(-1).cpu().long())
        self.num_images += 1

    def evaluate(self) -> dict[str, dict[str, float]]:
        """``{group: {"AR@K": .., "R@K@0.5": .., "R@K@0.75": .., "num_gt": ..}}`` (recalls in [0, 1])."""
        labels = torch.cat(self._labels) if self._labels else torch.zeros(0, dtype=torch.long)
        masks = {"all": torch.ones_like(labels, dtype=torch.bool)}
        for name, ids in self.groups.items():
            masks[name] = torch.tensor([int(x) in ids for x in labels.tolist()], dtype=torch.bool)
        thresholds = torch.tensor(self.thresholds, dtype=torch.float64)
        results: dict[str, dict[str, float]] = {}
        for name, mask in masks.items():
            row: dict[str, float] = {"num_gt": int(mask.sum())}
            for k in self.limits:
                overlaps = (
                    torch.cat(self._overlaps[k]) if self._overlaps[k] else torch.zeros(0, dtype=torch.float64)
                )
                sel = overlaps[mask]
                if sel.numel() == 0:
                    recalls = torch.full_like(thresholds, float("nan"))
                else:
                    # a tiny tolerance so that an IoU that is exactly t in real numbers counts at t
                    recalls = (sel[None, :] >= thresholds[:, None] - 1e-9).double().mean(dim=1)
                row[f"AR@{k}"] = float(recalls.mean())
                for t in (0.5, 0.75):
                    if t in self.thresholds:
                        row[f"R@{k}@{t}"] = float(recalls[self.thresholds.index(t)])
            results[name] = row
        return results


def format_recall_table(results: dict[str, dict[str, float]]) -> str:
    """A plain-text table of :meth:`ProposalRecall.evaluate` results, recalls in percent."""
    columns = [c for c in next(iter(results.values())) if c != "num_gt"] + ["num_gt"]
    header = ["split"] + columns
    rows = []
    for name, row in results.items():
        cells = [name]
        for c in columns:
            v = row[c]
            cells.append(str(int(v)) if c == "num_gt" else ("-" if v != v else f"{100 * v:.1f}"))
        rows.append(cells)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)

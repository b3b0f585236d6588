"""COCO box evaluation with faster-coco-eval, and the OVD AP50 by split (method reference §6.5-6.6).

``evaluate_detections`` gives the 12 standard COCO box metrics and, when an :class:`OvdSplit` is given, the
official OVD numbers: for a class subset, the mean of COCOeval's precision array at IoU 0.5, area "all" and
the largest maxDets (100), over the entries > -1 (classes without GT contribute nothing). Keys
``AP50_novel`` / ``AP50_base`` / ``AP50_all``, with the official names ``AP50_split_target`` /
``AP50_split_base`` / ``AP50_split_all`` as aliases. All metrics are percentages (0-100) as in COCO tables;
a metric with no GT (COCO's -1) is NaN.

Detections are any objects with ``boxes`` ``[M, 4]`` (xyxy), ``scores`` ``[M]`` and ``labels`` ``[M]`` (indices
into ``class_ids``), e.g. the detector's ``Detections``. Boxes are taken as original-image pixels unless
``scales`` gives each image's ``(sy, sx)`` (resized / original), in which case they are divided by it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regionclip.data.coco import load_coco_instances, validate_instances
from regionclip.data.ovd import OvdSplit
from regionclip.errors import DataError, RegionCLIPError
from regionclip.io import atomic_write_json

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
SPLIT_ALIASES = {
    "AP50_novel": "AP50_split_target",
    "AP50_base": "AP50_split_base",
    "AP50_all": "AP50_split_all",
}


def _field(det: Any, name: str) -> torch.Tensor:
    value = det[name] if isinstance(det, Mapping) else getattr(det, name)
    return torch.as_tensor(value).detach().cpu()


def detections_to_coco_results(
    detections_per_image: Mapping[int, Any],
    class_ids: Sequence[int],
    scales: Mapping[int, tuple[float, float]] | None = None,
) -> list[dict]:
    """COCO results entries ``{image_id, category_id, bbox: [x, y, w, h], score}`` in original-image pixels.

    class_ids: COCO category id of each label index. scales: per image ``(sy, sx)`` to undo (None: boxes are
    already in original pixels).
    """
    class_ids = [int(c) for c in class_ids]
    results = []
    for image_id, det in detections_per_image.items():
        boxes = _field(det, "boxes").double().reshape(-1, 4)
        scores = _field(det, "scores").double().reshape(-1)
        labels = _field(det, "labels").long().reshape(-1)
        if not (len(boxes) == len(scores) == len(labels)):
            raise RegionCLIPError(
                f"detections of image {image_id}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(class_ids)):
            raise RegionCLIPError(
                f"detections of image {image_id}: label {int(labels.max())} outside the vocabulary of "
                f"{len(class_ids)} classes (class_ids has one category id per label)"
            )
        image_key = image_id if isinstance(image_id, str) else int(image_id)  # numpy ints are not JSON
        if scales is not None:
            sy, sx = scales[image_id]
            boxes = boxes / torch.tensor([sx, sy, sx, sy], dtype=torch.float64)
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
        for box, score, label in zip(xywh.tolist(), scores.tolist(), labels.tolist(), strict=True):
            results.append(
                {"image_id": image_key, "category_id": class_ids[label], "bbox": box, "score": float(score)}
            )
    return results


def write_coco_results(
    detections_per_image: Mapping[int, Any],
    path: str | Path,
    class_ids: Sequence[int],
    scales: Mapping[int, tuple[float, float]] | None = None,
) -> Path:
    """Write a COCO results JSON (boxes in original-image pixels, xywh), atomically."""
    results = detections_to_coco_results(detections_per_image, class_ids, scales)
    for r in results:
        r["bbox"] = [round(v, 3) for v in r["bbox"]]
    return atomic_write_json(path, results, indent=None)


def _percent(x: float) -> float:
    return float(x) * 100.0 if x >= 0 else math.nan


def ap50_of_classes(precision: np.ndarray, cat_ids: Sequence[int], subset: Sequence[int]) -> float:
    """The official split AP50 (fraction): mean of ``precision[0, :, k, 0, -1]`` over entries > -1 for the
    classes ``k`` whose category id is in ``subset``; NaN if none has GT.

    precision: COCOeval's ``eval["precision"]`` ``[T, R, K, A, M]``; cat_ids: its K category ids in order.
    """
    wanted = set(int(c) for c in subset)
    cols = [k for k, c in enumerate(cat_ids) if int(c) in wanted]
    values = precision[0, :, cols, 0, -1]
    values = values[values > -1]
    return float(values.mean()) if values.size else math.nan


def _load_gt(gt_json_or_dict: str | Path | dict) -> tuple[dict, str]:
    if isinstance(gt_json_or_dict, dict):
        source = "<ground-truth dict>"
        return copy.deepcopy(validate_instances(gt_json_or_dict, source)), source
    return load_coco_instances(gt_json_or_dict), str(gt_json_or_dict)


def evaluate_detections(
    gt_json_or_dict: str | Path | dict,
    detections_per_image: Mapping[int, Any],
    class_ids: Sequence[int],
    split: OvdSplit | None = None,
    max_dets: int = 100,
    scales: Mapping[int, tuple[float, float]] | None = None,
) -> dict[str, float]:
    """COCO box metrics (percent) of ``detections_per_image`` against a COCO instances file or dict.

    class_ids: category id of each label index of the evaluated vocabulary. split: adds AP50 per split
    (and aliases); its names must be categories of the GT. max_dets: the largest maxDets (COCO 100).
    Images of the GT without an entry count as images with no detections. Also returns ``AP50/<name>``
    per category with GT. Every GT category is evaluated: for the novel-only protocol (17-class vocabulary)
    evaluate against the novel-only file (``ovd_ins_val2017_t.json``), or read ``AP50_novel``.
    """
    from faster_coco_eval import COCO, COCOeval_faster

    data, source = _load_gt(gt_json_or_dict)
    gt_image_ids = {img["id"] for img in data["images"]}
    extra = [i for i in detections_per_image if i not in gt_image_ids]
    if extra:
        raise DataError(f"{source}: detections for image ids {extra[:5]} that are not in the ground truth")
    known_cats = {c["id"] for c in data["categories"]}
    bad = [c for c in class_ids if int(c) not in known_cats]
    if bad:
        raise DataError(f"{source}: class_ids {bad[:5]} are not category ids of the ground truth")
    results = detections_to_coco_results(detections_per_image, class_ids, scales)

    gt = COCO(data)
    dt = gt.loadRes(results)
    coco_eval = COCOeval_faster(gt, dt, "bbox")
    coco_eval.params.maxDets = [1, 10, int(max_dets)]
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    metrics = {name: _percent(v) for name, v in zip(COCO_STAT_NAMES, coco_eval.stats[:12], strict=True)}

    precision = np.asarray(coco_eval.eval["precision"])
    cat_ids = [int(c) for c in coco_eval.params.catIds]
    name_of = {c["id"]: c["name"] for c in data["categories"]}
    for cid in cat_ids:
        value = ap50_of_classes(precision, cat_ids, [cid])
        if not math.isnan(value):
            metrics[f"AP50/{name_of[cid]}"] = value * 100.0
    if split is not None:
        split.check_names(list(name_of.values()), source)
        id_of = {n: i for i, n in name_of.items()}
        for key, names in (("AP50_novel", split.novel), ("AP50_base", split.base), ("AP50_all", split.names)):
            value = ap50_of_classes(precision, cat_ids, [id_of[n] for n in names]) * 100.0
            metrics[key] = value
            metrics[SPLIT_ALIASES[key]] = value
    return metrics

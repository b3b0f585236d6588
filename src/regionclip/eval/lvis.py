"""LVIS box evaluation through the official LVIS API (method reference §6.6): AP, AP50, AP75, APs/m/l and
APr (rare = novel), APc, APf, with at most 300 detections per image. Metrics are percentages (0-100).

The ``lvis`` package (0.5.3) uses ``np.float``, removed in numpy 2, and imports cv2 and matplotlib; it is
imported only when evaluating, after restoring ``np.float = float``.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from regionclip.data.coco import read_json
from regionclip.errors import DataError, RegionCLIPError
from regionclip.eval.coco import detections_to_coco_results

LVIS_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def _import_lvis():
    if not hasattr(np, "float"):
        np.float = float  # the LVIS API still uses the alias removed in numpy 1.24
    try:
        from lvis import LVIS, LVISEval, LVISResults
    except ImportError as err:
        raise RegionCLIPError(
            f"LVIS evaluation needs the official LVIS API: pip install 'regionclip[lvis]' ({err})"
        ) from None
    return LVIS, LVISEval, LVISResults


def _percent(x: float) -> float:
    return float(x) * 100.0 if x >= 0 else math.nan


def evaluate_lvis(
    gt_json_or_dict: str | Path | dict,
    detections_per_image: Mapping[int, Any],
    class_ids: Sequence[int],
    max_dets: int = 300,
    scales: Mapping[int, tuple[float, float]] | None = None,
) -> dict[str, float]:
    """LVIS box metrics (percent) of the detections against an LVIS v1 annotation file or dict.

    class_ids: LVIS category id of each label index (for the 1203-class vocabulary: the ids in order).
    scales: per image ``(sy, sx)`` to undo, or None when boxes are in original pixels.
    """
    LVIS, LVISEval, LVISResults = _import_lvis()
    data = copy.deepcopy(gt_json_or_dict) if isinstance(gt_json_or_dict, dict) else read_json(gt_json_or_dict)
    source = "<LVIS dict>" if isinstance(gt_json_or_dict, dict) else str(gt_json_or_dict)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DataError(
            f"{source}: not an LVIS annotation file (needs images, annotations, categories lists)"
        )
    gt_ids = {img["id"] for img in data["images"]}
    extra = [i for i in detections_per_image if i not in gt_ids]
    if extra:
        raise DataError(f"{source}: detections for image ids {extra[:5]} that are not in the ground truth")
    cat_ids = {c["id"] for c in data["categories"]}
    bad = [c for c in class_ids if int(c) not in cat_ids]
    if bad:
        raise DataError(f"{source}: class_ids {bad[:5]} are not category ids of the ground truth")
    results = detections_to_coco_results(detections_per_image, class_ids, scales)
    if not results:
        return {name: 0.0 for name in LVIS_METRICS}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gt.json"
        path.write_text(json.dumps(data))
        lvis_gt = LVIS(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # lvis calls logger.warn
        lvis_dt = LVISResults(lvis_gt, results, max_dets=int(max_dets))
        lvis_eval = LVISEval(lvis_gt, lvis_dt, iou_type="bbox")
        lvis_eval.params.max_dets = int(max_dets)
        lvis_eval.run()
    return {name: _percent(lvis_eval.results[name]) for name in LVIS_METRICS}

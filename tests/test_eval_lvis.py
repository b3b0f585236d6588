"""Tests of the LVIS evaluator against the official LVIS API on a tiny fabricated LVIS v1 set."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from regionclip.errors import DataError
from regionclip.eval.lvis import LVIS_METRICS, evaluate_lvis

# r, c, f categories (ids not contiguous, as in LVIS after filtering)
CATS = [
    {"id": 1, "name": "aa", "frequency": "f", "synonyms": ["aa"]},
    {"id": 3, "name": "bb", "frequency": "r", "synonyms": ["bb"]},
    {"id": 4, "name": "cc", "frequency": "c", "synonyms": ["cc"]},
    {"id": 8, "name": "dd", "frequency": "r", "synonyms": ["dd"]},
]
CLASS_IDS = [1, 3, 4, 8]


def _gt():
    g = torch.Generator().manual_seed(0)
    images, anns = [], []
    for i in range(1, 9):
        images.append(
            {"id": i, "width": 160, "height": 120, "neg_category_ids": [8] if i == 1 else [],
             "not_exhaustive_category_ids": [], "coco_url": f"http://x/val2017/{i}.jpg"}
        )  # fmt: skip
        for k in range(2):
            cat = CLASS_IDS[(i + k) % 4]
            x, y = torch.randint(0, 60, (2,), generator=g).tolist()
            w, h = torch.randint(10, 50, (2,), generator=g).tolist()
            poly = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            anns.append(
                {"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": [x, y, w, h], "area": w * h,
                 "segmentation": poly}
            )  # fmt: skip
    return {"images": images, "annotations": anns, "categories": CATS}


def _dets(gt, keep=lambda c: True, jitter=0.0, seed=0, scale=1.0, n_extra=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for img in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"] and keep(a["category_id"])]
        boxes = (
            torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
            .float()
            .reshape(-1, 4)
        )
        boxes = boxes + torch.randn(boxes.shape, generator=g) * jitter
        labels = torch.tensor([CLASS_IDS.index(a["category_id"]) for a in anns], dtype=torch.long)
        n = len(anns)
        extra = torch.rand(n_extra, 4, generator=g) * 60
        extra[:, 2:] += extra[:, :2] + 5
        out[img["id"]] = {
            "boxes": torch.cat([boxes, extra]) * scale,
            "scores": torch.cat([torch.linspace(0.9, 0.6, n), torch.rand(n_extra, generator=g)]),
            "labels": torch.cat([labels, torch.randint(0, 4, (n_extra,), generator=g)]),
        }
    return out


def _direct(gt, dets, tmp_path):
    """The LVIS API run by hand on the same detections."""
    if not hasattr(np, "float"):
        np.float = float
    from lvis import LVIS, LVISEval, LVISResults

    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    lvis_gt = LVIS(str(path))
    results = []
    for i, d in dets.items():
        for b, s, lab in zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist(), strict=True):
            results.append(
                {
                    "image_id": i,
                    "category_id": CLASS_IDS[lab],
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "score": s,
                }
            )
    e = LVISEval(lvis_gt, LVISResults(lvis_gt, results, max_dets=300), "bbox")
    e.run()
    return {k: float(e.results[k]) * 100 if e.results[k] >= 0 else math.nan for k in LVIS_METRICS}


def test_lvis_metrics_match_the_api(tmp_path):
    gt = _gt()
    dets = _dets(gt, jitter=6.0, seed=1, n_extra=2)
    m = evaluate_lvis(gt, dets, CLASS_IDS)
    ref = _direct(gt, dets, tmp_path)
    for k in LVIS_METRICS:
        assert m[k] == pytest.approx(ref[k], abs=1e-9, nan_ok=True), k
    assert 0.0 < m["AP"] < 100.0


def test_lvis_perfect_and_without_rare(tmp_path):
    gt = _gt()
    m = evaluate_lvis(gt, _dets(gt), CLASS_IDS)
    assert m["AP"] == pytest.approx(100.0, abs=1e-6) and m["APr"] == pytest.approx(100.0, abs=1e-6)
    m = evaluate_lvis(gt, _dets(gt, keep=lambda c: c in (1, 4)), CLASS_IDS)
    assert m["APr"] == 0.0
    assert m["APf"] == pytest.approx(100.0, abs=1e-6) and m["APc"] == pytest.approx(100.0, abs=1e-6)


def test_lvis_scales_and_errors(tmp_path):
    gt = _gt()
    scales = {img["id"]: (2.0, 2.0) for img in gt["images"]}
    m = evaluate_lvis(gt, _dets(gt, scale=2.0), CLASS_IDS, scales=scales)
    assert m["AP"] == pytest.approx(100.0, abs=1e-6)
    assert evaluate_lvis(gt, {}, CLASS_IDS)["AP"] == 0.0
    with pytest.raises(DataError, match="image ids"):
        evaluate_lvis(gt, {123: _dets(gt)[1]}, CLASS_IDS)
    with pytest.raises(DataError, match="class_ids"):
        evaluate_lvis(gt, _dets(gt), [1, 3, 4, 99])
    path = tmp_path / "lvis_val.json"
    path.write_text(json.dumps(gt))
    assert math.isclose(evaluate_lvis(path, _dets(gt), CLASS_IDS)["APf"], 100.0, abs_tol=1e-6)

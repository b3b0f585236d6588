"""Tests of the COCO evaluator, the OVD AP50 by split, the results writer and the recorded protocol."""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from regionclip.data.ovd import OvdSplit
from regionclip.errors import DataError, RegionCLIPError
from regionclip.eval.coco import COCO_STAT_NAMES, evaluate_detections, write_coco_results
from regionclip.eval.protocol import Protocol, write_results

CATS = [
    {"id": 2, "name": "cat"},
    {"id": 5, "name": "dog"},
    {"id": 7, "name": "kite"},
    {"id": 9, "name": "cup"},
]
CLASS_IDS = [2, 5, 7, 9]
SPLIT = OvdSplit(["cat", "kite"], ["dog", "cup"])


@dataclass
class Dets:
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def _gt(n_images=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images, anns = [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 160})
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            x, y = torch.randint(0, 100, (2,), generator=g).tolist()
            w, h = torch.randint(8, 90, (2,), generator=g).tolist()
            cat = CLASS_IDS[int(torch.randint(0, 4, (1,), generator=g))]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    return {"images": images, "annotations": anns, "categories": CATS}


def _perfect(gt, keep=lambda cat: True, scale=(1.0, 1.0)):
    dets = {}
    for img in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"] and keep(a["category_id"])]
        boxes = torch.tensor(
            [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=torch.float32
        )
        boxes = boxes.reshape(-1, 4) * torch.tensor([scale[1], scale[0], scale[1], scale[0]])
        labels = torch.tensor([CLASS_IDS.index(a["category_id"]) for a in anns], dtype=torch.long)
        dets[img["id"]] = Dets(boxes, torch.linspace(0.9, 0.5, len(anns)), labels)
    return dets


def _jittered(gt, seed=1):
    g = torch.Generator().manual_seed(seed)
    dets = _perfect(gt)
    out = {}
    for i, d in dets.items():
        n = len(d.labels)
        boxes = torch.cat([d.boxes + torch.randn(n, 4, generator=g) * 8, torch.rand(3, 4, generator=g) * 80])
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 2)
        labels = torch.cat([d.labels, torch.randint(0, 4, (3,), generator=g)])
        # some labels swapped to a wrong class
        labels[: n // 2] = (labels[: n // 2] + 1) % 4
        out[i] = Dets(boxes, torch.rand(n + 3, generator=g), labels)
    return out


def _direct_ap50(gt, dets, cat_ids):
    """AP50 of faster-coco-eval restricted to ``cat_ids`` (its own summary, not our precision slicing)."""
    from faster_coco_eval import COCO, COCOeval_faster

    results = [
        {
            "image_id": i,
            "category_id": CLASS_IDS[int(lab)],
            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            "score": float(s),
        }
        for i, d in dets.items()
        for b, s, lab in zip(d.boxes.tolist(), d.scores, d.labels, strict=True)
    ]
    coco = COCO(json.loads(json.dumps(gt)))
    e = COCOeval_faster(coco, coco.loadRes(results), "bbox")
    e.params.catIds = list(cat_ids)
    e.evaluate()
    e.accumulate()
    e.summarize()
    return float(e.stats[1]) * 100


def test_perfect_detections_give_100():
    gt = _gt()
    m = evaluate_detections(gt, _perfect(gt), CLASS_IDS, SPLIT)
    for key in ("AP", "AP50", "AP75", "AP50_novel", "AP50_base", "AP50_all", "AP50_split_target"):
        assert m[key] == pytest.approx(100.0), key
    assert set(COCO_STAT_NAMES) <= set(m)
    assert m["AP50/cat"] == pytest.approx(100.0)


def test_base_only_detections_give_zero_novel():
    gt = _gt()
    m = evaluate_detections(gt, _perfect(gt, keep=lambda c: c in (2, 7)), CLASS_IDS, SPLIT)
    assert m["AP50_novel"] == 0.0 and m["AP50_split_target"] == 0.0
    assert m["AP50_base"] == pytest.approx(100.0) and m["AP50_split_base"] == m["AP50_base"]
    # 'all' averages the two halves class by class (every class has GT here)
    assert m["AP50_all"] == pytest.approx(50.0)


def test_jittered_detections_match_direct_faster_coco_eval():
    gt = _gt(n_images=12, seed=3)
    dets = _jittered(gt)
    m = evaluate_detections(gt, dets, CLASS_IDS, SPLIT)
    assert 0.0 < m["AP50_novel"] < 100.0 and 0.0 < m["AP50_base"] < 100.0
    assert m["AP50_novel"] == pytest.approx(_direct_ap50(gt, dets, [5, 9]), abs=1e-9)
    assert m["AP50_base"] == pytest.approx(_direct_ap50(gt, dets, [2, 7]), abs=1e-9)
    assert m["AP50_all"] == pytest.approx(_direct_ap50(gt, dets, CLASS_IDS), abs=1e-9)
    assert m["AP50_all"] == pytest.approx(m["AP50"], abs=1e-9)


def test_same_12_stats_as_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = _gt(n_images=10, seed=5)
    dets = _jittered(gt, seed=2)
    m = evaluate_detections(gt, dets, CLASS_IDS)
    results = [
        {
            "image_id": i,
            "category_id": CLASS_IDS[int(lab)],
            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            "score": float(s),
        }
        for i, d in dets.items()
        for b, s, lab in zip(d.boxes.tolist(), d.scores, d.labels, strict=True)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        e = COCOeval(coco, coco.loadRes(results), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    for name, ref in zip(COCO_STAT_NAMES, e.stats, strict=True):
        expected = ref * 100 if ref >= 0 else math.nan
        assert m[name] == pytest.approx(expected, abs=1e-6, nan_ok=True), name


def test_scales_map_boxes_back_and_results_file(tmp_path):
    gt = _gt()
    scale = (2.0, 1.5)
    dets = _perfect(gt, scale=scale)
    scales = {img["id"]: scale for img in gt["images"]}
    m = evaluate_detections(gt, dets, CLASS_IDS, SPLIT, scales=scales)
    assert m["AP"] == pytest.approx(100.0)
    path = write_coco_results(dets, tmp_path / "res.json", CLASS_IDS, scales)
    results = json.loads(path.read_text())
    assert len(results) == len(gt["annotations"])
    first = gt["annotations"][0]
    match = [
        r for r in results if r["image_id"] == first["image_id"] and r["category_id"] == first["category_id"]
    ]
    assert any(np.allclose(r["bbox"], first["bbox"], atol=1e-3) for r in match)


def test_empty_detections_and_missing_images():
    gt = _gt()
    m = evaluate_detections(gt, {}, CLASS_IDS, SPLIT)
    assert m["AP"] == 0.0 and m["AP50_novel"] == 0.0
    # a split subset without GT gives NaN
    gt_cat_only = dict(gt, annotations=[a for a in gt["annotations"] if a["category_id"] == 2])
    m = evaluate_detections(gt_cat_only, _perfect(gt_cat_only), CLASS_IDS, SPLIT)
    assert math.isnan(m["AP50_novel"]) and m["AP50_base"] == pytest.approx(100.0)


def test_evaluator_errors():
    gt = _gt()
    dets = _perfect(gt)
    with pytest.raises(DataError, match="image ids \\[99\\]"):
        evaluate_detections(gt, {99: dets[1]}, CLASS_IDS)
    with pytest.raises(DataError, match="class_ids \\[42\\]"):
        evaluate_detections(gt, dets, [2, 5, 7, 42])
    with pytest.raises(RegionCLIPError, match="outside the vocabulary"):
        evaluate_detections(gt, dets, [2, 5])
    with pytest.raises(DataError, match="'zebra'"):
        evaluate_detections(gt, dets, CLASS_IDS, OvdSplit(["cat"], ["zebra"]))


def test_protocol_recorded_with_nan_as_null(tmp_path):
    p = Protocol(
        dataset="coco_2017_ovd_all_test", vocabulary_size=65, nms="soft-gaussian", nms_params={"sigma": 0.5}
    )
    path = write_results(tmp_path / "r.json", {"AP50_novel": math.nan, "AP": 12.5}, p)
    out = json.loads(path.read_text())
    assert out["metrics"] == {"AP50_novel": None, "AP": 12.5}
    assert out["protocol"]["vocabulary_size"] == 65 and out["protocol"]["nms_params"] == {"sigma": 0.5}
    assert "torch" in out["protocol"]["versions"] and out["protocol"]["date"]

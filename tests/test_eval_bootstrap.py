"""Tests of the image-level bootstrap: region top-1 and cached COCO AP50 by split, single and paired."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from regionclip.data.ovd import OvdSplit
from regionclip.errors import DataError, RegionCLIPError
from regionclip.eval.bootstrap import (
    Ap50Cache,
    BootstrapConfig,
    ap50_cache,
    ap50_intervals,
    region_accuracy_intervals,
    region_top1_hits,
    resample_weights,
)
from regionclip.eval.coco import evaluate_detections

NAMES = ["cat", "dog", "kite", "cup", "bus", "owl"]
CATS = [{"id": 3 * k + 1, "name": n} for k, n in enumerate(NAMES)]
CLASS_IDS = [c["id"] for c in CATS]
SPLIT = OvdSplit(["cat", "kite", "bus", "owl"], ["dog", "cup"])


def _synthetic(n_images=40, seed=0, noise=6.0, n_fp=4):
    """GT with crowd boxes, images without GT, a category with no GT; detections near GT (some too far, so
    false positives), duplicates, and pure false positives. Scores are continuous (no ties)."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], {}
    for i in range(1, n_images + 1):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 200})
        boxes, scores, labels = [], [], []
        n_gt = 0 if i % 7 == 0 else int(rng.integers(1, 5))  # every 7th image has no GT
        for _ in range(n_gt):
            k = int(rng.integers(0, len(NAMES) - 1))  # the last category ("owl") never has GT
            x, y = rng.uniform(0, 120, size=2)
            w, h = rng.uniform(10, 80, size=2)
            crowd = int(rng.random() < 0.15)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": CLASS_IDS[k],
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": crowd})  # fmt: skip
            for _ in range(int(rng.integers(0, 3))):  # 0-2 detections per GT (a duplicate is an FP)
                j = rng.normal(0, noise, size=4)
                label = k if rng.random() < 0.85 else int(rng.integers(0, len(NAMES)))
                boxes.append([x + j[0], y + j[1], x + w + j[2], y + h + j[3]])
                scores.append(rng.uniform(0.05, 1.0))
                labels.append(label)
        for _ in range(int(rng.integers(0, n_fp + 1))):  # background false positives
            x, y = rng.uniform(0, 150, size=2)
            boxes.append([x, y, x + rng.uniform(5, 50), y + rng.uniform(5, 50)])
            scores.append(rng.uniform(0.0, 0.9))
            labels.append(int(rng.integers(0, len(NAMES))))
        dets[i] = {
            "boxes": torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float64),
            "labels": torch.tensor(labels, dtype=torch.long),
        }
    gt = {"images": images, "annotations": anns, "categories": CATS}
    return gt, dets


def test_full_set_equals_faster_coco_eval_per_split():
    for seed in (0, 1, 2):
        gt, dets = _synthetic(seed=seed)
        assert any(a["iscrowd"] for a in gt["annotations"])
        reference = evaluate_detections(gt, dets, CLASS_IDS, split=SPLIT)
        cache = ap50_cache(gt, dets, CLASS_IDS)
        per_cat = cache.ap50_per_category(np.ones((1, cache.n_images)))
        for key, names in (("AP50_novel", SPLIT.novel), ("AP50_base", SPLIT.base), ("AP50_all", SPLIT.names)):
            ours = float(cache.split_ap50(per_cat, names)[0])
            assert ours == pytest.approx(reference[key], abs=1e-6), (seed, key)
        for k, name in enumerate(cache.cat_names):  # per category too; "owl" has no GT: NaN, as COCO's -1
            if f"AP50/{name}" in reference:
                assert 100 * per_cat[0, k] == pytest.approx(reference[f"AP50/{name}"], abs=1e-6)
            else:
                assert math.isnan(per_cat[0, k])
        assert 0 < reference["AP50_all"] < 100  # the synthetic set is neither trivial nor hopeless


def test_max_dets_cut_matches_coco():
    gt, dets = _synthetic(n_images=6, seed=3, n_fp=900)  # > 100 detections in some image-categories
    reference = evaluate_detections(gt, dets, CLASS_IDS, split=SPLIT)
    cache = ap50_cache(gt, dets, CLASS_IDS)
    per_cat = cache.ap50_per_category(np.ones((1, cache.n_images)))
    assert float(cache.split_ap50(per_cat, SPLIT.names)[0]) == pytest.approx(reference["AP50_all"], abs=1e-6)


def test_known_answer_ap():
    # one category, two GT; detections TP 0.9, FP 0.8, TP 0.7: precision envelope 1 up to recall 0.5
    # (51 thresholds), 2/3 above (50 thresholds)
    gt = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10], "area": 100, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "cat"}],
    }
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [80, 0, 10, 10], "score": 0.8},
        {"image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10], "score": 0.7},
    ]
    cache = Ap50Cache.from_coco(gt, results)
    expected = (51 + 50 * 2 / 3) / 101
    assert cache.ap50_per_category(np.ones((1, 1)))[0, 0] == pytest.approx(expected, abs=1e-12)
    # the same image drawn twice: the same curve (each point doubled), the same AP
    assert cache.ap50_per_category(np.full((1, 1), 2.0))[0, 0] == pytest.approx(expected, abs=1e-12)


def test_perfect_detector_has_degenerate_interval():
    gt, _ = _synthetic(seed=4)
    results = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.5}
        for a in gt["annotations"]
        if not a["iscrowd"]
    ]
    cache = Ap50Cache.from_coco(gt, results)
    out = ap50_intervals(cache, SPLIT, BootstrapConfig(n_resamples=200))
    for iv in out.values():
        assert (iv.point, iv.lo, iv.hi) == (100.0, 100.0, 100.0)


def test_ap50_interval_contains_point_paired_self_zero_and_narrows():
    gt, dets = _synthetic(n_images=60, seed=5)
    cache = ap50_cache(gt, dets, CLASS_IDS)
    config = BootstrapConfig(n_resamples=300, seed=1)
    single = ap50_intervals(cache, SPLIT, config)
    for iv in single.values():
        assert iv.lo <= iv.point <= iv.hi and iv.lo < iv.hi
    paired = ap50_intervals(cache, SPLIT, config, cache_b=cache)
    for iv in paired.values():
        assert (iv.point, iv.lo, iv.hi) == (0.0, 0.0, 0.0)
    gt_big, dets_big = _synthetic(n_images=480, seed=5)
    big = ap50_intervals(ap50_cache(gt_big, dets_big, CLASS_IDS), SPLIT, config)
    assert big["AP50_all"].hi - big["AP50_all"].lo < 0.7 * (single["AP50_all"].hi - single["AP50_all"].lo)


def test_paired_ap50_difference_of_a_worse_model():
    gt, dets = _synthetic(n_images=80, seed=6)
    _, noisy = _synthetic(n_images=80, seed=6, noise=14.0)  # same GT, sloppier boxes
    a, b = ap50_cache(gt, dets, CLASS_IDS), ap50_cache(gt, noisy, CLASS_IDS)
    config = BootstrapConfig(n_resamples=300)
    diff = ap50_intervals(a, SPLIT, config, cache_b=b)["AP50_all"]
    point_a = ap50_intervals(a, SPLIT, config)["AP50_all"].point
    point_b = ap50_intervals(b, SPLIT, config)["AP50_all"].point
    assert diff.point == pytest.approx(point_a - point_b)
    assert diff.lo > 0  # the precise model is better on the same images
    with pytest.raises(RegionCLIPError, match="different GT"):
        ap50_intervals(a, SPLIT, config, cache_b=ap50_cache(*_synthetic(n_images=20), CLASS_IDS))


def test_ap50_cache_rejects_foreign_images_and_classes():
    gt, dets = _synthetic(n_images=5)
    with pytest.raises(DataError, match="not category ids"):
        ap50_cache(gt, dets, [999] * len(NAMES))
    with pytest.raises(DataError, match="not in the GT"):
        Ap50Cache.from_coco(gt, [{"image_id": 77, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])


def test_resample_weights_are_seeded_and_sum_to_n():
    w = resample_weights(50, BootstrapConfig(n_resamples=20, seed=3))
    assert w.shape == (20, 50) and (w.sum(axis=1) == 50).all()
    assert (w == resample_weights(50, BootstrapConfig(n_resamples=20, seed=3))).all()
    assert not (w == resample_weights(50, BootstrapConfig(n_resamples=20, seed=4))).all()
    with pytest.raises(RegionCLIPError, match="n_resamples"):
        resample_weights(5, BootstrapConfig(n_resamples=0))


def _regions(n_images, p, seed=0, per_image=(1, 5)):
    rng = np.random.default_rng(seed)
    counts = rng.integers(*per_image, size=n_images)
    image_index = np.repeat(np.arange(n_images), counts)
    labels = rng.integers(0, len(NAMES), size=len(image_index))
    hits = rng.random(len(image_index)) < p
    return hits, image_index, labels


def test_region_interval_known_answer_binomial():
    # one region per image, accuracy 50% on 400 images: the bootstrap interval is ~ 50 +- 1.96 * 2.5
    hits = np.arange(400) % 2 == 0
    out = region_accuracy_intervals(hits, np.arange(400), np.zeros(400, dtype=int), config=BootstrapConfig())
    iv = out["acc_top1"]
    assert iv.point == 50.0
    assert iv.lo == pytest.approx(50 - 1.96 * 2.5, abs=0.6) and iv.hi == pytest.approx(
        50 + 1.96 * 2.5, abs=0.6
    )


def test_region_intervals_split_paired_and_narrowing():
    hits, image_index, labels = _regions(100, 0.4)
    config = BootstrapConfig(n_resamples=500)
    out = region_accuracy_intervals(hits, image_index, labels, class_names=NAMES, split=SPLIT, config=config)
    assert set(out) == {"acc_top1", "acc_top1_base", "acc_top1_novel"}
    novel = np.isin(labels, [NAMES.index(n) for n in SPLIT.novel])
    assert out["acc_top1"].point == pytest.approx(100 * hits.mean())
    assert out["acc_top1_novel"].point == pytest.approx(100 * hits[novel].mean())
    for iv in out.values():
        assert iv.lo <= iv.point <= iv.hi
    same = region_accuracy_intervals(hits, image_index, labels, class_names=NAMES, split=SPLIT, config=config,
                                     hits_b=hits)  # fmt: skip
    for iv in same.values():
        assert (iv.point, iv.lo, iv.hi) == (0.0, 0.0, 0.0)
    better = hits | (np.random.default_rng(1).random(len(hits)) < 0.3)
    diff = region_accuracy_intervals(better, image_index, labels, config=config, hits_b=hits)["acc_top1"]
    assert diff.point > 0 and diff.lo > 0
    big = region_accuracy_intervals(*_regions(1600, 0.4, seed=2), config=config)["acc_top1"]
    assert big.hi - big.lo < 0.5 * (out["acc_top1"].hi - out["acc_top1"].lo)


def test_region_top1_hits_matches_argmax():
    g = torch.Generator().manual_seed(0)
    classes = torch.randn(4, 8, generator=g)
    regions = classes[[0, 1, 2, 3, 1]] * 3 + 0.01 * torch.randn(5, 8, generator=g)
    hits = region_top1_hits(regions, torch.tensor([0, 1, 2, 0, 1]), classes)
    assert hits.tolist() == [True, True, True, False, True]
    with pytest.raises(ValueError, match="2 regions but 3 labels"):
        region_top1_hits(regions[:2], torch.tensor([0, 1, 2]), classes)


def test_ap50_bootstrap_speed_demo_val_size():
    # the default demo's val split: 400 images, up to 100 detections each over 171 categories
    rng = np.random.default_rng(0)
    n_images, n_cats = 400, 171
    cats = [{"id": k + 1, "name": f"c{k}"} for k in range(n_cats)]
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "width": 160, "height": 160} for i in range(n_images)]
    anns, results = [], []
    for i in range(1, n_images + 1):
        for _ in range(int(rng.integers(1, 6))):
            x, y, w, h = (*rng.uniform(0, 100, 2), *rng.uniform(10, 60, 2))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(rng.integers(1, n_cats + 1)),
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
        for _ in range(100):
            x, y, w, h = (*rng.uniform(0, 100, 2), *rng.uniform(10, 60, 2))
            results.append({"image_id": i, "category_id": int(rng.integers(1, n_cats + 1)),
                            "bbox": [x, y, w, h], "score": float(rng.random())})  # fmt: skip
    gt = {"images": images, "annotations": anns, "categories": cats}
    cache = Ap50Cache.from_coco(gt, results)
    start = time.perf_counter()
    ap50_intervals(cache, OvdSplit([c["name"] for c in cats[:150]], [c["name"] for c in cats[150:]]),
                   BootstrapConfig(n_resamples=1000))  # fmt: skip
    assert time.perf_counter() - start < 60  # seconds on 2 loaded cores (measured: see the report)


def test_weighted_resample_equals_coco_on_the_resampled_image_set():
    # a resample is the image set with images drawn several times: COCOeval on that set, with each drawn copy
    # as a new image, must give what the cached matches give for the resample's weights
    gt, dets = _synthetic(n_images=30, seed=7)
    cache = ap50_cache(gt, dets, CLASS_IDS)
    weights = resample_weights(cache.n_images, BootstrapConfig(n_resamples=3, seed=11))
    by_image = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for row in weights:
        images, anns, rdets = [], [], {}
        for n, count in enumerate(row):
            image_id = cache.image_ids[n]
            for copy in range(int(count)):
                new_id = len(images) + 1
                images.append(
                    {"id": new_id, "file_name": f"{image_id}-{copy}.jpg", "width": 200, "height": 200}
                )
                for a in by_image.get(image_id, []):
                    anns.append({**a, "id": len(anns) + 1, "image_id": new_id})
                rdets[new_id] = dets[image_id]
        resampled = {"images": images, "annotations": anns, "categories": CATS}
        reference = evaluate_detections(resampled, rdets, CLASS_IDS, split=SPLIT)
        per_cat = cache.ap50_per_category(row[None, :])
        for key, names in (("AP50_novel", SPLIT.novel), ("AP50_base", SPLIT.base), ("AP50_all", SPLIT.names)):
            assert float(cache.split_ap50(per_cat, names)[0]) == pytest.approx(reference[key], abs=1e-6), key

"""Image-level bootstrap intervals for region top-1 accuracy and COCO AP50 by OVD split.

Method notes: ``shared/reference/experiments.md`` ("Intervals"). A resample draws the evaluated images with
replacement (all the regions / ground truth / detections of a drawn image come with it); a statistic is
recomputed on each of ``n_resamples`` resamples and the interval is the 2.5 / 97.5 percentiles
(``confidence`` 0.95). The point estimate is the statistic on the full image set. A *paired* interval of a
difference (model A - model B) uses the same resampled images for both models.

AP50 is not re-evaluated by COCOeval per resample. :class:`Ap50Cache` matches detections to ground truth
once per (image, category), exactly as COCOeval does for IoU 0.5, area "all", maxDets 100 (detections
sorted by score, greedy matching to the best-IoU unmatched GT, crowd GT matched by intersection over the
detection's area and matchable many times, detections on crowd GT ignored), and recomputes COCO's
101-point interpolated precision from the cached matches with each image weighted by how many times the
resample drew it. On the full set it equals faster-coco-eval's ``AP50_novel`` / ``AP50_base`` /
``AP50_all`` of :func:`regionclip.eval.coco.evaluate_detections` (tested to 1e-6).

All statistics are percentages (0-100), as in :mod:`regionclip.eval.coco` and
:mod:`regionclip.eval.region_cls`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from regionclip.data.ovd import OvdSplit
from regionclip.errors import DataError, RegionCLIPError
from regionclip.eval.coco import _load_gt, detections_to_coco_results

IOU_THRESHOLD = 0.5  # AP50
MAX_DETS = 100  # COCO's largest maxDets
AREA_ALL = (0.0, 1e10)  # COCO's area range "all"
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, 101, endpoint=True)  # COCOeval's recThrs
_EPS = np.spacing(1)  # COCOeval's precision denominator guard


@dataclass(frozen=True)
class BootstrapConfig:
    """How intervals are drawn."""

    n_resamples: int = 1000  # bootstrap resamples of the image set
    confidence: float = 0.95  # interval mass: percentiles (1 - c) / 2 and (1 + c) / 2
    seed: int = 0  # seed of the resampling generator (numpy default_rng)


@dataclass(frozen=True)
class Interval:
    """A point estimate on the full set and its bootstrap percentile interval (NaN when undefined)."""

    point: float
    lo: float
    hi: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- resampling
def resample_weights(n_images: int, config: BootstrapConfig = BootstrapConfig()) -> np.ndarray:
    """How many times each image is drawn in each resample: int64 ``[n_resamples, n_images]``, rows sum to
    ``n_images``. Deterministic for ``config.seed``; the same matrix pairs two models."""
    if n_images <= 0:
        raise RegionCLIPError("bootstrap: no images to resample")
    if config.n_resamples < 1:
        raise RegionCLIPError(f"bootstrap: n_resamples must be >= 1, got {config.n_resamples}")
    if not 0.0 < config.confidence < 1.0:
        raise RegionCLIPError(f"bootstrap: confidence must be in (0, 1), got {config.confidence}")
    rng = np.random.default_rng(config.seed)
    draws = rng.integers(0, n_images, size=(config.n_resamples, n_images))
    flat = draws + np.arange(config.n_resamples)[:, None] * n_images
    return np.bincount(flat.ravel(), minlength=config.n_resamples * n_images).reshape(
        config.n_resamples, n_images
    )


def percentile_interval(point: float, samples: np.ndarray, confidence: float) -> Interval:
    """``Interval(point, lo, hi)`` from resampled values (NaN resamples, e.g. no region of a split drawn,
    are left out; all NaN gives NaN bounds)."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return Interval(float(point), math.nan, math.nan)
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return Interval(float(point), float(lo), float(hi))


# ----------------------------------------------------------------------------------- region classification
def region_top1_hits(region_embeddings: Tensor, labels: Tensor, class_embeddings: Tensor) -> np.ndarray:
    """Whether ``argmax_k cos(region, class_k)`` is the label, per region: bool ``[R]`` (the per-region
    outcome behind :func:`regionclip.eval.region_cls.region_accuracy`'s ``acc_top1``).

    region_embeddings: ``[R, D]``; labels: ``[R]`` class indices; class_embeddings: ``[K, D]``.
    """
    if region_embeddings.shape[0] != labels.shape[0]:
        raise ValueError(
            f"region_top1_hits: {region_embeddings.shape[0]} regions but {labels.shape[0]} labels"
        )
    if len(labels) == 0:
        return np.zeros(0, dtype=bool)
    logits = F.normalize(region_embeddings.float(), dim=-1) @ F.normalize(class_embeddings.float(), dim=-1).T
    return (logits.argmax(dim=-1).cpu() == labels.long().cpu()).numpy()


def _region_parts(labels: np.ndarray, class_names: Sequence[str] | None, split: OvdSplit | None) -> dict:
    parts = {"acc_top1": np.ones(len(labels), dtype=bool)}
    if split is not None:
        if class_names is None:
            raise ValueError("region bootstrap: a split needs class_names (the name of each class index)")
        for part in ("base", "novel"):
            names = set(split.base if part == "base" else split.novel)
            member = np.array([n in names for n in class_names], dtype=bool)
            parts[f"acc_top1_{part}"] = member[labels] if len(labels) else np.zeros(0, dtype=bool)
    return parts


def _per_image_counts(
    hits: np.ndarray, image_index: np.ndarray, n_images: int, parts: dict[str, np.ndarray]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per part: (correct regions per image, regions per image), float64 ``[n_images]`` each."""
    out = {}
    for name, mask in parts.items():
        correct = np.bincount(image_index[mask], weights=hits[mask].astype(np.float64), minlength=n_images)
        total = np.bincount(image_index[mask], minlength=n_images).astype(np.float64)
        out[name] = (correct, total)
    return out


def _check_regions(hits: np.ndarray, image_index: np.ndarray, labels: np.ndarray, n_images: int) -> None:
    if not (len(hits) == len(image_index) == len(labels)):
        raise ValueError(
            f"region bootstrap: {len(hits)} hits, {len(image_index)} image indices, {len(labels)} labels"
        )
    if len(image_index) and (image_index.min() < 0 or image_index.max() >= n_images):
        raise ValueError(f"region bootstrap: image_index outside [0, {n_images})")


def _accuracy(weights: np.ndarray, counts: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    correct, total = counts
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * (weights @ correct) / (weights @ total)  # NaN where no region of the part drawn


def region_accuracy_intervals(
    hits: np.ndarray,
    image_index: np.ndarray,
    labels: np.ndarray,
    n_images: int | None = None,
    class_names: Sequence[str] | None = None,
    split: OvdSplit | None = None,
    config: BootstrapConfig = BootstrapConfig(),
    hits_b: np.ndarray | None = None,
) -> dict[str, Interval]:
    """Bootstrap intervals of region top-1 accuracy (percent): ``acc_top1`` and, with ``split`` and
    ``class_names``, ``acc_top1_base`` / ``acc_top1_novel``.

    hits: bool ``[R]`` (e.g. :func:`region_top1_hits`); image_index: int ``[R]``, the evaluated image
    (0..n_images-1) of each region; labels: int ``[R]`` class index of each region. n_images: images
    resampled (default: ``max(image_index) + 1``; images without regions may be counted in). With
    ``hits_b`` (model B on the same regions) the intervals are of the paired difference A - B.
    """
    hits = np.asarray(hits, dtype=bool)
    image_index = np.asarray(image_index, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    n_images = int(image_index.max()) + 1 if n_images is None else int(n_images)
    _check_regions(hits, image_index, labels, n_images)
    if hits_b is not None:
        hits_b = np.asarray(hits_b, dtype=bool)
        if hits_b.shape != hits.shape:
            raise ValueError(f"region bootstrap: hits_b has shape {hits_b.shape}, hits {hits.shape}")
    parts = _region_parts(labels, class_names, split)
    counts_a = _per_image_counts(hits, image_index, n_images, parts)
    counts_b = _per_image_counts(hits_b, image_index, n_images, parts) if hits_b is not None else None
    weights = resample_weights(n_images, config)
    ones = np.ones((1, n_images))
    out = {}
    for name in parts:
        point, samples = _accuracy(ones, counts_a[name])[0], _accuracy(weights, counts_a[name])
        if counts_b is not None:
            point = point - _accuracy(ones, counts_b[name])[0]
            samples = samples - _accuracy(weights, counts_b[name])
        out[name] = percentile_interval(point, samples, config.confidence)
    return out


# ---------------------------------------------------------------------------------------------------- AP50
def _iou_xywh(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """COCO's box IoU ``[D, G]`` of xywh boxes; for a crowd GT the intersection over the detection's area."""
    dx1, dy1 = dt[:, 0:1], dt[:, 1:2]
    dx2, dy2 = dx1 + dt[:, 2:3], dy1 + dt[:, 3:4]
    gx1, gy1 = gt[None, :, 0], gt[None, :, 1]
    gx2, gy2 = gx1 + gt[None, :, 2], gy1 + gt[None, :, 3]
    iw = np.clip(np.minimum(dx2, gx2) - np.maximum(dx1, gx1), 0, None)
    ih = np.clip(np.minimum(dy2, gy2) - np.maximum(dy1, gy1), 0, None)
    inter = iw * ih
    d_area = dt[:, 2:3] * dt[:, 3:4]
    g_area = gt[None, :, 2] * gt[None, :, 3]
    union = np.where(crowd[None, :], d_area, d_area + g_area - inter)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_image_category(
    dt_boxes: np.ndarray,
    dt_scores: np.ndarray,
    gt_boxes: np.ndarray,
    gt_crowd: np.ndarray,
    gt_area: np.ndarray,
    max_dets: int = MAX_DETS,
    iou_threshold: float = IOU_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """COCOeval's ``evaluateImg`` for one image and category at one IoU, area "all".

    dt_boxes ``[D, 4]`` / gt_boxes ``[G, 4]``: xywh pixels; dt_scores ``[D]``; gt_crowd bool ``[G]``; gt_area
    ``[G]`` (the annotation's ``area``). Returns the kept detections' scores ``[D']`` (score-sorted, stable,
    at most ``max_dets``), whether each matched a GT (bool ``[D']``), whether each is ignored (bool ``[D']``:
    matched to a crowd / out-of-range GT, or unmatched and out of range), and the number of non-ignored GT.
    """
    lo, hi = AREA_ALL
    gt_ignore = gt_crowd.astype(bool) | (gt_area < lo) | (gt_area > hi)
    g_order = np.argsort(gt_ignore, kind="mergesort")
    gt_boxes, gt_crowd, gt_ignore = gt_boxes[g_order], gt_crowd[g_order].astype(bool), gt_ignore[g_order]
    d_order = np.argsort(-dt_scores, kind="mergesort")[:max_dets]
    dt_boxes, dt_scores = dt_boxes[d_order], dt_scores[d_order]
    n_dt, n_gt = len(dt_scores), len(gt_ignore)
    matched = np.zeros(n_dt, dtype=bool)
    ignored = np.zeros(n_dt, dtype=bool)
    if n_dt and n_gt:
        ious = _iou_xywh(dt_boxes, gt_boxes, gt_crowd)
        gt_taken = np.zeros(n_gt, dtype=bool)
        for d in range(n_dt):
            best_iou, m = min(iou_threshold, 1 - 1e-10), -1
            for g in range(n_gt):
                if gt_taken[g] and not gt_crowd[g]:
                    continue
                if m > -1 and not gt_ignore[m] and gt_ignore[g]:
                    break
                if ious[d, g] < best_iou:
                    continue
                best_iou, m = ious[d, g], g
            if m == -1:
                continue
            matched[d], ignored[d] = True, gt_ignore[m]
            gt_taken[m] = True
    d_area = dt_boxes[:, 2] * dt_boxes[:, 3] if n_dt else np.zeros(0)
    ignored |= ~matched & ((d_area < lo) | (d_area > hi))
    return dt_scores, matched, ignored, int((~gt_ignore).sum())


@dataclass
class _CategoryDets:
    image: np.ndarray  # int64 [n]: evaluated-image index of each non-ignored detection, COCO's global order
    tp: np.ndarray  # float64 [n]: 1 for a true positive, 0 for a false positive


class Ap50Cache:
    """Detections matched to GT once; COCO AP50 per category for any image weighting.

    Built by :meth:`from_coco` from a COCO instances dict and a COCO results list. ``image_ids`` are the
    evaluated images (the GT's, sorted, as COCOeval's ``imgIds``), ``cat_ids`` the evaluated categories (the
    GT's, sorted), ``npig`` float64 ``[K, N]`` the non-ignored GT per category and image.
    """

    def __init__(self, image_ids: list, cat_ids: list[int], cat_names: list[str], npig: np.ndarray,
                 dets: list[_CategoryDets]) -> None:  # fmt: skip
        self.image_ids, self.cat_ids, self.cat_names = image_ids, cat_ids, cat_names
        self.npig, self.dets = npig, dets
        self._resampled: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    @classmethod
    def from_coco(cls, gt: dict, results: list[dict], max_dets: int = MAX_DETS) -> Ap50Cache:
        """gt: a validated COCO instances dict; results: COCO results entries (``image_id``, ``category_id``,
        ``bbox`` xywh, ``score``), in the order COCO would load them."""
        image_ids = sorted(img["id"] for img in gt["images"])
        img_pos = {i: n for n, i in enumerate(image_ids)}
        cats = sorted(gt["categories"], key=lambda c: c["id"])
        cat_ids = [int(c["id"]) for c in cats]
        cat_pos = {c: k for k, c in enumerate(cat_ids)}
        gt_by: dict[tuple[int, int], list[dict]] = {}
        for ann in gt["annotations"]:
            if ann["image_id"] in img_pos and ann["category_id"] in cat_pos:
                gt_by.setdefault((cat_pos[ann["category_id"]], img_pos[ann["image_id"]]), []).append(ann)
        dt_by: dict[tuple[int, int], list[dict]] = {}
        for r in results:
            if r["image_id"] not in img_pos:
                raise DataError(f"bootstrap: detection for image id {r['image_id']} that is not in the GT")
            if r["category_id"] in cat_pos:
                dt_by.setdefault((cat_pos[r["category_id"]], img_pos[r["image_id"]]), []).append(r)
        npig = np.zeros((len(cat_ids), len(image_ids)))
        scores_k: list[list[np.ndarray]] = [[] for _ in cat_ids]
        tp_k: list[list[np.ndarray]] = [[] for _ in cat_ids]
        img_k: list[list[np.ndarray]] = [[] for _ in cat_ids]
        for k in range(len(cat_ids)):
            for n in range(len(image_ids)):  # image order = COCOeval's concatenation order
                g = gt_by.get((k, n), [])
                d = dt_by.get((k, n), [])
                if not g and not d:
                    continue
                gt_boxes = np.array([a["bbox"] for a in g], dtype=np.float64).reshape(-1, 4)
                crowd = np.array([bool(a.get("iscrowd", 0)) for a in g], dtype=bool)
                area = np.array([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in g], dtype=np.float64)
                dt_boxes = np.array([r["bbox"] for r in d], dtype=np.float64).reshape(-1, 4)
                dt_scores = np.array([r["score"] for r in d], dtype=np.float64)
                s, matched, ignored, n_gt = match_image_category(
                    dt_boxes, dt_scores, gt_boxes, crowd, area, max_dets
                )
                npig[k, n] = n_gt
                keep = ~ignored
                scores_k[k].append(s[keep])
                tp_k[k].append(matched[keep].astype(np.float64))
                img_k[k].append(np.full(int(keep.sum()), n, dtype=np.int64))
        dets = []
        for k in range(len(cat_ids)):
            if not scores_k[k]:
                dets.append(_CategoryDets(np.zeros(0, dtype=np.int64), np.zeros(0)))
                continue
            scores = np.concatenate(scores_k[k])
            order = np.argsort(-scores, kind="mergesort")
            dets.append(_CategoryDets(np.concatenate(img_k[k])[order], np.concatenate(tp_k[k])[order]))
        return cls(image_ids, cat_ids, [str(c["name"]) for c in cats], npig, dets)

    def ap50_per_category(self, weights: np.ndarray) -> np.ndarray:
        """AP50 (fraction) per category for each weighting: float64 ``[B, K]``, NaN where the weighted set
        has no non-ignored GT of the category (COCO's -1). weights: ``[B, N]`` image multiplicities."""
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 2 or weights.shape[1] != self.n_images:
            raise ValueError(f"weights must be [B, {self.n_images}], got {list(weights.shape)}")
        n_rows, n_thr = weights.shape[0], len(RECALL_THRESHOLDS)
        out = np.full((n_rows, len(self.cat_ids)), np.nan)
        npig_all = weights @ self.npig.T  # [B, K]
        for k, cd in enumerate(self.dets):
            npig = npig_all[:, k]
            has_gt = npig > 0
            if not has_gt.any():
                continue
            if len(cd.tp) == 0:
                out[has_gt, k] = 0.0
                continue
            w = weights[:, cd.image]  # [B, n]
            tp = np.cumsum(w * cd.tp, axis=1)
            fp = np.cumsum(w * (1.0 - cd.tp), axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                rc = tp / npig[:, None]
            pr = tp / (fp + tp + _EPS)
            env = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # COCO's precision envelope
            # first point with recall >= threshold t: the number of points with recall < t, i.e. of points
            # whose count of thresholds <= recall is <= t
            n_pts = tp.shape[1]
            a = np.searchsorted(RECALL_THRESHOLDS, np.nan_to_num(rc, nan=0.0).ravel(), side="right")
            rows = np.repeat(np.arange(n_rows), n_pts)
            hist = np.bincount(rows * (n_thr + 1) + a, minlength=n_rows * (n_thr + 1))
            first = np.cumsum(hist.reshape(n_rows, n_thr + 1), axis=1)[:, :n_thr]  # [B, T]
            q = np.take_along_axis(env, np.minimum(first, n_pts - 1), axis=1)
            q[first >= n_pts] = 0.0
            out[has_gt, k] = q[has_gt].mean(axis=1)
        return out

    def resampled_ap50(self, config: BootstrapConfig) -> tuple[np.ndarray, np.ndarray]:
        """AP50 per category on the full set ``[1, K]`` and on each resample of ``config`` ``[B, K]``,
        computed once per (n_resamples, seed) and kept: a model's matches enter several rows and differences."""
        key = (config.n_resamples, config.seed)
        if key not in self._resampled:
            weights = resample_weights(self.n_images, config)
            full = self.ap50_per_category(np.ones((1, self.n_images)))
            self._resampled[key] = (full, self.ap50_per_category(weights))
        return self._resampled[key]

    def split_ap50(self, per_category: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """The official split AP50 (percent) ``[B]``: the mean over the ``names`` categories that have GT."""
        pos = {n: k for k, n in enumerate(self.cat_names)}
        missing = [n for n in names if n not in pos]
        if missing:
            raise DataError(f"bootstrap: split names {missing[:5]} are not categories of the ground truth")
        cols = per_category[:, [pos[n] for n in names]]
        valid = np.isfinite(cols)
        count = valid.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, 100.0 * np.where(valid, cols, 0.0).sum(axis=1) / count, np.nan)


def ap50_cache(
    gt_json_or_dict: Any,
    detections_per_image: Mapping[Any, Any],
    class_ids: Sequence[int],
    scales: Mapping[Any, tuple[float, float]] | None = None,
    max_dets: int = MAX_DETS,
) -> Ap50Cache:
    """:class:`Ap50Cache` from the same inputs as :func:`regionclip.eval.coco.evaluate_detections`."""
    data, source = _load_gt(gt_json_or_dict)
    known = {c["id"] for c in data["categories"]}
    bad = [c for c in class_ids if int(c) not in known]
    if bad:
        raise DataError(f"{source}: class_ids {bad[:5]} are not category ids of the ground truth")
    return Ap50Cache.from_coco(
        data, detections_to_coco_results(detections_per_image, class_ids, scales), max_dets
    )


def _split_parts(cache: Ap50Cache, split: OvdSplit | None) -> dict[str, Sequence[str]]:
    if split is None:
        return {"AP50_all": cache.cat_names}
    return {"AP50_novel": split.novel, "AP50_base": split.base, "AP50_all": split.names}


def ap50_intervals(
    cache: Ap50Cache,
    split: OvdSplit | None = None,
    config: BootstrapConfig = BootstrapConfig(),
    cache_b: Ap50Cache | None = None,
) -> dict[str, Interval]:
    """Bootstrap intervals of ``AP50_novel`` / ``AP50_base`` / ``AP50_all`` (percent; only ``AP50_all``
    over every GT category without a split). With ``cache_b`` (model B on the same GT), the intervals are
    of the paired difference A - B on the same resampled images."""
    if cache_b is not None and (cache_b.image_ids != cache.image_ids or cache_b.cat_ids != cache.cat_ids):
        raise RegionCLIPError("paired AP50 bootstrap: the two models were evaluated on different GT")
    full_a, per_a = cache.resampled_ap50(config)  # the same resampled images for both (same n, seed)
    full_b = per_b = None
    if cache_b is not None:
        full_b, per_b = cache_b.resampled_ap50(config)
    out = {}
    for key, names in _split_parts(cache, split).items():
        point, samples = cache.split_ap50(full_a, names)[0], cache.split_ap50(per_a, names)
        if cache_b is not None:
            point = point - cache_b.split_ap50(full_b, names)[0]
            samples = samples - cache_b.split_ap50(per_b, names)
        out[key] = percentile_interval(point, samples, config.confidence)
    return out


def intervals_to_dict(intervals: Mapping[str, Interval]) -> dict[str, dict[str, float]]:
    """JSON-ready ``{name: {point, lo, hi}}``."""
    return {k: v.to_dict() for k, v in intervals.items()}

"""The demo's numbers with their intervals: every results row as a point estimate on the held-out test split,
its 95% bootstrap interval over test images and the paired interval of RegionCLIP - CLIP
(:mod:`regionclip.eval.bootstrap`, 1,000 resamples; method notes: ``shared/reference/experiments.md``).

Inputs are the demo's own outputs: AP50 rows come from the COCO results JSON that ``regionclip eval`` writes
next to each results JSON (``OUT/eval/<name>_detections.json``), matched once against the test split's GT
(:class:`~regionclip.eval.bootstrap.Ap50Cache`); region top-1 rows from the per-region outcomes of
:func:`region_hits` (GT boxes of the test split classified among every category name, as ``regionclip eval
--boxes gt`` classifies them: one image per forward, official templates, the eval's precision). Rows are
dicts in the format of :mod:`regionclip.results_table` (``name``, ``clip`` / ``regionclip`` / ``diff``
intervals ``{point, lo, hi}``, percent).

Which evaluation feeds which row is the table :data:`ROW_SPECS` (eval names as :func:`regionclip.demo.evaluation.
_evaluate` writes them); a row whose detections file is missing is a one-line error naming the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regionclip.demo.context import DemoContext, _world_paths
from regionclip.errors import RegionCLIPError
from regionclip.eval.bootstrap import (
    Ap50Cache,
    BootstrapConfig,
    Interval,
    ap50_intervals,
    region_accuracy_intervals,
    region_top1_hits,
)
from regionclip.io import atomic_write

BOOTSTRAP = BootstrapConfig(n_resamples=1000, confidence=0.95, seed=0)  # the demo's intervals
TABLE_SPLIT = "test"  # the split that carries the table (val is for development)


@dataclass(frozen=True)
class RowSpec:
    """One row of the results table: what is measured and from which outputs."""

    name: str  # row label
    kind: str  # "region" (GT-box top-1 from a model stage's checkpoint) or "ap50" (an eval's detections)
    clip: str  # CLIP side: a stage name ("region") or an eval name ("ap50")
    regionclip: str  # RegionCLIP side, the same
    key: str  # acc_top1 / acc_top1_base / acc_top1_novel, or AP50_novel / AP50_base / AP50_all


def _ap50_specs(prefix: str, clip: str, regionclip: str, suffix: str = "") -> list[RowSpec]:
    return [
        RowSpec(f"{prefix}, {label}{suffix}", "ap50", clip, regionclip, key)
        for key, label in (("AP50_novel", "novel"), ("AP50_base", "base"), ("AP50_all", "all"))
    ]


ROW_SPECS: list[RowSpec] = [
    *[
        RowSpec(
            f"Zero-shot region classification top-1, {label} (GT boxes)", "region", "clip", "pretrain", key
        )
        for key, label in (("acc_top1", "all"), ("acc_top1_base", "base"), ("acc_top1_novel", "novel"))
    ],
    *_ap50_specs("Zero-shot detection AP50", "zeroshot_clip_rpn", "zeroshot_pretrain_rpn", " (RPN boxes)"),
    *_ap50_specs("Transfer detector AP50", "transfer_clip", "transfer_regionclip"),
    *_ap50_specs(
        "Transfer detector AP50 + RPN score", "transfer_clip:sigmoid", "transfer_regionclip:sigmoid"
    ),
    *_ap50_specs(
        "Transfer detector AP50 + frozen ensemble", "transfer_clip:ensemble", "transfer_regionclip:ensemble"
    ),
]


# ------------------------------------------------------------------------------------- region top-1 hits
@dataclass
class RegionHits:
    """Per-region top-1 outcome of one model on the GT boxes of a split."""

    hits: np.ndarray  # bool [R]: top-1 class is the GT class
    image_index: np.ndarray  # int64 [R]: position of the region's image in the split (0..n_images-1)
    labels: np.ndarray  # int64 [R]: GT class index (into class_names)
    n_images: int  # images of the split (with or without boxes)
    class_names: list[str]  # category names in category-id order

    def accuracy(self, split) -> dict[str, float]:
        """Top-1 accuracy in percent: ``region_acc_top1`` over every region, ``_base`` / ``_novel`` over the
        regions of the :class:`~regionclip.data.ovd.OvdSplit`'s classes (NaN for a split without regions)."""
        names = np.asarray(self.class_names)[self.labels]
        out = {"region_acc_top1": 100.0 * float(self.hits.mean()) if len(self.hits) else math.nan}
        for part, classes in (("base", split.base), ("novel", split.novel)):
            mask = np.isin(names, list(classes))
            out[f"region_acc_top1_{part}"] = 100.0 * float(self.hits[mask].mean()) if mask.any() else math.nan
        out["num_regions"] = len(self.hits)
        return out


def region_hits_path(ctx: DemoContext, stage: str) -> Path:
    """Where the zero-shot stage keeps the per-region outcomes of the model of ``stage``."""
    return ctx.out / "zeroshot" / f"{stage}_region_hits.npz"


def save_region_hits(ctx: DemoContext, stage: str, hits: RegionHits) -> Path:
    """Write ``hits`` for :func:`load_region_hits` (atomically)."""
    path = region_hits_path(ctx, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"hits": hits.hits, "image_index": hits.image_index, "labels": hits.labels}
    meta = {"n_images": hits.n_images, "class_names": hits.class_names}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a temp name
            np.savez(f, meta=json.dumps(meta), **arrays)

    atomic_write(path, write)
    return path


def load_region_hits(ctx: DemoContext, stage: str) -> RegionHits:
    """The outcomes :func:`save_region_hits` wrote for ``stage``; a one-line error when the file is missing."""
    path = region_hits_path(ctx, stage)
    if not path.is_file():
        raise RegionCLIPError(f"{path}: region outcomes not found (written by the demo's zeroshot stage)")
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        return RegionHits(
            data["hits"], data["image_index"], data["labels"], meta["n_images"], meta["class_names"]
        )


@torch.no_grad()
def region_hits(ctx: DemoContext, checkpoint: str, split: str = TABLE_SPLIT) -> RegionHits:
    """Classify every GT box of ``split`` among every category name with the clip checkpoint, as ``regionclip
    eval --boxes gt`` does (its model builder, official templates with cleaned names, precision ``auto``), one
    image per forward (no padding effects); returns the per-region outcomes."""
    from regionclip.concepts import build_concept_bank
    from regionclip.data.coco import CocoDetection, collate_detection
    from regionclip.data.transforms import detector_test_transform
    from regionclip.precision import apply_precision, resolve_precision
    from regionclip.tasks.evaluate import EvalConfig, build_eval_model
    from regionclip.tasks.train_detector import template_set

    paths = _world_paths(ctx)
    size = ctx.plan.image_size
    model = build_eval_model(EvalConfig(checkpoint=checkpoint, boxes="gt", device=ctx.device), "coco")
    dataset = CocoDetection(
        paths[f"{split}_json"], paths[f"{split}_images"], None, detector_test_transform(size, 2 * size)
    )
    names = list(dataset.classes)
    device = torch.device(ctx.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bank = build_concept_bank(model.clip, names, template_set("official"), cache_dir=ctx.out / "cache",
                              clean_class_names=True)  # fmt: skip
    detector = model.detector.to(device).eval()
    apply_precision(detector, resolve_precision("auto", device, log=False))
    embeddings, labels, image_index = [], [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        if not len(sample.boxes):
            continue
        batch, targets, _ = collate_detection([sample])
        boxes = [targets[0]["boxes"].to(device)]
        embeddings.append(detector.embed_boxes(batch.to(device), boxes).float().cpu())
        labels.append(targets[0]["labels"])
        image_index.append(torch.full((len(targets[0]["labels"]),), i, dtype=torch.long))
    if not embeddings:
        raise RegionCLIPError(f"{paths[f'{split}_json']}: no ground-truth boxes to classify")
    labels_t = torch.cat(labels)
    hits = region_top1_hits(torch.cat(embeddings), labels_t, bank.embeddings)
    return RegionHits(hits, torch.cat(image_index).numpy(), labels_t.numpy(), len(dataset), names)


def ovd_split(ctx: DemoContext, split: str = TABLE_SPLIT):
    """The base / novel :class:`~regionclip.data.ovd.OvdSplit` of the world's ``split`` (the table's by default)."""
    from regionclip.data.ovd import OvdSplit

    return OvdSplit.from_json(_world_paths(ctx)[f"{split}_json"])


def region_intervals(
    ctx: DemoContext, a: RegionHits, b: RegionHits | None = None, config: BootstrapConfig = BOOTSTRAP
) -> dict[str, Interval]:
    """``acc_top1`` / ``acc_top1_base`` / ``acc_top1_novel`` intervals of ``a``, or of ``a - b`` (paired)."""
    if b is not None and not np.array_equal(a.labels, b.labels):
        raise RegionCLIPError("paired region bootstrap: the two models were scored on different regions")
    return region_accuracy_intervals(
        a.hits, a.image_index, a.labels, a.n_images, a.class_names, ovd_split(ctx), config,
        hits_b=None if b is None else b.hits,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------- AP50
def detections_path(ctx: DemoContext, eval_name: str) -> Path:
    """The COCO results JSON ``regionclip eval`` wrote for the demo's evaluation ``eval_name``; ``NAME:VARIANT``
    names the file of one scoring variant of that evaluation (``regionclip eval`` ``variants``)."""
    name, _, variant = eval_name.partition(":")
    suffix = f"_{variant}" if variant else ""
    return ctx.out / "eval" / f"{name}_detections{suffix}.json"


def ap50_cache(ctx: DemoContext, detections: str | Path, split: str = TABLE_SPLIT) -> Ap50Cache:
    """Detections of a COCO results JSON matched once to the GT of ``split``."""
    from regionclip.data.coco import load_coco_instances

    path = Path(detections)
    if not path.is_file():
        raise RegionCLIPError(f"{path}: detections file not found (the evaluation behind a results row)")
    results = json.loads(path.read_text(encoding="utf-8"))
    return Ap50Cache.from_coco(load_coco_instances(_world_paths(ctx)[f"{split}_json"]), results)


def ap50_interval_dict(
    ctx: DemoContext, a: Ap50Cache, b: Ap50Cache | None = None, config: BootstrapConfig = BOOTSTRAP
) -> dict[str, Interval]:
    """``AP50_novel`` / ``AP50_base`` / ``AP50_all`` intervals of ``a``, or of ``a - b`` (paired)."""
    return ap50_intervals(a, ovd_split(ctx), config, cache_b=b)


# ---------------------------------------------------------------------------------------------------- rows
def _iv(interval: Interval | None) -> dict[str, float]:
    if interval is None:
        return {"point": math.nan, "lo": math.nan, "hi": math.nan}
    return interval.to_dict()


def bootstrap_rows(
    ctx: DemoContext, specs: Sequence[RowSpec] = ROW_SPECS, config: BootstrapConfig = BOOTSTRAP
) -> list[dict[str, Any]]:
    """The results rows of ``specs`` (results_table format) on the test split, each model's hits / matches
    computed once."""
    hits: dict[str, RegionHits] = {}
    caches: dict[str, Ap50Cache] = {}
    intervals: dict[tuple[str, str, str | None], dict[str, Interval]] = {}
    rows = []
    for spec in specs:
        for side in (spec.clip, spec.regionclip):
            if spec.kind == "region" and side not in hits:
                hits[side] = load_region_hits(ctx, side)
            elif spec.kind == "ap50" and side not in caches:
                caches[side] = ap50_cache(ctx, detections_path(ctx, side))
        if spec.kind not in ("region", "ap50"):
            raise RegionCLIPError(f"row {spec.name!r}: kind must be 'region' or 'ap50', got {spec.kind!r}")
        for a, b in ((spec.clip, None), (spec.regionclip, None), (spec.regionclip, spec.clip)):
            if (spec.kind, a, b) in intervals:
                continue
            if spec.kind == "region":
                value = region_intervals(ctx, hits[a], hits[b] if b else None, config)
            else:
                value = ap50_interval_dict(ctx, caches[a], caches[b] if b else None, config)
            intervals[(spec.kind, a, b)] = value
        rows.append(
            {
                "name": spec.name,
                "clip": _iv(intervals[(spec.kind, spec.clip, None)].get(spec.key)),
                "regionclip": _iv(intervals[(spec.kind, spec.regionclip, None)].get(spec.key)),
                "diff": _iv(intervals[(spec.kind, spec.regionclip, spec.clip)].get(spec.key)),
            }
        )
    return rows

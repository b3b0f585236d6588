"""The demo's report numbers: bootstrap rows on the test split from a fabricated small run (an RN-micro world
of six images, random detections), the printed table, seeds aggregation and the ablation variants."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from regionclip.clip import create_model
from regionclip.clip.checkpoint import save_clip
from regionclip.data.ovd import OvdSplit
from regionclip.demo import PLANS, DemoContext, _world_paths, apply_stage_overrides
from regionclip.demo.evaluation import best_transfer, format_table
from regionclip.demo.stats import (
    ROW_SPECS,
    bootstrap_rows,
    detections_path,
    load_region_hits,
    region_hits,
    region_intervals,
    save_region_hits,
)
from regionclip.errors import ConfigError, RegionCLIPError
from regionclip.eval.coco import evaluate_detections
from regionclip.results_table import results_table

CATS = [("apple", "base"), ("banana", "base"), ("cat", "novel"), ("dog", "novel")]


def _world(root: Path, n_images: int = 6) -> None:
    rng = random.Random(0)
    (root / "images" / "test").mkdir(parents=True)
    (root / "annotations").mkdir(parents=True)
    images, anns = [], []
    for i in range(n_images):
        name = f"{i:03d}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            root / "images" / "test" / name
        )
        images.append({"id": 100 + i, "file_name": name, "width": 64, "height": 64})
        for _ in range(1 + i % 3):
            x, y = rng.randint(0, 30), rng.randint(0, 30)
            w, h = rng.randint(10, 30), rng.randint(10, 30)
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": 1 + len(anns) % 4,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
    cats = [{"id": k + 1, "name": n, "split": s} for k, (n, s) in enumerate(CATS)]
    data = {"images": images, "annotations": anns, "categories": cats}
    (root / "annotations" / "instances_test.json").write_text(json.dumps(data))


def _detections(gt: dict, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for a in gt["annotations"]:  # a jittered copy of most GT boxes, some wrong classes, some noise
        if rng.random() < 0.8:
            x, y, w, h = a["bbox"]
            cat = a["category_id"] if rng.random() < 0.7 else 1 + rng.randrange(4)
            out.append({"image_id": a["image_id"], "category_id": cat, "score": rng.random(),
                        "bbox": [x + rng.uniform(-3, 3), y + rng.uniform(-3, 3), w, h]})  # fmt: skip
    for img in gt["images"]:
        out.append({"image_id": img["id"], "category_id": 1 + rng.randrange(4), "score": rng.random() * 0.5,
                    "bbox": [rng.uniform(0, 40), rng.uniform(0, 40), 15.0, 15.0]})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A fabricated small demo run: world, two RN-micro 'models', detections of every table eval."""
    out = tmp_path_factory.mktemp("demo")
    _world(out / "world")
    torch.manual_seed(0)
    clip = save_clip(create_model("RN-micro"), out / "clip" / "clip.safetensors")
    torch.manual_seed(1)
    student = save_clip(create_model("RN-micro"), out / "pretrain" / "student.safetensors")
    results = {
        "world": {"root": str(out / "world"), "base": ["apple", "banana"], "novel": ["cat", "dog"]},
        "clip": {"checkpoint": str(clip)},
        "pretrain": {"checkpoint": str(student)},
    }
    ctx = DemoContext(PLANS["quick"], out, 0, "cpu", results)
    gt = json.loads(Path(_world_paths(ctx)["test_json"]).read_text())
    names = {s for spec in ROW_SPECS if spec.kind == "ap50" for s in (spec.clip, spec.regionclip)}
    for k, name in enumerate(sorted(names)):
        path = detections_path(ctx, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_detections(gt, k)))
    for stage in ("clip", "pretrain"):  # what the zeroshot stage saves for the region rows
        save_region_hits(ctx, stage, region_hits(ctx, ctx.results[stage]["checkpoint"]))
    return ctx, gt


def test_bootstrap_rows_points_intervals_and_paired_differences(run):
    ctx, gt = run
    rows = bootstrap_rows(ctx)
    assert [r["name"] for r in rows] == [s.name for s in ROW_SPECS]
    for row in rows:
        for side in ("clip", "regionclip"):
            iv = row[side]
            assert 0.0 <= iv["lo"] <= iv["point"] <= iv["hi"] <= 100.0, (row["name"], side)
        d = row["diff"]
        assert d["point"] == pytest.approx(row["regionclip"]["point"] - row["clip"]["point"], abs=1e-9)
        assert d["lo"] <= d["point"] <= d["hi"]
    # the AP50 points are the COCO evaluation of the full test split
    spec = next(s for s in ROW_SPECS if s.kind == "ap50" and s.key == "AP50_novel")
    row = next(r for r in rows if r["name"] == spec.name)
    dets: dict[int, dict] = {}
    for d in json.loads(detections_path(ctx, spec.clip).read_text()):
        entry = dets.setdefault(d["image_id"], {"boxes": [], "scores": [], "labels": []})
        x, y, w, h = d["bbox"]
        entry["boxes"].append([x, y, x + w, y + h])
        entry["scores"].append(d["score"])
        entry["labels"].append(d["category_id"] - 1)
    dets = {i: {k: torch.tensor(v) for k, v in e.items()} for i, e in dets.items()}
    split = OvdSplit(["apple", "banana"], ["cat", "dog"])
    reference = evaluate_detections(gt, dets, [1, 2, 3, 4], split=split)
    assert row["clip"]["point"] == pytest.approx(reference["AP50_novel"], abs=1e-6)
    # the printed table shows point [lo, hi] and the paired difference
    table = format_table(rows)
    assert table.count("\n") == len(rows) + 1
    assert "paired CI" in table and " [" in table.splitlines()[2]


def test_region_hits_are_the_eval_commands_region_accuracy(run):
    ctx, _ = run
    hits = region_hits(ctx, ctx.results["clip"]["checkpoint"])
    assert len(hits.hits) == len(hits.labels) == len(hits.image_index) and hits.n_images == 6
    intervals = region_intervals(ctx, hits)
    from regionclip.commands.evaluate import EvalConfig, EvalDataConfig, evaluate

    paths = _world_paths(ctx)
    size = ctx.plan.image_size
    cfg = EvalConfig(checkpoint=ctx.results["clip"]["checkpoint"], boxes="gt", region_accuracy=True,
                     data=EvalDataConfig(json=paths["test_json"], image_root=paths["test_images"],
                                         test_short_size=size, max_size=2 * size),
                     cache_dir=str(ctx.out / "cache"), device="cpu", progress=False,
                     out=str(ctx.out / "eval" / "gt_check.json"))  # fmt: skip
    metrics = evaluate(cfg)["metrics"]
    accuracy = hits.accuracy(OvdSplit(["apple", "banana"], ["cat", "dog"]))  # the zeroshot stage's numbers
    for key in ("acc_top1", "acc_top1_base", "acc_top1_novel"):
        assert intervals[key].point == pytest.approx(metrics[f"region_{key}"], abs=1e-6), key
        assert accuracy[f"region_{key}"] == pytest.approx(metrics[f"region_{key}"], abs=1e-6), key
    # saved and loaded back unchanged (the report reads what the zeroshot stage wrote)
    loaded = load_region_hits(ctx, "clip")
    for field in ("hits", "image_index", "labels"):
        assert np.array_equal(getattr(loaded, field), getattr(hits, field)), field
    assert (loaded.n_images, loaded.class_names) == (hits.n_images, hits.class_names)


def test_region_rows_need_the_saved_outcomes(run, tmp_path):
    ctx, _ = run
    empty = DemoContext(ctx.plan, tmp_path, 0, "cpu", ctx.results)
    with pytest.raises(RegionCLIPError, match="region_hits.npz: region outcomes not found"):
        load_region_hits(empty, "clip")


def test_best_transfer_picks_the_highest_ap50_all():
    def row(name, clip, regionclip):
        return {"name": name, "clip": {"point": clip}, "regionclip": {"point": regionclip}}

    rows = [row("Transfer detector AP50, all", 5.0, 6.0), row("Transfer detector AP50 + RPN score, all", 9.0, 7.0),
            row("Transfer detector AP50 + RPN score, novel", 50.0, 50.0)]  # fmt: skip
    stage, label, kwargs = best_transfer(rows)
    assert stage == "transfer_clip" and kwargs == {"score_fusion": "sigmoid"} and "CLIP init" in label


def test_report_results_dict_is_a_valid_results_table(run):
    ctx, _ = run
    rows = bootstrap_rows(ctx, [s for s in ROW_SPECS if s.kind == "ap50"][:3])
    text = results_table({"machine": "x", "date": "d", "seed": 0, "rows": rows})
    assert text.count("\n") == 4


def test_stage_overrides_apply_dotted_keys_to_a_stage_config():
    from regionclip.pretrain.config import PretrainConfig

    ctx = DemoContext(PLANS["quick"], Path("."), 0, None, {})
    cfg = PretrainConfig()
    assert apply_stage_overrides(ctx, "pretrain", cfg) is cfg  # nothing to apply
    ctx.overrides = {"pretrain": ["loss.weight_image_text=0", "proposals.kind=random"]}
    new = apply_stage_overrides(ctx, "pretrain", cfg)
    assert new.loss.weight_image_text == 0.0 and new.proposals.kind == "random"
    assert new.loss.weight_region_concept == 1.0 and cfg.loss.weight_image_text == 1.0
    ctx.overrides = {"pretrain": ["loss.no_such_key=1"]}
    with pytest.raises(ConfigError, match="loss.no_such_key"):
        apply_stage_overrides(ctx, "pretrain", cfg)


def test_region_bootstrap_rejects_unpaired_models(run):
    ctx, _ = run
    a = region_hits(ctx, ctx.results["clip"]["checkpoint"])
    b = region_hits(ctx, ctx.results["pretrain"]["checkpoint"])
    b.labels = b.labels[::-1].copy()
    with pytest.raises(RegionCLIPError, match="different regions"):
        region_intervals(ctx, a, b)
    assert math.isfinite(region_intervals(ctx, a)["acc_top1"].point)

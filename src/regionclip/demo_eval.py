"""The demo's evaluation stages (see :mod:`regionclip.demo`): zero-shot region classification and
detection (CLIP vs RegionCLIP), transfer detectors from both initialisations, and the report
(``results.json``, ``results.md``, figures, the printed table).
"""

from __future__ import annotations

import json
from pathlib import Path

from regionclip.demo import OFFICIAL_DETECTOR, DemoContext, _cli, _world_paths, _write_config, scaled_warmup
from regionclip.io import atomic_write_json, atomic_write_text

MODELS = (("CLIP", "clip"), ("RegionCLIP", "pretrain"))  # (label, stage holding its clip checkpoint)


def _clip_checkpoint(ctx: DemoContext, stage: str) -> str:
    return ctx.results[stage]["checkpoint"]


def region_classification(ctx: DemoContext, checkpoint: str) -> dict:
    """Top-1 accuracy of GT val regions over every category name (paper Fig. 1b), overall/base/novel."""
    from regionclip.clip.checkpoint import load_clip
    from regionclip.concepts import build_concept_bank
    from regionclip.data.coco import CocoDetection
    from regionclip.data.ovd import OvdSplit
    from regionclip.data.transforms import detector_test_transform
    from regionclip.eval.region_cls import encode_gt_regions, region_accuracy
    from regionclip.regions import RegionEncoder

    paths = _world_paths(ctx)
    model = load_clip(checkpoint)
    transform = detector_test_transform(ctx.plan.image_size, 2 * ctx.plan.image_size)
    dataset = CocoDetection(paths["val_json"], paths["val_images"], None, transform)
    names = list(dataset.classes)
    bank = build_concept_bank(model, names, cache_dir=ctx.out / "cache")
    # one image per forward (official: one image per GPU at test time): no padding effects
    embeddings, labels = encode_gt_regions(RegionEncoder(model.visual), dataset, batch_size=1)
    split = OvdSplit.from_json(paths["val_json"])
    return region_accuracy(embeddings, labels, bank.embeddings, names, split, topk=(1, 5))  # percent


def _evaluate(ctx: DemoContext, name: str, **fields) -> dict:
    """``regionclip eval`` on the world's val set at the demo's resolution; returns the results JSON."""
    from regionclip.commands.evaluate import EvalConfig, EvalDataConfig

    paths = _world_paths(ctx)
    out = ctx.out / "eval" / f"{name}.json"
    cfg = EvalConfig(
        data=EvalDataConfig(
            json=paths["val_json"],
            image_root=paths["val_images"],
            test_short_size=ctx.plan.image_size,
            max_size=2 * ctx.plan.image_size,
            name="miniature-world val",
        ),
        cache_dir=str(ctx.out / "cache"),
        batch_size=8,
        device=ctx.device,
        out=str(out),
        progress=True,
        **fields,
    )
    _cli("eval", "--config", str(_write_config(ctx.out, f"eval_{name}", cfg)))
    return json.loads(out.read_text(encoding="utf-8"))


def stage_zeroshot(ctx: DemoContext) -> dict:
    """CLIP vs RegionCLIP without detection training: region classification on GT boxes (every category
    name as vocabulary) and zero-shot detection with the RPN's proposals (official zero-shot settings)."""
    rpn = ctx.results["rpn"]["checkpoint"]
    results = {}
    for label, stage in MODELS:
        checkpoint = _clip_checkpoint(ctx, stage)
        gt = _evaluate(ctx, f"zeroshot_{stage}_gt", checkpoint=checkpoint, boxes="gt", region_accuracy=True)
        # sigmoid RPN-score fusion: the official sqrt(p * raw logit) drops every proposal whose logit is
        # negative, which with the miniature world's briefly trained RPN can be all of them
        rpn_eval = _evaluate(
            ctx,
            f"zeroshot_{stage}_rpn",
            checkpoint=checkpoint,
            boxes=f"rpn:{rpn}",
            max_proposals=ctx.plan.eval_proposals,
            score_fusion="sigmoid",
        )
        results[label] = {
            "gt_boxes": gt["metrics"],
            "rpn_boxes": rpn_eval["metrics"],
            "protocol_gt": gt["protocol"],
            "protocol_rpn": rpn_eval["protocol"],
        }
    return {"models": results}


def _transfer(ctx: DemoContext, label: str, init_stage: str, stage: str) -> dict:
    """Train a detector on base classes from the checkpoint of ``init_stage``; outputs in ``OUT/stage``."""
    from regionclip.commands.train_detector import (
        DetDataConfig,
        DetModelConfig,
        DetProposalConfig,
        TrainDetectorConfig,
        VocabularyConfig,
    )
    from regionclip.detect.config import DetectorConfig
    from regionclip.engine.loop import TrainConfig

    p, paths = ctx.plan, _world_paths(ctx)
    out_dir = ctx.out / stage
    size = p.image_size
    cfg = TrainDetectorConfig(
        model=DetModelConfig(preset=p.model, weights=_clip_checkpoint(ctx, init_stage)),
        proposals=DetProposalConfig(
            kind="rpn", checkpoint=ctx.results["rpn"]["checkpoint"], preset="transfer"
        ),
        detector=DetectorConfig(
            recipe="coco",
            rois_per_image=p.detector_rois,
            # τ of the cosine classifier by the plan's temperature rule: 1 / the teacher's logit scale
            # (official 0.01 = 1 / OpenAI CLIP's 100), for both initialisations
            temperature=ctx.results.get("calibrate", {}).get("temperature", 0.01),
        ),
        vocabulary=VocabularyConfig(templates="official", cache_dir=str(ctx.out / "cache")),
        data=DetDataConfig(
            train_json=paths["train_json"],
            image_root=paths["train_images"],
            short_sizes=[size - 16, size, size + 16],
            max_size=2 * size,
            test_short_size=size,
        ),
        train=TrainConfig(
            max_steps=p.detector_steps,
            batch_size=p.detector_batch,
            lr=p.detector_lr,
            warmup_steps=scaled_warmup(OFFICIAL_DETECTOR, p.detector_steps),
            lr_milestones=OFFICIAL_DETECTOR.milestones,
            checkpoint_every=max(1, p.detector_steps // 3),
            log_every=max(1, p.detector_steps // 20),
            seed=ctx.seed,
        ),
        out_dir=str(out_dir),
        device=ctx.device,
    )
    _cli("train-detector", "--config", str(_write_config(ctx.out, stage, cfg)))
    checkpoint = out_dir / "detector.safetensors"
    # the official COCO recipe: the classifier's score alone
    evaluation = _evaluate(ctx, stage, checkpoint=str(checkpoint), max_proposals=p.eval_proposals)
    # the same detector with the RPN objectness fused in, as the zero-shot rows (and the official LVIS
    # recipe) score: a like-for-like comparison with zero-shot detection
    fused = _evaluate(
        ctx,
        f"{stage}_rpn_score",
        checkpoint=str(checkpoint),
        max_proposals=p.eval_proposals,
        score_fusion="sigmoid",
    )
    return {
        "label": label,
        "checkpoint": str(checkpoint),
        "metrics": evaluation["metrics"],
        "protocol": evaluation["protocol"],
        "metrics_rpn_score": fused["metrics"],
        "protocol_rpn_score": fused["protocol"],
    }


def stage_transfer_clip(ctx: DemoContext) -> dict:
    return _transfer(ctx, "CLIP", "clip", "transfer_clip")


def stage_transfer_regionclip(ctx: DemoContext) -> dict:
    return _transfer(ctx, "RegionCLIP", "pretrain", "transfer_regionclip")


def stage_ensemble(ctx: DemoContext) -> dict:
    """Both transfer detectors evaluated again with ``detector.ensemble=frozen``: their scores ensembled with
    the frozen region classifier they were initialised from (F-VLM weights 0.35 seen / 0.65 unseen), otherwise
    the settings of the plain transfer rows (the official COCO recipe)."""
    from regionclip.detect.ensemble import EnsembleConfig

    results = {}
    for stage in ("transfer_clip", "transfer_regionclip"):
        evaluation = _evaluate(
            ctx,
            f"{stage}_ensemble",
            checkpoint=ctx.results[stage]["checkpoint"],
            max_proposals=ctx.plan.eval_proposals,
            detector=EnsembleConfig(ensemble="frozen"),
        )
        results[stage] = {"metrics": evaluation["metrics"], "protocol": evaluation["protocol"]}
    return {"detectors": results}


def _num(metrics: dict, key: str) -> float:
    value = metrics.get(key)
    return float("nan") if value is None else float(value)


def comparison_rows(ctx: DemoContext) -> list[tuple[str, float, float]]:
    """(row label, CLIP value, RegionCLIP value) of the results table; percentages."""
    z = ctx.results["zeroshot"]["models"]
    rows: list[tuple[str, float, float]] = []
    for key, label in (
        ("region_acc_top1", "all"),
        ("region_acc_top1_base", "base"),
        ("region_acc_top1_novel", "novel"),
    ):
        rows.append(
            (
                f"Zero-shot region classification top-1, {label} (GT boxes)",
                _num(z["CLIP"]["gt_boxes"], key),
                _num(z["RegionCLIP"]["gt_boxes"], key),
            )
        )
    for key, label in (("AP50_novel", "novel"), ("AP50_base", "base"), ("AP50_all", "all")):
        rows.append(
            (
                f"Zero-shot detection AP50, {label} (RPN boxes)",
                _num(z["CLIP"]["rpn_boxes"], key),
                _num(z["RegionCLIP"]["rpn_boxes"], key),
            )
        )
    clip_t, region_t = ctx.results["transfer_clip"], ctx.results["transfer_regionclip"]
    for field, suffix in (("metrics", ""), ("metrics_rpn_score", " + RPN score")):
        for key, label in (("AP50_novel", "novel"), ("AP50_base", "base"), ("AP50_all", "all")):
            rows.append(
                (
                    f"Transfer detector AP50{suffix}, {label}",
                    _num(clip_t.get(field, {}), key),
                    _num(region_t.get(field, {}), key),
                )
            )
    ensemble = ctx.results.get("ensemble", {}).get("detectors", {})
    for key, label in (("AP50_novel", "novel"), ("AP50_base", "base"), ("AP50_all", "all")):
        rows.append(
            (
                f"Transfer detector AP50 + frozen ensemble, {label}",
                _num(ensemble.get("transfer_clip", {}).get("metrics", {}), key),
                _num(ensemble.get("transfer_regionclip", {}).get("metrics", {}), key),
            )
        )
    return rows


def format_table(rows: list[tuple[str, float, float]]) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [
        f"| {'metric (%)':<{width}} |   CLIP | RegionCLIP |",
        f"|{'-' * (width + 2)}|-------:|-----------:|",
    ]
    for name, a, b in rows:
        lines.append(f"| {name:<{width}} | {a:6.1f} | {b:10.1f} |")
    return "\n".join(lines)


def _detection_figure(ctx: DemoContext, path: Path, count: int = 4) -> None:
    from PIL import Image

    from regionclip.detect.api import Detector
    from regionclip.figures import image_grid

    paths = _world_paths(ctx)
    val = json.loads(Path(paths["val_json"]).read_text(encoding="utf-8"))
    names = [c["name"] for c in sorted(val["categories"], key=lambda c: c["id"])]
    novel = set(ctx.results["world"]["novel"])
    # sample images that contain a novel object, the interesting case
    novel_ids = {c["id"] for c in val["categories"] if c["name"] in novel}
    with_novel = sorted({a["image_id"] for a in val["annotations"] if a["category_id"] in novel_ids})
    files = {img["id"]: img["file_name"] for img in val["images"]}
    chosen = [Path(paths["val_images"]) / files[i] for i in with_novel[:count]]
    rows, labels = [], []
    for stage, label in (("transfer_clip", "CLIP init"), ("transfer_regionclip", "RegionCLIP init")):
        det = Detector.from_pretrained(ctx.results[stage]["checkpoint"], cache_dir=ctx.out / "cache")
        results = det(
            [Image.open(f).convert("RGB") for f in chosen],
            vocabulary=names,
            score_thresh=0.05,
            max_dets=3,
            nms="hard",
        )
        rows.append([r.plot(min_score=0.05, max_boxes=3) for r in results])
        labels.append(f"{label}: top-3 detections (score >= 0.05) on val images with novel objects")
    image_grid(rows, labels).save(path)


def stage_report(ctx: DemoContext) -> dict:
    from regionclip.figures import bar_chart

    rows = comparison_rows(ctx)
    table = format_table(rows)
    figures = ctx.out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    chart = figures / "comparison.png"
    picked = [r for r in rows if "novel" in r[0] or r[0].endswith("all (GT boxes)")]
    bar_chart(
        [r[0].replace(" (GT boxes)", "").replace(" (RPN boxes)", "").replace(", ", "\n", 1) for r in picked],
        {"CLIP": [r[1] for r in picked], "RegionCLIP": [r[2] for r in picked]},
        "Miniature world: CLIP vs RegionCLIP (val set)",
        width=1200,
    ).save(chart)
    detections = figures / "detections.png"
    _detection_figure(ctx, detections)
    stage_seconds = {name: ctx.results[name]["seconds"] for name in ctx.results if name != "report"}
    results = {
        "plan": ctx.plan.__dict__,
        "seed": ctx.seed,
        "table": rows,
        "world": {k: v for k, v in ctx.results["world"].items() if k != "key"},
        "concepts": {
            k: ctx.results["concepts"][k] for k in ("num_concepts", "categories_in_pool", "novel_in_pool")
        },
        "rpn_recall": ctx.results["rpn"]["recall"].get("recall"),
        "zeroshot": ctx.results["zeroshot"]["models"],
        "transfer": {s: ctx.results[s]["metrics"] for s in ("transfer_clip", "transfer_regionclip")},
        "transfer_rpn_score": {
            s: ctx.results[s].get("metrics_rpn_score") for s in ("transfer_clip", "transfer_regionclip")
        },
        "transfer_ensemble": {
            s: m["metrics"] for s, m in ctx.results.get("ensemble", {}).get("detectors", {}).items()
        },
        "stage_seconds": stage_seconds,
    }
    atomic_write_json(ctx.out / "results.json", results)
    from regionclip.demo_report import results_markdown

    atomic_write_text(ctx.out / "results.md", results_markdown(ctx, table, stage_seconds))
    return {
        "table": "\n" + table,
        "results": str(ctx.out / "results.json"),
        "figures": [str(chart), str(detections)],
    }

"""The demo's evaluation stages (see :mod:`regionclip.demo`): zero-shot region classification and
detection (CLIP vs RegionCLIP), transfer detectors from both initialisations, and the report
(``results.json``, ``results.md``, figures, the printed table).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

from regionclip.demo.context import (
    OFFICIAL_DETECTOR,
    DemoContext,
    _cli,
    _world_paths,
    _write_config,
    apply_stage_overrides,
    n_test_images,
    scaled_train_config,
)
from regionclip.demo.report import _cpu
from regionclip.errors import RegionCLIPError
from regionclip.io import atomic_write, atomic_write_json, atomic_write_text

MODELS = (("CLIP", "clip"), ("RegionCLIP", "pretrain"))  # (label, stage holding its clip checkpoint)
TRANSFER_VARIANTS = ("sigmoid", "ensemble")  # scorings of each transfer detector beside the classifier alone


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


def _evaluate(ctx: DemoContext, name: str, split: str = "test", **fields) -> dict:
    """``regionclip eval`` on the world's ``split`` (test: the table's; val: development) at the demo's
    resolution; returns the results JSON (its detections lie next to it, ``<name>_detections.json``)."""
    from regionclip.tasks.evaluate import EvalConfig, EvalDataConfig

    paths = _world_paths(ctx)
    out = ctx.out / "eval" / f"{name}.json"
    cfg = EvalConfig(
        data=EvalDataConfig(
            json=paths[f"{split}_json"],
            image_root=paths[f"{split}_images"],
            test_short_size=ctx.plan.image_size,
            max_size=2 * ctx.plan.image_size,
            name=f"miniature-world {split}",
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
    """CLIP vs RegionCLIP without detection training: region classification on the test split's GT boxes
    (every category name as vocabulary; the per-region outcomes saved for the report's intervals,
    :func:`regionclip.demo.stats.save_region_hits`) and zero-shot detection with the RPN's proposals
    (official zero-shot settings)."""
    from regionclip.demo.stats import ovd_split, region_hits, save_region_hits

    rpn = ctx.results["rpn"]["checkpoint"]
    split = ovd_split(ctx)
    results = {}
    for label, stage in MODELS:
        if ctx.only_models is not None and stage not in ctx.only_models:  # ablations: one model
            continue
        checkpoint = _clip_checkpoint(ctx, stage)
        hits = region_hits(ctx, checkpoint)
        save_region_hits(ctx, stage, hits)
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
            "gt_boxes": hits.accuracy(split),
            "rpn_boxes": rpn_eval["metrics"],
            "protocol_rpn": rpn_eval["protocol"],
        }
    return {"models": results}


def _transfer(ctx: DemoContext, label: str, init_stage: str, stage: str) -> dict:
    """Train a detector on base classes from the checkpoint of ``init_stage``; outputs in ``OUT/stage``."""
    from regionclip.detect.config import DetectorConfig
    from regionclip.tasks.train_detector import (
        DetDataConfig,
        DetModelConfig,
        DetProposalConfig,
        TrainDetectorConfig,
        VocabularyConfig,
    )

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
        train=scaled_train_config(OFFICIAL_DETECTOR, p.detector_steps, p.detector_batch, ctx.seed),
        out_dir=str(out_dir),
        device=ctx.device,
    )
    cfg = apply_stage_overrides(ctx, "transfer", cfg)
    _cli("train-detector", "--config", str(_write_config(ctx.out, stage, cfg)))
    checkpoint = out_dir / "detector.safetensors"
    # one pass, three scorings (regionclip eval `variants`): the official COCO recipe (the classifier's score
    # alone); "sigmoid", the RPN objectness fused in as the zero-shot rows (and the official LVIS recipe)
    # score, a like-for-like comparison with zero-shot detection; "ensemble", the scores ensembled with the
    # frozen region classifier the detector started from (F-VLM weights 0.35 seen / 0.65 unseen)
    evaluation = _evaluate(
        ctx,
        stage,
        checkpoint=str(checkpoint),
        max_proposals=p.eval_proposals,
        variants=list(TRANSFER_VARIANTS),
    )
    variants = evaluation["variants"]
    for name in TRANSFER_VARIANTS:
        if "skipped" in variants[name]:
            raise RegionCLIPError(f"{stage}: eval variant {name!r} was skipped: {variants[name]['skipped']}")
    return {
        "label": label,
        "checkpoint": str(checkpoint),
        "metrics": evaluation["metrics"],
        "protocol": evaluation["protocol"],
        "metrics_rpn_score": variants["sigmoid"]["metrics"],
        "protocol_rpn_score": variants["sigmoid"]["protocol"],
        "metrics_ensemble": variants["ensemble"]["metrics"],
        "protocol_ensemble": variants["ensemble"]["protocol"],
    }


def stage_transfer_clip(ctx: DemoContext) -> dict:
    return _transfer(ctx, "CLIP", "clip", "transfer_clip")


def stage_transfer_regionclip(ctx: DemoContext) -> dict:
    return _transfer(ctx, "RegionCLIP", "pretrain", "transfer_regionclip")


# ---------------------------------------------------------------------------------------------------------
# report: every row on the test split with its bootstrap interval (regionclip.demo.stats)

# the scoring of each transfer row group: Detector.from_pretrained keywords drawing it the same way
TRANSFER_SCORING = {
    "Transfer detector AP50": {},
    "Transfer detector AP50 + RPN score": {"score_fusion": "sigmoid"},
    "Transfer detector AP50 + frozen ensemble": {"ensemble": "frozen"},
}


def comparison_rows(ctx: DemoContext) -> list[dict]:
    """The results rows (:mod:`regionclip.results_table` format: ``name``, ``clip`` / ``regionclip`` /
    ``diff`` intervals, percent) on the test split, with 95% bootstrap intervals over test images."""
    from regionclip.demo.stats import bootstrap_rows

    return bootstrap_rows(ctx)


def format_table(rows: list[dict], confidence: float = 0.95) -> str:
    """The printed / markdown table: ``point [lo, hi]`` per model and ``diff [lo, hi]`` (paired)."""
    from regionclip.results_table import rows_table

    return rows_table(rows, confidence)


def best_transfer(rows: list[dict]) -> tuple[str, str, dict]:
    """(stage, label, Detector.from_pretrained keywords) of the transfer detector and scoring with the highest
    AP50 (all) point on the test split (RegionCLIP on ties)."""
    best: tuple[float, str, str, dict] | None = None
    for row in rows:
        prefix, _, part = row["name"].rpartition(", ")
        if prefix not in TRANSFER_SCORING or part != "all":
            continue
        for key, stage, label in (("regionclip", "transfer_regionclip", "RegionCLIP init"),
                                  ("clip", "transfer_clip", "CLIP init")):  # fmt: skip
            value = row[key]["point"]
            if value == value and (best is None or value > best[0]):
                best = (
                    value,
                    stage,
                    f"{label}, {prefix[len('Transfer detector ') :]}",
                    TRANSFER_SCORING[prefix],
                )
    if best is None:
        return "transfer_regionclip", "RegionCLIP init, AP50", {}
    return best[1], best[2], best[3]


def _detection_figure(ctx: DemoContext, path: Path, rows: list[dict], count: int = 6) -> str:
    """The best transfer detector's detections (names and scores) on test images, above their ground truth;
    returns what it drew."""
    import torch
    from PIL import Image

    from regionclip.detect.api import DetectionResult, Detector
    from regionclip.figures import image_grid

    paths = _world_paths(ctx)
    test = json.loads(Path(paths["test_json"]).read_text(encoding="utf-8"))
    cats = sorted(test["categories"], key=lambda c: c["id"])
    names = [c["name"] for c in cats]
    index = {c["id"]: k for k, c in enumerate(cats)}
    novel_ids = {c["id"] for c in cats if c["name"] in set(ctx.results["world"]["novel"])}
    boxes: dict[int, list[dict]] = {}
    for a in test["annotations"]:
        boxes.setdefault(a["image_id"], []).append(a)
    with_novel = [i for i in sorted(boxes) if any(a["category_id"] in novel_ids for a in boxes[i])]
    base_only = [i for i in sorted(boxes) if i not in set(with_novel)]
    chosen_ids = with_novel[: count - count // 3] + base_only[: count // 3]
    files = {img["id"]: img["file_name"] for img in test["images"]}
    images = [Image.open(Path(paths["test_images"]) / files[i]).convert("RGB") for i in chosen_ids]
    stage, label, kwargs = best_transfer(rows)
    size = ctx.plan.image_size
    det = Detector.from_pretrained(
        ctx.results[stage]["checkpoint"],
        cache_dir=ctx.out / "cache",
        min_size=size,
        max_size=2 * size,
        **kwargs,
    )
    found = det(images, vocabulary=names)
    truth = []
    for i, img in zip(chosen_ids, images, strict=True):
        xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in boxes[i])])
        labels = torch.tensor([index[a["category_id"]] for a in boxes[i]])
        truth.append(DetectionResult(xyxy, torch.ones(len(labels)), labels, torch.zeros(0), names, img))
    min_score = 0.3
    grid = image_grid(
        [[r.plot(min_score=min_score, max_boxes=6) for r in found], [r.plot(min_score=0.0) for r in truth]],
        [f"{label}: detections with score >= {min_score} on test images (the best transfer detector)",
         "ground truth (every box shown with score 1.00)"],
    )  # fmt: skip
    atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))
    return f"{label} ({stage})"


def machine() -> dict:
    """Where the numbers were measured (another CPU gives other digits for the same seed)."""
    import torch

    cpu, cores = _cpu(), os.cpu_count()
    return {
        "machine": f"{cpu}, {cores} cores, CPU only",
        "cpu": cpu,
        "cores": cores,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def stage_report(ctx: DemoContext) -> dict:
    from regionclip.demo.report import results_markdown
    from regionclip.demo.stats import BOOTSTRAP, TABLE_SPLIT
    from regionclip.plots import comparison_chart

    rows = comparison_rows(ctx)
    table = format_table(rows, BOOTSTRAP.confidence)
    figures = ctx.out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    chart = figures / "comparison.png"
    picked = [r for r in rows if "novel" in r["name"] or r["name"].endswith("all (GT boxes)")]
    comparison_chart(
        [{**r, "name": r["name"].replace(" (GT boxes)", "").replace(" (RPN boxes)", "")} for r in picked],
        chart,
        f"Miniature world: CLIP vs RegionCLIP ({TABLE_SPLIT} split, seed {ctx.seed})",
    )
    detections = figures / "detections.png"
    drawn = _detection_figure(ctx, detections, rows)
    stage_seconds = {name: ctx.results[name]["seconds"] for name in ctx.results if name != "report"}
    results = {
        **machine(),
        "date": datetime.date.today().isoformat(),
        "seed": ctx.seed,
        "world_seed": ctx.world_seed,
        "split": TABLE_SPLIT,
        "n_images": n_test_images(ctx.plan),
        "resamples": BOOTSTRAP.n_resamples,
        "confidence": BOOTSTRAP.confidence,
        "rows": rows,
        "table": [[r["name"], r["clip"]["point"], r["regionclip"]["point"]] for r in rows],
        "detections_figure": drawn,
        "plan": ctx.plan.__dict__,
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
            s: ctx.results[s].get("metrics_ensemble") for s in ("transfer_clip", "transfer_regionclip")
        },
        "stage_seconds": stage_seconds,
    }
    ablations = ctx.out / "ablations.json"
    if ablations.is_file():  # `--ablations` ran before: its table stays part of results.json
        results["ablations"] = json.loads(ablations.read_text(encoding="utf-8"))
    atomic_write_json(ctx.out / "results.json", results)
    atomic_write_text(ctx.out / "results.md", results_markdown(ctx, results, stage_seconds))
    return {
        "table": "\n" + table,
        "results": str(ctx.out / "results.json"),
        "figures": [str(chart), str(detections)],
    }

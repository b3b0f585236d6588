"""The eval task (``regionclip eval``): evaluate a detector (transfer) or a CLIP / RegionCLIP model (zero-shot) on a COCO-format
or LVIS val set, recording the protocol with the numbers (method reference §6.5-6.6 and §7; users.md:
"protocols differ silently").

    regionclip eval --config configs/eval_coco_rn50.yaml [key.sub=value ...]
    regionclip eval --checkpoint runs/detector/detector.safetensors --data val.json --images val/ [--out r.json]
    regionclip eval --checkpoint student.safetensors --boxes rpn:rpn.safetensors --data ... --images ...

Models: a ``detector`` checkpoint (its own RPN, recipe settings: COCO soft-NMS σ 0.5, 100 detections, score
0.001, no fusion; LVIS 300, 0.02, fusion ``logit``), or a ``clip`` checkpoint (plain CLIP or the pretrained
student; OpenAI ``.pt`` with ``preset``) evaluated zero-shot with ``boxes: rpn:CKPT`` (zero-shot preset: NMS 0.9,
1000 boxes; fusion ``logit``) or ``boxes: gt`` (fusion off), hard NMS 0.5 and no box deltas (official). Every
setting can be overridden. ``boxes: gt`` on a detector checkpoint evaluates its classifier on GT boxes.

The vocabulary is every category of the val JSON (generalized protocol, default) or only the novel ones
(``protocol: novel_only``; the GT is restricted to them and to the images containing them, like the official
``ovd_ins_val2017_t.json``), embedded with the model's text tower (official templates unless the checkpoint or
``templates`` says otherwise; cached on disk). Base / novel come from the JSON's ``split`` fields, the names
files, the detector checkpoint's stored split, or COCO's 48/17.

Outputs: ``out`` (``{"metrics", "protocol"}``: AP50_novel / AP50_base / AP50_all + the 12 COCO stats, or LVIS
AP / APr / APc / APf; region accuracy on GT boxes when asked for or when the boxes are GT; images; seconds),
a COCO results JSON of the detections in ORIGINAL image pixels (``detections_out``, default
``<out stem>_detections.json``), and a table on stdout.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm import tqdm

from regionclip.concepts import build_concept_bank
from regionclip.data.coco import CocoDetection, collate_detection, load_coco_instances, read_json
from regionclip.data.lvis import load_lvis_instances
from regionclip.data.ovd import OvdSplit
from regionclip.data.transforms import detector_test_transform
from regionclip.detect.api import default_cache_dir
from regionclip.detect.ensemble import EnsembleConfig, build_frozen_classifier
from regionclip.detect.loading import InferenceModel, load_for_inference
from regionclip.engine.sharding import gather_lists, inference_job, shard_indices
from regionclip.errors import CheckpointError, ConfigError, DataError
from regionclip.eval.coco import evaluate_detections, write_coco_results
from regionclip.eval.lvis import evaluate_lvis
from regionclip.eval.protocol import Protocol, write_results
from regionclip.eval.region_cls import region_accuracy
from regionclip.precision import apply_precision, resolve_precision
from regionclip.tasks.inference import readable_batches
from regionclip.tasks.train_detector import (
    resolve_split,
    template_name,
    template_set,
)


@dataclass
class EvalDataConfig:
    json: str = ""  # COCO-format val JSON (e.g. ovd_ins_val2017_all.json) or LVIS v1 val (with lvis: true)
    image_root: str = ""  # folder the JSON's file_name entries are relative to
    lvis: bool = False  # LVIS v1 file: LVIS loader and the LVIS API (APr / APc / APf)
    base_classes: str | None = (
        None  # names file of the base classes (default: JSON split / checkpoint / COCO)
    )
    novel_classes: str | None = None  # names file of the novel classes
    test_short_size: int | None = None  # test short side (None: the checkpoint's, else 800)
    max_size: int | None = None  # test long-side cap (None: the checkpoint's, else 1333)
    max_images: int | None = None  # evaluate only the first N images (GT restricted to them; debugging)
    name: str | None = None  # dataset name recorded in the protocol (default: the JSON path)


@dataclass
class EvalConfig:
    checkpoint: str = ""  # detector checkpoint (transfer) or clip checkpoint / OpenAI .pt (zero-shot)
    preset: str | None = None  # CLIP preset of an OpenAI .pt checkpoint
    text_weights: str | None = None  # CLIP file giving the text tower when the checkpoint has none
    boxes: str | None = None  # None: the detector's RPN; "gt"; "rpn:PATH" (an rpn checkpoint)
    rpn_preset: Literal["pretraining", "transfer", "zero_shot"] | None = None  # None: zero_shot for clip
    max_proposals: int | None = (
        None  # keep only the best N RPN proposals per image (None: the preset's, 1000)
    )
    protocol: Literal["generalized", "novel_only"] = "generalized"  # vocabulary: all classes or novel only
    recipe: Literal["coco", "lvis"] | None = None  # zero-shot settings (None: lvis if data.lvis else coco)
    templates: Literal["official", "simple"] | None = None  # None: the checkpoint's, else official
    clean_class_names: bool | None = None  # official get_cls_names cleaning; None: ckpt's, else on
    cache_dir: str | None = None  # class-embedding cache (default $REGIONCLIP_CACHE or ~/.cache/regionclip)
    score_thresh: float | None = None  # override of the score threshold
    nms: Literal["soft", "hard"] | None = None  # override of the per-class NMS kind
    nms_thresh: float | None = None  # override of the hard-NMS IoU threshold
    max_dets: int | None = None  # override of the detections per image
    score_fusion: Literal["none", "logit", "sigmoid"] | None = None  # override of the RPN score fusion
    apply_box_deltas: bool | None = None  # override: move boxes by the regressor (False for zero-shot / GT)
    batched_inference: bool | None = None  # override: trunk on the padded batch (default per image, exact)
    region_accuracy: bool = False  # also region classification top-1 on GT boxes (always with boxes: gt)
    batch_size: int = 2  # images per forward pass
    num_workers: int = 0  # DataLoader workers reading images
    device: str | None = None  # "cpu", "cuda", ... (None: CUDA when available)
    precision: Literal["fp32", "bf16", "auto"] = "auto"  # networks in fp32 or bf16 (auto: bf16 if native)
    out: str = "eval/results.json"  # results JSON (metrics + protocol)
    detections_out: str | None = None  # COCO results JSON (default: <out stem>_detections.json)
    progress: bool = True  # progress bar on stderr
    data: EvalDataConfig = field(default_factory=EvalDataConfig)  # the evaluated set
    detector: EnsembleConfig = field(default_factory=EnsembleConfig)  # detector.ensemble=frozen etc. (F-VLM)
    variants: list[str] = field(
        default_factory=list
    )  # extra scorings of the same pass: none|logit|sigmoid|ensemble


@dataclass
class EvalProtocol(Protocol):
    """:class:`Protocol` plus the choices specific to this command."""

    mode: str = "transfer"  # transfer (detector checkpoint) or zero-shot (clip checkpoint)
    templates: str = "official"  # prompt templates of the vocabulary embeddings
    clean_class_names: bool = True  # class names cleaned before prompting (official get_cls_names)
    apply_box_deltas: bool = True  # boxes moved by the class-agnostic regressor
    proposal_preset: str | None = None  # RPN proposal preset (NMS / top-k), None for GT boxes
    max_proposals: int | None = None  # proposals kept per image when fewer than the preset's
    base_classes: list[str] = field(default_factory=list)  # base classes of the split
    novel_classes: list[str] = field(default_factory=list)  # novel classes of the split
    precision: str = "fp32"  # what the networks ran in (fp32 or bf16; outputs and NMS always fp32)
    world_size: int = 1  # processes that shared the images (torchrun ranks)


# ------------------------------------------------------------------------------------------- model


def _detector_overrides(cfg: EvalConfig) -> dict[str, Any]:
    names = (
        "score_thresh",
        "nms",
        "nms_thresh",
        "max_dets",
        "score_fusion",
        "apply_box_deltas",
        "batched_inference",
    )
    return {n: getattr(cfg, n) for n in names if getattr(cfg, n) is not None}


def _parse_boxes(boxes: str | None) -> tuple[str | None, str | None]:
    if boxes is None or boxes == "":
        return None, None
    if boxes == "gt":
        return "gt", None
    if boxes.startswith("rpn:") and len(boxes) > 4:
        return "rpn", boxes[4:]
    raise ConfigError(f"boxes: expected 'gt' or 'rpn:PATH' (an rpn checkpoint), got {boxes!r}")


def build_eval_model(cfg: EvalConfig, recipe: str) -> InferenceModel:
    """The detector to evaluate (see the module doc) around the checkpoint of ``cfg``: the reading is
    :func:`~regionclip.detect.loading.load_for_inference`'s, as for ``Detector.from_pretrained``."""
    if not cfg.checkpoint:
        raise ConfigError("checkpoint is not set (--checkpoint FILE: a detector or clip checkpoint)")
    source, rpn_path = _parse_boxes(cfg.boxes)
    model = load_for_inference(
        cfg.checkpoint,
        rpn=rpn_path,
        gt_boxes=source == "gt",
        rpn_preset=cfg.rpn_preset,
        clip_preset=cfg.preset,
        text_weights=cfg.text_weights,
        recipe=recipe,  # type: ignore[arg-type]
        ensemble=cfg.detector,
        max_proposals=cfg.max_proposals,
        overrides=_detector_overrides(cfg),
    )
    if model.mode == "zero-shot" and source is None and model.box_source != "rpn":
        raise ConfigError(
            f"{model.path}: a clip checkpoint is evaluated zero-shot and needs a box source: "
            "boxes=gt or boxes=rpn:RPN_CHECKPOINT (--boxes)"
        )
    model.detector.mask_head = None  # box evaluation only
    return model


# -------------------------------------------------------------------------------------------- data


def _restrict(instances: dict, category_names: list[str] | None, max_images: int | None) -> dict:
    """A copy keeping the categories ``category_names`` (their annotations and the images with any) and at
    most the first ``max_images`` images."""
    data = dict(instances)
    if category_names is not None:
        keep = set(category_names)
        cats = [c for c in data["categories"] if c["name"] in keep]
        ids = {c["id"] for c in cats}
        anns = [a for a in data["annotations"] if a["category_id"] in ids]
        with_anns = {a["image_id"] for a in anns}
        data.update(
            categories=cats, annotations=anns, images=[i for i in data["images"] if i["id"] in with_anns]
        )
    if max_images is not None:
        images = data["images"][: max(0, max_images)]
        ids = {i["id"] for i in images}
        data.update(images=images, annotations=[a for a in data["annotations"] if a["image_id"] in ids])
    return data


# ------------------------------------------------------------------------------------------ evaluate


def merge_shards(dataset, dist, detections, scales, region_emb, region_labels, unreadable, variants=None):
    """Every rank's results (see :mod:`regionclip.engine.sharding`), merged in the dataset's image order.

    variants: ``{name: {image id: detections}}`` of the scoring variants (merged like ``detections``);
    returned as a sixth item when given."""
    parts = gather_lists([(detections, scales, region_emb, region_labels, unreadable, variants or {})], dist)
    order = [img["id"] for img in dataset.images]

    def merged(pick) -> dict:
        every = {k: v for part in parts for k, v in pick(part).items()}
        return {k: every[k] for k in order if k in every}

    detections = merged(lambda part: part[0])
    scales = {k: v for part in parts for k, v in part[1].items()}
    region_emb = [t for part in parts for t in part[2]]
    region_labels = [t for part in parts for t in part[3]]
    unreadable = [m for part in parts for m in part[4]]
    if variants is None:
        return detections, scales, region_emb, region_labels, unreadable
    variants = {name: merged(lambda part, n=name: part[5][n]) for name in variants}
    return detections, scales, region_emb, region_labels, unreadable, variants


VARIANTS = ("none", "logit", "sigmoid", "ensemble")  # score fusions, and the frozen-classifier ensemble


@dataclass
class Variant:
    """One scoring of the shared inference pass: the RPN-score fusion and the ensemble module (or None)."""

    name: str  # a name of VARIANTS
    score_fusion: str  # none | logit | sigmoid
    ensemble: nn.Module | None  # FrozenRegionClassifier, or None: the classifier's scores alone
    skipped: str | None = None  # why the variant cannot be scored with this checkpoint (None: it can)


def build_variants(cfg: EvalConfig, model: InferenceModel) -> list[Variant]:
    """The scoring variants of ``cfg.variants`` for ``model``: each fusion name changes only the RPN-score
    fusion; ``ensemble`` adds the frozen-classifier ensemble (:mod:`regionclip.detect.ensemble`, with the
    ``detector.ensemble_*`` settings) to the main fusion, when the checkpoint can build it."""
    detector = model.detector
    variants = []
    for name in dict.fromkeys(cfg.variants):
        if name not in VARIANTS:
            raise ConfigError(f"variants: expected names of {list(VARIANTS)}, got {name!r}")
        if name != "ensemble":
            variants.append(Variant(name, name, detector.ensemble))
            continue
        if detector.ensemble is not None:
            variants.append(Variant(name, detector.inference.score_fusion, detector.ensemble))
            continue
        if model.mode != "transfer":
            reason = "a clip checkpoint is evaluated zero-shot: it is already the frozen model"
            variants.append(Variant(name, detector.inference.score_fusion, None, reason))
            continue
        settings = dataclasses.replace(cfg.detector, ensemble="frozen")
        try:
            frozen = build_frozen_classifier(settings, detector.backbone, model.config, model.path)
        except CheckpointError as err:
            variants.append(Variant(name, detector.inference.score_fusion, None, str(err)))
            continue
        variants.append(Variant(name, detector.inference.score_fusion, frozen.eval()))
    return variants


def _variant_path(det_path: Path, name: str) -> Path:
    return det_path.with_name(f"{det_path.stem}_{name}{det_path.suffix}")


def _fusion_name(fusion: str) -> str:
    return {"none": "none", "logit": "rpn-logit-sqrt", "sigmoid": "rpn-sigmoid-sqrt"}[fusion]


def evaluate(cfg: EvalConfig) -> dict:
    """Run the evaluation of ``cfg``; writes the results and detections JSONs and returns
    ``{"metrics", "protocol", "results", "detections"}``."""

    d = cfg.data
    if not d.json or not d.image_root:
        raise ConfigError("data.json and data.image_root must be set (--data VAL_JSON --images IMAGE_DIR)")
    if not Path(d.json).is_file():
        raise DataError(f"data.json: file not found: {d.json}")
    recipe = cfg.recipe or ("lvis" if d.lvis else "coco")
    model = build_eval_model(cfg, recipe)

    # ---- the set, its split and the vocabulary
    if d.lvis:
        raw = read_json(d.json)
        instances = load_lvis_instances(raw, "val")
    else:
        raw = None
        instances = load_coco_instances(d.json)
    split = resolve_split(instances, d.json, d.base_classes, d.novel_classes, model.config.get("split"))
    all_names = [c["name"] for c in sorted(instances["categories"], key=lambda c: c["id"])]
    if cfg.protocol == "novel_only":
        if split is None or not split.novel:
            raise DataError(
                f"{d.json}: protocol novel_only needs the novel classes: no category has a 'split' field; "
                "give data.novel_classes=FILE (--novel-classes)"
            )
        names = [n for n in all_names if n in set(split.novel)]
        metric_split = OvdSplit([], names)
        gt = _restrict(instances, names, d.max_images)
    else:
        names = all_names
        metric_split = split
        gt = _restrict(instances, None, d.max_images)
    if d.lvis:
        gt_eval = _restrict(raw, None, None)
        kept = {i["id"] for i in gt["images"]}
        gt_eval["images"] = [i for i in raw["images"] if i["id"] in kept]
        gt_eval["annotations"] = [a for a in raw["annotations"] if a["image_id"] in kept]
    else:
        gt_eval = gt

    pre = model.preprocess  # the checkpoint's recorded test size and interpolation (old files: 800/1333)
    short, max_size = pre.test_size(d.test_short_size, d.max_size)
    if cfg.templates is not None:
        templates = template_set(cfg.templates)
    else:
        templates = tuple(model.config.get("templates") or template_set("official"))
    dataset = CocoDetection(
        gt, d.image_root, names, detector_test_transform(short, max_size, pre.interpolation)
    )
    dataset.source = d.json
    if len(dataset) == 0:
        raise DataError(f"{d.json}: no images to evaluate")

    dist = inference_job(cfg.device)  # one process, or this rank of a torchrun job
    device = dist.device
    if not model.has_text:
        raise CheckpointError(
            f"{cfg.checkpoint}: has no text encoder to embed the vocabulary; set text_weights "
            "(--text-weights) to the OpenAI CLIP .pt of the same preset"
        )
    precision = resolve_precision(cfg.precision, device, log=dist.is_main)
    clip = model.clip.to(device)  # the vocabulary is embedded in fp32, as in detect, index and training
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    clean = cfg.clean_class_names
    if clean is None:
        clean = bool(model.config.get("clean_class_names", True))
    bank = build_concept_bank(clip, names, templates, cache_dir=cache, clean_class_names=clean)
    clip.cpu()
    detector = model.detector.to(device).eval()
    apply_precision(detector, precision)
    variants = build_variants(cfg, model)
    scored = [v for v in variants if v.skipped is None]
    for variant in scored:
        if variant.ensemble is not None and variant.ensemble is not detector.ensemble:
            apply_precision(variant.ensemble.to(device), precision)
    class_embeddings = bank.embeddings.to(device)
    want_region = cfg.region_accuracy or model.box_source == "gt"

    # ---- inference
    shard = shard_indices(len(dataset), dist)
    batches = readable_batches(dataset.load, shard, cfg.batch_size, cfg.num_workers)
    detections: dict[int, dict] = {}
    variant_dets: dict[str, dict[int, dict]] = {v.name: {} for v in scored}
    scales: dict[int, tuple[float, float]] = {}
    region_emb, region_labels, unreadable = [], [], []
    t0 = time.perf_counter()
    bar = tqdm(
        batches, desc="eval", unit="batch", file=sys.stderr, disable=not cfg.progress or not dist.is_main,
        total=math.ceil(len(shard) / max(1, cfg.batch_size)),
    )  # fmt: skip
    with torch.no_grad():
        for readable, skipped in bar:
            samples = [sample for _, sample in readable]
            unreadable += [entry.reason for entry in skipped]
            if not samples:
                continue
            batch, targets, metas = collate_detection(samples)
            batch = batch.to(device)
            given = [t["boxes"].to(device) for t in targets] if model.box_source == "gt" else None
            regions = detector.regions(batch, class_embeddings, given)  # once for every scoring variant
            dets = detector.detections(regions, class_names=names, ensemble=detector.ensemble)
            for det, meta in zip(dets, metas, strict=True):
                detections[meta.image_id] = _cpu(det)
                scales[meta.image_id] = meta.scale
            for variant in scored:
                found = detector.detections(
                    regions, score_fusion=variant.score_fusion, class_names=names, ensemble=variant.ensemble
                )
                for det, meta in zip(found, metas, strict=True):
                    variant_dets[variant.name][meta.image_id] = _cpu(det)
            if want_region:
                boxes = [t["boxes"].to(device) for t in targets]
                if sum(len(b) for b in boxes):
                    region_emb.append(detector.embed_boxes(batch, boxes).float().cpu())
                    region_labels.append(torch.cat([t["labels"] for t in targets]))
    seconds = time.perf_counter() - t0
    if dist.distributed:  # rank 0 merges every rank's share, in the order of one process
        detections, scales, region_emb, region_labels, unreadable, variant_dets = merge_shards(
            dataset, dist, detections, scales, region_emb, region_labels, unreadable, variant_dets
        )
        if not dist.is_main:
            return {}
    if not detections and unreadable:  # every image missing or undecodable: no metric to report
        raise DataError(
            f"{d.json}: none of the {len(unreadable)} images could be read (e.g. {unreadable[0]})"
        )
    for message in unreadable:
        print(f"regionclip eval: skipped unreadable image: {message}", file=sys.stderr)

    # ---- metrics
    max_dets = int(detector.inference.max_dets)
    region_metrics: dict[str, Any] = {}
    if want_region:
        emb = torch.cat(region_emb) if region_emb else torch.zeros((0, detector.embed_dim))
        labels = torch.cat(region_labels) if region_labels else torch.zeros(0, dtype=torch.long)
        acc = region_accuracy(emb, labels, bank.embeddings, names, metric_split)
        region_metrics = {f"region_{k}": v for k, v in acc.items()}

    def metrics_of(found: dict[int, dict]) -> dict[str, Any]:
        if d.lvis:
            result: dict[str, Any] = evaluate_lvis(gt_eval, found, dataset.class_ids, max_dets, scales)
        else:
            result = evaluate_detections(gt_eval, found, dataset.class_ids, metric_split, max_dets, scales)
            per_class = {k.split("/", 1)[1]: v for k, v in result.items() if k.startswith("AP50/")}
            result = {k: v for k, v in result.items() if not k.startswith("AP50/")}
            result["AP50_per_class"] = per_class
        result.update(region_metrics)
        result.update(
            num_images=len(found),
            num_unreadable=len(unreadable),
            num_detections=sum(int(v["scores"].numel()) for v in found.values()),
            vocabulary_size=len(names),
            seconds=round(seconds, 3),
        )
        return result

    metrics = metrics_of(detections)

    nms = "soft-gaussian" if detector.inference.nms == "soft" else "hard"
    nms_params = (
        {"sigma": float(detector.inference.soft_nms_sigma), "prune": float(detector.inference.soft_nms_prune)}
        if detector.inference.nms == "soft"
        else {"iou": float(detector.inference.nms_thresh)}
    )
    protocol = EvalProtocol(
        dataset=d.name or d.json,
        split="generalized" if cfg.protocol == "generalized" else "novel-only",
        vocabulary_size=len(names),
        max_detections=max_dets,
        score_threshold=float(detector.inference.score_thresh),
        nms=nms,
        nms_params=nms_params,
        box_source=model.box_source,
        score_fusion=_fusion_name(detector.inference.score_fusion),
        score_ensemble="frozen" if detector.ensemble is not None else "none",
        ensemble_params=detector.ensemble.describe(names) if detector.ensemble is not None else {},
        test_size=(short, max_size),
        model=model.preset_name,
        checkpoint=str(cfg.checkpoint),
        mode=model.mode,
        templates=template_name(templates),
        clean_class_names=clean,
        apply_box_deltas=bool(detector.inference.apply_box_deltas),
        proposal_preset=model.proposal_preset if model.box_source == "rpn" else None,
        max_proposals=cfg.max_proposals if model.box_source == "rpn" else None,
        base_classes=list(split.base) if split is not None else [],
        novel_classes=list(split.novel) if split is not None else [],
        precision=precision.name,
        world_size=dist.world_size,
    )
    out = Path(cfg.out)
    det_path = (
        Path(cfg.detections_out) if cfg.detections_out else out.with_name(f"{out.stem}_detections.json")
    )
    extra: dict[str, Any] = {}
    for variant in variants:  # written before the results, which name their files
        if variant.skipped is not None:
            extra[variant.name] = {"skipped": variant.skipped}
            continue
        found = variant_dets[variant.name]
        ens = variant.ensemble
        v_protocol = dataclasses.replace(
            protocol,
            score_fusion=_fusion_name(variant.score_fusion),
            score_ensemble="frozen" if ens is not None else "none",
            ensemble_params=ens.describe(names) if ens is not None else {},
        )
        v_path = _variant_path(det_path, variant.name)
        write_coco_results(found, v_path, dataset.class_ids, scales)
        extra[variant.name] = {
            "metrics": metrics_of(found),
            "protocol": v_protocol.to_dict(),
            "detections": str(v_path),
        }
    write_results(out, metrics, protocol, {"variants": extra} if variants else None)
    write_coco_results(detections, det_path, dataset.class_ids, scales)
    print_table(metrics, protocol, out, det_path)
    for name, entry in extra.items():
        if "skipped" in entry:
            print(f"  variant {name}: skipped ({entry['skipped']})")
        else:
            headline = [k for k in ("AP50_novel", "AP50_all", "APr", "AP") if k in entry["metrics"]]
            scores = ", ".join(f"{k} {_fmt(entry['metrics'][k])}" for k in headline)
            print(f"  variant {name}: {scores} -> {entry['detections']}")
    result = {
        "metrics": metrics,
        "protocol": protocol.to_dict(),
        "results": str(out),
        "detections": str(det_path),
    }
    if variants:
        result["variants"] = extra
    return result


def _cpu(det) -> dict:
    """The boxes, scores and labels of one image's :class:`Detections`, on the CPU."""
    return {"boxes": det.boxes.cpu(), "scores": det.scores.cpu(), "labels": det.labels.cpu()}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.2f}"
    return str(value)


def print_table(metrics: dict, protocol: EvalProtocol, out: Path, det_path: Path) -> None:
    """One screen: the protocol line, the headline metrics and where the files are."""
    head = ["AP50_novel", "AP50_base", "AP50_all", "AP", "AP50", "AP75", "APr", "APc", "APf"]
    head += ["region_acc_top1", "region_acc_top1_base", "region_acc_top1_novel"]
    rows = [(k, metrics[k]) for k in head if k in metrics]
    print(
        f"{protocol.mode} | {protocol.model} | {protocol.dataset} | {protocol.split}, {protocol.vocabulary_size} "
        f"classes | boxes {protocol.box_source} | NMS {protocol.nms} {protocol.nms_params} | max "
        f"{protocol.max_detections}, score >= {protocol.score_threshold:g} | fusion {protocol.score_fusion} | "
        f"ensemble {protocol.score_ensemble} | "
        f"templates {protocol.templates} | test {protocol.test_size[0]}/{protocol.test_size[1]}"
    )
    width = max((len(k) for k, _ in rows), default=8)
    for key, value in rows:
        print(f"  {key:<{width}}  {_fmt(value)}")
    print(
        f"  {metrics['num_images']} images ({metrics['num_unreadable']} unreadable), "
        f"{metrics['num_detections']} detections, {metrics['seconds']:.1f} s"
    )
    print(f"results -> {out}; detections -> {det_path}")

"""``regionclip eval``: evaluate a detector (transfer) or a CLIP / RegionCLIP model (zero-shot) on a COCO-format
or LVIS val set, recording the protocol with the numbers; the task is :func:`regionclip.tasks.evaluate.evaluate`
(its module doc describes models, vocabulary and outputs).

    regionclip eval --config configs/eval_coco_rn50.yaml [key.sub=value ...]
    regionclip eval --checkpoint runs/detector/detector.safetensors --data val.json --images val/ [--out r.json]
    regionclip eval --checkpoint student.safetensors --boxes rpn:rpn.safetensors --data ... --images ...
"""

from __future__ import annotations

import argparse
import dataclasses

from regionclip.config import load_config
from regionclip.engine.distributed import cleanup
from regionclip.precision import add_precision_argument
from regionclip.tasks.evaluate import (  # noqa: F401  (re-exported: the configs are imported from here)
    EvalConfig,
    EvalDataConfig,
    EvalProtocol,
    evaluate,
)

# ----------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (e.g. configs/eval_coco_rn50.yaml); see EvalConfig")
    parser.add_argument("--checkpoint", help="detector checkpoint, or clip checkpoint for zero-shot")
    parser.add_argument("--data", help="val JSON (COCO format, or LVIS v1 with --lvis)")
    parser.add_argument("--images", help="image folder of the val JSON")
    parser.add_argument("--out", help="results JSON (default eval/results.json)")
    parser.add_argument("--boxes", help="box source: gt, or rpn:RPN_CHECKPOINT (zero-shot needs one)")
    parser.add_argument(
        "--protocol",
        choices=["generalized", "novel_only"],
        help="vocabulary: every class of the JSON (generalized, default) or the novel classes only",
    )
    parser.add_argument("--lvis", action="store_true", help="the val JSON is LVIS v1 (APr/APc/APf)")
    parser.add_argument("--region-accuracy", action="store_true", help="also top-1 on GT boxes")
    parser.add_argument("--novel-classes", help="names file of the novel classes (JSON without split)")
    parser.add_argument("--base-classes", help="names file of the base classes (JSON without split)")
    parser.add_argument("--text-weights", help="CLIP file with the text tower, if the checkpoint has none")
    parser.add_argument("--batch-size", type=int, help="images per forward pass")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    add_precision_argument(parser, default=None)
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. max_dets=300 data.max_images=50"
    )


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    cfg = load_config(EvalConfig, args.config, args.overrides)
    top = {
        "checkpoint": args.checkpoint, "out": args.out, "boxes": args.boxes, "protocol": args.protocol,
        "text_weights": args.text_weights, "batch_size": args.batch_size, "device": args.device,
        "precision": args.precision,
    }  # fmt: skip
    data = {
        "json": args.data, "image_root": args.images, "novel_classes": args.novel_classes,
        "base_classes": args.base_classes,
    }  # fmt: skip
    if args.lvis:
        data["lvis"] = True
    cfg = dataclasses.replace(cfg, **{k: v for k, v in top.items() if v is not None})
    if args.region_accuracy:
        cfg = dataclasses.replace(cfg, region_accuracy=True)
    cfg.data = dataclasses.replace(cfg.data, **{k: v for k, v in data.items() if v is not None})
    return cfg


def run(args: argparse.Namespace) -> int:
    try:
        evaluate(config_from_args(args))
    finally:
        cleanup()  # leaves a torchrun job cleanly (no-op in one process)
    return 0

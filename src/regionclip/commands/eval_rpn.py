"""``regionclip eval-rpn``: proposal recall AR@100/300/1000 of a trained RPN (or of random boxes) on a
COCO-format set, for all, base and novel classes (COCO-style proposal recall, :mod:`regionclip.eval.recall`).

Images are resized as the checkpoint records (its training's test short side, e.g. 800/1333) unless
``--short-size`` is given; recall is computed in resized pixels. The base/novel groups come from
``--split``: ``auto`` (the JSON's per-category ``"split"`` fields, else the COCO 48/17 split when the file has
COCO's categories, else only "all"), ``json``, ``coco``, ``files`` (``--base-classes``/``--novel-classes``)
or ``none``. Unreadable images are reported and skipped. Prints a table; ``--out`` writes the JSON.
"""

from __future__ import annotations

import argparse
import sys

import torch

from regionclip.errors import DataError, RegionCLIPError
from regionclip.io import atomic_write_json
from regionclip.precision import add_precision_argument, apply_precision, resolve_precision


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="RPN checkpoint from `regionclip train-rpn`")
    parser.add_argument("--data", required=True, help="COCO-format instances JSON")
    parser.add_argument(
        "--images", required=True, help="image folder (the JSON's file_name is relative to it)"
    )
    parser.add_argument(
        "--split",
        default="auto",
        choices=["auto", "json", "coco", "files", "none"],
        help="base/novel groups: the JSON's split fields, COCO 48/17, the names files, or none "
        "(default auto: json, else coco when the categories are COCO's, else none)",
    )
    parser.add_argument("--base-classes", help="names file of the base classes (with --split files)")
    parser.add_argument("--novel-classes", help="names file of the novel classes (with --split files)")
    parser.add_argument(
        "--preset",
        default="transfer",
        choices=["pretraining", "transfer", "zero_shot"],
        help="proposal preset",
    )
    parser.add_argument("--limits", type=int, nargs="+", default=[100, 300, 1000], help="K of AR@K")
    parser.add_argument("--short-size", type=int, help="resize short side (default: the checkpoint's)")
    parser.add_argument("--max-size", type=int, help="resize long-side cap (default: the checkpoint's)")
    parser.add_argument("--max-images", type=int, help="evaluate only the first N images")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    add_precision_argument(parser)
    parser.add_argument("--out", help="write the results as JSON here")


def _groups(args: argparse.Namespace, classes: list[str]) -> dict[str, set[int]]:
    from regionclip.data.coco import load_coco_instances
    from regionclip.data.ovd import COCO_BASE_CLASSES, COCO_NOVEL_CLASSES, OvdSplit

    mode = args.split
    split = None
    if mode == "files":
        if not args.base_classes or not args.novel_classes:
            raise RegionCLIPError("--split files needs --base-classes FILE and --novel-classes FILE")
        split = OvdSplit.from_files(args.base_classes, args.novel_classes, known=classes)
    elif mode == "coco":
        split = OvdSplit.coco()
    elif mode in ("json", "auto"):
        cats = load_coco_instances(args.data)["categories"]
        if any("split" in c for c in cats):
            split = OvdSplit.from_json(args.data)
        elif mode == "json":
            raise DataError(f"{args.data}: no category has a 'split' field; use --split coco/files/none")
        elif set(COCO_BASE_CLASSES) | set(COCO_NOVEL_CLASSES) <= set(classes):
            split = OvdSplit.coco()
    if split is None:
        return {}
    index = {n: i for i, n in enumerate(classes)}
    return {
        "base": {index[n] for n in split.base if n in index},
        "novel": {index[n] for n in split.novel if n in index},
    }


def run(args: argparse.Namespace) -> int:
    from regionclip.checkpoint import load_checkpoint
    from regionclip.data.coco import CocoDetection, collate_detection
    from regionclip.data.transforms import ResizeShortestEdge
    from regionclip.eval.recall import ProposalRecall, format_recall_table
    from regionclip.proposals.rpn import load_proposal_generator

    if args.batch_size < 1 or any(k < 1 for k in args.limits):
        raise RegionCLIPError("--batch-size and --limits must be positive")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rpn = load_proposal_generator(args.checkpoint, args.preset).to(device)
    apply_precision(rpn, resolve_precision(args.precision, device))
    recorded = load_checkpoint(args.checkpoint, kind="rpn").config.get("input", {})
    short = args.short_size or recorded.get("short_size")
    max_size = args.max_size or recorded.get("max_size", 1333)
    transform = ResizeShortestEdge(short, max_size, "bilinear") if short else None
    dataset = CocoDetection(args.data, args.images, None, transform, drop_crowd=True)
    groups = _groups(args, dataset.classes)
    evaluator = ProposalRecall(sorted(set(args.limits)), groups)
    n = len(dataset) if args.max_images is None else min(len(dataset), args.max_images)
    skipped: list[str] = []
    pending = []

    def flush() -> None:
        if not pending:
            return
        images, targets, _ = collate_detection(pending)
        for props, target in zip(rpn(images.to(device)), targets, strict=True):
            evaluator.process(props.boxes, props.objectness, target["boxes"], target["labels"])
        pending.clear()

    for i in range(n):
        try:
            pending.append(dataset.load(i))
        except DataError as err:
            skipped.append(str(dataset.images[i]["file_name"]))
            print(f"eval-rpn: skipping unreadable image: {err}", file=sys.stderr)
            continue
        if len(pending) == args.batch_size:
            flush()
    flush()
    if evaluator.num_images == 0:
        raise DataError(f"{args.data}: no readable image to evaluate")
    results = evaluator.evaluate()
    print(format_recall_table(results))
    if skipped:
        print(f"eval-rpn: skipped {len(skipped)} unreadable images", file=sys.stderr)
    if args.out:
        atomic_write_json(
            args.out,
            {
                "checkpoint": str(args.checkpoint),
                "data": str(args.data),
                "preset": args.preset,
                "short_size": short,
                "max_size": max_size,
                "num_images": evaluator.num_images,
                "skipped": skipped,
                "recall": results,
            },
        )
    return 0

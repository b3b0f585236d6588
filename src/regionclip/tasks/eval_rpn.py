"""The eval-rpn task (``regionclip eval-rpn``): proposal recall AR@100/300/1000 of a trained RPN (or of random boxes) on a
COCO-format set, for all, base and novel classes (COCO-style proposal recall, :mod:`regionclip.eval.recall`).

Images are resized as the checkpoint records (its training's test short side, e.g. 800/1333) unless
``--short-size`` is given; recall is computed in resized pixels. The base/novel groups come from
``--split``: ``auto`` (the JSON's per-category ``"split"`` fields, else the COCO 48/17 split when the file has
COCO's categories, else only "all"), ``json``, ``coco``, ``files`` (``--base-classes``/``--novel-classes``)
or ``none``. Unreadable images are reported and skipped. Prints a table; ``--out`` writes the JSON.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch

from regionclip.checkpoint import read_preprocess
from regionclip.data.coco import CocoDetection, collate_detection, load_coco_instances
from regionclip.data.ovd import COCO_BASE_CLASSES, COCO_NOVEL_CLASSES, OvdSplit
from regionclip.data.transforms import ResizeShortestEdge
from regionclip.errors import DataError, RegionCLIPError
from regionclip.eval.recall import ProposalRecall, format_recall_table
from regionclip.io import atomic_write_json
from regionclip.precision import apply_precision, resolve_precision
from regionclip.preprocess import OWN_SIZE
from regionclip.proposals.loading import load_proposal_generator
from regionclip.tasks.inference import readable_batches


@dataclass
class EvalRPNConfig:
    checkpoint: str = ""  # RPN checkpoint (regionclip train-rpn or convert)
    data: str = ""  # COCO-format instances JSON
    images: str = ""  # image folder (the JSON's file_name is relative to it)
    split: str = "auto"  # base/novel groups: auto | json | coco | files | none
    base_classes: str | None = None  # names file of the base classes (split files)
    novel_classes: str | None = None  # names file of the novel classes (split files)
    preset: str = "transfer"  # proposal preset: pretraining | transfer | zero_shot
    limits: list[int] = field(default_factory=lambda: [100, 300, 1000])  # K of AR@K
    short_size: int | None = None  # resize short side (None: the checkpoint's)
    max_size: int | None = None  # resize long-side cap (None: the checkpoint's, else 1333)
    max_images: int | None = None  # evaluate only the first N images
    batch_size: int = 1  # images per forward pass
    device: str | None = None  # cpu or cuda (None: cuda when available)
    precision: str = "auto"  # networks in fp32 or bf16 (auto: bf16 where native)
    out: str | None = None  # write the results as JSON here


def _groups(cfg: EvalRPNConfig, classes: list[str]) -> dict[str, set[int]]:

    mode = cfg.split
    split = None
    if mode == "files":
        if not cfg.base_classes or not cfg.novel_classes:
            raise RegionCLIPError("--split files needs --base-classes FILE and --novel-classes FILE")
        split = OvdSplit.from_files(cfg.base_classes, cfg.novel_classes, known=classes)
    elif mode == "coco":
        split = OvdSplit.coco()
    elif mode in ("json", "auto"):
        cats = load_coco_instances(cfg.data)["categories"]
        if any("split" in c for c in cats):
            split = OvdSplit.from_json(cfg.data)
        elif mode == "json":
            raise DataError(f"{cfg.data}: no category has a 'split' field; use --split coco/files/none")
        elif set(COCO_BASE_CLASSES) | set(COCO_NOVEL_CLASSES) <= set(classes):
            split = OvdSplit.coco()
    if split is None:
        return {}
    index = {n: i for i, n in enumerate(classes)}
    return {
        "base": {index[n] for n in split.base if n in index},
        "novel": {index[n] for n in split.novel if n in index},
    }


def eval_rpn(cfg: EvalRPNConfig) -> dict:
    """Proposal recall of ``cfg.checkpoint`` on ``cfg.data``; prints the table, writes ``cfg.out``; returns the
    recall results."""

    if cfg.batch_size < 1 or any(k < 1 for k in cfg.limits):
        raise RegionCLIPError("--batch-size and --limits must be positive")
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rpn = load_proposal_generator(cfg.checkpoint, cfg.preset).to(device)
    apply_precision(rpn, resolve_precision(cfg.precision, device))
    recorded = read_preprocess(cfg.checkpoint, OWN_SIZE)  # the RPN's test size (old: input.*)
    recorded.check_normalisation(str(cfg.checkpoint))
    short = cfg.short_size or recorded.short_size
    max_size = cfg.max_size or recorded.max_size
    transform = ResizeShortestEdge(short, max_size, recorded.interpolation) if short else None
    dataset = CocoDetection(cfg.data, cfg.images, None, transform, drop_crowd=True)
    groups = _groups(cfg, dataset.classes)
    evaluator = ProposalRecall(sorted(set(cfg.limits)), groups)
    n = len(dataset) if cfg.max_images is None else min(len(dataset), cfg.max_images)
    skipped: list[str] = []
    for readable, unreadable in readable_batches(dataset.load, range(n), cfg.batch_size):
        for entry in unreadable:
            skipped.append(str(dataset.images[entry.index]["file_name"]))
            print(f"eval-rpn: skipping unreadable image: {entry.reason}", file=sys.stderr)
        if not readable:
            continue
        images, targets, _ = collate_detection([sample for _, sample in readable])
        for props, target in zip(rpn(images.to(device)), targets, strict=True):
            evaluator.process(props.boxes, props.objectness, target["boxes"], target["labels"])
    if evaluator.num_images == 0:
        raise DataError(f"{cfg.data}: no readable image to evaluate")
    results = evaluator.evaluate()
    print(format_recall_table(results))
    if skipped:
        print(f"eval-rpn: skipped {len(skipped)} unreadable images", file=sys.stderr)
    if cfg.out:
        atomic_write_json(
            cfg.out,
            {
                "checkpoint": str(cfg.checkpoint),
                "data": str(cfg.data),
                "preset": cfg.preset,
                "short_size": short,
                "max_size": max_size,
                "num_images": evaluator.num_images,
                "skipped": skipped,
                "recall": results,
            },
        )
    return results

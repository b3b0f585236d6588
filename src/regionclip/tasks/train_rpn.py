"""The train-rpn task (``regionclip train-rpn``): train the class-agnostic offline RPN on the boxes of the base classes of a
COCO-format set (method reference §6.1: "the RPN used in transfer learning was trained by the base
categories of target dataset"; §4.1 for the pretraining RPN).

The run writes ``config.yaml`` (the resolved config), training checkpoints for exact resume, TensorBoard
logs and, at the end, ``rpn.safetensors``: a regionclip checkpoint of kind ``rpn`` that rebuilds the RPN
alone (:func:`regionclip.proposals.loading.load_rpn`). Base classes come from ``data.base_classes``
(a names file), else from the JSON's per-category ``"split"`` fields, else the COCO 48 base classes when the
file has COCO's categories; ``data.classes: all`` trains on every category instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from torch import nn

from regionclip.concepts import read_names_file
from regionclip.data.coco import CocoDetection, collate_detection, load_coco_instances
from regionclip.data.ovd import COCO_BASE_CLASSES, OvdSplit
from regionclip.data.transforms import Compose, RandomHorizontalFlip, ResizeShortestEdge
from regionclip.engine.data import map_style_batches
from regionclip.engine.distributed import barrier
from regionclip.engine.loop import TrainConfig, train
from regionclip.errors import ConfigError, DataError
from regionclip.preprocess import Preprocess
from regionclip.proposals.config import RPNConfig
from regionclip.proposals.rpn import ClassAgnosticRPN, build_rpn, save_rpn
from regionclip.structures import StepOutput
from regionclip.tasks.run import setup_run


@dataclass
class RPNDataConfig:
    train_json: str = ""  # COCO-format instances JSON with the training boxes
    image_root: str = ""  # folder the JSON's file_name entries are relative to
    classes: Literal["base", "all"] = "base"  # train on base-class boxes (official) or on every category
    base_classes: str | None = None  # names file of the base classes (default: JSON "split" fields / COCO 48)
    short_sizes: list[int] = field(default_factory=lambda: [640, 672, 704, 736, 768, 800])  # train short side
    max_size: int = 1333  # long-side cap of the resize
    test_short_size: int = 800  # short side used at inference (stored in the checkpoint)
    flip: float = 0.5  # horizontal-flip probability


@dataclass
class TrainRPNConfig:
    rpn: RPNConfig = field(default_factory=RPNConfig)  # architecture and targets
    data: RPNDataConfig = field(default_factory=RPNDataConfig)  # training set and resize
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=90000, batch_size=2, lr=0.02))
    out_dir: str = "runs/rpn"  # outputs: config.yaml, checkpoints, rpn.safetensors
    device: str | None = None  # "cpu", "cuda" or None (CUDA when available)


class RPNTrainingTask(nn.Module):
    """The training task: ``forward((images, targets, metas)) -> StepOutput`` with the RPN's two losses."""

    def __init__(self, rpn: ClassAgnosticRPN):
        super().__init__()
        self.rpn = rpn

    def forward(self, batch) -> StepOutput:
        images, targets, _ = batch
        device = self.rpn.cell_anchors.device
        images = images.to(device)
        gt = [t["boxes"].to(device) for t in targets]
        losses = self.rpn.losses(images, gt)
        return StepOutput(losses, {"gt_per_image": sum(len(b) for b in gt) / max(len(gt), 1)})


def resolve_training_classes(cfg: RPNDataConfig) -> list[str] | None:
    """Category names whose boxes train the RPN (None = every category of the JSON)."""
    if cfg.classes == "all":
        return None

    if cfg.base_classes:
        return read_names_file(cfg.base_classes)
    data = load_coco_instances(cfg.train_json)
    names = {c["name"] for c in data["categories"]}
    if any("split" in c for c in data["categories"]):
        split = OvdSplit.from_json(data)
        if split.base:
            return split.base
    if set(COCO_BASE_CLASSES) <= names:
        return list(COCO_BASE_CLASSES)
    raise ConfigError(
        f"{cfg.train_json}: cannot tell the base classes (no 'split' fields, not COCO's categories); "
        "set data.base_classes=FILE or data.classes=all"
    )


def train_rpn(cfg: TrainRPNConfig) -> Path:
    """Train the RPN of ``cfg``; returns the path of ``rpn.safetensors`` (written by rank 0)."""

    if not cfg.data.train_json or not cfg.data.image_root:
        raise ConfigError("data.train_json and data.image_root must be set (e.g. data.train_json=train.json)")
    classes = resolve_training_classes(cfg.data)
    transform = Compose(
        [
            ResizeShortestEdge(cfg.data.short_sizes, cfg.data.max_size, "bilinear", "choice"),
            RandomHorizontalFlip(cfg.data.flip),
        ]
    )
    dataset = CocoDetection(
        cfg.data.train_json, cfg.data.image_root, classes, transform, drop_empty=True, skip_unreadable=True
    )
    if len(dataset) == 0:
        raise DataError(f"{cfg.data.train_json}: no image has a box of the training classes")
    run = setup_run(cfg, cfg.out_dir, cfg.device, seed=cfg.train.seed)  # seed: the initial weights
    dist, out_dir = run.dist, run.out_dir
    rpn = build_rpn(cfg.rpn, "transfer")
    task = RPNTrainingTask(rpn)
    batches = map_style_batches(
        dataset,
        cfg.train.batch_size,
        cfg.train.seed,
        dist,
        collate_detection,
        num_workers=cfg.train.num_workers,
    )
    train(task, batches, cfg.train, out_dir, dist, run.config, desc="train-rpn")
    path = out_dir / "rpn.safetensors"
    if dist.is_main:
        extra = {
            "classes": classes if classes is not None else list(dataset.classes),
            "train": run.config,
        }
        test = Preprocess(cfg.data.test_short_size, cfg.data.max_size, "bilinear")
        save_rpn(rpn, cfg.rpn, path, extra, test)
        if dataset.num_unreadable:
            print(f"train-rpn: skipped {dataset.num_unreadable} unreadable images")
        if dataset.filter_report():
            print(f"train-rpn: left out of {cfg.data.train_json}: {dataset.filter_report()}")
        print(f"train-rpn: wrote {path}")
    barrier()
    return path

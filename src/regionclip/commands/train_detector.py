"""``regionclip train-detector``: transfer a (RegionCLIP-pretrained) CLIP to open-vocabulary detection on the
base classes of a COCO-format or LVIS set (paper §3.3; method reference §6.1-6.4); the task is
:func:`regionclip.tasks.train_detector.train_detector`.

    regionclip train-detector --config configs/detector_coco_rn50.yaml [key.sub=value ...]
    torchrun --nproc_per_node=8 -m regionclip train-detector --config ...   (one process per GPU)
"""

from __future__ import annotations

import argparse

from regionclip.config import load_config
from regionclip.precision import add_precision_argument, precision_overrides
from regionclip.tasks.train_detector import (  # noqa: F401  (re-exported: the configs are imported from here)
    DetDataConfig,
    DetModelConfig,
    DetProposalConfig,
    TrainDetectorConfig,
    VocabularyConfig,
    train_detector,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_precision_argument(parser, default=None)  # sets train.precision
    parser.add_argument(
        "--config", help="YAML config (e.g. configs/detector_coco_rn50.yaml); sections: model, proposals, "
        "detector, vocabulary, data, train, out_dir, device"
    )  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=100")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(TrainDetectorConfig, args.config, [*args.overrides, *precision_overrides(args)])
    train_detector(cfg)
    return 0

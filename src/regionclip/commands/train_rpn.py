"""``regionclip train-rpn``: train the class-agnostic offline RPN on the boxes of the base classes of a
COCO-format set; the task is :func:`regionclip.tasks.train_rpn.train_rpn` (writes ``OUT/rpn.safetensors``)."""

from __future__ import annotations

import argparse

from regionclip.config import load_config
from regionclip.precision import add_precision_argument, precision_overrides
from regionclip.tasks.train_rpn import (  # noqa: F401  (re-exported: the configs are imported from here)
    RPNDataConfig,
    TrainRPNConfig,
    train_rpn,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_precision_argument(parser, default=None)  # sets train.precision
    parser.add_argument("--config", help="YAML config (e.g. configs/rpn_coco.yaml); fields: rpn, data, train")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=100")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(TrainRPNConfig, args.config, [*args.overrides, *precision_overrides(args)])
    train_rpn(cfg)
    return 0

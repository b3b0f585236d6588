"""``regionclip train-clip``: train a CLIP model on image-caption pairs (image-level contrastive loss); the
task is :func:`regionclip.tasks.train_clip.train_clip` (writes ``OUT/clip.safetensors``)."""

from __future__ import annotations

import argparse

from regionclip.config import load_config
from regionclip.precision import add_precision_argument, precision_overrides
from regionclip.tasks.train_clip import TrainCLIPConfig, train_clip  # noqa: F401  (re-exported)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_precision_argument(parser, default=None)  # sets train.precision
    parser.add_argument("--config", help="YAML config (TrainCLIPConfig)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=100")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(TrainCLIPConfig, args.config, [*args.overrides, *precision_overrides(args)])
    train_clip(cfg)
    return 0

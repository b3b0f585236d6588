"""``regionclip pretrain``: RegionCLIP pretraining of the student (paper §3.2; method reference §4-5); the task
is :func:`regionclip.tasks.pretrain.pretrain` (writes ``OUT/student.safetensors`` and ``OUT/config.yaml``).

    regionclip pretrain --config configs/pretrain_rn50_cc3m.yaml [key.sub=value ...]
    torchrun --nproc_per_node=N -m regionclip pretrain --config ... (one process per GPU)
"""

from __future__ import annotations

import argparse
import logging

from regionclip.config import load_config
from regionclip.precision import add_precision_argument, precision_overrides
from regionclip.pretrain.config import PretrainConfig
from regionclip.tasks.pretrain import make_pretrain_batches, pretrain  # noqa: F401  (re-exported)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_precision_argument(parser, default=None)  # sets train.precision
    parser.add_argument("--config", help="experiment YAML (see configs/pretrain_*.yaml); defaults if omitted")
    parser.add_argument(
        "overrides", nargs="*", help="config overrides key.sub=value, e.g. train.max_steps=10"
    )
    parser.add_argument("--no-resume", action="store_true", help="start fresh even if checkpoints exist")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = load_config(PretrainConfig, args.config, [*args.overrides, *precision_overrides(args)])
    pretrain(cfg, resume=not args.no_resume)
    return 0

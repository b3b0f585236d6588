"""``regionclip eval-rpn``: proposal recall AR@100/300/1000 of a trained RPN on a COCO-format set, for all,
base and novel classes; the task is :func:`regionclip.tasks.eval_rpn.eval_rpn`."""

from __future__ import annotations

import argparse

from regionclip.precision import add_precision_argument
from regionclip.tasks.eval_rpn import EvalRPNConfig, eval_rpn


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


def run(args: argparse.Namespace) -> int:
    eval_rpn(
        EvalRPNConfig(**{k: v for k, v in vars(args).items() if k in EvalRPNConfig.__dataclass_fields__})
    )
    return 0

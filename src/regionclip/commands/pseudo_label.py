"""``regionclip pseudo-label``: the pseudo-label inspector (paper §3.2; method reference §4.1-4.2); the task is
:func:`regionclip.tasks.pseudo_label.pseudo_label_images` (per image ``<name>.json`` + ``<name>.png``, and
``index.json``)."""

from __future__ import annotations

import argparse

from regionclip.precision import add_precision_argument
from regionclip.tasks.pseudo_label import PseudoLabelConfig, draw_regions, pseudo_label_images  # noqa: F401


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--teacher", required=True, help="teacher CLIP checkpoint (.safetensors, or OpenAI .pt)"
    )
    parser.add_argument("--teacher-model", help="CLIP preset of a non-regionclip teacher file, e.g. RN50")
    parser.add_argument(
        "--concepts", required=True, help="concept bank (.safetensors, `regionclip embed-concepts`)"
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of images")
    src.add_argument("--dataset", help="COCO-format JSON (with --image-root); needed for --proposals gt")
    parser.add_argument("--image-root", help="image folder of --dataset")
    parser.add_argument("--proposals", default="random", help="rpn:CKPT | random | gt (default: random)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--max-images", type=int, help="process at most N images")
    parser.add_argument(
        "--threshold", type=float, default=0.1, help="keep regions with top probability > this"
    )
    parser.add_argument("--temperature", type=float, default=0.01, help="softmax temperature (official 0.01)")
    parser.add_argument(
        "--short-size", type=int, help="resize short side before encoding (default: no resize)"
    )
    parser.add_argument("--max-size", type=int, default=1333, help="long-side cap of --short-size")
    parser.add_argument("--random-count", type=int, default=100, help="random boxes per image")
    parser.add_argument(
        "--random-min-size", type=float, default=16.0, help="smallest random box side (pixels)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random boxes")
    parser.add_argument("--draw-top", type=int, default=30, help="draw at most this many regions per image")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    add_precision_argument(parser)


def run(args: argparse.Namespace) -> int:
    fields = {k: v for k, v in vars(args).items() if k in PseudoLabelConfig.__dataclass_fields__}
    pseudo_label_images(PseudoLabelConfig(**fields))
    return 0

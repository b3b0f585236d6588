"""``regionclip detect``: open-vocabulary detection on image files and folders; the task is
:func:`regionclip.tasks.detect.detect` (writes COCO-results JSON, ``summary.json`` and annotated PNGs)."""

from __future__ import annotations

import argparse

from regionclip.commands._options import add_ensemble_arguments, ensemble_from_args
from regionclip.precision import add_precision_argument
from regionclip.tasks.detect import DEMO_CHECKPOINT, DetectConfig, detect
from regionclip.vocab import parse_vocabulary, read_vocabulary_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument(
        "--checkpoint",
        help=f"detector or clip checkpoint, or a converted folder (default: {DEMO_CHECKPOINT} if present)",
    )
    parser.add_argument("--rpn", help="rpn checkpoint for a clip (zero-shot) checkpoint")
    vocab = parser.add_mutually_exclusive_group(required=True)
    vocab.add_argument(
        "--vocab", help='class names "cat,dog", or a built-in: coco, coco-base, coco-novel, coco-ovd, lvis'
    )
    vocab.add_argument("--vocab-file", help="text file with one class name per line")
    parser.add_argument("--lvis-json", help="LVIS v1 annotation JSON supplying the names of --vocab lvis")
    parser.add_argument("--out", required=True, help="output folder (detections.json, summary.json, PNGs)")
    parser.add_argument(
        "--score-thresh", type=float, default=None, help="minimum score (default: the checkpoint's)"
    )
    parser.add_argument(
        "--max-dets", type=int, default=None, help="detections per image (default: the checkpoint's)"
    )
    parser.add_argument(
        "--nms", choices=["hard", "soft"], default=None, help="per-class NMS (default: the checkpoint's)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--min-size", type=int, default=None, help="test shorter side (default: the checkpoint's or 800)"
    )
    parser.add_argument("--max-size", type=int, default=None, help="test longer side cap (default: 1333)")
    parser.add_argument("--no-png", action="store_true", help="write only the JSON files")
    parser.add_argument(
        "--show-score", type=float, default=0.3, help="PNGs: draw detections with score >= this (default 0.3)"
    )
    parser.add_argument(
        "--show-top", type=int, default=10, help="PNGs: draw at most this many per image (default 10)"
    )
    add_ensemble_arguments(
        parser,
        "frozen: ensemble the scores with the frozen initial region classifier (F-VLM; default none)",
    )
    add_precision_argument(parser)


def run(args: argparse.Namespace) -> int:
    names = (
        read_vocabulary_file(args.vocab_file)
        if args.vocab_file
        else parse_vocabulary(args.vocab, args.lvis_json)
    )
    fields = {k: v for k, v in vars(args).items() if k in DetectConfig.__dataclass_fields__}
    return detect(DetectConfig(**{**fields, "ensemble": ensemble_from_args(args)}), names)

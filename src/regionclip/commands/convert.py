"""``regionclip convert``: official RegionCLIP / detectron2 RPN / concept-embedding / OpenAI CLIP checkpoints
into the project's safetensors format, with a report of mapped, unused and missing keys (method reference §9).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="checkpoint to convert (.pth / .pt / .pkl)")
    parser.add_argument(
        "-o",
        "--out",
        required=True,
        help="output: a folder for --kind regionclip (clip, rpn, detector, concepts files), "
        "a .safetensors file otherwise",
    )
    parser.add_argument(
        "--kind",
        default="auto",
        choices=["auto", "regionclip", "rpn", "concepts", "openai"],
        help="what SRC is (default: detected from its keys)",
    )
    parser.add_argument(
        "--names", help="names file (one per line) for concept embeddings or a checkpoint's class embeddings"
    )
    parser.add_argument(
        "--text-weights",
        help="OpenAI CLIP .pt (same preset) supplying the text tower when SRC has none (finetuned checkpoints)",
    )


def run(args: argparse.Namespace) -> int:
    from regionclip.convert import convert

    report = convert(args.src, args.out, kind=args.kind, names=args.names, text_weights=args.text_weights)
    print(report.summary())
    return 0

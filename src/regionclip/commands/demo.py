"""``regionclip demo``: run the RegionCLIP paper in the miniature world (see :mod:`regionclip.demo`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--size", default="default", help="quick (CI, ~3 min) or default (~20 min on 2 cores)"
    )
    parser.add_argument(
        "--out", default="regionclip-demo", help="output folder (re-running resumes; default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the world and of every stage")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when available)")


def run(args: argparse.Namespace) -> int:
    from regionclip.demo import run_demo

    run_demo(args.size, args.out, args.seed, args.device)
    return 0

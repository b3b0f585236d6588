"""``regionclip demo``: run the RegionCLIP paper in the miniature world (see :mod:`regionclip.demo`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--size", default="default", help="quick (CI, ~3 min) or default (~28 min on 2 cores)"
    )
    parser.add_argument(
        "--out", default="regionclip-demo", help="output folder (re-running resumes; default %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of every training stage (the world is always seed 0)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when available)")
    parser.add_argument(
        "--seeds", type=int, default=None, metavar="N",
        help="run the whole plan for seeds 0..N-1 (OUT/seed_<s>/, one shared world) and write "
        "OUT/results_seeds.json/.md with mean ± sd per row",
    )  # fmt: skip
    parser.add_argument(
        "--ablations", nargs="?", const="all", default=None, metavar="GROUPS",
        help="after the default plan, run the ablation variants (all, or comma-separated groups: "
        "'pretraining supervision', 'region type', 'concept pool', 'region losses', capacity, transfer, "
        "'detector optimiser') "
        "and write OUT/ablations.json/.md",
    )  # fmt: skip
    parser.add_argument(
        "--update-readme", default=None, metavar="RESULTS_JSON",
        help="only regenerate README.md's demo table (and ablation table) from RESULTS_JSON, then exit",
    )  # fmt: skip
    parser.add_argument(
        "--readme", default="README.md", help="the README that --update-readme rewrites (default %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    if args.update_readme:
        from regionclip.results_table import update_readme

        changed = update_readme(args.readme, args.update_readme)
        print(f"{args.readme}: {'updated' if changed else 'already agrees'} from {args.update_readme}")
        return 0
    if args.seeds is not None:
        from regionclip.demo.seeds import run_seeds

        run_seeds(args.size, args.out, args.seeds, args.device)
        return 0
    if args.ablations is not None:
        from regionclip.demo.ablations import run_ablations

        run_ablations(args.size, args.out, args.seed, args.device, groups=args.ablations)
        return 0
    from regionclip.demo import run_demo

    run_demo(args.size, args.out, args.seed, args.device)
    return 0

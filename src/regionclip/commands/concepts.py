"""``regionclip concepts``: extract the concept pool (object nouns) from a caption corpus (paper §3.1).

Writes ``concepts.txt`` (one concept a line, by descending frequency, ties alphabetical) and
``concepts.tsv`` (concept<TAB>count) next to it, atomically, and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import os
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        help="COCO captions JSON, text files (one caption a line), .tar shards or folders",
    )
    parser.add_argument("-o", "--output", required=True, help="concept list to write (e.g. concepts.txt)")
    parser.add_argument("--min-count", type=int, default=100, help="keep concepts seen at least this often")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parser processes")
    parser.add_argument("--max-captions", type=int, default=None, help="stop after this many captions")
    parser.add_argument(
        "--parse",
        action="store_true",
        help="read compounds from spaCy's dependency parse (slower) instead of the part-of-speech tags",
    )


def run(args: argparse.Namespace) -> int:
    from regionclip.concept_pool import build_concept_pool
    from regionclip.errors import RegionCLIPError

    if args.workers < 1:
        raise RegionCLIPError(f"--workers must be >= 1, got {args.workers}")
    start = time.perf_counter()
    pool = build_concept_pool(args.inputs, args.min_count, args.workers, args.max_captions, parse=args.parse)
    txt, tsv = pool.write(args.output)
    seconds = time.perf_counter() - start
    rate = pool.captions_read / seconds if seconds > 0 else 0.0
    print(
        f"captions read: {pool.captions_read}, skipped: {pool.captions_skipped}; "
        f"concepts kept: {len(pool.names)} (count >= {args.min_count}) -> {txt}, {tsv} "
        f"[{seconds:.1f} s, {rate:.0f} captions/s]"
    )
    return 0

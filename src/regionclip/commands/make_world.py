"""``regionclip make-world OUT``: generate the miniature world (see :mod:`regionclip.world`)."""

from __future__ import annotations

import argparse

from regionclip.world import SIZES, VERSIONS, generate_world


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "out", help="output folder (created; an existing world of the same size and seed is reused)"
    )
    sizes = ", ".join(
        f"{name} ({n['train']} train + {n['val']} val scenes, {n.get('web', 0)} web images)"
        for name, n in SIZES.items()
    )
    parser.add_argument("--size", default="quick", help=f"world size: {sizes}")
    parser.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default: all CPUs)")
    parser.add_argument(
        "--test",
        type=int,
        default=0,
        metavar="N",
        help="also generate N held-out test scenes (own seed stream; other splits unchanged; default 0)",
    )
    parser.add_argument(
        "--version",
        type=int,
        default=2,
        choices=VERSIONS,
        help="generator version: 2 (default, 171 categories) or 3 (COCO's 65-class OVD shape, COCO-like sizes at"
        " test size 320, multi-object web images, a held-out web_val split; see docs/world.md)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a different world already in OUT")


def run(args: argparse.Namespace) -> int:
    info = generate_world(
        args.out,
        size=args.size,
        seed=args.seed,
        workers=args.workers,
        overwrite=args.overwrite,
        test_images=args.test,
        version=args.version,
    )
    c = info.counts
    took = f"generated in {info.seconds:.1f} s" if info.seconds else "already there"
    web_val = f" + {c['web_val_images']} held-out web_val" if c.get("web_val_images") else ""
    test = f", test {c['test_images']} images / {c['test_boxes']} boxes" if c.get("test_images") else ""
    print(
        f"world {info.root}: train {c['train_images']} images / {c['train_boxes']} base boxes, "
        f"val {c['val_images']} images / {c['val_boxes']} boxes{test}, {len(info.category_names)} categories "
        f"({len(info.base_names)} base, {len(info.novel_names)} novel), "
        f"{c['train_captions'] + c['val_captions']} captions, {c.get('web_images', 0)} web images{web_val}; {took}"
    )
    return 0

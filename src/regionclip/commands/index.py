"""``regionclip index``: embed the regions of image files once into a region index (see
:mod:`regionclip.region_index`); a second run appends new images and resumes an interrupted one."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--checkpoint", help="detector or clip checkpoint, or a converted folder "
                        "(default: the demo's detector if present)")  # fmt: skip
    parser.add_argument("--rpn", help="rpn checkpoint for a clip checkpoint (else --boxes)")
    parser.add_argument(
        "--boxes",
        help="given boxes: JSON {file name: [[x1,y1,x2,y2],...]} or COCO JSON (images + annotations)",
    )
    parser.add_argument("--out", required=True, help="index folder (created, or appended to)")
    parser.add_argument("--shard-size", type=int, default=64, help="images per shard (default 64)")
    parser.add_argument(
        "--max-regions",
        type=int,
        default=None,
        help="keep the N highest-scoring proposals per image (default all)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (under torchrun: cuda:LOCAL_RANK)")
    parser.add_argument(
        "--min-size", type=int, default=None, help="test shorter side (default: the checkpoint's)"
    )
    parser.add_argument(
        "--max-size", type=int, default=None, help="test longer side cap (default: the checkpoint's)"
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from regionclip.detect.api import Detector
    from regionclip.engine.distributed import barrier, cleanup
    from regionclip.engine.sharding import inference_job
    from regionclip.errors import RegionCLIPError
    from regionclip.region_index import build_index, model_identity, read_boxes_file
    from regionclip.tasks.detect import collect_images, default_checkpoint

    if args.shard_size < 1:
        raise RegionCLIPError(f"--shard-size: expected a positive number of images, got {args.shard_size}")
    checkpoint = args.checkpoint or default_checkpoint()
    files, skipped = collect_images(args.inputs)
    if not files:
        raise RegionCLIPError(f"no images found in {', '.join(args.inputs)}")
    given = read_boxes_file(args.boxes) if args.boxes else None
    dist = inference_job(args.device)  # one process on --device as given, or this rank of torchrun
    try:
        det = Detector.from_pretrained(
            checkpoint, rpn=args.rpn, device=dist.device, min_size=args.min_size, max_size=args.max_size
        )
        model = model_identity(det, checkpoint, args.rpn)
        if given is None and model["proposals"] == "given":
            raise RegionCLIPError(
                f"{checkpoint}: has no RPN: give --rpn RPN_CHECKPOINT or --boxes BOXES_JSON"
            )
        report = build_index(
            det, files, args.out, model, given=given, shard_size=args.shard_size, max_regions=args.max_regions,
            rank=dist.rank, world_size=dist.world_size, barrier=barrier,
            progress=lambda it: tqdm(it, desc=f"index r{dist.rank}", unit="img", file=sys.stderr, disable=not dist.is_main),
        )  # fmt: skip
    finally:
        cleanup()
    for entry in skipped + report.skipped:
        print(f"  skipped {entry['file']}: {entry['reason']}", file=sys.stderr)
    who = f"rank {dist.rank}: " if dist.distributed else ""
    print(
        f"{who}{report.added} images, {report.regions} regions added to {args.out}; "
        f"{report.skipped_existing} already indexed, {len(skipped) + len(report.skipped)} skipped"
    )
    return 0

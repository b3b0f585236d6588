"""``regionclip detect``: open-vocabulary detection on image files and folders; writes COCO-results JSON (every
detection) and annotated PNGs (only the detections worth seeing: ``--show-score``, ``--show-top``; labels
outside the boxes, a legend). ``--ensemble frozen`` ensembles the scores with the frozen initial classifier
(:mod:`regionclip.detect.ensemble`). Unreadable images are reported and skipped."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from regionclip.commands._options import add_ensemble_arguments, ensemble_from_args
from regionclip.detect.api import Detector, read_image
from regionclip.engine.distributed import DistInfo, cleanup
from regionclip.engine.sharding import gather_lists, inference_job, shard_indices
from regionclip.errors import RegionCLIPError
from regionclip.io import atomic_write, atomic_write_json
from regionclip.precision import add_precision_argument, apply_precision, resolve_precision
from regionclip.proposals.base import GivenBoxes
from regionclip.vocab import parse_vocabulary, read_vocabulary_file

DEMO_CHECKPOINT = Path("regionclip-demo/transfer_regionclip/detector.safetensors")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


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


def collect_images(inputs: list[str]) -> tuple[list[Path], list[dict]]:
    """Image files from files and folders (sorted); missing inputs are returned as skipped entries."""
    files, skipped = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            skipped.append({"file": str(path), "reason": "not found"})
    return files, skipped


def default_checkpoint() -> Path:
    """The demo's detector, the default of ``detect``, ``index`` and ``serve``; a clear error if absent."""
    if not DEMO_CHECKPOINT.is_file():
        raise RegionCLIPError(
            f"no --checkpoint given and {DEMO_CHECKPOINT} does not exist: run `regionclip demo` to train one, "
            "or pass --checkpoint (see docs/getting-started.md)"
        )
    return DEMO_CHECKPOINT


def run(args: argparse.Namespace) -> int:
    names = (
        read_vocabulary_file(args.vocab_file)
        if args.vocab_file
        else parse_vocabulary(args.vocab, args.lvis_json)
    )
    checkpoint = args.checkpoint or default_checkpoint()
    files, skipped = collect_images(args.inputs)
    if not files:
        raise RegionCLIPError(f"no images found in {', '.join(args.inputs)}")
    dist = inference_job(args.device)  # one process, or this rank of a torchrun job (images sharded)
    try:
        return _detect(args, names, checkpoint, files, skipped, dist)
    finally:
        cleanup()


def _detect(
    args: argparse.Namespace,
    names: list[str],
    checkpoint: Path | str,
    files: list[Path],
    skipped: list[dict],
    dist: DistInfo,
) -> int:
    """Detection on this rank's share of ``files``; rank 0 writes the merged outputs."""
    det = Detector.from_pretrained(
        checkpoint, rpn=args.rpn, device=dist.device, min_size=args.min_size, max_size=args.max_size,
        ensemble=ensemble_from_args(args),
    )  # fmt: skip
    if isinstance(det.model.proposal_generator, GivenBoxes):  # no RPN: every image would fail
        raise RegionCLIPError(
            f"{checkpoint}: has no RPN to propose regions; for a clip checkpoint give --rpn RPN_CHECKPOINT "
            "(from `regionclip train-rpn` or `regionclip convert`)"
        )
    bank = det.vocabulary_bank(names)
    precision = resolve_precision(args.precision, det.device, log=dist.is_main)
    apply_precision(det.model, precision)  # after the (fp32) vocabulary
    kwargs = {
        k: v
        for k, v in (("score_thresh", args.score_thresh), ("max_dets", args.max_dets), ("nms", args.nms))
        if v is not None
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pngs = png_names(files)
    done = []  # (index in files, image entry without id, COCO results without image id)
    failed = []  # (index in files, skipped entry)
    shard = shard_indices(len(files), dist)
    step = max(1, args.batch_size)
    bar = tqdm(total=len(shard), desc="detect", unit="img", file=sys.stderr, disable=not dist.is_main)
    for start in range(0, len(shard), step):
        readable = []  # (index in files, RGB image): an unreadable file is skipped, the batch goes on
        for i in shard[start : start + step]:
            try:
                readable.append((i, read_image(files[i])))
            except RegionCLIPError as err:
                failed.append((i, {"file": str(files[i]), "reason": str(err)}))
        bar.update(len(shard[start : start + step]))
        if not readable:
            continue
        results = det([image for _, image in readable], bank, batch_size=len(readable), **kwargs)
        for (i, _), result in zip(readable, results, strict=True):
            w, h = result.image.size
            png = None
            if not args.no_png:
                png = out / pngs[i]
                drawing = result.plot(min_score=args.show_score, max_boxes=args.show_top)
                atomic_write(png, lambda p, im=drawing: im.save(p, format="PNG"))
            entry = {"file_name": str(files[i]), "width": w, "height": h, "png": str(png) if png else None}
            done.append((i, entry, result.to_coco(0)))
    bar.close()
    done = sorted(gather_lists(done, dist), key=lambda item: item[0])  # every rank's share, in input order
    skipped += [entry for _, entry in sorted(gather_lists(failed, dist), key=lambda item: item[0])]
    if not dist.is_main:
        return 0
    if not done:  # nothing could be read: an error, and earlier outputs in --out stay as they were
        first = skipped[0]
        why = first["reason"] if first["file"] in first["reason"] else f"{first['file']}: {first['reason']}"
        raise RegionCLIPError(f"none of the {len(skipped)} images could be read (e.g. {why})")
    results, images = [], []
    for _, entry, coco in done:
        image_id = len(images) + 1
        images.append({"id": image_id, **entry})
        results += [{**r, "image_id": image_id} for r in coco]
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(bank.names)]
    atomic_write_json(out / "detections.json", results)
    summary = {
        "images": images,
        "categories": categories,
        "skipped": skipped,
        "checkpoint": str(checkpoint),
        "ensemble": det.model.ensemble.describe(bank.names) if det.model.ensemble is not None else None,
        "drawn": {"min_score": args.show_score, "max_per_image": args.show_top},
        "precision": precision.name,
        "world_size": dist.world_size,
    }
    atomic_write_json(out / "summary.json", summary)
    print(
        f"{len(images)} images, {len(results)} detections -> {out / 'detections.json'}; {len(skipped)} skipped"
    )
    for entry in skipped:
        print(f"  skipped {entry['file']}: {entry['reason']}", file=sys.stderr)
    return 0


def png_names(files: list[Path]) -> list[str]:
    """The PNG name of each input: its stem, with ``_`` appended until unique (decided before sharding)."""
    used: set[str] = set()
    names = []
    for path in files:
        stem = path.stem
        while stem in used:
            stem += "_"
        used.add(stem)
        names.append(f"{stem}.png")
    return names

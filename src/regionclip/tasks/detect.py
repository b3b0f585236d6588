"""The detect task (``regionclip detect``, and what ``index`` and ``serve`` share with it): open-vocabulary
detection on image files and folders; writes COCO-results JSON (every detection), ``summary.json`` and annotated
PNGs (only the detections worth seeing: ``show_score``, ``show_top``; labels outside the boxes, a legend).
``ensemble.ensemble = "frozen"`` ensembles the scores with the frozen initial classifier
(:mod:`regionclip.detect.ensemble`). Unreadable images are reported and skipped; images are read one by one
and sent to the model ``batch_size`` at a time."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from regionclip.detect.api import Detector, read_image
from regionclip.detect.ensemble import EnsembleConfig
from regionclip.engine.distributed import DistInfo, cleanup
from regionclip.engine.sharding import gather_lists, inference_job, shard_indices
from regionclip.errors import RegionCLIPError
from regionclip.io import atomic_write, atomic_write_json
from regionclip.precision import apply_precision, resolve_precision
from regionclip.proposals.base import GivenBoxes
from regionclip.tasks.inference import readable_batches

DEMO_CHECKPOINT = Path("regionclip-demo/transfer_regionclip/detector.safetensors")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


@dataclass
class DetectConfig:
    inputs: list[str] = field(default_factory=list)  # image files and/or folders of images
    out: str = ""  # output folder (detections.json, summary.json, PNGs)
    checkpoint: str | None = None  # detector or clip checkpoint, or a converted folder (None: the demo's)
    rpn: str | None = None  # rpn checkpoint for a clip (zero-shot) checkpoint
    score_thresh: float | None = None  # minimum score (None: the checkpoint's)
    max_dets: int | None = None  # detections per image (None: the checkpoint's)
    nms: str | None = None  # per-class NMS "hard" | "soft" (None: the checkpoint's)
    batch_size: int = 1  # images per forward pass
    device: str = "cpu"  # cpu, cuda, cuda:1, ...
    min_size: int | None = None  # test shorter side (None: the checkpoint's or 800)
    max_size: int | None = None  # test longer side cap (None: the checkpoint's or 1333)
    no_png: bool = False  # write only the JSON files
    show_score: float = 0.3  # PNGs: draw detections with score >= this
    show_top: int = 10  # PNGs: draw at most this many per image
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)  # frozen-classifier score ensemble
    precision: str = "auto"  # networks in fp32 or bf16 (auto: bf16 where native)


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


def detect(cfg: DetectConfig, names: list[str]) -> int:
    """Detect ``names`` in the images of ``cfg.inputs``; rank 0 writes the outputs. Returns 0."""
    checkpoint = cfg.checkpoint or default_checkpoint()
    files, skipped = collect_images(cfg.inputs)
    if not files:
        raise RegionCLIPError(f"no images found in {', '.join(cfg.inputs)}")
    dist = inference_job(cfg.device)  # one process, or this rank of a torchrun job (images sharded)
    try:
        return _detect(cfg, names, checkpoint, files, skipped, dist)
    finally:
        cleanup()


def _detect(
    cfg: DetectConfig,
    names: list[str],
    checkpoint: Path | str,
    files: list[Path],
    skipped: list[dict],
    dist: DistInfo,
) -> int:
    """Detection on this rank's share of ``files``; rank 0 writes the merged outputs."""
    det = Detector.from_pretrained(
        checkpoint, rpn=cfg.rpn, device=dist.device, min_size=cfg.min_size, max_size=cfg.max_size,
        ensemble=cfg.ensemble,
    )  # fmt: skip
    if isinstance(det.model.proposal_generator, GivenBoxes):  # no RPN: every image would fail
        raise RegionCLIPError(
            f"{checkpoint}: has no RPN to propose regions; for a clip checkpoint give --rpn RPN_CHECKPOINT "
            "(from `regionclip train-rpn` or `regionclip convert`)"
        )
    bank = det.vocabulary_bank(names)
    precision = resolve_precision(cfg.precision, det.device, log=dist.is_main)
    apply_precision(det.model, precision)  # after the (fp32) vocabulary
    kwargs = {
        k: v
        for k, v in (("score_thresh", cfg.score_thresh), ("max_dets", cfg.max_dets), ("nms", cfg.nms))
        if v is not None
    }
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    pngs = png_names(files)
    done = []  # (index in files, image entry without id, COCO results without image id)
    failed = []  # (index in files, skipped entry)
    shard = shard_indices(len(files), dist)
    bar = tqdm(total=len(shard), desc="detect", unit="img", file=sys.stderr, disable=not dist.is_main)
    batches = readable_batches(
        lambda i: read_image(files[i]), shard, cfg.batch_size, errors=(RegionCLIPError,)
    )
    for readable, unreadable in batches:  # an unreadable file is skipped, the rest of its batch goes on
        failed += [
            (entry.index, {"file": str(files[entry.index]), "reason": entry.reason}) for entry in unreadable
        ]
        bar.update(len(readable) + len(unreadable))
        if not readable:
            continue
        results = det([image for _, image in readable], bank, batch_size=len(readable), **kwargs)
        for (i, _), result in zip(readable, results, strict=True):
            w, h = result.image.size
            png = None
            if not cfg.no_png:
                png = out / pngs[i]
                drawing = result.plot(min_score=cfg.show_score, max_boxes=cfg.show_top)
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
        "drawn": {"min_score": cfg.show_score, "max_per_image": cfg.show_top},
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

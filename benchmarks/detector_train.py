"""Benchmark of one detector training step on a CPU (forward + backward + SGD), by numeric mode.

Modes, measured in the same process and interleaved round by round (so load from other processes hits
them alike); the baseline is ``plain``:

* ``plain``: denormal floats kept, torchvision's RoIAlign (the loop before the two changes below);
* ``flush``: denormals flushed to zero (``TrainConfig.flush_denormal``, :func:`regionclip.precision.set_flush_denormal`);
* ``flush+matmul``: and RoIAlign as a matrix product (:mod:`regionclip.roi_align`), the default;
* ``bf16``: the default plus ``precision: bf16`` (autocast on the towers).

With ``--detector`` (a ``detector.safetensors``) and ``--json`` / ``--images`` (a COCO-format set) the step
runs on that detector and real images (the miniature world's: its trained attention pool saturates, which is
where denormals appear); without them, on a random RN-tiny and random images (no denormals to flush).

    python benchmarks/detector_train.py --detector RUN/transfer_clip/detector.safetensors \\
        --json RUN/world/annotations/instances_train.json --images RUN/world/images/train

Prints a JSON object and a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from torchvision.ops import roi_align

import regionclip.regions as regions_module
from regionclip.clip.checkpoint import create_model
from regionclip.data.coco import CocoDetection, collate_detection, load_coco_instances
from regionclip.data.transforms import detector_train_transform
from regionclip.detect import DetectionBatch, build_detector
from regionclip.detect.api import load_detector
from regionclip.detect.config import DetectorConfig
from regionclip.precision import apply_precision, resolve_precision, set_flush_denormal
from regionclip.proposals.base import GivenBoxes
from regionclip.regions import RegionEncoder
from regionclip.roi_align import roi_align_auto
from regionclip.structures import ImageBatch

MODES = ("plain", "flush", "flush+matmul", "bf16")


def real_batches(detector_path: str, json_path: str, image_root: str, batch: int, rois: int, size: int):
    """The trained detector (train mode, ``rois`` sampled RoIs per image) and batches of real train images."""
    detector = load_detector(detector_path).detector.train()
    detector.sampler.__init__(rois, 0.25, 0.5)
    instances = load_coco_instances(json_path)
    names = [
        c["name"] for c in sorted(instances["categories"], key=lambda c: c["id"]) if c.get("split") != "novel"
    ]
    dataset = CocoDetection(
        instances, image_root, names, detector_train_transform((size,), 2 * size, 0.0), True
    )
    images = [dataset[i] for i in range(4 * batch)]
    batches = [collate_detection(images[i : i + batch]) for i in range(0, len(images), batch)]
    return detector, [DetectionBatch(im, tg, None) for im, tg, _ in batches]


def random_batches(batch: int, rois: int, size: int):
    """A random RN-tiny detector on GT boxes as proposals, and random images with random boxes."""
    torch.manual_seed(0)
    clip = create_model("RN-tiny")
    cfg = DetectorConfig(recipe="coco", rois_per_image=rois, temperature=0.07)
    detector = build_detector(cfg, RegionEncoder(clip.visual), GivenBoxes(), torch.randn(48, 128)).train()
    out = []
    for _ in range(4):
        xy = torch.rand(batch, 4, 2) * size * 0.6
        boxes = torch.cat([xy, xy + size * 0.3], dim=2)
        targets = [{"boxes": b, "labels": torch.randint(0, 48, (4,))} for b in boxes]
        images = ImageBatch(torch.randn(batch, 3, size, size), [(size, size)] * batch)
        out.append(DetectionBatch(images, targets, [t["boxes"] for t in targets]))
    return detector, out


def step(detector, batch, optimizer) -> float:
    start = time.perf_counter()
    output = detector(batch)
    sum(output.losses.values()).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def set_mode(detector, mode: str) -> None:
    set_flush_denormal(mode != "plain")
    regions_module.roi_align_auto = roi_align if mode in ("plain", "flush") else roi_align_auto
    name = "bf16" if mode == "bf16" else "fp32"
    apply_precision(detector, resolve_precision(name, torch.device("cpu"), log=False))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector", help="a detector.safetensors (default: random RN-tiny)")
    parser.add_argument("--json", help="COCO-format instances JSON of training images")
    parser.add_argument("--images", help="image folder of --json")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rois", type=int, default=32, help="sampled RoIs per image")
    parser.add_argument("--size", type=int, default=160, help="image short side")
    parser.add_argument("--rounds", type=int, default=4, help="timed steps per mode (after one warm-up)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args(argv)
    if args.detector and not (args.json and args.images):
        parser.error("--detector needs --json and --images")
    if args.detector:
        detector, batches = real_batches(
            args.detector, args.json, args.images, args.batch, args.rois, args.size
        )
    else:
        detector, batches = random_batches(args.batch, args.rois, args.size)
    params = [p for p in detector.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.0, momentum=0.9)  # LR 0: every round sees the same weights
    times: dict[str, list[float]] = {m: [] for m in args.modes}
    for round_index in range(args.rounds + 1):
        for mode in args.modes:
            set_mode(detector, mode)
            seconds = step(detector, batches[round_index % len(batches)], optimizer)
            if round_index > 0:
                times[mode].append(seconds)
    set_mode(detector, "flush+matmul")
    base = statistics.median(times[args.modes[0]])
    result = {
        "case": "real" if args.detector else "random RN-tiny",
        "batch": args.batch,
        "rois_per_image": args.rois,
        "size": args.size,
        "threads": torch.get_num_threads(),
        "baseline": args.modes[0],
        "modes": {
            m: {"median_s": statistics.median(t), "ratio_to_baseline": statistics.median(t) / base}
            for m, t in times.items()
        },
    }
    print(json.dumps(result, indent=2))
    print(f"\n| mode | step (s, median of {args.rounds}) | / {args.modes[0]} |\n|---|---:|---:|")
    for m, r in result["modes"].items():
        print(f"| {m} | {r['median_s']:.3f} | {r['ratio_to_baseline']:.2f} |")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

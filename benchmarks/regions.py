"""Benchmark of the region encoder (issue: foundation): regions/s of ``encode_regions`` for RN50 on one
800x1066 image with 100 and 1000 boxes, against the crop-and-encode baseline (crop each box from the
image, resize to 224, ``encode_image``) and against OpenAI's all-token attention pool, in the same run.

Each case runs in its own subprocess so its peak memory is its own. Random weights (speed does not depend
on them). Usage: ``python benchmarks/regions.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def run_case(case: str, boxes: int, repeats: int) -> dict:
    import torch
    import torch.nn.functional as F

    import regionclip
    from _common import peak_rss_mb, timeit
    from regionclip.regions import RegionEncoder, run_trunk

    torch.manual_seed(0)
    model = regionclip.create_model("RN50")
    image = torch.randn(1, 3, 800, 1066)
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(boxes, 2, generator=g) * torch.tensor([900.0, 650.0])
    wh = 32 + torch.rand(boxes, 2, generator=g) * 300
    box = torch.cat([xy, (xy + wh).minimum(torch.tensor([1066.0, 800.0]))], dim=1)
    encoder = RegionEncoder(model.visual, chunk_size=256)

    with torch.no_grad():
        if case == "regionclip":
            seconds = timeit(lambda: encoder(image, [box]), repeats=repeats)
            n = boxes
        elif case == "all-token-attnpool":
            # same pipeline, but OpenAI's attention pool (projects queries for all 50 tokens)
            def official_pool():
                res4 = run_trunk(model.visual, image)
                feats = encoder.pool(res4, [box])
                return torch.cat([model.visual.attnpool(model.visual.layer4(c)) for c in feats.split(256)])

            seconds = timeit(official_pool, repeats=repeats)
            n = boxes
        elif case == "crop-and-encode":
            # baseline: crop each region, resize to 224, run the whole CLIP image tower; measured on a
            # subset of the boxes (it is slow), reported as a rate
            n = min(boxes, 32)

            def crop_encode():
                crops = []
                for x1, y1, x2, y2 in box[:n].round().long().tolist():
                    crop = image[:, :, y1:y2, x1:x2]
                    crops.append(F.interpolate(crop, size=(224, 224), mode="bicubic", align_corners=False))
                return torch.cat([model.encode_image(c) for c in torch.cat(crops).split(32)])

            seconds = timeit(crop_encode, repeats=repeats)
        else:
            raise ValueError(case)
    return {
        "case": case,
        "boxes": boxes,
        "measured_regions": n,
        "seconds": seconds,
        "regions_per_s": n / seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 boxes only, one repeat")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--boxes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.boxes, args.repeats)))
        return
    from _common import report

    rows = []
    box_counts = [100] if args.quick else [100, 1000]
    repeats = 1 if args.quick else args.repeats
    for boxes in box_counts:
        for case in ("regionclip", "all-token-attnpool", "crop-and-encode"):
            out = subprocess.run(
                [sys.executable, __file__, "--case", case, "--boxes", str(boxes), "--repeats", str(repeats)],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for boxes in box_counts:
        ours = next(r for r in rows if r["case"] == "regionclip" and r["boxes"] == boxes)
        for r in rows:
            if r["boxes"] == boxes:
                r["speedup_of_regionclip"] = ours["regions_per_s"] / r["regions_per_s"]
    report(
        "regions",
        rows,
        [
            "case",
            "boxes",
            "measured_regions",
            "seconds",
            "regions_per_s",
            "speedup_of_regionclip",
            "peak_rss_mb",
        ],
    )


if __name__ == "__main__":
    main()

"""Benchmark of open-vocabulary detector inference (method reference §6.5, §13).

Per-image latency of the RN50-C4 detector (random weights) on one 800x1066 image with 1000 given random
proposals, split into trunk (stem..layer3), proposals (GivenBoxes: negligible; an RPN is not measured here),
region head (RoIAlign + layer4 + attention pool) and post-processing (classifier, box decoding, score
threshold, per-class soft-NMS or hard NMS, top-k) for 65 (COCO) and 1203 (LVIS) classes; plus soft-NMS
alone on 1000 boxes x 65 classes, the vectorised :func:`batched_soft_nms` against the plain loop
:func:`soft_nms_reference` run class by class in the same process (baseline; with ``--ref-classes`` < 65 the
loop is timed on that many classes and scaled linearly, which is exact up to noise since classes are
independent). Prints a table and a JSON line.

    python benchmarks/detect.py            # about 1-3 minutes on a 2-core CPU
    python benchmarks/detect.py --quick    # smaller: 300 proposals, soft-NMS baseline on 2 classes
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from regionclip.clip import create_model
from regionclip.detect import DetectorConfig, build_detector
from regionclip.detect.postprocess import postprocess_image
from regionclip.detect.soft_nms import batched_soft_nms, soft_nms_reference
from regionclip.proposals import GivenBoxes
from regionclip.regions import RegionEncoder
from regionclip.structures import ImageBatch


def _timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _random_boxes(n: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.4, h * 0.4]) + 16
    return torch.cat([xy, xy + wh], dim=1)


def bench_pipeline(num_proposals: int, vocab_sizes: list[int], repeats: int, height: int, width: int) -> dict:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    encoder = RegionEncoder(create_model("RN50").visual)
    det = build_detector(DetectorConfig(recipe="coco"), encoder, GivenBoxes(), torch.randn(48, 1024)).eval()
    images = ImageBatch.from_images([torch.rand(3, height, width, generator=g)])
    given = [_random_boxes(num_proposals, height, width, g)]
    out: dict = {"image": [height, width], "proposals": num_proposals}
    with torch.no_grad():
        out["trunk_s"], res4 = _timed(lambda: det.backbone.trunk(images.tensor), repeats)
        out["proposals_s"], proposals = _timed(lambda: det.propose(images, given), repeats)
        boxes = [p.boxes for p in proposals]
        out["region_head_s"], emb = _timed(lambda: det.embed_regions(res4, boxes), repeats)
        for k in vocab_sizes:
            vocab = torch.randn(k, emb.shape[1], generator=g)
            for nms in ("soft", "hard"):

                def post(vocab=vocab, nms=nms):
                    logits = det.classifier(emb, vocab)
                    pred = det.box_transform.decode(det.box_regressor(emb), boxes[0])
                    return postprocess_image(
                        logits, pred, proposals[0].objectness, emb, images.image_sizes[0], 0.001, nms=nms
                    )

                t, dets = _timed(post, repeats)
                out[f"post_{k}_{nms}_s"] = t
                out[f"dets_{k}_{nms}"] = len(dets)
            probs = det.classifier(emb, vocab).softmax(dim=1)[:, :-1]
            out[f"candidates_{k}"] = int((probs > 0.001).sum())
    return out


def bench_soft_nms(num_boxes: int, num_classes: int, ref_classes: int) -> dict:
    g = torch.Generator().manual_seed(1)
    boxes = _random_boxes(num_boxes, 800, 1066, g)
    scores = torch.rand(num_boxes, num_classes, generator=g) * 0.999 + 0.001  # every pair is a candidate
    rows = torch.arange(num_boxes).repeat_interleave(num_classes)
    cls = torch.arange(num_classes).repeat(num_boxes)
    flat_boxes, flat_scores = boxes[rows], scores.flatten()
    t_vec, (keep, _) = _timed(lambda: batched_soft_nms(flat_boxes, flat_scores, cls, box_ids=rows), 1)
    t_vec_iou, _ = _timed(lambda: batched_soft_nms(flat_boxes, flat_scores, cls), 1)

    def reference():
        kept = 0
        for c in range(ref_classes):
            k, _ = soft_nms_reference(boxes, scores[:, c])
            kept += len(k)
        return kept

    t_ref_part, kept_ref = _timed(reference, 1)
    t_ref = t_ref_part * num_classes / ref_classes
    return {
        "boxes": num_boxes,
        "classes": num_classes,
        "candidates": int(flat_scores.numel()),
        "vectorised_s": t_vec,
        "vectorised_no_box_ids_s": t_vec_iou,
        "reference_loop_s": t_ref,
        "reference_classes_timed": ref_classes,
        "speedup": t_ref / t_vec,
        "kept_vectorised": int(keep.numel()),
        "kept_reference_timed_classes": kept_ref,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 proposals, baseline loop on 2 classes")
    parser.add_argument("--proposals", type=int, default=None, help="proposals per image (default 1000)")
    parser.add_argument("--repeats", type=int, default=1, help="repeats per stage (median)")
    parser.add_argument("--ref-classes", type=int, default=None, help="classes timed for the loop baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--soft-nms-only", action="store_true", help="skip the RN50 pipeline")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    num_props = args.proposals or (300 if args.quick else 1000)
    ref_classes = args.ref_classes or (2 if args.quick else 8)

    pipe = {} if args.soft_nms_only else bench_pipeline(num_props, [65, 1203], args.repeats, 800, 1066)
    snms = bench_soft_nms(1000, 65, ref_classes)
    result = {
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "pipeline": pipe,
        "soft_nms": snms,
    }
    if pipe:
        _print_pipeline(pipe, num_props, result["threads"])
    print(f"soft-NMS, {snms['boxes']} boxes x {snms['classes']} classes ({snms['candidates']} candidates):")
    print(f"  vectorised      {snms['vectorised_s']:>9.3f} s   (shared boxes: decay matrix + gathers)")
    print(f"  vectorised      {snms['vectorised_no_box_ids_s']:>9.3f} s   (IoU recomputed each step)")
    print(
        f"  reference loop  {snms['reference_loop_s']:>9.3f} s"
        f"  (timed on {snms['reference_classes_timed']} classes, scaled)   speed-up x{snms['speedup']:.0f}"
    )
    print(json.dumps(result))


def _print_pipeline(pipe: dict, num_props: int, threads: int) -> None:
    print(f"RN50-C4, random weights, image {pipe['image']}, {num_props} given proposals, threads {threads}")
    print(f"{'stage':<34}{'seconds':>10}")
    for name in ("trunk_s", "proposals_s", "region_head_s"):
        print(f"{name[:-2]:<34}{pipe[name]:>10.3f}")
    for k in (65, 1203):
        for nms in ("soft", "hard"):
            label = f"post-process {k} cls {nms}-NMS"
            print(f"{label:<34}{pipe[f'post_{k}_{nms}_s']:>10.3f}   ({pipe[f'candidates_{k}']} candidates)")
    print()


if __name__ == "__main__":
    main()

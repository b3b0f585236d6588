"""Benchmark of open-vocabulary detector inference as users run it (method reference §6.5, §13).

Per-image latency of the RN50-C4 detector (random weights) on one 800x1066 image: the official checkpoints'
proposal network (detectron2 R50-C4 RPN, random weights, 1000 proposals), the trunk (stem..layer3), the
region head (RoIAlign + layer4 + attention pool) on 1000 given random proposals, post-processing
(classifier, box decoding, score threshold, per-class soft-NMS or hard NMS, top-k) for 65 (COCO) and 1203
(LVIS) classes, ``predict()`` end to end with the RPN (the official evaluation setting), 50 given boxes end
to end, and the process's peak RSS; each ``--precision`` in its own process, side by side with the bf16 /
fp32 ratio, the official figures and the targets. Plus soft-NMS alone on 1000 boxes x 65 classes, the
vectorised :func:`batched_soft_nms` against the plain loop :func:`soft_nms_reference` run class by class in
the same process (baseline; with ``--ref-classes`` < 65 the loop is timed on that many classes and scaled
linearly, which is exact up to noise since classes are independent). Prints a table and a JSON line.

    python benchmarks/detect.py --precision fp32 bf16   # about 3-5 minutes on a 2-core CPU
    python benchmarks/detect.py --quick                 # smaller: 300 proposals, loop baseline on 2 classes
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

import _common
from regionclip.clip import create_model
from regionclip.detect import DetectorConfig, build_detector
from regionclip.detect.postprocess import postprocess_image
from regionclip.detect.soft_nms import batched_soft_nms, soft_nms_reference
from regionclip.precision import PRECISIONS, apply_precision, resolve_precision
from regionclip.proposals import GivenBoxes
from regionclip.proposals.detectron2 import Detectron2RPNConfig, build_detectron2_rpn
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


def bench_pipeline(
    num_proposals: int, vocab_sizes: list[int], repeats: int, height: int, width: int, precision: str
) -> dict:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    prec = resolve_precision(precision, "cpu", log=False)
    encoder = RegionEncoder(create_model("RN50").visual)
    det = build_detector(DetectorConfig(recipe="coco"), encoder, GivenBoxes(), torch.randn(48, 1024)).eval()
    # the official checkpoints' proposal network: detectron2 R50-C4 RPN (random weights), 1000 proposals
    rpn = build_detectron2_rpn(Detectron2RPNConfig(arch="R50-C4", post_nms_topk=num_proposals))
    apply_precision(det, prec)
    apply_precision(rpn, prec)
    images = ImageBatch.from_images([torch.rand(3, height, width, generator=g)])
    given = [_random_boxes(num_proposals, height, width, g)]
    out: dict = {"image": [height, width], "proposals": num_proposals, "precision": prec.name}
    with torch.no_grad():
        # warm-up: the first call of each shape pays oneDNN's kernel set-up (bf16 weight reorders for AMX)
        rpn(images)
        det.predict(images, torch.randn(65, 1024, generator=g), [given[0][:300]])
        out["rpn_s"], rpn_props = _timed(lambda: rpn(images), repeats)
        out["rpn_proposals"] = len(rpn_props[0])
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
        vocab65 = torch.randn(65, emb.shape[1], generator=g)
        # 50 given boxes, end to end through predict (official 2.2 s)
        box50 = [_random_boxes(50, height, width, g)]
        out["given50_s"], _ = _timed(lambda: det.predict(images, vocab65, box50, nms="soft"), repeats)
        # the official evaluation setting end to end: RPN + trunk + region head + soft-NMS, 65 classes
        det.proposal_generator = rpn
        out["e2e_rpn_soft_s"], _ = _timed(lambda: det.predict(images, vocab65, nms="soft"), repeats)
    stages = out["rpn_s"] + out["trunk_s"] + out["region_head_s"]
    out["sum_rpn_soft_s"] = stages + out["post_65_soft_s"]
    out["sum_rpn_hard_s"] = stages + out["post_65_hard_s"]
    out["peak_rss_mb"] = round(_common.peak_rss_mb())
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


OFFICIAL = {  # method reference §13, same kind of machine (2 cores)
    "sum_rpn_soft_s": 94.5,  # RPN + detector, soft-NMS, 65 classes
    "sum_rpn_hard_s": 27.6,  # same with hard NMS
    "given50_s": 2.2,  # 50 given boxes
    "peak_rss_mb": 3700,  # with the RPN
}
TARGETS = {"e2e_rpn_soft_s": 5.0, "given50_s": 0.5, "peak_rss_mb": 2048}  # issue 16, 2 cores


def run_child(precision: str, argv: list[str]) -> dict:
    """The pipeline in its own process (its own peak RSS); returns its JSON."""
    cmd = [sys.executable, __file__, *argv, "--precision", precision, "--pipeline-json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 proposals, baseline loop on 2 classes")
    parser.add_argument("--proposals", type=int, default=None, help="proposals per image (default 1000)")
    parser.add_argument("--repeats", type=int, default=1, help="repeats per stage (median)")
    parser.add_argument("--ref-classes", type=int, default=None, help="classes timed for the loop baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--soft-nms-only", action="store_true", help="skip the RN50 pipeline")
    parser.add_argument(
        "--precision", nargs="+", default=["fp32"], choices=[p for p in PRECISIONS if p != "auto"],
        help="fp32 and/or bf16; several: each pipeline in its own process, side by side, bf16 / fp32 ratio",
    )  # fmt: skip
    parser.add_argument("--pipeline-json", action="store_true", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    num_props = args.proposals or (300 if args.quick else 1000)
    ref_classes = args.ref_classes or (2 if args.quick else 8)
    if args.pipeline_json:
        print(json.dumps(bench_pipeline(num_props, [65, 1203], args.repeats, 800, 1066, args.precision[0])))
        return

    child_argv = ["--proposals", str(num_props), "--repeats", str(args.repeats)]
    child_argv += ["--threads", str(args.threads)] if args.threads else []
    pipes = {} if args.soft_nms_only else {p: run_child(p, child_argv) for p in args.precision}
    snms = bench_soft_nms(1000, 65, ref_classes)
    result = {
        "machine": _common.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "pipeline": pipes,
        "official": OFFICIAL,
        "targets": TARGETS,
        "soft_nms": snms,
    }
    if pipes:
        _print_pipeline(pipes, num_props, result["threads"])
    print(f"soft-NMS, {snms['boxes']} boxes x {snms['classes']} classes ({snms['candidates']} candidates):")
    print(f"  vectorised      {snms['vectorised_s']:>9.3f} s   (shared boxes: decay matrix + gathers)")
    print(f"  vectorised      {snms['vectorised_no_box_ids_s']:>9.3f} s   (IoU recomputed each step)")
    print(
        f"  reference loop  {snms['reference_loop_s']:>9.3f} s"
        f"  (timed on {snms['reference_classes_timed']} classes, scaled)   speed-up x{snms['speedup']:.0f}"
    )
    print(json.dumps(result))


ROWS = [
    ("rpn_s", "RPN R50-C4 (detectron2)"),
    ("trunk_s", "trunk (stem..layer3)"),
    ("region_head_s", "region head, given proposals"),
    ("post_65_soft_s", "post-process 65 cls soft-NMS"),
    ("post_65_hard_s", "post-process 65 cls hard NMS"),
    ("post_1203_soft_s", "post-process 1203 cls soft-NMS"),
    ("post_1203_hard_s", "post-process 1203 cls hard NMS"),
    ("sum_rpn_soft_s", "per image: RPN+det, soft (sum)"),
    ("sum_rpn_hard_s", "per image: RPN+det, hard (sum)"),
    ("e2e_rpn_soft_s", "per image: predict() with RPN, soft"),
    ("given50_s", "per image: 50 given boxes"),
    ("peak_rss_mb", "peak RSS MB (process)"),
]


def _print_pipeline(pipes: dict, num_props: int, threads: int) -> None:
    names = list(pipes)
    print(f"RN50-C4, random weights, image 800x1066, {num_props} proposals, threads {threads}")
    head = f"{'stage':<38}" + "".join(f"{n:>10}" for n in names)
    if len(names) > 1:
        head += f"{names[-1] + '/' + names[0]:>12}"
    print(head + f"{'official':>10}{'target':>8}")
    for key, label in ROWS:
        values = [pipes[n][key] for n in names]
        line = f"{label:<38}" + "".join(
            f"{v:>10.3f}" if key != "peak_rss_mb" else f"{v:>10.0f}" for v in values
        )
        if len(names) > 1:
            line += f"{values[-1] / max(values[0], 1e-9):>12.2f}"
        line += f"{OFFICIAL.get(key, ''):>10}{TARGETS.get(key, ''):>8}"
        print(line)
    print()


if __name__ == "__main__":
    main()

"""The prepared GPU check (issue 16): correctness of CUDA against the CPU and throughput, as one JSON.

On one GPU, in this order, each section timed and bounded by ``--budget-s`` (default 420 s, under 8 minutes
with start-up):

1. ``correctness``: RN50 (random weights, seeded) region embeddings of 50 fixed boxes on a fixed 480x640
   image, CPU fp32 against the device in fp32 and in bf16 (minimum cosine); and the detector (RN50-C4, 65
   random class embeddings, the same 50 given boxes, soft-NMS) on that image: CPU fp32 against the device
   fp32 (top-1 detection equal, max |score| difference of the matched top-20, label agreement).
2. ``inference``: images/s of ``predict()`` for RN50 at 800x1066 with the detectron2 R50-C4 RPN (1000
   proposals) + region head + soft-NMS on 65 classes, batch 1, fp32 and bf16; peak memory.
3. ``pretraining``: images/s of one RegionCLIP pretraining step (teacher + student + text tower + losses +
   backward + SGD) for RN50 at 800x1066, 100 regions per image, 4764 concepts, bf16, at the largest batch
   that fits (doubling from 1 until out of memory or ``--max-batch``); peak memory at each batch.
4. ``detector_training``: images/s of one detector training step (RN50-C4, 512 RoIs per image, 48 base
   classes, given proposals), bf16, batch ``--det-batch``; peak memory.

    bash benchmarks/gpu.sh                                  # on the GPU machine
    python benchmarks/gpu.py --device cpu --tiny            # every code path on the CPU in seconds (tested)

Goal (docs/benchmarks.md): pretraining >= 67 images/s per H100 (official: about 3.5 images/s per V100).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import _common
from regionclip.clip import create_model
from regionclip.clip.model import freeze_stages
from regionclip.detect import DetectorConfig, build_detector
from regionclip.detect.detector import DetectionBatch
from regionclip.precision import apply_precision, resolve_precision
from regionclip.pretrain.task import PretrainBatch, PretrainTask, TextEncoder
from regionclip.proposals import GivenBoxes
from regionclip.proposals.detectron2 import Detectron2RPNConfig, build_detectron2_rpn
from regionclip.proposals.random_boxes import RandomBoxes
from regionclip.regions import RegionEncoder
from regionclip.structures import ImageBatch


@dataclass
class Sizes:
    preset: str  # CLIP preset
    image: tuple[int, int]  # inference / training image (H, W)
    small_image: tuple[int, int]  # correctness image
    proposals: int  # RPN proposals at inference
    regions: int  # pretraining regions per image
    concepts: int  # pretraining concept pool size
    rpn_width: int  # detectron2 RPN stem width (64: R50)
    rpn_blocks: tuple[int, int, int, int]  # detectron2 RPN blocks per stage
    iters: int  # timed iterations per measurement


FULL = Sizes("RN50", (800, 1066), (480, 640), 1000, 100, 4764, 64, (3, 4, 6, 3), 10)
TINY = Sizes("RN-micro", (64, 96), (64, 80), 30, 6, 20, 8, (1, 1, 1, 1), 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(_common.peak_rss_mb(), 1)


def _boxes(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 16
    return torch.cat([xy, xy + wh], dim=1)


def _image(h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def _throughput(step, batch: int, iters: int, device: torch.device) -> float:
    step()  # warm-up (cuDNN autotuning, allocator)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return batch * iters / (time.perf_counter() - t0)


def _detector(sz: Sizes, classes: int, seed: int):
    torch.manual_seed(seed)
    clip = create_model(sz.preset)
    cfg = DetectorConfig(recipe="coco")
    return clip, build_detector(
        cfg, RegionEncoder(clip.visual), GivenBoxes(), torch.randn(classes, clip.embed_dim)
    )


def correctness(sz: Sizes, device: torch.device) -> dict:
    h, w = sz.small_image
    image = ImageBatch.from_images([_image(h, w, 1)])
    boxes = [_boxes(50, h, w, 2)]
    torch.manual_seed(0)
    enc = RegionEncoder(create_model(sz.preset).visual).eval()
    with torch.no_grad():
        ref = enc(image.tensor, boxes)
        out = {}
        for name in ("fp32", "bf16"):
            dev = apply_precision(copy.deepcopy(enc).to(device), resolve_precision(name, device, log=False))
            emb = dev(image.tensor.to(device), [b.to(device) for b in boxes]).cpu()
            out[f"region_cosine_min_{name}"] = float(F.cosine_similarity(ref, emb).min())
        _, det = _detector(sz, 48, 0)
        det = det.eval()
        vocab = torch.randn(65, det.embed_dim, generator=torch.Generator().manual_seed(3))
        cpu = det.predict(image, vocab, boxes, nms="soft")[0]
        gpu_det = copy.deepcopy(det).to(device)
        dev = gpu_det.predict(image.to(device), vocab.to(device), [b.to(device) for b in boxes], nms="soft")[
            0
        ]
    k = min(20, len(cpu.scores), len(dev.scores))
    out["detections_cpu"] = int(len(cpu.scores))
    out["detections_device"] = int(len(dev.scores))
    out["top1_equal"] = bool(
        k > 0
        and int(cpu.labels[0]) == int(dev.labels[0])
        and torch.allclose(cpu.boxes[0], dev.boxes[0].cpu(), atol=0.1)
    )
    out["top20_label_agreement"] = (
        float((cpu.labels[:k] == dev.labels[:k].cpu()).float().mean()) if k else 0.0
    )
    out["top20_max_score_diff"] = float((cpu.scores[:k] - dev.scores[:k].cpu()).abs().max()) if k else 0.0
    return out


def inference(sz: Sizes, device: torch.device) -> dict:
    h, w = sz.image
    rows = {}
    for name in ("fp32", "bf16"):
        _, det = _detector(sz, 48, 0)
        rpn_cfg = Detectron2RPNConfig(
            width=sz.rpn_width, stage_blocks=sz.rpn_blocks, post_nms_topk=sz.proposals
        )
        det.proposal_generator = build_detectron2_rpn(rpn_cfg)
        det = det.to(device).eval()
        apply_precision(det, resolve_precision(name, device, log=False))
        images = ImageBatch.from_images([_image(h, w, 4)]).to(device)
        vocab = torch.randn(65, det.embed_dim, device=device)
        _reset_peak(device)
        with torch.no_grad():
            ips = _throughput(
                lambda det=det, im=images, v=vocab: det.predict(im, v, nms="soft"), 1, sz.iters, device
            )
        rows[name] = {"images_per_s": round(ips, 3), "peak_mb": _peak_mb(device)}
        del det
    rows["bf16_speedup"] = round(rows["bf16"]["images_per_s"] / rows["fp32"]["images_per_s"], 2)
    return rows


def _pretrain_task(sz: Sizes, device: torch.device) -> tuple[PretrainTask, object]:
    torch.manual_seed(0)
    clip = create_model(sz.preset)
    teacher = RegionEncoder(copy.deepcopy(clip.visual))
    freeze_stages(clip.visual, 2)
    concepts = torch.randn(sz.concepts, clip.embed_dim)
    task = PretrainTask(
        RegionEncoder(clip.visual), teacher, TextEncoder(clip), RandomBoxes(count=300, min_size=16, seed=0),
        concepts, concepts.clone(), clip.preset, regions_per_image=sz.regions,
    ).to(device)  # fmt: skip
    apply_precision(task, resolve_precision("bf16", device, log=False))
    return task.train(), clip.tokenize


def pretraining(sz: Sizes, device: torch.device, max_batch: int, deadline: float) -> dict:
    task, tokenize = _pretrain_task(sz, device)
    opt = torch.optim.SGD([p for p in task.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    tokens_one = tokenize(["a photo of a cat on a mat next to a dog"])
    h, w = sz.image
    tried, best, batch = [], None, 1
    while batch <= max_batch and time.perf_counter() < deadline:
        images = [_image(h, w, i).to(device) for i in range(batch)]
        pb = PretrainBatch(images, tokens_one.repeat(batch, 1).to(device))

        def step(pb=pb):
            out = task(pb)
            loss = sum(out.losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        _reset_peak(device)
        try:
            ips = _throughput(step, batch, max(1, sz.iters // 2), device)
        except torch.OutOfMemoryError:
            opt.zero_grad(set_to_none=True)
            tried.append({"batch": batch, "oom": True})
            break
        row = {"batch": batch, "images_per_s": round(ips, 3), "peak_mb": _peak_mb(device)}
        tried.append(row)
        if best is None or ips > best["images_per_s"]:
            best = row
        batch *= 2
    goal = 67.0
    return {
        "precision": "bf16",
        "image": list(sz.image),
        "regions_per_image": sz.regions,
        "concepts": sz.concepts,
        "batches": tried,
        "best": best,
        "goal_images_per_s": goal,
        "fraction_of_goal": round(best["images_per_s"] / goal, 3) if best else None,
        "official_v100_images_per_s": 3.5,
    }


def detector_training(sz: Sizes, device: torch.device, batch: int) -> dict:
    _, det = _detector(sz, 48, 0)
    det = det.to(device).train()
    apply_precision(det, resolve_precision("bf16", device, log=False))
    opt = torch.optim.SGD([p for p in det.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    h, w = sz.image
    images = ImageBatch.from_images([_image(h, w, i) for i in range(batch)])
    targets = [{"boxes": _boxes(5, h, w, 10 + i), "labels": torch.arange(5) % 48} for i in range(batch)]
    given = [_boxes(sz.proposals, h, w, 20 + i) for i in range(batch)]
    data = DetectionBatch(images, targets, given).to(device)

    def step():
        out = det(data)
        loss = sum(out.losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    _reset_peak(device)
    ips = _throughput(step, batch, max(1, sz.iters // 2), device)
    return {"precision": "bf16", "batch": batch, "images_per_s": round(ips, 3), "peak_mb": _peak_mb(device)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", default="cuda", help="cuda (the check) or cpu (--tiny: test the code paths)"
    )
    parser.add_argument("--tiny", action="store_true", help="RN-micro at 64x96: seconds, for the test suite")
    parser.add_argument("--max-batch", type=int, default=None, help="largest pretraining batch tried")
    parser.add_argument("--det-batch", type=int, default=None, help="detector training batch (default 8)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop the batch search after this")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device; run with --device cpu --tiny to test the code paths"}))
        return 2
    sz = TINY if args.tiny else FULL
    max_batch = args.max_batch or (2 if args.tiny else 256)
    det_batch = args.det_batch or (1 if args.tiny else 8)
    t0 = time.perf_counter()
    report: dict = {
        "benchmark": "gpu",
        "machine": _common.machine(),
        "device": str(device),
        "tiny": args.tiny,
    }
    if device.type == "cuda":
        report["device_name"] = torch.cuda.get_device_name(device)
        torch.backends.cudnn.benchmark = True
    sections = [
        ("correctness", lambda: correctness(sz, device)),
        ("inference", lambda: inference(sz, device)),
        ("detector_training", lambda: detector_training(sz, device, det_batch)),
        ("pretraining", lambda: pretraining(sz, device, max_batch, t0 + args.budget_s)),
    ]
    for name, run in sections:
        ts = time.perf_counter()
        try:
            report[name] = run()
        except Exception as err:  # noqa: BLE001 - one failed section must not lose the others' numbers
            report[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
        report[name]["seconds"] = round(time.perf_counter() - ts, 1)
        print(f"gpu check: {name} done in {report[name]['seconds']} s", file=sys.stderr)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report))
    return 0 if not any("error" in report[n] for n, _ in sections) else 1


if __name__ == "__main__":
    sys.exit(main())

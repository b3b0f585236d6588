"""Benchmark of one RegionCLIP pretraining step (method reference §5, §13), split into its parts.

Per step: ``data`` (read + decode + bicubic resize + flip of webdataset samples, tokenisation), ``teacher``
(proposals + teacher region embeddings + pseudo-labels + caption embeddings, no grad), ``student`` (the rest
of the task's forward + backward), ``optimizer`` (SGD step). The baseline, measured in the same run, is the
teacher's inference pass: ``step / teacher`` says how many inference passes a training step costs. Peak
memory is the process's peak resident set size (CPU) or ``torch.cuda.max_memory_allocated`` (GPU).

    python benchmarks/pretrain.py                       # tiny preset + RN50 at 800 px, random weights
    python benchmarks/pretrain.py --cases tiny --steps 5
    python benchmarks/pretrain.py --cases tiny rn50_480 --steps 1 --precision fp32 bf16   # side by side

Prints a JSON object and a table.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from regionclip.clip.checkpoint import create_model
from regionclip.data.pairs import WebDatasetPairs, pretrain_transform, webdataset_batches
from regionclip.precision import apply_precision, resolve_precision
from regionclip.pretrain.pseudo_labels import pseudo_label
from regionclip.pretrain.task import PretrainBatch, PretrainTask, TextEncoder, freeze_stages
from regionclip.proposals.random_boxes import RandomBoxes
from regionclip.regions import RegionEncoder
from regionclip.structures import ImageBatch

CASES = {
    # name: preset, image (H, W) written to the shard, resize short/max, batch, regions per image, concepts
    "tiny": ("RN-tiny", (120, 160), 96, 160, 4, 20, 200),
    "rn50_800": ("RN50", (600, 800), 800, 1333, 1, 100, 4764),
    # the official implementation's measured case (method reference §13): 480x640, 100 regions, 12.7 s/step
    "rn50_480": ("RN50", (480, 640), 480, 640, 1, 100, 4764),
}


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _shard(path: Path, n: int, size: tuple[int, int]) -> str:
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
                buf, format="JPEG", quality=90
            )
            for ext, data in (("jpg", buf.getvalue()), ("txt", f"a photo number {i}".encode())):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


def run_case(name: str, steps: int, device: torch.device, precision: str = "fp32") -> dict:
    preset, size, short, max_size, batch, regions, n_concepts = CASES[name]
    torch.manual_seed(0)
    clip = create_model(preset).to(device)
    teacher = RegionEncoder(__import__("copy").deepcopy(clip.visual))
    freeze_stages(clip.visual, 2)
    concepts = torch.randn(n_concepts, clip.embed_dim, device=device)
    task = PretrainTask(
        RegionEncoder(clip.visual),
        teacher,
        TextEncoder(clip),
        RandomBoxes(count=300, min_size=16, seed=0),
        concepts,
        concepts.clone(),
        clip.preset,
        regions_per_image=regions,
    ).to(device)
    prec = resolve_precision(precision, device, log=False)
    apply_precision(task, prec)  # autocast regions: student, teacher, text tower; losses fp32
    task.train()
    opt = torch.optim.SGD([p for p in task.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    with tempfile.TemporaryDirectory() as tmp:
        shard = _shard(Path(tmp) / "s.tar", batch * (steps + 1), size)
        batches = webdataset_batches(WebDatasetPairs([shard], batch, pretrain_transform(short, max_size)))(0)
        rows = []
        for step in range(steps + 1):  # step 0 is a warm-up, not reported
            t0 = time.perf_counter()
            pairs = next(batches)
            pb = PretrainBatch(pairs.images, clip.tokenize(pairs.captions))
            t1 = time.perf_counter()
            # the teacher side alone (what the task does under no_grad), timed as the inference baseline
            with torch.no_grad():
                images = ImageBatch.from_images([im.to(device) for im in pb.images])
                boxes = [p.boxes[:regions] for p in task.proposals(images)]
                labels = pseudo_label(task.teacher(images.tensor, boxes), task.teacher_concepts)
                task.text(pb.tokens.to(device))
            _sync(device)
            t2 = time.perf_counter()
            out = task(pb)
            loss = sum(out.losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            _sync(device)
            t3 = time.perf_counter()
            opt.step()
            _sync(device)
            t4 = time.perf_counter()
            teacher_s = t2 - t1
            row = {
                "data_s": t1 - t0,
                "teacher_s": teacher_s,
                # the task's forward repeats the teacher side: subtract it to leave the student's share
                "student_fwd_bwd_s": max(t3 - t2 - teacher_s, 0.0),
                "optimizer_s": t4 - t3,
                "kept": int(labels.keep.sum()),
                "peak_mb": _peak_mb(device),
            }
            row["step_s"] = row["data_s"] + row["teacher_s"] + row["student_fwd_bwd_s"] + row["optimizer_s"]
            if step > 0:
                rows.append(row)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {
        "case": name,
        "precision": prec.name,
        "preset": preset,
        "image": f"{size[0]}x{size[1]} -> short {short}",
        "batch": batch,
        "regions_per_image": regions,
        "concepts": n_concepts,
        "steps": steps,
        **{k: round(v, 4) for k, v in med.items()},
        "images_per_s": round(batch / med["step_s"], 3),
        "step_vs_teacher_inference": round(med["step_s"] / med["teacher_s"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--steps", type=int, default=2, help="reported steps per case (after one warm-up)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
        help="fp32 and/or bf16 (several: every case in each, in this run)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    results = [run_case(c, args.steps, device, p) for c in args.cases for p in args.precision]
    report = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "results": results,
    }
    print(json.dumps(report, indent=2))
    cols = [
        "case",
        "precision",
        "images_per_s",
        "step_s",
        "data_s",
        "teacher_s",
        "student_fwd_bwd_s",
        "optimizer_s",
        "peak_mb",
        "step_vs_teacher_inference",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the region index (:mod:`regionclip.region_index`): build rate and query latency.

1. Build rate: ``build_index`` on real photos (scikit-image's astronaut, chelsea, coffee, rocket, each
   also flipped and rotated: 16 distinct images) with a detector of the tiny preset ``RN-tiny`` (random
   weights, micro RPN, shorter side 160), in regions/s and images/s, against running ``Detector(...)`` on
   the same images in the same run (what every new vocabulary would cost without an index) and against a
   search of the index with a new vocabulary (``detect_in_index``).
2. Query latency at 10k, 100k and 1M regions (synthetic clustered embeddings, normalised, fp16 as
   stored; D = 1024 as RN50 and 512): one query at a time, top 20, for plain torch, FAISS flat and FAISS
   IVF (nlist ~ sqrt(R), nprobe 16), with IVF's recall@20 against the exact top 20, and the time to build
   each search structure.

    python benchmarks/index.py               # about 5-10 minutes on a 2-core CPU (1M x 1024 needs ~7 GB)
    python benchmarks/index.py --quick       # 10k and 100k only
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _common import machine, report
from regionclip.region_index import RegionSearcher, SearchConfig, build_index, detect_in_index, load_index


def _photos(folder: Path) -> list[Path]:
    from skimage import data

    files = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        img = Image.fromarray(getattr(data, name)())
        variants = [img, img.transpose(Image.FLIP_LEFT_RIGHT), img.transpose(Image.FLIP_TOP_BOTTOM),
                    img.transpose(Image.ROTATE_180)]  # fmt: skip
        for i, v in enumerate(variants):
            path = folder / f"{name}-{i}.jpg"
            v.save(path, quality=92)
            files.append(path)
    return files


def bench_build(folder: Path) -> list[dict]:
    import regionclip
    from regionclip.clip.checkpoint import text_state
    from regionclip.concepts import SIMPLE_TEMPLATES
    from regionclip.detect import DetectorConfig, build_detector
    from regionclip.detect.api import Detector, load_rpn_checkpoint, save_detector
    from regionclip.proposals.detectron2 import Detectron2RPNConfig, build_detectron2_rpn, save_detectron2_rpn
    from regionclip.region_index import model_identity
    from regionclip.regions import RegionEncoder

    torch.manual_seed(0)
    clip = regionclip.create_model("RN-tiny")
    rcfg = Detectron2RPNConfig(arch="R50-C4", width=8, stage_blocks=(1, 1, 1, 1), post_nms_topk=100)
    save_detectron2_rpn(build_detectron2_rpn(rcfg), rcfg, folder / "rpn.safetensors")
    generator, rpn_config = load_rpn_checkpoint(folder / "rpn.safetensors", "transfer")
    cfg = DetectorConfig(score_thresh=0.001, max_dets=100)
    model = build_detector(cfg, RegionEncoder(clip.visual), generator, torch.randn(2, clip.embed_dim))
    ckpt = folder / "detector.safetensors"
    extra = {"input": {"min_size": 160, "max_size": 266}, "templates": list(SIMPLE_TEMPLATES)}
    save_detector(ckpt, model, cfg, clip.preset, {"kind": "rpn", "rpn": rpn_config, "preset": "transfer"},
                  ["a", "b"], text_state(clip), extra)  # fmt: skip
    det = Detector.from_pretrained(ckpt, cache_dir=folder / "cache")
    files = _photos(folder)
    vocab = ["person", "cat", "cup", "rocket", "flag"]
    bank = det.vocabulary_bank(vocab)
    det(files[0], bank)  # warm-up
    t0 = time.perf_counter()
    report_ = build_index(det, files, folder / "idx", model_identity(det, ckpt, None), shard_size=8)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for f in files:
        det(f, bank)
    detect_s = time.perf_counter() - t0
    index = load_index(folder / "idx")
    t0 = time.perf_counter()
    detect_in_index(index, bank.embeddings)
    index_detect_s = time.perf_counter() - t0
    n, r = report_.added, report_.regions
    return [
        {"case": "build_index (RN-tiny, 160 px)", "images": n, "regions": r, "seconds": round(build_s, 3),
         "regions_per_s": round(r / build_s, 1), "images_per_s": round(n / build_s, 2)},
        {"case": "Detector(...) on the same images (per vocabulary)", "images": n, "regions": r,
         "seconds": round(detect_s, 3), "images_per_s": round(n / detect_s, 2)},
        {"case": "detect_in_index (per vocabulary, from the index)", "images": n, "regions": r,
         "seconds": round(index_detect_s, 3), "images_per_s": round(n / index_detect_s, 2)},
    ]  # fmt: skip


def synthetic(n: int, d: int, seed: int = 0, clusters: int = 2000) -> torch.Tensor:
    """``[n, d]`` fp16 unit vectors around ``clusters`` random centres (like region embeddings, which
    cluster by object kind), generated in chunks."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(clusters, d, generator=g), dim=1)
    out = torch.empty(n, d, dtype=torch.float16)
    for start in range(0, n, 131_072):
        m = min(131_072, n - start)
        assign = torch.randint(0, clusters, (m,), generator=g)
        x = centres[assign] + 0.8 * torch.randn(m, d, generator=g) / d**0.5
        out[start : start + m] = torch.nn.functional.normalize(x, dim=1).half()
    return out


def bench_query(n: int, d: int, nqueries: int, top: int = 20) -> list[dict]:
    emb = synthetic(n, d)
    g = torch.Generator().manual_seed(1)
    queries = emb[torch.randint(0, n, (nqueries,), generator=g)].float() + 0.05 * torch.randn(
        nqueries, d, generator=g
    )
    exact = None
    rows = []
    for backend in ("torch", "flat", "ivf"):
        t0 = time.perf_counter()
        searcher = RegionSearcher(emb, SearchConfig(backend))
        setup = time.perf_counter() - t0
        searcher.search(queries[:1], top)  # warm-up
        times, found = [], []
        for q in queries:
            t = time.perf_counter()
            _, idx = searcher.search(q[None], top)
            times.append(time.perf_counter() - t)
            found.append(idx[0])
        found = torch.stack(found)
        if backend == "torch":
            exact = found
        recall = float(
            np.mean([len(set(a.tolist()) & set(b.tolist())) / top for a, b in zip(found, exact, strict=True)])
        )
        rows.append({"regions": n, "dim": d, "backend": backend, "ms_per_query": round(1000 * statistics.median(times), 2),
                     "setup_s": round(setup, 2), f"recall@{top}": round(recall, 3)})  # fmt: skip
        print(rows[-1], flush=True)
        del searcher
        gc.collect()
    del emb
    gc.collect()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k regions only")
    parser.add_argument("--queries", type=int, default=20, help="queries timed per case (median)")
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 512], help="embedding dimensions")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="index sizes (regions)")
    parser.add_argument("--no-build", action="store_true", help="skip the build-rate part")
    args = parser.parse_args()
    if not args.no_build:
        with tempfile.TemporaryDirectory() as tmp:
            build_rows = bench_build(Path(tmp))
        columns = ["case", "images", "regions", "seconds", "regions_per_s", "images_per_s"]
        report("index-build", build_rows, columns)
    sizes = args.sizes or ([10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    rows = []
    for d in args.dims:
        for n in sizes:
            rows += bench_query(n, d, args.queries)
    report("index-query", rows, ["regions", "dim", "backend", "ms_per_query", "setup_s", "recall@20"],
           {"machine_note": machine()["cpu"]})  # fmt: skip


if __name__ == "__main__":
    main()

"""``regionclip search``: the best regions of a region index for text queries (JSON + a contact sheet of
the crops), or per-image detections of a vocabulary, without running the image backbone."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from regionclip.tasks.search import load_text_side


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", help="index folder written by `regionclip index`")
    parser.add_argument("queries", nargs="*", help='text queries, e.g. "red umbrella" "cat"')
    parser.add_argument("--top", type=int, default=20, help="regions returned per query (default 20)")
    vocab = parser.add_mutually_exclusive_group()
    vocab.add_argument("--vocab", help='per-image detections of these class names ("cat,dog" or a built-in)')
    vocab.add_argument("--vocab-file", help="per-image detections of the names in this file (one per line)")
    parser.add_argument("--lvis-json", help="LVIS v1 annotation JSON supplying the names of --vocab lvis")
    parser.add_argument(
        "--out", default="regionclip-search", help="output folder (default regionclip-search/)"
    )
    parser.add_argument(
        "--checkpoint",
        help="checkpoint whose text tower embeds the queries (default: the one the index records)",
    )
    parser.add_argument(
        "--backend", choices=["auto", "torch", "flat", "ivf"], default="auto",
        help="auto: torch below 20k regions, FAISS flat below 200k, FAISS IVF above",
    )  # fmt: skip
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists probed per query (default 16)")
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~sqrt(regions))")
    parser.add_argument("--score-thresh", type=float, default=None, help="detections: minimum score")
    parser.add_argument("--max-dets", type=int, default=None, help="detections per image")
    parser.add_argument("--nms", choices=["hard", "soft"], default=None, help="detections: per-class NMS")
    parser.add_argument("--no-png", action="store_true", help="write only the JSON files")


def run(args: argparse.Namespace) -> int:
    from regionclip.detect.api import DetectionResult
    from regionclip.errors import RegionCLIPError
    from regionclip.io import atomic_write, atomic_write_json
    from regionclip.region_index import (
        RegionSearcher,
        SearchConfig,
        contact_sheet,
        detect_in_index,
        faiss_module,
        ivf_cache_path,
        load_index,
        search_index,
    )
    from regionclip.vocab import check_names, parse_vocabulary, read_vocabulary_file

    vocab = None
    if args.vocab_file:
        vocab = read_vocabulary_file(args.vocab_file)
    elif args.vocab:
        vocab = parse_vocabulary(args.vocab, args.lvis_json)
    if not args.queries and vocab is None:
        raise RegionCLIPError("give text queries, or --vocab / --vocab-file for per-image detections")
    if args.top < 1:
        raise RegionCLIPError(f"--top: expected a positive number of regions, got {args.top}")
    index = load_index(args.index)
    if len(index) == 0:
        raise RegionCLIPError(f"{args.index}: the index has no regions")
    det = load_text_side(index, args.checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.queries:
        queries = check_names(args.queries, "queries")
        if args.backend == "auto" and len(index) >= SearchConfig().torch_limit and faiss_module() is None:
            print(f"regionclip search: FAISS is not installed (pip install 'regionclip[index]'): searching "
                  f"{len(index)} regions with torch", file=sys.stderr)  # fmt: skip
        config = SearchConfig(args.backend, nprobe=args.nprobe, nlist=args.nlist)
        searcher = RegionSearcher(index.embeddings, config, cache=ivf_cache_path(index))
        bank = det.vocabulary_bank(queries)
        hits = search_index(index, bank.embeddings, queries, args.top, searcher)
        results = {q: [] for q in queries}
        for h in hits:
            results[h.query].append({"rank": h.rank, "score": round(h.score, 5), "image_id": h.image["id"],
                                     "file_name": h.image["file"], "box": h.box})  # fmt: skip
        payload = {"index": str(index.folder), "backend": searcher.backend, "regions": len(index),
                   "queries": queries, "results": results}  # fmt: skip
        atomic_write_json(out / "search.json", payload)
        if not args.no_png:
            sheet = contact_sheet(hits, queries)
            atomic_write(out / "search.png", lambda tmp: sheet.save(tmp, format="PNG"))
        for q in queries:
            best = results[q][0] if results[q] else None
            where = f"{best['score']:.3f} in {best['file_name']}" if best else "no hits"
            print(f"{q!r}: {len(results[q])} regions (best {where})")
        print(
            f"{len(queries)} queries over {len(index)} regions ({searcher.backend}) -> {out / 'search.json'}"
        )
    if vocab is not None:
        bank = det.vocabulary_bank(vocab)
        per_image = detect_in_index(
            index, bank.embeddings, score_thresh=args.score_thresh, max_dets=args.max_dets, nms=args.nms
        )
        images, dets = [], []
        for image_id, (record, found) in enumerate(per_image, start=1):
            images.append({"id": image_id, "index_id": record["id"], "file_name": record["file"],
                           "width": record["width"], "height": record["height"]})  # fmt: skip
            result = DetectionResult(
                found.boxes, found.scores, found.labels, found.region_embeddings, bank.names
            )
            dets += result.to_coco(image_id)
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(bank.names)]
        atomic_write_json(out / "detections.json", dets)
        atomic_write_json(
            out / "summary.json", {"images": images, "categories": categories, "index": str(index.folder)}
        )
        print(f"{len(images)} images, {len(dets)} detections -> {out / 'detections.json'}")
    return 0

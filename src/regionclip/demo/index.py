"""The demo's last stage (see :mod:`regionclip.demo`): index the val images once with the RegionCLIP
transfer detector (``regionclip index``), search them for novel class names (``regionclip search``), and
score the retrieved regions against the ground truth (precision@k: a hit is correct when its box has
IoU >= 0.5 with a ground-truth box of the queried class in that image; the chance rate is the fraction of
all indexed regions that would be correct). Writes ``figures/index_search.png`` (the contact sheet) and a
section of ``results.md``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torchvision.ops import box_iou

from regionclip.demo.context import DemoContext, _cli, _world_paths
from regionclip.io import atomic_write_text

QUERIES = 5  # novel class names searched
TOP = 10  # hits per query (precision@TOP)
SECTION = "## Index and search (embed once, query many)"


def _gt_boxes(val: dict) -> dict[tuple[str, str], torch.Tensor]:
    """(file name, class name) -> GT boxes ``[G, 4]`` xyxy."""
    names = {c["id"]: c["name"] for c in val["categories"]}
    files = {img["id"]: img["file_name"] for img in val["images"]}
    out: dict[tuple[str, str], list] = {}
    for a in val["annotations"]:
        x, y, w, h = a["bbox"]
        out.setdefault((Path(files[a["image_id"]]).name, names[a["category_id"]]), []).append(
            [x, y, x + w, y + h]
        )
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in out.items()}


def _correct(gt: dict, file: str, name: str, box: torch.Tensor) -> bool:
    boxes = gt.get((Path(file).name, name))
    return boxes is not None and bool((box_iou(box.reshape(1, 4), boxes) >= 0.5).any())


def stage_index(ctx: DemoContext) -> dict:
    from regionclip.region_index import load_index

    paths = _world_paths(ctx)
    val = json.loads(Path(paths["val_json"]).read_text(encoding="utf-8"))
    checkpoint = ctx.results["transfer_regionclip"]["checkpoint"]
    index_dir, search_dir = ctx.out / "index" / "regions", ctx.out / "index" / "search"
    shutil.rmtree(index_dir, ignore_errors=True)  # this stage re-runs only when the detector changed
    _cli("index", paths["val_images"], "--checkpoint", checkpoint, "--out", str(index_dir),
         "--max-regions", str(ctx.plan.eval_proposals), "--min-size", str(ctx.plan.image_size))  # fmt: skip
    novel = sorted(ctx.results["world"]["novel"])
    present = {n for (_, n) in _gt_boxes(val)}
    queries = [n for n in novel if n in present][:QUERIES]
    _cli("search", str(index_dir), *queries, "--top", str(TOP), "--out", str(search_dir))
    hits = json.loads((search_dir / "search.json").read_text(encoding="utf-8"))["results"]
    gt = _gt_boxes(val)
    index = load_index(index_dir)
    per_query, chance = {}, {}
    for q in queries:
        good = [_correct(gt, h["file_name"], q, torch.tensor(h["box"])) for h in hits[q]]
        per_query[q] = sum(good) / max(len(good), 1)
        correct = 0
        for record, rows in zip(index.images, index.image_rows(), strict=True):
            boxes = gt.get((Path(record["file"]).name, q))
            if boxes is not None and len(rows):
                correct += int((box_iou(index.boxes[rows], boxes) >= 0.5).any(dim=1).sum())
        chance[q] = correct / max(len(index), 1)
    mean = sum(per_query.values()) / max(len(per_query), 1)
    mean_chance = sum(chance.values()) / max(len(chance), 1)
    figure = ctx.out / "figures" / "index_search.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(search_dir / "search.png", figure)
    rows = "\n".join(f"| {q} | {100 * per_query[q]:.0f} | {100 * chance[q]:.2f} |" for q in queries)
    section = f"""{SECTION}

`regionclip index` embedded the {len(index.images)} val images once ({len(index)} regions: the
{ctx.plan.eval_proposals} best RPN proposals per image, RegionCLIP transfer detector); `regionclip search`
then looked for {len(queries)} novel class names without running the backbone. Precision@{TOP}: the share
of the {TOP} retrieved regions whose box has IoU >= 0.5 with a ground-truth box of the queried class;
chance: the share of all indexed regions that would count. Mean precision@{TOP} {100 * mean:.0f}% against
{100 * mean_chance:.2f}% by chance. Contact sheet: `figures/index_search.png`.

| query (novel) | precision@{TOP} (%) | chance (%) |
|---|---:|---:|
{rows}
"""
    results_md = ctx.out / "results.md"
    text = results_md.read_text(encoding="utf-8") if results_md.is_file() else ""
    text = text.split(SECTION)[0].rstrip() + "\n\n" + section
    atomic_write_text(results_md, text)
    print(f"[demo] index: mean precision@{TOP} of {len(queries)} novel queries {100 * mean:.0f}% "
          f"(chance {100 * mean_chance:.2f}%); {figure}", flush=True)  # fmt: skip
    return {"queries": queries, "precision_at_k": per_query, "chance": chance, "k": TOP,
            "mean_precision": mean, "mean_chance": mean_chance, "figure": str(figure),
            "images": len(index.images), "regions": len(index)}  # fmt: skip

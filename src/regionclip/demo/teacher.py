"""The teacher report of the demo: the paper's Fig. 1(b) in miniature for the teacher CLIP (its image-level
zero-shot top-1 on the held-out web images, ``web_val``, never trained on) and its image-to-text top-1 at
batch 8 on val scene pairs (how well its text tower reads the pretraining captions' language); its region
top-1 on GT boxes is the table's first row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from regionclip.clip.checkpoint import load_clip
from regionclip.concepts import build_concept_bank
from regionclip.data.images import open_image
from regionclip.data.transforms import ResizeSquare
from regionclip.demo.context import DemoContext, _world_paths
from regionclip.structures import normalize_image


def _square_images(paths: list[Path], size: int) -> torch.Tensor:
    """CLIP's image-level input: ``[N, 3, size, size]`` normalised (shorter side resized, centre crop)."""
    square = ResizeSquare(size)
    out = []
    for path in paths:
        image, _ = square(open_image(path), torch.zeros(0, 4))
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
        out.append(normalize_image(pixels))
    return torch.stack(out)


@torch.no_grad()
def image_zero_shot(
    model, captions_json: str, image_dir: str, names: list[str], ids: list[int], cache_dir: Path
) -> dict:
    """Image-level zero-shot top-1 (percent) over ``names``: an image counts as right when the predicted name
    is one of the categories it shows (``category_ids`` of its captions); also on single-object images.
    ids: the category id of each name."""
    data = json.loads(Path(captions_json).read_text(encoding="utf-8"))
    shown: dict[int, set[int]] = {}
    for ann in data["annotations"]:
        shown.setdefault(ann["image_id"], set()).update(ann.get("category_ids", []))
    images = [img for img in data["images"] if shown.get(img["id"])]
    bank = build_concept_bank(model, names, cache_dir=cache_dir)
    classes = F.normalize(bank.embeddings.float(), dim=-1)
    size = model.preset.vision.image_size
    right, single_right, singles = 0, 0, 0
    for start in range(0, len(images), 64):
        chunk = images[start : start + 64]
        x = _square_images([Path(image_dir) / img["file_name"] for img in chunk], size)
        pred = (F.normalize(model.encode_image(x).float(), dim=-1) @ classes.T).argmax(dim=-1)
        for img, p in zip(chunk, pred.tolist(), strict=True):
            hit = ids[p] in shown[img["id"]]
            right += hit
            if len(shown[img["id"]]) == 1:
                singles += 1
                single_right += hit
    return {
        "images": len(images),
        "top1": 100.0 * right / max(1, len(images)),
        "single_object_images": singles,
        "top1_single_object": 100.0 * single_right / max(1, singles),
    }


@torch.no_grad()
def image_to_text_top1(model, captions_json: str, image_dir: str, batch: int = 8) -> dict:
    """Image-to-text top-1 (percent) within batches of ``batch`` scene pairs (each image's first caption);
    chance is 100 / batch."""
    data = json.loads(Path(captions_json).read_text(encoding="utf-8"))
    first: dict[int, str] = {}
    for ann in data["annotations"]:
        first.setdefault(ann["image_id"], ann["caption"])
    images = [img for img in data["images"] if img["id"] in first]
    size = model.preset.vision.image_size
    right, total = 0, 0
    for start in range(0, len(images) - batch + 1, batch):
        chunk = images[start : start + batch]
        x = _square_images([Path(image_dir) / img["file_name"] for img in chunk], size)
        img_emb = F.normalize(model.encode_image(x).float(), dim=-1)
        txt_emb = F.normalize(
            model.encode_text(model.tokenize([first[i["id"]] for i in chunk])).float(), dim=-1
        )
        pred = (img_emb @ txt_emb.T).argmax(dim=-1)
        right += int((pred == torch.arange(len(chunk))).sum())
        total += len(chunk)
    return {"pairs": total, "batch": batch, "top1": 100.0 * right / max(1, total), "chance": 100.0 / batch}


def teacher_report(ctx: DemoContext, checkpoint: str) -> dict:
    """The teacher's held-out image-level accuracy, its text tower on scene captions, and its logit scale."""
    paths = _world_paths(ctx)
    model = load_clip(checkpoint).eval()
    world = json.loads((Path(ctx.results["world"]["root"]) / "world.json").read_text(encoding="utf-8"))
    categories = sorted(world["categories"], key=lambda c: c["id"])
    names, ids = [c["name"] for c in categories], [c["id"] for c in categories]
    return {
        "logit_scale": float(model.logit_scale.exp()),
        "web_val_zero_shot": image_zero_shot(
            model, paths["captions_web_val"], paths["web_val_images"], names, ids, ctx.out / "cache"
        ),
        "scene_image_to_text": image_to_text_top1(model, paths["captions_val"], paths["val_images"]),
    }

"""LVIS v1 for open-vocabulary detection (method reference §6.6 and §11 item 14).

Training (``split="train"``) drops the annotations of **rare** categories (frequency ``"r"``, the 337 novel
classes), drops the images left without annotations and keeps the 866 frequent + common categories, whose
contiguous labels 0..865 follow category-id order. Evaluation (``split="val"``) keeps all 1203 categories.
Both drop images without annotations and keep at most ``max_gt_per_image`` (500) GT boxes per image, as the
official loader does. LVIS images have no ``file_name``: it is taken from ``coco_url`` as
``<folder>/<file>`` (e.g. ``train2017/000000391895.jpg``), relative to the COCO image root.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Literal

from regionclip.data.coco import CocoDetection, Transform, read_json, validate_instances
from regionclip.errors import DataError

FREQUENCIES = ("r", "c", "f")


def _lvis_file_name(img: dict, source: str, index: int) -> str:
    if isinstance(img.get("file_name"), str):
        return img["file_name"]
    url = img.get("coco_url")
    if not isinstance(url, str) or url.count("/") < 1:
        raise DataError(f"{source}: images[{index}] has neither 'file_name' nor a 'coco_url' to take it from")
    return "/".join(url.split("/")[-2:])


def load_lvis_instances(
    json_path: str | Path | dict,
    split: Literal["train", "val"] = "val",
    max_gt_per_image: int = 500,
    drop_empty: bool = True,
) -> dict:
    """An LVIS v1 file as a filtered COCO-format dict (see the module docstring); categories keep their
    ``frequency`` and gain ``split`` = ``"novel"`` (rare) or ``"base"`` (common, frequent)."""
    if split not in ("train", "val"):
        raise DataError(f"LVIS: split must be 'train' or 'val', got {split!r}")
    source = "<LVIS dict>" if isinstance(json_path, dict) else str(json_path)
    data = json_path if isinstance(json_path, dict) else read_json(json_path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{source}: not an LVIS file (no 'images' list)")
    images = [dict(img, file_name=_lvis_file_name(img, source, i)) for i, img in enumerate(data["images"])]
    data = dict(data, images=images)
    validate_instances(data, source)
    cats = []
    for i, cat in enumerate(data["categories"]):
        if cat.get("frequency") not in FREQUENCIES:
            raise DataError(
                f"{source}: categories[{i}] ({cat['name']!r}) has frequency {cat.get('frequency')!r}; "
                "expected 'r', 'c' or 'f' (is this an LVIS v1 file?)"
            )
        cats.append(dict(cat, split="novel" if cat["frequency"] == "r" else "base"))
    if split == "train":
        cats = [c for c in cats if c["frequency"] != "r"]
    cats.sort(key=lambda c: c["id"])
    kept = {c["id"] for c in cats}
    per_image: dict = defaultdict(list)
    for ann in data["annotations"]:
        if ann["category_id"] in kept and len(per_image[ann["image_id"]]) < max_gt_per_image:
            per_image[ann["image_id"]].append(ann)
    if drop_empty:
        images = [img for img in images if per_image.get(img["id"])]
    annotations = [a for img in images for a in per_image.get(img["id"], [])]
    out = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}
    out.update(images=images, annotations=annotations, categories=cats)
    return out


def build_lvis_dataset(
    json_path: str | Path | dict,
    image_root: str | Path,
    split: Literal["train", "val"] = "val",
    transform: Transform | None = None,
    max_gt_per_image: int = 500,
    skip_unreadable: bool = False,
) -> CocoDetection:
    """A :class:`CocoDetection` over LVIS: 866 contiguous classes for ``train``, 1203 for ``val``."""
    data = load_lvis_instances(json_path, split, max_gt_per_image)
    return CocoDetection(data, image_root, None, transform, drop_crowd=True, skip_unreadable=skip_unreadable)

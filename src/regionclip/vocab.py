"""Vocabularies: parsing a user's class names and the built-in COCO vocabularies (method reference §6.6).

A vocabulary is an ordered list of distinct class names; detection labels index it. It can be given as a
comma-separated string (``"cat,dog"``), a list, or a text file with one name per line (blank lines are
ignored). Built-in names: ``coco`` (80 COCO-2017 categories in category-id order), ``coco-base`` (the 48
OVR-CNN base classes), ``coco-novel`` (the 17 novel classes) and ``coco-ovd`` (the 65 = 48 + 17 classes in
COCO category-id order, the order of ``coco_65_cls_emb.pth``). LVIS's 1203 names are not shipped: ``lvis``
reads them from an LVIS v1 annotation JSON (``--lvis-json``), in category-id order (the order of
``lvis_1203_cls_emb.pth``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from regionclip.concepts import read_names_file, validate_names
from regionclip.errors import RegionCLIPError

# COCO-2017 category names in category-id order (ids 1..90 with gaps; 80 classes).
COCO_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

# The OVR-CNN open-vocabulary split (method reference §6.6): 48 base, 17 novel classes.
COCO_BASE_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "train", "truck", "boat", "bench", "bird", "horse", "sheep",
    "bear", "zebra", "giraffe", "backpack", "handbag", "suitcase", "frisbee", "skis", "kite", "surfboard",
    "bottle", "fork", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "pizza", "donut", "chair", "bed", "toilet", "tv", "laptop", "mouse", "remote", "microwave", "oven",
    "toaster", "refrigerator", "book", "clock", "vase", "toothbrush",
)  # fmt: skip
COCO_NOVEL_NAMES: tuple[str, ...] = (
    "airplane", "bus", "cat", "dog", "cow", "elephant", "umbrella", "tie", "snowboard", "skateboard", "cup",
    "knife", "cake", "couch", "keyboard", "sink", "scissors",
)  # fmt: skip
COCO_OVD_NAMES: tuple[str, ...] = tuple(
    n for n in COCO_NAMES if n in COCO_BASE_NAMES or n in COCO_NOVEL_NAMES
)

BUILTIN_VOCABULARIES: dict[str, tuple[str, ...]] = {
    "coco": COCO_NAMES,
    "coco-base": COCO_BASE_NAMES,
    "coco-novel": COCO_NOVEL_NAMES,
    "coco-ovd": COCO_OVD_NAMES,
}
NEEDS_FILE = {
    "lvis": "the 1203 LVIS v1 names are not shipped: give an LVIS v1 annotation JSON with --lvis-json"
}


def check_names(names: Sequence[str], source: str = "vocabulary") -> list[str]:
    """Strip names and refuse an empty vocabulary, blank entries or duplicates (naming them)."""
    return validate_names([str(n).strip() for n in names], what=source)


def read_vocabulary_file(path: str | Path) -> list[str]:
    """Names from a UTF-8 text file, one per line; blank lines ignored."""
    return read_names_file(path)


def lvis_names_from_json(path: str | Path) -> list[str]:
    """The LVIS category names of an annotation JSON, in category-id order (1203 for LVIS v1)."""
    path = Path(path)
    if not path.is_file():
        raise RegionCLIPError(f"LVIS annotation file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        cats = sorted(data["categories"], key=lambda c: c["id"])
        names = [c["name"] for c in cats]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise RegionCLIPError(f"{path}: not an LVIS annotation JSON with 'categories' ({err})") from None
    return check_names(names, str(path))


def parse_vocabulary(value: str | Sequence[str] | Path, lvis_json: str | Path | None = None) -> list[str]:
    """A vocabulary from a built-in name, a file path, a comma-separated string or a list of names."""
    if isinstance(value, Path):
        return read_vocabulary_file(value)
    if isinstance(value, str):
        key = value.strip().lower()
        if key in BUILTIN_VOCABULARIES:
            return list(BUILTIN_VOCABULARIES[key])
        if key in NEEDS_FILE:
            if lvis_json is None:
                raise RegionCLIPError(f"--vocab {key}: {NEEDS_FILE[key]}")
            return lvis_names_from_json(lvis_json)
        if "," not in value and Path(value).is_file():
            return read_vocabulary_file(value)
        return check_names([part for part in value.split(",") if part.strip()], "--vocab")
    return check_names(list(value))

"""COCO-format detection sets: a validating JSON loader, a map-style dataset and its collate function.

Used for detector training and evaluation (method reference §6.4-6.6). A sample is the image after its
transform (RGB float in [0, 1]), its GT boxes (xyxy, pixels of the transformed image) and contiguous labels
(indices into ``classes``), plus what is needed to map detections back to the original image.

Filtering, as detectron2's mapper does: crowd boxes are dropped (``drop_crowd``), annotations of classes not
in ``classes`` are dropped, boxes are clipped to the image (the JSON's ``width`` / ``height``, and again after
the transform) and degenerate boxes (no area after conversion or clipping) are dropped; NaN / infinite boxes,
unknown image or category ids and duplicated ids are rejected by :func:`validate_instances` naming file,
index and field. What was left out is counted in ``filtered`` (:meth:`CocoDetection.filter_report`). Images that cannot
be decoded raise :class:`DataError` naming the file, or, with ``skip_unreadable=True``, are skipped (the next
readable image is returned), counted and reported once each.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from regionclip.data.images import open_image
from regionclip.errors import DataError
from regionclip.structures import ImageBatch

log = logging.getLogger(__name__)

Transform = Callable[..., tuple[Image.Image, Tensor]]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and bool(np.isfinite(x))


def validate_instances(data: Any, source: str) -> dict:
    """Check a COCO instances dict; ``source`` (the file name) is named in every error. Returns ``data``."""
    if not isinstance(data, dict):
        raise DataError(
            f"{source}: expected a JSON object with images/annotations/categories, got {type(data).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(
                f"{source}: missing the '{key}' list (a COCO instances file needs images, annotations, categories)"
            )
        if not isinstance(data[key], list):
            raise DataError(f"{source}: '{key}' must be a list, got {type(data[key]).__name__}")
    image_ids: set = set()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img:
            raise DataError(f"{source}: images[{i}] has no 'id'")
        if "file_name" not in img or not isinstance(img["file_name"], str):
            raise DataError(f"{source}: images[{i}] (id {img['id']}) has no 'file_name' string")
        if img["id"] in image_ids:
            raise DataError(f"{source}: images[{i}]: image id {img['id']} appears twice")
        image_ids.add(img["id"])
    cat_ids: set = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or not isinstance(cat.get("name"), str):
            raise DataError(f"{source}: categories[{i}] needs an 'id' and a 'name' string")
        if cat["id"] in cat_ids:
            raise DataError(f"{source}: categories[{i}]: category id {cat['id']} appears twice")
        cat_ids.add(cat["id"])
    names = [c["name"] for c in data["categories"]]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{source}: category name {dup!r} appears twice in 'categories'")
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise DataError(f"{source}: annotations[{i}] is not an object")
        box = ann.get("bbox")
        if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_number(v) for v in box):
            raise DataError(
                f"{source}: annotations[{i}].bbox must be 4 finite numbers [x, y, w, h], got {box!r}"
            )
        if ann.get("image_id") not in image_ids:
            raise DataError(f"{source}: annotations[{i}].image_id {ann.get('image_id')!r} is not in 'images'")
        if ann.get("category_id") not in cat_ids:
            raise DataError(
                f"{source}: annotations[{i}].category_id {ann.get('category_id')!r} is not in 'categories'"
            )
    return data


def read_json(path: str | Path) -> Any:
    """Parse a JSON file, with a :class:`DataError` naming the file if it is missing or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    try:
        with path.open("rb") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a valid JSON file ({err})") from None


def load_coco_instances(json_path: str | Path) -> dict:
    """Read and validate a COCO instances JSON (``images``, ``annotations``, ``categories``)."""
    return validate_instances(read_json(json_path), str(json_path))


@dataclass
class ImageMeta:
    """Where a sample came from: ``orig_size`` ``(H, W)`` of the file and ``scale`` ``(sy, sx)`` = new / orig."""

    image_id: int
    orig_size: tuple[int, int]
    scale: tuple[float, float]
    file_name: str = ""


@dataclass
class DetectionSample:
    """One image and its GT.

    image: ``[3, H, W]`` float RGB in [0, 1] (after the transform); boxes: ``[N, 4]`` float xyxy in pixels of
    ``image``; labels: ``[N]`` long, indices into the dataset's ``classes``.
    """

    image: Tensor
    boxes: Tensor
    labels: Tensor
    image_id: int
    orig_size: tuple[int, int]
    scale: tuple[float, float]
    file_name: str = ""

    @property
    def meta(self) -> ImageMeta:
        return ImageMeta(self.image_id, self.orig_size, self.scale, self.file_name)


def pil_to_tensor(image: Image.Image) -> Tensor:
    """A PIL RGB image as ``[3, H, W]`` float in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format detection set.

    instances: the path of a COCO instances JSON, or an already loaded (and validated) instances dict.
    image_root: folder the images' ``file_name`` is relative to.
    classes: category names in the order of the contiguous labels; None = all categories in id order.
    transform: called as ``transform(pil_image, boxes) -> (pil_image, boxes)``; None keeps the image as is.
    drop_crowd: drop ``iscrowd`` annotations (detectron2 does, for training and for GT-box inference).
    drop_empty: drop images left without annotations after filtering (training).
    skip_unreadable: on an image that cannot be read, return the next readable one instead of raising.
    """

    def __init__(
        self,
        instances: str | Path | dict,
        image_root: str | Path,
        classes: Sequence[str] | None = None,
        transform: Transform | None = None,
        drop_crowd: bool = True,
        drop_empty: bool = False,
        skip_unreadable: bool = False,
    ):
        if isinstance(instances, dict):
            self.source = "<instances dict>"
            data = validate_instances(instances, self.source)
        else:
            self.source = str(instances)
            data = load_coco_instances(instances)
        self.image_root = Path(image_root)
        self.transform = transform
        self.skip_unreadable = skip_unreadable
        self.unreadable: dict[str, str] = {}  # file -> reason, in this process

        cats = sorted(data["categories"], key=lambda c: c["id"])
        id_of_name = {c["name"]: c["id"] for c in cats}
        if classes is None:
            classes = [c["name"] for c in cats]
        else:
            classes = list(classes)
            unknown = [n for n in classes if n not in id_of_name]
            if unknown:
                raise DataError(
                    f"{self.source}: classes {unknown[:5]} are not categories of this file "
                    f"(it has {len(cats)} categories, e.g. {[c['name'] for c in cats[:5]]})"
                )
            if len(set(classes)) != len(classes):
                raise DataError(f"{self.source}: the classes list has duplicate names")
        self.classes: list[str] = classes
        # category id of each label index (what the COCO evaluator needs)
        self.class_ids: list[int] = [id_of_name[n] for n in classes]
        label_of_cat = {cid: i for i, cid in enumerate(self.class_ids)}

        per_image: dict[Any, list[tuple[list[float], int]]] = {img["id"]: [] for img in data["images"]}
        size_of = {img["id"]: (img.get("width"), img.get("height")) for img in data["images"]}
        # what was left out, as COCO tools do (detectron2's mapper): counted so that training can report it
        self.filtered: dict[str, int] = {
            "crowd": 0, "other_class": 0, "empty_box": 0, "outside_image": 0, "clipped": 0, "empty_image": 0
        }  # fmt: skip
        for ann in data["annotations"]:
            if drop_crowd and ann.get("iscrowd", 0):
                self.filtered["crowd"] += 1
                continue
            label = label_of_cat.get(ann["category_id"])
            if label is None:
                self.filtered["other_class"] += 1
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            if w <= 0 or h <= 0:
                self.filtered["empty_box"] += 1
                continue
            box = [x, y, x + w, y + h]
            iw, ih = size_of[ann["image_id"]]
            if _is_number(iw) and _is_number(ih):
                clipped = [min(max(box[0], 0.0), iw), min(max(box[1], 0.0), ih)]
                clipped += [min(max(box[2], 0.0), iw), min(max(box[3], 0.0), ih)]
                if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                    self.filtered["outside_image"] += 1
                    continue
                if clipped != box:
                    self.filtered["clipped"] += 1
                box = clipped
            per_image[ann["image_id"]].append((box, label))
        self.images: list[dict] = []
        self._targets: list[tuple[Tensor, Tensor]] = []
        for img in data["images"]:
            anns = per_image[img["id"]]
            if drop_empty and not anns:
                self.filtered["empty_image"] += 1
                continue
            boxes = torch.tensor([a[0] for a in anns], dtype=torch.float32).reshape(-1, 4)
            labels = torch.tensor([a[1] for a in anns], dtype=torch.long)
            self.images.append(img)
            self._targets.append((boxes, labels))

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> Path:
        return self.image_root / self.images[index]["file_name"]

    def image_label_sets(self) -> list[set[int]]:
        """The set of labels present in each image (for repeat-factor sampling)."""
        return [set(labels.tolist()) for _, labels in self._targets]

    def aspect_groups(self) -> list[int]:
        """Per image: 0 if wider than tall, else 1 (detectron2's aspect-ratio buckets), from the JSON's
        ``width`` / ``height``, or the file header when they are missing (unreadable files: group 0)."""
        groups = []
        for i, img in enumerate(self.images):
            w, h = img.get("width"), img.get("height")
            if not (_is_number(w) and _is_number(h)):
                try:
                    with Image.open(self.image_path(i)) as im:
                        w, h = im.size
                except (OSError, ValueError):
                    w, h = 1, 0
            groups.append(0 if w > h else 1)
        return groups

    def read_image(self, index: int) -> Image.Image:
        path = self.image_path(index)
        try:
            return open_image(path)
        except DataError as err:
            img = self.images[index]
            raise DataError(f"{self.source}: image id {img['id']}: {err}") from None

    def load(self, index: int) -> DetectionSample:
        """Sample ``index``; raises :class:`DataError` naming the file if its image cannot be read."""
        img = self.images[index]
        pil = self.read_image(index)
        orig_w, orig_h = pil.size
        boxes, labels = self._targets[index]
        boxes = boxes.clone()
        if self.transform is not None:
            pil, boxes = self.transform(pil, boxes)
        new_w, new_h = pil.size
        image = pil_to_tensor(pil)
        if boxes.numel():  # boxes outside the (transformed) image are clipped to it, as detectron2 does
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, new_w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, new_h)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return DetectionSample(
            image=image,
            boxes=boxes[keep],
            labels=labels[keep],
            image_id=img["id"],
            orig_size=(orig_h, orig_w),
            scale=(new_h / orig_h, new_w / orig_w),
            file_name=str(img["file_name"]),
        )

    def __getitem__(self, index: int) -> DetectionSample:
        return self.first_readable(index, self.load)

    def first_readable(self, index: int, load: Callable[[int], Any]) -> Any:
        """``load(index)``; with ``skip_unreadable``, ``load`` of the next readable image after an unreadable
        one (each skipped file recorded once in :attr:`unreadable`), the one rule of the training sets."""
        if not self.skip_unreadable:
            return load(index)
        n = len(self)
        for k in range(n):
            j = (index + k) % n
            try:
                return load(j)
            except DataError as err:
                name = str(self.images[j]["file_name"])
                if name not in self.unreadable:
                    self.unreadable[name] = str(err)
                    log.warning("skipping unreadable image (%d so far): %s", len(self.unreadable), err)
        raise DataError(
            f"{self.source}: none of the {n} images could be read (e.g. {next(iter(self.unreadable))})"
        )

    def filter_report(self) -> str:
        """One line: what was left out of the JSON (counts of :attr:`filtered`), '' when nothing was."""
        words = {
            "crowd": "crowd boxes", "other_class": "boxes of other classes", "empty_box": "zero/negative-area boxes",
            "outside_image": "boxes outside the image", "clipped": "boxes clipped to the image",
            "empty_image": "images without a kept box",
        }  # fmt: skip
        parts = [f"{n} {words[k]}" for k, n in self.filtered.items() if n]
        return ", ".join(parts)

    @property
    def num_unreadable(self) -> int:
        """How many distinct images this process has skipped as unreadable."""
        return len(self.unreadable)


def collate_detection(
    samples: Sequence[DetectionSample], size_divisibility: int = 0
) -> tuple[ImageBatch, list[dict[str, Tensor]], list[ImageMeta]]:
    """Batch samples: a CLIP-normalised padded :class:`ImageBatch`, per-image targets ``{boxes, labels}``
    (boxes ``[N_i, 4]`` xyxy in input pixels, labels ``[N_i]``) and per-image :class:`ImageMeta`."""
    batch = ImageBatch.from_images([s.image for s in samples], size_divisibility=size_divisibility)
    targets = [{"boxes": s.boxes, "labels": s.labels} for s in samples]
    return batch, targets, [s.meta for s in samples]

"""Instance masks for mask training (LVIS recipe, method reference §6.4): :class:`MaskedDetection`, a
:class:`~regionclip.data.coco.CocoDetection` whose samples also carry instance masks rasterised from the
polygon ``segmentation`` of each kept annotation after the resize / flip, and :func:`collate_with_masks`.

Polygons are rasterised with ``faster_coco_eval`` (a core dependency; pycocotools is only a test extra).
"""

from __future__ import annotations

from typing import Any

import torch
from faster_coco_eval.core import mask as mask_utils

from regionclip.data.coco import CocoDetection, DetectionSample, collate_detection, pil_to_tensor


class MaskedDetection(torch.utils.data.Dataset):
    """A :class:`CocoDetection` whose samples also carry instance masks ``[G, H, W]`` bool (input pixels),
    rasterised from the polygon ``segmentation`` of each kept annotation after the resize / flip.

    The polygon vertices travel through the same transform call as the boxes (as degenerate boxes), so the
    masks follow exactly the random size and flip of the image. Annotations without a polygon get their box.
    Unreadable images follow the base set's rule (:meth:`CocoDetection.first_readable`).
    """

    def __init__(self, base: CocoDetection, instances: dict):
        self.base = base
        label_of = {cid: i for i, cid in enumerate(base.class_ids)}
        per_image: dict[Any, list[list[list[float]]]] = {img["id"]: [] for img in instances["images"]}
        for ann in instances["annotations"]:
            if ann.get("iscrowd", 0) or ann["category_id"] not in label_of:
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            if w <= 0 or h <= 0:
                continue
            seg = ann.get("segmentation")
            polys = [p for p in seg if len(p) >= 6] if isinstance(seg, list) else []
            per_image[ann["image_id"]].append(polys or [[x, y, x + w, y, x + w, y + h, x, y + h]])
        self.polygons = [per_image[img["id"]] for img in base.images]

    def __len__(self) -> int:
        return len(self.base)

    @property
    def num_unreadable(self) -> int:
        return self.base.num_unreadable

    def __getitem__(self, index: int) -> DetectionSample:
        return self.base.first_readable(index, lambda j: self._sample(j, self.base.read_image(j)))

    def _sample(self, j: int, pil) -> DetectionSample:
        base = self.base
        boxes, labels = base._targets[j]
        polys = self.polygons[j]
        sizes = [[len(p) // 2 for p in obj] for obj in polys]
        points = torch.tensor(
            [xy for obj in polys for p in obj for xy in zip(p[0::2], p[1::2], strict=False)],
            dtype=torch.float32,
        ).reshape(-1, 2)
        orig_w, orig_h = pil.size
        packed = torch.cat([boxes.clone(), points.repeat(1, 2)])
        if base.transform is not None:
            pil, packed = base.transform(pil, packed)
        new_w, new_h = pil.size
        boxes, points = packed[: len(boxes)], packed[len(boxes) :, :2]
        masks = torch.zeros((len(boxes), new_h, new_w), dtype=torch.bool)
        start = 0
        for i, obj in enumerate(sizes):
            flat = []
            for count in obj:
                flat.append(points[start : start + count].reshape(-1).tolist())
                start += count
            rles = mask_utils.frPyObjects(flat, new_h, new_w)
            masks[i] = torch.from_numpy(mask_utils.decode(mask_utils.merge(rles))).bool()
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        img = base.images[j]
        sample = DetectionSample(
            image=pil_to_tensor(pil),
            boxes=boxes[keep],
            labels=labels[keep],
            image_id=img["id"],
            orig_size=(orig_h, orig_w),
            scale=(new_h / orig_h, new_w / orig_w),
            file_name=str(img["file_name"]),
        )
        sample.masks = masks[keep]  # type: ignore[attr-defined]
        return sample


def collate_with_masks(samples):
    """:func:`collate_detection` plus each target's ``masks`` when the samples carry them."""
    images, targets, metas = collate_detection(samples)
    for target, sample in zip(targets, samples, strict=True):
        masks = getattr(sample, "masks", None)
        if masks is not None:
            target["masks"] = masks
    return images, targets, metas

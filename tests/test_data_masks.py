"""Tests of regionclip.data.masks: instance masks without pycocotools (a test-only extra)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch
from PIL import Image


def test_masks_need_no_pycocotools(tmp_path):
    # a plain install has no pycocotools: block it and rasterise an L-shaped polygon in a fresh interpreter
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(tmp_path / "a.png")
    script = f"""
import sys
sys.modules["pycocotools"] = None  # import pycocotools -> ImportError
sys.modules["pycocotools.mask"] = None
import torch
from regionclip.data.coco import CocoDetection
from regionclip.data.masks import MaskedDetection, collate_with_masks
data = {{
    "images": [{{"id": 1, "file_name": "a.png", "width": 40, "height": 20}}],
    "annotations": [{{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "iscrowd": 0,
                     "segmentation": [[0, 0, 20, 0, 20, 10, 10, 10, 10, 20, 0, 20]]}}],
    "categories": [{{"id": 1, "name": "thing"}}],
}}
sample = MaskedDetection(CocoDetection(data, {str(tmp_path)!r}, None, None), data)[0]
_, targets, _ = collate_with_masks([sample])
torch.save(targets[0]["masks"], {str(tmp_path / "m.pt")!r})
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    mask = torch.load(tmp_path / "m.pt")
    assert mask.shape == (1, 20, 40) and mask.dtype == torch.bool
    assert bool(mask[0, :10, :20].all()) and bool(mask[0, 12:, :10].all())  # the L's two arms
    assert not bool(mask[0, 12:, 12:].any()) and not bool(mask[0, :, 22:].any())


def test_unreadable_images_are_skipped_by_the_base_rule(tmp_path):
    from regionclip.data.coco import CocoDetection
    from regionclip.data.masks import MaskedDetection

    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "a.png").write_bytes(b"broken")
    ann = {"iscrowd": 0, "category_id": 1, "bbox": [2, 2, 8, 8], "segmentation": [[2, 2, 10, 2, 10, 10]]}
    data = {
        "images": [
            {"id": i, "file_name": f"{n}.png", "width": 20, "height": 20} for i, n in ((1, "a"), (2, "b"))
        ],
        "annotations": [{"id": i, "image_id": i, **ann} for i in (1, 2)],
        "categories": [{"id": 1, "name": "thing"}],
    }
    base = CocoDetection(data, tmp_path, None, None, skip_unreadable=True)
    sample = MaskedDetection(base, data)[0]
    assert sample.image_id == 2 and sample.masks.shape == (1, 20, 20)
    assert list(base.unreadable) == ["a.png"]

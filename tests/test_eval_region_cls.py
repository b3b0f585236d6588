"""Tests of region classification accuracy on GT boxes (paper Fig. 1b)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from regionclip.clip import create_model
from regionclip.data.coco import CocoDetection
from regionclip.data.ovd import OvdSplit
from regionclip.eval.region_cls import encode_gt_regions, region_accuracy
from regionclip.regions import RegionEncoder


def test_region_accuracy_by_hand():
    classes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # a, b, c
    # region directions: ~a, ~b, ~c, ~a (scaled; cosine ignores the norm)
    regions = torch.tensor([[5.0, 1.0], [0.1, 2.0], [-3.0, 0.5], [2.0, -0.5]])
    labels = torch.tensor([0, 1, 1, 2])  # right, right, wrong (c), wrong (a)
    m = region_accuracy(regions, labels, classes, ["a", "b", "c"], OvdSplit(["a", "b"], ["c"]), topk=(1, 2))
    assert m["acc_top1"] == 50.0 and m["num_regions"] == 4
    assert m["acc_top1_base"] == pytest.approx(200 / 3) and m["num_regions_base"] == 3
    assert m["acc_top1_novel"] == 0.0 and m["num_regions_novel"] == 1
    # top-2: region 2 (label b, ~c) ranks c then b -> hit; region 3 (label c, ~a) ranks a then b -> miss
    assert m["acc_top2"] == 75.0 and m["acc_top2_novel"] == 0.0


def test_region_accuracy_empty_and_missing_split_part():
    classes = torch.eye(3)
    m = region_accuracy(
        torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), classes, ["a", "b", "c"], OvdSplit(["a"], ["b"])
    )
    assert m["num_regions"] == 0 and math.isnan(m["acc_top1"]) and math.isnan(m["acc_top1_novel"])
    m = region_accuracy(torch.eye(3)[:1], torch.tensor([0]), classes, ["a", "b", "c"], OvdSplit(["a"], ["b"]))
    assert m["acc_top1"] == 100.0 and m["acc_top1_base"] == 100.0 and math.isnan(m["acc_top1_novel"])
    with pytest.raises(ValueError, match="class_names"):
        region_accuracy(torch.eye(3), torch.arange(3), classes, split=OvdSplit(["a"], ["b"]))


def test_encode_gt_regions_with_micro_encoder(tmp_path):
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 32, "height": 32} for i in (1, 2, 3)],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 16, 16]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [8, 8, 20, 20]},
            {"id": 3, "image_id": 3, "category_id": 2, "bbox": [4, 4, 10, 12]},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    (tmp_path / "i.json").write_text(json.dumps(data))
    for i in (1, 2, 3):
        Image.new("RGB", (32, 32), (10 * i, 50, 90)).save(tmp_path / f"{i}.png")
    ds = CocoDetection(tmp_path / "i.json", tmp_path)
    torch.manual_seed(0)
    encoder = RegionEncoder(create_model("RN-micro").visual).eval()
    emb, labels = encode_gt_regions(encoder, ds, batch_size=2)
    assert emb.shape == (3, encoder.embed_dim) and labels.tolist() == [0, 1, 1]
    # the first two regions equal a direct encoding of image 1 alone
    from regionclip.structures import ImageBatch

    s = ds[0]
    with torch.no_grad():
        direct = encoder(ImageBatch.from_images([s.image]).tensor, [s.boxes])
    assert torch.allclose(emb[:2], direct, atol=1e-5)
    m = region_accuracy(emb, labels, torch.randn(2, encoder.embed_dim))
    assert m["num_regions"] == 3 and 0.0 <= m["acc_top1"] <= 100.0

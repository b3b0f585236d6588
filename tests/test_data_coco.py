"""Tests of the COCO-format loader, dataset, collate and the detection transforms."""

from __future__ import annotations

import json
import random

import pytest
import torch
from PIL import Image

from regionclip.data.coco import CocoDetection, collate_detection, load_coco_instances
from regionclip.data.transforms import (
    Compose,
    RandomHorizontalFlip,
    ResizeShortestEdge,
    detector_train_transform,
    shortest_edge_size,
)
from regionclip.errors import DataError
from regionclip.structures import ImageBatch


def _instances():
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 32, "height": 24},
            {"id": 2, "file_name": "b.png", "width": 32, "height": 32},
            {"id": 3, "file_name": "c.png", "width": 32, "height": 32},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 4, 4], "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 1},
            {"id": 4, "image_id": 1, "category_id": 3, "bbox": [1, 1, 0, 5], "iscrowd": 0},
            {"id": 5, "image_id": 2, "category_id": 9, "bbox": [4, 4, 8, 8], "iscrowd": 0},
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 9, "name": "kite"}],
    }


def _write_set(tmp_path, data=None):
    data = data or _instances()
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    root = tmp_path / "images"
    root.mkdir()
    for img in data["images"]:
        Image.new("RGB", (img["width"], img["height"]), (200, 100, 50)).save(root / img["file_name"])
    return path, root


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d.pop("images"), "missing the 'images'"),
        (lambda d: d.pop("annotations"), "missing the 'annotations'"),
        (lambda d: d.pop("categories"), "missing the 'categories'"),
        (lambda d: d["annotations"][2].update(bbox=[1, 2, 3]), "annotations[2].bbox"),
        (lambda d: d["annotations"][1].update(bbox=[1, 2, "x", 4]), "annotations[1].bbox"),
        (lambda d: d["annotations"][4].update(image_id=99), "annotations[4].image_id 99"),
        (lambda d: d["annotations"][0].update(category_id=42), "annotations[0].category_id 42"),
        (lambda d: d["images"][1].pop("file_name"), "images[1]"),
        (lambda d: d["images"].append({"id": 1, "file_name": "z.png"}), "image id 1 appears twice"),
    ],
)
def test_loader_rejects_bad_input_naming_file_and_field(tmp_path, mutate, expected):
    data = _instances()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        load_coco_instances(path)
    assert expected in str(err.value)
    assert "bad.json" in str(err.value)


def test_loader_missing_file_and_not_json(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_coco_instances(tmp_path / "nope.json")
    bad = tmp_path / "garbage.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="garbage.json: not a valid JSON"):
        load_coco_instances(bad)
    lst = tmp_path / "list.json"
    lst.write_text("[1, 2]")
    with pytest.raises(DataError, match="expected a JSON object"):
        load_coco_instances(lst)


def test_dataset_labels_filtering_and_boxes(tmp_path):
    path, root = _write_set(tmp_path)
    ds = CocoDetection(path, root)
    # classes default to id order: cat(3), dog(7), kite(9)
    assert ds.classes == ["cat", "dog", "kite"] and ds.class_ids == [3, 7, 9]
    s = ds[0]
    assert s.image.shape == (3, 24, 32) and s.image.dtype == torch.float32
    assert abs(float(s.image[0, 0, 0]) - 200 / 255) < 1e-6
    # crowd (id 3) and zero-width (id 4) dropped
    assert s.labels.tolist() == [1, 0]
    assert torch.equal(s.boxes, torch.tensor([[2.0, 3.0, 12.0, 8.0], [0.0, 0.0, 4.0, 4.0]]))
    assert s.image_id == 1 and s.orig_size == (24, 32) and s.scale == (1.0, 1.0)
    assert len(ds) == 3 and ds[2].boxes.shape == (0, 4) and ds[2].labels.shape == (0,)


def test_dataset_class_subset_drops_other_classes_and_empty_images(tmp_path):
    path, root = _write_set(tmp_path)
    ds = CocoDetection(path, root, classes=["kite", "dog"], drop_empty=True)
    assert ds.class_ids == [9, 7]
    assert [img["id"] for img in ds.images] == [1, 2]
    assert ds[0].labels.tolist() == [1] and ds[1].labels.tolist() == [0]
    with pytest.raises(DataError, match="'zebra'"):
        CocoDetection(path, root, classes=["zebra"])


def test_dataset_with_transform_scales_boxes_and_records_scale(tmp_path):
    path, root = _write_set(tmp_path)
    ds = CocoDetection(path, root, transform=ResizeShortestEdge((48,), 1000))
    s = ds[0]  # 24x32 -> 48x64
    assert s.image.shape == (3, 48, 64) and s.scale == (2.0, 2.0) and s.orig_size == (24, 32)
    assert torch.allclose(s.boxes[0], torch.tensor([4.0, 6.0, 24.0, 16.0]))


def test_unreadable_image_raises_or_is_skipped(tmp_path):
    path, root = _write_set(tmp_path)
    (root / "b.png").write_bytes(b"not an image")
    (root / "c.png").unlink()
    ds = CocoDetection(path, root)
    with pytest.raises(DataError, match="b.png"):
        ds[1]
    with pytest.raises(DataError, match="not found.*c.png"):
        ds[2]
    ds = CocoDetection(path, root, skip_unreadable=True)
    assert ds[1].image_id == 1 and ds[2].image_id == 1  # wraps to the next readable image
    assert ds.num_unreadable == 2 and set(ds.unreadable) == {"b.png", "c.png"}


def test_collate_detection(tmp_path):
    path, root = _write_set(tmp_path)
    ds = CocoDetection(path, root)
    batch, targets, metas = collate_detection([ds[0], ds[1]])
    assert isinstance(batch, ImageBatch)
    assert batch.tensor.shape == (2, 3, 32, 32) and batch.image_sizes == [(24, 32), (32, 32)]
    assert float(batch.tensor[0, :, 24:].abs().sum()) == 0.0  # zero padding
    assert [t["labels"].tolist() for t in targets] == [[1, 0], [2]]
    assert [m.image_id for m in metas] == [1, 2] and metas[0].orig_size == (24, 32)


def test_shortest_edge_size_rounding_by_hand():
    # 480x640 to short 800: 800 x 1066.67 -> int(1066.67 + 0.5) = 1067
    assert shortest_edge_size(480, 640, 800, 1333) == (800, 1067)
    # 500x1500: short 800 gives 2400 > 1333; scale 1333/2400: 444.33 -> 444, 1333
    assert shortest_edge_size(500, 1500, 800, 1333) == (444, 1333)
    # portrait 427x640 to 640: 640 x 959.25 -> (959, 640)
    assert shortest_edge_size(640, 427, 640, 1333) == (959, 640)
    # a .5 rounds up, like int(x + 0.5): 2x3 to short side 3 -> 3 x 4.5 -> (3, 5)
    assert shortest_edge_size(2, 3, 3, 100) == (3, 5)


def test_resize_scales_boxes_and_image():
    image = Image.new("RGB", (40, 30))
    boxes = torch.tensor([[4.0, 3.0, 20.0, 15.0]])
    out, out_boxes = ResizeShortestEdge((60,), 1000)(image, boxes)
    assert out.size == (80, 60)
    assert torch.allclose(out_boxes, torch.tensor([[8.0, 6.0, 40.0, 30.0]]))
    # max-size cap: short 60 would give width 80 > 50 -> 37.5 x 50 -> (38, 50); scale y 38/30, x 50/40
    out, out_boxes = ResizeShortestEdge((60,), 50, "bicubic")(image, boxes)
    assert out.size == (50, 38)
    assert torch.allclose(out_boxes, torch.tensor([[5.0, 3.8, 25.0, 19.0]]))


def test_resize_choice_is_from_the_list_and_seeded():
    t = ResizeShortestEdge(tuple(range(640, 801, 32)), 1333)
    sizes = {t.draw_size(random.Random(i)) for i in range(60)}
    assert sizes == {640, 672, 704, 736, 768, 800}
    assert t.draw_size(random.Random(3)) == t.draw_size(random.Random(3))


def test_flip_boxes_and_pixels():
    image = Image.new("RGB", (10, 4))
    image.putpixel((0, 0), (255, 0, 0))
    boxes = torch.tensor([[1.0, 0.0, 3.0, 2.0]])
    out, out_boxes = RandomHorizontalFlip(1.0)(image, boxes)
    assert out.getpixel((9, 0)) == (255, 0, 0)
    assert torch.equal(out_boxes, torch.tensor([[7.0, 0.0, 9.0, 2.0]]))
    out, out_boxes = RandomHorizontalFlip(0.0)(image, boxes)
    assert out.getpixel((0, 0)) == (255, 0, 0) and torch.equal(out_boxes, boxes)


def test_compose_and_train_transform_keep_boxes_valid():
    image = Image.new("RGB", (64, 48))
    boxes = torch.tensor([[0.0, 0.0, 64.0, 48.0], [10.0, 5.0, 20.0, 30.0]])
    t = detector_train_transform(short_sizes=(24, 36), max_size=100)
    assert isinstance(t, Compose)
    for seed in range(5):
        out, out_boxes = t(image, boxes, random.Random(seed))
        w, h = out.size
        assert min(w, h) in (24, 36)
        assert torch.allclose(out_boxes[0], torch.tensor([0.0, 0.0, w, h]))
        assert bool((out_boxes[:, 2] > out_boxes[:, 0]).all())


def test_aspect_groups_from_json_sizes_or_file_header(tmp_path):
    data = _instances()
    data["images"][2].update(width=20, height=40)  # portrait
    path, root = _write_set(tmp_path, data)
    del data["images"][0]["width"]  # read from the file header (32 x 24: landscape)
    ds = CocoDetection(data, root, drop_empty=False)
    assert ds.aspect_groups() == [0, 1, 1]  # detectron2: 0 if w > h else 1 (square: 1)


def test_bad_boxes_are_filtered_counted_and_clipped_as_coco_tools_do(tmp_path):
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 5]},  # kept as is
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [30, 20, 20, 20]},  # clipped to 40 x 30
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [-5, -5, 10, 10]},  # clipped at 0
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [50, 5, 10, 10]},  # fully outside
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 10]},  # zero width
            {"id": 6, "image_id": 1, "category_id": 1, "bbox": [5, 5, -3, 10]},  # negative width
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "iscrowd": 1},  # crowd
            {"id": 8, "image_id": 1, "category_id": 2, "bbox": [5, 5, 10, 10]},  # not a training class
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    path, root = _write_set(tmp_path, data)
    ds = CocoDetection(path, root, ["cat"])
    assert ds.filtered == {
        "crowd": 1, "other_class": 1, "empty_box": 2, "outside_image": 1, "clipped": 2, "empty_image": 0
    }  # fmt: skip
    assert ds[0].boxes.tolist() == [[2.0, 3.0, 12.0, 8.0], [30.0, 20.0, 40.0, 30.0], [0.0, 0.0, 5.0, 5.0]]
    report = ds.filter_report()
    assert (
        "1 crowd boxes" in report and "2 zero/negative-area boxes" in report and "1 boxes outside" in report
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_box_is_rejected_naming_file_index_and_field(tmp_path, bad):
    data = _instances()
    data["annotations"][3]["bbox"] = [1, 2, bad, 4]
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(data))  # written as NaN / Infinity, which Python's JSON reader accepts
    with pytest.raises(DataError, match=r"nan.json: annotations\[3\].bbox must be 4 finite numbers"):
        load_coco_instances(path)

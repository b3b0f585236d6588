"""Tests of the COCO OVD split builder, OvdSplit, the LVIS loader and repeat-factor sampling."""

from __future__ import annotations

import json
import math

import pytest

from regionclip.data.coco import CocoDetection
from regionclip.data.lvis import build_lvis_dataset, load_lvis_instances
from regionclip.data.ovd import (
    COCO_BASE_CLASSES,
    COCO_NOVEL_CLASSES,
    COCO_OVD_ALL,
    COCO_OVD_CLASSES,
    OvdSplit,
    make_coco_ovd_split,
)
from regionclip.data.sampling import repeat_factor_epochs, repeat_factor_indices, repeat_factors
from regionclip.errors import DataError

# The 80 COCO 2017 categories (id, name).
COCO80 = [
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"),
    (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"),
    (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"),
    (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"),
    (76, "keyboard"), (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
    (89, "hair drier"), (90, "toothbrush"),
]  # fmt: skip


def test_split_constants_match_coco_ids():
    ids = dict((n, i) for i, n in COCO80)
    assert len(COCO_BASE_CLASSES) == 48 and len(COCO_NOVEL_CLASSES) == 17
    assert not set(COCO_BASE_CLASSES) & set(COCO_NOVEL_CLASSES)
    for cid, name in COCO_OVD_ALL:
        assert ids[name] == cid
    assert [c for c, _ in COCO_OVD_ALL] == sorted(c for c, _ in COCO_OVD_ALL)
    assert COCO_OVD_CLASSES[:6] == ("person", "bicycle", "car", "motorcycle", "airplane", "bus")
    excluded = {n for _, n in COCO80} - set(COCO_OVD_CLASSES)
    assert "traffic light" in excluded and "hair drier" in excluded and len(excluded) == 15


def _coco_mini():
    # image 1: person (base) + dog (novel); 2: cat (novel) only; 3: traffic light (excluded) only;
    # 4: car (base) + hot dog (excluded); 5: nothing
    anns = [(1, 1), (1, 18), (2, 17), (3, 10), (4, 3), (4, 58)]
    return {
        "info": {"description": "mini"},
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 32, "height": 32} for i in range(1, 6)],
        "annotations": [
            {"id": k + 1, "image_id": img, "category_id": cat, "bbox": [1, 1, 8, 8], "area": 64, "iscrowd": 0}
            for k, (img, cat) in enumerate(anns)
        ],
        "categories": [{"id": i, "name": n, "supercategory": "x"} for i, n in COCO80],
    }


def test_make_coco_ovd_split_train_keeps_only_base(tmp_path):
    src = tmp_path / "instances_train2017.json"
    src.write_text(json.dumps(_coco_mini()))
    paths = make_coco_ovd_split(src, tmp_path / "ovd", "train")
    assert set(paths) == {"b"} and paths["b"].name == "ovd_ins_train2017_b.json"
    out = json.loads(paths["b"].read_text())
    assert [img["id"] for img in out["images"]] == [1, 4]
    assert sorted(a["category_id"] for a in out["annotations"]) == [1, 3]
    assert len(out["categories"]) == 48 and all(c["split"] == "base" for c in out["categories"])
    assert out["info"] == {"description": "mini"}
    split = OvdSplit.from_json(paths["b"])
    assert split.base == list(COCO_BASE_CLASSES) and split.novel == []
    assert CocoDetection(paths["b"], tmp_path).classes == list(COCO_BASE_CLASSES)


def test_make_coco_ovd_split_val_keeps_65(tmp_path):
    src = tmp_path / "instances_val2017.json"
    src.write_text(json.dumps(_coco_mini()))
    paths = make_coco_ovd_split(src, tmp_path, "val")
    out = json.loads(paths["all"].read_text())
    assert [img["id"] for img in out["images"]] == [1, 2, 4]
    assert sorted(a["category_id"] for a in out["annotations"]) == [1, 3, 17, 18]
    assert [c["name"] for c in out["categories"]] == list(COCO_OVD_CLASSES)
    split = OvdSplit.from_json(paths["all"])
    assert split == OvdSplit.coco()
    t = json.loads(paths["t"].read_text())
    assert [img["id"] for img in t["images"]] == [1, 2] and len(t["categories"]) == 17
    b = json.loads(paths["b"].read_text())
    assert [img["id"] for img in b["images"]] == [1, 4]


def test_make_coco_ovd_split_rejects_non_coco(tmp_path):
    data = _coco_mini()
    data["categories"] = [c for c in data["categories"] if c["name"] != "dog"]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 18]
    src = tmp_path / "x.json"
    src.write_text(json.dumps(data))
    with pytest.raises(DataError, match="'dog'"):
        make_coco_ovd_split(src, tmp_path, "val")
    with pytest.raises(DataError, match="which"):
        make_coco_ovd_split(src, tmp_path, "test")


def test_ovd_split_validation_and_files(tmp_path):
    with pytest.raises(DataError, match="both base and novel.*'cat'"):
        OvdSplit(["cat", "dog"], ["cat"])
    with pytest.raises(DataError, match="twice"):
        OvdSplit(["cat", "cat"], [])
    (tmp_path / "base.txt").write_text("cat\ndog\n\n")
    (tmp_path / "novel.txt").write_text("zebra\n")
    split = OvdSplit.from_files(tmp_path / "base.txt", tmp_path / "novel.txt")
    assert split.names == ["cat", "dog", "zebra"] and split.split_of("zebra") == "novel"
    with pytest.raises(DataError, match="not categories.*'zebra'"):
        OvdSplit.from_files(tmp_path / "base.txt", tmp_path / "novel.txt", known=["cat", "dog", "cow"])


def test_ovd_split_from_json_requires_split_fields(tmp_path):
    data = {"images": [], "annotations": [], "categories": [{"id": 2, "name": "b"}, {"id": 1, "name": "a"}]}
    with pytest.raises(DataError, match="no category has a 'split'"):
        OvdSplit.from_json(data)
    data["categories"][0]["split"] = "novel"
    data["categories"][1]["split"] = "base"
    assert OvdSplit.from_json(data) == OvdSplit(["a"], ["b"])
    data["categories"][0]["split"] = "held-out"
    with pytest.raises(DataError, match="'held-out'"):
        OvdSplit.from_json(data)


def _lvis_mini():
    cats = [
        {"id": 1, "name": "aa", "frequency": "f"},
        {"id": 2, "name": "bb", "frequency": "r"},
        {"id": 3, "name": "cc", "frequency": "c"},
        {"id": 5, "name": "dd", "frequency": "r"},
    ]
    images = [
        {
            "id": i,
            "coco_url": f"http://images.cocodataset.org/train2017/{i:012d}.jpg",
            "width": 32,
            "height": 32,
        }
        for i in (10, 11, 12, 13)
    ]
    # 10: aa, bb; 11: bb only (rare); 12: cc x 3; 13: none
    anns = [(10, 1), (10, 2), (11, 2), (12, 3), (12, 3), (12, 3)]
    return {
        "images": images,
        "annotations": [
            {"id": k + 1, "image_id": i, "category_id": c, "bbox": [1, 1, 4 + k, 4], "area": 16}
            for k, (i, c) in enumerate(anns)
        ],
        "categories": cats,
    }


def test_lvis_train_drops_rare_and_remaps():
    out = load_lvis_instances(_lvis_mini(), "train")
    assert [c["id"] for c in out["categories"]] == [1, 3]
    assert [img["id"] for img in out["images"]] == [10, 12]
    assert out["images"][0]["file_name"] == "train2017/000000000010.jpg"
    assert all(a["category_id"] != 2 for a in out["annotations"])
    ds = CocoDetection(out, "/nonexistent")
    assert ds.classes == ["aa", "cc"] and ds.class_ids == [1, 3]
    assert [t[1].tolist() for t in ds._targets] == [[0], [1, 1, 1]]


def test_lvis_val_keeps_all_truncates_and_splits():
    out = load_lvis_instances(_lvis_mini(), "val", max_gt_per_image=2)
    assert [c["id"] for c in out["categories"]] == [1, 2, 3, 5]
    assert [img["id"] for img in out["images"]] == [10, 11, 12]
    assert sum(a["image_id"] == 12 for a in out["annotations"]) == 2
    split = OvdSplit.from_json(out)
    assert split.novel == ["bb", "dd"] and split.base == ["aa", "cc"]
    ds = build_lvis_dataset(_lvis_mini(), "/x", "val")
    assert len(ds.classes) == 4 and len(ds) == 3


def test_lvis_rejects_missing_frequency():
    data = _lvis_mini()
    del data["categories"][2]["frequency"]
    with pytest.raises(DataError, match=r"categories\[2\].*frequency"):
        load_lvis_instances(data, "val")


def test_repeat_factors_by_hand():
    # 4 images; cat 0 in all four (f=1), cat 1 in one (f=0.25), cat 2 in two (f=0.5); t = 1.0
    cats = [{0, 1}, {0}, {0, 2}, {0, 2}, set()]
    # with 5 images: f0 = 4/5, f1 = 1/5, f2 = 2/5
    r = repeat_factors(cats, threshold=1.0)
    r1, r2 = math.sqrt(1.0 / 0.2), math.sqrt(1.0 / 0.4)
    assert r == pytest.approx([r1, max(1.0, math.sqrt(1 / 0.8)), r2, r2, 1.0])
    assert repeat_factors(cats, threshold=0.001) == [1.0] * 5
    assert repeat_factors([]) == []


def test_repeat_factor_indices_stochastic_rounding_and_determinism():
    factors = [1.0, 2.0, 2.5, 1.25]
    a = repeat_factor_indices(factors, seed=7, epoch=3)
    assert a == repeat_factor_indices(factors, seed=7, epoch=3)
    counts = [a.count(i) for i in range(4)]
    assert counts[0] == 1 and counts[1] == 2 and counts[2] in (2, 3) and counts[3] in (1, 2)
    ordered = repeat_factor_indices(factors, seed=7, epoch=3, shuffle=False)
    assert ordered == sorted(a)
    # expected count over many epochs: 1 + 2 + 2.5 + 1.25 = 6.75 per epoch
    total = sum(len(repeat_factor_indices(factors, seed=1, epoch=e, shuffle=False)) for e in range(200))
    assert abs(total / 200 - 6.75) < 0.15
    assert repeat_factor_indices([], seed=0) == []
    epochs = repeat_factor_epochs(factors, seed=7)
    assert epochs(3) == a and epochs(4) != a

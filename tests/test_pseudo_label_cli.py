"""End-to-end tests of ``regionclip pseudo-label``: an RN-micro teacher, a 3-name concept bank, a tiny image
folder (one unreadable file) or COCO set; JSON and PNG outputs per image."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from regionclip.cli import main
from regionclip.clip.checkpoint import save_clip
from regionclip.commands.pseudo_label import draw_regions
from regionclip.concepts import ConceptBank
from regionclip.proposals.config import RPNConfig
from regionclip.proposals.rpn import build_rpn, save_rpn

NAMES = ["cat", "traffic light", "dog"]


@pytest.fixture()
def teacher_and_bank(tmp_path, micro_model):
    teacher = save_clip(micro_model, tmp_path / "teacher.safetensors")
    bank = ConceptBank(
        NAMES, torch.randn(3, micro_model.embed_dim, generator=torch.Generator().manual_seed(0))
    )
    return teacher, bank.save(tmp_path / "bank.safetensors")


def write_images(folder, sizes):
    folder.mkdir()
    for i, (w, h) in enumerate(sizes):
        Image.new("RGB", (w, h), (40 * i, 120, 200)).save(folder / f"img{i}.png")


def check_outputs(out, stem, size):
    record = json.loads((out / f"{stem}.json").read_text())
    w, h = size
    assert (record["width"], record["height"]) == (w, h)
    assert record["regions"], "with 3 concepts every top probability exceeds 0.1, so regions are kept"
    probs = [r["probability"] for r in record["regions"]]
    assert probs == sorted(probs, reverse=True)
    for region in record["regions"]:
        x1, y1, x2, y2 = region["box"]
        assert 0 <= x1 < x2 <= w + 0.01 and 0 <= y1 < y2 <= h + 0.01
        assert region["concept"] in NAMES
        assert 1 / 3 - 1e-4 <= region["probability"] <= 1.0
    with Image.open(out / f"{stem}.png") as im:
        assert im.size == (w, h)
    return record


def test_pseudo_label_folder_random_boxes_skips_unreadable(tmp_path, teacher_and_bank, capsys):
    teacher, bank = teacher_and_bank
    folder = tmp_path / "images"
    write_images(folder, [(64, 48), (40, 72)])
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    code = main(
        ["pseudo-label", "--teacher", str(teacher), "--concepts", str(bank), "--images", str(folder),
         "--proposals", "random", "--random-count", "6", "--random-min-size", "8", "--out", str(out),
         "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    assert "broken.jpg" in capsys.readouterr().err
    first = check_outputs(out, "img0", (64, 48))
    assert first["proposals"] == "random" and first["num_proposals"] == 6
    check_outputs(out, "img1", (40, 72))
    index = json.loads((out / "index.json").read_text())
    assert [e["image"] for e in index["images"]] == ["img0.png", "img1.png"]
    assert [s["image"] for s in index["skipped"]] == ["broken.jpg"]
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_pseudo_label_dataset_gt_boxes_with_resize_and_rpn(tmp_path, teacher_and_bank):
    teacher, bank = teacher_and_bank
    folder = tmp_path / "images"
    write_images(folder, [(64, 48)])
    data = {
        "images": [{"id": 1, "file_name": "img0.png", "width": 64, "height": 48}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 30], "area": 600, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [30, 10, 30, 30], "area": 900, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "set.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    args = ["pseudo-label", "--teacher", str(teacher), "--concepts", str(bank), "--dataset", str(tmp_path / "set.json"),
            "--image-root", str(folder), "--device", "cpu"]  # fmt: skip
    assert main([*args, "--proposals", "gt", "--short-size", "96", "--out", str(out)]) == 0
    record = check_outputs(out, "img0", (64, 48))
    boxes = sorted(r["box"] for r in record["regions"])
    # boxes are reported in original-image pixels even though the teacher saw a 2x resized image
    assert boxes == [
        pytest.approx([4.0, 4.0, 24.0, 34.0], abs=0.05),
        pytest.approx([30.0, 10.0, 60.0, 40.0], abs=0.05),
    ]

    cfg = RPNConfig(trunk="clip:RN-micro", anchor_sizes=[16.0, 32.0])
    rpn_path = save_rpn(build_rpn(cfg), cfg, tmp_path / "rpn.safetensors")
    out2 = tmp_path / "out2"
    assert main([*args, "--proposals", f"rpn:{rpn_path}", "--out", str(out2)]) == 0
    record = check_outputs(out2, "img0", (64, 48))
    assert record["proposals"] == "rpn" and 0 < record["num_proposals"] <= 300


def test_pseudo_label_rejects_bad_inputs(tmp_path, teacher_and_bank, capsys):
    teacher, bank = teacher_and_bank
    folder = tmp_path / "images"
    write_images(folder, [(32, 32)])
    base = ["pseudo-label", "--teacher", str(teacher), "--concepts", str(bank), "--images", str(folder),
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert main([*base, "--proposals", "gt"]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert main([*base, "--proposals", "boxes"]) == 2
    assert "rpn:CHECKPOINT" in capsys.readouterr().err
    wrong = ConceptBank(NAMES, torch.randn(3, 7)).save(tmp_path / "wrong.safetensors")
    assert main([*base[:4], str(wrong), *base[5:]]) == 2
    assert "7-d" in capsys.readouterr().err


def test_draw_regions_puts_contrasting_label_boxes():
    image = Image.new("RGB", (80, 60), (0, 0, 0))
    drawn = draw_regions(image, [{"box": [10.0, 20.0, 50.0, 50.0], "concept": "cat", "probability": 0.9}])
    assert drawn.size == image.size and image.getpixel((10, 20)) == (0, 0, 0)
    assert drawn.getpixel((10, 35)) != (0, 0, 0)  # the box outline
    assert drawn.getpixel((12, 12)) != (0, 0, 0)  # the filled label background above the box

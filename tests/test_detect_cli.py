"""Tests of `regionclip detect` on generated images and real photos (skimage.data), and its bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import regionclip
from regionclip.cli import main
from regionclip.clip.checkpoint import save_clip
from regionclip.proposals.detectron2 import Detectron2RPNConfig, build_detectron2_rpn, save_detectron2_rpn

SMALL = ["--min-size", "64", "--max-size", "96", "--score-thresh", "0"]


@pytest.fixture(scope="module")
def micro_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("micro")
    torch.manual_seed(0)
    save_clip(regionclip.create_model("RN-micro"), folder / "clip.safetensors")
    cfg = Detectron2RPNConfig(
        arch="R50-FPN", width=8, stage_blocks=(1, 1, 1, 1), fpn_channels=16, post_nms_topk=30
    )
    save_detectron2_rpn(build_detectron2_rpn(cfg), cfg, folder / "rpn.safetensors")
    return folder


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REGIONCLIP_CACHE", str(tmp_path / "cache"))


def test_detect_on_generated_and_real_photos(micro_folder, tmp_path, capsys):
    from skimage import data

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(data, name)()).save(imgs / f"{name}.jpg")
    Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(imgs / "flat.png")
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "out"
    argv = ["detect", str(imgs), str(tmp_path / "missing.png"), "--checkpoint", str(micro_folder)]
    code = main(argv + ["--vocab", "cat,mug,person", "--out", str(out), "--max-dets", "5"] + SMALL)
    assert code == 0
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "missing.png" in captured.err
    dets = json.loads((out / "detections.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert [c["name"] for c in summary["categories"]] == ["cat", "mug", "person"]
    assert len(summary["images"]) == 4 and len(summary["skipped"]) == 2
    chelsea = next(i for i in summary["images"] if i["file_name"].endswith("chelsea.jpg"))
    assert (chelsea["width"], chelsea["height"]) == (451, 300)
    per_image = {i["id"]: 0 for i in summary["images"]}
    for d in dets:
        per_image[d["image_id"]] += 1
        x, y, w, h = d["bbox"]
        assert d["category_id"] in (1, 2, 3) and w >= 0 and h >= 0
    assert all(0 < n <= 5 for n in per_image.values())
    for entry in summary["images"]:
        with Image.open(entry["png"]) as png:
            assert png.size == (entry["width"], entry["height"])


@pytest.mark.parametrize(
    ("vocab_args", "message"),
    [(["--vocab", " , "], "empty"), (["--vocab", "cat,dog,cat"], "duplicate names: 'cat'"),
     (["--vocab", "lvis"], "--lvis-json")],
)  # fmt: skip
def test_bad_vocabulary_is_one_line_error(micro_folder, tmp_path, capsys, vocab_args, message):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    code = main(
        ["detect", str(tmp_path / "a.png"), "--checkpoint", str(micro_folder), "--out", str(tmp_path / "o")]
        + vocab_args
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err


def test_vocab_file_with_blank_lines(micro_folder, tmp_path):
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "v.txt").write_text("\ncat\n\n dog \n\n")
    argv = [
        "detect",
        str(tmp_path / "a.png"),
        "--checkpoint",
        str(micro_folder),
        "--vocab-file",
        str(tmp_path / "v.txt"),
    ]
    assert main(argv + ["--out", str(tmp_path / "o"), "--no-png"] + SMALL) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [c["name"] for c in summary["categories"]] == ["cat", "dog"]
    assert not list((tmp_path / "o").glob("*.png"))


def test_wrong_checkpoint_kind_and_missing_demo(micro_folder, tmp_path, capsys, monkeypatch):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    code = main(
        [
            "detect",
            str(tmp_path / "a.png"),
            "--checkpoint",
            str(micro_folder / "rpn.safetensors"),
            "--vocab",
            "cat",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "'rpn' checkpoint" in err and "\n" not in err
    monkeypatch.chdir(tmp_path)
    code = main(["detect", "a.png", "--vocab", "cat", "--out", "o"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "regionclip demo" in err and "\n" not in err


def test_batch_size_batches_images_and_keeps_results(micro_folder, tmp_path, monkeypatch):
    from regionclip.detect.detector import OpenVocabDetector

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for k, size in enumerate([(60, 80), (70, 50), (64, 64)]):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(imgs / f"im{k}.png")
    (imgs / "im1b.png").write_bytes(b"not a png")  # unreadable: skipped, its batch goes on
    seen = []
    predict = OpenVocabDetector.predict

    def recording(self, images, *args, **kwargs):
        seen.append(len(images.image_sizes))
        return predict(self, images, *args, **kwargs)

    monkeypatch.setattr(OpenVocabDetector, "predict", recording)
    outputs = {}
    for batch in (1, 2):
        seen.clear()
        out = tmp_path / f"out{batch}"
        argv = ["detect", str(imgs), "--checkpoint", str(micro_folder), "--vocab", "cat,mug", "--no-png"]
        assert main([*argv, "--out", str(out), "--batch-size", str(batch), *SMALL]) == 0
        outputs[batch] = (json.loads((out / "detections.json").read_text()), list(seen))
        summary = json.loads((out / "summary.json").read_text())
        assert len(summary["images"]) == 3 and [s["file"] for s in summary["skipped"]] == [
            str(imgs / "im1b.png")
        ]
    assert outputs[1][1] == [1, 1, 1]
    assert outputs[2][1] == [2, 1]  # im0 + im1, then im1b (unreadable) + im2
    one, two = outputs[1][0], outputs[2][0]
    assert len(one) == len(two) > 0
    for a, b in zip(one, two, strict=True):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["bbox"] == pytest.approx(b["bbox"], abs=0.02) and a["score"] == pytest.approx(
            b["score"], abs=1e-4
        )

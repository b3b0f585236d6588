"""Tests of `regionclip train-detector`: a few RN-micro steps end to end on a fabricated 64-px COCO-format set,
the checkpoint loading in `Detector.from_pretrained` and `regionclip detect`, LVIS masks, and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import regionclip
from regionclip.cli import main
from regionclip.clip.checkpoint import save_clip
from regionclip.proposals.config import RPNConfig
from regionclip.proposals.rpn import build_rpn, save_rpn

COLORS = {"red block": (220, 30, 30), "blue block": (30, 30, 220), "green block": (30, 200, 30)}
SPLITS = {"red block": "base", "blue block": "base", "green block": "novel"}


def make_set(root: Path, name: str, n: int, seed: int, split_fields: bool = True) -> Path:
    """``n`` 64x48 images with 1-3 coloured rectangles each, and their COCO-format JSON (polygons included)."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLORS)
    cats = [{"id": i + 1, "name": n_} for i, n_ in enumerate(names)]
    if split_fields:
        for c in cats:
            c["split"] = SPLITS[c["name"]]
    images, anns = [], []
    for i in range(n):
        arr = np.full((48, 64, 3), 128, np.uint8)
        for k in range(1 + i % 3):
            cat = (i + k) % len(names)
            w, h = int(rng.integers(12, 28)), int(rng.integers(12, 24))
            x, y = int(rng.integers(0, 64 - w)), int(rng.integers(0, 48 - h))
            arr[y : y + h, x : x + w] = COLORS[names[cat]]
            poly = [x, y, x + w, y, x + w, y + h, x, y + h]
            anns.append(
                {"id": len(anns) + 1, "image_id": i + 1, "category_id": cat + 1, "bbox": [x, y, w, h],
                 "area": w * h, "iscrowd": 0, "segmentation": [poly]}
            )  # fmt: skip
        Image.fromarray(arr).save(folder / f"{i:03d}.png")
        images.append({"id": i + 1, "file_name": f"{i:03d}.png", "width": 64, "height": 48})
    path = root / f"{name}.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    torch.manual_seed(0)
    save_clip(regionclip.create_model("RN-micro"), root / "clip.safetensors")
    rpn_cfg = RPNConfig(trunk="clip:RN-micro", anchor_sizes=[16.0, 32.0])
    save_rpn(build_rpn(rpn_cfg, "transfer"), rpn_cfg, root / "rpn.safetensors")
    train_json = make_set(root, "train", 4, seed=1)
    val_json = make_set(root, "val", 3, seed=2)
    return {"root": root, "train": train_json, "val": val_json}


def train_args(world, out: Path, *extra: str) -> list[str]:
    r = world["root"]
    return [
        "train-detector", "--config", "configs/detector_tiny.yaml",
        f"model.weights={r / 'clip.safetensors'}", "model.preset=RN-micro",
        f"proposals.checkpoint={r / 'rpn.safetensors'}",
        f"data.train_json={world['train']}", f"data.image_root={r / 'train'}",
        "data.short_sizes=[48, 64]", "data.max_size=96", "data.test_short_size=64",
        "train.max_steps=2", "train.batch_size=2", "train.progress=false", "train.log_every=1",
        "detector.rois_per_image=32", "vocabulary.templates=simple",
        f"vocabulary.cache_dir={r / 'cache'}", f"out_dir={out}", "device=cpu", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(world):
    out = world["root"] / "run"
    assert main(train_args(world, out)) == 0
    return out / "detector.safetensors"


def test_train_detector_writes_a_loadable_checkpoint(world, trained, tmp_path, monkeypatch):
    from regionclip.checkpoint import load_checkpoint, read_preprocess
    from regionclip.detect.api import Detector
    from regionclip.preprocess import Preprocess

    ckpt = load_checkpoint(trained, kind="detector")
    cfg = ckpt.config
    assert cfg["train_classes"] == ["red block", "blue block"]  # the base classes of the JSON's split
    assert cfg["split"] == {"base": ["red block", "blue block"], "novel": ["green block"]}
    assert read_preprocess(trained) == Preprocess(64, 96, "bilinear")  # the test size, in the manifest
    assert cfg["templates"] == ["a photo of a {}."] and cfg["has_text_encoder"]
    assert cfg["proposals"]["kind"] == "rpn" and cfg["proposals"]["preset"] == "transfer"
    assert ckpt.state_dict["train_class_embeddings"].shape == (2, 32)
    assert (trained.parent / "config.yaml").is_file()
    history = [json.loads(line) for line in (trained.parent / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2] and all(np.isfinite(h["loss_cls"]) for h in history)

    monkeypatch.setenv("REGIONCLIP_CACHE", str(tmp_path / "cache"))
    det = Detector.from_pretrained(trained)
    assert (det.min_size, det.max_size) == (64, 96) and det.templates == ("a photo of a {}.",)
    image = Image.open(world["root"] / "val" / "000.png")
    result = det(image, ["red block", "green block"], score_thresh=0.0)[0]
    assert len(result) > 0 and result.boxes[:, 2].max() <= 64 + 1e-3

    out = tmp_path / "detect"
    code = main(["detect", str(world["root"] / "val"), "--checkpoint", str(trained), "--vocab",
                 "red block,green block", "--out", str(out), "--no-png", "--score-thresh", "0"])  # fmt: skip
    assert code == 0
    assert len(json.loads((out / "summary.json").read_text())["images"]) == 3


def test_training_is_deterministic_for_a_seed(world, trained, tmp_path):
    """A second run with the same seed gives the same weights bit for bit: the new heads' initial weights
    are drawn after seeding (they were not, and two demo runs differed)."""
    from safetensors.torch import load_file

    assert main(train_args(world, tmp_path / "again")) == 0
    first, again = load_file(trained), load_file(tmp_path / "again" / "detector.safetensors")
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_train_detector_gt_proposals_and_lvis_masks(world, trained, tmp_path):
    # GT boxes as proposals (debugging) on the LVIS recipe: the mask head trains on polygon masks
    out = tmp_path / "gt"
    code = main(train_args(world, out, "proposals.kind=gt", "detector.recipe=lvis", "train.max_steps=1"))
    assert code == 0
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(history[-1]["loss_mask"]) and history[-1]["loss_mask"] > 0
    from regionclip.checkpoint import load_checkpoint

    ckpt = load_checkpoint(out / "detector.safetensors", kind="detector")
    assert ckpt.config["proposals"] == {"kind": "gt"}
    assert any(k.startswith("mask_head.") for k in ckpt.state_dict)


def test_masked_detection_follows_the_flip():
    import tempfile

    from regionclip.data.coco import CocoDetection
    from regionclip.data.masks import MaskedDetection
    from regionclip.data.transforms import Compose, RandomHorizontalFlip, ResizeShortestEdge

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(root / "a.png")
        data = {
            "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 20}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 20], "iscrowd": 0,
                             "segmentation": [[0, 0, 10, 0, 10, 20, 0, 20]]}],
            "categories": [{"id": 1, "name": "thing"}],
        }  # fmt: skip
        flip = Compose([ResizeShortestEdge((40,), 1000), RandomHorizontalFlip(1.0)])
        sample = MaskedDetection(CocoDetection(data, root, None, flip), data)[0]
    assert sample.image.shape[1:] == (40, 80)
    assert torch.allclose(sample.boxes, torch.tensor([[60.0, 0.0, 80.0, 40.0]]))
    mask = sample.masks[0]
    assert mask.shape == (40, 80)
    assert bool(mask[:, 62:78].all()) and not bool(mask[:, :58].any())  # the right 20 columns, mirrored


def test_bad_inputs_are_one_line_errors(world, tmp_path, capsys):
    r = world["root"]
    nosplit = make_set(tmp_path, "nosplit", 2, seed=3, split_fields=False)
    cases = [
        (train_args(world, tmp_path / "a", f"proposals.checkpoint={r / 'missing.safetensors'}"), "not found"),
        (train_args(world, tmp_path / "b", f"proposals.checkpoint={r / 'clip.safetensors'}"), "'clip' checkpoint"),
        (train_args(world, tmp_path / "c", f"model.weights={r / 'rpn.safetensors'}"), "expected a 'clip'"),
        (train_args(world, tmp_path / "d", f"data.train_json={nosplit}"), "vocabulary.base_classes"),
        (train_args(world, tmp_path / "e", "detector.recipe=yolo"), "detector.recipe"),
    ]  # fmt: skip
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_names_file_declares_the_base_classes(world, tmp_path):
    nosplit = make_set(tmp_path, "nosplit", 2, seed=3, split_fields=False)
    (tmp_path / "base.txt").write_text("blue block\n")
    out = tmp_path / "run"
    argv = train_args(world, out, f"data.train_json={nosplit}", f"data.image_root={tmp_path / 'nosplit'}",
                      f"vocabulary.base_classes={tmp_path / 'base.txt'}", "train.max_steps=1",
                      "train.batch_size=1")  # fmt: skip
    assert main(argv) == 0
    from regionclip.checkpoint import read_checkpoint_metadata

    config = json.loads(read_checkpoint_metadata(out / "detector.safetensors")["config"])
    assert config["train_classes"] == ["blue block"]
    assert config["split"]["novel"] == ["red block", "green block"]


@pytest.mark.slow
def test_rn50_coco_config_one_step_and_one_inference(tmp_path, monkeypatch):
    """The official RN50 COCO config at official sizes on the CPU: fabricated RN50 CLIP and RPN, two 800-px
    images with COCO's 65 OVD categories, ONE training step, then ONE evaluation pass."""
    from regionclip.data.ovd import COCO_OVD_ALL, COCO_OVD_BASE

    monkeypatch.setenv("REGIONCLIP_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    save_clip(regionclip.create_model("RN50"), tmp_path / "rn50.safetensors")
    rpn_cfg = RPNConfig(trunk="clip:RN50")
    save_rpn(build_rpn(rpn_cfg, "transfer"), rpn_cfg, tmp_path / "rpn.safetensors")
    base_ids = {i for i, _ in COCO_OVD_BASE}
    cats = [{"id": i, "name": n, "split": "base" if i in base_ids else "novel"} for i, n in COCO_OVD_ALL]
    (tmp_path / "img").mkdir()
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (800, 1066, 3), dtype=np.uint8)).save(
            tmp_path / "img" / f"{i}.jpg"
        )
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 1066, "height": 800})
        for k, cid in enumerate((1, 5)):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cid,
                         "bbox": [100 + 300 * k, 100, 250, 300], "area": 75000, "iscrowd": 0})  # fmt: skip
    data = tmp_path / "ovd.json"
    data.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    out = tmp_path / "run"
    code = main(
        ["train-detector", "--config", "configs/detector_coco_rn50.yaml",
         f"model.weights={tmp_path / 'rn50.safetensors'}", f"proposals.checkpoint={tmp_path / 'rpn.safetensors'}",
         f"data.train_json={data}", f"data.image_root={tmp_path / 'img'}", "train.max_steps=1",
         "train.progress=false", f"out_dir={out}", "device=cpu"]
    )  # fmt: skip
    assert code == 0
    res = tmp_path / "results.json"
    code = main(["eval", "--checkpoint", str(out / "detector.safetensors"), "--data", str(data), "--images",
                 str(tmp_path / "img"), "--out", str(res), "--device", "cpu", "data.max_images=1"])  # fmt: skip
    assert code == 0
    result = json.loads(res.read_text())
    assert result["protocol"]["vocabulary_size"] == 65 and result["protocol"]["test_size"] == [800, 1333]
    assert result["protocol"]["nms"] == "soft-gaussian" and result["metrics"]["num_images"] == 1

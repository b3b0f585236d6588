"""Tests of `regionclip train-clip` (the miniature world's teacher): two steps of RN-micro on a fabricated COCO
captions set, a loadable checkpoint, and the same weights bit for bit when run again with the same seed."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from regionclip.cli import main
from regionclip.clip.checkpoint import load_clip


def _write_pairs(root):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i, word in enumerate(["red", "green", "blue", "white"]):
        arr = rng.integers(0, 255, size=(40, 40, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 40, "height": 40})
        anns.append({"id": i + 1, "image_id": i + 1, "caption": f"a {word} square."})
    path = root / "captions.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return path, root / "images"


def _train(captions, images, out):
    args = ["train-clip", "model=RN-micro", f"captions_json=[{captions}]", f"image_dir=[{images}]",
            "train.max_steps=2", "train.batch_size=4", "train.warmup_steps=1", "train.progress=false",
            "train.log_every=1", f"out_dir={out}", "device=cpu"]  # fmt: skip
    assert main(args) == 0
    return out / "clip.safetensors"


def test_train_clip_is_deterministic_for_a_seed(tmp_path):
    """The initial weights are drawn after seeding (they were not, and two demo runs differed)."""
    captions, images = _write_pairs(tmp_path)
    first = _train(captions, images, tmp_path / "a")
    again = _train(captions, images, tmp_path / "b")
    history = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2] and all(np.isfinite(h["loss_clip"]) for h in history)
    assert load_clip(first).preset.name == "RN-micro"
    a, b = load_file(first), load_file(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

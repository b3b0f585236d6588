"""regionclip.preprocess: the test-time preprocessing every checkpoint records in its manifest, read back by
its consumers; files written before the record still load (fabricated old-format checkpoints)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import regionclip
from _tiny_detector import make_detector_checkpoint
from regionclip.checkpoint import load_checkpoint, read_checkpoint_metadata, read_preprocess, save_checkpoint
from regionclip.clip.checkpoint import save_clip
from regionclip.concepts import ConceptBank
from regionclip.detect.api import Detector
from regionclip.detect.loading import load_for_inference
from regionclip.errors import CheckpointError
from regionclip.preprocess import DETECTION_TEST, OWN_SIZE, Preprocess
from regionclip.proposals.rpn import save_rpn
from regionclip.tasks.eval_rpn import EvalRPNConfig, eval_rpn


def _rewrite(path: Path, drop: str = "preprocess", **metadata: str) -> Path:
    """The checkpoint ``path`` rewritten in place without the manifest key ``drop`` (an older file) or with
    other ``metadata`` values."""
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = dict(f.metadata())
    meta.pop(drop, None)
    meta.update(metadata)
    save_file(tensors, str(path), metadata=meta)
    return path


def test_the_record_round_trips_and_checks_its_values():
    pre = Preprocess(640, 1000, "bicubic")
    assert Preprocess.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    assert Preprocess.from_dict({"short_size": None}) == OWN_SIZE
    with pytest.raises(CheckpointError, match="interpolation"):
        Preprocess.from_dict({"interpolation": "nearest"}, "x.safetensors")
    with pytest.raises(CheckpointError, match="fields of Preprocess"):
        Preprocess.from_dict({"size": 3}, "x.safetensors")
    with pytest.raises(CheckpointError, match="normalise with CLIP"):
        Preprocess(mean=(0.5, 0.5, 0.5)).check_normalisation("x.safetensors")
    # the test size: a caller's where set, else the record's; images kept at their own size test at 800
    assert pre.test_size() == (pre.short_size, 1000)
    assert pre.test_size(320, 640) == (320, 640)
    assert OWN_SIZE.test_size() == (800, 1333)


def test_every_kind_records_its_preprocessing(tmp_path):
    torch.manual_seed(0)
    clip = regionclip.create_model("RN-micro")
    save_clip(clip, tmp_path / "clip.safetensors")
    assert read_preprocess(tmp_path / "clip.safetensors") == DETECTION_TEST
    det = make_detector_checkpoint(tmp_path / "det")  # a caller still giving the legacy input sizes
    assert read_preprocess(det) == Preprocess(64, 96, "bilinear")
    assert read_preprocess(tmp_path / "det" / "rpn.safetensors") is None  # converted RPN: size unknown
    metadata = read_checkpoint_metadata(det)
    assert json.loads(metadata["preprocess"])["short_size"] == 64
    save_checkpoint(tmp_path / "x.safetensors", {"w": torch.zeros(1)}, "rpn", {}, Preprocess(48, 80))
    assert read_preprocess(tmp_path / "x.safetensors") == Preprocess(48, 80)


def test_old_detector_files_load_with_their_legacy_sizes(tmp_path):
    new = make_detector_checkpoint(tmp_path / "new", seed=0)
    old = make_detector_checkpoint(tmp_path / "old", seed=0)
    _rewrite(old)
    assert "preprocess" not in read_checkpoint_metadata(old)
    assert load_checkpoint(old, kind="detector").config["input"] == {"min_size": 64, "max_size": 96}
    assert read_preprocess(old) == Preprocess(64, 96)  # read from the legacy input.min_size / max_size
    a, b = Detector.from_pretrained(new), Detector.from_pretrained(old)
    assert (
        (b.min_size, b.max_size, b.interpolation)
        == (64, 96, "bilinear")
        == (a.min_size, a.max_size, "bilinear")
    )
    bank = ConceptBank(["x", "y"], torch.randn(2, 32, generator=torch.Generator().manual_seed(3)))
    image = torch.rand(3, 70, 90, generator=torch.Generator().manual_seed(4))
    ra, rb = a(image, bank, score_thresh=0.0)[0], b(image, bank, score_thresh=0.0)[0]
    assert torch.equal(ra.boxes, rb.boxes) and torch.equal(ra.scores, rb.scores)


def test_old_clip_files_get_the_official_test_size(tmp_path):
    torch.manual_seed(0)
    path = save_clip(regionclip.create_model("RN-micro"), tmp_path / "clip.safetensors")
    _rewrite(path)
    assert read_preprocess(path) is None
    model = load_for_inference(path)
    assert model.preprocess == DETECTION_TEST
    assert Detector.from_pretrained(path).min_size == 800


def test_consumers_use_the_recorded_preprocessing(tmp_path):
    det = make_detector_checkpoint(tmp_path / "det")
    _rewrite(det, preprocess=json.dumps(Preprocess(72, 120, "bicubic").to_dict()))
    api = Detector.from_pretrained(det)
    assert (api.min_size, api.max_size, api.interpolation) == (72, 120, "bicubic")
    assert Detector.from_pretrained(det, min_size=64).min_size == 64  # the caller's size still wins
    _rewrite(det, preprocess=json.dumps(Preprocess(mean=(0.5, 0.5, 0.5)).to_dict()))
    with pytest.raises(CheckpointError, match="normalise with CLIP"):
        Detector.from_pretrained(det)


def test_eval_rpn_reads_new_and_old_rpn_sizes(tmp_path, capsys):
    from test_proposals import write_tiny_coco

    json_path, image_root = write_tiny_coco(tmp_path)
    from regionclip.proposals.config import RPNConfig
    from regionclip.proposals.rpn import build_rpn

    cfg = RPNConfig(trunk="clip:RN-micro", anchor_sizes=[16.0, 32.0])
    torch.manual_seed(0)
    rpn = build_rpn(cfg, "transfer")
    new = save_rpn(rpn, cfg, tmp_path / "new.safetensors", None, Preprocess(48, 64))
    old = save_rpn(rpn, cfg, tmp_path / "old.safetensors", {"input": {"short_size": 48, "max_size": 64}})
    _rewrite(old)
    assert read_preprocess(new) == read_preprocess(old) == Preprocess(48, 64)
    results = []
    for path in (new, old):
        out = tmp_path / f"{path.stem}.json"
        eval_rpn(EvalRPNConfig(checkpoint=str(path), data=str(json_path), images=str(image_root),
                               split="none", device="cpu", precision="fp32", out=str(out)))  # fmt: skip
        results.append(json.loads(out.read_text()))
    assert results[0]["short_size"] == results[1]["short_size"] == 48
    assert results[0]["recall"] == results[1]["recall"]

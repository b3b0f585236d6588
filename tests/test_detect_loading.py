"""regionclip.detect.loading: the one reader of detectors for inference (``load_for_inference``), behind
``Detector.from_pretrained`` and ``regionclip eval``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import regionclip
from _tiny_detector import make_detector_checkpoint
from regionclip.clip.checkpoint import save_clip
from regionclip.detect.api import Detector, save_detector
from regionclip.detect.config import DetectorConfig, zero_shot_config
from regionclip.detect.ensemble import EnsembleConfig
from regionclip.detect.loading import load_for_inference
from regionclip.errors import RegionCLIPError
from regionclip.proposals.base import GivenBoxes, TopProposals
from regionclip.tasks.evaluate import EvalConfig, build_eval_model

SRC = Path(__file__).resolve().parents[1] / "src" / "regionclip"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loading")
    make_detector_checkpoint(folder / "transfer", seed=0)
    torch.manual_seed(0)
    save_clip(regionclip.create_model("RN-micro"), folder / "clip.safetensors")
    return folder


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_api_and_eval_read_a_detector_the_same_way(folder):
    ckpt = folder / "transfer" / "detector.safetensors"
    api = Detector.from_pretrained(ckpt).model
    evaluated = build_eval_model(EvalConfig(checkpoint=str(ckpt)), "coco")
    assert evaluated.mode == "transfer" and evaluated.box_source == "rpn"
    assert evaluated.proposal_preset == "transfer" and evaluated.preset_name == "RN-micro"
    assert evaluated.detector.mask_head is None  # eval scores boxes only
    assert _same_weights(api, evaluated.detector)
    assert api.inference == evaluated.detector.inference


def test_gt_boxes_and_another_rpn(folder):
    ckpt = folder / "transfer" / "detector.safetensors"
    gt = load_for_inference(ckpt, gt_boxes=True)
    assert isinstance(gt.detector.proposal_generator, GivenBoxes) and gt.box_source == "gt"
    assert gt.detector.inference.apply_box_deltas is False and gt.detector.inference.score_fusion == "none"
    other = load_for_inference(ckpt, rpn=folder / "transfer" / "rpn.safetensors", max_proposals=7)
    assert other.rpn_path is not None and other.proposal_preset == "transfer"
    assert isinstance(other.detector.proposal_generator, TopProposals)
    assert other.detector.proposal_generator.k == 7


def test_zero_shot_uses_the_one_recipe(folder):
    rpn = folder / "transfer" / "rpn.safetensors"
    model = load_for_inference(folder / "clip.safetensors", rpn=rpn, recipe="lvis")
    assert model.mode == "zero-shot" and model.box_source == "rpn" and model.proposal_preset == "zero_shot"
    expected = zero_shot_config("lvis", "rpn")
    det = model.detector
    assert (det.inference.score_thresh, det.inference.nms, det.inference.nms_thresh, det.inference.max_dets, det.inference.score_fusion) == (
        expected.score_thresh, "hard", 0.5, 300, "logit",
    )  # fmt: skip
    assert det.inference.apply_box_deltas is False and det.mask_head is None
    given = load_for_inference(folder / "clip.safetensors")  # no RPN: boxes come with each image
    assert given.box_source == "gt" and given.detector.inference.score_fusion == "none"
    evaluated = build_eval_model(
        EvalConfig(checkpoint=str(folder / "clip.safetensors"), boxes=f"rpn:{rpn}"), "lvis"
    )
    # the heads of a zero-shot detector are unused (no deltas, text classifier): the encoder and RPN count
    assert _same_weights(det.backbone, evaluated.detector.backbone)
    assert _same_weights(det.proposal_generator, evaluated.detector.proposal_generator)
    assert evaluated.detector.inference.score_thresh == det.inference.score_thresh
    with pytest.raises(RegionCLIPError, match="needs a box source"):
        build_eval_model(EvalConfig(checkpoint=str(folder / "clip.safetensors")), "coco")


def test_text_tower_from_beside_the_file(folder, tmp_path):
    loaded = load_for_inference(folder / "transfer" / "detector.safetensors", gt_boxes=True)  # no RPN
    cfg = DetectorConfig(score_thresh=0.0)
    save_detector(tmp_path / "detector.safetensors", loaded.detector, cfg, loaded.clip.preset, {"kind": "gt"})
    assert not load_for_inference(tmp_path / "detector.safetensors").has_text
    save_clip(loaded.clip, tmp_path / "clip.safetensors")
    beside = load_for_inference(tmp_path / "detector.safetensors")
    assert beside.has_text and torch.equal(
        beside.clip.token_embedding.weight, loaded.clip.token_embedding.weight
    )
    alone = load_for_inference(tmp_path / "detector.safetensors", text_from_folder=False)
    assert not alone.has_text


def test_bad_requests_are_one_line_errors(folder):
    with pytest.raises(RegionCLIPError, match="already the frozen model"):
        load_for_inference(folder / "clip.safetensors", ensemble=EnsembleConfig("frozen"))
    with pytest.raises(RegionCLIPError, match="'rpn' checkpoint, expected a 'detector' or 'clip'"):
        load_for_inference(folder / "transfer" / "rpn.safetensors")
    with pytest.raises(RegionCLIPError, match="checkpoint not found"):
        load_for_inference(folder / "absent.safetensors")


def test_one_detector_reader_in_the_source():
    readers = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if re.search(r"load_checkpoint\([^)]*kind=\"detector\"", text):
            readers.append(path.relative_to(SRC).as_posix())
    assert readers == ["detect/loading.py"]


def test_api_and_eval_share_the_zero_shot_recipe(folder):
    clip, rpn = folder / "clip.safetensors", folder / "transfer" / "rpn.safetensors"
    api = Detector.from_pretrained(clip, rpn=rpn).model.inference
    evaluated = build_eval_model(EvalConfig(checkpoint=str(clip), boxes=f"rpn:{rpn}"), "coco")
    assert api == evaluated.detector.inference  # one recipe: no second threshold in the API
    assert api.score_thresh == 0.001 and api.nms == "hard" and api.max_dets == 100
    gt = build_eval_model(EvalConfig(checkpoint=str(clip), boxes="gt"), "coco").detector.inference
    assert gt == Detector.from_pretrained(clip).model.inference  # GT boxes: fusion off
    assert gt.score_fusion == "none" and api.score_fusion == "logit"

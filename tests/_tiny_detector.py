"""A tiny fabricated ``detector`` checkpoint (RN-micro trunk, micro detectron2 RPN, text tower, 64-96 px
test size) for tests of the region index and the web page: random weights, built in about a second."""

from __future__ import annotations

from pathlib import Path

import torch

import regionclip
from regionclip.clip.checkpoint import text_state
from regionclip.concepts import SIMPLE_TEMPLATES
from regionclip.detect import DetectorConfig, build_detector
from regionclip.detect.api import load_rpn_checkpoint, save_detector
from regionclip.proposals.base import GivenBoxes
from regionclip.proposals.detectron2 import Detectron2RPNConfig, build_detectron2_rpn, save_detectron2_rpn
from regionclip.regions import RegionEncoder


def make_detector_checkpoint(folder: Path, with_rpn: bool = True, seed: int = 0, **fields) -> Path:
    """Write ``folder/detector.safetensors`` (and its ``rpn.safetensors``); returns the detector's path."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    clip = regionclip.create_model("RN-micro")
    if with_rpn:
        rcfg = Detectron2RPNConfig(arch="R50-C4", width=8, stage_blocks=(1, 1, 1, 1), post_nms_topk=30)
        save_detectron2_rpn(build_detectron2_rpn(rcfg), rcfg, folder / "rpn.safetensors")
        generator, rpn_config = load_rpn_checkpoint(folder / "rpn.safetensors", "transfer")
        proposals = {"kind": "rpn", "rpn": rpn_config, "preset": "transfer"}
    else:
        generator, proposals = GivenBoxes(), {"kind": "gt"}
    settings = {"score_thresh": 0.0, "max_dets": 50, "score_fusion": "none", **fields}
    cfg = DetectorConfig(**settings)
    det = build_detector(cfg, RegionEncoder(clip.visual), generator, torch.randn(2, clip.embed_dim))
    with torch.no_grad():
        det.box_regressor.linear.weight.normal_(std=0.02)  # deltas that move the boxes visibly
    extra = {"input": {"min_size": 64, "max_size": 96}, "templates": list(SIMPLE_TEMPLATES)}
    path = folder / "detector.safetensors"
    save_detector(path, det, cfg, clip.preset, proposals, ["a", "b"], text_state(clip), extra)
    return path

"""Typed configs of the proposal generators, the three official proposal presets, and
:func:`regionclip.proposals.loading.build_proposal_generator` builds them (method reference §4.1 pretraining, §6.1 transfer, §7 zero-shot).

A *proposal preset* fixes what a frozen RPN returns per image (pre-NMS top-k on objectness logits, NMS
threshold, post-NMS top-k), in training and in eval mode alike: the official offline RPN always runs in eval
mode. Sub-sampling the proposals is the consumer's business (pretraining: ``loss.regions_per_image``, the
official ``PRETRAIN_SAMPLE_REGIONS`` = 100 picked uniformly by the pretraining task, method reference §4.1):

=========== =========== ===== ============
preset      pre-NMS     NMS   post-NMS
=========== =========== ===== ============
pretraining 6000        0.5   300
transfer    6000        0.7   1000
zero_shot   6000        0.9   1000
=========== =========== ===== ============

(The official pretraining RPN is an FPN with 1000 pre-NMS boxes per level; this project's RPN has one
stride-16 level, like the official C4 ``rpn_coco_48``, whose pre-NMS top-k is 6000.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from regionclip.errors import ConfigError

PresetName = Literal["pretraining", "transfer", "zero_shot"]


@dataclass(frozen=True)
class ProposalPreset:
    pre_nms_topk: int  # boxes with the highest objectness logits kept before NMS
    nms_thresh: float  # IoU threshold of the class-agnostic NMS
    post_nms_topk: int  # boxes kept after NMS (sorted by objectness)


PROPOSAL_PRESETS: dict[str, ProposalPreset] = {
    "pretraining": ProposalPreset(pre_nms_topk=6000, nms_thresh=0.5, post_nms_topk=300),
    "transfer": ProposalPreset(pre_nms_topk=6000, nms_thresh=0.7, post_nms_topk=1000),
    "zero_shot": ProposalPreset(pre_nms_topk=6000, nms_thresh=0.9, post_nms_topk=1000),
}


def get_proposal_preset(name: str) -> ProposalPreset:
    """The proposal preset ``name`` (``pretraining``, ``transfer`` or ``zero_shot``)."""
    if name not in PROPOSAL_PRESETS:
        raise ConfigError(f"unknown proposal preset {name!r}; expected one of {', '.join(PROPOSAL_PRESETS)}")
    return PROPOSAL_PRESETS[name]


@dataclass
class RPNConfig:
    """Architecture and training targets of the class-agnostic RPN (detectron2 R50-C4 RPN defaults)."""

    trunk: str = "clip:RN50"  # "clip:<CLIP preset>" (CLIP input) or "torchvision:resnet18|34|50|101"
    trunk_weights: str | None = None  # CLIP checkpoint / torchvision state dict to start the trunk from
    input_format: Literal["imagenet_rgb", "detectron2_bgr"] = "imagenet_rgb"  # torchvision trunks' input
    freeze_at: int = 2  # frozen trunk stages while training: 0 none, 1 stem, 2 stem + layer1 (official)
    anchor_sizes: list[float] = field(default_factory=lambda: [32.0, 64.0, 128.0, 256.0, 512.0])  # pixels
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])  # height / width
    fg_iou: float = 0.7  # anchors with IoU >= this to a GT box are positive
    bg_iou: float = 0.3  # anchors with IoU < this to every GT box are negative
    batch_size_per_image: int = 256  # anchors sampled per image for the losses
    positive_fraction: float = 0.5  # at most this fraction of the sampled anchors is positive
    smooth_l1_beta: float = 0.0  # box-regression loss: 0 = L1 (official)
    min_size: float = 0.0  # proposals whose side is not > this (pixels) are removed (official 0)


@dataclass
class RandomBoxesConfig:
    count: int = 100  # boxes per image
    style: Literal["official", "lattice"] = "official"  # official create_rand_boxes, or per-image lattice
    min_size: float = 8.0  # smallest box side in pixels (official 8)
    grid: int = 8  # top-left corners (lattice: all corners) on this pixel grid (official 8)
    same_for_batch: bool = False  # lattice only: one set for the batch (official style always shares one)
    seed: int | None = 0  # seed of the generator's own RNG (None: torch's global RNG)


@dataclass
class ProposalConfig:
    kind: Literal["rpn", "random", "gt"] = "rpn"  # where regions come from
    rpn_checkpoint: str | None = None  # a `regionclip train-rpn` checkpoint (kind "rpn")
    preset: PresetName = "transfer"  # proposal preset of the RPN (see the module doc)
    random: RandomBoxesConfig = field(default_factory=RandomBoxesConfig)  # settings of kind "random"

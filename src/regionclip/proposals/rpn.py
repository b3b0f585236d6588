"""The class-agnostic region proposal network (method reference §4.1, §6.1, §7; input conventions §2.5).

A single-level RPN on the stride-16 ``res4`` map, like the official C4 offline RPN ``rpn_coco_48``: a trunk
(CLIP stem..layer3, or a torchvision ResNet up to layer3), torchvision's ``RPNHead`` (3x3 conv + ReLU, 1x1
objectness logits, 1x1 box deltas), anchors of ``len(sizes) x len(ratios)`` shapes at every cell (official:
sizes 32..512 x ratios 0.5/1/2 = 15 for 800-px images; scale the sizes with the image size), and
detectron2's targets and losses (anchor matching IoU >= 0.7 positive / < 0.3 negative with low-quality
matches allowed, 256 anchors per image at most half positive, box deltas with weights (1, 1, 1, 1), both
losses summed over sampled anchors and divided by ``256 x images``).

Inference per image (detectron2 ``find_top_rpn_proposals`` on one level): the ``pre_nms_topk`` highest
objectness logits, decoded boxes clipped to the unpadded image, non-finite and empty boxes removed, NMS,
the ``post_nms_topk`` best kept. :class:`Proposals` carry the raw objectness *logits* (the detector's
RPN-score fusion uses the logit, §6.5). Training and eval mode return the same proposals (the official
offline RPN always runs in eval mode); the pretraining task samples its 100 regions per image itself.

Train/eval: the networks have no mode-dependent layers (frozen BatchNorm, no dropout) and :meth:`train` keeps
every submodule in eval mode regardless, so a frozen RPN inside a training task behaves as the official
"always eval" offline RPN; the generator's own ``training`` flag only switches the sampling above.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import box_iou, nms

from regionclip.checkpoint import load_checkpoint, load_state_dict_strict, save_checkpoint
from regionclip.clip.model import FrozenBatchNorm2d
from regionclip.config import config_from_dict, config_to_dict
from regionclip.errors import CheckpointError, ConfigError
from regionclip.precision import compute_region
from regionclip.preprocess import Preprocess
from regionclip.proposals.base import ProposalGenerator, Proposals
from regionclip.proposals.config import ProposalPreset, RPNConfig, get_proposal_preset
from regionclip.structures import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD, ImageBatch, clip_boxes

RPN_STRIDE = 16
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision ResNets: RGB in [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)
DETECTRON2_BGR_MEAN = (103.53, 116.28, 123.675)  # detectron2 MSRA ResNets: BGR in [0, 255], std 1
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


class ClipTrunk(nn.Module):
    """CLIP ModifiedResNet stem..layer3 on the CLIP-normalised batch: ``[B, 3, H, W]`` -> ``[B, C4, H/16, W/16]``.

    ``visual`` keeps its CLIP parameter names (``visual.layer3...``); its layer4 and attention pool are not
    used (the builder replaces them by ``nn.Identity``).
    """

    def __init__(self, visual: nn.Module, out_channels: int):
        super().__init__()
        self.visual = visual
        self.out_channels = out_channels

    def forward(self, images: ImageBatch) -> Tensor:
        from regionclip.regions import run_trunk

        return run_trunk(self.visual, images.tensor)


class ResNetTrunk(nn.Module):
    """A torchvision ResNet conv1..layer3 (stride 16) with its own input normalisation.

    The CLIP-normalised batch is converted back to RGB in [0, 1], reordered by ``channel_order`` (RGB or
    BGR), multiplied by ``scale`` (1 or 255), normalised with ``mean``/``std``, and the padding is set to zero
    again (padding after normalisation, as detectron2 does), so boxes are shared with the CLIP branch.
    """

    def __init__(
        self,
        body: nn.Module,
        out_channels: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        scale: float,
        channel_order: tuple[int, int, int],
    ):
        super().__init__()
        self.body = body
        self.out_channels = out_channels
        self.scale = scale
        self.register_buffer("clip_mean", torch.tensor(CLIP_PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(CLIP_PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("channel_order", torch.tensor(channel_order), persistent=False)

    def forward(self, images: ImageBatch) -> Tensor:
        x = images.tensor * self.clip_std + self.clip_mean  # RGB in [0, 1]
        x = (x[:, self.channel_order] * self.scale - self.mean) / self.std
        valid = torch.zeros_like(x[:, :1])
        for i, (h, w) in enumerate(images.image_sizes):
            valid[i, :, :h, :w] = 1
        return self.body(x * valid)


class ClassAgnosticRPN(ProposalGenerator):
    """A single-level class-agnostic RPN (see the module doc).

    trunk: image batch -> feature map ``[B, C, H/16, W/16]``; head: torchvision ``RPNHead`` with A anchors;
    cell_anchors: ``[A, 4]`` anchors centred at (0, 0) (xyxy pixels), placed every 16 pixels;
    preset: inference top-k / NMS. ``compute_dtype``: autocast dtype of the trunk
    and head (``None``: fp32; see :mod:`regionclip.precision`); logits and deltas are float32.
    """

    compute_dtype: torch.dtype | None = None

    def __init__(
        self,
        trunk: nn.Module,
        head: RPNHead,
        cell_anchors: Tensor,
        preset: ProposalPreset,
        fg_iou: float = 0.7,
        bg_iou: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        smooth_l1_beta: float = 0.0,
        min_size: float = 0.0,
    ):
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.register_buffer("cell_anchors", cell_anchors, persistent=False)
        self.preset = preset
        self.box_coder = det_utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.matcher = det_utils.Matcher(fg_iou, bg_iou, allow_low_quality_matches=True)
        self.sampler = det_utils.BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.batch_size_per_image = batch_size_per_image
        self.smooth_l1_beta = smooth_l1_beta
        self.min_size = min_size

    def train(self, mode: bool = True) -> ClassAgnosticRPN:
        """Set this generator's ``training`` flag; submodules always stay in eval (the outputs do not change)."""
        self.training = mode
        for module in self.children():
            module.eval()
        return self

    def anchors(self, feature_size: tuple[int, int]) -> Tensor:
        """All anchors ``[H_f * W_f * A, 4]`` (xyxy pixels), cell-major, as the head's outputs are flattened."""
        h, w = feature_size
        device = self.cell_anchors.device
        ys = torch.arange(h, device=device, dtype=torch.float32) * RPN_STRIDE
        xs = torch.arange(w, device=device, dtype=torch.float32) * RPN_STRIDE
        sy, sx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([sx, sy, sx, sy], dim=-1).reshape(-1, 1, 4)
        return (shifts + self.cell_anchors.view(1, -1, 4)).reshape(-1, 4)

    def predict(self, images: ImageBatch) -> tuple[Tensor, Tensor, Tensor]:
        """Objectness logits ``[B, M]``, box deltas ``[B, M, 4]`` and anchors ``[M, 4]`` (M = H_f W_f A)."""
        with compute_region(self, images.tensor.device.type):
            features = self.trunk(images)
            logits, deltas = self.head([features])
        logits, deltas = logits[0].float(), deltas[0].float()  # [B, A, h, w], [B, 4A, h, w]
        b, a, h, w = logits.shape
        logits = logits.permute(0, 2, 3, 1).reshape(b, -1)
        deltas = deltas.view(b, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4)
        return logits, deltas, self.anchors((h, w))

    @torch.no_grad()
    def forward(self, images: ImageBatch, given_boxes: list[Tensor] | None = None) -> list[Proposals]:
        """Proposals per image (``given_boxes`` is ignored): boxes sorted by decreasing objectness logit."""
        logits, deltas, anchors = self.predict(images)
        out = []
        for i, size in enumerate(images.image_sizes):
            out.append(self._select(logits[i].float(), deltas[i].float(), anchors, size))
        return out

    def _select(self, logits: Tensor, deltas: Tensor, anchors: Tensor, size: tuple[int, int]) -> Proposals:
        k = min(self.preset.pre_nms_topk, logits.shape[0])
        logits, idx = logits.topk(k)
        boxes = self.box_coder.decode_single(deltas[idx], anchors[idx])
        boxes = clip_boxes(boxes, size)
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(logits)
        valid &= (boxes[:, 2] - boxes[:, 0] > self.min_size) & (boxes[:, 3] - boxes[:, 1] > self.min_size)
        boxes, logits = boxes[valid], logits[valid]
        keep = nms(boxes, logits, self.preset.nms_thresh)[: self.preset.post_nms_topk]
        return Proposals(boxes[keep], logits[keep])

    def losses(self, images: ImageBatch, gt_boxes: list[Tensor]) -> dict[str, Tensor]:
        """``loss_objectness`` (BCE on logits) and ``loss_rpn_box_reg`` (smooth-L1 / L1 on deltas).

        gt_boxes: ``list[Tensor[G_i, 4]]`` class-agnostic GT boxes (xyxy pixels), possibly empty.
        """
        logits, deltas, anchors = self.predict(images)
        labels, targets = [], []
        for boxes in gt_boxes:
            boxes = boxes.to(anchors.device, torch.float32).reshape(-1, 4)
            if boxes.shape[0] == 0:
                labels.append(torch.zeros(anchors.shape[0], device=anchors.device))
                targets.append(torch.zeros_like(anchors))
                continue
            matched = self.matcher(box_iou(boxes, anchors))
            label = (matched >= 0).float()
            label[matched == det_utils.Matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(label)
            targets.append(self.box_coder.encode_single(boxes[matched.clamp(min=0)], anchors))
        pos_masks, neg_masks = self.sampler(labels)
        pos = torch.cat(pos_masks).bool()
        sampled = pos | torch.cat(neg_masks).bool()
        normalizer = self.batch_size_per_image * len(gt_boxes)
        flat_logits = logits.reshape(-1)
        loss_objectness = (
            F.binary_cross_entropy_with_logits(
                flat_logits[sampled], torch.cat(labels)[sampled].to(flat_logits.dtype), reduction="sum"
            )
            / normalizer
        )
        loss_box = (
            F.smooth_l1_loss(
                deltas.reshape(-1, 4)[pos],
                torch.cat(targets)[pos].to(deltas.dtype),
                beta=self.smooth_l1_beta,
                reduction="sum",
            )
            / normalizer
        )
        return {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_box}


def make_cell_anchors(sizes: list[float], aspect_ratios: list[float]) -> Tensor:
    """``[len(sizes) * len(ratios), 4]`` anchors centred at 0 (torchvision's ``AnchorGenerator`` shapes)."""
    gen = AnchorGenerator(sizes=(tuple(sizes),), aspect_ratios=(tuple(aspect_ratios),))
    return gen.generate_anchors(list(sizes), list(aspect_ratios)).float()


def _parse_trunk(name: str) -> tuple[str, str]:
    kind, _, arch = name.partition(":")
    if kind not in ("clip", "torchvision") or not arch:
        raise ConfigError(f"rpn.trunk: expected 'clip:<CLIP preset>' or 'torchvision:<resnet>', got {name!r}")
    if kind == "torchvision" and arch not in TORCHVISION_RESNETS:
        raise ConfigError(
            f"rpn.trunk: unknown torchvision trunk {arch!r}; expected one of {TORCHVISION_RESNETS}"
        )
    return kind, arch


def build_trunk(cfg: RPNConfig, load_weights: bool = True) -> nn.Module:
    """The RPN trunk of ``cfg`` (weights from ``cfg.trunk_weights`` when ``load_weights``), stages frozen."""
    kind, arch = _parse_trunk(cfg.trunk)
    weights = cfg.trunk_weights if load_weights else None
    if kind == "clip":
        from regionclip.clip.checkpoint import create_model
        from regionclip.clip.model import freeze_stages

        model = create_model(arch, pretrained=weights)
        visual = model.visual
        visual.layer4 = nn.Identity()  # the RPN uses stem..layer3 only
        visual.attnpool = nn.Identity()
        freeze_stages(visual, cfg.freeze_at)
        return ClipTrunk(visual, model.preset.vision.res4_channels)
    import torchvision

    resnet = getattr(torchvision.models, arch)(weights=None, norm_layer=FrozenBatchNorm2d)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        # fc is not used; FrozenBN has no num_batches_tracked (present in any nn.BatchNorm2d state dict)
        state = {
            k: v
            for k, v in state.items()
            if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
        }
        resnet.fc = nn.Identity()
        load_state_dict_strict(nn.ModuleDict({k: getattr(resnet, k) for k in _RESNET_PARTS}), state, weights)
    stages = [[resnet.conv1, resnet.bn1], [resnet.layer1], [resnet.layer2], [resnet.layer3]]
    for stage in stages[: cfg.freeze_at]:
        for module in stage:
            module.requires_grad_(False)
    body = nn.Sequential(*(getattr(resnet, k) for k in _RESNET_PARTS[:-1]))
    channels = resnet.layer3[-1].conv3.out_channels if arch in ("resnet50", "resnet101") else 256
    if cfg.input_format == "imagenet_rgb":
        return ResNetTrunk(body, channels, IMAGENET_MEAN, IMAGENET_STD, 1.0, (0, 1, 2))
    return ResNetTrunk(body, channels, DETECTRON2_BGR_MEAN, (1.0, 1.0, 1.0), 255.0, (2, 1, 0))


_RESNET_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def build_rpn(cfg: RPNConfig, preset: str = "transfer", load_weights: bool = True) -> ClassAgnosticRPN:
    """A :class:`ClassAgnosticRPN` from ``cfg`` with the proposal preset ``preset``."""
    if not cfg.anchor_sizes or not cfg.aspect_ratios:
        raise ConfigError("rpn.anchor_sizes and rpn.aspect_ratios must not be empty")
    if any(s <= 0 or not math.isfinite(s) for s in [*cfg.anchor_sizes, *cfg.aspect_ratios]):
        raise ConfigError("rpn.anchor_sizes and rpn.aspect_ratios must be positive numbers")
    trunk = build_trunk(cfg, load_weights)
    cell_anchors = make_cell_anchors(cfg.anchor_sizes, cfg.aspect_ratios)
    head = RPNHead(trunk.out_channels, cell_anchors.shape[0])
    return ClassAgnosticRPN(
        trunk,
        head,
        cell_anchors,
        get_proposal_preset(preset),
        fg_iou=cfg.fg_iou,
        bg_iou=cfg.bg_iou,
        batch_size_per_image=cfg.batch_size_per_image,
        positive_fraction=cfg.positive_fraction,
        smooth_l1_beta=cfg.smooth_l1_beta,
        min_size=cfg.min_size,
    )


def save_rpn(
    rpn: ClassAgnosticRPN,
    cfg: RPNConfig,
    path: str | Path,
    extra: dict | None = None,
    preprocess: Preprocess | None = None,
) -> Path:
    """Save ``rpn`` as a regionclip checkpoint of kind ``rpn`` whose config rebuilds it (trunk preset included);
    ``preprocess``: its test-time resize (recorded in the manifest)."""
    rebuild = config_to_dict(replace(cfg, trunk_weights=None))
    return save_checkpoint(path, rpn.state_dict(), "rpn", {"rpn": rebuild, **(extra or {})}, preprocess)


def load_rpn_config(path: str | Path) -> RPNConfig:
    """The :class:`RPNConfig` stored in an ``rpn`` checkpoint."""
    ckpt = load_checkpoint(path, kind="rpn")
    if "rpn" not in ckpt.config:
        raise CheckpointError(f"{path}: an 'rpn' checkpoint without its 'rpn' config")
    return config_from_dict(RPNConfig, ckpt.config["rpn"])

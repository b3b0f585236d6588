"""Inference-only detectron2 RPNs in plain torch: the official "offline" proposal generators (method
reference §2.5, §6.1, §9.3).

RegionCLIP takes its proposals from frozen detectron2 RPNs trained on base-class boxes: an R50-C4 RPN
(``rpn_coco_48.pth``: 15 anchors per cell on res4, stride 16) and an R50-FPN RPN (``rpn_lvis_866.pth``:
3 anchors per level on P2..P6; the LSJ variant ``rpn_lvis_866_lsj.pth`` adds BatchNorm to the FPN convs and
uses a two-conv RPN head). This module re-implements them with detectron2's parameter layout, so converted
weights (:mod:`regionclip.convert`) load with a plain key rename:

* ResNet (MSRA style, stride in the 1x1 conv1): ``stem.conv1`` (7x7/2, ``.norm``) + 3x3/2 max-pool;
  ``res{2..5}.{i}.{conv1,conv2,conv3,shortcut}`` each with ``.norm``; every norm is a frozen BatchNorm
  (eval-mode BN/SyncBN is the same function);
* FPN: ``fpn_lateral{2..5}`` (1x1) and ``fpn_output{2..5}`` (3x3), nearest x2 top-down, P6 = 1x1 max-pool
  stride 2 of P5;
* RPN head: ``rpn_head.conv`` (3x3 + ReLU; or ``rpn_head.conv.conv{0,1}``), ``rpn_head.objectness_logits``
  (A) and ``rpn_head.anchor_deltas`` (4A);
* anchors as detectron2's ``DefaultAnchorGenerator``: for each size s and ratio r (size-major), a box of
  w = sqrt(s^2 / r), h = r * w centred on 0 (NOT rounded, unlike torchvision's ``AnchorGenerator``),
  shifted by (x * stride, y * stride) with offset 0; location-major order (cell, then anchor);
* decoding with weights (1, 1, 1, 1) and dw, dh clamped at log(1000/16); per level the top ``pre_nms_topk``
  logits, then per image: drop non-finite, clip to the image, drop empty boxes, NMS with level ids,
  keep ``post_nms_topk``.

Input: an :class:`~regionclip.structures.ImageBatch` (CLIP-normalised RGB) is turned into detectron2's
input: BGR, 0-255, minus (103.53, 116.28, 123.675), std 1, zero padding bottom/right to the largest image
(rounded up to a multiple of 32 for FPN). Output: :class:`~regionclip.proposals.Proposals` with the raw
objectness logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from regionclip.clip.model import FrozenBatchNorm2d
from regionclip.precision import compute_region
from regionclip.proposals.base import ProposalGenerator, Proposals
from regionclip.structures import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD, ImageBatch, clip_boxes

# detectron2's default input statistics for MSRA ResNets: BGR order, 0-255 range, std 1.
D2_PIXEL_MEAN_BGR = (103.53, 116.28, 123.675)
# detectron2's Box2BoxTransform clamp on dw, dh.
SCALE_CLAMP = math.log(1000.0 / 16)

RPN_ARCHS = ("R50-C4", "R50-FPN")


@dataclass
class Detectron2RPNConfig:
    arch: Literal["R50-C4", "R50-FPN"] = "R50-C4"  # backbone + feature levels of the RPN
    width: int = 64  # stem output channels; res2 bottleneck width (res_i: width * 2^(i-2), out x4)
    stage_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)  # bottleneck blocks of res2..res5 (R50)
    fpn_channels: int = 256  # FPN output channels (R50-FPN only)
    fpn_norm: bool = False  # BatchNorm in the FPN convs (the LSJ RPN); bias-free convs then
    head_convs: int = (
        1  # 3x3 convs in the RPN head: 1 = ``rpn_head.conv``; 2 = ``rpn_head.conv.conv{0,1}`` (LSJ)
    )
    anchor_sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)  # C4: all on res4; FPN: one per level
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # anchor h/w ratios
    pre_nms_topk: int = (
        6000  # top logits kept before NMS (per level for FPN; detectron2 test: C4 6000, FPN 1000)
    )
    post_nms_topk: int = 1000  # proposals kept per image after NMS
    nms_thresh: float = 0.7  # RPN NMS IoU (official zero-shot/pretraining override it to 0.9 / 0.5)
    min_size: float = 0.0  # boxes with width or height <= min_size are dropped after clipping

    @property
    def num_anchors(self) -> int:
        """Anchors per cell: ratios per level (FPN) or sizes x ratios (C4)."""
        if self.arch == "R50-FPN":
            return len(self.aspect_ratios)
        return len(self.anchor_sizes) * len(self.aspect_ratios)


class ConvNorm(nn.Conv2d):
    """detectron2's ``Conv2d`` with a ``.norm`` child (frozen BN) or none: keys ``weight``, ``norm.*``."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, norm: bool = True, bias: bool = False
    ):
        super().__init__(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias)
        self.norm = FrozenBatchNorm2d(cout) if norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(super().forward(x))


class Stem(nn.Module):
    """7x7/2 conv + frozen BN + ReLU + 3x3/2 max-pool (stride 4)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = ConvNorm(3, width, 7, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class Bottleneck(nn.Module):
    """MSRA bottleneck (stride in the 1x1 ``conv1``), projection ``shortcut`` when the channels change."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = ConvNorm(cin, mid, 1, stride=stride)
        self.conv2 = ConvNorm(mid, mid, 3)
        self.conv3 = ConvNorm(mid, cout, 1)
        self.shortcut = ConvNorm(cin, cout, 1, stride=stride) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """detectron2 ResNet up to ``res{num_stages + 1}``: ``forward`` -> ``{"res2": ..., ...}``."""

    def __init__(self, width: int, stage_blocks: tuple[int, ...], num_stages: int):
        super().__init__()
        self.stem = Stem(width)
        self.stage_names = [f"res{i + 2}" for i in range(num_stages)]
        cin = width
        for i, name in enumerate(self.stage_names):
            mid, cout = width * 2**i, width * 4 * 2**i
            blocks = []
            for b in range(stage_blocks[i]):
                blocks.append(Bottleneck(cin, mid, cout, stride=(2 if (b == 0 and i > 0) else 1)))
                cin = cout
            self.add_module(name, nn.Sequential(*blocks))
        self.out_channels = cin

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.stem(x)
        out = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            out[name] = x
        return out


class C4Backbone(ResNet):
    """R50-C4 RPN backbone: stem + res2..res4, returns ``[res4]`` (stride 16)."""

    size_divisibility = 0
    strides = (16,)

    def __init__(self, width: int, stage_blocks: tuple[int, ...]):
        super().__init__(width, stage_blocks, num_stages=3)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [super().forward(x)["res4"]]


class FPNBackbone(nn.Module):
    """R50-FPN: ``bottom_up`` ResNet res2..res5, laterals/outputs, P6 by max-pool; returns [P2..P6]."""

    size_divisibility = 32
    strides = (4, 8, 16, 32, 64)

    def __init__(self, width: int, stage_blocks: tuple[int, ...], channels: int, norm: bool):
        super().__init__()
        self.bottom_up = ResNet(width, stage_blocks, num_stages=4)
        for level in range(2, 6):
            cin = width * 4 * 2 ** (level - 2)
            self.add_module(f"fpn_lateral{level}", ConvNorm(cin, channels, 1, norm=norm, bias=not norm))
            self.add_module(f"fpn_output{level}", ConvNorm(channels, channels, 3, norm=norm, bias=not norm))
        self.out_channels = channels

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.bottom_up(x)
        prev = self.fpn_lateral5(feats["res5"])
        results = [self.fpn_output5(prev)]
        for level in (4, 3, 2):
            top_down = F.interpolate(prev, scale_factor=2.0, mode="nearest")
            prev = getattr(self, f"fpn_lateral{level}")(feats[f"res{level}"]) + top_down
            results.insert(0, getattr(self, f"fpn_output{level}")(prev))
        results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))
        return results


class RPNHead(nn.Module):
    """Shared 3x3 conv(s) + ReLU, then 1x1 ``objectness_logits`` [A] and ``anchor_deltas`` [4A] per level."""

    def __init__(self, channels: int, num_anchors: int, num_convs: int):
        super().__init__()
        if num_convs == 1:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        else:
            self.conv = nn.Sequential()
            for i in range(num_convs):
                self.conv.add_module(f"conv{i}", nn.Conv2d(channels, channels, 3, padding=1))
        self.num_convs = num_convs
        self.objectness_logits = nn.Conv2d(channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(channels, 4 * num_anchors, 1)

    def _trunk(self, x: Tensor) -> Tensor:
        if self.num_convs == 1:
            return F.relu(self.conv(x))
        for conv in self.conv:
            x = F.relu(conv(x))
        return x

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: logits ``[B, H*W*A]`` and deltas ``[B, H*W*A, 4]`` (location-major, then anchor)."""
        logits, deltas = [], []
        for x in features:
            t = self._trunk(x)
            b, _, h, w = t.shape
            logits.append(self.objectness_logits(t).permute(0, 2, 3, 1).flatten(1))
            d = self.anchor_deltas(t).view(b, -1, 4, h, w).permute(0, 3, 4, 1, 2)
            deltas.append(d.flatten(1, -2))
        return logits, deltas


def cell_anchors(sizes: tuple[float, ...], aspect_ratios: tuple[float, ...]) -> Tensor:
    """detectron2's cell anchors ``[len(sizes) * len(ratios), 4]`` centred on 0, size-major, not rounded."""
    anchors = []
    for size in sizes:
        area = float(size) ** 2
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors, dtype=torch.float32)


def grid_anchors(cell: Tensor, stride: int, height: int, width: int) -> Tensor:
    """Anchors ``[H*W*A, 4]`` of a ``height x width`` map: cell anchors shifted by (x, y) * stride, offset 0."""
    shift_x = torch.arange(0, width * stride, step=stride, dtype=torch.float32, device=cell.device)
    shift_y = torch.arange(0, height * stride, step=stride, dtype=torch.float32, device=cell.device)
    yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
    xx, yy = xx.reshape(-1), yy.reshape(-1)
    shifts = torch.stack([xx, yy, xx, yy], dim=1)
    return (shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4)


def apply_deltas(deltas: Tensor, anchors: Tensor) -> Tensor:
    """Decode ``deltas`` ``[N, 4]`` (dx, dy, dw, dh; weights 1) on ``anchors`` ``[N, 4]`` -> boxes ``[N, 4]``."""
    anchors = anchors.to(deltas.dtype)
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    ctr_x = anchors[:, 0] + 0.5 * widths
    ctr_y = anchors[:, 1] + 0.5 * heights
    dx, dy = deltas[:, 0], deltas[:, 1]
    dw = deltas[:, 2].clamp(max=SCALE_CLAMP)
    dh = deltas[:, 3].clamp(max=SCALE_CLAMP)
    px = dx * widths + ctr_x
    py = dy * heights + ctr_y
    pw = torch.exp(dw) * widths
    ph = torch.exp(dh) * heights
    return torch.stack([px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph], dim=1)


def to_detectron2_input(images: ImageBatch, size_divisibility: int) -> Tensor:
    """CLIP-normalised RGB batch -> detectron2 input ``[B, 3, H', W']``: BGR 0-255 minus the BGR mean,
    zeros outside each image, padded to the largest image (rounded up to ``size_divisibility``)."""
    x = images.tensor
    mean = torch.tensor(CLIP_PIXEL_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_PIXEL_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    d2_mean = torch.tensor(D2_PIXEL_MEAN_BGR, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    bgr = (x * std + mean).flip(1) * 255.0 - d2_mean
    max_h = max(h for h, _ in images.image_sizes)
    max_w = max(w for _, w in images.image_sizes)
    if size_divisibility > 1:
        max_h = -(-max_h // size_divisibility) * size_divisibility
        max_w = -(-max_w // size_divisibility) * size_divisibility
    out = x.new_zeros((x.shape[0], 3, max_h, max_w))
    for i, (h, w) in enumerate(images.image_sizes):
        out[i, :, :h, :w] = bgr[i, :, :h, :w]
    return out


class Detectron2RPN(ProposalGenerator):
    """A frozen detectron2 RPN (R50-C4 or R50-FPN): ``forward(images) -> list[Proposals]``.

    Submodules ``backbone`` (:class:`C4Backbone` or :class:`FPNBackbone`) and ``rpn_head``; the anchors of
    each level are ``cell_anchors`` ``[A, 4]`` buffers (not saved). Build with :func:`build_detectron2_rpn`.
    ``compute_dtype``: autocast dtype of backbone and head (``None``: fp32; see :mod:`regionclip.precision`);
    box decoding and NMS run on their float32 outputs.
    """

    compute_dtype: torch.dtype | None = None

    def __init__(
        self,
        backbone: nn.Module,
        rpn_head: RPNHead,
        level_cell_anchors: list[Tensor],
        pre_nms_topk: int,
        post_nms_topk: int,
        nms_thresh: float,
        min_size: float,
    ):
        super().__init__()
        self.backbone = backbone
        self.rpn_head = rpn_head
        for i, cell in enumerate(level_cell_anchors):
            self.register_buffer(f"cell_anchors_{i}", cell, persistent=False)
        self.num_levels = len(level_cell_anchors)
        self.pre_nms_topk = pre_nms_topk
        self.post_nms_topk = post_nms_topk
        self.nms_thresh = nms_thresh
        self.min_size = min_size

    def anchors(self, features: list[Tensor]) -> list[Tensor]:
        """Anchors ``[H_l*W_l*A, 4]`` of every level, in input pixels."""
        return [
            grid_anchors(getattr(self, f"cell_anchors_{i}"), stride, f.shape[-2], f.shape[-1])
            for i, (f, stride) in enumerate(zip(features, self.backbone.strides, strict=True))
        ]

    @torch.no_grad()
    def forward(self, images: ImageBatch, given_boxes: list[Tensor] | None = None) -> list[Proposals]:
        x = to_detectron2_input(images, self.backbone.size_divisibility)
        with compute_region(self, x.device.type):
            features = self.backbone(x)
            logits, deltas = self.rpn_head(features)
        logits, deltas = [lg.float() for lg in logits], [d.float() for d in deltas]
        anchors = self.anchors(features)
        top_boxes, top_logits, level_ids = [], [], []
        for level, (lg, dl, an) in enumerate(zip(logits, deltas, anchors, strict=True)):
            b, n = lg.shape
            boxes = apply_deltas(dl.reshape(-1, 4), an.repeat(b, 1)).view(b, n, 4)
            k = min(n, self.pre_nms_topk)
            scores, idx = lg.topk(k, dim=1)
            top_logits.append(scores)
            top_boxes.append(torch.gather(boxes, 1, idx[..., None].expand(b, k, 4)))
            level_ids.append(torch.full((k,), level, dtype=torch.long, device=lg.device))
        all_boxes = torch.cat(top_boxes, dim=1)
        all_logits = torch.cat(top_logits, dim=1)
        all_levels = torch.cat(level_ids)
        out = []
        for i, size in enumerate(images.image_sizes):
            boxes, scores, lvl = all_boxes[i], all_logits[i], all_levels
            valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
            boxes, scores, lvl = boxes[valid], scores[valid], lvl[valid]
            boxes = clip_boxes(boxes, size)
            keep = ((boxes[:, 2] - boxes[:, 0]) > self.min_size) & (
                (boxes[:, 3] - boxes[:, 1]) > self.min_size
            )
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = batched_nms(boxes, scores, lvl, self.nms_thresh)[: self.post_nms_topk]
            out.append(Proposals(boxes[keep], scores[keep]))
        return out

    def train(self, mode: bool = True) -> Detectron2RPN:  # always frozen, always eval (official offline RPN)
        return super().train(False)


def build_detectron2_rpn(cfg: Detectron2RPNConfig) -> Detectron2RPN:
    """Build the RPN of ``cfg`` (random weights; load converted weights with ``load_state_dict``)."""
    if cfg.arch == "R50-C4":
        backbone: nn.Module = C4Backbone(cfg.width, cfg.stage_blocks)
        levels = [cell_anchors(tuple(cfg.anchor_sizes), tuple(cfg.aspect_ratios))]
    elif cfg.arch == "R50-FPN":
        backbone = FPNBackbone(cfg.width, cfg.stage_blocks, cfg.fpn_channels, cfg.fpn_norm)
        if len(cfg.anchor_sizes) != len(FPNBackbone.strides):
            raise ValueError(f"R50-FPN needs one anchor size per level P2..P6, got {cfg.anchor_sizes}")
        levels = [cell_anchors((s,), tuple(cfg.aspect_ratios)) for s in cfg.anchor_sizes]
    else:
        raise ValueError(f"unknown detectron2 RPN arch {cfg.arch!r}; expected one of {RPN_ARCHS}")
    head = RPNHead(backbone.out_channels, cfg.num_anchors, cfg.head_convs)
    rpn = Detectron2RPN(
        backbone, head, levels, cfg.pre_nms_topk, cfg.post_nms_topk, cfg.nms_thresh, cfg.min_size
    )
    for p in rpn.parameters():
        p.requires_grad_(False)
    return rpn.eval()


def save_detectron2_rpn(rpn: Detectron2RPN, cfg: Detectron2RPNConfig, path, extra: dict | None = None):
    """Save as a regionclip ``rpn`` checkpoint (config ``{"family": "detectron2", "rpn": ...}``)."""
    from regionclip.checkpoint import save_checkpoint
    from regionclip.config import config_to_dict

    config = {"family": "detectron2", "rpn": config_to_dict(cfg), **(extra or {})}
    return save_checkpoint(path, rpn.state_dict(), "rpn", config)


def is_detectron2_rpn_config(config: dict) -> bool:
    """Whether a loaded ``rpn`` checkpoint's config describes a detectron2-layout RPN of this module."""
    return config.get("family") == "detectron2"

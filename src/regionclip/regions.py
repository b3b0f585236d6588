"""RegionCLIP's region encoder (paper §3.1; method reference §2.3-2.4).

The CLIP ResNet is used as a C4 Fast R-CNN: the trunk (stem, layer1-layer3) runs once on the whole padded
batch and gives ``res4`` at stride 16; ``roi_align(aligned=True, sampling_ratio=0, spatial_scale=1/16)``
crops each region to ``2 * grid`` (14 for RN50, 18 for RN50x4); CLIP's layer4 and attention pool then run
per region, batched and chunked, giving unnormalised region embeddings in CLIP space.

The attention pool here computes the query of the mean token only, since only that token's output is used;
it equals OpenAI's ``AttentionPool2d`` (which projects all tokens) to float precision at about half the cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from regionclip.precision import compute_region
from regionclip.roi_align import roi_align_auto

RES4_STRIDE = 16


def run_trunk(visual: nn.Module, images: Tensor) -> Tensor:
    """Stem + layer1..layer3 of a ModifiedResNet: ``images`` ``[B, 3, H, W]`` -> ``res4`` ``[B, C4, H/16, W/16]``."""
    x = visual.stem(images)
    x = visual.layer1(x)
    x = visual.layer2(x)
    return visual.layer3(x)


def roi_pool(res4: Tensor, boxes: list[Tensor], resolution: int) -> Tensor:
    """RoIAlign (official ``ROIAlignV2``) of ``boxes`` (xyxy input pixels) on ``res4``: ``[sum N_i, C4, r, r]``."""
    boxes = [b.to(dtype=res4.dtype, device=res4.device) for b in boxes]
    # training on a CPU: the same RoIAlign as a matrix product, whose backward is fast (regionclip.roi_align)
    return roi_align_auto(
        res4, boxes, output_size=resolution, spatial_scale=1.0 / RES4_STRIDE, sampling_ratio=0, aligned=True
    )


def attention_pool(attnpool: nn.Module, x: Tensor) -> Tensor:
    """CLIP's attention pooling of ``x`` ``[R, C, h, w]`` -> ``[R, D]``, computing the mean-token query only.

    Tokens: the mean of the ``h*w`` cells followed by the cells (row-major), plus the positional embedding;
    one multi-head attention from the mean token to all tokens; output projection ``c_proj``.
    """
    r, c, h, w = x.shape
    tokens = x.flatten(2).transpose(1, 2)  # [R, hw, C]
    tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # [R, hw+1, C]
    tokens = tokens + attnpool.positional_embedding.to(tokens.dtype)
    heads = attnpool.num_heads
    head_dim = c // heads
    q = F.linear(tokens[:, 0], attnpool.q_proj.weight, attnpool.q_proj.bias)  # [R, C]
    k = F.linear(tokens, attnpool.k_proj.weight, attnpool.k_proj.bias)  # [R, L, C]
    v = F.linear(tokens, attnpool.v_proj.weight, attnpool.v_proj.bias)
    q = q.view(r, heads, 1, head_dim)
    k = k.view(r, -1, heads, head_dim).transpose(1, 2)  # [R, heads, L, dh]
    v = v.view(r, -1, heads, head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)  # [R, heads, 1, dh]
    return attnpool.c_proj(out.reshape(r, c))


def run_region_head(visual: nn.Module, roi_features: Tensor, chunk_size: int = 256) -> Tensor:
    """layer4 + attention pool per region: ``[R, C4, r, r]`` -> ``[R, D]``, ``chunk_size`` regions at a time.

    Chunking bounds peak memory for thousands of regions; under autograd (training) all regions go at once.
    """
    if roi_features.shape[0] == 0:
        return roi_features.new_zeros((0, visual.attnpool.c_proj.out_features))
    if torch.is_grad_enabled() or roi_features.shape[0] <= chunk_size:
        return attention_pool(visual.attnpool, visual.layer4(roi_features))
    outs = [attention_pool(visual.attnpool, visual.layer4(chunk)) for chunk in roi_features.split(chunk_size)]
    return torch.cat(outs)


def pooler_resolution(visual: nn.Module) -> int:
    """RoI side that layer4 (stride 2) turns into exactly the attention pool's grid (14 RN50, 18 RN50x4)."""
    grid = round((visual.attnpool.positional_embedding.shape[0] - 1) ** 0.5)
    return 2 * grid


def encode_regions(visual: nn.Module, images: Tensor, boxes: list[Tensor], chunk_size: int = 256) -> Tensor:
    """Unnormalised region embeddings ``[sum N_i, D]`` of ``boxes`` in CLIP-normalised ``images``.

    images: ``[B, 3, H, W]`` (padded batch); boxes: ``list[Tensor[N_i, 4]]`` xyxy in input pixels, one per image.
    """
    if len(boxes) != images.shape[0]:
        raise ValueError(f"encode_regions: {images.shape[0]} images but {len(boxes)} box tensors")
    res4 = run_trunk(visual, images)
    return run_region_head(visual, roi_pool(res4, boxes, pooler_resolution(visual)), chunk_size)


def global_boxes(images: Tensor) -> list[Tensor]:
    """The official "global box" per image: ``[0, 0, W_pad, H_pad]`` over the *padded* batch tensor."""
    b, _, h, w = images.shape
    box = torch.tensor([[0.0, 0.0, float(w), float(h)]], device=images.device, dtype=images.dtype)
    return [box.clone() for _ in range(b)]


class RegionEncoder(nn.Module):
    """A CLIP image tower used as region encoder (student, teacher or detector backbone).

    ``visual`` is a ModifiedResNet (FrozenBatchNorm2d); its keys stay ``visual.*`` so CLIP weights map 1:1.
    ``compute_dtype`` (set by :func:`regionclip.precision.apply_precision`): the trunk and the region head run
    under that autocast dtype (``None``: fp32); their outputs are always float32.
    """

    compute_dtype: torch.dtype | None = None

    def __init__(self, visual: nn.Module, chunk_size: int = 256):
        super().__init__()
        self.visual = visual
        self.chunk_size = chunk_size
        self.pooler_resolution = pooler_resolution(visual)
        self.embed_dim = visual.attnpool.c_proj.out_features

    def trunk(self, images: Tensor) -> Tensor:
        """``res4`` ``[B, C4, H/16, W/16]`` float32 of CLIP-normalised ``images`` ``[B, 3, H, W]``."""
        with compute_region(self, images.device.type):
            return run_trunk(self.visual, images).float()

    def pool(self, res4: Tensor, boxes: list[Tensor]) -> Tensor:
        """RoIAlign features ``[sum N_i, C4, r, r]``."""
        return roi_pool(res4, boxes, self.pooler_resolution)

    @property
    def res5_channels(self) -> int:
        """Channels C5 of the res5 features (CLIP's layer4 output; the mask head's input)."""
        return int(self.visual.attnpool.positional_embedding.shape[1])

    def res5(self, roi_features: Tensor) -> Tensor:
        """The res5 stage (CLIP's layer4) of RoI features ``[R, C4, r, r]`` -> ``[R, C5, r/2, r/2]``: every
        region at once, in the caller's autocast (no region of its own; :meth:`head` is the chunked,
        autocast path to embeddings)."""
        return self.visual.layer4(roi_features)

    def embed_res5(self, res5_features: Tensor) -> Tensor:
        """Region embeddings ``[R, D]`` from res5 features ``[R, C5, g, g]``: CLIP's attention pool (mean-token
        query, :func:`attention_pool`), in the caller's autocast."""
        return attention_pool(self.visual.attnpool, res5_features)

    def head(self, roi_features: Tensor) -> Tensor:
        """Region embeddings ``[R, D]`` float32 from RoI features ``[R, C4, r, r]`` (= ``embed_res5(res5(.))``,
        chunked, under the encoder's autocast)."""
        with compute_region(self, roi_features.device.type):
            return run_region_head(self.visual, roi_features, self.chunk_size).float()

    def embed(self, res4: Tensor, boxes: list[Tensor]) -> Tensor:
        """Region embeddings ``[sum N_i, D]`` float32 of ``boxes`` (xyxy pixels) on ``res4``.

        Without autograd, RoIAlign and the head run ``chunk_size`` regions at a time, so the RoI features of
        only one chunk exist at once (1000 RN50 regions: 0.8 GB less peak memory); same result as
        ``head(pool(res4, boxes))``.
        """
        total = sum(len(b) for b in boxes)
        if torch.is_grad_enabled() or total <= self.chunk_size:
            return self.head(self.pool(res4, boxes))
        indexed = [torch.cat([b.new_full((len(b), 1), i), b], dim=1) for i, b in enumerate(boxes)]
        rois = torch.cat(indexed).to(dtype=res4.dtype, device=res4.device)  # [K, 5]: image, x1, y1, x2, y2
        r = self.pooler_resolution
        outs = [
            self.head(roi_align(res4, chunk, r, 1.0 / RES4_STRIDE, sampling_ratio=0, aligned=True))
            for chunk in rois.split(self.chunk_size)
        ]
        return torch.cat(outs)

    def forward(self, images: Tensor, boxes: list[Tensor]) -> Tensor:
        """Region embeddings ``[sum N_i, D]`` of ``boxes`` (xyxy pixels) in ``images``."""
        return self.embed(self.trunk(images), boxes)

    def encode_global(self, images: Tensor) -> Tensor:
        """The official image-level embedding ``[B, D]``: the global box over the padded batch."""
        return self(images, global_boxes(images))

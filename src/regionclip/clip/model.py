"""The CLIP model: OpenAI's ModifiedResNet image tower and text transformer, built with open_clip.

Parameter names equal OpenAI's (``visual.layer1.0.conv1.weight``, ``transformer.resblocks.0...``,
``token_embedding.weight``, ``text_projection``), so OpenAI checkpoints load with no renaming. All
BatchNorm layers of the image tower are frozen (``FrozenBatchNorm2d``: eval-mode BN with fixed statistics,
as the official ``FrozenBN``). ``encode_regions`` is RegionCLIP's region encoder (:mod:`regionclip.regions`).
"""

from __future__ import annotations

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import SimpleTokenizer
from torch import Tensor, nn
from torchvision.ops import misc as tv_misc

from regionclip.clip.presets import ModelPreset
from regionclip.precision import compute_region
from regionclip.regions import encode_regions


class FrozenBatchNorm2d(tv_misc.FrozenBatchNorm2d):
    """torchvision's ``FrozenBatchNorm2d`` (same buffers and keys) applied in the input's dtype.

    The affine scale and shift are computed from the fp32 statistics in fp32, then applied in the dtype of
    ``x``: identical in fp32; under bf16 autocast the activations stay bf16 between the convolutions instead
    of being promoted to fp32 by the fp32 scale at every layer (2-3x faster trunk on an AMX CPU).
    """

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)


def _convert_batch_norm(module: nn.Module, source: type, build: type) -> nn.Module:
    """Replace every ``source`` norm layer under ``module`` by a ``build`` one with the same statistics."""
    for name, child in list(module.named_children()):
        if isinstance(child, source):
            norm = build(child.weight.shape[0], eps=child.eps)
            with torch.no_grad():
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(norm, key).copy_(getattr(child, key))
            setattr(module, name, norm.to(child.weight.device))
        else:
            _convert_batch_norm(child, source, build)
    return module


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` under ``module`` by a ``FrozenBatchNorm2d`` with the same statistics."""
    return _convert_batch_norm(module, nn.BatchNorm2d, FrozenBatchNorm2d)


def unfreeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``FrozenBatchNorm2d`` under ``module`` by a trainable ``BatchNorm2d`` with the same
    statistics: for training CLIP itself from scratch (with batch statistics), never for RegionCLIP."""
    return _convert_batch_norm(module, FrozenBatchNorm2d, nn.BatchNorm2d)


def freeze_stages(visual: nn.Module, freeze_at: int) -> None:
    """Stop gradients for the first ``freeze_at`` stages: 1 = stem, 2 = stem + layer1 (official FREEZE_AT=2)."""
    stem = [visual.conv1, visual.bn1, visual.conv2, visual.bn2, visual.conv3, visual.bn3]
    stages = [stem, [visual.layer1], [visual.layer2], [visual.layer3], [visual.layer4]]
    for stage in stages[:freeze_at]:
        for module in stage:
            for param in module.parameters():
                param.requires_grad_(False)


class CLIP(nn.Module):
    """CLIP image and text towers with RegionCLIP's region encoder.

    Built from a :class:`ModelPreset`; use :func:`create_model` to also load weights. ``compute_dtype``
    (set by :func:`regionclip.precision.apply_precision`): the towers run under that autocast dtype
    (``None``: fp32); the embeddings they return are always float32.
    """

    compute_dtype: torch.dtype | None = None

    def __init__(self, preset: ModelPreset):
        super().__init__()
        self.preset = preset
        towers = open_clip.model.CLIP(
            preset.embed_dim,
            vision_cfg=CLIPVisionCfg(
                layers=list(preset.vision.layers),
                width=preset.vision.width,
                image_size=preset.vision.image_size,
                patch_size=None,
            ),
            text_cfg=CLIPTextCfg(
                context_length=preset.text.context_length,
                vocab_size=preset.text.vocab_size,
                width=preset.text.width,
                heads=preset.text.heads,
                layers=preset.text.layers,
            ),
            quick_gelu=True,  # OpenAI's CLIP was trained with QuickGELU
        )
        self.visual = freeze_batch_norm(towers.visual)
        self.transformer = towers.transformer
        self.token_embedding = towers.token_embedding
        self.positional_embedding = towers.positional_embedding
        self.ln_final = towers.ln_final
        self.text_projection = towers.text_projection
        self.logit_scale = towers.logit_scale  # used only when training CLIP itself (miniature world)
        self.register_buffer("attn_mask", towers.attn_mask, persistent=False)
        self._tokenizer = SimpleTokenizer(context_length=preset.text.context_length)

    @property
    def embed_dim(self) -> int:
        return self.preset.embed_dim

    def tokenize(self, texts: str | list[str]) -> Tensor:
        """CLIP BPE tokens ``[N, context_length]`` (SOT, tokens, EOT, zero padding; truncated keeping EOT)."""
        if isinstance(texts, str):
            texts = [texts]
        return self._tokenizer(list(texts), context_length=self.preset.text.context_length)

    def encode_image(self, images: Tensor) -> Tensor:
        """Unnormalised image embeddings ``[B, D]`` of CLIP-normalised ``images`` ``[B, 3, H, W]``."""
        with compute_region(self, images.device.type):
            return self.visual(images).float()

    def encode_text(self, tokens: Tensor) -> Tensor:
        """Unnormalised text embeddings ``[N, D]``: the projected feature at the EOT (largest) token.

        The attention is causal, so positions after the last EOT of the batch cannot change any EOT
        feature: the sequence is cut there (exactly the same result, and several times faster for
        prompts, which fill about 10 of the 77 positions).
        """
        eot = tokens.argmax(dim=-1)
        length = int(eot.max()) + 1 if tokens.shape[0] else 1
        with compute_region(self, tokens.device.type):
            x = self.token_embedding(tokens[:, :length])
            x = x + self.positional_embedding[:length]
            x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
            x = self.ln_final(x)
            x = x[torch.arange(x.shape[0], device=x.device), eot]
            return (x @ self.text_projection).float()

    def encode_regions(self, images: Tensor, boxes: list[Tensor], chunk_size: int = 256) -> Tensor:
        """Unnormalised region embeddings ``[sum N_i, D]`` (see :func:`regionclip.regions.encode_regions`).

        images: ``[B, 3, H, W]`` CLIP-normalised (padded) batch; boxes: ``list[Tensor[N_i, 4]]`` xyxy pixels.
        """
        with compute_region(self, images.device.type):
            return encode_regions(self.visual, images, boxes, chunk_size=chunk_size).float()

    def similarity(self, image_features: Tensor, text_features: Tensor, temperature: float = 0.01) -> Tensor:
        """Cosine similarity logits ``[N, M]`` divided by ``temperature`` (RegionCLIP's fixed τ = 0.01)."""
        return F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).t() / temperature

"""Region heads of the open-vocabulary detector (paper §3.3; method reference §6.1-6.2).

* :class:`TextEmbeddingClassifier`: cosine similarity of region embeddings with class (text) embeddings
  given at call time, plus a background column, divided by τ = 0.01 (official ``USE_TEXT_EMB_CLASSIFIER``).
* :class:`BoxRegressor`: class-agnostic ``Linear(D, 4)`` on the *unnormalised* region embedding.
* :class:`BoxTransform`: detectron2's ``Box2BoxTransform`` (weights (10, 10, 5, 5), dw/dh clamped at
  log(1000/16)).
* :class:`MaskHead`: the LVIS mask head (``MaskRCNNConvUpsampleHead`` with no convs): ConvTranspose 2x2 s2
  from res5 channels to 256, ReLU, 1x1 conv to one class-agnostic mask logit map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class TextEmbeddingClassifier(nn.Module):
    """Logits ``[R, K+1]`` = ``[cos(x, w_k) for k in 0..K-1, x̂·ŵ_bg] / τ``; background is the LAST column.

    The class embeddings ``[K, D]`` are an argument of every call (the vocabulary is chosen at inference,
    no reload) and are L2-normalised at use, like the region embeddings. The background embedding is a
    fixed zero vector (official: logit exactly 0) unless ``learnable_background``, where it is a trained
    vector normalised like the class embeddings. ``F.normalize`` maps the zero vector to zero, so both
    variants share one code path.
    """

    def __init__(self, embed_dim: int, temperature: float = 0.01, learnable_background: bool = False):
        super().__init__()
        if learnable_background:
            init = torch.randn(embed_dim) * embed_dim**-0.5
        else:
            init = torch.zeros(embed_dim)
        self.background = nn.Parameter(init, requires_grad=learnable_background)
        self.temperature = temperature

    def forward(self, region_embeddings: Tensor, class_embeddings: Tensor) -> Tensor:
        """region_embeddings ``[R, D]`` (unnormalised), class_embeddings ``[K, D]`` -> logits ``[R, K+1]``."""
        x = F.normalize(region_embeddings, dim=-1)
        w = F.normalize(class_embeddings.to(x.dtype), dim=-1)
        bg = F.normalize(self.background.to(x.dtype), dim=0)
        logits = torch.cat([x @ w.t(), (x @ bg)[:, None]], dim=1)
        return logits / self.temperature


class BoxRegressor(nn.Module):
    """Class-agnostic box deltas ``[R, 4]`` from unnormalised region embeddings ``[R, D]``.

    Init as official: weights N(0, 0.001), bias 0.
    """

    def __init__(self, embed_dim: int):
        super().__init__()
        self.linear = nn.Linear(embed_dim, 4)
        nn.init.normal_(self.linear.weight, std=0.001)
        nn.init.zeros_(self.linear.bias)

    def forward(self, region_embeddings: Tensor) -> Tensor:
        return self.linear(region_embeddings)


class BoxTransform:
    """Box <-> delta coding of detectron2's ``Box2BoxTransform`` (centre offsets over width, log scales).

    weights: ``(wx, wy, ww, wh)`` (official (10, 10, 5, 5)); scale_clamp: upper bound of dw, dh before exp.
    """

    def __init__(
        self,
        weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        scale_clamp: float = DEFAULT_SCALE_CLAMP,
    ):
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, boxes: Tensor, targets: Tensor) -> Tensor:
        """Deltas ``[N, 4]`` that turn ``boxes`` ``[N, 4]`` into ``targets`` ``[N, 4]`` (both xyxy)."""
        wx, wy, ww, wh = self.weights
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        cx = boxes[:, 0] + 0.5 * w
        cy = boxes[:, 1] + 0.5 * h
        tw = targets[:, 2] - targets[:, 0]
        th = targets[:, 3] - targets[:, 1]
        tcx = targets[:, 0] + 0.5 * tw
        tcy = targets[:, 1] + 0.5 * th
        return torch.stack(
            [wx * (tcx - cx) / w, wy * (tcy - cy) / h, ww * torch.log(tw / w), wh * torch.log(th / h)], dim=1
        )

    def decode(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Apply ``deltas`` ``[N, 4]`` to ``boxes`` ``[N, 4]`` (xyxy) -> boxes ``[N, 4]`` (xyxy, float)."""
        deltas = deltas.float()
        boxes = boxes.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        cx = boxes[:, 0] + 0.5 * w
        cy = boxes[:, 1] + 0.5 * h
        dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
        dw = (deltas[:, 2] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[:, 3] / wh).clamp(max=self.scale_clamp)
        pcx, pcy = dx * w + cx, dy * h + cy
        pw, ph = torch.exp(dw) * w, torch.exp(dh) * h
        return torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], dim=1)


class MaskHead(nn.Module):
    """Class-agnostic mask logits ``[R, 2h, 2w]`` from res5 RoI features ``[R, C5, h, w]`` (14x14 for RN50).

    ConvTranspose2d(C5, 256, 2, stride 2) -> ReLU -> Conv2d(256, 1, 1); init as detectron2 (MSRA fill for
    the deconvolution, N(0, 0.001) for the predictor).
    """

    def __init__(self, in_channels: int, hidden_channels: int = 256):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, hidden_channels, kernel_size=2, stride=2)
        self.predictor = nn.Conv2d(hidden_channels, 1, kernel_size=1)
        nn.init.kaiming_normal_(self.deconv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.deconv.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, res5: Tensor) -> Tensor:
        return self.predictor(F.relu(self.deconv(res5)))[:, 0]

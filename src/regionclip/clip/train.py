"""Training CLIP itself (the image-text contrastive objective of Radford et al.), used to make the
miniature world's teacher: a tiny CLIP trained on the world's image-caption pairs stands in for OpenAI CLIP.

Symmetric cross-entropy over the batch's image-text similarity matrix scaled by the learnable
``logit_scale`` (clamped at 100, as OpenAI). Negatives from other ranks are not gathered here; the
miniature world trains on one process.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from regionclip.structures import StepOutput


class CLIPTrainingTask(nn.Module):
    """Wraps a :class:`~regionclip.clip.model.CLIP` for contrastive training.

    The image tower trains with ordinary BatchNorm (batch statistics), as OpenAI trained CLIP; RegionCLIP
    freezes BN, and so does every other stage. :meth:`frozen_model` gives the model back with its BN frozen
    at the running statistics. batch: ``(images [B, 3, S, S] CLIP-normalised, tokens [B, L] long)``.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        from regionclip.clip.model import unfreeze_batch_norm

        unfreeze_batch_norm(model.visual)
        self.model = model

    def frozen_model(self) -> nn.Module:
        """The trained CLIP with frozen BatchNorm (running statistics), in eval mode."""
        from regionclip.clip.model import freeze_batch_norm

        freeze_batch_norm(self.model.visual)
        return self.model.eval()

    def forward(self, batch: tuple[Tensor, Tensor]) -> StepOutput:
        device = self.model.logit_scale.device
        images, tokens = batch[0].to(device), batch[1].to(device)
        image_features = F.normalize(self.model.encode_image(images), dim=-1)
        text_features = F.normalize(self.model.encode_text(tokens), dim=-1)
        scale = self.model.logit_scale.exp().clamp(max=100.0)
        logits = scale * image_features @ text_features.t()
        target = torch.arange(images.shape[0], device=device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == target).float().mean().item()
        return StepOutput(
            {"loss_clip": loss}, {"batch_accuracy": accuracy, "logit_scale": float(scale.detach())}
        )

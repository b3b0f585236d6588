"""Teacher pseudo-labels for regions (paper §3.2 "region-text alignment"; method reference §4.2).

The frozen teacher's normalised region embeddings are scored against the normalised concept pool; a softmax
at τ = 0.01 over the *whole* pool gives each region a distribution P. Regions whose top probability exceeds
the threshold (0.1) are kept (all regions when none is); a kept region's pseudo-label is its top-1 concept.
Regions with the same pseudo-label are mutual positives. Everything is local to one rank, as official.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class PseudoLabels:
    """Pseudo-labels of R regions against C concepts, K of them kept.

    keep: ``[R]`` bool, kept regions; labels: ``[K]`` long, top-1 concept of each kept region;
    soft_targets: ``[K, C]`` teacher softmax P of kept regions; positive_mask: ``[K, K]`` bool,
    ``labels[i] == labels[j]``; top_prob: ``[R]`` teacher top-1 probability of every region.
    """

    keep: Tensor
    labels: Tensor
    soft_targets: Tensor
    positive_mask: Tensor
    top_prob: Tensor


@torch.no_grad()
def teacher_probabilities(
    region_embeddings: Tensor, concept_embeddings: Tensor, temperature: float = 0.01
) -> Tensor:
    """softmax(v̂ L̂ᵀ / τ) ``[R, C]`` of region embeddings ``[R, D]`` against concept embeddings ``[C, D]``."""
    v = F.normalize(region_embeddings.float(), dim=-1)
    concepts = F.normalize(concept_embeddings.float(), dim=-1)
    return (v @ concepts.t() / temperature).softmax(dim=-1)


@torch.no_grad()
def pseudo_label(
    region_embeddings: Tensor, concept_embeddings: Tensor, temperature: float = 0.01, threshold: float = 0.1
) -> PseudoLabels:
    """Official pseudo-labelling of teacher ``region_embeddings`` ``[R, D]`` against ``concept_embeddings`` ``[C, D]``."""
    probs = teacher_probabilities(region_embeddings, concept_embeddings, temperature)
    return pseudo_label_from_probabilities(probs, threshold)


@torch.no_grad()
def pseudo_label_from_probabilities(probs: Tensor, threshold: float = 0.1) -> PseudoLabels:
    """Keep / top-1 / positive-mask semantics on a given probability matrix ``probs`` ``[R, C]``."""
    top_prob, top_idx = probs.max(dim=-1)
    keep = top_prob > threshold
    if not bool(keep.any()):
        keep = top_prob > 0  # official fallback: keep every region when none passes the threshold
    labels = top_idx[keep]
    return PseudoLabels(
        keep=keep,
        labels=labels,
        soft_targets=probs[keep],
        positive_mask=labels[:, None] == labels[None, :],
        top_prob=top_prob,
    )

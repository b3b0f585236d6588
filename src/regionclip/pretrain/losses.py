"""The three RegionCLIP pretraining losses (paper §3.2, Eq. 2-4; method reference §5).

Each function returns a one-entry dict ``{"loss_<name>": scalar}`` so the task can merge them into its flat
loss dict. Shapes: K kept regions, C concepts in the pool, B images, D embedding dimension.

* :func:`region_concept_contrastive` (``loss_region_concept``, official ``loss_concept_contrastive``):
  multiple-instance cross-entropy between the kept regions and the pseudo-label concepts *of the regions of
  this rank's batch* (duplicates included; local per rank, never gathered).
* :func:`concept_distillation` (``loss_region_distill``): KL(P ‖ q) from the teacher's distribution over the
  whole concept pool to the student's.
* :func:`image_text_contrastive` (``loss_image_text``, official ``loss_img_txt_level``): CLIP's symmetric
  contrastive loss between global-box image embeddings and caption embeddings, gathered over ranks with
  gradients.

One temperature τ = 0.01 everywhere (official ``CLSS_TEMP``); CLIP's learned ``logit_scale`` is not used.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# Gathers a per-rank tensor [B, ...] into [world * B, ...] in rank order, with gradients flowing back
# (summed over ranks in the backward pass, like ``torch.distributed.nn.functional.all_gather``).
Gather = Callable[[Tensor], Tensor]


def region_concept_contrastive(
    student_regions: Tensor, target_concept_emb: Tensor, positive_mask: Tensor, temperature: float = 0.01
) -> dict[str, Tensor]:
    """Multiple-instance region-concept contrastive loss (official ``MILCrossEntropy``, ``avg_positives=False``).

    student_regions: ``[K, D]`` student embeddings of the kept regions (unnormalised);
    target_concept_emb: ``[K, D]`` concept embedding of each kept region's pseudo-label (unnormalised, the
    raw concept-bank rows, duplicates included); positive_mask: ``[K, K]`` bool, ``M_ij = (y_i == y_j)``.

    With ``S = v̂ Êᵀ / τ`` and ``p_ij = softmax_j(S_ij)``: ``ℓ_i = -log Σ_j M_ij p_ij``; the loss is the mean of
    ``ℓ_i``. It is computed as ``logsumexp_j S_ij - logsumexp_{j: M_ij} S_ij``, which equals the official
    max-subtracted ``-log(Σ M·softmax)`` wherever that is finite and stays finite where the summed positive
    probability underflows to 0 in float32 (the official value is then +inf). K = 0 gives 0 (attached to the
    graph, so every rank still back-propagates through the same parameters).
    """
    if student_regions.shape[0] == 0:
        return {"loss_region_concept": student_regions.sum() * 0.0}
    v = F.normalize(student_regions.float(), dim=-1)
    e = F.normalize(target_concept_emb.float(), dim=-1)
    logits = v @ e.t() / temperature  # [K, K]
    positive_logits = logits.masked_fill(~positive_mask.bool(), float("-inf"))
    per_region = torch.logsumexp(logits, dim=1) - torch.logsumexp(positive_logits, dim=1)
    return {"loss_region_concept": per_region.mean()}


def concept_distillation(
    student_regions: Tensor, concept_pool_emb: Tensor, teacher_probs: Tensor, temperature: float = 0.01
) -> dict[str, Tensor]:
    """KL distillation of the teacher's concept distribution into the student (official ``loss_region_distill``).

    student_regions: ``[K, D]`` student embeddings of the kept regions; concept_pool_emb: ``[C, D]`` the whole
    student concept pool (unnormalised); teacher_probs: ``[K, C]`` the teacher's softmax P (rows sum to 1).

    ``q = softmax(v̂ L̂ᵀ / τ)``; loss = ``Σ_ic P_ic (log P_ic - log q_ic) / K`` (``F.kl_div(log q, P,
    reduction="batchmean")``). As official, ``log q`` is ``softmax(...).log()``, not ``log_softmax``: a
    probability that underflows to 0 in float32 gives ``log q = -inf``. Where ``P_ic = 0`` the term is 0
    (``F.kl_div`` would give ``0 * -inf = NaN`` there); ``q`` is clamped to the smallest normal float before
    the log so that the gradient stays finite (this changes the value only where the official one is inf/NaN).
    """
    if student_regions.shape[0] == 0:
        return {"loss_region_distill": student_regions.sum() * 0.0}
    v = F.normalize(student_regions.float(), dim=-1)
    pool = F.normalize(concept_pool_emb.float(), dim=-1)
    q = (v @ pool.t() / temperature).softmax(dim=-1)  # [K, C]
    log_q = q.clamp_min(torch.finfo(q.dtype).tiny).log()
    p = teacher_probs.float()
    terms = torch.where(p > 0, torch.xlogy(p, p) - p * log_q, torch.zeros_like(log_q))
    return {"loss_region_distill": terms.sum() / student_regions.shape[0]}


def _truncate_to_smallest_batch(x: Tensor, gather: Gather) -> Tensor:
    """Truncate ``x`` ``[B, ...]`` to the smallest per-rank batch (official, before gathering)."""
    sizes = gather(torch.tensor([float(x.shape[0])], device=x.device))  # [world]
    return x[: int(sizes.min().item())]


def image_text_contrastive(
    image_emb: Tensor, text_emb: Tensor, temperature: float = 0.01, gather: Gather | None = None
) -> dict[str, Tensor]:
    """Symmetric image-text contrastive loss on the global batch (official ``loss_img_txt_level``).

    image_emb: ``[B, D]`` this rank's global-box image embeddings; text_emb: ``[B, D]`` its caption
    embeddings (row b is image b's caption); gather: all-gather with gradients (``None``: single process).

    Both are L2-normalised, truncated to the smallest per-rank batch and gathered to ``G, T`` ``[N, D]`` (rank
    order); ``Z = G Tᵀ / τ``; loss = ``½ [CE(Z, arange) + CE(Zᵀ, arange)]``. As official, every rank computes
    the loss on the whole global matrix, so the value is the same on every rank.

    Gradients under DDP: the gather's backward sums the gradient of every rank's (identical) loss into each
    rank's own rows, so rank r's rows receive ``world_size · ∂L/∂g_r``; DDP then averages over ranks, which
    leaves exactly ``∂L/∂θ`` of the single-process loss on the same global batch.
    """
    g = F.normalize(image_emb.float(), dim=-1)
    t = F.normalize(text_emb.float(), dim=-1)
    if gather is not None:
        g = _truncate_to_smallest_batch(g, gather)
        t = t[: g.shape[0]]
        g = gather(g)
        t = gather(t)
    if g.shape[0] == 0:
        return {"loss_image_text": image_emb.sum() * 0.0}
    logits = g @ t.t() / temperature  # [N, N]
    target = torch.arange(logits.shape[0], device=logits.device)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    return {"loss_image_text": loss}

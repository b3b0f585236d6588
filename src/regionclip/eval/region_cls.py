"""Region classification on ground-truth boxes (paper Fig. 1b; method reference §7).

Each GT region is classified by cosine similarity between its embedding and the class embeddings of the
whole vocabulary; top-1 accuracy is reported overall and for the regions of base and of novel classes.
Accuracies are percentages (0-100).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from regionclip.data.coco import collate_detection
from regionclip.data.ovd import OvdSplit


def region_accuracy(
    region_embeddings: Tensor,
    labels: Tensor,
    class_embeddings: Tensor,
    class_names: Sequence[str] | None = None,
    split: OvdSplit | None = None,
    topk: Sequence[int] = (1,),
) -> dict[str, float]:
    """Top-k accuracy of ``argmax_k cos(region, class_k)``.

    region_embeddings: ``[R, D]``; labels: ``[R]`` indices into the classes; class_embeddings: ``[K, D]``
    (normalised here). With ``split`` (and ``class_names``, the name of each class index) also
    ``acc_top1_base`` / ``acc_top1_novel`` over the regions whose GT class is base / novel (NaN if none).
    """
    if region_embeddings.shape[0] != labels.shape[0]:
        raise ValueError(
            f"region_accuracy: {region_embeddings.shape[0]} regions but {labels.shape[0]} labels"
        )
    if split is not None and class_names is None:
        raise ValueError("region_accuracy: a split needs class_names (the name of each class index)")
    labels = labels.long().cpu()
    logits = F.normalize(region_embeddings.float(), dim=-1) @ F.normalize(class_embeddings.float(), dim=-1).T
    k_max = min(max(topk), class_embeddings.shape[0])
    top = (
        logits.topk(k_max, dim=-1).indices.cpu() if len(labels) else torch.zeros((0, k_max), dtype=torch.long)
    )
    hits = {k: (top[:, : min(k, k_max)] == labels[:, None]).any(dim=1) for k in topk}

    def acc(mask: Tensor, k: int) -> float:
        n = int(mask.sum())
        return 100.0 * float(hits[k][mask].sum()) / n if n else math.nan

    everything = torch.ones(len(labels), dtype=torch.bool)
    metrics: dict[str, float] = {"num_regions": float(len(labels))}
    for k in topk:
        metrics[f"acc_top{k}"] = acc(everything, k)
    if split is not None:
        for part in ("base", "novel"):
            names = set(split.base if part == "base" else split.novel)
            member = torch.tensor([n in names for n in class_names], dtype=torch.bool)
            mask = member[labels] if len(labels) else torch.zeros(0, dtype=torch.bool)
            metrics[f"num_regions_{part}"] = float(mask.sum())
            for k in topk:
                metrics[f"acc_top{k}_{part}"] = acc(mask, k)
    return metrics


@torch.no_grad()
def encode_gt_regions(
    encoder: nn.Module,
    dataset: torch.utils.data.Dataset,
    batch_size: int = 2,
    device: str | torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Run ``encoder(images [B,3,H,W], boxes list[Tensor[N_i,4]]) -> [sum N_i, D]`` (a ``RegionEncoder``) over
    the GT boxes of every sample of ``dataset`` (``DetectionSample`` items). Returns embeddings ``[R, D]``
    (on the CPU, unnormalised) and labels ``[R]``, in dataset order."""
    if device is None:
        device = next(encoder.parameters()).device
    embeddings, labels = [], []
    for start in range(0, len(dataset), batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        samples = [s for s in samples if len(s.boxes)]
        if not samples:
            continue
        batch, targets, _ = collate_detection(samples)
        boxes = [t["boxes"].to(device) for t in targets]
        embeddings.append(encoder(batch.tensor.to(device), boxes).float().cpu())
        labels.append(torch.cat([t["labels"] for t in targets]))
    if not embeddings:
        dim = int(getattr(encoder, "embed_dim", 0))
        return torch.zeros((0, dim)), torch.zeros(0, dtype=torch.long)
    return torch.cat(embeddings), torch.cat(labels)

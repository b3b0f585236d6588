"""Repeat-factor sampling for long-tailed sets such as LVIS (Gupta et al. 2019; method reference §6.4).

With ``f_c`` the fraction of training images that contain category ``c``, the category repeat factor is
``r_c = max(1, sqrt(t / f_c))`` (``t = 0.001`` for LVIS) and an image's factor is the largest ``r_c`` over its
categories. Each epoch, an image is repeated ``floor(r_i)`` times plus once more with probability
``r_i - floor(r_i)`` (stochastic rounding), deterministically for a given seed and epoch.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import torch


def repeat_factors(image_categories: Sequence[Iterable[int]], threshold: float = 0.001) -> list[float]:
    """Per-image repeat factors from each image's categories (e.g. ``CocoDetection.image_label_sets()``).

    An image without categories gets 1.0.
    """
    cat_sets = [set(cats) for cats in image_categories]
    n = len(cat_sets)
    if n == 0:
        return []
    counts = Counter(c for cats in cat_sets for c in cats)
    cat_factor = {c: max(1.0, math.sqrt(threshold / (k / n))) for c, k in counts.items()}
    return [max((cat_factor[c] for c in cats), default=1.0) for cats in cat_sets]


def repeat_factor_indices(
    factors: Sequence[float], seed: int, epoch: int = 0, shuffle: bool = True
) -> list[int]:
    """The dataset indices of one epoch: index ``i`` appears ``floor(r_i)`` or ``floor(r_i) + 1`` times.

    Deterministic for ``(seed, epoch)``; shuffled unless ``shuffle=False`` (then in index order).
    """
    if not factors:
        return []
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    r = torch.tensor(list(factors), dtype=torch.float64)
    base = r.floor()
    reps = (base + (torch.rand(len(r), generator=gen, dtype=torch.float64) < r - base).double()).long()
    indices = torch.repeat_interleave(torch.arange(len(r)), reps)
    if shuffle:
        indices = indices[torch.randperm(len(indices), generator=gen)]
    return indices.tolist()


def repeat_factor_epochs(factors: Sequence[float], seed: int) -> Callable[[int], list[int]]:
    """``epoch -> indices`` for ``engine.data.map_style_batches(..., epoch_indices=...)``."""
    factors = list(factors)
    return lambda epoch: repeat_factor_indices(factors, seed, epoch)

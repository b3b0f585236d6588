"""Deterministic per-step batches for map-style datasets, so that a resumed run sees exactly the batches
the interrupted run would have seen.

Step ``s`` of the job takes global positions ``[s*G, (s+1)*G)`` (``G`` = batch size x world size) of the
concatenation of per-epoch orders (a seeded permutation per epoch, or ``epoch_indices(epoch)``, e.g. LVIS
repeat-factor sampling); rank ``r`` takes its slice of it. Each sample is loaded with Python's, NumPy's and
torch's RNGs seeded from (seed, step, position), so random augmentation is reproducible too.

Aspect-ratio grouping (detectron2's ``AspectRatioGroupedDataset``, on by default in the official detector
configs): with ``groups`` (one id per sample, e.g. 0 landscape / 1 portrait), the per-epoch orders are read as
one stream; each sample waits in its group's bucket, and a step is formed as soon as a bucket holds a global
batch, so every batch (and every rank's slice of it) has samples of one group only. Samples left in a bucket
at the end of an epoch carry over to the next, as in detectron2's endless stream. The stream is replayed from
step 0 on resume (index arithmetic only), so a resumed run again sees exactly the same batches.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from regionclip.engine.distributed import DistInfo
from regionclip.errors import DataError


class _SeededSamples(Dataset):
    """Wraps a dataset: item ``(index, seed)`` seeds the RNGs and returns ``dataset[index]``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)
        return self.dataset[index]


def _sample_seed(seed: int, step: int, position: int) -> int:
    return (seed * 1_000_003 + step * 10_007 + position) % (2**62)


def map_style_batches(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    dist: DistInfo,
    collate: Callable[[list], Any],
    num_workers: int = 0,
    shuffle: bool = True,
    epoch_indices: Callable[[int], Sequence[int]] | None = None,
    groups: Sequence[int] | None = None,
) -> Callable[[int], Iterator[Any]]:
    """A factory ``make_batches(start_step) -> Iterator[batch]`` of this rank's batches (see module doc).

    groups: per-sample group ids for aspect-ratio grouping (None: plain consecutive batches)."""
    if groups is not None and len(groups) != len(dataset):
        raise DataError(f"aspect-ratio groups: {len(groups)} ids for a dataset of {len(dataset)} samples")
    global_batch = batch_size * dist.world_size

    def order(epoch: int) -> Sequence[int]:
        if epoch_indices is not None:
            return epoch_indices(epoch)
        if not shuffle:
            return range(len(dataset))
        gen = torch.Generator().manual_seed(seed + epoch)
        return torch.randperm(len(dataset), generator=gen).tolist()

    def batch_items(start_step: int) -> Iterator[list[tuple[int, int]]]:
        epoch, first_step_of_epoch, step = 0, 0, start_step
        while True:
            indices = order(epoch)
            steps_in_epoch = len(indices) // global_batch
            if steps_in_epoch == 0:
                raise DataError(
                    f"dataset of {len(indices)} samples is smaller than the global batch {global_batch} "
                    f"(batch_size {batch_size} x {dist.world_size} ranks)"
                )
            while step < first_step_of_epoch + steps_in_epoch:
                local = step - first_step_of_epoch
                start = local * global_batch + dist.rank * batch_size
                yield [
                    (int(indices[start + j]), _sample_seed(seed, step, dist.rank * batch_size + j))
                    for j in range(batch_size)
                ]
                step += 1
            first_step_of_epoch += steps_in_epoch
            epoch += 1

    def grouped_items(start_step: int) -> Iterator[list[tuple[int, int]]]:
        buckets: dict[int, list[int]] = {}
        epoch, step = 0, 0
        while True:
            indices = order(epoch)
            if len(indices) < global_batch:
                raise DataError(
                    f"dataset of {len(indices)} samples is smaller than the global batch {global_batch} "
                    f"(batch_size {batch_size} x {dist.world_size} ranks)"
                )
            formed = 0
            for index in indices:
                bucket = buckets.setdefault(int(groups[int(index)]), [])
                bucket.append(int(index))
                if len(bucket) < global_batch:
                    continue
                batch, bucket[:] = bucket[:global_batch], bucket[global_batch:]
                formed += 1
                if step >= start_step:
                    start = dist.rank * batch_size
                    yield [
                        (batch[start + j], _sample_seed(seed, step, dist.rank * batch_size + j))
                        for j in range(batch_size)
                    ]
                step += 1
            if formed == 0 and epoch > 0:
                raise DataError("aspect-ratio grouping formed no batch in a whole epoch")
            epoch += 1

    def make_batches(start_step: int) -> Iterator[Any]:
        sampler = batch_items(start_step) if groups is None else grouped_items(start_step)
        loader = DataLoader(
            _SeededSamples(dataset),
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=num_workers,
            # its own generator: creating the iterator must not draw from the global RNG, which the
            # engine restores on resume (a draw here would shift every later random number)
            generator=torch.Generator().manual_seed(seed),
        )
        return iter(loader)

    return make_batches

"""The one inference loop over a dataset, shared by ``eval``, ``eval-rpn``, ``pseudo-label`` and ``detect``:
:func:`readable_batches` loads the given indices ``batch_size`` at a time (optionally in DataLoader workers)
and applies the skip-unreadable rule in one place: an item whose ``load`` raises a
:class:`~regionclip.errors.DataError` (missing, undecodable, truncated or oversized image) is left out of
its batch and reported as an :class:`Unreadable` entry; the other items of the batch go on."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from regionclip.errors import DataError


@dataclass(frozen=True)
class Unreadable:
    """An item that could not be loaded: its index and the one-line reason (names the file)."""

    index: int  # index passed to ``load``
    reason: str  # the error message


class _Items(torch.utils.data.Dataset):
    """``load(indices[k])``, or an :class:`Unreadable` when it raises one of ``errors``."""

    def __init__(self, load: Callable[[int], Any], indices: Sequence[int], errors: tuple[type, ...]):
        self.load, self.indices, self.errors = load, list(indices), errors

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Any:
        index = self.indices[k]
        try:
            return self.load(index)
        except self.errors as err:
            return Unreadable(index, str(err))


def _as_list(items: list) -> list:
    return list(items)


def readable_batches(
    load: Callable[[int], Any],
    indices: Sequence[int],
    batch_size: int = 1,
    num_workers: int = 0,
    errors: tuple[type, ...] = (DataError,),
) -> Iterator[tuple[list[tuple[int, Any]], list[Unreadable]]]:
    """Batches of ``indices`` in order: ``([(index, load(index)) of the readable items], [Unreadable])``.

    load: index -> item (e.g. ``CocoDetection.load``; picklable when ``num_workers > 0``); batch_size:
    indices per batch (>= 1); errors: the exceptions that mark an item unreadable (others propagate).
    """
    items = _Items(load, indices, errors)
    step = max(1, batch_size)
    loader = torch.utils.data.DataLoader(
        items, batch_size=step, collate_fn=_as_list, num_workers=num_workers, shuffle=False
    )
    start = 0
    for batch in loader:
        chunk = items.indices[start : start + len(batch)]
        start += len(batch)
        readable = [
            (i, item) for i, item in zip(chunk, batch, strict=True) if not isinstance(item, Unreadable)
        ]
        yield readable, [item for item in batch if isinstance(item, Unreadable)]

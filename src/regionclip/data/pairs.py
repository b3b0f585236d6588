"""Image-caption pairs for RegionCLIP pretraining (method reference §5.3-5.4, §11 item 9).

Two sources, one sample type (:class:`CaptionedImage`) and one batch type (:class:`PairBatch`):

* :class:`CocoCaptions`: a COCO captions JSON (``images`` + ``annotations`` with ``caption``) and an image
  folder; map-style (use it with :func:`regionclip.engine.data.map_style_batches`, which seeds Python's RNG
  per sample, so the caption drawn for each access is reproducible).
* :class:`WebDatasetPairs`: webdataset tar shards as img2dataset writes them (``KEY.jpg``/``png``/``webp`` and
  ``KEY.txt`` and/or ``KEY.json`` with ``caption`` or ``captions``), streamed. Shards are split between
  ranks (shard i goes to rank ``i % world_size``; re-ordered per epoch with a seeded permutation); the rank's
  stream is cut into consecutive batches of ``batch_size`` samples, and batch k is decoded by DataLoader
  worker ``k % num_workers`` (every worker reads the rank's tar headers, only its own batches' images are
  decoded). The batch sequence is therefore the same for any number of workers, and a run resumed at step s
  skips exactly ``s * batch_size`` samples (tar headers only, no decoding): exact resume of the data position.

Official augmentation (§5.4): shorter side 800, longer side at most 1333, PIL **bicubic**, random horizontal
flip (sizes configurable; the rounding is detectron2's ``int(x + 0.5)``, torchvision's ``Resize`` floors:
at most one pixel of difference). When several captions are available (the first ``max_captions``, official
5), one is drawn uniformly at random.

Corrupt or unusable samples (undecodable image bytes, no image, missing or empty caption) are skipped,
counted by reason in ``dataset.skipped`` and reported in the batch that would have held them
(``PairBatch.skipped``, so counts from DataLoader workers reach the training process); they are never fatal.
A webdataset batch whose samples are all unusable is filled with the next usable sample of the stream.
"""

from __future__ import annotations

import glob
import logging
import random
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from regionclip.data.captions import caption_member, parse_sample_captions, split_sample_key
from regionclip.data.coco import pil_to_tensor, read_json
from regionclip.data.images import ImageError, open_image
from regionclip.data.transforms import Compose, RandomHorizontalFlip, ResizeShortestEdge
from regionclip.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_NO_BOXES = torch.zeros(0, 4)


@dataclass
class CaptionedImage:
    """One pair: ``image`` ``[3, H, W]`` float RGB in [0, 1] (after the transform), its ``caption``, a ``key``;
    ``skipped``: ``"key: reason"`` of unusable samples passed over to reach this one (map-style sets)."""

    image: Tensor
    caption: str
    key: str
    skipped: list[str] = field(default_factory=list)


@dataclass
class PairBatch:
    """A batch of pairs; ``skipped`` lists ``"key: reason"`` of the unusable samples dropped from it."""

    images: list[Tensor]
    captions: list[str]
    keys: list[str]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def collate_pairs(samples: Sequence[CaptionedImage]) -> PairBatch:
    """Collate :class:`CaptionedImage` samples (images keep their own sizes; padding happens in the model)."""
    return PairBatch(
        [s.image for s in samples],
        [s.caption for s in samples],
        [s.key for s in samples],
        [entry for s in samples for entry in s.skipped],
    )


def pretrain_transform(short_size: int = 800, max_size: int = 1333, flip_p: float = 0.5) -> Compose:
    """The official pretraining augmentation: resize (short ``short_size``, max ``max_size``, bicubic) + flip."""
    return Compose([ResizeShortestEdge((short_size,), max_size, "bicubic"), RandomHorizontalFlip(flip_p)])


class UnusableSample(Exception):
    """A sample that cannot be used (the message says why); skipped and counted, never fatal."""


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes to an RGB PIL image, or raise :class:`UnusableSample`."""
    try:
        return open_image(bytes(data), name="image")
    except ImageError as err:
        raise UnusableSample(f"undecodable image ({err.kind})") from None


def pick_caption(captions: Sequence[Any], max_captions: int, rng: random.Random) -> str:
    """One of the first ``max_captions`` non-empty string captions, uniformly; :class:`UnusableSample` if none."""
    usable = [c.strip() for c in list(captions)[:max_captions] if isinstance(c, str) and c.strip()]
    if not usable:
        raise UnusableSample("missing or empty caption")
    return usable[rng.randrange(len(usable))] if len(usable) > 1 else usable[0]


def make_pair(
    image: Image.Image, captions: Sequence[Any], key: str, transform: Callable | None, max_captions: int, rng
) -> CaptionedImage:
    caption = pick_caption(captions, max_captions, rng)
    if transform is not None:
        image, _ = transform(image, _NO_BOXES, rng)
    return CaptionedImage(pil_to_tensor(image), caption, key)


# --------------------------------------------------------------------------------------------------------
# COCO captions (map-style)


class CocoCaptions(torch.utils.data.Dataset):
    """COCO captions: ``captions_json`` (``images`` with ``id``/``file_name``, ``annotations`` with
    ``image_id``/``caption``) and ``image_dir``. Images without captions are left out.

    ``dataset[i]`` draws one caption with Python's ``random`` (seeded per sample by the engine); an image that
    cannot be decoded is skipped (the next usable image is returned), counted in ``skipped`` and logged.
    """

    def __init__(
        self,
        captions_json: str | Path,
        image_dir: str | Path,
        transform: Callable | None = None,
        max_captions: int = 5,
    ):
        data = read_json(captions_json)
        source = str(captions_json)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DataError(f"{source}: expected a COCO captions JSON with an 'images' list")
        if not isinstance(data.get("annotations"), list):
            raise DataError(f"{source}: expected an 'annotations' list with 'image_id' and 'caption'")
        captions: dict[Any, list[str]] = {}
        for i, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict) or "image_id" not in ann or not isinstance(ann.get("caption"), str):
                raise DataError(f"{source}: annotations[{i}] needs 'image_id' and a string 'caption'")
            if ann["caption"].strip():  # empty captions are left out
                captions.setdefault(ann["image_id"], []).append(ann["caption"])
        self.items: list[tuple[str, list[str]]] = []
        for i, img in enumerate(data["images"]):
            if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
                raise DataError(f"{source}: images[{i}] needs 'id' and a string 'file_name'")
            if img["id"] in captions:
                self.items.append((img["file_name"], captions[img["id"]]))
        if not self.items:
            raise DataError(f"{source}: no image has a non-empty caption")
        self.image_dir = Path(image_dir)
        self.transform = transform
        self.max_captions = max_captions
        self.skipped: Counter[str] = Counter()  # reason -> count, in this process

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> CaptionedImage:
        passed_over: list[str] = []
        for offset in range(len(self.items)):
            file_name, captions = self.items[(index + offset) % len(self.items)]
            try:
                path = self.image_dir / file_name
                try:
                    data = path.read_bytes()
                except OSError:
                    raise UnusableSample("image file not readable") from None
                image = decode_image(data)
                pair = make_pair(image, captions, file_name, self.transform, self.max_captions, random)
                pair.skipped = passed_over
                return pair
            except UnusableSample as err:
                self.skipped[str(err)] += 1
                passed_over.append(f"{file_name}: {err}")
                log.warning("skipping %s: %s", file_name, err)
        raise DataError(f"none of the {len(self.items)} images under {self.image_dir} could be read")


# --------------------------------------------------------------------------------------------------------
# webdataset shards (streaming)


def expand_shards(patterns: Sequence[str]) -> list[str]:
    """Shard paths from paths, globs and brace ranges (``data/{00000..00099}.tar``), in the given order."""
    import braceexpand

    paths: list[str] = []
    for pattern in patterns:
        for item in braceexpand.braceexpand(pattern):
            matches = sorted(glob.glob(item)) if any(ch in item for ch in "*?[") else [item]
            paths.extend(matches)
    if not paths:
        raise DataError(f"no webdataset shards match {list(patterns)}")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise DataError(f"webdataset shard not found: {missing[0]} ({len(missing)} missing of {len(paths)})")
    return paths


@dataclass
class RawSample:
    """One sample of a shard: ``key``, ``members`` ext -> tar member, ``shard`` path."""

    key: str
    members: dict[str, tarfile.TarInfo]
    shard: str


def iter_shard(path: str) -> Iterator[tuple[RawSample, tarfile.TarFile]]:
    """The samples of one tar shard in file order (headers only; data is read on demand)."""
    try:
        tar = tarfile.open(path, "r")  # noqa: SIM115 - closed by the `with tar` below
    except (tarfile.TarError, OSError) as err:
        log.warning("skipping unreadable shard %s: %s", path, err)
        return
    with tar:
        current: RawSample | None = None
        try:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = split_sample_key(member.name)
                if current is not None and key != current.key:
                    yield current, tar
                    current = None
                if current is None:
                    current = RawSample(key, {}, path)
                current.members[ext] = member
        except (tarfile.TarError, OSError) as err:  # truncated shard: keep what was read
            log.warning("shard %s is truncated or corrupt after %s: %s", path, current and current.key, err)
        if current is not None:
            yield current, tar


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)
    if f is None:
        raise UnusableSample(f"member {member.name} is not a file")
    try:
        return f.read()
    except (tarfile.TarError, OSError):
        raise UnusableSample(f"member {member.name} could not be read") from None


def sample_captions(tar: tarfile.TarFile, sample: RawSample) -> list[str]:
    """Captions of a sample by :func:`~regionclip.data.captions.parse_sample_captions` (``json``
    ``captions``/``caption``, else ``txt``); :class:`UnusableSample` when there is none."""
    data = {}
    for kind in ("json", "txt"):
        ext = caption_member(sample.members, kind)
        data[kind] = _read_member(tar, sample.members[ext]) if ext is not None else None
    captions = parse_sample_captions(data["json"], data["txt"])
    if not captions:
        raise UnusableSample("no usable caption")
    return captions


def _sample_rng(seed: int, position: int) -> random.Random:
    return random.Random(seed * 1_000_003 + position)


class WebDatasetPairs(IterableDataset):
    """This rank's infinite stream of :class:`PairBatch` from webdataset shards (see the module doc).

    shards: shard paths (see :func:`expand_shards`); batch_size: samples per batch (per rank); rank /
    world_size: this process's place; start_batch: batches of this rank already consumed (resume);
    seed: seeds the per-epoch shard order and each sample's caption choice and flip (by stream position).
    Use with ``DataLoader(dataset, batch_size=None, num_workers=N)``.
    """

    def __init__(
        self,
        shards: Sequence[str],
        batch_size: int,
        transform: Callable | None = None,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        seed: int = 0,
        max_captions: int = 5,
    ):
        if len(shards) < world_size:
            raise DataError(
                f"{len(shards)} webdataset shards cannot be split between {world_size} ranks; "
                "give at least one shard per rank"
            )
        self.shards = list(shards)
        self.batch_size = batch_size
        self.transform = transform
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch
        self.seed = seed
        self.max_captions = max_captions
        self.skipped: Counter[str] = Counter()  # reason -> count, in this process

    def rank_shards(self, epoch: int) -> list[str]:
        """This rank's shards in epoch ``epoch`` (seeded permutation of all shards, then every world_size-th)."""
        gen = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.shards), generator=gen).tolist()
        return [self.shards[i] for i in order[self.rank :: self.world_size]]

    def stream(self) -> Iterator[tuple[int, RawSample, tarfile.TarFile]]:
        """``(position, sample, tar)`` of this rank's samples over endless epochs."""
        position = 0
        epoch = 0
        while True:
            produced = 0
            for shard in self.rank_shards(epoch):
                for sample, tar in iter_shard(shard):
                    yield position, sample, tar
                    position += 1
                    produced += 1
            if produced == 0:
                shards = ", ".join(self.rank_shards(epoch)[:3])
                raise DataError(
                    f"rank {self.rank}: its webdataset shards hold no readable samples ({shards})"
                )
            epoch += 1

    def decode(self, position: int, sample: RawSample, tar: tarfile.TarFile) -> CaptionedImage:
        """Decode one raw sample, or raise :class:`UnusableSample`."""
        ext = next((e for e in IMAGE_EXTS if e in sample.members), None)
        if ext is None:
            raise UnusableSample("no image")
        captions = sample_captions(tar, sample)
        image = decode_image(_read_member(tar, sample.members[ext]))
        rng = _sample_rng(self.seed, position)
        return make_pair(image, captions, sample.key, self.transform, self.max_captions, rng)

    def first_usable_after(self, start: int) -> CaptionedImage:
        """The first usable sample at stream position >= ``start`` (fills a batch with no usable sample)."""
        seen: set[tuple[str, str]] = set()
        last = ""
        for position, sample, tar in self.stream():
            if position >= start:
                if (sample.shard, sample.key) in seen:  # a whole epoch and nothing usable: never loop forever
                    raise DataError(
                        f"no usable sample in the {len(self.shards)} webdataset shards of rank {self.rank} "
                        f"(e.g. {self.shards[0]}): every sample is skipped ({last})"
                    )
                seen.add((sample.shard, sample.key))
                try:
                    return self.decode(position, sample, tar)
                except UnusableSample as err:
                    last = f"{sample.shard}:{sample.key}: {err}"
                    continue  # counted by the worker that owns that batch
        raise AssertionError("unreachable: the stream is endless")

    def __iter__(self) -> Iterator[PairBatch]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        b = self.batch_size
        window: list[CaptionedImage] = []
        skipped: list[str] = []
        for position, sample, tar in self.stream():
            index = position // b
            if index < self.start_batch or index % workers != worker:
                continue  # another worker's batch, or already consumed: tar header only, nothing decoded
            try:
                window.append(self.decode(position, sample, tar))
            except UnusableSample as err:
                self.skipped[str(err)] += 1
                skipped.append(f"{sample.shard}:{sample.key}: {err}")
                log.warning("skipping sample %s in %s: %s", sample.key, sample.shard, err)
            if position % b == b - 1:
                if not window:
                    window = [self.first_usable_after(position + 1)]
                batch = collate_pairs(window)
                batch.skipped = skipped
                yield batch
                window, skipped = [], []


def webdataset_batches(
    dataset: WebDatasetPairs, num_workers: int = 0
) -> Callable[[int], Iterator[PairBatch]]:
    """A factory ``make_batches(start_step) -> Iterator[PairBatch]`` (the engine's contract) for ``dataset``."""

    def make_batches(start_step: int) -> Iterator[PairBatch]:
        dataset.start_batch = start_step
        # an own generator: creating the iterator must not draw from torch's global RNG, which the engine
        # restores on resume (a draw here would shift every later random number of a resumed run)
        loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, generator=torch.Generator())
        return iter(loader)

    return make_batches

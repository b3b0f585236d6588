"""Tests of the image-caption datasets: webdataset shards (rank/worker split, exact resume, corrupt samples)
and COCO captions."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from regionclip.data.pairs import (
    CocoCaptions,
    WebDatasetPairs,
    expand_shards,
    pick_caption,
    pretrain_transform,
    webdataset_batches,
)
from regionclip.errors import DataError


def _jpeg(seed: int, size=(24, 32)) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, size=(*size, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def write_shard(path: Path, samples: list[dict[str, bytes]]) -> Path:
    """samples: each a mapping ext -> bytes, with a '__key__'."""
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            key = sample["__key__"].decode()
            for ext, data in sample.items():
                if ext == "__key__":
                    continue
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def good(key: str, seed: int, caption: str | None = None) -> dict[str, bytes]:
    return {"__key__": key.encode(), "jpg": _jpeg(seed), "txt": (caption or f"caption {key}").encode()}


def make_shards(tmp_path: Path, n_shards: int = 2, per_shard: int = 5) -> list[str]:
    paths = []
    for s in range(n_shards):
        samples = [good(f"{s:02d}{i:03d}", s * 100 + i) for i in range(per_shard)]
        paths.append(str(write_shard(tmp_path / f"shard-{s:05d}.tar", samples)))
    return paths


def collect(dataset, n: int, workers: int = 0, start: int = 0):
    it = webdataset_batches(dataset, num_workers=workers)(start)
    return [next(it) for _ in range(n)]


def test_stream_batches_cover_the_rank_shards_in_order(tmp_path):
    shards = make_shards(tmp_path)
    ds = WebDatasetPairs(shards, batch_size=2, transform=None, seed=0)
    batches = collect(ds, 5)
    keys = [k for b in batches for k in b.keys]
    assert sorted(keys) == sorted(
        f"{s:02d}{i:03d}" for s in range(2) for i in range(5)
    )  # one epoch, all seen
    assert all(len(b) == 2 for b in batches)
    assert all(
        b.images[0].shape == (3, 24, 32) and 0 <= b.images[0].min() <= b.images[0].max() <= 1 for b in batches
    )
    assert batches[0].captions[0] == f"caption {batches[0].keys[0]}"


def test_resume_skips_exactly_the_consumed_batches(tmp_path):
    shards = make_shards(tmp_path, per_shard=3)
    transform = pretrain_transform(short_size=16, max_size=40, flip_p=0.5)
    full = collect(WebDatasetPairs(shards, 2, transform, seed=5), 6)  # crosses an epoch boundary
    resumed = collect(WebDatasetPairs(shards, 2, transform, seed=5), 3, start=3)
    for a, b in zip(full[3:], resumed, strict=True):
        assert a.keys == b.keys and a.captions == b.captions
        assert all(torch.equal(x, y) for x, y in zip(a.images, b.images, strict=True))  # same flips


def test_workers_give_the_same_batches(tmp_path):
    shards = make_shards(tmp_path, per_shard=4)
    ref = collect(WebDatasetPairs(shards, 2, None, seed=1), 4)
    two = collect(WebDatasetPairs(shards, 2, None, seed=1), 4, workers=2)
    assert [b.keys for b in ref] == [b.keys for b in two]


def test_ranks_read_disjoint_shards(tmp_path):
    shards = make_shards(tmp_path)
    r0 = collect(WebDatasetPairs(shards, 5, None, rank=0, world_size=2), 1)[0]
    r1 = collect(WebDatasetPairs(shards, 5, None, rank=1, world_size=2), 1)[0]
    assert {k[:2] for k in r0.keys} != {k[:2] for k in r1.keys}
    assert not set(r0.keys) & set(r1.keys)
    with pytest.raises(DataError, match="at least one shard per rank"):
        WebDatasetPairs(shards, 2, None, rank=0, world_size=3)


def test_corrupt_samples_are_skipped_counted_and_reported(tmp_path):
    samples = [
        good("a000", 1),
        {"__key__": b"a001", "jpg": b"\xff\xd8 not a jpeg", "txt": b"broken image"},
        {"__key__": b"a002", "jpg": _jpeg(2)},  # no caption
        good("a003", 3),
        {"__key__": b"a004", "json": json.dumps({"captions": ["x", "y"]}).encode()},  # no image
        {"__key__": b"a005", "png": _jpeg(5), "json": json.dumps({"caption": "a png"}).encode()},
    ]
    ds = WebDatasetPairs([str(write_shard(tmp_path / "s.tar", samples))], 3, None)
    b0, b1 = collect(ds, 2)
    assert b0.keys == ["a000"] and b1.keys == ["a003", "a005"]
    assert len(b0.skipped) == 2 and "a001" in b0.skipped[0] and "undecodable" in b0.skipped[0]
    assert "a002" in b0.skipped[1] and "caption" in b0.skipped[1]
    assert len(b1.skipped) == 1 and "no image" in b1.skipped[0]
    assert ds.skipped == {
        "undecodable image (UnidentifiedImageError)": 1,
        "no usable caption": 1,
        "no image": 1,
    }
    assert b1.captions[1] == "a png"


def test_batch_with_no_usable_sample_takes_the_next_usable_one(tmp_path):
    bad = [{"__key__": f"b{i}".encode(), "jpg": b"junk", "txt": b"x"} for i in range(2)]
    ds = WebDatasetPairs(
        [str(write_shard(tmp_path / "s.tar", [*bad, good("c0", 0), good("c1", 1)]))], 2, None
    )
    b0, b1 = collect(ds, 2)
    assert b0.keys == ["c0"] and len(b0.skipped) == 2
    assert b1.keys == ["c0", "c1"]


def test_captions_json_list_is_sampled_within_max_captions():
    rng = random.Random(0)
    picks = {pick_caption(["a", "b", "c", "d"], 2, rng) for _ in range(50)}
    assert picks == {"a", "b"}
    with pytest.raises(Exception, match="caption"):
        pick_caption(["", "  "], 5, rng)


def test_pretrain_transform_is_bicubic_shortest_edge():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 100, 3), dtype=np.uint8))
    out, _ = pretrain_transform(20, 45, flip_p=0.0)(img, torch.zeros(0, 4), random.Random(0))
    assert out.size == (45, 18)  # long side capped: 100 * 20/40 = 50 > 45 -> scale 0.45
    expected = img.resize((45, 18), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(out), np.asarray(expected))
    flipped, _ = pretrain_transform(20, 45, flip_p=1.0)(img, torch.zeros(0, 4), random.Random(0))
    assert np.array_equal(np.asarray(flipped), np.asarray(expected)[:, ::-1])


def test_expand_shards_braces_and_missing(tmp_path):
    make_shards(tmp_path, n_shards=3)
    got = expand_shards([str(tmp_path / "shard-{00000..00002}.tar")])
    assert [Path(p).name for p in got] == [f"shard-{i:05d}.tar" for i in range(3)]
    with pytest.raises(DataError, match="not found"):
        expand_shards([str(tmp_path / "shard-{00000..00003}.tar")])


def test_coco_captions_draws_a_caption_and_skips_unreadable(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "1.jpg").write_bytes(_jpeg(1))
    (tmp_path / "img" / "2.jpg").write_bytes(b"corrupt")
    data = {
        "images": [
            {"id": 1, "file_name": "1.jpg"},
            {"id": 2, "file_name": "2.jpg"},
            {"id": 3, "file_name": "3.jpg"},
        ],
        "annotations": [
            {"image_id": 1, "caption": "a cat"},
            {"image_id": 1, "caption": "a kitten"},
            {"image_id": 2, "caption": "a dog"},
        ],
    }
    (tmp_path / "captions.json").write_text(json.dumps(data))
    ds = CocoCaptions(tmp_path / "captions.json", tmp_path / "img", pretrain_transform(12, 100, 0.5))
    assert len(ds) == 2  # image 3 has no caption
    random.seed(0)
    seen = {ds[0].caption for _ in range(30)}
    assert seen == {"a cat", "a kitten"}
    sample = ds[1]  # corrupt: the next readable image is returned
    assert sample.key == "1.jpg" and min(sample.image.shape[1:]) == 12
    assert sum(ds.skipped.values()) == 1 and sample.skipped == [
        "2.jpg: undecodable image (UnidentifiedImageError)"
    ]
    (tmp_path / "bad.json").write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    with pytest.raises(DataError, match="file_name"):
        CocoCaptions(tmp_path / "bad.json", tmp_path / "img")

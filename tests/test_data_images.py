"""Tests of regionclip.data.images: every image format that real datasets contain, decompression bombs and
absurd sizes, and the EXIF convention (stored pixels) shared by training, evaluation, detect and shards."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from regionclip.data.coco import CocoDetection
from regionclip.data.images import ImageError, open_image
from regionclip.data.pairs import UnusableSample, decode_image
from regionclip.detect.api import read_image


def _gradient(w: int = 40, h: int = 24) -> np.ndarray:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    return np.concatenate(
        [np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.full((h, w, 1), 90.0)], 2
    ).astype(np.uint8)


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def _png_header_only(width: int, height: int) -> bytes:
    """A valid tiny PNG whose header claims ``width x height`` (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_grayscale_jpeg(tmp_path):
    path = _save(Image.fromarray(_gradient()[..., 0], "L"), tmp_path / "g.jpg", quality=95)
    img = open_image(path)
    arr = np.asarray(img)
    assert img.mode == "RGB" and img.size == (40, 24)
    assert np.array_equal(arr[..., 0], arr[..., 1]) and abs(int(arr[0, -1, 0]) - 255) < 8


def test_cmyk_jpeg(tmp_path):
    rgb = Image.fromarray(_gradient())
    path = _save(rgb.convert("CMYK"), tmp_path / "c.jpg", quality=95)
    arr = np.asarray(open_image(path)).astype(int)
    assert arr.shape == (24, 40, 3)
    assert np.abs(arr - np.asarray(rgb).astype(int)).mean() < 12  # colours survive the CMYK round trip


def test_palette_png(tmp_path):
    rgb = Image.fromarray(_gradient())
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    path = _save(pal, tmp_path / "p.png")
    arr = np.asarray(open_image(path)).astype(int)
    assert np.array_equal(arr, np.asarray(pal.convert("RGB")).astype(int))


def test_16_bit_png_keeps_its_full_range(tmp_path):
    values = np.linspace(0, 65535, 40 * 24).reshape(24, 40).astype(np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "d.png")
    assert Image.open(path).mode.startswith("I")
    arr = np.asarray(open_image(path))
    # scaled by 1/257 (0..65535 -> 0..255), not clipped at 255 as a plain convert("RGB") would do
    assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255
    assert abs(int(arr[12, 0, 0]) - round(float(values[12, 0]) / 257)) <= 1


def test_webp_and_rgba(tmp_path):
    rgb = Image.fromarray(_gradient())
    webp = _save(rgb, tmp_path / "w.webp", lossless=True)
    assert np.array_equal(np.asarray(open_image(webp)), np.asarray(rgb))
    rgba = rgb.copy()
    rgba.putalpha(128)
    png = _save(rgba, tmp_path / "a.png")
    assert np.array_equal(np.asarray(open_image(png)), np.asarray(rgb))  # alpha dropped


def _exif_rotated_jpeg(path):
    """A 40 x 24 stored JPEG whose EXIF says "rotate 90° clockwise to display" (orientation 6)."""
    img = Image.fromarray(_gradient())
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, quality=95, exif=exif.tobytes())
    return path


def test_exif_orientation_is_not_applied_anywhere(tmp_path):
    path = _exif_rotated_jpeg(tmp_path / "r.jpg")
    assert Image.open(path).getexif()[0x0112] == 6
    stored = np.asarray(Image.open(path).convert("RGB"))
    assert stored.shape == (24, 40, 3)
    # the shared reader, the detect / API reader, the shard decoder and the COCO dataset agree: stored pixels
    assert np.array_equal(np.asarray(open_image(path)), stored)
    assert np.array_equal(np.asarray(read_image(str(path))), stored)
    assert np.array_equal(np.asarray(decode_image(path.read_bytes())), stored)
    data = {
        "images": [{"id": 1, "file_name": "r.jpg", "width": 40, "height": 24}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 2, 8, 5], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    sample = CocoDetection(tmp_path / "a.json", tmp_path)[0]
    assert tuple(sample.image.shape) == (3, 24, 40) and sample.orig_size == (24, 40)
    # a COCO box in stored pixels stays where it was annotated (x 30..38 of the 40-px-wide stored image)
    assert sample.boxes.tolist() == [[30.0, 2.0, 38.0, 7.0]]


def test_decompression_bomb_and_absurd_sizes_are_one_line_errors(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(100_000, 100_000))  # 10^10 pixels claimed in a few bytes
    with pytest.raises(
        ImageError, match=r"bomb.png: .*10000000000 pixels.*(decompression bomb|exceeds)"
    ) as err:
        open_image(bomb)
    assert "\n" not in str(err.value) and err.value.kind == "too many pixels"
    with pytest.raises(UnusableSample, match="too many pixels"):
        decode_image(bomb.read_bytes())
    big = tmp_path / "big.png"
    big.write_bytes(_png_header_only(10_000, 10_000))  # under Pillow's hard limit, over ours
    with pytest.raises(
        ImageError, match=r"big.png: image of 10000 x 10000 = 100000000 pixels exceeds the limit"
    ):
        open_image(big)
    small = _save(Image.fromarray(_gradient()), tmp_path / "s.png")
    with pytest.raises(ImageError, match="exceeds the limit of 500"):
        open_image(small, max_pixels=500)


def test_truncated_and_garbage_files(tmp_path):
    good = _save(Image.fromarray(_gradient(200, 200)), tmp_path / "g.jpg", quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:300])
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    for path in (cut, junk):
        with pytest.raises(ImageError, match=path.name) as err:
            open_image(path)
        assert "\n" not in str(err.value)
    with pytest.raises(ImageError, match="not found"):
        open_image(tmp_path / "missing.jpg")
    buf = io.BytesIO()
    Image.fromarray(_gradient()).save(buf, format="PNG")
    assert open_image(buf.getvalue()).size == (40, 24)

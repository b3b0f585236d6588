"""One image reader for every command: decode a file or bytes to an RGB PIL image, or fail with one line.

Used by detector training and evaluation (:class:`~regionclip.data.coco.CocoDetection`), pretraining shards
(:func:`~regionclip.data.pairs.decode_image`), ``detect`` and the Python API, and ``pseudo-label``.

* **Sizes.** The header is read first; an image with more than :data:`MAX_IMAGE_PIXELS` pixels (default
  89 478 485, Pillow's own warning limit; ``REGIONCLIP_MAX_IMAGE_PIXELS`` changes it) or a zero side is
  refused before any pixel is decoded, so a decompression bomb or an absurd size is a clear error (inside
  a dataset: a skipped, counted image), never a traceback or an out-of-memory kill. Pillow's own
  ``DecompressionBombError`` is turned into the same kind of error.
* **Modes.** Grayscale, palette, CMYK, RGBA / LA (alpha dropped, no compositing) and 16- or 32-bit
  integer images are converted to 8-bit RGB; 16-bit values are scaled by 1/257 (full range kept) instead
  of Pillow's clipping at 255. WebP, PNG, JPEG, BMP, TIFF and GIF (first frame) decode as Pillow does.
* **EXIF orientation is NOT applied**, in training, evaluation, ``detect`` and pseudo-labelling alike:
  pixels are used as stored in the file, the convention of COCO and LVIS (their boxes and ``width`` /
  ``height`` refer to the stored pixels). Boxes written by ``detect`` therefore refer to the stored pixels
  too. To use the displayed orientation, rotate the files once (e.g. ``PIL.ImageOps.exif_transpose``) and
  annotate those.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from regionclip.errors import ConfigError, DataError


class ImageError(DataError):
    """An image that cannot be used; ``kind`` is a short category for skip counters."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own warning limit; REGIONCLIP_MAX_IMAGE_PIXELS overrides it


def max_image_pixels() -> int:
    """The pixel limit: ``REGIONCLIP_MAX_IMAGE_PIXELS`` when set (a positive integer), else the default."""
    value = os.environ.get("REGIONCLIP_MAX_IMAGE_PIXELS")
    if value is None:
        return MAX_IMAGE_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise ConfigError(f"REGIONCLIP_MAX_IMAGE_PIXELS: expected a positive integer, got {value!r}")
    return limit


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.uint16).astype(np.float32) / 257.0
        return Image.fromarray(np.round(arr).astype(np.uint8), "L").convert("RGB")
    if img.mode == "I":
        arr = np.asarray(img, dtype=np.int64)
        top = 255 if arr.size == 0 or arr.max() <= 255 else 65535
        arr = np.clip(arr, 0, top).astype(np.float32) * (255.0 / top)
        return Image.fromarray(np.round(arr).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32))
        scale = 255.0 if arr.size and arr.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def open_image(
    source: str | Path | bytes, name: str | None = None, max_pixels: int | None = None
) -> Image.Image:
    """Decode ``source`` (a path or the bytes of a file) to an RGB PIL image (stored orientation).

    name: what the error messages call the image (default: the path). Raises :class:`DataError` naming the
    image (an :class:`ImageError`) for a missing file, an undecodable or truncated file, a zero side or more than ``max_pixels``.
    """
    limit = max_image_pixels() if max_pixels is None else max_pixels
    if isinstance(source, (bytes, bytearray)):
        label = name or "<image bytes>"
        stream: io.BytesIO | Path = io.BytesIO(source)
    else:
        stream = Path(source)
        label = name or str(stream)
        if not stream.is_file():
            raise ImageError(f"image file not found: {label}", "FileNotFoundError")
    pillow_limit = Image.MAX_IMAGE_PIXELS  # Pillow refuses 2x its limit inside open(): ours decides
    Image.MAX_IMAGE_PIXELS = max(limit, pillow_limit or 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked
            with Image.open(stream) as img:
                w, h = img.size
                if w <= 0 or h <= 0:
                    raise ImageError(f"{label}: image has a zero side ({w} x {h})", "zero size")
                if w * h > limit:
                    raise ImageError(
                        f"{label}: image of {w} x {h} = {w * h} pixels exceeds the limit of {limit} "
                        "(decompression-bomb guard; set REGIONCLIP_MAX_IMAGE_PIXELS to allow it)",
                        "too many pixels",
                    )
                img.load()
                return _to_rgb(img)
    except DataError:
        raise
    except Image.DecompressionBombError as err:  # Pillow's own check, at twice the limit, inside open()
        raise ImageError(f"{label}: refused as a decompression bomb ({err})", "too many pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImageError(f"{label}: cannot decode the image ({reason})", type(err).__name__) from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit

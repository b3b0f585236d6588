"""Drawing detections on an image: a coloured box per detection and its name and score on a filled label
whose text colour (black or white) contrasts with the fill, so labels stay readable on any background."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont


def class_color(index: int) -> tuple[int, int, int]:
    """A saturated colour per class index (golden-ratio hue steps, distinct for neighbouring indices)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def text_color(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light fills, white on dark ones (relative luminance, ITU-R BT.709)."""
    r, g, b = fill
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b > 140 else (255, 255, 255)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def draw_detections(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    scores: Sequence[float],
    names: Sequence[str],
) -> Image.Image:
    """A copy of ``image`` (RGB) with ``boxes`` (xyxy pixels) and ``"name score"`` labels drawn on it.

    labels index ``names``; line width and font size scale with the image size.
    """
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    side = min(out.size)
    width = max(1, side // 250)
    font = _font(max(10, side // 40))
    for box, label, score in zip(boxes, labels, scores, strict=True):
        x1, y1, x2, y2 = (float(v) for v in box)
        color = class_color(int(label))
        draw.rectangle([x1, y1, x2, y2], outline=color, width=width)
        text = f"{names[int(label)]} {float(score):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        pad = max(1, th // 5)
        ty = y1 - th - 2 * pad if y1 - th - 2 * pad >= 0 else y1  # above the box, else inside its top
        tx = min(max(0.0, x1), max(0.0, out.size[0] - tw - 2 * pad))
        draw.rectangle([tx, ty, tx + tw + 2 * pad, ty + th + 2 * pad], fill=color)
        draw.text((tx + pad - left, ty + pad - top), text, fill=text_color(color), font=font)
    return out

"""Drawing detections so that a person can read them.

* Only what is worth seeing: detections with score >= ``min_score``, at most ``max_boxes`` of them (the
  best); the detections themselves (JSON, COCO results) stay complete, this is display only.
* One colour per class (golden-ratio hue steps over the vocabulary index) and a legend of the drawn classes,
  in the image corner that covers the fewest drawn boxes.
* Labels ``"name score"`` on a filled rectangle whose text colour (black or white) contrasts with the fill,
  placed OUTSIDE the box they name: above it, else below it, else inside its top edge when the image has no
  room; among the places that fit, one that does not cover an earlier label is preferred.

:func:`layout_detections` computes the geometry (tested), :func:`draw_detections` paints it. Both
``DetectionResult.plot``, ``regionclip detect``, the demo figures and the web page use :func:`draw_detections`.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

Rect = tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels (inclusive pixel bounds)

DEFAULT_SHOW_SCORE = 0.3  # display threshold of `regionclip detect` and DetectionResult.plot
DEFAULT_SHOW_TOP = 10  # detections drawn per image, at most


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


def select_for_display(
    scores: Sequence[float], min_score: float = 0.0, max_boxes: int | None = None
) -> list[int]:
    """Indices of the detections to draw: score >= ``min_score``, best first, at most ``max_boxes``."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    kept = [i for i in order if float(scores[i]) >= min_score]
    return kept if max_boxes is None else kept[: max(0, max_boxes)]


def rects_overlap(a: Rect, b: Rect) -> bool:
    """Whether two pixel rectangles (inclusive bounds) share a pixel."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _overlap_area(a: Rect, b: Rect) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def place_label(
    box: Rect, size: tuple[float, float], image_size: tuple[int, int], taken: Sequence[Rect] = ()
) -> Rect:
    """Where the label of ``box`` goes: a ``size`` ``(w, h)`` rectangle above the box, else below it, else
    inside its top edge; left-aligned with the box, shifted to stay in the image (``(W, H)``). Among the
    outside places that fit in the image, the first that does not overlap a rectangle of ``taken`` wins."""
    x1, y1, x2, y2 = box
    w, h = size
    width, height = image_size
    left = min(max(0.0, x1), max(0.0, width - 1 - w))
    above = (left, y1 - 1 - h, left + w, y1 - 1)  # ends one pixel above the box's top edge
    below = (left, y2 + 1, left + w, y2 + 1 + h)  # starts one pixel below the box's bottom edge
    fitting = [r for r in (above, below) if r[1] >= 0 and r[3] <= height - 1]
    for rect in fitting:
        if not any(rects_overlap(rect, t) for t in taken):
            return rect
    if fitting:
        return fitting[0]
    top = min(max(0.0, y1), max(0.0, height - 1 - h))
    return (left, top, left + w, top + h)


@dataclass
class DetectionLayout:
    """What :func:`draw_detections` paints: ``drawn`` (indices into the inputs, best first), one box, label
    text, label rectangle and colour per drawn detection, and the legend (``(name, colour)`` per drawn
    class in first-drawn order, inside ``legend_rect``; ``None`` without a legend)."""

    drawn: list[int]
    boxes: list[Rect]
    texts: list[str]
    label_rects: list[Rect]
    colors: list[tuple[int, int, int]]
    legend: list[tuple[str, tuple[int, int, int]]] = field(default_factory=list)
    legend_rect: Rect | None = None
    line_width: int = 1
    font_size: int = 10


def _text_size(font: ImageFont.ImageFont, text: str) -> tuple[float, float, float, float]:
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    return left, top, right, bottom


def layout_detections(
    image_size: tuple[int, int],
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    scores: Sequence[float],
    names: Sequence[str],
    *,
    min_score: float = 0.0,
    max_boxes: int | None = None,
    legend: bool = True,
) -> DetectionLayout:
    """The geometry of :func:`draw_detections` on an image of ``image_size`` ``(W, H)`` (see the module doc)."""
    if not len(boxes) == len(labels) == len(scores):
        raise ValueError(f"draw: {len(boxes)} boxes, {len(labels)} labels and {len(scores)} scores")
    width, height = image_size
    side = min(width, height)
    font_size = max(10, side // 40)
    font = _font(font_size)
    pad = max(1, font_size // 5)
    drawn = select_for_display(scores, min_score, max_boxes)
    layout = DetectionLayout([], [], [], [], [], line_width=max(1, side // 250), font_size=font_size)
    placed: list[Rect] = []
    for i in drawn:
        box = tuple(float(v) for v in boxes[i])
        label = int(labels[i])
        text = f"{names[label]} {float(scores[i]):.2f}"
        left, top, right, bottom = _text_size(font, text)
        rect = place_label(box, (right - left + 2 * pad, bottom - top + 2 * pad), image_size, placed)  # type: ignore[arg-type]
        placed.append(rect)
        layout.drawn.append(i)
        layout.boxes.append(box)  # type: ignore[arg-type]
        layout.texts.append(text)
        layout.label_rects.append(rect)
        layout.colors.append(class_color(label))
    if legend and drawn:
        seen: list[int] = []
        for i in drawn:
            if int(labels[i]) not in seen:
                seen.append(int(labels[i]))
        layout.legend = [(str(names[c]), class_color(c)) for c in seen]
        sizes = [_text_size(font, name) for name, _ in layout.legend]
        line = max(b - t for _, t, _, b in sizes) + 2 * pad
        swatch = line - 2 * pad
        w = max(r - left for left, _, r, _ in sizes) + swatch + 4 * pad
        h = line * len(layout.legend) + 2 * pad
        corners = [
            (width - 1 - w, 0), (0, 0), (width - 1 - w, height - 1 - h), (0, height - 1 - h),
        ]  # fmt: skip
        things = layout.boxes + layout.label_rects

        def covered(corner: tuple[float, float]) -> float:
            rect = (corner[0], corner[1], corner[0] + w, corner[1] + h)
            return sum(_overlap_area(rect, t) for t in things)

        x, y = min(corners, key=covered)  # ties: top-right first
        layout.legend_rect = (max(0.0, x), max(0.0, y), max(0.0, x) + w, max(0.0, y) + h)
    return layout


def draw_detections(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    scores: Sequence[float],
    names: Sequence[str],
    *,
    min_score: float = 0.0,
    max_boxes: int | None = None,
    legend: bool = True,
) -> Image.Image:
    """A copy of ``image`` (RGB) with the detections drawn (see the module doc).

    boxes: ``[M, 4]`` xyxy pixels of ``image``; labels: indices into ``names``; scores: ``[M]``. Only
    detections with score >= ``min_score`` are drawn, the best ``max_boxes`` of them (default: everything
    given; ``regionclip detect`` and ``DetectionResult.plot`` default to 0.3 and 10); ``legend``: list the
    drawn classes with their colours. Line width and font size scale with the image size.
    """
    out = image.convert("RGB").copy()
    layout = layout_detections(
        out.size, boxes, labels, scores, names, min_score=min_score, max_boxes=max_boxes, legend=legend
    )
    draw = ImageDraw.Draw(out, "RGBA")
    font = _font(layout.font_size)
    pad = max(1, layout.font_size // 5)
    for box, color in zip(reversed(layout.boxes), reversed(layout.colors), strict=True):  # best on top
        draw.rectangle(box, outline=color, width=layout.line_width)
    for text, rect, color in zip(layout.texts, layout.label_rects, layout.colors, strict=True):
        left, top, _, _ = _text_size(font, text)
        draw.rectangle(rect, fill=color)
        draw.text((rect[0] + pad - left, rect[1] + pad - top), text, fill=text_color(color), font=font)
    if layout.legend_rect is not None:
        x1, y1, x2, y2 = layout.legend_rect
        draw.rectangle(layout.legend_rect, fill=(255, 255, 255, 210), outline=(60, 60, 60, 255))
        line = (y2 - y1 - 2 * pad) / len(layout.legend)
        for k, (name, color) in enumerate(layout.legend):
            top_y = y1 + pad + k * line
            sw = line - 2 * pad
            draw.rectangle([x1 + pad, top_y + pad, x1 + pad + sw, top_y + pad + sw], fill=color)
            left, top, _, _ = _text_size(font, name)
            draw.text((x1 + 3 * pad + sw - left, top_y + pad - top), name, fill=(0, 0, 0), font=font)
    return out

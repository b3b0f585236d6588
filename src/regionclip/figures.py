"""Small figures drawn with Pillow alone (no plotting dependency): grouped bar charts and image grids."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

PALETTE = ((90, 110, 140), (214, 96, 40), (60, 150, 90), (150, 80, 160))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def bar_chart(
    groups: Sequence[str], series: dict[str, Sequence[float]], title: str, unit: str = "%", width: int = 900
) -> Image.Image:
    """Grouped bars: one group per entry of ``groups``, one bar per series (NaN bars are left out)."""
    height, left, bottom, top = 420, 60, 90, 50
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(16), _font(12)
    values = [v for vs in series.values() for v in vs if not math.isnan(v)]
    vmax = max(values + [1.0]) * 1.15
    plot_w, plot_h = width - left - 20, height - top - bottom
    draw.text((left, 12), title, fill="black", font=font)
    draw.line([(left, top), (left, top + plot_h), (left + plot_w, top + plot_h)], fill="black")
    for i in range(5):
        v = vmax * i / 4
        y = top + plot_h - plot_h * i / 4
        draw.line([(left - 4, y), (left + plot_w, y)], fill=(225, 225, 225))
        draw.text((6, y - 7), f"{v:.1f}{unit}", fill="black", font=small)
    n_series = len(series)
    group_w = plot_w / max(len(groups), 1)
    bar_w = group_w * 0.8 / max(n_series, 1)
    for g, name in enumerate(groups):
        x0 = left + g * group_w + group_w * 0.1
        for s, vs in enumerate(series.values()):
            v = vs[g]
            if math.isnan(v):
                continue
            x = x0 + s * bar_w
            y = top + plot_h - plot_h * v / vmax
            draw.rectangle([x, y, x + bar_w - 3, top + plot_h], fill=PALETTE[s % len(PALETTE)])
            draw.text((x, y - 15), f"{v:.1f}", fill="black", font=small)
        lines = name.split("\n")
        for k, line in enumerate(lines):
            draw.text((x0, top + plot_h + 6 + 15 * k), line, fill="black", font=small)
    for s, label in enumerate(series):
        x = left + 10 + s * 180
        draw.rectangle([x, height - 22, x + 14, height - 8], fill=PALETTE[s % len(PALETTE)])
        draw.text((x + 20, height - 24), label, fill="black", font=font)
    return img


def image_grid(
    rows: Sequence[Sequence[Image.Image]], row_labels: Sequence[str], cell: int = 320
) -> Image.Image:
    """Images in a grid (each scaled to ``cell`` px wide) with a label above each row."""
    label_h = 26
    n_cols = max(len(r) for r in rows)
    scaled = [[im.resize((cell, round(im.height * cell / im.width))) for im in r] for r in rows]
    row_h = [max(im.height for im in r) for r in scaled]
    grid = Image.new("RGB", (n_cols * cell, sum(h + label_h for h in row_h)), "white")
    draw = ImageDraw.Draw(grid)
    y = 0
    for label, r, h in zip(row_labels, scaled, row_h, strict=True):
        draw.text((6, y + 4), label, fill="black", font=_font(16))
        for c, im in enumerate(r):
            grid.paste(im, (c * cell, y + label_h))
        y += h + label_h
    return grid

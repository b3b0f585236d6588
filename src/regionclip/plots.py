"""Result charts drawn with matplotlib (headless Agg canvas): CLIP vs RegionCLIP per row with the bootstrap
intervals as error bars.

The rows are those of a results dict (see :mod:`regionclip.results_table`): ``name`` and ``clip`` /
``regionclip`` intervals ``{point, lo, hi}`` in percent. No pyplot and no global backend switch: each chart
is a :class:`matplotlib.figure.Figure` on its own ``FigureCanvasAgg``, so drawing works without a display
and does not disturb a caller's matplotlib state. PNGs are written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from regionclip.io import atomic_write

SERIES = (("clip", "CLIP", "#5a6e8c"), ("regionclip", "RegionCLIP", "#d66028"))  # key, label, colour


def _value(iv: Mapping[str, Any], key: str) -> float:
    v = iv.get(key)
    return math.nan if v is None else float(v)


def comparison_figure(rows: Sequence[Mapping[str, Any]], title: str, unit: str = "%") -> Figure:
    """Horizontal grouped bars, one group per row (top to bottom in row order), CLIP and RegionCLIP bars
    with asymmetric error bars from ``lo`` to ``hi``; the value is printed past each bar's interval. Bars of
    undefined (NaN) points are left out."""
    n = len(rows)
    fig = Figure(figsize=(9.0, 1.2 + 0.62 * n), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    height = 0.38
    top = 0.0
    for s, (key, label, colour) in enumerate(SERIES):
        ys, widths, err_lo, err_hi = [], [], [], []
        for i, row in enumerate(rows):
            iv = row[key]
            point, lo, hi = _value(iv, "point"), _value(iv, "lo"), _value(iv, "hi")
            if not math.isfinite(point):
                continue
            ys.append(n - 1 - i + (0.5 - s) * height)
            widths.append(point)
            err_lo.append(point - lo if math.isfinite(lo) else 0.0)
            err_hi.append(hi - point if math.isfinite(hi) else 0.0)
            top = max(top, hi if math.isfinite(hi) else point)
        ax.barh(ys, widths, height=height * 0.92, color=colour, label=label,
                xerr=[err_lo, err_hi], error_kw={"ecolor": "#222222", "capsize": 3, "elinewidth": 1})  # fmt: skip
        for y, w, e in zip(ys, widths, err_hi, strict=True):
            ax.text(w + e + 0.4, y, f"{w:.1f}", va="center", fontsize=8)
    ax.set_yticks(range(n), [str(r["name"]) for r in reversed(rows)], fontsize=9)
    ax.set_xlim(0, max(top, 1.0) * 1.12 + 2)
    ax.set_xlabel(f"{unit} (bars: point estimate; whiskers: 95% bootstrap interval over images)", fontsize=9)
    ax.set_title(title, fontsize=11, loc="left")
    ax.grid(axis="x", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.legend(loc="outside upper right", ncols=2, fontsize=9, frameon=False)
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG, atomically."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def comparison_chart(
    rows: Sequence[Mapping[str, Any]], path: str | Path, title: str, unit: str = "%"
) -> Figure:
    """:func:`comparison_figure` saved to ``path`` (PNG, atomic); returns the figure."""
    fig = comparison_figure(rows, title, unit)
    save_png(fig, path)
    return fig


def interval_figure(labels: Sequence[str], intervals: Sequence[Mapping[str, Any]], title: str,
                    unit: str = "%") -> Figure:  # fmt: skip
    """Horizontal bars of one series, one per label (top to bottom), with error bars from ``lo`` to ``hi``
    (the ablation chart). Undefined (NaN) points are left out."""
    n = len(labels)
    fig = Figure(figsize=(9.0, 1.0 + 0.4 * n), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    top = 0.0
    for i, iv in enumerate(intervals):
        point, lo, hi = _value(iv, "point"), _value(iv, "lo"), _value(iv, "hi")
        if not math.isfinite(point):
            continue
        y = n - 1 - i
        err = [[point - lo if math.isfinite(lo) else 0.0], [hi - point if math.isfinite(hi) else 0.0]]
        ax.barh([y], [point], height=0.7, color=SERIES[1][2], xerr=err,
                error_kw={"ecolor": "#222222", "capsize": 3, "elinewidth": 1})  # fmt: skip
        ax.text(point + err[1][0] + 0.4, y, f"{point:.1f}", va="center", fontsize=8)
        top = max(top, hi if math.isfinite(hi) else point)
    ax.set_yticks(range(n), [str(label) for label in reversed(labels)], fontsize=8)
    ax.set_xlim(0, max(top, 1.0) * 1.12 + 2)
    ax.set_xlabel(f"{unit} (bars: point estimate; whiskers: 95% bootstrap interval over images)", fontsize=9)
    ax.set_title(title, fontsize=11, loc="left")
    ax.grid(axis="x", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig


def interval_chart(labels: Sequence[str], intervals: Sequence[Mapping[str, Any]], path: str | Path,
                   title: str, unit: str = "%") -> Figure:  # fmt: skip
    """:func:`interval_figure` saved to ``path`` (PNG, atomic); returns the figure."""
    fig = interval_figure(labels, intervals, title, unit)
    save_png(fig, path)
    return fig

"""Tests of the matplotlib comparison chart with bootstrap error bars."""

from __future__ import annotations

import math

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import Rectangle
from PIL import Image

from regionclip.plots import comparison_chart


def _rows():
    iv = lambda p, lo, hi: {"point": p, "lo": lo, "hi": hi}  # noqa: E731
    return [
        {"name": "Zero-shot region top-1, all (GT boxes)", "clip": iv(15.5, 13.0, 18.1), "regionclip": iv(14.0, 11.9, 16.2)},
        {"name": "Zero-shot region top-1, novel (GT boxes)", "clip": iv(13.2, 9.0, 17.5), "regionclip": iv(10.1, 6.3, 14.0)},
        {"name": "Transfer AP50 + RPN score, novel", "clip": iv(2.9, 1.1, 5.0), "regionclip": iv(3.4, 1.5, 5.8)},
        {"name": "Transfer AP50, undefined", "clip": iv(math.nan, math.nan, math.nan), "regionclip": iv(1.0, 0.2, 2.0)},
    ]  # fmt: skip


def test_chart_written_with_one_bar_per_defined_value_and_error_bars(tmp_path):
    before = matplotlib.get_backend()
    path = tmp_path / "figures" / "comparison.png"
    fig = comparison_chart(_rows(), path, "CLIP vs RegionCLIP (val, seed 0)")
    assert path.is_file() and not list(path.parent.glob(".*.tmp"))  # atomic: no temp file left
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 600 and img.height > 300
    assert isinstance(fig.canvas, FigureCanvasAgg)  # headless Agg, whatever the global backend
    assert matplotlib.get_backend() == before  # no global switch
    (ax,) = fig.axes
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == 2 * 4 - 1  # the undefined CLIP value gets no bar
    assert sorted(round(b.get_width(), 1) for b in bars) == [1.0, 2.9, 3.4, 10.1, 13.2, 14.0, 15.5]
    errorbars = [c for c in ax.containers if getattr(c, "has_xerr", False)]
    assert len(errorbars) == 2
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "Zero-shot region top-1, all (GT boxes)"

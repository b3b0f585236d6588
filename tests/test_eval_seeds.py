"""Tests of the per-seed aggregation (mean ± sample sd per row)."""

from __future__ import annotations

import math
import statistics

import pytest

from regionclip.errors import RegionCLIPError
from regionclip.eval.seeds import SeedSummary, aggregate_seeds, summarize_values


def test_mean_and_sample_sd_per_row():
    runs = [{"a": 10.0, "b": 1.0}, {"a": 12.0, "b": 2.0}, {"a": 17.0, "b": 6.0}]
    out = aggregate_seeds(runs)
    assert list(out) == ["a", "b"]
    assert out["a"].mean == pytest.approx(13.0)
    assert out["a"].sd == pytest.approx(statistics.stdev([10.0, 12.0, 17.0]))  # n - 1
    assert out["a"].sd == pytest.approx(math.sqrt((9 + 1 + 16) / 2))
    assert out["b"].n == 3
    assert out["a"].format() == "13.0 ± 3.6 (n=3)"


def test_nan_values_are_left_out_and_small_n():
    s = summarize_values([4.0, math.nan, 6.0])
    assert (s.mean, s.n) == (5.0, 2) and s.sd == pytest.approx(math.sqrt(2))
    one = summarize_values([3.25])
    assert one.mean == 3.25 and math.isnan(one.sd) and one.format(2) == "3.25 (n=1)"
    none = summarize_values([math.nan])
    assert none.n == 0 and none.format() == "n/a"
    assert SeedSummary(1.0, 0.0, 2).to_dict() == {"mean": 1.0, "sd": 0.0, "n": 2}


def test_runs_must_report_the_same_rows():
    with pytest.raises(RegionCLIPError, match="run 1 has other rows"):
        aggregate_seeds([{"a": 1.0}, {"b": 2.0}])
    with pytest.raises(RegionCLIPError, match="no per-seed results"):
        aggregate_seeds([])

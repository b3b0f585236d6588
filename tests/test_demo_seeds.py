"""``regionclip demo --seeds N``: per-seed results aggregated into mean ± sd per row (fabricated runs), and a
slow end-to-end run of two seeds sharing one world."""

from __future__ import annotations

import dataclasses
import json

import pytest

from regionclip.demo import PLANS
from regionclip.demo.seeds import run_seeds, seeds_results
from regionclip.errors import RegionCLIPError
from regionclip.results_table import results_block


def _iv(point):
    return {"point": point, "lo": point - 1.0, "hi": point + 1.0}


def _run(seed, a, b):
    rows = [{"name": "row one", "clip": _iv(a), "regionclip": _iv(b), "diff": _iv(b - a)},
            {"name": "row two", "clip": _iv(2 * a), "regionclip": _iv(2 * b), "diff": _iv(2 * (b - a))}]  # fmt: skip
    return {"machine": "Test CPU", "date": "2026-12-01", "seed": seed, "world_seed": 0, "split": "test",
            "n_images": 400, "resamples": 1000, "confidence": 0.95, "rows": rows}  # fmt: skip


def test_seeds_mean_sd_per_row_and_difference():
    results = seeds_results([_run(0, 10.0, 12.0), _run(1, 12.0, 13.0), _run(2, 14.0, 17.0)])
    assert results["seeds"] == [0, 1, 2] and results["seed"] == 0
    one = results["rows"][0]
    assert one["clip"] == _iv(10.0)  # seed 0's interval
    assert one["seeds"]["clip"] == {"mean": 12.0, "sd": 2.0, "n": 3}
    assert one["seeds"]["regionclip"]["mean"] == pytest.approx(14.0)
    assert one["seeds"]["diff"]["mean"] == pytest.approx(2.0) and one["per_seed"]["diff"] == [2.0, 1.0, 3.0]
    assert one["seeds"]["diff"]["sd"] == pytest.approx(1.0)
    block = results_block(results)
    assert "mean ± sd (3 seeds)" in block and "| 12.0 ± 2.0 |" in block and "| +2.0 ± 1.0 |" in block
    assert "seeds 0, 1, 2 (mean ± sd)" in block


def test_seeds_runs_must_have_the_same_rows():
    other = _run(1, 1.0, 2.0)
    other["rows"] = other["rows"][:1]
    with pytest.raises(RegionCLIPError, match="other rows"):
        seeds_results([_run(0, 1.0, 2.0), other])
    with pytest.raises(RegionCLIPError, match="no runs"):
        seeds_results([])


def tiny_plan():
    """The quick plan with 2 steps per training stage (test only)."""
    plan = PLANS["quick"]
    steps = {f.name: 2 for f in dataclasses.fields(plan) if f.name.endswith("_steps")}
    return dataclasses.replace(plan, **steps)


@pytest.mark.slow
def test_two_seeds_share_the_world_and_aggregate(tmp_path, capsys):
    results = run_seeds("quick", tmp_path, 2, "cpu", plan=tiny_plan())
    assert results["seeds"] == [0, 1]
    assert (tmp_path / "results_seeds.md").read_text().startswith("# regionclip demo over seeds 0, 1")
    assert json.loads((tmp_path / "results_seeds.json").read_text())["rows"][0]["seeds"]["clip"]["n"] == 2
    assert not (tmp_path / "seed_1" / "world").exists()  # one world, in OUT/world
    assert (tmp_path / "world" / "stage.json").is_file()
    printed = capsys.readouterr().out
    assert "world: done before" in printed  # seed 1 reused seed 0's world
    seed0 = json.loads((tmp_path / "seed_0" / "clip" / "stage.json").read_text())
    seed1 = json.loads((tmp_path / "seed_1" / "clip" / "stage.json").read_text())
    assert seed0["key"] != seed1["key"]

"""The whole method end to end: ``regionclip demo --size quick`` (the CI's end-to-end test), then a re-run
that resumes from the cached stages."""

from __future__ import annotations

import json
import math

from regionclip.cli import main
from regionclip.commands.detect import DEMO_CHECKPOINT
from regionclip.demo import _stages


def test_quick_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--size", "quick", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["table"]) == 15
    for name, clip, regionclip in results["table"]:
        assert math.isfinite(clip) and math.isfinite(regionclip), name
        assert 0.0 <= clip <= 100.0 and 0.0 <= regionclip <= 100.0, name
    assert (out / "results.md").read_text().startswith("# regionclip demo")
    # the table is on the held-out test split, each row with its interval and the paired difference
    assert results["split"] == "test" and results["n_images"] == 120 and results["resamples"] == 1000
    assert results["cpu"] and results["machine"].startswith(results["cpu"])
    for row in results["rows"]:
        for side in ("clip", "regionclip", "diff"):
            assert row[side]["lo"] <= row[side]["point"] <= row[side]["hi"], (row["name"], side)
    assert json.loads((out / "eval" / "transfer_clip.json").read_text())["protocol"]["dataset"] == (
        "miniature-world test"
    )
    for figure in ("comparison.png", "detections.png", "index_search.png"):
        assert (out / "figures" / figure).stat().st_size > 1000
    for stage in (
        "world",
        "clip",
        "concepts",
        "rpn",
        "pretrain",
        "zeroshot",
        "transfer_clip",
        "transfer_regionclip",
        "report",
        "index",
    ):
        assert (out / stage / "stage.json").is_file(), stage
    # each transfer detector lies in its stage's folder: where `regionclip detect` looks by default
    for stage in ("transfer_clip", "transfer_regionclip"):
        assert (out / stage / "detector.safetensors").is_file(), stage
        assert (out / "eval" / f"{stage}.json").is_file(), stage
        variants = json.loads((out / "eval" / f"{stage}.json").read_text())["variants"]
        assert variants["sigmoid"]["protocol"]["score_fusion"] == "rpn-sigmoid-sqrt", stage
        assert variants["ensemble"]["protocol"]["score_ensemble"] == "frozen", stage
        for name in ("sigmoid", "ensemble"):
            assert (out / "eval" / f"{stage}_detections_{name}.json").is_file(), (stage, name)
    assert DEMO_CHECKPOINT.parts[1:] == ("transfer_regionclip", "detector.safetensors")
    # the student really changed during pretraining, and the three losses were logged
    history = [json.loads(line) for line in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_region_concept", "loss_region_distill", "loss_image_text"} <= set(history[0])
    # the index stage: val images indexed once, novel names searched, precision@k in results.md
    index = json.loads((out / "index" / "stage.json").read_text())
    assert index["images"] > 0 and len(index["queries"]) > 0
    assert all(0.0 <= p <= 1.0 for p in index["precision_at_k"].values())
    assert "## Index and search" in (out / "results.md").read_text()
    capsys.readouterr()
    # a second run reuses every stage
    assert main(["demo", "--size", "quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("done before") == len(_stages()) == 11
    assert "Transfer detector AP50, novel" in printed
    assert "Transfer detector AP50 + RPN score, novel" in printed
    assert "Transfer detector AP50 + frozen ensemble, novel" in printed

"""Tests of the generated results table, its who-wins sentences and the README block replacement."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from regionclip.errors import RegionCLIPError
from regionclip.results_table import (
    ABLATIONS_END,
    ABLATIONS_START,
    BLOCK_END,
    BLOCK_START,
    NOT_GENERATED,
    ablation_block,
    ablation_table,
    load_results,
    read_block,
    readme_agrees,
    readme_blocks,
    replace_block,
    results_block,
    results_sentences,
    results_table,
    update_readme,
    winner,
)


def _iv(point, lo, hi):
    return {"point": point, "lo": lo, "hi": hi}


def _results(seeds=False):
    rows = [
        {"name": "ahead", "clip": _iv(10.0, 8.0, 12.0), "regionclip": _iv(14.0, 12.0, 16.0),
         "diff": _iv(4.0, 1.5, 6.5)},
        {"name": "behind", "clip": _iv(20.0, 18.0, 22.0), "regionclip": _iv(17.0, 15.0, 19.0),
         "diff": _iv(-3.0, -5.0, -0.8)},
        {"name": "crossing", "clip": _iv(5.0, 3.0, 7.0), "regionclip": _iv(6.0, 4.0, 8.0),
         "diff": _iv(1.0, -0.5, 2.5)},
        {"name": "tie", "clip": _iv(7.0, 6.0, 8.0), "regionclip": _iv(7.0, 6.0, 8.0), "diff": _iv(0.0, 0.0, 0.0)},
        {"name": "touching", "clip": _iv(7.0, 6.0, 8.0), "regionclip": _iv(8.0, 7.0, 9.0),
         "diff": _iv(1.0, 0.0, 2.0)},
        {"name": "undefined", "clip": _iv(math.nan, math.nan, math.nan), "regionclip": _iv(None, None, None),
         "diff": _iv(None, None, None)},
    ]  # fmt: skip
    if seeds:
        for r in rows:
            r["seeds"] = {
                "clip": {"mean": 10.25, "sd": 0.5, "n": 3},
                "regionclip": {"mean": 11.0, "sd": 1.25, "n": 3},
            }
    return {"machine": "Test CPU, 2 cores", "date": "2026-12-01", "seed": 0, "split": "test", "n_images": 400,
            "resamples": 1000, "rows": rows}  # fmt: skip


def test_winner_only_when_the_paired_interval_excludes_zero():
    assert winner(_iv(4.0, 1.5, 6.5)) == "RegionCLIP"
    assert winner(_iv(-3.0, -5.0, -0.8)) == "CLIP"
    assert winner(_iv(1.0, -0.5, 2.5)) is None
    assert winner(_iv(0.0, 0.0, 0.0)) is None  # a tie
    assert winner(_iv(1.0, 0.0, 2.0)) is None  # touching 0 does not exclude it
    assert winner(_iv(math.nan, math.nan, math.nan)) is None


def test_table_rows_and_findings():
    table = results_table(_results())
    lines = table.splitlines()
    assert len(lines) == 2 + 6
    assert lines[0].startswith("| metric (%) | CLIP [95% CI] | RegionCLIP [95% CI]")
    assert all(line.count("|") == 6 for line in lines)
    assert "| ahead | 10.0 [8.0, 12.0] | 14.0 [12.0, 16.0] | +4.0 [+1.5, +6.5] | RegionCLIP ahead |" in table
    assert "| behind |" in table and lines[3].endswith("| CLIP ahead |")
    for name in ("crossing", "tie", "touching"):
        (line,) = [x for x in lines if x.startswith(f"| {name} |")]
        assert line.endswith("| no difference shown |")
    assert "| undefined | n/a | n/a | n/a | no difference shown |" in table


def test_sentences_state_directions_mechanically():
    sentences = results_sentences(_results())
    assert len(sentences) == 7
    assert (
        sentences[0]
        == "RegionCLIP is ahead of CLIP on ahead: +4.0 points (95% paired interval +1.5 to +6.5)."
    )
    assert sentences[1].startswith(
        "CLIP is ahead of RegionCLIP on behind: +3.0 points (RegionCLIP − CLIP −3.0"
    )
    for s, name in zip(sentences[2:5], ("crossing", "tie", "touching"), strict=True):
        assert s.startswith(f"No difference shown on {name}:") and "includes 0" in s
        assert "ahead" not in s
    assert "undefined" in sentences[5] and "ahead" not in sentences[5]
    assert "Test CPU, 2 cores" in sentences[6] and "400 test images" in sentences[6]
    assert "Another CPU gives other digits" in sentences[6]


def test_small_bounds_never_print_as_zero():
    r = _results()
    r["rows"] = [{"name": "thin", "clip": _iv(1.0, 0.5, 1.5), "regionclip": _iv(1.1, 0.6, 1.6),
                  "diff": _iv(0.1, 0.03, 0.2)}]  # fmt: skip
    assert "+0.03" in results_table(r) and "RegionCLIP ahead" in results_table(r)


def test_seed_columns():
    table = results_table(_results(seeds=True))
    lines = table.splitlines()
    assert "CLIP, mean ± sd (3 seeds)" in lines[0] and all(line.count("|") == 8 for line in lines)
    assert lines[2].endswith("| 10.2 ± 0.5 | 11.0 ± 1.2 |")
    assert "seeds" not in results_sentences(_results())[-1]


def test_bad_results_are_clear_errors():
    bad = _results()
    del bad["rows"][0]["diff"]
    with pytest.raises(RegionCLIPError, match=r"rows\[0\] \(ahead\): field 'diff'"):
        results_table(bad)
    bad = _results()
    bad["rows"][1]["clip"] = _iv(1.0, 3.0, 2.0)
    with pytest.raises(RegionCLIPError, match="lo 3.0 > hi 2.0"):
        results_table(bad)
    with pytest.raises(RegionCLIPError, match="missing field 'machine'"):
        results_table({"rows": []})


def test_replace_block_and_update_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nintro\n{BLOCK_START}\nold table\n{BLOCK_END}\n\nafter\n", encoding="utf-8")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_results()), encoding="utf-8")
    assert not readme_agrees(readme, results)
    assert update_readme(readme, results) is True
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# title\n\nintro\n" + BLOCK_START + "\n| metric (%)") and text.endswith(
        f"{BLOCK_END}\n\nafter\n"
    )
    assert "old table" not in text and results_block(_results()) in text
    assert readme_agrees(readme, results)
    assert update_readme(readme, results) is False  # idempotent
    with pytest.raises(RegionCLIPError, match="once each, found 0 and 1"):
        replace_block(f"x\n{BLOCK_END}\n", "y")
    with pytest.raises(RegionCLIPError, match="comes before"):
        replace_block(f"{BLOCK_END}\n{BLOCK_START}\n", "y")
    results.write_text("{not json", encoding="utf-8")
    with pytest.raises(RegionCLIPError, match="cannot read results JSON"):
        update_readme(readme, results)


# ------------------------------------------------------------------------------------------- README blocks
REPO = Path(__file__).resolve().parents[1]
DEMO_JSON = REPO / "docs" / "results" / "demo.json"


def test_readme_blocks_agree_with_the_committed_results_json():
    """README.md's demo table (and ablation table) is what docs/results/demo.json generates; a block that
    the committed results do not generate must say that it is not generated yet."""
    readme = REPO / "README.md"
    text = readme.read_text(encoding="utf-8")
    generated = readme_blocks(load_results(DEMO_JSON)) if DEMO_JSON.is_file() else {}
    for start, end in ((BLOCK_START, BLOCK_END), (ABLATIONS_START, ABLATIONS_END)):
        block = read_block(text, start, end)
        if (start, end) in generated:
            assert block == generated[(start, end)].strip("\n"), f"README.md {start} block is stale"
        else:
            assert block.startswith(NOT_GENERATED), f"README.md {start} block is hand-written"
    if DEMO_JSON.is_file():
        assert readme_agrees(readme, DEMO_JSON)


def _ablations():
    return {
        "confidence": 0.95, "n_images": 400, "split": "test", "machine": "Test CPU", "date": "2026-12-01",
        "seed": 0, "delta": "novel AP50",
        "columns": [{"key": "a", "label": "metric a"}, {"key": "b", "label": "metric b"}],
        "rows": [
            {"group": "default", "name": "reference", "metrics": {"a": _iv(10.0, 8.0, 12.0)}, "diff": None},
            {"group": "g", "name": "lower", "metrics": {"a": _iv(5.0, 3.0, 7.0)}, "diff": _iv(-5.0, -7.0, -3.0)},
            {"group": "g", "name": "same", "metrics": {"b": _iv(9.0, 7.0, 11.0)}, "diff": _iv(-1.0, -3.0, 1.0)},
        ],
    }  # fmt: skip


def test_ablation_table_findings_and_blank_cells():
    lines = ablation_table(_ablations()).splitlines()
    assert len(lines) == 5 and lines[0].startswith("| ablation | variant | metric a [95% CI] | metric b")
    assert lines[2] == "| default | reference | 10.0 [8.0, 12.0] |  | (the reference) |  |"
    assert lines[3].endswith("| −5.0 [−7.0, −3.0] | below default |")
    assert lines[4] == "| g | same |  | 9.0 [7.0, 11.0] | −1.0 [−3.0, +1.0] | no difference shown |"
    bad = _ablations()
    bad["rows"][1]["metrics"] = {"zzz": _iv(1.0, 0.0, 2.0)}
    with pytest.raises(RegionCLIPError, match="not columns"):
        ablation_table(bad)


def test_ablation_block_states_the_variants_time_when_recorded():
    assert "minutes" not in ablation_block(_ablations())
    timed = {**_ablations(), "variant_seconds": 3927.0}
    assert ablation_block(timed).endswith("The variants' stages took 65 minutes after the default run.")


def test_update_readme_command_writes_both_blocks(tmp_path, capsys):
    from regionclip.cli import main

    readme = tmp_path / "README.md"
    readme.write_text(
        f"# x\n{BLOCK_START}\nold\n{BLOCK_END}\ntext\n{ABLATIONS_START}\nold\n{ABLATIONS_END}\n"
    )
    results = tmp_path / "demo.json"
    results.write_text(json.dumps({**_results(), "ablations": _ablations()}))
    assert main(["demo", "--update-readme", str(results), "--readme", str(readme)]) == 0
    assert readme_agrees(readme, results)
    text = readme.read_text()
    assert "old" not in text and "| lower |" in text and "| ahead |" in text and "Test CPU" in text
    assert "another cpu gives other digits" in text.lower()
    assert main(["demo", "--update-readme", str(results), "--readme", str(readme)]) == 0
    assert "already agrees" in capsys.readouterr().out

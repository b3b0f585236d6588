"""The demo's results table and its sentences about who wins, generated from a results dict / results.json.

Pure functions, so the README can never state a claim its numbers do not carry: a direction ("RegionCLIP is
ahead of CLIP on X") is written only when the paired 95% interval of RegionCLIP - CLIP excludes 0;
otherwise the sentence is "no difference shown". :func:`update_readme` replaces the block between
``<!-- demo-table:start -->`` and ``<!-- demo-table:end -->`` of a README with the generated text, and
the ablation table (:func:`ablation_block`, from ``results["ablations"]``) between ``<!-- demo-ablations:start
-->`` and ``<!-- demo-ablations:end -->``. ``regionclip demo --update-readme RESULTS_JSON`` does both.

The results dict (what ``results.json`` holds)::

    {"machine": "Intel Xeon ..., 2 cores", "date": "2026-12-01", "seed": 0,
     "split": "test", "n_images": 400, "resamples": 1000, "confidence": 0.95,   # optional
     "seeds": [0, 1],                                                             # optional
     "rows": [{"name": "Zero-shot region top-1, all (GT boxes)",
               "clip": {"point": 15.5, "lo": 13.1, "hi": 17.9},
               "regionclip": {"point": 14.0, "lo": 11.8, "hi": 16.1},
               "diff": {"point": -1.5, "lo": -3.0, "hi": 0.1},     # RegionCLIP - CLIP, paired
               "seeds": {"clip": {"mean": 15.9, "sd": 0.8, "n": 2},  # optional
                         "regionclip": {"mean": 14.3, "sd": 0.5, "n": 2}}}, ...]}

Values are percentages; NaN (or null) means undefined and prints as "n/a".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from regionclip.errors import RegionCLIPError
from regionclip.io import atomic_write_text

BLOCK_START = "<!-- demo-table:start -->"
BLOCK_END = "<!-- demo-table:end -->"
ABLATIONS_START = "<!-- demo-ablations:start -->"
ABLATIONS_END = "<!-- demo-ablations:end -->"
# the first line of a README block not generated yet (what tests accept while docs/results/demo.json is absent)
NOT_GENERATED = "<!-- not generated yet: regionclip demo --update-readme docs/results/demo.json -->"
_INTERVAL_KEYS = ("point", "lo", "hi")


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _check_interval(row: Mapping[str, Any], key: str, where: str) -> dict[str, float]:
    iv = row.get(key)
    if not isinstance(iv, Mapping) or any(k not in iv for k in _INTERVAL_KEYS):
        raise RegionCLIPError(f"{where}: field {key!r} must be {{'point', 'lo', 'hi'}}, got {iv!r}")
    out = {k: _num(iv[k]) for k in _INTERVAL_KEYS}
    if all(math.isfinite(v) for v in out.values()) and not out["lo"] <= out["hi"]:
        raise RegionCLIPError(f"{where}: field {key!r} has lo {out['lo']} > hi {out['hi']}")
    return out


def validate_results(results: Mapping[str, Any], source: str = "results") -> list[dict[str, Any]]:
    """The rows of ``results``, checked; a clear error names the first bad field."""
    for key in ("machine", "date", "seed", "rows"):
        if key not in results:
            raise RegionCLIPError(f"{source}: missing field {key!r}")
    if not isinstance(results["rows"], list) or not results["rows"]:
        raise RegionCLIPError(f"{source}: 'rows' must be a non-empty list")
    rows = []
    for i, row in enumerate(results["rows"]):
        where = f"{source}: rows[{i}]"
        if not isinstance(row, Mapping) or not isinstance(row.get("name"), str) or not row["name"]:
            raise RegionCLIPError(f"{where}: expected a dict with a non-empty 'name'")
        checked = {"name": row["name"]}
        for key in ("clip", "regionclip", "diff"):
            checked[key] = _check_interval(row, key, f"{where} ({row['name']})")
        if row.get("seeds") is not None:
            seeds = row["seeds"]
            for key in ("clip", "regionclip"):
                s = seeds.get(key) if isinstance(seeds, Mapping) else None
                if not isinstance(s, Mapping) or any(k not in s for k in ("mean", "sd", "n")):
                    raise RegionCLIPError(
                        f"{where} ({row['name']}): seeds.{key} must be {{'mean', 'sd', 'n'}}"
                    )
            sides = (
                ("clip", "regionclip", "diff")
                if isinstance(seeds.get("diff"), Mapping)
                else ("clip", "regionclip")
            )
            checked["seeds"] = {k: {f: _num(seeds[k].get(f)) for f in ("mean", "sd", "n")} for k in sides}
        rows.append(checked)
    return rows


def winner(diff: Mapping[str, float]) -> str | None:
    """``"RegionCLIP"`` when the paired interval of RegionCLIP - CLIP lies above 0, ``"CLIP"`` when below,
    None when it contains 0 or is undefined (no difference shown)."""
    lo, hi = _num(diff["lo"]), _num(diff["hi"])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    if lo > 0:
        return "RegionCLIP"
    if hi < 0:
        return "CLIP"
    return None


def _fmt(x: float, signed: bool = False) -> str:
    if not math.isfinite(x):
        return "n/a"
    digits = 1
    while x != 0 and round(x, digits) == 0 and digits < 4:  # never print a non-zero bound as 0.0 / 0.00
        digits += 1
    text = f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"
    return text.replace("-", "−")


def _fmt_interval(iv: Mapping[str, float], signed: bool = False) -> str:
    if not math.isfinite(iv["point"]):
        return "n/a"
    return f"{_fmt(iv['point'], signed)} [{_fmt(iv['lo'], signed)}, {_fmt(iv['hi'], signed)}]"


def _fmt_seeds(s: Mapping[str, float], signed: bool = False) -> str:
    if not s["n"] >= 1 or not math.isfinite(s["mean"]):
        return "n/a"
    if s["n"] < 2 or not math.isfinite(s["sd"]):
        return f"{_fmt(s['mean'], signed)} (n=1)"
    return f"{_fmt(s['mean'], signed)} ± {_fmt(s['sd'])}"


def _finding(w: str | None) -> str:
    return {"RegionCLIP": "RegionCLIP ahead", "CLIP": "CLIP ahead", None: "no difference shown"}[w]


def rows_table(rows: list[Mapping[str, Any]], confidence: float = 0.95) -> str:
    """The markdown table of checked rows (see :func:`validate_results`): per row CLIP and RegionCLIP with
    their intervals, the paired difference and the finding (and, when every row carries per-seed results,
    mean ± sd over the seeds)."""
    pct = int(round(100 * float(confidence)))
    with_seeds = bool(rows) and all("seeds" in r for r in rows)
    n_seeds = int(max(r["seeds"]["clip"]["n"] for r in rows)) if with_seeds else 0
    header = ["metric (%)", f"CLIP [{pct}% CI]", f"RegionCLIP [{pct}% CI]",
              f"RegionCLIP − CLIP [{pct}% paired CI]", "finding"]  # fmt: skip
    with_diff = with_seeds and all("diff" in r["seeds"] for r in rows)
    if with_seeds:
        header += [f"CLIP, mean ± sd ({n_seeds} seeds)", f"RegionCLIP, mean ± sd ({n_seeds} seeds)"]
    if with_diff:
        header += [f"RegionCLIP − CLIP, mean ± sd ({n_seeds} seeds)"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * 3 + "---|" + "---:|" * (len(header) - 5)]
    for r in rows:
        clip, regionclip, diff = (_check_interval(r, k, r["name"]) for k in ("clip", "regionclip", "diff"))
        cells = [r["name"], _fmt_interval(clip), _fmt_interval(regionclip),
                 _fmt_interval(diff, signed=True), _finding(winner(diff))]  # fmt: skip
        if with_seeds:
            cells += [_fmt_seeds(r["seeds"]["clip"]), _fmt_seeds(r["seeds"]["regionclip"])]
        if with_diff:
            cells += [_fmt_seeds(r["seeds"]["diff"], signed=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_table(results: Mapping[str, Any]) -> str:
    """The markdown table of a results dict (see :func:`rows_table`)."""
    return rows_table(validate_results(results), float(results.get("confidence", 0.95)))


def results_sentences(results: Mapping[str, Any]) -> list[str]:
    """One sentence per row saying who wins, derived mechanically from the paired interval, then one on
    where and how the numbers were measured."""
    rows = validate_results(results)
    confidence = int(round(100 * float(results.get("confidence", 0.95))))
    out = []
    for r in rows:
        d, w = r["diff"], winner(r["diff"])
        interval = f"{confidence}% paired interval {_fmt(d['lo'], True)} to {_fmt(d['hi'], True)}"
        if w == "RegionCLIP":
            out.append(
                f"RegionCLIP is ahead of CLIP on {r['name']}: {_fmt(d['point'], True)} points ({interval})."
            )
        elif w == "CLIP":
            out.append(f"CLIP is ahead of RegionCLIP on {r['name']}: {_fmt(-d['point'], True)} points "
                       f"(RegionCLIP − CLIP {_fmt(d['point'], True)}, {interval}).")  # fmt: skip
        elif not (math.isfinite(d["lo"]) and math.isfinite(d["hi"])):
            out.append(f"No difference shown on {r['name']}: its interval is undefined.")
        else:
            out.append(f"No difference shown on {r['name']}: RegionCLIP − CLIP {_fmt(d['point'], True)} points, "
                       f"{interval} includes 0.")  # fmt: skip
    where = (
        f"{results.get('n_images')} {results.get('split', 'evaluation')} images"
        if "n_images" in results
        else ""
    )
    resamples = f"{results['resamples']} bootstrap resamples of the images" if "resamples" in results else ""
    detail = ", ".join(x for x in (where, resamples) if x)
    seeds = results.get("seeds")
    seed_text = f"seeds {', '.join(str(s) for s in seeds)} (mean ± sd)" if seeds else ""
    out.append(
        f"Measured on {results['machine']}, {results['date']}, seed {results['seed']}"
        + (f" ({detail})" if detail else "")
        + (f"; run-to-run spread over {seed_text}" if seed_text else "")
        + ". Another CPU gives other digits for the same seed; a direction is stated only where its paired "
        f"{confidence}% interval excludes 0."
    )
    return out


def results_block(results: Mapping[str, Any]) -> str:
    """The README block's content: the table, then the sentences as a bullet list."""
    return results_table(results) + "\n\n" + "\n".join(f"- {s}" for s in results_sentences(results))


def replace_block(text: str, content: str, start: str = BLOCK_START, end: str = BLOCK_END,
                  source: str = "README.md") -> str:  # fmt: skip
    """``text`` with everything between the ``start`` and ``end`` marker lines replaced by ``content``."""
    n_start, n_end = text.count(start), text.count(end)
    if n_start != 1 or n_end != 1:
        raise RegionCLIPError(
            f"{source}: expected the markers {start} and {end} once each, found {n_start} and {n_end}"
        )
    i, j = text.index(start), text.index(end)
    if j < i:
        raise RegionCLIPError(f"{source}: {end} comes before {start}")
    return text[: i + len(start)] + "\n" + content.strip("\n") + "\n" + text[j:]


# ------------------------------------------------------------------------------------------------ ablations
# results["ablations"] (``regionclip demo --ablations``, :mod:`regionclip.demo.ablations`)::
#
#     {"confidence": 0.95, "columns": [{"key": "region_top1_all", "label": "zero-shot region top-1, all"}, ...],
#      "delta": "AP50 novel",  # what the diff column is
#      "rows": [{"group": "pretraining supervision", "name": "region-concept only",
#                "metrics": {"region_top1_all": {"point", "lo", "hi"}, ...},  # columns a row lacks: blank
#                "diff": {"point", "lo", "hi"} or null}, ...]}               # paired, variant - default


def validate_ablations(ablations: Mapping[str, Any], source: str = "ablations") -> list[dict[str, Any]]:
    """The rows of an ablations dict, checked (one-line errors naming the field)."""
    columns = ablations.get("columns")
    if not isinstance(columns, list) or not columns or not all(isinstance(c, Mapping) for c in columns):
        raise RegionCLIPError(f"{source}: 'columns' must be a non-empty list of {{'key', 'label'}}")
    rows = ablations.get("rows")
    if not isinstance(rows, list) or not rows:
        raise RegionCLIPError(f"{source}: 'rows' must be a non-empty list")
    keys = {c["key"] for c in columns}
    out = []
    for i, row in enumerate(rows):
        where = f"{source}: rows[{i}]"
        if not isinstance(row, Mapping) or not row.get("name") or not isinstance(row.get("metrics"), Mapping):
            raise RegionCLIPError(f"{where}: expected a dict with 'group', 'name' and 'metrics'")
        unknown = sorted(set(row["metrics"]) - keys)
        if unknown:
            raise RegionCLIPError(f"{where} ({row['name']}): metrics {unknown} are not columns")
        metrics = {k: _check_interval(row["metrics"], k, f"{where} ({row['name']})") for k in row["metrics"]}
        diff = _check_interval(row, "diff", f"{where} ({row['name']})") if row.get("diff") else None
        out.append(
            {"group": str(row.get("group", "")), "name": row["name"], "metrics": metrics, "diff": diff}
        )
    return out


def ablation_table(ablations: Mapping[str, Any]) -> str:
    """The ablation table: one row per variant, ``point [lo, hi]`` per metric column (blank where a row does
    not measure it), and the paired difference to the default run with its finding."""
    rows = validate_ablations(ablations)
    pct = int(round(100 * float(ablations.get("confidence", 0.95))))
    columns = ablations["columns"]
    delta = ablations.get("delta", "the main metric")
    header = ["ablation", "variant", *[f"{c['label']} [{pct}% CI]" for c in columns],
              f"Δ {delta} vs default [{pct}% paired CI]", "finding"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(columns) + 1) + "---|"]
    for r in rows:
        cells = [r["group"], r["name"]]
        cells += [_fmt_interval(r["metrics"][c["key"]]) if c["key"] in r["metrics"] else "" for c in columns]
        if r["diff"] is None:
            cells += ["(the reference)", ""]
        else:
            w = winner(r["diff"])
            finding = {"RegionCLIP": "above default", "CLIP": "below default", None: "no difference shown"}[w]
            cells += [_fmt_interval(r["diff"], signed=True), finding]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ablation_block(ablations: Mapping[str, Any]) -> str:
    """The README's ablation block: the table and how to read it."""
    pct = int(round(100 * float(ablations.get("confidence", 0.95))))
    where = ", ".join(
        str(x) for x in (ablations.get("machine"), ablations.get("date"),
                         f"seed {ablations['seed']}" if "seed" in ablations else None) if x
    )  # fmt: skip
    note = (
        f"Each variant changes one thing of the default plan (its config overrides are in ablations.json); "
        f"{pct}% bootstrap intervals over {ablations.get('n_images', '?')} {ablations.get('split', 'test')} "
        f"images; a variant is called above or below the default only where the paired interval excludes 0."
        + (f" Measured on {where}; another CPU gives other digits." if where else "")
    )
    if ablations.get("variant_seconds"):
        note += f" The variants' stages took {float(ablations['variant_seconds']) / 60:.0f} minutes after the default run."
    return ablation_table(ablations) + "\n\n" + note


def readme_blocks(results: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """The README blocks a results dict generates: the demo table, and the ablations when it has them."""
    blocks = {(BLOCK_START, BLOCK_END): results_block(results)}
    if results.get("ablations"):
        blocks[(ABLATIONS_START, ABLATIONS_END)] = ablation_block(results["ablations"])
    return blocks


def read_block(text: str, start: str = BLOCK_START, end: str = BLOCK_END, source: str = "README.md") -> str:
    """What lies between the ``start`` and ``end`` marker lines of ``text`` (stripped of blank edges)."""
    replace_block(text, "", start, end, source)  # checks the markers
    return text[text.index(start) + len(start) : text.index(end)].strip("\n")


def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise RegionCLIPError(f"{path}: cannot read results JSON ({err})") from err
    if not isinstance(results, dict):
        raise RegionCLIPError(f"{path}: expected a JSON object")
    validate_results(results, str(path))
    return results


def update_readme(readme: str | Path, results_json: str | Path) -> bool:
    """Regenerate the marked blocks of ``readme`` from ``results_json`` (atomic write): the demo table and,
    when the results have ablations, the ablation block. True if the README changed."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    new = text
    for (start, end), content in readme_blocks(load_results(results_json)).items():
        new = replace_block(new, content, start, end, source=str(readme))
    if new == text:
        return False
    atomic_write_text(readme, new)
    return True


def readme_agrees(readme: str | Path, results_json: str | Path) -> bool:
    """Whether every marked block of ``readme`` that ``results_json`` generates is what it generates."""
    text = Path(readme).read_text(encoding="utf-8")
    new = text
    for (start, end), content in readme_blocks(load_results(results_json)).items():
        new = replace_block(new, content, start, end, source=str(readme))
    return new == text

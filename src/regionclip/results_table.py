"""The demo's results table and its sentences about who wins, generated from a results dict / results.json.

Pure functions, so the README can never state a claim its numbers do not carry: a direction ("RegionCLIP is
ahead of CLIP on X") is written only when the paired 95% interval of RegionCLIP - CLIP excludes 0;
otherwise the sentence is "no difference shown". :func:`update_readme` replaces the block between
``<!-- demo-table:start -->`` and ``<!-- demo-table:end -->`` of a README with the generated text.

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
            checked["seeds"] = {
                k: {f: _num(seeds[k][f]) for f in ("mean", "sd", "n")} for k in ("clip", "regionclip")
            }
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
    digits = 2 if x != 0 and round(x, 1) == 0 else 1  # never print a non-zero bound as 0.0
    text = f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"
    return text.replace("-", "−")


def _fmt_interval(iv: Mapping[str, float], signed: bool = False) -> str:
    if not math.isfinite(iv["point"]):
        return "n/a"
    return f"{_fmt(iv['point'], signed)} [{_fmt(iv['lo'], signed)}, {_fmt(iv['hi'], signed)}]"


def _fmt_seeds(s: Mapping[str, float]) -> str:
    if s["n"] < 1 or not math.isfinite(s["mean"]):
        return "n/a"
    if s["n"] < 2 or not math.isfinite(s["sd"]):
        return f"{_fmt(s['mean'])} (n=1)"
    return f"{_fmt(s['mean'])} ± {_fmt(s['sd'])}"


def _finding(w: str | None) -> str:
    return {"RegionCLIP": "RegionCLIP ahead", "CLIP": "CLIP ahead", None: "no difference shown"}[w]


def results_table(results: Mapping[str, Any]) -> str:
    """The markdown table: per row CLIP and RegionCLIP with their intervals, the paired difference and the
    finding (and, when the rows carry per-seed results, mean ± sd over the seeds)."""
    rows = validate_results(results)
    confidence = int(round(100 * float(results.get("confidence", 0.95))))
    with_seeds = all("seeds" in r for r in rows)
    n_seeds = int(max(r["seeds"]["clip"]["n"] for r in rows)) if with_seeds else 0
    header = ["metric (%)", f"CLIP [{confidence}% CI]", f"RegionCLIP [{confidence}% CI]",
              f"RegionCLIP − CLIP [{confidence}% paired CI]", "finding"]  # fmt: skip
    if with_seeds:
        header += [f"CLIP, mean ± sd ({n_seeds} seeds)", f"RegionCLIP, mean ± sd ({n_seeds} seeds)"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * 3 + "---|" + "---:|" * (len(header) - 5)]
    for r in rows:
        cells = [r["name"], _fmt_interval(r["clip"]), _fmt_interval(r["regionclip"]),
                 _fmt_interval(r["diff"], signed=True), _finding(winner(r["diff"]))]  # fmt: skip
        if with_seeds:
            cells += [_fmt_seeds(r["seeds"]["clip"]), _fmt_seeds(r["seeds"]["regionclip"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    """Regenerate the marked block of ``readme`` from ``results_json`` (atomic write); True if it changed."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    new = replace_block(text, results_block(load_results(results_json)), source=str(readme))
    if new == text:
        return False
    atomic_write_text(readme, new)
    return True


def readme_agrees(readme: str | Path, results_json: str | Path) -> bool:
    """Whether the marked block of ``readme`` is what ``results_json`` generates (for a test)."""
    text = Path(readme).read_text(encoding="utf-8")
    return replace_block(text, results_block(load_results(results_json)), source=str(readme)) == text

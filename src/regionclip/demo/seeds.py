"""``regionclip demo --seeds N``: the whole plan under seeds 0..N-1, then mean ± sd per results row.

The world is fixed (seed :data:`regionclip.demo.WORLD_SEED`, one folder ``OUT/world`` shared by every run);
each seed's run lies in ``OUT/seed_<s>/`` with its own stage cache, so a re-run resumes and a larger N only
runs the new seeds. Every training stage (teacher, RPN, pretraining, detectors) takes the seed, so the spread
is training-run spread on one world (method notes: ``shared/reference/experiments.md``, "Seeds"). The index
stage is left out (it is not in the table).

Outputs: ``OUT/results_seeds.json`` (the results_table format: the rows of seed 0 with their bootstrap
intervals, each with ``seeds: {clip, regionclip, diff: {mean, sd, n}}`` and ``per_seed`` values) and
``OUT/results_seeds.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from regionclip.demo.context import WORLD_SEED, DemoPlan
from regionclip.demo.run import run_demo
from regionclip.errors import RegionCLIPError
from regionclip.eval.seeds import aggregate_seeds
from regionclip.io import atomic_write_json, atomic_write_text
from regionclip.results_table import load_results, results_block

SIDES = ("clip", "regionclip", "diff")


def seeds_results(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate the seeds' results dicts (each a ``results.json``, in seed order) into one results dict:
    seed 0's rows and intervals, each row with mean ± sd over the seeds of its CLIP, RegionCLIP and
    difference points. Every run must have the same rows."""
    if not per_seed:
        raise RegionCLIPError("demo --seeds: no runs to aggregate")
    names = [r["name"] for r in per_seed[0]["rows"]]
    values = []
    for i, results in enumerate(per_seed):
        rows = {r["name"]: r for r in results["rows"]}
        if list(rows) != names:
            raise RegionCLIPError(f"demo --seeds: run {i} has other rows than run 0")
        values.append({f"{n}\t{side}": rows[n][side]["point"] for n in names for side in SIDES})
    summary = aggregate_seeds(values)
    rows = []
    for row in per_seed[0]["rows"]:
        n = row["name"]
        rows.append(
            {
                **row,
                "seeds": {side: summary[f"{n}\t{side}"].to_dict() for side in SIDES},
                "per_seed": {side: [v[f"{n}\t{side}"] for v in values] for side in SIDES},
            }
        )
    first = per_seed[0]
    keep = ("machine", "cpu", "cores", "platform", "python", "torch", "date", "split", "n_images",
            "resamples", "confidence", "world_seed")  # fmt: skip
    return {
        **{k: first[k] for k in keep if k in first},
        "seed": first["seed"],
        "seeds": [r["seed"] for r in per_seed],
        "rows": rows,
    }


def seeds_markdown(results: Mapping[str, Any]) -> str:
    seeds = ", ".join(str(s) for s in results["seeds"])
    return f"""# regionclip demo over seeds {seeds}

The whole plan was run once per seed on the same world (world seed {results.get("world_seed", WORLD_SEED)});
every training stage took the seed. The interval columns are seed {results["seed"]}'s run (95% bootstrap over
test images, paired for the difference); the last columns are mean ± sample sd of the point estimates over
the seeds: the run-to-run spread, which the bootstrap interval of one run does not contain.

{results_block(results)}
"""


def run_seeds(
    size: str,
    out_dir: str | Path,
    n_seeds: int,
    device: str | None = None,
    plan: DemoPlan | None = None,
) -> dict[str, Any]:
    """Run the plan for seeds 0..n_seeds-1 (``OUT/seed_<s>``, world shared in ``OUT/world``) and write
    ``OUT/results_seeds.json`` / ``.md``; returns the aggregated results dict."""
    if n_seeds < 1:
        raise RegionCLIPError(f"demo --seeds: expected a number >= 1, got {n_seeds}")
    out = Path(out_dir)
    per_seed = []
    for seed in range(n_seeds):
        print(f"\n[demo] ##### seed {seed} of 0..{n_seeds - 1} #####", flush=True)
        folder = out / f"seed_{seed}"
        run_demo(size, folder, seed, device, plan=plan, world_dir=out / "world", skip=("index",))
        per_seed.append(load_results(folder / "results.json"))
    results = seeds_results(per_seed)
    atomic_write_json(out / "results_seeds.json", results)
    atomic_write_text(out / "results_seeds.md", seeds_markdown(results))
    print(f"\n{results_block(results)}\n\n[demo] {n_seeds} seeds: {out}/results_seeds.md")
    return results

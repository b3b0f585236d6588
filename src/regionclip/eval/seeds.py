"""Run-to-run spread: per-seed results rows aggregated into mean ± sample standard deviation per row.

A "row" is one number of the results table (e.g. ``"transfer AP50 novel, RegionCLIP"``); each seed's run
gives a mapping ``{row: value}``. The spread is the sample standard deviation (n - 1 in the denominator),
next to the bootstrap interval of one run (method notes: ``shared/reference/experiments.md``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from regionclip.errors import RegionCLIPError


@dataclass(frozen=True)
class SeedSummary:
    """Mean and sample sd of one row over the seeds where it is a finite number."""

    mean: float  # NaN when no seed gave a finite value
    sd: float  # sample sd (n - 1); NaN when n < 2
    n: int  # seeds with a finite value

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def format(self, digits: int = 1) -> str:
        """``"12.3 ± 0.4 (n=3)"``; ``"12.3 (n=1)"`` for one seed; ``"n/a"`` for none."""
        if self.n == 0:
            return "n/a"
        if self.n == 1:
            return f"{self.mean:.{digits}f} (n=1)"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f} (n={self.n})"


def summarize_values(values: Sequence[float]) -> SeedSummary:
    """Mean ± sample sd of the finite ``values`` (NaN entries, e.g. a split without GT, are left out)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(finite)
    if n == 0:
        return SeedSummary(math.nan, math.nan, 0)
    mean = sum(finite) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else math.nan
    return SeedSummary(mean, sd, n)


def aggregate_seeds(per_seed: Sequence[Mapping[str, float]]) -> dict[str, SeedSummary]:
    """``{row: SeedSummary}`` over the seeds' ``{row: value}`` mappings, rows in first-seen order.

    Every seed must report the same rows (a row missing from one run means the runs are not comparable).
    """
    if not per_seed:
        raise RegionCLIPError("aggregate_seeds: no per-seed results")
    rows = list(per_seed[0])
    for i, result in enumerate(per_seed):
        if set(result) != set(rows):
            missing = sorted(set(rows) - set(result))
            extra = sorted(set(result) - set(rows))
            raise RegionCLIPError(
                f"aggregate_seeds: run {i} has other rows than run 0 (missing {missing[:3]}, extra {extra[:3]})"
            )
    return {row: summarize_values([result[row] for result in per_seed]) for row in rows}

"""``regionclip demo --ablations``: the paper's ablations in miniature, each a variant of the default plan.

A :class:`Variant` changes one thing: dotted config overrides applied to a stage's config after the demo
builds it (:func:`regionclip.demo.apply_stage_overrides`; ``pretrain`` and ``transfer`` take the keys of
:class:`~regionclip.pretrain.config.PretrainConfig` / :class:`~regionclip.commands.train_detector.
TrainDetectorConfig`, ``concepts`` takes ``captions=train|web``), plan fields replaced for the stages it redoes
(the capacity rows' ``model``), and the stages it redoes; every other stage is the default run's, reused
from its folder (the default run is run first, or resumed). Each variant lies in
``OUT/ablations/<slug>/`` with its own stage cache (keys include the overrides and the default stages it
reuses), so a re-run resumes.

Rows (:data:`VARIANTS`): pretraining supervision (none = the teacher / image-text only / region-concept only
/ both = the default), region type (RPN / random boxes), concept pool source (scene / web captions), region
losses (contrastive / distillation / both), teacher vs student capacity (an ``RN-small`` student, initialised
from an ``RN-small`` CLIP trained on the web pairs like the teacher, taught by the ``RN-tiny`` teacher),
focal scaling / background weight on or off in transfer (RegionCLIP initialisation), and, beyond the paper,
the detector's optimiser (AdamW instead of the official SGD, same schedule). Metrics on the test
split with 95% bootstrap intervals (:mod:`regionclip.demo.stats`): zero-shot region top-1 on GT boxes (all,
novel) and zero-shot AP50 novel on RPN boxes for the pretraining rows, novel / base AP50 for the transfer
rows, and each row's paired difference to the default in novel AP50.

Outputs: ``OUT/ablations.json`` (the format of :func:`regionclip.results_table.ablation_table`),
``OUT/ablations.md``, ``OUT/figures/ablations.png``, and the ablation section of ``OUT/results.json`` /
``OUT/results.md``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regionclip.demo.context import DemoContext, DemoPlan, n_test_images
from regionclip.demo.run import _stages, demo_context, run_stages
from regionclip.demo.stats import (
    BOOTSTRAP,
    TABLE_SPLIT,
    ap50_cache,
    ap50_interval_dict,
    detections_path,
    region_hits,
    region_intervals,
)
from regionclip.errors import RegionCLIPError
from regionclip.io import atomic_write_json, atomic_write_text
from regionclip.plots import interval_chart
from regionclip.results_table import ABLATIONS_END, ABLATIONS_START, ablation_block, replace_block

ZEROSHOT_RPN_EVAL = (
    "zeroshot_{stage}_rpn"  # the zero-shot eval on RPN boxes of a model stage (regionclip.demo.evaluation)
)
TRANSFER_EVAL = "transfer_regionclip"  # the RegionCLIP-init detector's eval (classifier alone, COCO recipe)
COLUMNS = [
    {"key": "region_top1_all", "label": "zero-shot region top-1, all (GT boxes)"},
    {"key": "region_top1_novel", "label": "zero-shot region top-1, novel (GT boxes)"},
    {"key": "zeroshot_ap50_novel", "label": "zero-shot AP50 novel (RPN boxes)"},
    {"key": "transfer_ap50_novel", "label": "transfer AP50 novel"},
    {"key": "transfer_ap50_base", "label": "transfer AP50 base"},
]
PRETRAIN_REDO = ("pretrain", "zeroshot")


@dataclass(frozen=True)
class Variant:
    """One ablation row: what it changes against the default plan."""

    group: str  # the ablation (row group)
    name: str  # the variant
    kind: str  # "pretrain" (zero-shot metrics of the student) or "transfer" (a RegionCLIP-init detector)
    overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)  # config stage -> dotted overrides
    redo: tuple[str, ...] = PRETRAIN_REDO  # stages run for the variant; the rest are the default run's
    plan: dict[str, Any] = field(default_factory=dict)  # DemoPlan fields replaced for the redone stages
    model_stage: str = "pretrain"  # the stage whose clip checkpoint the row measures (pretrain rows)
    reference: bool = False  # the row is the default run itself (no run, no difference)
    also: tuple[tuple[str, str], ...] = ()  # further rows of the same run: (model stage, row name)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", f"{self.group} {self.name}".lower()).strip("-")


# official loss weights are 1, 1, 1; a variant switches losses off (0) and keeps the plan's other weights
VARIANTS: list[Variant] = [
    Variant("default", "full pretraining (the default plan)", "pretrain", reference=True),
    Variant(
        "default",
        "transfer, focal scaling and background weight 0.2 (the default)",
        "transfer",
        reference=True,
    ),
    Variant("pretraining supervision", "none (the teacher)", "pretrain", reference=True, model_stage="clip"),
    Variant(
        "pretraining supervision",
        "image-text only",
        "pretrain",
        {"pretrain": ("loss.weight_region_concept=0", "loss.weight_region_distill=0")},
    ),
    Variant(
        "pretraining supervision",
        "region-concept only",
        "pretrain",
        {"pretrain": ("loss.weight_image_text=0",)},
    ),
    Variant("region type", "random boxes", "pretrain", {"pretrain": ("proposals.kind=random",)}),
    Variant(
        "concept pool",
        "web captions",
        "pretrain",
        {"concepts": ("captions=web",)},
        redo=("concepts", *PRETRAIN_REDO),
    ),
    Variant(
        "region losses",
        "contrastive only (+ image-text)",
        "pretrain",
        {"pretrain": ("loss.weight_region_distill=0",)},
    ),
    Variant(
        "region losses",
        "distillation only (+ image-text)",
        "pretrain",
        {"pretrain": ("loss.weight_region_concept=0",)},
    ),
    Variant(
        "capacity",
        "student RN-small, teacher RN-tiny",
        "pretrain",
        {
            "pretrain": (
                "model.teacher_preset={default_model}",
                "model.teacher_weights={default_clip}",
                "concepts.teacher_bank={default_bank}",
            )
        },
        redo=("clip", "concepts", *PRETRAIN_REDO),
        plan={"model": "RN-small"},
        also=(("clip", "RN-small CLIP (the student's initialisation), no pretraining"),),
    ),
    Variant(
        "transfer",
        "no focal scaling (plain CE)",
        "transfer",
        {"transfer": ("detector.cls_loss=weighted_ce",)},
        redo=("transfer_regionclip",),
    ),
    Variant(
        "transfer",
        "background weight 1 (off)",
        "transfer",
        {"transfer": ("detector.bg_loss_weight=1.0",)},
        redo=("transfer_regionclip",),
    ),
    Variant(
        "transfer",
        "neither",
        "transfer",
        {"transfer": ("detector.cls_loss=weighted_ce", "detector.bg_loss_weight=1.0")},
        redo=("transfer_regionclip",),
    ),
    # not one of the paper's ablations: the plan's SGD at the linear-scaled LR barely moves the detector in
    # its 0.35 epochs (docs/world.md); AdamW at Swin's fine-tuning recipe for Mask R-CNN is the same schedule
    # with the steps normalised per parameter
    Variant(
        "detector optimiser",
        "AdamW (lr 1e-4, weight decay 0.05; Swin's fine-tuning recipe)",
        "transfer",
        {"transfer": ("train.optimizer=adamw", "train.lr=0.0001", "train.weight_decay=0.05")},
        redo=("transfer_regionclip",),
    ),
]
GROUPS = sorted({v.group for v in VARIANTS if v.group != "default"})
REUSED = ("world", "clip", "concepts", "rpn", "pretrain")  # default stages a variant may reuse


def select(groups: str | None, variants: Sequence[Variant] = VARIANTS) -> list[Variant]:
    """The variants of the comma-separated ``groups`` ("all" or None: every one), the defaults always."""
    if groups in (None, "", "all"):
        return list(variants)
    wanted = [g.strip() for g in groups.split(",") if g.strip()]
    known = {v.group for v in variants}
    bad = [g for g in wanted if g not in known]
    if bad:
        raise RegionCLIPError(
            f"demo --ablations: unknown group {bad[0]!r}; known: {', '.join(sorted(known))}"
        )
    return [v for v in variants if v.group in wanted or v.group == "default"]


def variant_overrides(variant: Variant, default: DemoContext) -> dict[str, list[str]]:
    """The variant's overrides with the default run's outputs filled in (``{default_clip}``: the teacher
    checkpoint, ``{default_bank}``: its concept bank, ``{default_model}``: its preset)."""
    fill = {
        "default_clip": default.results["clip"]["checkpoint"],
        "default_bank": default.results["concepts"]["bank"],
        "default_model": default.plan.model,
    }
    return {stage: [item.format(**fill) for item in items] for stage, items in variant.overrides.items()}


def variant_context(variant: Variant, default: DemoContext, out: Path) -> DemoContext:
    """The context a variant runs in: its plan, overrides and folder, the default run's results for the
    stages it does not redo (and its world)."""
    plan = dataclasses.replace(default.plan, **variant.plan) if variant.plan else default.plan
    reused = {n: default.results[n] for n in REUSED if n not in variant.redo}
    ctx = DemoContext(plan, out / "ablations" / variant.slug, default.seed, default.device, reused)
    ctx.overrides = variant_overrides(variant, default)
    ctx.world_dir = Path(default.results["world"]["root"])
    ctx.world_seed = default.world_seed
    ctx.only_models = (
        (variant.model_stage, *(m for m, _ in variant.also)) if variant.kind == "pretrain" else None
    )
    return ctx


def _variant_stages(variant: Variant) -> list[tuple[str, Callable[[DemoContext], dict]]]:
    stages = dict(_stages())
    unknown = [n for n in variant.redo if n not in stages]
    if unknown:
        raise RegionCLIPError(f"ablation {variant.name!r}: unknown stage {unknown[0]!r}")
    return [(n, stages[n]) for n in variant.redo]


def _cells(intervals: dict, keys: dict[str, str]) -> dict[str, dict[str, float]]:
    return {col: intervals[key].to_dict() for col, key in keys.items()}


def _pretrain_row(ctx: DemoContext, stage: str, ref_zs, reference: bool) -> dict[str, Any]:
    hits = region_hits(ctx, ctx.results[stage]["checkpoint"])
    zs = ap50_cache(ctx, detections_path(ctx, ZEROSHOT_RPN_EVAL.format(stage=stage)))
    metrics = {
        **_cells(
            region_intervals(ctx, hits),
            {"region_top1_all": "acc_top1", "region_top1_novel": "acc_top1_novel"},
        ),
        **_cells(ap50_interval_dict(ctx, zs), {"zeroshot_ap50_novel": "AP50_novel"}),
    }
    diff = None if reference else ap50_interval_dict(ctx, zs, ref_zs)["AP50_novel"].to_dict()
    return {"metrics": metrics, "diff": diff}


def ablation_rows(default: DemoContext, runs: Sequence[tuple[Variant, DemoContext]]) -> list[dict[str, Any]]:
    """The ablation table's rows: each variant's metrics on the test split with intervals, and its paired
    difference to the default in novel AP50 (zero-shot for pretraining rows, transfer for transfer rows)."""
    ref_zs = ap50_cache(default, detections_path(default, ZEROSHOT_RPN_EVAL.format(stage="pretrain")))
    ref_tr = ap50_cache(default, detections_path(default, TRANSFER_EVAL))
    rows = []
    for variant, ctx in runs:
        seconds = 0.0 if variant.reference else sum(ctx.results[n]["seconds"] for n in variant.redo)
        common = {"group": variant.group, "overrides": ctx.overrides, "plan": variant.plan,
                  "redo": [] if variant.reference else list(variant.redo), "seconds": seconds}  # fmt: skip
        if variant.kind == "pretrain":
            is_ref = variant.reference and variant.model_stage == "pretrain"
            rows.append({**common, "name": variant.name,
                         **_pretrain_row(ctx, variant.model_stage, ref_zs, is_ref)})  # fmt: skip
            for stage, name in variant.also:
                rows.append({**common, "name": name, **_pretrain_row(ctx, stage, ref_zs, False)})
        else:
            tr = ap50_cache(ctx, detections_path(ctx, TRANSFER_EVAL))
            keys = {"transfer_ap50_novel": "AP50_novel", "transfer_ap50_base": "AP50_base"}
            diff = None if variant.reference else ap50_interval_dict(ctx, tr, ref_tr)["AP50_novel"].to_dict()
            rows.append({**common, "name": variant.name, "metrics": _cells(ap50_interval_dict(ctx, tr), keys),
                         "diff": diff})  # fmt: skip
    return rows


def run_ablations(
    size: str = "default",
    out_dir: str | Path = "regionclip-demo",
    seed: int = 0,
    device: str | None = None,
    *,
    groups: str | None = None,
    plan: DemoPlan | None = None,
    variants: Sequence[Variant] = VARIANTS,
) -> dict[str, Any]:
    """Run (or resume) the default plan in ``out_dir``, then every selected variant; write the ablation
    table (see the module doc) and return the ablations dict."""
    from regionclip.demo.evaluation import machine

    start = time.perf_counter()
    out = Path(out_dir)
    default = demo_context(size, out, seed, device, plan=plan)
    runs = []
    for variant in select(groups, variants):
        if variant.reference:
            runs.append((variant, default))
            continue
        print(f"\n[demo] ##### ablation: {variant.group}: {variant.name} #####", flush=True)
        ctx = variant_context(variant, default, out)
        run_stages(ctx, _variant_stages(variant))
        runs.append((variant, ctx))
    rows = ablation_rows(default, runs)
    ablations = {
        **machine(),
        "date": datetime.date.today().isoformat(),
        "seed": seed,
        "split": TABLE_SPLIT,
        "n_images": n_test_images(default.plan),
        "resamples": BOOTSTRAP.n_resamples,
        "confidence": BOOTSTRAP.confidence,
        "columns": COLUMNS,
        "delta": "novel AP50",
        "rows": rows,
        "seconds": time.perf_counter() - start,  # this invocation (cached variants cost ~nothing)
        # the variants' stages, cached ones included: what the table cost on the machine that ran them
        "variant_seconds": sum(
            ctx.results[n]["seconds"] for v, ctx in runs if not v.reference for n in v.redo
        ),
    }
    write_ablations(out, ablations)
    return ablations


def write_ablations(out: Path, ablations: dict[str, Any]) -> None:
    """``ablations.json`` / ``.md``, the chart, and the ablation section of ``results.json`` / ``results.md``."""
    block = ablation_block(ablations)
    atomic_write_json(out / "ablations.json", ablations)
    atomic_write_text(out / "ablations.md", f"# regionclip demo: ablations\n\n{block}\n")
    labels, intervals = [], []
    for row in ablations["rows"]:
        key = "zeroshot_ap50_novel" if "zeroshot_ap50_novel" in row["metrics"] else "transfer_ap50_novel"
        labels.append(f"{row['name']} ({'zero-shot' if key.startswith('zeroshot') else 'transfer'})")
        intervals.append(row["metrics"][key])
    interval_chart(labels, intervals, out / "figures" / "ablations.png",
                   "Ablations: novel AP50 on the test split")  # fmt: skip
    results_json = out / "results.json"
    if results_json.is_file():
        results = json.loads(results_json.read_text(encoding="utf-8"))
        results["ablations"] = ablations
        atomic_write_json(results_json, results)
    results_md = out / "results.md"
    if results_md.is_file():
        text = results_md.read_text(encoding="utf-8")
        if ABLATIONS_START in text:
            atomic_write_text(
                results_md, replace_block(text, block, ABLATIONS_START, ABLATIONS_END, str(results_md))
            )
    print(f"\n{block}\n\n[demo] ablations: {out}/ablations.md")

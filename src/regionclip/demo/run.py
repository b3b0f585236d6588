"""The miniature-world demo: the RegionCLIP paper end to end on a CPU (``regionclip demo``): the driver.

Stages, each run through the public command line exactly as a user would, with its config written to
``OUT/configs/`` and its result cached in ``OUT/<stage>/stage.json`` (a re-run resumes after the last
finished stage; a stage interrupted mid-training resumes from its last checkpoint):

1. ``world``: generate the miniature world (``make-world``);
2. ``clip``: train a tiny CLIP teacher (``train-clip``) on the world's web pairs (iconic single-object
   images with alt-text captions, the stand-in for CLIP's web-scale data); it stands in for OpenAI CLIP,
   which cannot be downloaded here. The cluttered scenes and their captions are left for RegionCLIP, as
   CC3M / COCO Captions are in the paper;
3. ``concepts``: parse the captions into a concept pool and embed it with the teacher
   (``concepts``, ``embed-concepts``);
4. ``rpn``: train a class-agnostic RPN on base-class boxes (``train-rpn``);
5. ``pretrain``: RegionCLIP pretraining of the student (``pretrain``);
6. ``zeroshot``: region classification on ground-truth boxes and zero-shot detection, CLIP vs RegionCLIP;
7. ``transfer_clip`` / ``transfer_regionclip``: detectors trained on base classes from each initialisation
   (``train-detector``), evaluated on novel / base / all AP50 (``eval``) in one pass with three scorings:
   the classifier alone, + the RPN score, and ``detector.ensemble=frozen`` (scores ensembled with the frozen
   region classifier they started from, :mod:`regionclip.detect.ensemble`);
8. ``report``: ``results.json``, ``results.md``, figures, and the table printed at the end;
9. ``index``: the val images indexed once and searched for novel names (:mod:`regionclip.demo.index`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from regionclip.demo import calibrate, evaluation, index
from regionclip.demo.context import DEMO_VERSION, PLANS, WORLD_SEED, DemoContext, DemoPlan, n_test_images
from regionclip.demo.stages import stage_clip, stage_concepts, stage_pretrain, stage_rpn, stage_world
from regionclip.errors import RegionCLIPError
from regionclip.io import atomic_write_json

# ---------------------------------------------------------------------------------------------------------
# driver

Stage = Callable[[DemoContext], dict]


def _stages() -> list[tuple[str, Stage]]:

    return [
        ("world", stage_world),
        ("clip", stage_clip),
        ("concepts", stage_concepts),
        ("rpn", stage_rpn),
        ("calibrate", calibrate.stage_calibrate),
        ("pretrain", stage_pretrain),
        ("zeroshot", evaluation.stage_zeroshot),
        ("transfer_clip", evaluation.stage_transfer_clip),
        ("transfer_regionclip", evaluation.stage_transfer_regionclip),
        ("report", evaluation.stage_report),
        ("index", index.stage_index),
    ]


def _world_fields(plan: DemoPlan) -> dict[str, Any]:
    """The plan fields the world depends on (those named ``world*`` / ``test*``) and its test size."""
    fields = {k: v for k, v in asdict(plan).items() if k.startswith(("world", "test"))}
    return {**fields, "test_images": n_test_images(plan)}


def _stage_key(
    plan: DemoPlan,
    seed: int,
    name: str,
    world_seed: int = WORLD_SEED,
    overrides: dict[str, list[str]] | None = None,
    upstream: Sequence[str] = (),
) -> str:
    """The cache key of a stage: the world's depends only on the world fields and the world seed (so the
    runs of ``--seeds`` share it), every other stage's on the whole plan, the seeds, the config overrides
    and the keys of the stages it reuses from another run (``upstream``)."""
    if name == "world":
        payload: dict[str, Any] = {"world": _world_fields(plan), "seed": world_seed}
    else:
        payload = {"plan": asdict(plan), "seed": seed, "world_seed": world_seed}
        if overrides:
            payload["overrides"] = {k: list(v) for k, v in sorted(overrides.items()) if v}
        if upstream:
            payload["upstream"] = list(upstream)
    payload.update(stage=name, version=DEMO_VERSION)
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _record_path(ctx: DemoContext, name: str) -> Path:
    if name == "world":
        return (ctx.world_dir or ctx.out / "world") / "stage.json"
    return ctx.out / name / "stage.json"


def run_stages(ctx: DemoContext, stages: Sequence[tuple[str, Stage]]) -> None:
    """Run (or reuse) ``stages`` in order into ``ctx.results``. A stage whose ``stage.json`` has the same key
    is reused; once one is redone, every later one is too. Results already in ``ctx.results`` (stages reused
    from another run, e.g. the default run under an ablation) enter every key."""
    upstream = [f"{n}:{r['key']}" for n, r in sorted(ctx.results.items())]
    stale = False
    for name, stage in stages:
        record = _record_path(ctx, name)
        key = _stage_key(ctx.plan, ctx.seed, name, ctx.world_seed, ctx.overrides, upstream)
        if not stale and record.is_file():
            cached = json.loads(record.read_text(encoding="utf-8"))
            if cached.get("key") == key:
                print(f"[demo] {name}: done before ({cached['seconds']:.0f} s), reusing {record}", flush=True)
                ctx.results[name] = cached
                continue
        stale = True  # every later stage depends on this one
        print(f"\n[demo] ===== {name} =====", flush=True)
        t0 = time.perf_counter()
        result = stage(ctx)
        result.update({"key": key, "seconds": time.perf_counter() - t0})
        atomic_write_json(record, result)
        ctx.results[name] = result


def demo_context(
    size: str = "default",
    out_dir: str | Path = "regionclip-demo",
    seed: int = 0,
    device: str | None = None,
    *,
    plan: DemoPlan | None = None,
    world_dir: str | Path | None = None,
    skip: Sequence[str] = (),
) -> DemoContext:
    """Run (or resume) the demo's stages; returns the context with every stage's result (see
    :func:`run_demo`)."""
    if plan is None and size not in PLANS:
        raise RegionCLIPError(f"unknown demo size {size!r}: expected one of {', '.join(PLANS)}")
    ctx = DemoContext(plan or PLANS[size], Path(out_dir), seed, device, {})
    ctx.world_dir = Path(world_dir) if world_dir is not None else None
    run_stages(ctx, [(n, s) for n, s in _stages() if n not in set(skip)])
    return ctx


def run_demo(
    size: str = "default",
    out_dir: str | Path = "regionclip-demo",
    seed: int = 0,
    device: str | None = None,
    *,
    plan: DemoPlan | None = None,
    world_dir: str | Path | None = None,
    skip: Sequence[str] = (),
) -> dict:
    """Run (or resume) the demo; returns the report stage's result (the results table and paths).

    seed: of every training stage (the world is always :data:`WORLD_SEED`); plan: instead of ``PLANS[size]``
    (tests); world_dir: the world's folder (default ``OUT/world``); skip: stage names left out (``--seeds``
    leaves out the index)."""
    start = time.perf_counter()
    ctx = demo_context(size, out_dir, seed, device, plan=plan, world_dir=world_dir, skip=skip)
    stages = [n for n, _ in _stages() if n in ctx.results]
    total = time.perf_counter() - start
    report = ctx.results["report"]
    print(report.get("table", ""))
    stage_seconds = ", ".join(f"{n} {ctx.results[n]['seconds']:.0f}s" for n in stages)
    print(
        f"\n[demo] total time {total:.0f} s this run (stages: {stage_seconds}); results in {ctx.out}/results.md"
    )
    return report

"""The miniature-world demo: the RegionCLIP paper end to end on a CPU (``regionclip demo``).

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
   (``train-detector``), evaluated on novel / base / all AP50 (``eval``);
   ``ensemble``: both evaluated again with ``detector.ensemble=frozen`` (scores ensembled with the frozen
   region classifier they started from, :mod:`regionclip.detect.ensemble`);
8. ``report``: ``results.json``, ``results.md``, figures, and the table printed at the end;
9. ``index``: the val images indexed once and searched for novel names (:mod:`regionclip.demo_index`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from regionclip.config import apply_overrides, config_from_dict, config_to_dict
from regionclip.errors import RegionCLIPError
from regionclip.io import atomic_write_json, atomic_write_text

DEMO_VERSION = 1
WORLD_SEED = 0  # the world is fixed per table (docs/world.md, "Plan for issue 12"); --seed varies training
TEST_IMAGES = {"quick": 120, "default": 400}  # held-out test scenes per world size (plan.test_images wins)


@dataclass(frozen=True)
class OfficialSchedule:
    """An official RegionCLIP schedule, the source the demo's schedules are scaled from."""

    lr: float  # base learning rate
    batch: int  # images per step (all GPUs)
    steps: int  # schedule length
    warmup: int  # linear warm-up steps
    milestones: tuple[float, ...]  # LR x0.1 at these fractions of the schedule


# official pretraining (CC3M / COCO, 8 x 12 GPUs-images: SOLVER.BASE_LR 0.002, IMS_PER_BATCH 96, 600k steps,
# warm-up 1000, steps 300k / 525k) and COCO transfer (1x: 0.002 at 16 images, 90k steps, warm-up 5000,
# steps 60k / 80k)
OFFICIAL_PRETRAIN = OfficialSchedule(0.002, 96, 600_000, 1000, (0.5, 0.875))
OFFICIAL_DETECTOR = OfficialSchedule(0.002, 16, 90_000, 5000, (0.666667, 0.888889))
# detectron2's RPN-only C4 recipe (rpn_R_50_C4_1x: 0.02 at 16 images, 90k steps, warm-up 1000)
OFFICIAL_RPN = OfficialSchedule(0.02, 16, 90_000, 1000, (0.666667, 0.888889))
WARMUP_FLOOR = 30  # the official warm-up fractions are under one step of any CPU schedule: at least 30


def scaled_lr(official: OfficialSchedule, batch: int) -> float:
    """The linear scaling rule: the official LR x batch / official batch."""
    return official.lr * batch / official.batch


def scaled_warmup(official: OfficialSchedule, steps: int) -> int:
    """Warm-up as the official fraction of the schedule, at least :data:`WARMUP_FLOOR` steps and at most a
    third of the schedule (only the quick smoke-test schedules are that short)."""
    fraction = math.ceil(steps * official.warmup / official.steps)
    return max(1, min(max(fraction, WARMUP_FLOOR), steps // 3))


@dataclass(frozen=True)
class DemoPlan:
    """How much of everything one demo size does (all on the CPU). Learning rates, warm-ups and LR steps are
    not fields: they follow from the batch sizes and step counts by :func:`scaled_lr` / :func:`scaled_warmup`
    (docs/world.md, "Plan for issue 12")."""

    world: str  # miniature-world size: "quick" or "default"
    world_version: int  # miniature-world generator version (3: COCO's OVD shape, sizes matched to COCO)
    test_images: int  # images of the held-out test split (the table; never used for a choice)
    model: str  # CLIP preset of teacher and student
    clip_steps: int  # teacher CLIP training steps
    clip_batch: int  # teacher CLIP batch (image-caption pairs)
    clip_lr: float  # teacher CLIP learning rate (AdamW, batch-statistics BN: CLIP's own recipe)
    min_count: int  # concept-pool frequency threshold (the paper: 100 on COCO Captions)
    rpn_steps: int  # RPN training steps
    rpn_batch: int  # RPN images per step
    pretrain_steps: int  # RegionCLIP pretraining steps
    pretrain_batch: int  # pretraining images per step
    regions_per_image: int  # proposals sampled per image in pretraining (official 100)
    detector_steps: int  # detector training steps (each initialisation)
    detector_batch: int  # detector images per step
    detector_rois: int  # RoIs sampled per training image (official 512; fewer on the CPU)
    eval_proposals: int  # RPN proposals per image at evaluation (official 1000; the region head's cost)
    image_size: int  # detection / region resolution (shorter side; world images are 160 px)

    @property
    def pretrain_lr(self) -> float:
        return scaled_lr(OFFICIAL_PRETRAIN, self.pretrain_batch)

    @property
    def detector_lr(self) -> float:
        return scaled_lr(OFFICIAL_DETECTOR, self.detector_batch)


PLANS: dict[str, DemoPlan] = {
    "quick": DemoPlan(
        world="quick",
        world_version=3,
        test_images=120,
        model="RN-tiny",
        clip_steps=60,
        clip_batch=32,
        clip_lr=0.001,
        min_count=5,
        rpn_steps=40,
        rpn_batch=8,
        pretrain_steps=20,
        pretrain_batch=8,
        regions_per_image=32,
        detector_steps=20,
        detector_batch=8,
        detector_rois=32,
        eval_proposals=50,
        image_size=160,
    ),
    "default": DemoPlan(
        world="default",
        world_version=3,
        test_images=400,
        model="RN-tiny",
        clip_steps=250,
        clip_batch=64,
        clip_lr=0.001,
        min_count=20,
        rpn_steps=250,
        rpn_batch=8,
        pretrain_steps=100,
        pretrain_batch=8,
        regions_per_image=50,
        detector_steps=130,
        detector_batch=8,
        detector_rois=32,
        eval_proposals=100,
        image_size=160,
    ),
}


def _cli(*argv: str) -> None:
    """Run a ``regionclip`` sub-command in this process, as a user would from the shell."""
    from regionclip.cli import main

    print(f"\n$ regionclip {' '.join(argv)}", flush=True)
    code = main(list(argv))
    if code != 0:
        raise RegionCLIPError(f"demo: 'regionclip {argv[0]}' failed with exit status {code}")


def _write_config(out: Path, name: str, cfg: Any) -> Path:
    import yaml

    path = out / "configs" / f"{name}.yaml"
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path


@dataclass
class DemoContext:
    plan: DemoPlan
    out: Path
    seed: int  # seed of every training stage
    device: str | None
    results: dict[str, dict]  # stage name -> its stage.json
    overrides: dict[str, list[str]] = field(default_factory=dict)  # config stage -> dotted key=value
    world_dir: Path | None = None  # where the world lives (None: OUT/world); shared by --seeds runs
    world_seed: int = WORLD_SEED  # seed of make-world
    only_models: tuple[str, ...] | None = None  # zero-shot: only these model stages (None: all)


def n_test_images(plan: DemoPlan) -> int:
    """Held-out test scenes of the plan's world: ``plan.test_images`` when the plan has that field, else
    :data:`TEST_IMAGES` of its size (400 default, 120 quick)."""
    return int(getattr(plan, "test_images", None) or TEST_IMAGES.get(plan.world, 400))


C = TypeVar("C")


def apply_stage_overrides(ctx: DemoContext, stage: str, cfg: C) -> C:
    """``cfg`` (a stage's config dataclass) with the ``dotted.key=value`` overrides of ``ctx.overrides[stage]``
    applied (:func:`regionclip.config.apply_overrides`; an unknown key or a wrong type is a one-line
    :class:`~regionclip.errors.ConfigError` naming it)."""
    items = ctx.overrides.get(stage) or []
    if not items:
        return cfg
    data = apply_overrides(config_to_dict(cfg), list(items))
    return config_from_dict(type(cfg), data)


# ---------------------------------------------------------------------------------------------------------
# stages


def stage_world(ctx: DemoContext) -> dict:
    root = ctx.world_dir or ctx.out / "world"
    p = ctx.plan
    _cli(
        "make-world",
        str(root),
        *("--size", p.world, "--seed", str(ctx.world_seed), "--version", str(p.world_version)),
        *("--test", str(n_test_images(p))),
    )
    info = json.loads((root / "world.json").read_text(encoding="utf-8"))
    return {
        "root": str(root),
        "base": info["base_names"],
        "novel": info["novel_names"],
        "counts": info.get("counts", {}),
    }


def _world_paths(ctx: DemoContext) -> dict[str, str]:
    root = Path(ctx.results["world"]["root"])
    return {
        "train_json": str(root / "annotations" / "instances_train.json"),
        "val_json": str(root / "annotations" / "instances_val.json"),
        "test_json": str(root / "annotations" / "instances_test.json"),
        "captions_val": str(root / "annotations" / "captions_val.json"),
        "captions_web_val": str(root / "annotations" / "captions_web_val.json"),
        "web_val_images": str(root / "images" / "web_val"),
        "test_images": str(root / "images" / "test"),
        "captions_train": str(root / "annotations" / "captions_train.json"),
        "captions_web": str(root / "annotations" / "captions_web.json"),
        "web_images": str(root / "images" / "web"),
        "train_images": str(root / "images" / "train"),
        "val_images": str(root / "images" / "val"),
        "shards": str(root / "shards"),
    }


def stage_clip(ctx: DemoContext) -> dict:
    from regionclip.engine.loop import TrainConfig
    from regionclip.tasks.train_clip import TrainCLIPConfig

    p, paths = ctx.plan, _world_paths(ctx)
    out_dir = ctx.out / "clip"
    cfg = TrainCLIPConfig(
        model=p.model,
        captions_json=[paths["captions_web"]],
        image_dir=[paths["web_images"]],
        out_dir=str(out_dir),
        device=ctx.device,
        train=TrainConfig(
            max_steps=p.clip_steps,
            batch_size=p.clip_batch,
            optimizer="adamw",
            lr=p.clip_lr,
            weight_decay=0.05,
            warmup_steps=max(1, p.clip_steps // 10),
            lr_milestones=(0.9, 0.95),
            checkpoint_every=max(1, p.clip_steps // 4),
            log_every=max(1, p.clip_steps // 20),
            seed=ctx.seed,
        ),
    )
    _cli("train-clip", "--config", str(_write_config(ctx.out, "clip", cfg)))
    checkpoint = str(out_dir / "clip.safetensors")
    from regionclip.demo_calibrate import teacher_report

    return {
        "checkpoint": checkpoint,
        "history": _history(out_dir),
        "teacher": teacher_report(ctx, checkpoint),
    }


def _concept_captions(ctx: DemoContext) -> str:
    """The captions the concept pool is parsed from: the scene captions (``captions_train``), or another
    split's with the override ``concepts: ["captions=web"]`` (the ablation of the pool's source)."""
    split = "train"
    for item in ctx.overrides.get("concepts") or []:
        key, _, value = item.partition("=")
        if key != "captions" or value not in ("train", "web"):
            raise RegionCLIPError(
                f"demo: concepts override {item!r}: expected captions=train or captions=web"
            )
        split = value
    return _world_paths(ctx)[f"captions_{split}"]


def stage_concepts(ctx: DemoContext) -> dict:
    out_dir = ctx.out / "concepts"
    concepts = out_dir / "concepts.txt"
    _cli("concepts", _concept_captions(ctx), "-o", str(concepts), "--min-count", str(ctx.plan.min_count))
    bank = out_dir / "concept_bank.safetensors"
    _cli(
        "embed-concepts",
        str(concepts),
        "--model",
        ctx.plan.model,
        "--weights",
        ctx.results["clip"]["checkpoint"],
        "-o",
        str(bank),
    )
    names = [line for line in concepts.read_text(encoding="utf-8").splitlines() if line]
    world_names = set(ctx.results["world"]["base"]) | set(ctx.results["world"]["novel"])
    return {
        "concepts": str(concepts),
        "bank": str(bank),
        "num_concepts": len(names),
        "categories_in_pool": sum(n in world_names for n in names),
        "novel_in_pool": sorted(n for n in names if n in set(ctx.results["world"]["novel"])),
    }


def stage_rpn(ctx: DemoContext) -> dict:
    from regionclip.engine.loop import TrainConfig
    from regionclip.proposals.config import RPNConfig
    from regionclip.tasks.train_rpn import RPNDataConfig, TrainRPNConfig

    p, paths = ctx.plan, _world_paths(ctx)
    out_dir = ctx.out / "rpn"
    size = p.image_size
    cfg = TrainRPNConfig(
        rpn=RPNConfig(
            trunk=f"clip:{p.model}",
            trunk_weights=ctx.results["clip"]["checkpoint"],
            anchor_sizes=rpn_anchor_sizes(p.image_size),
        ),
        data=RPNDataConfig(
            train_json=paths["train_json"],
            image_root=paths["train_images"],
            classes="base",
            short_sizes=[size - 16, size, size + 16],
            max_size=2 * size,
            test_short_size=size,
        ),
        train=TrainConfig(
            max_steps=p.rpn_steps,
            batch_size=p.rpn_batch,
            lr=scaled_lr(OFFICIAL_RPN, p.rpn_batch),
            warmup_steps=scaled_warmup(OFFICIAL_RPN, p.rpn_steps),
            lr_milestones=OFFICIAL_RPN.milestones,
            checkpoint_every=max(1, p.rpn_steps // 3),
            log_every=max(1, p.rpn_steps // 10),
            seed=ctx.seed,
        ),
        out_dir=str(out_dir),
        device=ctx.device,
    )
    _cli("train-rpn", "--config", str(_write_config(ctx.out, "rpn", cfg)))
    recall = ctx.out / "rpn" / "recall_val.json"
    _cli(
        "eval-rpn",
        "--checkpoint",
        str(out_dir / "rpn.safetensors"),
        "--data",
        paths["val_json"],
        "--images",
        paths["val_images"],
        "--out",
        str(recall),
    )
    return {"checkpoint": str(out_dir / "rpn.safetensors"), "recall": json.loads(recall.read_text())}


def rpn_anchor_sizes(image_size: int) -> list[float]:
    """The official C4 anchors (32-512 px at short side 800) scaled to ``image_size``, rounded to powers of
    two: 16-256 at 320 (objects cover as many stride-16 cells as COCO's at 800), 8-128 at 160."""
    smallest = 2 ** round(math.log2(32 * image_size / 800))
    return [float(smallest * 2**k) for k in range(5)]


def pretrain_config(ctx: DemoContext, loss: dict | None = None) -> Any:
    """The pretraining config of the plan; ``loss``: LossConfig fields to set (the calibrated ones)."""
    from regionclip.engine.loop import TrainConfig
    from regionclip.pretrain.config import ConceptConfig, DataConfig, LossConfig, ModelConfig, PretrainConfig
    from regionclip.proposals.config import ProposalConfig

    p, paths = ctx.plan, _world_paths(ctx)
    return PretrainConfig(
        model=ModelConfig(preset=p.model, weights=ctx.results["clip"]["checkpoint"]),
        concepts=ConceptConfig(bank=ctx.results["concepts"]["bank"]),
        proposals=ProposalConfig(
            kind="rpn", rpn_checkpoint=ctx.results["rpn"]["checkpoint"], preset="pretraining"
        ),
        loss=LossConfig(regions_per_image=p.regions_per_image, **(loss or {})),
        data=DataConfig(
            kind="coco_captions",
            captions_json=paths["captions_train"],
            image_dir=paths["train_images"],
            short_size=p.image_size,
            max_size=2 * p.image_size,
        ),
        train=TrainConfig(
            max_steps=p.pretrain_steps,
            batch_size=p.pretrain_batch,
            lr=p.pretrain_lr,
            warmup_steps=scaled_warmup(OFFICIAL_PRETRAIN, p.pretrain_steps),
            lr_milestones=OFFICIAL_PRETRAIN.milestones,
            clip_grad_norm_per_param=5.0,
            checkpoint_every=max(1, p.pretrain_steps // 3),
            log_every=max(1, p.pretrain_steps // 20),
            seed=ctx.seed,
        ),
        out_dir=str(ctx.out / "pretrain"),
        device=ctx.device,
    )


def stage_pretrain(ctx: DemoContext) -> dict:
    from regionclip.demo_calibrate import calibrated_loss

    out_dir = ctx.out / "pretrain"
    cfg = pretrain_config(ctx, calibrated_loss(ctx))
    cfg = apply_stage_overrides(ctx, "pretrain", cfg)
    _cli("pretrain", "--config", str(_write_config(ctx.out, "pretrain", cfg)))
    return {"checkpoint": str(out_dir / "student.safetensors"), "history": _history(out_dir)}


def _history(out_dir: Path) -> list[dict]:
    path = out_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------------
# driver

Stage = Callable[[DemoContext], dict]


def _stages() -> list[tuple[str, Stage]]:
    from regionclip import demo_calibrate, demo_eval, demo_index

    return [
        ("world", stage_world),
        ("clip", stage_clip),
        ("concepts", stage_concepts),
        ("rpn", stage_rpn),
        ("calibrate", demo_calibrate.stage_calibrate),
        ("pretrain", stage_pretrain),
        ("zeroshot", demo_eval.stage_zeroshot),
        ("transfer_clip", demo_eval.stage_transfer_clip),
        ("transfer_regionclip", demo_eval.stage_transfer_regionclip),
        ("ensemble", demo_eval.stage_ensemble),
        ("report", demo_eval.stage_report),
        ("index", demo_index.stage_index),
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

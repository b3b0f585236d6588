"""The demo's plan and run context: the official schedules and the rules that scale them, the plans of
the demo sizes, the context every stage receives, and the small helpers the stages share (the world's paths,
config files, running a sub-command, per-stage config overrides)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from regionclip.config import apply_overrides, config_from_dict, config_to_dict
from regionclip.errors import RegionCLIPError
from regionclip.io import atomic_write_text
from regionclip.train_config import TrainConfig

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


def scaled_train_config(
    official: OfficialSchedule,
    steps: int,
    batch: int,
    seed: int,
    *,
    checkpoints: int = 3,
    logs: int = 20,
    **extra: Any,
) -> TrainConfig:
    """The :class:`~regionclip.train_config.TrainConfig` of a demo stage scaled from ``official``: LR by
    :func:`scaled_lr`, warm-up by :func:`scaled_warmup`, the official LR milestones, ``checkpoints``
    checkpoints and ``logs`` log lines over the ``steps``; ``extra`` sets further fields (e.g. gradient
    clipping)."""
    return TrainConfig(
        max_steps=steps,
        batch_size=batch,
        lr=scaled_lr(official, batch),
        warmup_steps=scaled_warmup(official, steps),
        lr_milestones=official.milestones,
        checkpoint_every=max(1, steps // checkpoints),
        log_every=max(1, steps // logs),
        seed=seed,
        **extra,
    )


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
        clip_steps=40,
        clip_batch=32,
        clip_lr=0.001,
        min_count=5,
        rpn_steps=30,
        rpn_batch=8,
        pretrain_steps=12,
        pretrain_batch=8,
        regions_per_image=32,
        detector_steps=12,
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
        clip_steps=750,
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


def _history(out_dir: Path) -> list[dict]:
    path = out_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

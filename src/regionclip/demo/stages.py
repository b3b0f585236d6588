"""The demo's training stages (world, teacher, concepts, RPN, pretraining), each through the public command
line; the evaluation stages are in :mod:`regionclip.demo.evaluation`."""

from __future__ import annotations

import json
import math
from typing import Any

from regionclip.demo.context import (
    OFFICIAL_PRETRAIN,
    OFFICIAL_RPN,
    DemoContext,
    _cli,
    _history,
    _world_paths,
    _write_config,
    apply_stage_overrides,
    n_test_images,
    scaled_train_config,
)
from regionclip.errors import RegionCLIPError

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
    from regionclip.demo.teacher import teacher_report

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
        train=scaled_train_config(OFFICIAL_RPN, p.rpn_steps, p.rpn_batch, ctx.seed, logs=10),
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
        train=scaled_train_config(
            OFFICIAL_PRETRAIN, p.pretrain_steps, p.pretrain_batch, ctx.seed, clip_grad_norm_per_param=5.0
        ),
        out_dir=str(ctx.out / "pretrain"),
        device=ctx.device,
    )


def stage_pretrain(ctx: DemoContext) -> dict:
    out_dir = ctx.out / "pretrain"
    cfg = pretrain_config(ctx, calibrated_loss(ctx))
    cfg = apply_stage_overrides(ctx, "pretrain", cfg)
    _cli("pretrain", "--config", str(_write_config(ctx.out, "pretrain", cfg)))
    return {"checkpoint": str(out_dir / "student.safetensors"), "history": _history(out_dir)}


def calibrated_loss(ctx: DemoContext) -> dict:
    """The LossConfig fields the calibration stage fixed (empty before it ran)."""
    c = ctx.results.get("calibrate")
    if not c:
        return {}
    return {
        "pseudo_label_temperature": c["pseudo_label_temperature"],
        "temperature": c["temperature"],
        "threshold": c["threshold"],
        **c["loss_weights"],
    }

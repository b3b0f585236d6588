"""``regionclip demo --ablations``: each variant's mapping to config overrides, plan fields and redone
stages (fast), and a slow end-to-end run of a few variants on a tiny plan."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from regionclip.commands.train_detector import TrainDetectorConfig
from regionclip.demo import PLANS, DemoContext, _concept_captions, apply_stage_overrides
from regionclip.demo.ablations import VARIANTS, run_ablations, select, variant_context
from regionclip.detect.config import resolve_recipe
from regionclip.errors import RegionCLIPError
from regionclip.pretrain.config import PretrainConfig


def _default(tmp_path: Path) -> DemoContext:
    results = {
        "world": {"root": str(tmp_path / "world"), "key": "w"},
        "clip": {"checkpoint": str(tmp_path / "clip" / "clip.safetensors"), "key": "c"},
        "concepts": {"bank": str(tmp_path / "concepts" / "bank.safetensors"), "key": "k"},
        "rpn": {"checkpoint": "rpn.safetensors", "key": "r"},
        "pretrain": {"checkpoint": "student.safetensors", "key": "p"},
        "zeroshot": {"key": "z"},
    }
    return DemoContext(PLANS["default"], tmp_path, 3, None, results)


def _variant(name):
    (v,) = [v for v in VARIANTS if v.name == name]
    return v


def test_every_variant_maps_to_valid_overrides_of_its_stage_configs(tmp_path):
    default = _default(tmp_path)
    for variant in VARIANTS:
        if variant.reference:
            continue
        ctx = variant_context(variant, default, tmp_path)
        assert ctx.out == tmp_path / "ablations" / variant.slug and ctx.seed == 3
        assert ctx.world_dir == tmp_path / "world"
        assert not set(variant.redo) & set(ctx.results)  # what it redoes is not reused
        pretrain = apply_stage_overrides(ctx, "pretrain", PretrainConfig())
        transfer = apply_stage_overrides(ctx, "transfer", TrainDetectorConfig())
        assert ("pretrain" in ctx.overrides) == (pretrain != PretrainConfig()), variant.name
        assert ("transfer" in ctx.overrides) == (transfer != TrainDetectorConfig()), variant.name


def test_variant_contents(tmp_path):
    default = _default(tmp_path)

    def pretrain(name):
        return apply_stage_overrides(variant_context(_variant(name), default, tmp_path), "pretrain",
                                     PretrainConfig())  # fmt: skip

    it = pretrain("image-text only").loss
    assert (it.weight_region_concept, it.weight_region_distill, it.weight_image_text) == (0.0, 0.0, 1.0)
    rc = pretrain("region-concept only").loss
    assert (rc.weight_region_concept, rc.weight_region_distill, rc.weight_image_text) == (1.0, 1.0, 0.0)
    assert pretrain("contrastive only (+ image-text)").loss.weight_region_distill == 0.0
    assert pretrain("distillation only (+ image-text)").loss.weight_region_concept == 0.0
    assert pretrain("random boxes").proposals.kind == "random"
    # capacity: an RN-small student from its own CLIP, the default teacher and its concept bank
    capacity = variant_context(_variant("student RN-small, teacher RN-tiny"), default, tmp_path)
    assert capacity.plan.model == "RN-small" and "clip" not in capacity.results
    assert capacity.only_models == ("pretrain", "clip")
    model = apply_stage_overrides(capacity, "pretrain", PretrainConfig())
    assert model.model.teacher_preset == default.plan.model
    assert model.model.teacher_weights == default.results["clip"]["checkpoint"]
    assert model.concepts.teacher_bank == default.results["concepts"]["bank"]
    # the concept pool from the web captions
    web = variant_context(_variant("web captions"), default, tmp_path)
    assert _concept_captions(web).endswith("captions_web.json") and "concepts" not in web.results
    assert _concept_captions(DemoContext(PLANS["quick"], tmp_path, 0, None, default.results)).endswith(
        "captions_train.json"
    )
    # transfer: focal scaling and the background weight switched off, the default pretraining reused
    for name, loss, bg in (("no focal scaling (plain CE)", "weighted_ce", 0.2),
                           ("background weight 1 (off)", "focal", 1.0), ("neither", "weighted_ce", 1.0)):  # fmt: skip
        ctx = variant_context(_variant(name), default, tmp_path)
        det = resolve_recipe(apply_stage_overrides(ctx, "transfer", TrainDetectorConfig()).detector)
        assert (det.cls_loss, det.bg_loss_weight) == (loss, bg), name
        assert ctx.results["pretrain"] == default.results["pretrain"] and ctx.only_models is None
    # the detector's optimiser: AdamW at Swin's fine-tuning recipe, the plan's schedule and warm-up kept
    optimiser = _variant("AdamW (lr 1e-4, weight decay 0.05; Swin's fine-tuning recipe)")
    adamw = variant_context(optimiser, default, tmp_path)
    base = TrainDetectorConfig()
    train = apply_stage_overrides(adamw, "transfer", base).train
    assert (train.optimizer, train.lr, train.weight_decay) == ("adamw", 1e-4, 0.05)
    assert (train.max_steps, train.warmup_steps, train.lr_milestones) == (
        base.train.max_steps, base.train.warmup_steps, base.train.lr_milestones)  # fmt: skip
    assert adamw.results["pretrain"] == default.results["pretrain"] and optimiser.redo == (
        "transfer_regionclip",
    )


def test_select_groups():
    assert select(None) == VARIANTS
    capacity = select("capacity")
    assert {v.group for v in capacity} == {"default", "capacity"}
    with pytest.raises(RegionCLIPError, match="unknown group 'nope'"):
        select("capacity,nope")


@pytest.mark.slow
def test_ablations_end_to_end_on_a_tiny_plan(tmp_path):
    plan = PLANS["quick"]
    plan = dataclasses.replace(
        plan, **{f.name: 2 for f in dataclasses.fields(plan) if f.name.endswith("_steps")}
    )
    ablations = run_ablations("quick", tmp_path, 0, "cpu", groups="region type,transfer", plan=plan)
    names = [r["name"] for r in ablations["rows"]]
    assert "random boxes" in names and "neither" in names
    for row in ablations["rows"]:
        for iv in row["metrics"].values():
            assert iv["lo"] <= iv["point"] <= iv["hi"], row["name"]
        assert (row["diff"] is None) == row["name"].startswith(("full pretraining", "transfer, focal"))
    assert (tmp_path / "ablations.md").read_text().count("\n| ") >= len(names)
    assert json.loads((tmp_path / "results.json").read_text())["ablations"]["rows"] == ablations["rows"]
    assert "random boxes" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "figures" / "ablations.png").stat().st_size > 1000

"""The train-detector task (``regionclip train-detector``): transfer a (RegionCLIP-pretrained) CLIP to open-vocabulary detection on the
base classes of a COCO-format or LVIS set (paper §3.3; method reference §6.1-6.4).

    regionclip train-detector --config configs/detector_coco_rn50.yaml [key.sub=value ...]
    torchrun --nproc_per_node=8 -m regionclip train-detector --config ...   (one process per GPU)

The backbone starts from ``model.weights`` (a regionclip ``clip`` checkpoint: a plain CLIP or the
``student.safetensors`` written by ``regionclip pretrain``, or an OpenAI ``.pt``); the frozen offline RPN is
``proposals.checkpoint`` (``regionclip train-rpn`` / ``regionclip convert``) with the ``transfer`` preset (NMS 0.7,
1000 boxes), or ``proposals.kind: gt`` (GT boxes as proposals, for debugging). The training vocabulary is the
base classes of the split (the JSON's per-category ``"split"`` fields, else ``vocabulary.base_classes``, else
COCO's 48; LVIS: the 866 common + frequent classes); their text embeddings are computed ONCE with the model's
text tower (81 official templates, or ``simple``) and stored in the detector as a frozen buffer.

Writes ``out_dir/config.yaml``, the engine's training checkpoints (exact resume), TensorBoard logs and, at the
end, ``out_dir/detector.safetensors``: a ``detector`` checkpoint (:func:`regionclip.detect.api.save_detector`)
with the text tower, the test size, the templates and the base/novel split, so that ``regionclip detect``,
``regionclip eval`` and ``Detector.from_pretrained`` use it alone.

The training helpers live here (not in ``regionclip.detect``) because they read data files and run the
engine, which model code must not import.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from regionclip.clip.checkpoint import attach_text_tower, create_model, has_text_tower, load_clip, text_state
from regionclip.concepts import OFFICIAL_TEMPLATES, SIMPLE_TEMPLATES, build_concept_bank, read_names_file
from regionclip.config import config_to_dict
from regionclip.data.coco import CocoDetection, collate_detection, load_coco_instances, read_json
from regionclip.data.lvis import load_lvis_instances
from regionclip.data.masks import MaskedDetection, collate_with_masks
from regionclip.data.ovd import COCO_OVD_CLASSES, OvdSplit
from regionclip.data.sampling import repeat_factor_epochs, repeat_factors
from regionclip.data.transforms import detector_train_transform
from regionclip.detect import DetectionBatch, build_detector
from regionclip.detect.api import default_cache_dir, save_detector
from regionclip.detect.config import DetectorConfig
from regionclip.engine.data import map_style_batches
from regionclip.engine.distributed import barrier
from regionclip.engine.loop import TrainConfig, train
from regionclip.errors import CheckpointError, ConfigError, DataError
from regionclip.io import check_file
from regionclip.preprocess import Preprocess
from regionclip.proposals.base import GivenBoxes
from regionclip.proposals.loading import load_rpn
from regionclip.regions import RegionEncoder
from regionclip.structures import StepOutput
from regionclip.tasks.run import setup_run

log = logging.getLogger("regionclip.train_detector")

TEMPLATE_SETS = ("official", "simple")


@dataclass
class DetModelConfig:
    preset: str | None = "RN50"  # CLIP preset (RN50, RN50x4, RN-tiny, RN-micro); None = from the checkpoint
    weights: str | None = None  # clip checkpoint (.safetensors: CLIP or pretrained student) or OpenAI .pt
    text_weights: str | None = None  # CLIP file giving the text tower when `weights` has none (OpenAI .pt)
    freeze_at: int = 2  # frozen backbone stages: 2 = stem + layer1 (official FREEZE_AT)
    seed: int = 0  # seed of the random initialisation when weights is None (tests, debugging)


@dataclass
class DetProposalConfig:
    kind: Literal["rpn", "gt"] = "rpn"  # offline frozen RPN (official) or GT boxes as proposals (debugging)
    checkpoint: str | None = None  # rpn checkpoint (regionclip train-rpn or convert) for kind rpn
    preset: Literal["pretraining", "transfer", "zero_shot"] = "transfer"  # NMS 0.7, 1000 boxes (official)


@dataclass
class VocabularyConfig:
    base_classes: str | None = None  # names file of the training classes (default: JSON split / COCO 48)
    novel_classes: str | None = None  # names file of the held-out classes (stored for evaluation)
    templates: Literal["official", "simple"] = "official"  # 81 official prompt templates or one
    cache_dir: str | None = None  # where class embeddings are cached (default $REGIONCLIP_CACHE)
    clean_class_names: bool = True  # prompt "bow (weapon)"-style names cleaned as official get_cls_names


@dataclass
class DetDataConfig:
    train_json: str = ""  # COCO-format instances JSON (COCO OVD: ovd_ins_train2017_b.json) or LVIS v1 train
    image_root: str = ""  # folder the JSON's file_name entries are relative to
    lvis: bool = False  # LVIS v1 loader (rare classes dropped, masks) + repeat-factor sampling
    repeat_threshold: float = 0.001  # repeat-factor sampling threshold t (LVIS only)
    short_sizes: list[int] = field(default_factory=lambda: [640, 672, 704, 736, 768, 800])  # train short side
    max_size: int = 1333  # long-side cap of the train and test resize
    flip: float = 0.5  # horizontal-flip probability
    aspect_ratio_grouping: bool = True  # batches of landscape-only or portrait-only images (detectron2)
    test_short_size: int = 800  # test short side stored in the checkpoint (detect / eval use it)


@dataclass
class TrainDetectorConfig:
    model: DetModelConfig = field(default_factory=DetModelConfig)  # backbone and text tower
    proposals: DetProposalConfig = field(default_factory=DetProposalConfig)  # the frozen proposal source
    detector: DetectorConfig = field(default_factory=DetectorConfig)  # recipe (coco | lvis) and overrides
    vocabulary: VocabularyConfig = field(default_factory=VocabularyConfig)  # training classes, templates
    data: DetDataConfig = field(default_factory=DetDataConfig)  # training set and augmentation
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            max_steps=90000,
            batch_size=2,
            lr=0.002,
            warmup_steps=5000,
            lr_milestones=(0.666667, 0.888889),
            checkpoint_every=5000,
        )
    )  # optimisation (per-rank batch: 2 x 8 GPUs = the official 16)
    out_dir: str = "runs/detector"  # outputs: config.yaml, checkpoints, detector.safetensors
    device: str | None = None  # "cpu", "cuda" or None (CUDA when available)


# ------------------------------------------------------------------------------------------ helpers


def template_set(name: str | None) -> tuple[str, ...]:
    """The prompt templates called ``name`` (``official``: 81, ``simple``: one)."""

    if name in (None, "official"):
        return OFFICIAL_TEMPLATES
    if name == "simple":
        return SIMPLE_TEMPLATES
    raise ConfigError(f"templates: expected one of {list(TEMPLATE_SETS)}, got {name!r}")


def template_name(templates: tuple[str, ...] | list[str]) -> str:
    """``official`` / ``simple`` for the two known sets, else ``custom(N)``."""

    if tuple(templates) == OFFICIAL_TEMPLATES or (
        len(templates) == len(OFFICIAL_TEMPLATES) and set(templates) == set(OFFICIAL_TEMPLATES)
    ):  # the same 81 in the order of earlier checkpoints counts as official
        return "official"
    if tuple(templates) == SIMPLE_TEMPLATES:
        return "simple"
    return f"custom({len(templates)})"


def load_clip_model(
    weights: str | None, preset: str | None, text_weights: str | None = None, seed: int = 0
) -> tuple[nn.Module, bool]:
    """The CLIP model whose image tower starts the detector, and whether its text tower is real.

    weights: a regionclip ``clip`` checkpoint (plain CLIP or pretrained student; its preset must match
    ``preset`` when both are given) or an OpenAI ``.pt`` (needs ``preset``); None = random ``preset`` seeded
    with ``seed`` (tests). text_weights: a CLIP file whose text tower replaces a missing one (official
    converted students have none). Loading is :func:`regionclip.clip.checkpoint.load_clip`'s.
    """
    if weights is None:
        if preset is None:
            raise ConfigError("model.preset or model.weights must be set")
        torch.manual_seed(seed)
        clip, has_text = create_model(preset), True
    else:
        path = check_file(weights, "model.weights")
        clip = load_clip(path, preset, what="model.preset")
        has_text = has_text_tower(path)
    if text_weights is not None:
        has_text = attach_text_tower(clip, check_file(text_weights, "model.text_weights")) or has_text
    return clip.eval(), has_text


def resolve_split(
    instances: dict,
    source: str,
    base_file: str | None = None,
    novel_file: str | None = None,
    fallback: dict | None = None,
):
    """The :class:`OvdSplit` of a COCO-format set: names files, else the JSON's ``split`` fields, else
    ``fallback`` (``{"base": [...], "novel": [...]}``, e.g. a detector checkpoint's) when its names are
    categories of the set, else COCO 48/17 when the set has COCO's categories; None if nothing applies."""

    names = [c["name"] for c in sorted(instances["categories"], key=lambda c: c["id"])]
    if base_file or novel_file:
        base = read_names_file(base_file) if base_file else []
        novel = read_names_file(novel_file) if novel_file else []
        if not novel:
            novel = [n for n in names if n not in set(base)]
        if not base:
            base = [n for n in names if n not in set(novel)]
        split = OvdSplit(base, novel)
        split.check_names(names, source)
        return split
    if any("split" in c for c in instances["categories"]):
        return OvdSplit.from_json(instances)
    if fallback and set(fallback.get("base", []) + fallback.get("novel", [])) <= set(names):
        return OvdSplit(fallback.get("base", []), fallback.get("novel", []))
    if set(COCO_OVD_CLASSES) <= set(names):
        return OvdSplit.coco()
    return None


# --------------------------------------------------------------------------------------------- task


class DetectorTrainingTask(nn.Module):
    """The engine's task: ``forward((images, targets, metas)) -> StepOutput`` of the wrapped detector.

    gt_as_proposals: pass each image's GT boxes as ``given_boxes`` (for a ``GivenBoxes`` proposal source).
    """

    def __init__(self, detector: nn.Module, gt_as_proposals: bool = False):
        super().__init__()
        self.detector = detector
        self.gt_as_proposals = gt_as_proposals

    def forward(self, batch) -> StepOutput:

        images, targets, _ = batch
        given = [t["boxes"] for t in targets] if self.gt_as_proposals else None
        return self.detector(DetectionBatch(images, targets, given))


# -------------------------------------------------------------------------------------------- train


def training_classes(cfg: TrainDetectorConfig, instances: dict):
    """``(train class names, OvdSplit | None)`` of the config's training set."""

    source = cfg.data.train_json
    if cfg.data.lvis:
        base = [c["name"] for c in sorted(instances["categories"], key=lambda c: c["id"])]
        novel = [c["name"] for c in instances.get("_rare", [])]
        return base, OvdSplit(base, novel)
    split = resolve_split(instances, source, cfg.vocabulary.base_classes, cfg.vocabulary.novel_classes)
    if split is None or not split.base:
        raise DataError(
            f"{source}: cannot tell the base (training) classes: no category has a 'split' field and these are "
            "not COCO's categories; set vocabulary.base_classes=FILE (one name per line)"
        )
    return list(split.base), split


def build_training_set(cfg: TrainDetectorConfig):
    """``(dataset, instances dict, train class names, split, collate)`` of ``cfg.data``."""

    d = cfg.data
    if not d.train_json or not d.image_root:
        raise ConfigError("data.train_json and data.image_root must be set (e.g. data.train_json=train.json)")
    check_file(d.train_json, "data.train_json")
    if d.lvis:
        raw = read_json(d.train_json)
        instances = load_lvis_instances(raw, "train")
        rare = [c for c in raw.get("categories", []) if c.get("frequency") == "r"]
        instances["_rare"] = sorted(rare, key=lambda c: c["id"])
    else:
        instances = load_coco_instances(d.train_json)
    classes, split = training_classes(cfg, instances)
    transform = detector_train_transform(tuple(d.short_sizes), d.max_size, d.flip)
    data = {k: v for k, v in instances.items() if k != "_rare"}
    dataset = CocoDetection(data, d.image_root, classes, transform, drop_empty=True, skip_unreadable=True)
    dataset.source = d.train_json
    if dataset.filter_report():
        log.warning("%s: left out %s", d.train_json, dataset.filter_report())
    collate = collate_detection
    if cfg.detector.mask_on or (cfg.detector.mask_on is None and cfg.detector.recipe == "lvis"):
        dataset = MaskedDetection(dataset, data)
        collate = collate_with_masks
    if len(dataset) == 0:
        raise DataError(f"{d.train_json}: no image has a box of the {len(classes)} training classes")
    return dataset, instances, classes, split, collate


def proposal_source(kind: str, checkpoint: str | None, preset: str) -> tuple[nn.Module, dict]:
    """The frozen proposal generator and its description for ``save_detector`` (``{"kind": "rpn", "rpn":
    <rpn config>, "preset": ...}`` or ``{"kind": "gt"}``)."""

    if kind == "gt":
        return GivenBoxes(), {"kind": "gt"}

    path = check_file(checkpoint, "proposals.checkpoint (an rpn checkpoint; or set proposals.kind=gt)")
    generator, rpn_config = load_rpn(path, preset)
    generator.requires_grad_(False)
    return generator, {"kind": "rpn", "rpn": rpn_config, "preset": preset}


def train_detector(cfg: TrainDetectorConfig) -> Path:
    """Train the detector of ``cfg``; returns the path of ``detector.safetensors`` (written by rank 0)."""

    if cfg.detector.freeze_at not in (2, cfg.model.freeze_at):
        raise ConfigError(
            f"detector.freeze_at={cfg.detector.freeze_at} and model.freeze_at={cfg.model.freeze_at}: "
            "set model.freeze_at only"
        )
    det_cfg = dataclasses.replace(cfg.detector, freeze_at=cfg.model.freeze_at)
    templates = template_set(cfg.vocabulary.templates)
    dataset, _, classes, split, collate = build_training_set(cfg)
    generator, proposals = proposal_source(cfg.proposals.kind, cfg.proposals.checkpoint, cfg.proposals.preset)
    clip, has_text = load_clip_model(
        cfg.model.weights, cfg.model.preset, cfg.model.text_weights, cfg.model.seed
    )
    if not has_text:
        raise CheckpointError(
            f"{cfg.model.weights}: has no text tower to embed the training classes; set model.text_weights "
            "to the OpenAI CLIP .pt of the same preset"
        )
    run = setup_run(cfg, cfg.out_dir, cfg.device)
    dist, out_dir = run.dist, run.out_dir
    if dist.is_main:
        global_batch = cfg.train.batch_size * dist.world_size
        log.info(
            "train-detector: %d classes, %d images, global batch %d", len(classes), len(dataset), global_batch
        )

    clip.to(dist.device)
    cache = Path(cfg.vocabulary.cache_dir) if cfg.vocabulary.cache_dir else default_cache_dir()
    bank = build_concept_bank(
        clip, classes, templates, cache_dir=cache, clean_class_names=cfg.vocabulary.clean_class_names
    )
    text = {k: v.cpu() for k, v in text_state(clip).items()}
    clip.cpu()
    torch.manual_seed(cfg.train.seed)  # the new heads' initial weights (same on every rank)
    detector = build_detector(det_cfg, RegionEncoder(clip.visual), generator, bank.embeddings)
    task = DetectorTrainingTask(detector, gt_as_proposals=cfg.proposals.kind == "gt")

    epoch_indices = None
    if cfg.data.lvis:
        base_set = dataset.base if isinstance(dataset, MaskedDetection) else dataset
        factors = repeat_factors(base_set.image_label_sets(), cfg.data.repeat_threshold)
        epoch_indices = repeat_factor_epochs(factors, cfg.train.seed)
    batches = map_style_batches(
        dataset,
        cfg.train.batch_size,
        cfg.train.seed,
        dist,
        collate,
        num_workers=cfg.train.num_workers,
        epoch_indices=epoch_indices,
        groups=(dataset.base if isinstance(dataset, MaskedDetection) else dataset).aspect_groups()
        if cfg.data.aspect_ratio_grouping
        else None,
    )
    train(task, batches, cfg.train, out_dir, dist, run.config, desc="train-detector")

    path = out_dir / "detector.safetensors"
    if dist.is_main:
        extra = {
            "templates": list(templates),
            "clean_class_names": cfg.vocabulary.clean_class_names,
            "split": {"base": list(split.base), "novel": list(split.novel)} if split is not None else None,
            "train": config_to_dict(cfg),
            # the frozen region classifier of `detector.ensemble=frozen` (regionclip.detect.ensemble)
            "init_checkpoint": str(Path(cfg.model.weights).resolve()) if cfg.model.weights else None,
        }
        test = Preprocess(cfg.data.test_short_size, cfg.data.max_size, "bilinear")
        save_detector(path, detector.cpu(), det_cfg, clip.preset, proposals, classes, text, extra, test)
        skipped = dataset.num_unreadable
        if skipped:
            print(f"train-detector: skipped {skipped} unreadable images")
        base_set = dataset.base if isinstance(dataset, MaskedDetection) else dataset
        if base_set.filter_report():
            print(f"train-detector: left out of {cfg.data.train_json}: {base_set.filter_report()}")
        print(f"train-detector: wrote {path}")
    barrier()
    return path

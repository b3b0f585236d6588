"""Typed config of RegionCLIP pretraining (method reference §4-5).

A :class:`PretrainConfig` is loaded from a flat YAML file plus ``key.sub=value`` overrides with
:func:`regionclip.config.load_config`; the resolved config is written next to the outputs and into the
student checkpoint. ``configs/pretrain_rn50_cc3m.yaml`` holds the official hyper-parameters. It embeds the
engine's :class:`~regionclip.train_config.TrainConfig` (a plain dataclass; this module is configuration, not
model code, so the import does not pull the engine into the model modules).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from regionclip.proposals.config import ProposalConfig
from regionclip.train_config import TrainConfig


@dataclass
class ModelConfig:
    preset: str = "RN50"  # student CLIP preset (RN50, RN50x4, RN-tiny, RN-micro)
    weights: str | None = (
        None  # CLIP weights for student + text tower (OpenAI .pt or regionclip .safetensors); None = random
    )
    teacher_preset: str | None = None  # teacher CLIP preset; None = same as the student (official)
    teacher_weights: str | None = (
        None  # teacher weights; None = a copy of the student's initial weights (official)
    )
    freeze_at: int = 2  # student stages frozen: 2 = stem + layer1 (official FREEZE_AT)
    seed: int = 0  # seed of the random initialisation when weights is None


@dataclass
class ConceptConfig:
    bank: str = ""  # concept pool: a concept bank .safetensors or an official [N, D] .pth (needs names)
    names: str | None = None  # names file (one per line) for an official .pth, e.g. coco_nouns_4764.txt
    teacher_bank: str | None = (
        None  # the pool embedded for the teacher (needed when its dim differs); None = bank
    )
    teacher_names: str | None = None  # names file for an official teacher .pth


@dataclass
class LossConfig:
    weight_region_concept: float = 1.0  # region-concept contrastive (0 = off)
    weight_region_distill: float = 1.0  # concept distillation (0 = off)
    weight_image_text: float = 1.0  # image-text contrastive on the global box (0 = off)
    temperature: float = 0.01  # τ of the student's softmaxes (official CLSS_TEMP)
    pseudo_label_temperature: float = 0.01  # τ of the teacher's softmax (official hard-coded s_temp 0.01)
    threshold: float = 0.1  # teacher top-1 probability to keep a region (official CONCEPT_THRES)
    regions_per_image: int = 100  # proposals sampled per image in training (official PRETRAIN_SAMPLE_REGIONS)
    gather: bool = True  # gather image-text embeddings over ranks with gradients (official GATHER_GPUS)


@dataclass
class DataConfig:
    kind: Literal["webdataset", "coco_captions"] = "webdataset"  # image-caption source
    shards: list[str] = field(
        default_factory=list
    )  # webdataset tar files or brace patterns (kind webdataset)
    captions_json: str = ""  # COCO captions JSON (kind coco_captions)
    image_dir: str = ""  # folder of the COCO images (kind coco_captions)
    short_size: int = 800  # resize: shorter side (official 800)
    max_size: int = 1333  # resize: longest side cap (official 1333)
    flip_p: float = 0.5  # horizontal flip probability (official 0.5)
    max_captions: int = 5  # captions considered per image (official: first 5); one drawn at random


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)  # student, teacher and text tower
    concepts: ConceptConfig = field(default_factory=ConceptConfig)  # concept pool(s)
    proposals: ProposalConfig = field(
        default_factory=lambda: ProposalConfig(kind="rpn", preset="pretraining")
    )  # region proposals (official: offline RPN, NMS 0.5, 300 per image)
    loss: LossConfig = field(default_factory=LossConfig)  # loss weights, temperature, threshold
    data: DataConfig = field(default_factory=DataConfig)  # image-caption pairs and augmentation
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            max_steps=600_000, batch_size=3, warmup_steps=1000, clip_grad_norm_per_param=5.0
        )
    )  # optimisation (official: 600k steps, 3 images x 32 ranks, LR 0.002, clip 5.0)
    out_dir: str = "runs/pretrain"  # where checkpoints, logs, the student and the resolved config go
    device: str | None = None  # "cpu", "cuda" or None (CUDA when available)

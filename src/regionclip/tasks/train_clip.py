"""The train-clip task (``regionclip train-clip``): train a CLIP model on image-caption pairs (image-level contrastive loss).

The miniature world uses it to make its teacher, standing in for OpenAI CLIP, which cannot be downloaded
here. Images are resized and centre-cropped to the preset's input size, flipped at random, and paired with
one of their captions at random. Writes ``OUT/clip.safetensors`` (a regionclip ``clip`` checkpoint) and
``OUT/config.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

import regionclip
from regionclip.clip.checkpoint import save_clip
from regionclip.clip.train import CLIPTrainingTask
from regionclip.data.pairs import CocoCaptions
from regionclip.data.transforms import Compose, RandomHorizontalFlip, ResizeSquare
from regionclip.engine.data import map_style_batches
from regionclip.engine.loop import TrainConfig, train
from regionclip.errors import ConfigError
from regionclip.structures import normalize_image
from regionclip.tasks.run import setup_run


@dataclass
class TrainCLIPConfig:
    model: str = "RN-tiny"  # CLIP preset (see regionclip.list_models())
    weights: str | None = None  # optional initial weights (OpenAI .pt or regionclip .safetensors)
    captions_json: list[str] = field(default_factory=list)  # COCO captions JSON files of the training pairs
    image_dir: list[str] = field(default_factory=list)  # image folder of each captions file (same order)
    image_size: int | None = None  # training resolution; None = the preset's CLIP input size
    flip: float = 0.5  # horizontal flip probability
    out_dir: str = "runs/clip"  # output folder
    device: str | None = None  # "cpu", "cuda" or None (CUDA when available)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(max_steps=2000, batch_size=64, lr=0.05, warmup_steps=100)
    )  # optimisation


def train_clip(cfg: TrainCLIPConfig) -> Path:
    """Train and save; returns the checkpoint path."""

    if not cfg.captions_json or len(cfg.captions_json) != len(cfg.image_dir):
        raise ConfigError(
            "train-clip needs captions_json and image_dir lists of the same length, "
            "e.g. captions_json=[world/annotations/captions_web.json] image_dir=[world/images/web]"
        )
    run = setup_run(
        cfg, cfg.out_dir, cfg.device, seed=cfg.train.seed, write_config=False
    )  # seed: initial weights
    dist, out = run.dist, run.out_dir
    model = regionclip.create_model(cfg.model, pretrained=cfg.weights)
    size = cfg.image_size or model.preset.vision.image_size
    transform = Compose([ResizeSquare(size), RandomHorizontalFlip(cfg.flip)])
    parts = [
        CocoCaptions(c, d, transform=transform) for c, d in zip(cfg.captions_json, cfg.image_dir, strict=True)
    ]
    dataset = torch.utils.data.ConcatDataset(parts)

    def collate(samples):
        images = torch.stack([normalize_image(s.image) for s in samples])
        return images, model.tokenize([s.caption for s in samples])

    make_batches = map_style_batches(
        dataset, cfg.train.batch_size, cfg.train.seed, dist, collate, num_workers=cfg.train.num_workers
    )
    run.write_config()  # after the data opened, so that a refused run leaves an earlier config alone
    task = CLIPTrainingTask(model)
    train(task, make_batches, cfg.train, out, dist, run.config, desc="train-clip")
    path = out / "clip.safetensors"
    if dist.is_main:
        save_clip(task.frozen_model(), path, {"trained_on": cfg.captions_json})
        skipped = sum(sum(p.skipped.values()) for p in parts)
        if skipped:
            print(f"train-clip: skipped {skipped} unreadable samples")
        print(f"train-clip: wrote {path}")
    return path

"""The optimisation settings of a training run (:class:`TrainConfig`), a plain typed config read by the engine's
loop (:mod:`regionclip.engine.loop`, which re-exports it) and embedded in the run configs; it lives below the
engine so that configuration modules of the model library (``pretrain/config.py``) can name it without
importing the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class TrainConfig:
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 2  # images per rank per step
    optimizer: Literal["sgd", "adamw"] = (
        "sgd"  # SGD (official RegionCLIP) or AdamW (CLIP training from scratch)
    )
    lr: float = 0.002  # base learning rate (official 0.002)
    momentum: float = 0.9  # SGD momentum (AdamW: beta1; beta2 is 0.98 as in CLIP)
    weight_decay: float = 1e-4  # applied to all trainable parameters, biases included (official)
    warmup_steps: int = 1000  # linear warm-up length (official: 1000 pretraining, 5000 detection)
    warmup_factor: float = 0.001  # LR multiplier at step 0
    lr_milestones: tuple[float, ...] = (0.5, 0.875)  # LR x gamma at these fractions of max_steps
    gamma: float = 0.1  # LR decay factor at each milestone
    clip_grad_norm_per_param: float | None = None  # per-parameter grad-norm clip (official pretraining: 5.0)
    checkpoint_every: int = 5000  # save training state every N steps (and at the end)
    keep_last: int = 2  # training checkpoints kept
    log_every: int = 20  # steps between logged scalars
    precision: Literal["fp32", "bf16", "auto"] = "fp32"  # fp32, bf16 autocast + channels_last, or auto
    amp: Literal["none", "bf16"] = "none"  # deprecated: "bf16" means precision bf16
    channels_last: bool = True  # deprecated, no effect: channels_last follows precision (bf16)
    flush_denormal: bool = True  # CPU: flush denormal floats to zero (FTZ/DAZ; saturated softmaxes make them, ~6x slower matmuls)
    seed: int = 0  # seeds model-side randomness and the data order
    num_workers: int = 0  # DataLoader worker processes per rank
    progress: bool = True  # rank-0 progress bar

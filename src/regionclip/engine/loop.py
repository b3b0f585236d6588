"""The training loop: one plain function used by pretraining, RPN training and detector training.

``train`` owns the optimizer (SGD, momentum 0.9, weight decay 1e-4 on every trainable parameter, biases
included, as detectron2), the warm-up + step schedule, per-parameter gradient-norm clipping (detectron2's
"norm" clipping, official pretraining: 5.0), the ``precision`` setting (:mod:`regionclip.precision`), DDP,
TensorBoard scalars, a rank-0 progress bar, and atomic checkpoints with exact resume (weights, optimizer,
scheduler, step, RNG state; the data position follows from the step, see :mod:`regionclip.engine.data`).
The task is an ``nn.Module`` whose ``forward(batch)`` returns a :class:`~regionclip.structures.StepOutput`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from regionclip.engine.checkpoints import (
    list_checkpoints,
    load_training_state,
    save_training_state,
    set_rng_state,
)
from regionclip.engine.distributed import DistInfo, all_reduce_mean, any_rank, barrier
from regionclip.engine.runs import StopOnSignal, TrainingInterrupted, claim_out_dir
from regionclip.engine.schedule import warmup_multistep
from regionclip.errors import RegionCLIPError
from regionclip.precision import apply_precision, resolve_precision, set_flush_denormal, training_setting
from regionclip.structures import StepOutput
from regionclip.train_config import TrainConfig  # noqa: F401  (defined below the engine; imported from here too)


@dataclass
class TrainResult:
    steps: int  # steps completed in total
    resumed_from: int  # step the run started from (0 = fresh)
    history: list[dict[str, float]] = field(default_factory=list)  # logged scalars of this run
    seconds: float = 0.0  # wall time of this run


def _clip_per_parameter(params: list[torch.Tensor], max_norm: float) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads)
    scales = [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
    torch._foreach_mul_(grads, scales)


def train(
    task: nn.Module,
    make_batches: Callable[[int], Iterator[Any]],
    cfg: TrainConfig,
    out_dir: str | Path,
    dist: DistInfo,
    config_dict: dict | None = None,
    resume: bool = True,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train ``task`` for ``cfg.max_steps`` steps, resuming from the last checkpoint in ``out_dir``."""
    out_dir = Path(out_dir)
    if dist.is_main:
        claim_out_dir(out_dir)  # refuse a second run writing into the same folder
    device = dist.device
    task.to(device)
    precision = resolve_precision(training_setting(cfg.precision, cfg.amp), device, log=dist.is_main)
    apply_precision(task, precision)  # autocast regions inside the networks; losses stay fp32
    if device.type == "cpu":
        set_flush_denormal(cfg.flush_denormal)
    params = [p for p in task.parameters() if p.requires_grad]
    if not params:
        raise RegionCLIPError("nothing to train: the task has no trainable parameters")
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(
            params, lr=cfg.lr, betas=(cfg.momentum, 0.98), eps=1e-6, weight_decay=cfg.weight_decay
        )
    schedule = warmup_multistep(
        cfg.max_steps, cfg.warmup_steps, cfg.warmup_factor, cfg.lr_milestones, cfg.gamma
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    start_step = 0
    existing = list_checkpoints(out_dir) if resume else []
    if existing:
        state = load_training_state(existing[-1])
        task.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start_step = int(state["step"])
    else:
        torch.manual_seed(cfg.seed + dist.rank)

    model: nn.Module = task
    if dist.distributed:
        model = nn.parallel.DistributedDataParallel(
            task,
            device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False,  # buffers (frozen BN, concept pools) are identical on every rank
        )
    writer = None
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tensorboard"))
    bar = None
    if dist.is_main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_steps, initial=start_step, desc=desc, unit="step", dynamic_ncols=True)

    history: list[dict[str, float]] = []
    window: dict[str, list[float]] = {}
    t_start = time.perf_counter()
    t_window = time.perf_counter()
    task.train()
    batches = make_batches(start_step)
    step = start_step
    stop = StopOnSignal()  # SIGINT / SIGTERM: finish the step, write a checkpoint, stop (engine/runs.py)
    for step in stop.steps(range(start_step, cfg.max_steps)):
        t0 = time.perf_counter()
        batch = next(batches)
        t_data = time.perf_counter() - t0
        out: StepOutput = model(batch)
        loss = sum(out.losses.values())
        if not torch.isfinite(loss):
            values = {k: float(v) for k, v in out.losses.items()}
            raise RegionCLIPError(
                f"step {step}: non-finite loss {values}; lower the learning rate or check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad_norm_per_param is not None:
            _clip_per_parameter(params, cfg.clip_grad_norm_per_param)
        optimizer.step()
        scheduler.step()

        scalars = {k: float(v.detach()) for k, v in out.losses.items()}
        scalars["loss_total"] = float(loss.detach())
        scalars.update({k: float(v) for k, v in out.metrics.items()})
        scalars["time_data"] = t_data
        for k, v in scalars.items():
            window.setdefault(k, []).append(v)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.max_steps:
            elapsed = time.perf_counter() - t_window
            n = len(window["loss_total"])
            logged = {k: sum(v) / len(v) for k, v in window.items()}
            logged = {k: all_reduce_mean(v, device) for k, v in logged.items()}
            logged["lr"] = optimizer.param_groups[0]["lr"]
            logged["images_per_s"] = n * cfg.batch_size * dist.world_size / max(elapsed, 1e-9)
            logged["step"] = done
            history.append(logged)
            if writer is not None:
                for k, v in logged.items():
                    if k != "step" and math.isfinite(v):
                        writer.add_scalar(k, v, done)
                with (out_dir / "metrics.jsonl").open("a", encoding="utf-8") as f:
                    f.write(json.dumps(logged) + "\n")
            if on_log is not None and dist.is_main:
                on_log(done, logged)
            window = {}
            t_window = time.perf_counter()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{scalars['loss_total']:.3f}", refresh=False)
        stopping = any_rank(stop.requested, device)  # every rank stops at the same step, or none does
        if done % cfg.checkpoint_every == 0 or done == cfg.max_steps or stopping:
            if dist.is_main:
                state = {
                    "model": task.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "config": config_dict or {},
                }
                saved = save_training_state(out_dir, done, state, cfg.keep_last)
            barrier()
            if stopping and done < cfg.max_steps:
                if bar is not None:
                    bar.close()
                where = (
                    f"wrote the resumable checkpoint {saved}"
                    if dist.is_main
                    else "checkpoint written by rank 0"
                )
                why = stop.signal_name or "a signal to another rank"
                raise TrainingInterrupted(
                    f"{why} at step {done}/{cfg.max_steps}: {where}; run the same command again to resume"
                )
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    final = cfg.max_steps if start_step < cfg.max_steps else start_step
    return TrainResult(final, start_step, history, time.perf_counter() - t_start)

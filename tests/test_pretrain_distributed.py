"""Two-process (gloo, CPU) checks of the pretraining losses under DDP (method reference §5, §11 items 6-7).

What is and is not identical to one process:

* the image-text loss is computed on the gathered global batch by every rank, and the gather's backward sums
  every rank's gradient into each rank's rows; after DDP's averaging the gradient equals the single-process
  gradient on the same global batch, and so does the loss value;
* the region losses are local to each rank (official: negatives are the pseudo-concepts of the rank's own
  regions), so their DDP gradient is the *average of the per-rank gradients*, not the single-process gradient
  on the global batch. The reference below is built that way.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from regionclip.clip.checkpoint import create_model
from regionclip.clip.model import freeze_stages
from regionclip.engine.distributed import all_gather_with_grad
from regionclip.pretrain.losses import image_text_contrastive
from regionclip.pretrain.task import PretrainBatch, PretrainTask, TextEncoder
from regionclip.proposals.base import GivenBoxes
from regionclip.regions import RegionEncoder

WORLD = 2
PER_RANK = 2


def _task(gather, weights=(1.0, 1.0, 1.0)) -> PretrainTask:
    torch.manual_seed(0)
    clip = create_model("RN-micro")
    with torch.no_grad():  # open_clip zero-inits each block's last BN: give every branch a gradient
        for name, buf in clip.visual.named_buffers():
            if name.endswith("bn3.weight"):
                buf.fill_(1.0)
    teacher = RegionEncoder(copy.deepcopy(clip.visual))
    freeze_stages(clip.visual, 2)
    concepts = torch.randn(5, clip.embed_dim)
    return PretrainTask(
        RegionEncoder(clip.visual),
        teacher,
        TextEncoder(clip),
        GivenBoxes(),
        concepts,
        concepts.clone(),
        clip.preset,
        weight_region_concept=weights[0],
        weight_region_distill=weights[1],
        weight_image_text=weights[2],
        gather=gather,
    )


def _global_batch() -> PretrainBatch:
    # equal image sizes: the global box spans the padded batch, so per-rank and global padding must agree
    gen = torch.Generator().manual_seed(3)
    n = WORLD * PER_RANK
    images = [torch.rand(3, 64, 64, generator=gen) for _ in range(n)]
    boxes = []
    for _ in range(n):
        xy = torch.rand(5, 2, generator=gen) * 30
        boxes.append(torch.cat([xy, xy + 16 + torch.rand(5, 2, generator=gen) * 18], dim=1))
    tokens = create_model("RN-micro").tokenize([f"photo {i}" for i in range(n)])
    return PretrainBatch(images, tokens, boxes)


def _rank_batch(batch: PretrainBatch, rank: int) -> PretrainBatch:
    s = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    return PretrainBatch(batch.images[s], batch.tokens[s], batch.boxes[s])


def _grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad and p.grad is not None}


def _worker(rank: int, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    # 1) the image-text loss alone, through a linear "encoder"
    torch.manual_seed(0)
    enc = nn.parallel.DistributedDataParallel(nn.Linear(6, 4))
    x = torch.randn(WORLD * PER_RANK, 6)
    t = torch.randn(WORLD * PER_RANK, 4)
    s = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    loss = image_text_contrastive(enc(x[s]), t[s], 0.1, all_gather_with_grad)["loss_image_text"]
    loss.backward()
    linear = {"loss": loss.detach(), "grad": enc.module.weight.grad.clone()}
    # 2) the whole task
    task = _task(all_gather_with_grad).train()
    ddp = nn.parallel.DistributedDataParallel(task)
    out = ddp(_rank_batch(_global_batch(), rank))
    sum(out.losses.values()).backward()
    result = {
        "linear": linear,
        "losses": {k: v.detach() for k, v in out.losses.items()},
        "grads": _grads(task),
    }
    torch.save(result, f"{tmp}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # ~20-40 s: two spawned processes each import torch and build models
def test_two_ranks_match_single_process(tmp_path: Path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    # 1) image-text loss: same value on every rank = single-process loss; DDP gradient = single-process one
    torch.manual_seed(0)
    enc = nn.Linear(6, 4)
    x = torch.randn(WORLD * PER_RANK, 6)
    t = torch.randn(WORLD * PER_RANK, 4)
    loss = image_text_contrastive(enc(x), t, 0.1)["loss_image_text"]
    loss.backward()
    for r in ranks:
        assert torch.allclose(r["linear"]["loss"], loss.detach(), atol=1e-5)
        assert torch.allclose(r["linear"]["grad"], enc.weight.grad, atol=1e-5)

    # 2) the task: image-text part on the global batch + average of the per-rank region-loss gradients
    batch = _global_batch()
    image_text = _task(None, weights=(0.0, 0.0, 1.0)).train()
    out_it = image_text(batch)
    out_it.losses["loss_image_text"].backward()
    expected = _grads(image_text)
    region_losses = []
    for rank in range(WORLD):
        region = _task(None, weights=(1.0, 1.0, 0.0)).train()
        out = region(_rank_batch(batch, rank))
        (sum(out.losses.values()) / WORLD).backward()
        region_losses.append(out.losses)
        for name, g in _grads(region).items():
            expected[name] = expected[name] + g
    for rank, r in enumerate(ranks):
        assert torch.allclose(
            r["losses"]["loss_image_text"], out_it.losses["loss_image_text"].detach(), atol=1e-5
        )
        for key in ("loss_region_concept", "loss_region_distill"):
            assert torch.allclose(r["losses"][key], region_losses[rank][key].detach(), atol=1e-5)
    assert set(ranks[0]["grads"]) == set(expected)
    nonzero = 0
    for name, g in expected.items():
        for r in ranks:  # DDP leaves the same averaged gradient on every rank
            assert torch.allclose(r["grads"][name], g, atol=1e-5, rtol=1e-4), name
        nonzero += int(g.abs().sum() > 0)
    assert nonzero > len(expected) // 2

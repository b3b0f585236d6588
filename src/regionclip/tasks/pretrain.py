"""The pretrain task (``regionclip pretrain``): RegionCLIP pretraining of the student (paper §3.2; method reference §4-5).

    regionclip pretrain --config configs/pretrain_rn50_cc3m.yaml [key.sub=value ...]
    torchrun --nproc_per_node=N -m regionclip pretrain --config ... (one process per GPU)

Builds the task (:func:`regionclip.pretrain.task.build_pretrain_task`) and the image-caption batches of this
rank, runs the engine's training loop (resuming from the last checkpoint in ``out_dir``), then writes
``out_dir/student.safetensors`` (a regionclip CLIP checkpoint: student image tower + original text tower)
and ``out_dir/config.yaml`` (the resolved config). Skipped corrupt samples are counted and reported.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from regionclip.clip.presets import get_preset
from regionclip.data.pairs import (
    CocoCaptions,
    WebDatasetPairs,
    collate_pairs,
    expand_shards,
    pretrain_transform,
    webdataset_batches,
)
from regionclip.engine.data import map_style_batches
from regionclip.engine.distributed import all_gather_with_grad, all_reduce_mean, cleanup
from regionclip.engine.loop import train
from regionclip.errors import ConfigError
from regionclip.pretrain.config import PretrainConfig
from regionclip.pretrain.task import PretrainBatch, build_pretrain_task
from regionclip.tasks.run import setup_run

log = logging.getLogger("regionclip.pretrain")


def make_pretrain_batches(cfg, dist, tokenize: Callable, skipped: Counter) -> Callable[[int], Iterator]:
    """The engine's ``make_batches(start_step)`` for ``cfg.data``: :class:`PretrainBatch` es of this rank.

    Captions are tokenised in the training process; skipped samples reported by the data are added to
    ``skipped`` (reason -> count).
    """

    d, t = cfg.data, cfg.train
    transform = pretrain_transform(d.short_size, d.max_size, d.flip_p)
    if d.kind == "webdataset":
        if not d.shards:
            raise ConfigError(
                "data.shards is empty: give webdataset tar files or patterns (data/{00000..00099}.tar)"
            )
        dataset = WebDatasetPairs(
            expand_shards(d.shards),
            t.batch_size,
            transform,
            dist.rank,
            dist.world_size,
            0,
            t.seed,
            d.max_captions,
        )
        pair_batches = webdataset_batches(dataset, t.num_workers)
    else:
        if not d.captions_json or not d.image_dir:
            raise ConfigError("data.kind is coco_captions: set data.captions_json and data.image_dir")
        dataset = CocoCaptions(d.captions_json, d.image_dir, transform, d.max_captions)
        pair_batches = map_style_batches(dataset, t.batch_size, t.seed, dist, collate_pairs, t.num_workers)

    def make_batches(start_step: int) -> Iterator[PretrainBatch]:
        for pairs in pair_batches(start_step):
            for entry in pairs.skipped:
                skipped[entry.rsplit(": ", 1)[-1]] += 1
            yield PretrainBatch(pairs.images, tokenize(pairs.captions))

    return make_batches


def pretrain(cfg: PretrainConfig, resume: bool = True) -> Path:
    """Pretrain the student of ``cfg`` (resuming from the last checkpoint in ``out_dir`` unless not ``resume``);
    returns the path of ``student.safetensors`` (written by rank 0)."""

    run = setup_run(cfg, cfg.out_dir, cfg.device, write_config=False)
    dist, out_dir, config_dict = run.dist, run.out_dir, run.config
    student = out_dir / "student.safetensors"
    try:
        task = build_pretrain_task(cfg, gather=all_gather_with_grad if dist.distributed else None)
        from open_clip.tokenizer import SimpleTokenizer

        context_length = get_preset(cfg.model.preset).text.context_length
        tokenizer = SimpleTokenizer(context_length=context_length)

        def tokenize(texts: list[str]) -> torch.Tensor:
            return tokenizer(list(texts), context_length=context_length)

        skipped: Counter = Counter()
        make_batches = make_pretrain_batches(cfg, dist, tokenize, skipped)
        run.write_config()  # after every eager check, so a refused run leaves an earlier config.yaml alone
        result = train(
            task,
            make_batches,
            cfg.train,
            out_dir,
            dist,
            config_dict,
            resume=resume,
            desc="pretrain",
        )
        total_skipped = all_reduce_mean(float(sum(skipped.values())), dist.device) * dist.world_size
        if dist.is_main:
            task.save_student(student, {"pretrain_config": config_dict})
            if total_skipped:
                log.warning(
                    "skipped %d unusable samples (rank 0: %s)", round(total_skipped), dict(skipped) or "none"
                )
            log.info(
                "pretrained %d steps (resumed from %d) in %.1f s; student written to %s",
                result.steps,
                result.resumed_from,
                result.seconds,
                student,
            )
    finally:
        cleanup()
    return student

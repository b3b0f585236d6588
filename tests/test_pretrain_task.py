"""Tests of the pretraining task: composition, frozen parts, sampling, metrics, export and the builder."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from regionclip.clip.checkpoint import create_model, load_clip
from regionclip.clip.model import freeze_stages
from regionclip.concepts import ConceptBank
from regionclip.config import config_from_dict
from regionclip.errors import RegionCLIPError
from regionclip.pretrain.config import PretrainConfig
from regionclip.pretrain.pseudo_labels import pseudo_label
from regionclip.pretrain.task import PretrainBatch, PretrainTask, TextEncoder, build_pretrain_task
from regionclip.proposals.base import GivenBoxes
from regionclip.regions import RegionEncoder
from regionclip.structures import ImageBatch

NAMES = ["cat", "dog", "car", "tree", "cup", "boat"]


@functools.lru_cache(maxsize=2)
def _base_clip(seed: int):
    torch.manual_seed(seed)
    return create_model("RN-micro")


def _tokenizer():
    return _base_clip(0).tokenize


def make_task(seed: int = 0, **kwargs) -> PretrainTask:
    clip = copy.deepcopy(_base_clip(seed))
    teacher = RegionEncoder(copy.deepcopy(clip.visual))
    freeze_stages(clip.visual, 2)
    concepts = torch.randn(len(NAMES), clip.embed_dim)
    return PretrainTask(
        student=RegionEncoder(clip.visual),
        teacher=teacher,
        text=TextEncoder(clip),
        proposals=GivenBoxes(),
        concepts=concepts,
        teacher_concepts=concepts.clone(),
        student_preset=clip.preset,
        **kwargs,
    )


def make_batch(task: PretrainTask, n_images: int = 2, n_boxes: int = 6, seed: int = 1) -> PretrainBatch:
    gen = torch.Generator().manual_seed(seed)
    sizes = [(64, 80), (72, 64), (64, 64)][:n_images]
    images = [torch.rand(3, h, w, generator=gen) for h, w in sizes]
    boxes = []
    for h, w in sizes:
        xy = torch.rand(n_boxes, 2, generator=gen) * torch.tensor([w / 2, h / 2])
        wh = 16 + torch.rand(n_boxes, 2, generator=gen) * torch.tensor([w / 2 - 16, h / 2 - 16])
        boxes.append(torch.cat([xy, xy + wh], dim=1))
    tokens = _tokenizer()([f"a photo of a {NAMES[i]}" for i in range(n_images)])
    return PretrainBatch(images, tokens, boxes)


def test_forward_returns_three_finite_losses_and_metrics():
    task = make_task().train()
    out = task(make_batch(task))
    assert set(out.losses) == {"loss_region_concept", "loss_region_distill", "loss_image_text"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in out.losses.values())
    assert out.metrics["regions"] == 12.0
    assert 0.0 < out.metrics["kept_fraction"] <= 1.0
    assert 0.0 < out.metrics["teacher_confidence"] <= 1.0
    assert 1.0 <= out.metrics["distinct_labels"] <= len(NAMES)


def test_losses_use_same_boxes_for_student_and_teacher():
    # student == teacher at initialisation, so the distillation target equals the student's own distribution
    # (up to float error) exactly when both embed the same boxes
    task = make_task().train()
    batch = make_batch(task)
    out = task(batch)
    assert float(out.losses["loss_region_distill"].detach()) < 1e-4


def test_region_losses_match_direct_computation():
    task = make_task().eval()
    batch = make_batch(task)
    out = task(batch)
    images = ImageBatch.from_images(batch.images)
    with torch.no_grad():
        regions = task.student(images.tensor, batch.boxes)
        labels = pseudo_label(task.teacher(images.tensor, batch.boxes), task.teacher_concepts)
    from regionclip.pretrain.losses import region_concept_contrastive

    expected = region_concept_contrastive(
        regions[labels.keep], task.concepts[labels.labels], labels.positive_mask
    )["loss_region_concept"]
    assert abs(float(out.losses["loss_region_concept"].detach()) - float(expected)) < 1e-4


def test_only_student_layer2_to_attnpool_get_gradients():
    task = make_task().train()
    out = task(make_batch(task))
    sum(out.losses.values()).backward()
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert trainable, "the student must have trainable parameters"
    for name in trainable:
        assert name.startswith(
            (
                "student.visual.layer2",
                "student.visual.layer3",
                "student.visual.layer4",
                "student.visual.attnpool",
            )
        ), name
    for name, p in task.named_parameters():
        if name.startswith(("teacher.", "text.", "student.visual.layer1", "student.visual.conv1")):
            assert not p.requires_grad and p.grad is None, name
    # (open_clip zero-initialises each block's last BN, so at random init the residual branches get no
    # gradient; the downsample paths and the attention pool do)
    assert dict(task.named_parameters())["student.visual.layer4.0.downsample.0.weight"].grad.abs().sum() > 0
    assert task.student.visual.attnpool.c_proj.weight.grad.abs().sum() > 0


def test_frozen_parts_unchanged_after_optimizer_steps():
    task = make_task().train()
    before = {k: v.clone() for k, v in task.state_dict().items()}
    opt = torch.optim.SGD([p for p in task.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    for seed in range(3):
        out = task(make_batch(task, seed=seed))
        opt.zero_grad()
        sum(out.losses.values()).backward()
        opt.step()
    after = task.state_dict()
    for key, value in before.items():
        frozen = (
            key.startswith(
                ("teacher.", "text.", "student.visual.layer1.", "student.visual.conv1", "student.visual.bn")
            )
            or "bn" in key
            or "downsample.1" in key
        )
        if frozen:
            assert torch.equal(value, after[key]), key
    changed = "student.visual.layer3.0.downsample.0.weight"
    assert not torch.equal(before[changed], after[changed])
    # the teacher stays in eval mode while the task trains
    assert (
        task.training and not task.teacher.training and not task.text.training and not task.proposals.training
    )


def test_training_mode_samples_regions_per_image():
    task = make_task(regions_per_image=4).train()
    batch = make_batch(task, n_boxes=10)
    assert task(batch).metrics["regions"] == 8.0
    task.eval()
    assert task(batch).metrics["regions"] == 20.0


def test_zero_weight_drops_the_loss_and_weights_scale():
    task = make_task(weight_image_text=0.0, weight_region_distill=2.0).eval()
    ref = make_task().eval()
    ref.concepts.copy_(task.concepts)  # make_task draws them from the global generator
    ref.teacher_concepts.copy_(task.teacher_concepts)
    # the same student change in both, so that the distillation KL is not round-off around 0 (a student
    # equal to its teacher gives a KL of 1e-12 or, with denormals flushed, -2e-8)
    for t in (task, ref):
        with torch.no_grad():
            weight = t.student.visual.attnpool.c_proj.weight
            weight.add_(0.5 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(3)))
    batch = make_batch(task)
    out, out_ref = task(batch), ref(batch)
    assert set(out.losses) == {"loss_region_concept", "loss_region_distill"}
    assert out_ref.losses["loss_region_distill"] > 1e-4
    assert torch.allclose(out.losses["loss_region_distill"], 2 * out_ref.losses["loss_region_distill"])


def test_image_batch_input_and_no_regions():
    task = make_task().train()
    batch = make_batch(task)
    images = ImageBatch.from_images(batch.images)
    empty = PretrainBatch(images, batch.tokens, [torch.zeros(0, 4), torch.zeros(0, 4)])
    out = task(empty)
    assert float(out.losses["loss_region_concept"].detach()) == 0.0
    assert float(out.losses["loss_region_distill"].detach()) == 0.0
    sum(out.losses.values()).backward()  # the image-text loss still trains the student
    assert out.metrics["regions"] == 0.0


def test_student_export_loads_as_clip(tmp_path):
    task = make_task()
    with torch.no_grad():
        task.student.visual.layer4[0].conv1.weight.add_(1.0)  # make the student differ from the init
    path = task.save_student(tmp_path / "student.safetensors", {"note": "test"})
    clip = load_clip(path)
    for k, v in task.student.visual.state_dict().items():
        assert torch.equal(clip.visual.state_dict()[k], v), k
    tokens = clip.tokenize(["a cat"])
    assert torch.allclose(clip.encode_text(tokens), task.text(tokens), atol=1e-6)


def _bank(tmp_path, dim: int, name: str = "bank.safetensors", names=NAMES) -> str:
    path = tmp_path / name
    ConceptBank(list(names), torch.randn(len(names), dim)).save(path)
    return str(path)


def test_build_pretrain_task_from_config(tmp_path):
    cfg = config_from_dict(
        PretrainConfig,
        {
            "model": {"preset": "RN-micro"},
            "concepts": {"bank": _bank(tmp_path, 32)},
            "proposals": {"kind": "random", "random": {"count": 5, "min_size": 8, "seed": None}},
            "loss": {"regions_per_image": 3},
        },
    )
    task = build_pretrain_task(cfg).train()
    # official init: teacher == student image tower
    for k, v in task.teacher.visual.state_dict().items():
        assert torch.equal(v, task.student.visual.state_dict()[k]), k
    assert not task.student.visual.layer1[0].conv1.weight.requires_grad
    assert task.student.visual.layer2[0].conv1.weight.requires_grad
    batch = make_batch(task)
    out = task(PretrainBatch(batch.images, batch.tokens))
    assert out.metrics["regions"] == 6.0
    assert set(out.losses) == {"loss_region_concept", "loss_region_distill", "loss_image_text"}


def test_build_pretrain_task_rejects_bad_concepts_and_teacher(tmp_path):
    base = {"model": {"preset": "RN-micro"}, "proposals": {"kind": "gt"}}
    with pytest.raises(RegionCLIPError, match="concepts.bank"):
        build_pretrain_task(config_from_dict(PretrainConfig, base))
    with pytest.raises(RegionCLIPError, match="32-d"):
        build_pretrain_task(
            config_from_dict(PretrainConfig, {**base, "concepts": {"bank": _bank(tmp_path, 16)}})
        )
    with pytest.raises(RegionCLIPError, match="names file"):
        build_pretrain_task(config_from_dict(PretrainConfig, {**base, "concepts": {"bank": "x.pth"}}))
    other = _bank(tmp_path, 32, "other.safetensors", names=NAMES[::-1])
    with pytest.raises(RegionCLIPError, match="same concepts"):
        build_pretrain_task(
            config_from_dict(
                PretrainConfig, {**base, "concepts": {"bank": _bank(tmp_path, 32), "teacher_bank": other}}
            )
        )
    with pytest.raises(RegionCLIPError, match="teacher_weights"):
        cfg = {**base, "model": {"preset": "RN-micro", "teacher_preset": "RN-tiny"}}
        build_pretrain_task(
            config_from_dict(PretrainConfig, {**cfg, "concepts": {"bank": _bank(tmp_path, 32)}})
        )


def test_teacher_of_another_preset_uses_its_own_concepts(tmp_path):
    torch.manual_seed(0)
    from regionclip.clip.checkpoint import save_clip

    teacher_path = save_clip(create_model("RN-tiny"), tmp_path / "teacher.safetensors")
    cfg = config_from_dict(
        PretrainConfig,
        {
            "model": {
                "preset": "RN-micro",
                "teacher_preset": "RN-tiny",
                "teacher_weights": str(teacher_path),
            },
            "concepts": {"bank": _bank(tmp_path, 32), "teacher_bank": _bank(tmp_path, 128, "t.safetensors")},
            "proposals": {"kind": "gt"},
        },
    )
    task = build_pretrain_task(cfg).train()
    assert task.teacher.embed_dim == 128 and task.student.embed_dim == 32
    out = task(make_batch(task))
    assert all(torch.isfinite(v) for v in out.losses.values())


def _write_shard(path, n: int, corrupt: int) -> str:
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
            files = {
                "jpg": b"broken" if i == corrupt else buf.getvalue(),
                "txt": f"a photo of a {NAMES[i % 6]}".encode(),
            }
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{i:05d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_cli_pretrain_tiny_runs_skips_corrupt_samples_and_resumes_exactly(tmp_path, caplog):
    import shutil

    from regionclip.checkpoint import load_checkpoint
    from regionclip.cli import main

    shards = [_write_shard(tmp_path / f"s{i}.tar", 6, corrupt=1 if i == 0 else -1) for i in range(2)]
    out = tmp_path / "run"
    args = [
        "pretrain",
        "--config",
        "configs/pretrain_tiny.yaml",
        "model.preset=RN-micro",
        f"concepts.bank={_bank(tmp_path, 32)}",
        f"data.shards={shards}",
        "data.short_size=48",
        "data.max_size=80",
        f"out_dir={out}",
        "train.max_steps=4",
        "train.checkpoint_every=2",
        "train.batch_size=2",
    ]
    caplog.set_level("INFO")
    assert main(args) == 0
    assert "skipped 1 unusable samples" in caplog.text
    student = load_clip(out / "student.safetensors")
    assert (out / "config.yaml").is_file() and "RN-micro" in (out / "config.yaml").read_text()
    torch.manual_seed(0)
    init = create_model("RN-micro")
    name = "layer4.0.downsample.0.weight"
    assert not torch.equal(student.visual.state_dict()[name], init.visual.state_dict()[name])  # trained
    assert torch.equal(student.visual.conv1.weight, init.visual.conv1.weight)  # frozen stem
    assert (
        load_checkpoint(out / "student.safetensors").config["pretrain_config"]["model"]["preset"]
        == "RN-micro"
    )

    # an interrupted run: remove the final checkpoint and the student, resume from step 2
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    (resumed / "checkpoints" / "step_00000004.pt").unlink()
    (resumed / "student.safetensors").unlink()
    assert main([a if not a.startswith("out_dir=") else f"out_dir={resumed}" for a in args]) == 0
    again = load_clip(resumed / "student.safetensors")
    for k, v in student.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_pseudo_label_temperature_is_independent_of_the_student_temperature():
    assert PretrainConfig().loss.pseudo_label_temperature == 0.01  # the official hard-coded s_temp
    task = make_task(temperature=0.07).eval()  # student τ moved, teacher τ left at its default
    batch = make_batch(task)
    out = task(batch)
    images = ImageBatch.from_images(batch.images)
    with torch.no_grad():
        emb = task.teacher(images.tensor, batch.boxes)
    # independent computation: softmax of cosine / 0.01 over the pool, top-1 probability averaged
    v = torch.nn.functional.normalize(emb, dim=-1)
    c = torch.nn.functional.normalize(task.teacher_concepts, dim=-1)
    top = (v @ c.t() / 0.01).softmax(-1).max(-1).values.mean()
    assert abs(out.metrics["teacher_confidence"] - float(top)) < 1e-5
    task.pseudo_label_temperature = 0.07
    moved = task(batch)
    top_moved = (v @ c.t() / 0.07).softmax(-1).max(-1).values.mean()
    assert abs(moved.metrics["teacher_confidence"] - float(top_moved)) < 1e-5
    assert abs(float(top) - float(top_moved)) > 1e-3


_COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
}


def _one_object_images(n: int, seed: int, distinct: bool):
    """Noisy grey 64x64 images, each with one coloured square (class = colour) and its GT box."""
    g = torch.Generator().manual_seed(seed)
    images, boxes, labels = [], [], []
    for k in range(n):
        img = torch.rand(3, 64, 64, generator=g) * 0.3 + 0.35
        c = k % 4 if distinct else int(torch.randint(0, 4, (1,), generator=g))
        s = int(torch.randint(28, 44, (1,), generator=g))
        x, y = (int(v) for v in torch.randint(0, 64 - s, (2,), generator=g))
        img[:, y : y + s, x : x + s] = torch.tensor(list(_COLOURS.values())[c])[:, None, None] * 0.8 + 0.1
        images.append(img)
        boxes.append(torch.tensor([[x, y, x + s, y + s]], dtype=torch.float32))
        labels.append(c)
    return images, boxes, torch.tensor(labels)


def test_tiny_pretraining_with_correct_labels_beats_the_teacher_on_regions(tmp_path):
    """GT boxes as the regions, the category names as the concept pool, captions naming the true category:
    a short pretraining run (the engine's loop, AdamW) must raise region top-1 accuracy (region embedding of
    the GT box vs the pool, computed here independently) well above the teacher's (the initial weights).
    The region-level losses are off: with a random teacher their pseudo-labels are noise, not correct labels.
    """
    from regionclip.concepts import embed_names
    from regionclip.engine.distributed import DistInfo
    from regionclip.engine.loop import TrainConfig, train

    names = list(_COLOURS)
    torch.manual_seed(0)
    clip = create_model("RN-micro")
    teacher = RegionEncoder(copy.deepcopy(clip.visual))
    freeze_stages(clip.visual, 2)
    pool = embed_names(clip, names, ("a photo of a {}.",))
    task = PretrainTask(
        RegionEncoder(clip.visual), teacher, TextEncoder(clip), GivenBoxes(), pool, pool.clone(), clip.preset,
        weight_region_concept=0.0, weight_region_distill=0.0,
    )  # fmt: skip

    def accuracy(encoder, images, boxes, labels) -> float:
        with torch.no_grad():
            emb = torch.cat(
                [
                    encoder(ImageBatch.from_images([im]).tensor, [b])
                    for im, b in zip(images, boxes, strict=True)
                ]
            )
        cos = torch.nn.functional.normalize(emb, dim=-1) @ torch.nn.functional.normalize(pool, dim=-1).t()
        return float((cos.argmax(dim=1) == labels).float().mean())

    def make_batches(start: int):
        for step in range(start, 10**9):
            images, boxes, labels = _one_object_images(4, step, distinct=True)
            tokens = clip.tokenize([f"a photo of a {names[int(c)]}." for c in labels])
            yield PretrainBatch(images, tokens, boxes)

    val = _one_object_images(64, 999, distinct=False)
    before = accuracy(task.teacher, *val)
    cfg = TrainConfig(
        max_steps=100, batch_size=4, optimizer="adamw", lr=1e-2, weight_decay=0.0, warmup_steps=10,
        lr_milestones=(0.6, 0.85), checkpoint_every=10**6, log_every=50, progress=False,
    )  # fmt: skip
    train(task, make_batches, cfg, tmp_path, DistInfo())
    after = accuracy(task.student.eval(), *val)
    assert after >= before + 0.25, (before, after)
    assert accuracy(task.teacher, *val) == before  # the teacher stays frozen

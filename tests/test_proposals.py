"""Tests of the proposal generators: the class-agnostic RPN (training, presets, logits, checkpoints), random
boxes, given boxes, the builder, and the train-rpn / eval-rpn commands end to end on a tiny set."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import box_iou

from regionclip.cli import main
from regionclip.errors import ConfigError
from regionclip.eval.recall import ProposalRecall
from regionclip.proposals.base import GivenBoxes
from regionclip.proposals.config import (
    PROPOSAL_PRESETS,
    ProposalConfig,
    RandomBoxesConfig,
    RPNConfig,
    get_proposal_preset,
)
from regionclip.proposals.loading import build_proposal_generator, load_proposal_generator
from regionclip.proposals.random_boxes import RandomBoxes
from regionclip.proposals.rpn import (
    ClassAgnosticRPN,
    ResNetTrunk,
    build_rpn,
    make_cell_anchors,
    save_rpn,
)
from regionclip.structures import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD, ImageBatch


class PatchTrunk(nn.Module):
    """A fast stand-in trunk: one 16x16 stride-16 convolution (the RPN accepts any stride-16 trunk)."""

    def __init__(self, channels: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 16, stride=16)
        self.out_channels = channels

    def forward(self, images: ImageBatch) -> torch.Tensor:
        return torch.relu(self.conv(images.tensor))


def patch_rpn(
    preset: str = "transfer", sizes=(16.0, 32.0), ratios=(0.5, 1.0, 2.0), seed: int = 0
) -> ClassAgnosticRPN:
    torch.manual_seed(seed)
    anchors = make_cell_anchors(list(sizes), list(ratios))
    trunk = PatchTrunk()
    return ClassAgnosticRPN(
        trunk, RPNHead(trunk.out_channels, anchors.shape[0]), anchors, get_proposal_preset(preset)
    )


def rectangles(n: int, size: int = 64, seed: int = 1) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``n`` dark images with one bright rectangle each, and its box."""
    g = torch.Generator().manual_seed(seed)
    images, boxes = [], []
    for _ in range(n):
        w, h = (int(v) for v in torch.randint(14, 36, (2,), generator=g))
        x = int(torch.randint(0, size - w, (1,), generator=g))
        y = int(torch.randint(0, size - h, (1,), generator=g))
        image = torch.full((3, size, size), 0.1)
        image[:, y : y + h, x : x + w] = 0.9
        images.append(image)
        boxes.append(torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32))
    return images, boxes


def train_steps(rpn: ClassAgnosticRPN, batch: ImageBatch, boxes: list[torch.Tensor], steps: int, lr: float):
    opt = torch.optim.Adam([p for p in rpn.parameters() if p.requires_grad], lr=lr)
    history = []
    for _ in range(steps):
        losses = rpn.losses(batch, boxes)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return history


def recall_at_100_iou_05(rpn: ClassAgnosticRPN, batch: ImageBatch, boxes: list[torch.Tensor]) -> float:
    evaluator = ProposalRecall([100], thresholds=[0.5])
    for props, gt in zip(rpn.eval()(batch), boxes, strict=True):
        evaluator.process(props.boxes, props.objectness, gt, torch.zeros(len(gt)))
    return evaluator.evaluate()["all"]["AR@100"]


def test_rpn_training_lowers_loss_and_reaches_recall_floor():
    images, boxes = rectangles(6)
    batch = ImageBatch.from_images(images)
    rpn = patch_rpn()
    before = recall_at_100_iou_05(rpn, batch, boxes)
    history = train_steps(rpn.train(), batch, boxes, steps=30, lr=2e-2)
    assert sum(history[-5:]) / 5 < 0.5 * sum(history[:5]) / 5
    after = recall_at_100_iou_05(rpn, batch, boxes)
    assert after >= 0.5 and after >= before


@pytest.mark.slow
def test_rpn_training_with_rn_micro_clip_trunk():
    images, boxes = rectangles(4)
    batch = ImageBatch.from_images(images)
    torch.manual_seed(0)
    rpn = build_rpn(RPNConfig(trunk="clip:RN-micro", anchor_sizes=[16.0, 32.0], freeze_at=4))
    history = train_steps(rpn.train(), batch, boxes, steps=40, lr=1e-2)
    assert sum(history[-5:]) < 0.5 * sum(history[:5])
    assert recall_at_100_iou_05(rpn, batch, boxes) >= 0.5


def test_rn_micro_rpn_smoke_losses_and_gradients():
    images, boxes = rectangles(2)
    rpn = build_rpn(RPNConfig(trunk="clip:RN-micro", anchor_sizes=[16.0, 32.0]))
    losses = rpn.losses(ImageBatch.from_images(images), boxes)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert rpn.head.cls_logits.weight.grad.abs().sum() > 0
    assert rpn.trunk.visual.layer3[0].conv1.weight.grad is not None  # trainable above freeze_at=2
    assert rpn.trunk.visual.conv1.weight.grad is None  # stem frozen (official FREEZE_AT=2)


def test_images_without_boxes_give_zero_box_loss():
    rpn = patch_rpn()
    losses = rpn.losses(ImageBatch.from_images([torch.rand(3, 64, 64)] * 2), [torch.zeros(0, 4)] * 2)
    assert losses["loss_rpn_box_reg"].item() == 0.0
    assert losses["loss_objectness"].item() > 0.0


def test_anchor_count_per_location_is_sizes_times_ratios():
    cfg = RPNConfig(trunk="clip:RN-micro")  # official 32..512 x 0.5/1/2
    rpn = build_rpn(cfg)
    assert rpn.cell_anchors.shape == (15, 4)
    assert rpn.head.cls_logits.out_channels == 15
    anchors = rpn.anchors((2, 3))
    assert anchors.shape == (2 * 3 * 15, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert torch.allclose(centres[15 * 4], torch.tensor([16.0, 16.0]), atol=0.5)  # cell (1, 1), stride 16


def max_pairwise_iou(boxes: torch.Tensor) -> float:
    iou = box_iou(boxes, boxes)
    iou.fill_diagonal_(0)
    return float(iou.max()) if len(boxes) > 1 else 0.0


def test_presets_nms_topk_and_training_sampling():
    assert PROPOSAL_PRESETS["pretraining"].nms_thresh == 0.5
    assert PROPOSAL_PRESETS["transfer"].pre_nms_topk == 6000
    assert PROPOSAL_PRESETS["zero_shot"].nms_thresh == 0.9
    batch = ImageBatch.from_images([torch.rand(3, 320, 320)])
    sizes, ratios = (8.0, 16.0, 32.0, 64.0, 128.0), (0.5, 1.0, 2.0)
    pre = patch_rpn("pretraining", sizes, ratios)
    pre.eval()
    evaluated = pre(batch)[0]
    assert len(evaluated) == 300
    assert max_pairwise_iou(evaluated.boxes) <= 0.5 + 1e-6
    pre.train()  # the official offline RPN always runs in eval mode: the consumer samples (regions_per_image)
    in_training = pre(batch)[0]
    assert torch.equal(in_training.boxes, evaluated.boxes)
    for name, limit, thresh in (("transfer", 1000, 0.7), ("zero_shot", 1000, 0.9)):
        rpn = patch_rpn(name, sizes, ratios)
        rpn.train()  # no sampling in training mode
        props = rpn(batch)[0]
        assert 300 < len(props) <= limit
        assert max_pairwise_iou(props.boxes) <= thresh + 1e-6
    assert len(patch_rpn("zero_shot", sizes, ratios).eval()(batch)[0]) >= len(
        patch_rpn("transfer", sizes, ratios).eval()(batch)[0]
    )


def test_proposals_carry_raw_logits_sorted_inside_images():
    rpn = patch_rpn().eval()
    with torch.no_grad():
        rpn.head.cls_logits.bias.fill_(-3.0)  # logits near -3: sigmoid would be ~0.05, never negative
    batch = ImageBatch.from_images([torch.rand(3, 64, 96), torch.rand(3, 80, 48)])
    logits, _, _ = rpn.predict(batch)
    for i, (props, (h, w)) in enumerate(zip(rpn(batch), batch.image_sizes, strict=True)):
        assert len(props) > 0
        assert (props.objectness < 0).all()
        assert torch.isin(props.objectness, logits[i]).all()  # exactly the head's logits
        assert (props.objectness[:-1] >= props.objectness[1:]).all()
        b = props.boxes
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()


def test_frozen_rpn_stays_in_eval_and_round_trips_through_checkpoint(tmp_path):
    cfg = RPNConfig(trunk="clip:RN-micro", anchor_sizes=[16.0, 32.0])
    torch.manual_seed(3)
    rpn = build_rpn(cfg, "pretraining")
    path = save_rpn(rpn, cfg, tmp_path / "rpn.safetensors")
    loaded = load_proposal_generator(path, "pretraining")
    assert not any(p.requires_grad for p in loaded.parameters())
    loaded.train()
    assert loaded.training and all(not m.training for m in loaded.modules() if m is not loaded)
    batch = ImageBatch.from_images([torch.rand(3, 64, 64)])
    ref = rpn.eval()(batch)[0]
    got = loaded.eval()(batch)[0]
    assert torch.allclose(ref.boxes, got.boxes) and torch.allclose(ref.objectness, got.objectness)
    generator = build_proposal_generator(
        ProposalConfig(kind="rpn", rpn_checkpoint=str(path), preset="zero_shot")
    )
    assert generator.preset == PROPOSAL_PRESETS["zero_shot"]


def test_resnet_trunk_converts_clip_input_to_imagenet_and_keeps_padding_zero():
    trunk = ResNetTrunk(nn.Identity(), 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1.0, (0, 1, 2))
    colour = torch.tensor([0.2, 0.5, 0.8]).view(3, 1, 1)
    batch = ImageBatch.from_images([colour.expand(3, 16, 16).clone(), colour.expand(3, 8, 8).clone()])
    x = trunk(batch)
    expected = (colour.view(3) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(x[0, :, 5, 5], expected, atol=1e-5)
    assert torch.allclose(x[1, :, 3, 3], expected, atol=1e-5)
    assert (x[1, :, 8:, :] == 0).all() and (x[1, :, :, 8:] == 0).all()
    bgr = ResNetTrunk(nn.Identity(), 3, (103.53, 116.28, 123.675), (1.0, 1.0, 1.0), 255.0, (2, 1, 0))
    y = bgr(batch)
    assert torch.allclose(
        y[0, :, 0, 0], torch.tensor([0.8 * 255 - 103.53, 0.5 * 255 - 116.28, 0.2 * 255 - 123.675]), atol=1e-3
    )
    assert CLIP_PIXEL_MEAN and CLIP_PIXEL_STD  # the conversion undoes exactly these


def test_torchvision_trunk_builds_and_unknown_trunk_is_refused():
    rpn = build_rpn(RPNConfig(trunk="torchvision:resnet18", anchor_sizes=[16.0]))
    props = rpn(ImageBatch.from_images([torch.rand(3, 64, 64)]))
    assert rpn.trunk.out_channels == 256 and len(props) == 1
    with pytest.raises(ConfigError, match="rpn.trunk"):
        build_rpn(RPNConfig(trunk="vgg16"))
    with pytest.raises(ConfigError, match="unknown torchvision trunk"):
        build_rpn(RPNConfig(trunk="torchvision:vgg16"))


def check_inside_and_nondegenerate(props, sizes, min_side):
    for p, (h, w) in zip(props, sizes, strict=True):
        b = p.boxes
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert ((b[:, 2] - b[:, 0]) >= min_side).all() and ((b[:, 3] - b[:, 1]) >= min_side).all()
        assert (p.objectness == 0).all()


def test_random_boxes_inside_nondegenerate_on_grid_and_reproducible():
    batch = ImageBatch.from_images([torch.rand(3, 70, 100), torch.rand(3, 50, 41)])
    gen = RandomBoxes(count=50, min_size=16, grid=8, seed=7, style="lattice")
    props = gen(batch)
    assert [len(p) for p in props] == [50, 50]
    check_inside_and_nondegenerate(props, batch.image_sizes, 16)
    on_grid = (props[0].boxes % 8 == 0) | (props[0].boxes == torch.tensor([100.0, 70.0, 100.0, 70.0]))
    assert on_grid.all()
    again = RandomBoxes(count=50, min_size=16, grid=8, seed=7, style="lattice")(batch)
    assert all(torch.equal(a.boxes, b.boxes) for a, b in zip(props, again, strict=True))
    other = RandomBoxes(count=50, min_size=16, grid=8, seed=8, style="lattice")(batch)
    assert not torch.equal(props[0].boxes, other[0].boxes)
    assert not torch.equal(props[0].boxes, gen(batch)[0].boxes)  # the next draw differs


def test_random_boxes_same_for_batch_and_tiny_images():
    batch = ImageBatch.from_images([torch.rand(3, 70, 100), torch.rand(3, 50, 41)])
    props = RandomBoxes(count=20, min_size=8, grid=8, same_for_batch=True, seed=0, style="lattice")(batch)
    assert torch.equal(props[0].boxes, props[1].boxes)
    check_inside_and_nondegenerate(props, [(50, 41), (50, 41)], 8)
    tiny = ImageBatch.from_images([torch.rand(3, 5, 6)])
    props = RandomBoxes(count=4, min_size=16, grid=8, seed=0, style="lattice")(tiny)
    assert torch.equal(props[0].boxes, torch.tensor([[0.0, 0.0, 6.0, 5.0]] * 4))
    assert len(RandomBoxes(count=0)(tiny)[0]) == 0


def test_random_boxes_official_distribution():
    # two images padded to 640 x 480 (H x W): the official boxes are one set drawn on the padded size
    batch = ImageBatch.from_images([torch.rand(3, 640, 320), torch.rand(3, 400, 480)])
    assert tuple(batch.tensor.shape[-2:]) == (640, 480)
    n = 20000
    props = RandomBoxes(count=n, seed=3)(batch)  # defaults: official style, min 8 px, grid 8
    b = props[0].boxes
    assert torch.equal(b, props[1].boxes)  # one set for the whole batch
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    assert float(w.min()) >= 8 and float(h.min()) >= 8
    assert (b[:, 0] % 8 == 0).all() and (b[:, 1] % 8 == 0).all()  # top-left on the 8-px cells
    assert float(b[:, 2].max()) <= 480 and float(b[:, 3].max()) <= 640
    assert float(b[:, 2].max()) > 470 and float(b[:, 3].max()) > 630  # reaches the padded edges
    # x1 uniform on the 60 cells 0..472 (mean 236), x2 uniform to its right: E[w] = 8 + (480 - 236 - 8) / 2
    assert abs(float(b[:, 0].mean()) - 236.0) < 4.0
    assert abs(float(w.mean()) - 126.0) < 3.0 and abs(float(w.mean()) - 480 / 4) < 0.1 * 480 / 4
    assert abs(float(h.mean()) - (8 + (640 - 316 - 8) / 2)) < 4.0
    counts = torch.bincount((b[:, 0] / 8).long(), minlength=60).float()
    assert counts.numel() == 60 and float(counts.min()) > 0.7 * n / 60  # every cell, roughly uniform
    assert RandomBoxesConfig().style == "official" and RandomBoxesConfig().min_size == 8.0


def test_given_boxes_are_clipped_and_builder_kinds():
    batch = ImageBatch.from_images([torch.rand(3, 40, 60)])
    props = GivenBoxes()(batch, [torch.tensor([[-5.0, 3.0, 70.0, 50.0]])])
    assert torch.equal(props[0].boxes, torch.tensor([[0.0, 3.0, 60.0, 40.0]]))
    assert isinstance(build_proposal_generator(ProposalConfig(kind="gt")), GivenBoxes)
    random_gen = build_proposal_generator(ProposalConfig(kind="random", random=RandomBoxesConfig(count=5)))
    assert isinstance(random_gen, RandomBoxes) and len(random_gen(batch)[0]) == 5
    with pytest.raises(ConfigError, match="rpn_checkpoint"):
        build_proposal_generator(ProposalConfig(kind="rpn"))
    with pytest.raises(ConfigError, match="preset"):
        get_proposal_preset("fast")


def write_tiny_coco(root, n: int = 4, size: int = 64):
    """A COCO-format set of ``n`` rectangle images: category 1 'box' (base), 2 'blob' (novel)."""
    images, boxes = rectangles(n, size)
    (root / "images").mkdir()
    data = {
        "images": [],
        "annotations": [],
        "categories": [
            {"id": 1, "name": "box", "split": "base"},
            {"id": 2, "name": "blob", "split": "novel"},
        ],
    }
    for i, (image, box) in enumerate(zip(images, boxes, strict=True)):
        name = f"{i}.png"
        Image.fromarray((image.permute(1, 2, 0) * 255).byte().numpy()).save(root / "images" / name)
        data["images"].append({"id": i + 1, "file_name": name, "height": size, "width": size})
        x1, y1, x2, y2 = box[0].tolist()
        data["annotations"].append(
            {"id": i + 1, "image_id": i + 1, "category_id": 1 + i % 2, "bbox": [x1, y1, x2 - x1, y2 - y1],
             "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
        )  # fmt: skip
    (root / "train.json").write_text(json.dumps(data))
    return root / "train.json", root / "images"


def _train_rpn_args(out, json_path, image_root) -> list[str]:
    return [
        "train-rpn",
        f"out_dir={out}",
        f"data.train_json={json_path}",
        f"data.image_root={image_root}",
        "data.short_sizes=[64]",
        "data.test_short_size=64",
        "data.max_size=64",
        "rpn.trunk=clip:RN-micro",
        "rpn.anchor_sizes=[16, 32]",
        "train.max_steps=2",
        "train.batch_size=2",
        "train.warmup_steps=1",
        "train.progress=false",
        "device=cpu",
    ]


def test_train_rpn_and_eval_rpn_commands_end_to_end(tmp_path, capsys):
    json_path, image_root = write_tiny_coco(tmp_path)
    out = tmp_path / "run"
    assert main(_train_rpn_args(out, json_path, image_root)) == 0
    # the same seed gives the same RPN bit for bit (its initial weights are drawn after seeding)
    assert main(_train_rpn_args(tmp_path / "again", json_path, image_root)) == 0
    a, b = load_file(out / "rpn.safetensors"), load_file(tmp_path / "again" / "rpn.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ckpt = out / "rpn.safetensors"
    rpn = load_proposal_generator(ckpt)
    assert rpn.trunk.visual.conv1.weight.shape[0] > 0
    result = tmp_path / "recall.json"
    code = main(
        ["eval-rpn", "--checkpoint", str(ckpt), "--data", str(json_path), "--images", str(image_root),
         "--out", str(result), "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "AR@100" in printed and "novel" in printed
    recall = json.loads(result.read_text())["recall"]
    assert set(recall) == {"all", "base", "novel"}
    assert recall["all"]["num_gt"] == 4 and recall["base"]["num_gt"] == 2 and recall["novel"]["num_gt"] == 2
    assert 0.0 <= recall["all"]["AR@1000"] <= 1.0


def test_train_rpn_rejects_unknown_config_key(tmp_path, capsys):
    assert main(["train-rpn", "rpn.anchors=[1]"]) == 2
    assert "rpn.anchors" in capsys.readouterr().err


def test_load_proposal_generator_dispatches_converted_detectron2_rpns(tmp_path):
    from regionclip.proposals.detectron2 import Detectron2RPNConfig, build_detectron2_rpn, save_detectron2_rpn

    cfg = Detectron2RPNConfig(width=8, stage_blocks=(1, 1, 1, 1), anchor_sizes=(16.0, 32.0))
    path = save_detectron2_rpn(build_detectron2_rpn(cfg), cfg, tmp_path / "d2.safetensors")
    rpn = load_proposal_generator(path, "zero_shot")
    props = rpn(ImageBatch.from_images([torch.rand(3, 64, 64)]))
    assert len(props) == 1 and len(props[0]) > 0
    assert not any(p.requires_grad for p in rpn.parameters())


def test_top_proposals_keeps_the_first_k_per_image():
    from regionclip.proposals.base import GivenBoxes, TopProposals
    from regionclip.structures import ImageBatch

    images = ImageBatch.from_images([torch.rand(3, 32, 32), torch.rand(3, 32, 32)])
    boxes = [torch.tensor([[0.0, 0, 10, 10], [1, 1, 9, 9], [2, 2, 8, 8]]), torch.tensor([[0.0, 0, 5, 5]])]
    out = TopProposals(GivenBoxes(), 2)(images, boxes)
    assert [len(p) for p in out] == [2, 1]
    assert torch.equal(out[0].boxes, boxes[0][:2])

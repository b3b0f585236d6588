"""Tests of regionclip.detect.detector: training losses, zero-GT images, overfitting a tiny world,
open-vocabulary inference (vocabulary changed at call time), the mask head and the recipes."""

import pytest
import torch

from regionclip.clip import create_model
from regionclip.detect import DetectionBatch, DetectorConfig, build_detector, resolve_recipe
from regionclip.detect.losses import FocalScaledCrossEntropy, WeightedCrossEntropy
from regionclip.errors import RegionCLIPError
from regionclip.proposals import GivenBoxes, ProposalGenerator, Proposals
from regionclip.regions import RegionEncoder
from regionclip.structures import ImageBatch

COLORS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _encoder(seed: int = 0) -> RegionEncoder:
    torch.manual_seed(seed)
    return RegionEncoder(create_model("RN-micro").visual)


def _world(n_images: int, seed: int, size: int = 64):
    """Grey images with two coloured squares each; class = colour (red, green, blue)."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(n_images):
        img = torch.full((3, size, size), 0.5)
        boxes, labels = [], []
        for _ in range(2):
            c = int(torch.randint(0, 3, (1,), generator=g))
            s = int(torch.randint(16, 28, (1,), generator=g))
            x, y = (int(v) for v in torch.randint(0, size - s, (2,), generator=g))
            img[:, y : y + s, x : x + s] = COLORS[c][:, None, None]
            boxes.append([x, y, x + s, y + s])
            labels.append(c)
        images.append(img)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)})
    return ImageBatch.from_images(images), targets


def _proposals(boxes: torch.Tensor, g: torch.Generator, n: int = 8) -> torch.Tensor:
    """Jittered copies of the GT boxes plus random boxes."""
    reps = boxes.repeat(n, 1)
    jittered = reps + (torch.rand(reps.shape, generator=g) - 0.5) * 6
    xy = torch.rand(n, 2, generator=g) * 40
    rand = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 16], dim=1)
    return torch.cat([jittered, rand])


class RandomBoxes(ProposalGenerator):
    """A fake RPN: fixed random boxes with objectness logits, ignoring given boxes."""

    def __init__(self, n: int = 6):
        super().__init__()
        self.n = n

    def forward(self, images, given_boxes=None):
        g = torch.Generator().manual_seed(0)
        out = []
        for h, w in images.image_sizes:
            xy = torch.rand(self.n, 2, generator=g) * torch.tensor([w / 2, h / 2])
            boxes = torch.cat([xy, xy + torch.tensor([w / 3, h / 3])], dim=1)
            out.append(Proposals(boxes, torch.randn(self.n, generator=g)))
        return out


def test_zero_gt_image_gives_zero_box_loss_and_finite_cls_loss_with_grads():
    enc = _encoder()
    det = build_detector(DetectorConfig(), enc, RandomBoxes(), torch.randn(3, enc.embed_dim))
    images = ImageBatch.from_images([torch.rand(3, 64, 64)])
    batch = DetectionBatch(images, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
    out = det(batch)
    assert set(out.losses) == {"loss_cls", "loss_box_reg"}
    assert out.losses["loss_box_reg"].item() == 0.0
    assert torch.isfinite(out.losses["loss_cls"]) and out.losses["loss_cls"].item() > 0
    sum(out.losses.values()).backward()
    grads = [p.grad for p in det.backbone.visual.layer4.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert any(gr.abs().sum() > 0 for gr in grads)
    assert out.metrics["fg_fraction"] == 0.0


def test_freezing_and_proposal_generator_mode():
    enc = _encoder()
    det = build_detector(DetectorConfig(), enc, GivenBoxes(), torch.randn(3, enc.embed_dim))
    visual = det.backbone.visual
    assert not any(p.requires_grad for p in visual.conv1.parameters())
    assert not any(p.requires_grad for p in visual.layer1.parameters())
    assert all(p.requires_grad for p in visual.layer2.parameters())
    assert all(p.requires_grad for p in visual.attnpool.parameters())
    assert not det.classifier.background.requires_grad
    assert not det.train_class_embeddings.requires_grad
    det.train()
    assert det.training and not det.proposal_generator.training


def test_recipes_resolve_at_build_time():
    coco = resolve_recipe(DetectorConfig(recipe="coco"))
    assert (coco.cls_loss, coco.bg_loss_weight, coco.nms, coco.max_dets, coco.score_thresh) == (
        "focal",
        0.2,
        "soft",
        100,
        0.001,
    )
    assert coco.score_fusion == "none" and coco.mask_on is False
    lvis = resolve_recipe(DetectorConfig(recipe="lvis", max_dets=50))
    assert (lvis.cls_loss, lvis.bg_loss_weight, lvis.score_fusion, lvis.mask_on) == (
        "weighted_ce",
        0.8,
        "logit",
        True,
    )
    assert lvis.max_dets == 50 and lvis.score_thresh == 0.02  # explicit values win over the recipe
    enc = _encoder()
    det_c = build_detector(DetectorConfig(recipe="coco"), enc, GivenBoxes(), torch.randn(2, enc.embed_dim))
    assert isinstance(det_c.cls_loss, FocalScaledCrossEntropy) and det_c.mask_head is None
    enc = _encoder()
    det_l = build_detector(DetectorConfig(recipe="lvis"), enc, GivenBoxes(), torch.randn(2, enc.embed_dim))
    assert isinstance(det_l.cls_loss, WeightedCrossEntropy) and det_l.mask_head is not None


def test_mask_head_training_and_inference():
    enc = _encoder()
    det = build_detector(DetectorConfig(recipe="lvis"), enc, GivenBoxes(), torch.randn(3, enc.embed_dim))
    images, targets = _world(2, 0)
    for t in targets:
        masks = torch.zeros(len(t["boxes"]), 64, 64, dtype=torch.bool)
        for i, (x1, y1, x2, y2) in enumerate(t["boxes"].long().tolist()):
            masks[i, y1:y2, x1:x2] = True
        t["masks"] = masks
    given = [_proposals(t["boxes"], torch.Generator().manual_seed(0)) for t in targets]
    out = det(DetectionBatch(images, targets, given))
    assert set(out.losses) == {"loss_cls", "loss_box_reg", "loss_mask"}
    assert torch.isfinite(out.losses["loss_mask"]) and out.losses["loss_mask"].item() > 0
    sum(out.losses.values()).backward()
    assert det.mask_head.deconv.weight.grad.abs().sum() > 0
    res = det.eval().predict(
        images, torch.randn(4, enc.embed_dim), [t["boxes"] for t in targets], score_fusion="none"
    )
    side = 2 * (enc.pooler_resolution // 2)
    for r in res:
        assert r.masks is not None and r.masks.shape == (len(r), side, side)
        assert torch.all((r.masks >= 0) & (r.masks <= 1))


def test_predict_validates_vocabulary():
    enc = _encoder()
    det = build_detector(DetectorConfig(), enc, GivenBoxes(), torch.randn(3, enc.embed_dim))
    images = ImageBatch.from_images([torch.rand(3, 64, 64)])
    boxes = [torch.tensor([[0.0, 0, 30, 30]])]
    with pytest.raises(RegionCLIPError, match="dimension"):
        det.predict(images, torch.randn(3, enc.embed_dim + 1), boxes)
    with pytest.raises(RegionCLIPError, match="empty"):
        det.predict(images, torch.zeros(0, enc.embed_dim), boxes)
    with pytest.raises(RegionCLIPError, match="train class embeddings"):
        build_detector(DetectorConfig(), _encoder(), GivenBoxes(), torch.randn(3, 7))


def test_predict_with_rpn_fusion_drops_negative_objectness():
    enc = _encoder()
    gen = RandomBoxes(n=10)
    det = build_detector(
        DetectorConfig(recipe="lvis", mask_on=False), enc, gen, torch.randn(3, enc.embed_dim)
    )
    images = ImageBatch.from_images([torch.rand(3, 64, 64)])
    props = gen(images)[0]
    emb = det.embed_regions(det.backbone.trunk(images.tensor), [props.boxes])
    res = det.predict(
        images, torch.randn(5, enc.embed_dim), score_thresh=0.0, nms="hard", apply_box_deltas=False
    )[0]
    negative = emb[props.objectness < 0]
    assert len(res) > 0
    for row in res.region_embeddings:  # no detection comes from a proposal with a negative logit
        assert not any(torch.allclose(row, n) for n in negative)


@pytest.fixture(scope="module")
def trained():
    """A tiny detector trained on 3 images of coloured squares (Adam, 80 steps).

    Adam, not SGD: the random RN-micro's region embeddings are nearly collinear (cos ~0.9999 between
    regions), so SGD at one fixed LR either diverges or does not separate them within a few hundred steps.
    About 2 s on an idle 2-core CPU (much slower when the machine is oversubscribed).
    """
    enc = _encoder(0)
    class_emb = torch.randn(3, enc.embed_dim, generator=torch.Generator().manual_seed(5))
    det = build_detector(DetectorConfig(rois_per_image=64), enc, GivenBoxes(), class_emb)
    images, targets = _world(3, 0)
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam([p for p in det.parameters() if p.requires_grad], lr=1e-3)
    det.train()
    first = None
    for _ in range(80):
        out = det(DetectionBatch(images, targets, [_proposals(t["boxes"], g) for t in targets]))
        loss = sum(out.losses.values())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    return det.eval(), class_emb, images, targets, first, loss.item()


def _top_label_per_box(det, class_emb, images, targets):
    """Highest-scoring label of each GT box used as a given region (zero-shot style, no deltas)."""
    res = det.predict(
        images, class_emb, [t["boxes"] for t in targets], apply_box_deltas=False, nms="hard", score_thresh=0.0
    )
    labels = []
    for r, t in zip(res, targets, strict=True):
        for box in t["boxes"]:
            hit = (r.boxes == box).all(dim=1)
            labels.append(int(r.labels[hit][r.scores[hit].argmax()]))
    return labels


def test_tiny_detector_overfits_coloured_squares(trained):
    det, class_emb, images, targets, first, last = trained
    assert last < first
    gt = [int(v) for t in targets for v in t["labels"]]
    pred = _top_label_per_box(det, class_emb, images, targets)
    accuracy = sum(p == t for p, t in zip(pred, gt, strict=True)) / len(gt)
    assert accuracy >= 5 / 6, (pred, gt)


def test_changing_the_vocabulary_at_inference():
    enc = _encoder(1)
    det = build_detector(DetectorConfig(), enc, GivenBoxes(), torch.randn(3, enc.embed_dim)).eval()
    images, targets = _world(2, 3)
    g = torch.Generator().manual_seed(7)
    for k in (1, 5, 40):  # vocabularies of sizes other than the 3 training classes
        vocab = torch.randn(k, enc.embed_dim, generator=g)
        emb = det.embed_regions(det.backbone.trunk(images.tensor), [t["boxes"] for t in targets])
        expected = torch.nn.functional.cosine_similarity(emb[:, None], vocab[None], dim=-1).argmax(dim=1)
        assert _top_label_per_box(det, vocab, images, targets) == expected.tolist()
        perm = torch.randperm(k, generator=g)
        inverse = torch.argsort(perm)
        permuted = _top_label_per_box(det, vocab[perm], images, targets)
        assert permuted == inverse[expected].tolist()
        res = det.predict(images, vocab, [t["boxes"] for t in targets], apply_box_deltas=False)
        assert all(int(r.labels.min()) >= 0 and int(r.labels.max()) < k for r in res if len(r))


def _batch_invariance_detector(batched: bool):
    from regionclip.proposals.config import RPNConfig
    from regionclip.proposals.rpn import build_rpn

    torch.manual_seed(5)
    rpn = build_rpn(RPNConfig(trunk="clip:RN-micro", anchor_sizes=[16.0, 32.0]), "transfer")
    enc = _encoder(3)
    cfg = DetectorConfig(score_fusion="sigmoid", score_thresh=0.0, batched_inference=batched)
    det = build_detector(cfg, enc, rpn, torch.randn(3, enc.embed_dim)).eval()
    with torch.no_grad():  # a non-trivial box regressor, so deltas are exercised too
        det.box_regressor.linear.weight.normal_(0, 0.01)
    return det


def test_predict_is_independent_of_the_batch_size():
    g = torch.Generator().manual_seed(9)
    sizes = [(64, 80), (48, 96), (96, 64), (80, 80), (56, 72), (72, 56), (64, 64), (40, 88)]
    images = [torch.rand(3, h, w, generator=g) for h, w in sizes]
    vocab = torch.randn(4, _encoder().embed_dim, generator=g)
    det = _batch_invariance_detector(batched=False)
    singles = [det.predict(ImageBatch.from_images([img]), vocab)[0] for img in images]
    together = det.predict(ImageBatch.from_images(images), vocab)
    assert sum(len(d) for d in singles) > 20
    for one, many in zip(singles, together, strict=True):
        assert one.boxes.shape == many.boxes.shape
        assert torch.allclose(one.boxes, many.boxes, atol=1e-5)
        assert torch.allclose(one.scores, many.scores, atol=1e-5)
        assert torch.equal(one.labels, many.labels)
    # the same boxes embedded per image: identical at batch 1 and batch 8
    boxes = [d.boxes[:3] for d in singles]
    one_by_one = torch.cat(
        [det.embed_boxes(ImageBatch.from_images([im]), [b]) for im, b in zip(images, boxes, strict=True)]
    )
    assert torch.allclose(det.embed_boxes(ImageBatch.from_images(images), boxes), one_by_one, atol=1e-5)
    # the padded-batch trunk (option) does depend on the batch: the reason for the default
    padded = _batch_invariance_detector(batched=True)
    padded_emb = padded.embed_boxes(ImageBatch.from_images(images), boxes)
    assert not torch.allclose(padded_emb, one_by_one, atol=1e-4)

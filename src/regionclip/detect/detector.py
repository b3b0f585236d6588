"""The open-vocabulary detector: a CLIP C4 Fast R-CNN with a text-embedding classifier (paper §3.3;
method reference §6.1-6.5 and §7).

Training (``forward``): the frozen proposal generator (offline RPN, eval mode, no grad) proposes boxes; GT
boxes are appended; 512 RoIs per image (25% foreground) are sampled; RoIAlign on res4 -> CLIP layer4 ->
attention pool gives region embeddings; the classifier scores them against the frozen train-class
embeddings (a buffer set at build time) and the class-agnostic regressor predicts box deltas; the losses
are the recipe's classification loss, the L1 box loss and (LVIS) the mask loss.

Inference (``predict``): as the official evaluation (one image per GPU), the proposal generator and the trunk
run on each image alone, unpadded, and only the region head is batched across the images, so detections do
not depend on the batch size or on the other images of a batch (``batched_inference=True``: trunk and
proposals on the padded batch, faster, but features near a smaller image's padded border change). The
vocabulary is an ARGUMENT (class embeddings ``[K, D]`` of any K); nothing
depends on the training vocabulary. Zero-shot inference is ``predict`` on a detector built around the
pretrained region encoder with ``apply_box_deltas=False`` (the official ``NO_BOX_DELTA``), usually with
:class:`~regionclip.proposals.GivenBoxes` or an RPN and ``score_fusion="logit"``.

``build_detector`` is the only function that reads a :class:`DetectorConfig`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

from regionclip.clip.model import freeze_stages
from regionclip.detect.config import DetectorConfig, resolve_recipe
from regionclip.detect.heads import BoxRegressor, BoxTransform, MaskHead, TextEmbeddingClassifier
from regionclip.detect.losses import (
    FocalScaledCrossEntropy,
    WeightedCrossEntropy,
    box_regression_loss,
    mask_loss,
)
from regionclip.detect.postprocess import (
    Detections,
    InferenceSettings,
    NmsKind,
    ScoreFusion,
    postprocess_image,
)
from regionclip.detect.sampling import RoISampler
from regionclip.errors import RegionCLIPError
from regionclip.proposals.base import ProposalGenerator, Proposals
from regionclip.regions import RegionEncoder
from regionclip.structures import ImageBatch, StepOutput, clip_boxes


@dataclass
class RegionScores:
    """What :meth:`OpenVocabDetector.regions` computes once per batch for any number of scoring variants.

    images: the batch on the detector's device; class_embeddings: ``[K, D]`` the vocabulary; proposals: one
    :class:`Proposals` per image (objectness logits for the RPN-score fusion); res4s: ``[1, C4, h_i, w_i]`` per
    image; embeddings: ``[R, D]`` region embeddings (R = all proposals of the batch, image-major); logits:
    ``[R, K + 1]`` classifier logits (background last); boxes: ``[R, 4]`` xyxy input pixels, moved by the
    regressor when box deltas apply.
    """

    images: ImageBatch
    class_embeddings: Tensor
    proposals: list[Proposals]
    res4s: list[Tensor]
    embeddings: Tensor
    logits: Tensor
    boxes: Tensor


@dataclass
class DetectionBatch:
    """A training batch of the detector.

    images: the padded, CLIP-normalised images; targets: one dict per image with ``"boxes"`` ``[G, 4]``
    float (xyxy input pixels), ``"labels"`` ``[G]`` long (indices into the TRAIN vocabulary, ``0..K-1``) and,
    for a detector with a mask head, ``"masks"`` ``[G, H, W]`` bool/uint8 (image pixels, unpadded size);
    given_boxes: optional per-image boxes ``[N_i, 4]`` passed to the proposal generator (e.g. precomputed
    proposals for :class:`~regionclip.proposals.GivenBoxes`); ``None`` for an RPN.
    """

    images: ImageBatch
    targets: list[dict[str, Tensor]]
    given_boxes: list[Tensor] | None = None

    def to(self, device: torch.device | str) -> DetectionBatch:
        targets = [{k: v.to(device) for k, v in t.items()} for t in self.targets]
        given = None if self.given_boxes is None else [b.to(device) for b in self.given_boxes]
        return DetectionBatch(self.images.to(device), targets, given)


class OpenVocabDetector(nn.Module):
    """RegionCLIP's detector, composed from built parts (see :func:`build_detector`).

    backbone: the region encoder (trunk -> res4, RoIAlign, layer4 + attention pool);
    proposal_generator: frozen, always in eval mode; classifier / box_regressor: the region heads;
    sampler: RoI matching and sampling; cls_loss: ``(logits [N, K+1], targets [N]) -> scalar``;
    train_class_embeddings: ``[K_train, D]`` text embeddings of the training classes (frozen buffer);
    box_transform: delta coding; mask_head: optional class-agnostic mask head on res5 RoI features.
    inference: the test-time settings (:class:`~regionclip.detect.postprocess.InferenceSettings`), the
    defaults of :meth:`predict`'s keyword settings. ``ensemble`` (None unless
    attached by ``load_detector(..., ensemble=...)``): the frozen-classifier score ensemble of
    :mod:`regionclip.detect.ensemble`, applied by :meth:`predict` before the post-processing.
    """

    def __init__(
        self,
        backbone: RegionEncoder,
        proposal_generator: ProposalGenerator,
        classifier: TextEmbeddingClassifier,
        box_regressor: BoxRegressor,
        sampler: RoISampler,
        cls_loss: Callable[[Tensor, Tensor], Tensor],
        train_class_embeddings: Tensor,
        box_transform: BoxTransform | None = None,
        mask_head: MaskHead | None = None,
        inference: InferenceSettings | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator.eval()
        for p in self.proposal_generator.parameters():
            p.requires_grad_(False)
        self.classifier = classifier
        self.box_regressor = box_regressor
        self.mask_head = mask_head
        self.sampler = sampler
        self.cls_loss = cls_loss
        self.box_transform = box_transform or BoxTransform()
        self.register_buffer("train_class_embeddings", train_class_embeddings.detach().clone().float())
        self.inference = inference or InferenceSettings()
        # optional frozen-classifier score ensemble (regionclip.detect.ensemble), attached at load time
        self.ensemble: nn.Module | None = None

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    def train(self, mode: bool = True) -> OpenVocabDetector:
        """Set training mode; the proposal generator stays in eval mode (official offline RPN)."""
        super().train(mode)
        self.proposal_generator.eval()
        return self

    # ----------------------------------------------------------------------------------------- training
    def forward(self, batch: DetectionBatch) -> StepOutput:
        """Training step: losses ``loss_cls``, ``loss_box_reg`` (+ ``loss_mask``) and sampling metrics."""
        device = self.train_class_embeddings.device
        batch = batch.to(device)
        images = batch.images
        gt_boxes = [t["boxes"].float().reshape(-1, 4) for t in batch.targets]
        gt_labels = [t["labels"].long().reshape(-1) for t in batch.targets]
        with torch.no_grad():
            proposals = self.proposal_generator(images, batch.given_boxes)
        num_classes = self.train_class_embeddings.shape[0]
        rois = self.sampler([p.boxes.detach().float() for p in proposals], gt_boxes, gt_labels, num_classes)

        res4 = self.backbone.trunk(images.tensor)
        res5 = self.backbone.res5(self.backbone.pool(res4, rois.boxes))
        embeddings = self.backbone.embed_res5(res5)  # [R, D]
        logits = self.classifier(embeddings, self.train_class_embeddings)
        deltas = self.box_regressor(embeddings)

        all_rois = torch.cat(rois.boxes)
        fg = rois.labels < num_classes
        num_rois = int(all_rois.shape[0])
        targets = self.box_transform.encode(all_rois[fg], rois.gt_boxes[fg])
        losses = {
            "loss_cls": self.cls_loss(logits, rois.labels),
            "loss_box_reg": box_regression_loss(deltas, targets, fg, num_rois),
        }
        if self.mask_head is not None:
            mask_logits = self.mask_head(res5[fg])
            mask_targets = _mask_targets(batch.targets, rois.boxes, rois.gt_indices, mask_logits.shape[-1])
            losses["loss_mask"] = mask_loss(mask_logits, mask_targets)
        with torch.no_grad():
            num_fg = int(fg.sum())
            correct = logits.argmax(dim=1) == rois.labels
            metrics = {
                "num_fg_per_image": num_fg / max(len(images), 1),
                "fg_fraction": num_fg / max(num_rois, 1),
                "cls_accuracy": float(correct.float().mean()) if num_rois else 0.0,
                "fg_cls_accuracy": float(correct[fg].float().mean()) if num_fg else 0.0,
            }
        return StepOutput(losses=losses, metrics=metrics)

    # ---------------------------------------------------------------------------------------- inference
    def propose(self, images: ImageBatch, given_boxes: list[Tensor] | None = None) -> list[Proposals]:
        """Proposals of the frozen generator, one :class:`Proposals` per image."""
        with torch.no_grad():
            return self.proposal_generator(images, given_boxes)

    def inference_features(
        self, images: ImageBatch, given_boxes: list[Tensor] | None = None
    ) -> tuple[list[Proposals], list[Tensor]]:
        """Proposals and ``res4`` of each image for inference: ``([Proposals], [[1, C4, h_i, w_i]])``.

        Per image on the unpadded image (default, batch-size independent), or one pass over the padded
        batch when ``batched_inference`` (then ``res4`` of image i is row i of the batched features).
        """
        if self.inference.batched_inference:
            return self.propose(images, given_boxes), self.trunk_features(images)
        proposals = []
        for i, tensor in enumerate(self.trunk_inputs(images)):
            single = ImageBatch(tensor, [images.image_sizes[i]])
            proposals += self.propose(single, None if given_boxes is None else given_boxes[i : i + 1])
        return proposals, self.trunk_features(images)

    def trunk_inputs(self, images: ImageBatch) -> list[Tensor]:
        """The tensor the trunk sees for each image in :meth:`inference_features`: ``[1, 3, h, w]`` (unpadded),
        or row i of the padded batch when ``batched_inference``."""
        if self.inference.batched_inference:
            return [images.tensor[i : i + 1] for i in range(len(images))]
        return [images.tensor[i : i + 1, :, :h, :w] for i, (h, w) in enumerate(images.image_sizes)]

    def trunk_features(self, images: ImageBatch) -> list[Tensor]:
        """``res4`` ``[1, C4, h_i/16, w_i/16]`` of each image (of :meth:`trunk_inputs`)."""
        if self.inference.batched_inference:
            res4 = self.backbone.trunk(images.tensor)
            return [res4[i : i + 1] for i in range(len(images))]
        return [self.backbone.trunk(tensor) for tensor in self.trunk_inputs(images)]

    def embed_per_image(self, res4s: list[Tensor], boxes: list[Tensor]) -> Tensor:
        """Region embeddings ``[sum N_i, D]`` of ``boxes[i]`` on ``res4s[i]`` (chunked: :meth:`RegionEncoder.embed`)."""
        return torch.cat([self.backbone.embed(r, [b]) for r, b in zip(res4s, boxes, strict=True)])

    def pool_per_image(self, res4s: list[Tensor], boxes: list[Tensor]) -> Tensor:
        """RoI features ``[sum N_i, C4, r, r]`` of ``boxes[i]`` on ``res4s[i]`` (see :meth:`inference_features`)."""
        return torch.cat([self.backbone.pool(r, [b]) for r, b in zip(res4s, boxes, strict=True)])

    @torch.no_grad()
    def embed_boxes(self, images: ImageBatch, boxes: list[Tensor]) -> Tensor:
        """Region embeddings ``[sum N_i, D]`` of given ``boxes`` at inference (trunk as :meth:`predict`; no RPN)."""
        res4s = self.trunk_features(images.to(self.train_class_embeddings.device))
        return self.embed_per_image(res4s, boxes)

    def embed_regions(self, res4: Tensor, boxes: list[Tensor]) -> Tensor:
        """Unnormalised region embeddings ``[sum N_i, D]`` of ``boxes`` on ``res4`` (chunked layer4 + pool)."""
        return self.backbone.embed(res4, boxes)

    @torch.no_grad()
    def predict(
        self,
        images: ImageBatch,
        class_embeddings: Tensor,
        given_boxes: list[Tensor] | None = None,
        *,
        score_thresh: float | None = None,
        nms: NmsKind | None = None,
        max_dets: int | None = None,
        apply_box_deltas: bool | None = None,
        score_fusion: ScoreFusion | None = None,
        class_names: Sequence[str] | None = None,
    ) -> list[Detections]:
        """Detect the classes of ``class_embeddings`` in ``images``.

        images: padded CLIP-normalised batch; class_embeddings: ``[K, D]`` text embeddings of the
        vocabulary (any K; normalised here; labels index its rows); given_boxes: per-image boxes ``[N_i, 4]``
        for a :class:`~regionclip.proposals.GivenBoxes` generator (ignored by an RPN). Keyword settings
        default to the build-time recipe (``None``); class_names: the K vocabulary names, needed only with
        an attached ``ensemble`` (its per-class weights depend on whether a name is a training class). Returns
        one :class:`Detections` per image, in input pixels of ``images`` (rescale to the original resolution
        outside). Equal to :meth:`regions` followed by :meth:`detections`.
        """
        regions = self.regions(images, class_embeddings, given_boxes, apply_box_deltas=apply_box_deltas)
        return self.detections(
            regions, score_thresh=score_thresh, nms=nms, max_dets=max_dets, score_fusion=score_fusion,
            class_names=class_names, ensemble=self.ensemble,
        )  # fmt: skip

    @torch.no_grad()
    def regions(
        self,
        images: ImageBatch,
        class_embeddings: Tensor,
        given_boxes: list[Tensor] | None = None,
        *,
        apply_box_deltas: bool | None = None,
    ) -> RegionScores:
        """The per-image work of :meth:`predict` before any score fusion, ensemble or NMS: proposals, ``res4``,
        region embeddings, classifier logits and (moved) boxes; post-process it with :meth:`detections`, as
        often as there are scoring variants."""
        self._check_vocabulary(class_embeddings)
        apply_box_deltas = self.inference.replace(apply_box_deltas=apply_box_deltas).apply_box_deltas
        device = self.train_class_embeddings.device
        images = images.to(device)
        class_embeddings = class_embeddings.to(device)
        proposals, res4s = self.inference_features(images, given_boxes)
        boxes = [p.boxes.float() for p in proposals]
        embeddings = self.embed_per_image(res4s, boxes)
        logits = self.classifier(embeddings, class_embeddings)
        all_boxes = torch.cat(boxes)
        if apply_box_deltas:
            all_boxes = self.box_transform.decode(self.box_regressor(embeddings), all_boxes)
        return RegionScores(images, class_embeddings, proposals, res4s, embeddings, logits, all_boxes)

    @torch.no_grad()
    def detections(
        self,
        regions: RegionScores,
        *,
        score_thresh: float | None = None,
        nms: NmsKind | None = None,
        max_dets: int | None = None,
        score_fusion: ScoreFusion | None = None,
        class_names: Sequence[str] | None = None,
        ensemble: nn.Module | None = None,
    ) -> list[Detections]:
        """Detections per image of :meth:`regions`' output: the optional frozen-classifier ``ensemble`` (a
        :class:`~regionclip.detect.ensemble.FrozenRegionClassifier`; None: the classifier's scores alone), the
        RPN-score fusion, the score threshold, per-class NMS and the top ``max_dets`` (settings default to the
        build-time recipe), then the masks of a mask head."""
        settings = self.inference.replace(
            score_thresh=score_thresh, nms=nms, max_dets=max_dets, score_fusion=score_fusion
        )
        images, proposals, res4s = regions.images, regions.proposals, regions.res4s
        logits, all_boxes, embeddings = regions.logits, regions.boxes, regions.embeddings
        counts = [len(p) for p in proposals]
        probs: list[Tensor | None] = [None] * len(counts)
        if ensemble is not None:  # frozen-classifier ensemble on the reported (clipped) boxes
            reported = [
                clip_boxes(b, s) for b, s in zip(all_boxes.split(counts), images.image_sizes, strict=True)
            ]
            scores = ensemble(
                logits, self.trunk_inputs(images), res4s, reported, regions.class_embeddings, class_names
            )
            probs = list(scores.split(counts))
        results = []
        for i, (lg, bx, emb, prop, pr) in enumerate(
            zip(
                logits.split(counts),
                all_boxes.split(counts),
                embeddings.split(counts),
                proposals,
                probs,
                strict=True,
            )
        ):
            det = postprocess_image(
                lg,
                bx,
                prop.objectness,
                emb,
                images.image_sizes[i],
                score_thresh=settings.score_thresh,
                nms=settings.nms,
                nms_thresh=settings.nms_thresh,
                soft_nms_sigma=settings.soft_nms_sigma,
                soft_nms_prune=settings.soft_nms_prune,
                max_dets=settings.max_dets,
                score_fusion=settings.score_fusion,
                probs=pr,
            )
            results.append(det)
        if self.mask_head is not None:
            self._predict_masks(res4s, results)
        return results

    def _predict_masks(self, res4s: list[Tensor], detections: list[Detections]) -> None:
        """Fill ``masks`` ``[M, m, m]`` (probabilities, box coordinates) of each image's detections."""
        res5 = self.backbone.res5(self.pool_per_image(res4s, [d.boxes for d in detections]))
        if res5.shape[0]:
            probs = self.mask_head(res5).sigmoid()
        else:
            probs = res5.new_zeros((0, 2 * res5.shape[-2], 2 * res5.shape[-1]))
        for det, m in zip(detections, probs.split([len(d) for d in detections]), strict=True):
            det.masks = m

    def _check_vocabulary(self, class_embeddings: Tensor) -> None:
        if not isinstance(class_embeddings, Tensor) or class_embeddings.dim() != 2:
            got = (
                tuple(class_embeddings.shape)
                if isinstance(class_embeddings, Tensor)
                else type(class_embeddings)
            )
            raise RegionCLIPError(f"class_embeddings: expected a [K, {self.embed_dim}] tensor, got {got}")
        k, d = class_embeddings.shape
        if k == 0:
            raise RegionCLIPError("class_embeddings: the vocabulary is empty (expected at least one class)")
        if d != self.embed_dim:
            raise RegionCLIPError(
                f"class_embeddings: dimension {d} does not match the detector's region embeddings ({self.embed_dim})"
            )


def _mask_targets(
    targets: list[dict[str, Tensor]], rois: list[Tensor], gt_indices: list[Tensor], resolution: int
) -> Tensor:
    """0/1 mask targets ``[F, m, m]`` of the foreground RoIs: each RoI's matched GT mask RoIAligned to m x m."""
    out = []
    for target, boxes, idx in zip(targets, rois, gt_indices, strict=True):
        fg = idx >= 0
        if not bool(fg.any()):
            continue
        if "masks" not in target:
            raise RegionCLIPError("detector with a mask head: every training target needs 'masks' [G, H, W]")
        masks = target["masks"][idx[fg]].float()[:, None]  # [F_i, 1, H, W]
        index = torch.arange(masks.shape[0], device=masks.device, dtype=masks.dtype)[:, None]
        rois_i = torch.cat([index, boxes[fg].to(masks.dtype)], dim=1)
        crops = roi_align(masks, rois_i, resolution, spatial_scale=1.0, sampling_ratio=0, aligned=True)
        out.append((crops[:, 0] >= 0.5).float())
    if not out:
        return torch.zeros((0, resolution, resolution), device=rois[0].device)
    return torch.cat(out)


def build_detector(
    cfg: DetectorConfig,
    backbone: RegionEncoder,
    proposal_generator: ProposalGenerator,
    train_class_embeddings: Tensor,
) -> OpenVocabDetector:
    """Build the detector of ``cfg`` (recipe resolved here) around a region encoder and proposal generator.

    backbone: e.g. ``RegionEncoder(load_clip(path).visual)`` (the pretrained RegionCLIP student);
    train_class_embeddings: ``[K_train, D]`` text embeddings of the training classes (e.g. the 48 COCO base
    classes). Freezes the first ``cfg.freeze_at`` backbone stages and the proposal generator.
    """
    cfg = resolve_recipe(cfg)
    if train_class_embeddings.dim() != 2 or train_class_embeddings.shape[1] != backbone.embed_dim:
        raise RegionCLIPError(
            f"train class embeddings: expected [K, {backbone.embed_dim}], got {tuple(train_class_embeddings.shape)}"
        )
    freeze_stages(backbone.visual, cfg.freeze_at)
    if cfg.cls_loss == "focal":
        cls_loss: nn.Module = FocalScaledCrossEntropy(cfg.focal_gamma, cfg.bg_loss_weight)
    else:
        cls_loss = WeightedCrossEntropy(cfg.bg_loss_weight)
    mask_head = None
    if cfg.mask_on:
        mask_head = MaskHead(backbone.res5_channels)
    return OpenVocabDetector(
        backbone=backbone,
        proposal_generator=proposal_generator,
        classifier=TextEmbeddingClassifier(backbone.embed_dim, cfg.temperature, cfg.learnable_background),
        box_regressor=BoxRegressor(backbone.embed_dim),
        sampler=RoISampler(cfg.rois_per_image, cfg.positive_fraction, cfg.fg_iou_thresh),
        cls_loss=cls_loss,
        train_class_embeddings=train_class_embeddings,
        box_transform=BoxTransform(cfg.box_weights),
        mask_head=mask_head,
        inference=InferenceSettings.from_config(cfg),
    )

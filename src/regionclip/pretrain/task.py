"""The RegionCLIP pretraining task: student, teacher, text encoder, proposals and the three losses
(paper §3.2; method reference §4-5, §2.3-2.4).

One training step (:meth:`PretrainTask.forward`), per rank:

1. proposals for each image from a frozen generator (offline RPN in eval mode, random boxes, or given boxes);
   in training mode ``regions_per_image`` (official 100) of them are sampled uniformly (``randperm``);
2. the frozen teacher embeds those regions; :func:`~regionclip.pretrain.pseudo_labels.pseudo_label` against
   the teacher's concept pool (τ 0.01, threshold 0.1) gives kept regions, soft targets and pseudo-labels;
3. the student embeds the *same* boxes and, in the same pass, the global box of each image (the box over the
   padded batch, §2.4);
4. the frozen text encoder embeds one caption per image;
5. losses: region-concept contrastive + concept distillation on the kept regions (local), image-text
   contrastive on the global boxes (gathered over ranks with gradients). Weights default to 1 each; a weight
   of 0 drops a loss from the dict (the ablations).

Only this module is wrapped by DDP. The student is exported as a plain CLIP checkpoint (student image tower
+ the original text tower) with :meth:`PretrainTask.save_student`, so zero-shot inference and detector
transfer load it like any CLIP model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from regionclip.clip.checkpoint import create_model, save_clip
from regionclip.clip.model import CLIP, freeze_stages
from regionclip.clip.presets import ModelPreset
from regionclip.concepts import ConceptBank, load_official_embeddings
from regionclip.errors import ConfigError
from regionclip.precision import compute_region
from regionclip.pretrain.losses import (
    Gather,
    concept_distillation,
    image_text_contrastive,
    region_concept_contrastive,
)
from regionclip.pretrain.pseudo_labels import pseudo_label
from regionclip.proposals.base import ProposalGenerator
from regionclip.regions import RegionEncoder, global_boxes
from regionclip.structures import ImageBatch, StepOutput

if TYPE_CHECKING:
    from regionclip.pretrain.config import PretrainConfig

TEXT_KEYS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")


@dataclass
class PretrainBatch:
    """One rank's pretraining batch.

    images: B images ``[3, H_i, W_i]`` RGB in [0, 1] (or an already normalised, padded :class:`ImageBatch`);
    tokens: ``[B, L]`` long, CLIP BPE tokens of one caption per image (row b belongs to image b);
    boxes: optional given proposals per image, ``list[Tensor[N_i, 4]]`` xyxy pixels (for ``GivenBoxes``).
    """

    images: list[Tensor] | ImageBatch
    tokens: Tensor
    boxes: list[Tensor] | None = None

    def __len__(self) -> int:
        return len(self.images)


class TextEncoder(nn.Module):
    """CLIP's text tower on its own (frozen in pretraining). State-dict keys equal the CLIP model's text keys.

    ``logit_scale`` is carried (unused) only so that student image tower + this module make a complete CLIP
    state dict. ``compute_dtype``: see :mod:`regionclip.precision`.
    """

    compute_dtype: torch.dtype | None = None

    def __init__(self, clip: CLIP):
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.logit_scale = clip.logit_scale
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """Unnormalised text embeddings ``[N, D]`` float32 (projected EOT feature) of ``tokens`` ``[N, L]``.

        As :meth:`regionclip.clip.model.CLIP.encode_text`: the sequence is cut after the batch's last EOT
        (exact under the causal mask) and the tower runs under ``compute_dtype`` (``None``: fp32).
        """
        eot = tokens.argmax(dim=-1)
        length = int(eot.max()) + 1 if tokens.shape[0] else 1
        with compute_region(self, tokens.device.type):
            x = self.token_embedding(tokens[:, :length]) + self.positional_embedding[:length]
            x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask[:length, :length]))
            x = x[torch.arange(x.shape[0], device=x.device), eot]
            return (x @ self.text_projection).float()


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients for every parameter of ``module`` and put it in eval mode."""
    for param in module.parameters():
        param.requires_grad_(False)
    return module.eval()


def sample_boxes(boxes: Tensor, n: int) -> Tensor:
    """``n`` of ``boxes`` ``[N, 4]`` drawn uniformly without replacement (all of them when ``N <= n``)."""
    if boxes.shape[0] <= n:
        return boxes
    return boxes[torch.randperm(boxes.shape[0], device=boxes.device)[:n]]


class PretrainTask(nn.Module):
    """RegionCLIP pretraining of a student region encoder.

    student: trainable :class:`RegionEncoder` (stem + layer1 frozen by the builder, FrozenBN);
    teacher: frozen :class:`RegionEncoder` (possibly another preset); text: frozen :class:`TextEncoder`;
    proposals: frozen :class:`ProposalGenerator`; concepts: ``[C, D]`` the student's concept pool
    (unnormalised); teacher_concepts: ``[C, D_t]`` the same concepts embedded for the teacher;
    student_preset: the student's CLIP preset (for exporting the student as a CLIP model);
    regions_per_image: proposals sampled per image in training (official 100); temperature: τ of the
    student's softmaxes (0.01); pseudo_label_temperature: τ of the teacher's softmax (official constant
    0.01, independent of ``temperature``); threshold: teacher confidence to keep a region (0.1); weight_*: loss weights (0 = off);
    gather: all-gather with gradients for the image-text loss (``None`` in a single process).
    """

    def __init__(
        self,
        student: RegionEncoder,
        teacher: RegionEncoder,
        text: TextEncoder,
        proposals: ProposalGenerator,
        concepts: Tensor,
        teacher_concepts: Tensor,
        student_preset: ModelPreset,
        regions_per_image: int = 100,
        temperature: float = 0.01,
        threshold: float = 0.1,
        pseudo_label_temperature: float = 0.01,
        weight_region_concept: float = 1.0,
        weight_region_distill: float = 1.0,
        weight_image_text: float = 1.0,
        gather: Gather | None = None,
    ):
        super().__init__()
        if concepts.shape[0] != teacher_concepts.shape[0]:
            raise ValueError(
                f"student pool has {concepts.shape[0]} concepts, teacher pool {teacher_concepts.shape[0]}"
            )
        if concepts.shape[1] != student.embed_dim or teacher_concepts.shape[1] != teacher.embed_dim:
            raise ValueError(
                f"concept dims {concepts.shape[1]}/{teacher_concepts.shape[1]} do not match the student/teacher "
                f"embedding dims {student.embed_dim}/{teacher.embed_dim}"
            )
        self.student = student
        self.teacher = freeze(teacher)
        self.text = freeze(text)
        self.proposals = freeze(proposals)
        self.register_buffer("concepts", concepts.float(), persistent=False)
        self.register_buffer("teacher_concepts", teacher_concepts.float(), persistent=False)
        self.student_preset = student_preset
        self.regions_per_image = regions_per_image
        self.temperature = temperature
        self.pseudo_label_temperature = pseudo_label_temperature
        self.threshold = threshold
        self.loss_weights = {
            "loss_region_concept": weight_region_concept,
            "loss_region_distill": weight_region_distill,
            "loss_image_text": weight_image_text,
        }
        self.gather = gather

    def train(self, mode: bool = True) -> PretrainTask:
        """Train mode for the student only: teacher, text encoder and proposals always run in eval mode."""
        super().train(mode)
        for frozen in (self.teacher, self.text, self.proposals):
            frozen.eval()
        return self

    def _images(self, batch: PretrainBatch, device: torch.device) -> ImageBatch:
        if isinstance(batch.images, ImageBatch):
            return batch.images.to(device)
        return ImageBatch.from_images([img.to(device) for img in batch.images])

    def forward(self, batch: PretrainBatch) -> StepOutput:
        device = self.concepts.device
        images = self._images(batch, device)
        x = images.tensor  # [B, 3, H_pad, W_pad]
        given = None if batch.boxes is None else [b.to(device) for b in batch.boxes]
        with torch.no_grad():
            proposals = self.proposals(images, given)
            boxes = [p.boxes.to(x.dtype) for p in proposals]
            if self.training:
                boxes = [sample_boxes(b, self.regions_per_image) for b in boxes]
            teacher_regions = self.teacher(x, boxes)  # [R, D_t]
            labels = pseudo_label(
                teacher_regions, self.teacher_concepts, self.pseudo_label_temperature, self.threshold
            )
            text_emb = self.text(batch.tokens.to(device))  # [B, D]

        # Student: regions and global boxes in one head pass over one trunk pass.
        res4 = self.student.trunk(x)
        roi = torch.cat([self.student.pool(res4, boxes), self.student.pool(res4, global_boxes(x))])
        embeddings = self.student.head(roi)  # [R + B, D]
        n_regions = teacher_regions.shape[0]
        student_regions, image_emb = embeddings[:n_regions], embeddings[n_regions:]

        kept = student_regions[labels.keep]  # [K, D]
        raw = {
            **region_concept_contrastive(
                kept, self.concepts[labels.labels], labels.positive_mask, self.temperature
            ),
            **concept_distillation(kept, self.concepts, labels.soft_targets, self.temperature),
            **image_text_contrastive(image_emb, text_emb, self.temperature, self.gather),
        }
        losses = {k: v * self.loss_weights[k] for k, v in raw.items() if self.loss_weights[k] != 0}
        metrics = {
            "regions": float(n_regions),
            "kept_fraction": float(labels.keep.float().mean()) if n_regions else 0.0,
            "teacher_confidence": float(labels.top_prob.mean()) if n_regions else 0.0,
            "distinct_labels": float(labels.labels.unique().numel()),
        }
        return StepOutput(losses, metrics)

    def student_clip(self) -> CLIP:
        """A full CLIP model: the student's image tower with the original (frozen) text tower, on the CPU."""
        model = CLIP(self.student_preset)
        state = {f"visual.{k}": v for k, v in self.student.visual.state_dict().items()}
        state.update(self.text.state_dict())
        model.load_state_dict({k: v.detach().cpu() for k, v in state.items()}, strict=True)
        return model.eval()

    def save_student(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write the student as a regionclip ``clip`` checkpoint (loadable with ``load_clip`` / ``create_model``)."""
        return save_clip(self.student_clip(), path, extra)


def load_concept_pool(path: str, names: str | None, key: str) -> ConceptBank:
    """A concept bank from a regionclip ``.safetensors`` bank or an official ``.pth`` tensor + names file."""
    if not path:
        raise ConfigError(
            f"{key} is not set: give a concept bank (.safetensors) or an official .pth embedding file"
        )
    if Path(path).suffix == ".pth" and not names:
        raise ConfigError(f"{key} is an official .pth tensor ({path}); also give its names file")
    if not Path(path).is_file():
        raise ConfigError(f"{key}: concept bank not found: {path}")
    if Path(path).suffix == ".pth":
        return load_official_embeddings(path, names)
    return ConceptBank.load(path)


def build_pretrain_task(cfg: PretrainConfig, gather: Gather | None = None) -> PretrainTask:
    """Build the pretraining task of ``cfg`` (see :class:`~regionclip.pretrain.config.PretrainConfig`).

    Student and text tower come from ``cfg.model.weights``; the teacher is a copy of the student's initial
    image tower (official) unless another preset or weights file is given. ``gather``: the all-gather with
    gradients used by the image-text loss in a multi-process job (``cfg.loss.gather`` false disables it).
    """
    from regionclip.proposals.loading import build_proposal_generator

    m = cfg.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(m.seed)
        student_clip = create_model(m.preset, m.weights)
        teacher_preset = m.teacher_preset or m.preset
        if m.teacher_weights is None:
            if teacher_preset != m.preset:
                raise ConfigError(
                    f"model.teacher_preset is {teacher_preset!r} but the student is {m.preset!r}: "
                    "set model.teacher_weights to the teacher's CLIP weights"
                )
            teacher_visual = copy.deepcopy(student_clip.visual)
        else:
            teacher_visual = create_model(teacher_preset, m.teacher_weights).visual
    freeze_stages(student_clip.visual, m.freeze_at)
    student = RegionEncoder(student_clip.visual)
    teacher = RegionEncoder(teacher_visual)

    c = cfg.concepts
    bank = load_concept_pool(c.bank, c.names, "concepts.bank")
    bank.check_dim(student.embed_dim, f"the student ({m.preset})")
    teacher_bank = (
        bank
        if c.teacher_bank is None
        else load_concept_pool(c.teacher_bank, c.teacher_names, "concepts.teacher_bank")
    )
    teacher_bank.check_dim(teacher.embed_dim, f"the teacher ({teacher_preset}); set concepts.teacher_bank")
    if teacher_bank.names != bank.names:
        raise ConfigError(
            f"concepts.teacher_bank ({len(teacher_bank)} names) must list the same concepts in the same order "
            f"as concepts.bank ({len(bank)} names)"
        )
    loss = cfg.loss
    return PretrainTask(
        student=student,
        teacher=teacher,
        text=TextEncoder(student_clip),
        proposals=build_proposal_generator(cfg.proposals),
        concepts=bank.embeddings,
        teacher_concepts=teacher_bank.embeddings,
        student_preset=student_clip.preset,
        regions_per_image=loss.regions_per_image,
        temperature=loss.temperature,
        threshold=loss.threshold,
        pseudo_label_temperature=loss.pseudo_label_temperature,
        weight_region_concept=loss.weight_region_concept,
        weight_region_distill=loss.weight_region_distill,
        weight_image_text=loss.weight_image_text,
        gather=gather if loss.gather else None,
    )

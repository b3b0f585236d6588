"""Score ensembling with the frozen region classifier (F-VLM, Kuo et al. 2023; SAS-Det): keeps the open
vocabulary of the pretrained region encoder after the detector was fine-tuned on the base classes.

Re-implemented from the published formula. For each region r (the box the detector reports: the proposal
moved by the class-agnostic deltas, or the proposal itself without deltas) and each vocabulary class c of
the K classes given at inference:

* ``p_det[r, :]`` = softmax over the K classes + background of the detector's cosine logits at the
  detector's τ (the official class probabilities, background last): ``p_det[r, K]`` is the background
  probability and ``sum_c p_det[r, c] = 1 - p_det[r, K]``;
* ``p_frozen[r, :]`` = softmax over the K vocabulary classes only (no background) of
  ``cos(e_frozen(r), t_c) / τ_frozen``, with ``e_frozen(r)`` the embedding of the same box by the FROZEN
  region encoder (the pretrained RegionCLIP / CLIP checkpoint the detector was initialised from) and
  ``t_c`` the class text embedding (τ_frozen = ``ensemble_temperature``, 0.01 like the detector's);
* ``score[r, c] = p_det[r, c] ** (1 - w_c) * p_frozen[r, c] ** w_c`` with ``w_c = ensemble_weight_seen``
  (0.35) when class c is one of the detector's training classes (by name, case-insensitive: the inference
  vocabulary can be anything and in any order) and ``ensemble_weight_unseen`` (0.65) otherwise;
* ``score[r, K] = p_det[r, K]``: the background is the detector's alone.

How the background enters the foreground scores: ``p_det[r, c] = (1 - p_bg) · q[r, c]`` with ``q`` the
detector's distribution over the classes given "foreground", so ``score[r, c] = (1 - p_bg) ** (1 - w_c) ·
q[r, c] ** (1 - w_c) · p_frozen[r, c] ** w_c``: a region the detector calls background keeps a low score,
but for unseen classes the background factor is softened to the power 0.35 (the frozen classifier has no
background class of its own). The foreground scores no longer sum to ``1 - p_bg`` (geometric mixing does
not normalise); they are scores, like the official ones after RPN-score fusion.

The ``[R, K+1]`` result replaces ``softmax(logits)`` in the detector's post-processing, so everything after
it is unchanged (:mod:`regionclip.detect.postprocess`): RPN-score fusion, the score threshold, per-class
(soft-)NMS and the top-k. ``ensemble="none"`` (the default) is the official behaviour, untouched.

Cost: the frozen branch is a second layer4 + attention pool over the reported boxes, and a second trunk
pass unless the frozen trunk's weights equal the detector's (then ``res4`` is shared): with the official
``freeze_at=2``, layer2-3 are fine-tuned, so the trunk is not shared.

The frozen checkpoint: ``ensemble_checkpoint`` when given, else the one recorded in the detector checkpoint
(``init_checkpoint``, written by ``regionclip train-detector``; older checkpoints: ``train.model.weights``),
tried as recorded and relative to the detector file's folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from regionclip.checkpoint import read_checkpoint_metadata
from regionclip.clip.checkpoint import load_clip
from regionclip.errors import CheckpointError, ConfigError
from regionclip.regions import RegionEncoder

EnsembleKind = Literal["none", "frozen"]
HEAD_PREFIXES = ("layer4.", "attnpool.")  # the region head; every other key of the visual tower is the trunk


@dataclass
class EnsembleConfig:
    """Inference option: the frozen-classifier score ensemble (see the module doc)."""

    ensemble: EnsembleKind = "none"  # none: the detector's scores alone (official); frozen: F-VLM ensemble
    ensemble_weight_seen: float = 0.35  # w of vocabulary classes that are training classes of the detector
    ensemble_weight_unseen: float = 0.65  # w of the other vocabulary classes
    ensemble_temperature: float = 0.01  # τ of the frozen classifier's softmax over the vocabulary
    ensemble_checkpoint: str | None = None  # frozen region encoder (clip checkpoint); None: the recorded one


def ensemble_scores(det_logits: Tensor, frozen_logits: Tensor, weights: Tensor) -> Tensor:
    """Ensembled class scores ``[R, K+1]`` (background last) of the module doc's formula.

    det_logits: ``[R, K+1]`` the detector's logits (background last, already divided by its τ);
    frozen_logits: ``[R, K]`` the frozen classifier's logits (divided by τ_frozen); weights: ``[K]`` float, w_c
    per class. Computed in log space (``exp((1-w) log p_det + w log p_frozen)``), float32.
    """
    log_det = F.log_softmax(det_logits.float(), dim=1)
    log_frozen = F.log_softmax(frozen_logits.float(), dim=1)
    w = weights.to(log_det)[None, :]
    foreground = torch.exp((1.0 - w) * log_det[:, :-1] + w * log_frozen)
    return torch.cat([foreground, log_det[:, -1:].exp()], dim=1)


def _name_key(name: str) -> str:
    return " ".join(name.strip().lower().split())


class FrozenRegionClassifier(nn.Module):
    """The frozen branch: a pretrained region encoder scoring boxes against the vocabulary's text embeddings.

    encoder: the frozen :class:`RegionEncoder` (eval mode, no gradients); seen_classes: the detector's
    training class names; share_trunk: the encoder's trunk equals the detector's, so the detector's ``res4``
    is used instead of a second trunk pass; source: the checkpoint it came from (reported in the protocol).
    """

    def __init__(
        self,
        encoder: RegionEncoder,
        seen_classes: Sequence[str],
        weight_seen: float = 0.35,
        weight_unseen: float = 0.65,
        temperature: float = 0.01,
        share_trunk: bool = False,
        source: str = "",
    ):
        super().__init__()
        for name, w in (("ensemble_weight_seen", weight_seen), ("ensemble_weight_unseen", weight_unseen)):
            if not 0.0 <= float(w) <= 1.0:
                raise ConfigError(f"{name}: expected a weight in [0, 1], got {w}")
        if not float(temperature) > 0.0:
            raise ConfigError(f"ensemble_temperature: expected a positive number, got {temperature}")
        self.encoder = encoder.eval()
        self.encoder.requires_grad_(False)
        self.seen_classes = [str(n) for n in seen_classes]
        self._seen = {_name_key(n) for n in self.seen_classes}
        self.weight_seen = float(weight_seen)
        self.weight_unseen = float(weight_unseen)
        self.temperature = float(temperature)
        self.share_trunk = share_trunk
        self.source = source

    def train(self, mode: bool = True) -> FrozenRegionClassifier:
        """The frozen branch stays in eval mode."""
        super().train(False)
        return self

    def class_weights(self, names: Sequence[str]) -> Tensor:
        """``[K]`` float: ``weight_seen`` for the names among the training classes, else ``weight_unseen``."""
        return torch.tensor(
            [self.weight_seen if _name_key(n) in self._seen else self.weight_unseen for n in names],
            dtype=torch.float32,
        )

    def logits(
        self, images: list[Tensor], res4s: list[Tensor], boxes: list[Tensor], class_embeddings: Tensor
    ) -> Tensor:
        """Frozen logits ``[sum N_i, K]``: cosine of the frozen embeddings of ``boxes`` (per image, xyxy input
        pixels) with ``class_embeddings`` ``[K, D]``, over τ_frozen. images: per image ``[1, 3, h_i, w_i]``,
        the very tensors the detector's trunk saw (used only without a shared trunk); res4s: the detector's
        per-image ``[1, C4, h_i/16, w_i/16]`` (used only with one)."""
        features = res4s if self.share_trunk else [self.encoder.trunk(im) for im in images]
        embeddings = torch.cat([self.encoder.embed(f, [b]) for f, b in zip(features, boxes, strict=True)])
        x = F.normalize(embeddings.float(), dim=-1)
        t = F.normalize(class_embeddings.float(), dim=-1)
        return x @ t.t() / self.temperature

    def forward(
        self,
        det_logits: Tensor,
        images: list[Tensor],
        res4s: list[Tensor],
        boxes: list[Tensor],
        class_embeddings: Tensor,
        class_names: Sequence[str] | None,
    ) -> Tensor:
        """Ensembled scores ``[sum N_i, K+1]`` of the regions ``boxes`` whose detector logits are ``det_logits``."""
        if class_names is None or len(class_names) != class_embeddings.shape[0]:
            got = "none" if class_names is None else f"{len(class_names)} names"
            raise ConfigError(
                f"ensemble=frozen needs the name of every vocabulary class to pick its weight (seen or "
                f"unseen): {class_embeddings.shape[0]} class embeddings, {got}"
            )
        weights = self.class_weights(class_names).to(det_logits.device)
        return ensemble_scores(det_logits, self.logits(images, res4s, boxes, class_embeddings), weights)

    def describe(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """The settings recorded with an evaluation (and, given the vocabulary, how many classes are seen)."""
        info: dict[str, Any] = {
            "weight_seen": self.weight_seen,
            "weight_unseen": self.weight_unseen,
            "temperature": self.temperature,
            "checkpoint": self.source,
            "shared_trunk": self.share_trunk,
            "num_training_classes": len(self.seen_classes),
        }
        if names is not None:
            info["num_seen_in_vocabulary"] = sum(_name_key(n) in self._seen for n in names)
        return info


# ------------------------------------------------------------------------------------ from checkpoints


def frozen_checkpoint_path(cfg: EnsembleConfig, detector_config: dict, detector_path: str | Path) -> Path:
    """The frozen region encoder's file: ``cfg.ensemble_checkpoint``, else the one recorded in the detector
    checkpoint's config, tried as recorded and relative to ``detector_path``'s folder."""
    detector_path = Path(detector_path)
    if cfg.ensemble_checkpoint:
        path = Path(cfg.ensemble_checkpoint)
        if not path.is_file():
            raise CheckpointError(f"ensemble_checkpoint: file not found: {path}")
        return path
    train = detector_config.get("train") if isinstance(detector_config.get("train"), dict) else {}
    model = train.get("model") if isinstance(train.get("model"), dict) else {}
    recorded = detector_config.get("init_checkpoint") or model.get("weights")
    if not recorded:
        raise CheckpointError(
            f"{detector_path}: records no initial (pretrained) checkpoint to use as the frozen classifier of "
            "ensemble=frozen; give it as detector.ensemble_checkpoint=PATH (a clip checkpoint)"
        )
    for candidate in (Path(recorded), detector_path.parent / recorded):
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"{detector_path}: its initial checkpoint {recorded} (the frozen classifier of ensemble=frozen) is not "
        "found; give it as detector.ensemble_checkpoint=PATH"
    )


def _load_visual(path: Path, preset_dict: dict) -> nn.Module:
    """The image tower of the clip checkpoint ``path`` (regionclip .safetensors or OpenAI .pt of the preset)."""

    if path.suffix == ".safetensors":
        kind = read_checkpoint_metadata(path).get("kind")
        if kind != "clip":
            raise CheckpointError(
                f"{path}: is a '{kind}' checkpoint; the frozen classifier of ensemble=frozen is a 'clip' "
                "checkpoint (the pretrained RegionCLIP student or a CLIP model)"
            )
    preset = None if path.suffix == ".safetensors" else preset_dict  # a regionclip file knows its preset
    model = load_clip(path, preset, what="the detector's clip_preset")
    return model.visual.eval()


def same_trunk(a: nn.Module, b: nn.Module) -> bool:
    """Whether two CLIP image towers have identical trunk tensors (stem + layer1-3, buffers included)."""
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if not k.startswith(HEAD_PREFIXES)]
    if sorted(keys) != sorted(k for k in sb if not k.startswith(HEAD_PREFIXES)):
        return False
    return all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k].to(sa[k].device)) for k in keys)


def build_frozen_classifier(
    cfg: EnsembleConfig,
    backbone: RegionEncoder,
    detector_config: dict,
    detector_path: str | Path,
) -> FrozenRegionClassifier:
    """The frozen branch of the detector checkpoint ``detector_path`` (config ``detector_config``), whose
    fine-tuned region encoder is ``backbone``. Errors name the file and the setting to fix."""
    seen = detector_config.get("train_classes")
    if not seen:
        raise CheckpointError(
            f"{detector_path}: records no training class names (train_classes), so ensemble=frozen cannot tell "
            "seen from unseen classes"
        )
    path = frozen_checkpoint_path(cfg, detector_config, detector_path)
    visual = _load_visual(path, detector_config.get("clip_preset", {}))
    encoder = RegionEncoder(visual)
    if encoder.embed_dim != backbone.embed_dim:
        raise CheckpointError(
            f"{path}: region embeddings of dimension {encoder.embed_dim}, but the detector {detector_path} has "
            f"{backbone.embed_dim}: not the model it was initialised from"
        )
    return FrozenRegionClassifier(
        encoder,
        seen,
        cfg.ensemble_weight_seen,
        cfg.ensemble_weight_unseen,
        cfg.ensemble_temperature,
        share_trunk=same_trunk(visual, backbone.visual),
        source=str(path),
    )

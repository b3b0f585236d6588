"""The one reader of detectors for inference: :func:`load_for_inference` (method reference §6.5, §7).

It turns a checkpoint into a detector ready to run: a ``detector`` checkpoint (``regionclip train-detector``
or ``regionclip convert``; its own RPN or another, or GT boxes) or a CLIP model (regionclip ``clip``
checkpoint, e.g. the pretrained RegionCLIP student, or an OpenAI ``.pt`` with its preset) wrapped for
zero-shot detection with the one zero-shot recipe (:func:`~regionclip.detect.config.zero_shot_config`).
``Detector.from_pretrained``, ``regionclip eval`` (and what builds on them: ``detect``, ``index``, ``serve``,
the demo) all load here; :func:`~regionclip.detect.api.write_detector_checkpoint` is the writer of the
``detector`` checkpoints read here (its module doc describes the file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from regionclip.checkpoint import (
    load_checkpoint,
    load_state_dict_strict,
    read_checkpoint_metadata,
    read_preprocess,
)
from regionclip.clip.checkpoint import attach_text_tower, copy_text_tower, has_text_tower, load_clip
from regionclip.clip.model import CLIP
from regionclip.clip.presets import ModelPreset
from regionclip.config import config_from_dict
from regionclip.detect.config import DetectorConfig, zero_shot_config
from regionclip.detect.detector import OpenVocabDetector, build_detector
from regionclip.detect.ensemble import EnsembleConfig, build_frozen_classifier
from regionclip.errors import CheckpointError, RegionCLIPError
from regionclip.io import check_file
from regionclip.preprocess import DETECTION_TEST, Preprocess
from regionclip.proposals.base import GivenBoxes, TopProposals
from regionclip.proposals.loading import build_rpn_from_config, load_rpn
from regionclip.regions import RegionEncoder

TEXT_KEY = "text_encoder."  # prefix of the CLIP text-tower tensors in a detector checkpoint
FOLDER_FILES = ("detector.safetensors", "clip.safetensors")  # what a converted / trained folder holds


@dataclass
class InferenceModel:
    """A detector ready for inference and what was read to build it.

    detector: in eval mode (its ``proposal_generator``: the RPN, or GivenBoxes when ``box_source == "gt"``);
    clip: the CLIP model sharing the detector's image tower (text tower real when ``has_text``); config: the
    checkpoint's config (``{}`` for an OpenAI file); kind: ``detector`` | ``clip`` | ``openai``; mode:
    ``transfer`` (a detector checkpoint) or ``zero-shot``; box_source: ``rpn`` or ``gt`` (boxes given with
    each image); proposal_preset: the RPN's proposal preset (None without an RPN); path: the file read;
    preprocess: how the checkpoint's images are resized and normalised (:mod:`regionclip.preprocess`; old
    files: their legacy ``input`` sizes, else the official 800 / 1333).
    """

    detector: OpenVocabDetector
    clip: CLIP
    has_text: bool
    config: dict
    kind: str
    mode: Literal["transfer", "zero-shot"]
    box_source: Literal["rpn", "gt"]
    proposal_preset: str | None
    path: Path
    rpn_path: Path | None = None  # the RPN checkpoint read, when not the detector's own
    preprocess: Preprocess = DETECTION_TEST  # the checkpoint's test-time image preparation (its manifest)

    @property
    def preset_name(self) -> str:
        return self.clip.preset.name


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path | None]:
    """``(model file, sibling rpn.safetensors or None)`` of a file or of a folder holding
    ``detector.safetensors`` or ``clip.safetensors`` (+ ``rpn.safetensors``)."""
    path = Path(path)
    if path.is_dir():
        for name in FOLDER_FILES:
            if (path / name).is_file():
                rpn = path / "rpn.safetensors"
                return path / name, rpn if rpn.is_file() else None
        raise CheckpointError(f"{path}: a folder without detector.safetensors or clip.safetensors")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path, None


def checkpoint_kind(path: Path) -> str:
    """``detector``, ``clip``, ... of a regionclip ``.safetensors`` file; ``openai`` for any other file."""
    return read_checkpoint_metadata(path).get("kind", "?") if path.suffix == ".safetensors" else "openai"


def load_for_inference(
    path: str | Path,
    *,
    rpn: str | Path | None = None,
    gt_boxes: bool = False,
    rpn_preset: str | None = None,
    clip_preset: str | None = None,
    text_weights: str | Path | None = None,
    recipe: Literal["coco", "lvis"] = "coco",
    ensemble: EnsembleConfig | None = None,
    max_proposals: int | None = None,
    text_from_folder: bool = True,
    overrides: dict[str, Any] | None = None,
) -> InferenceModel:
    """The detector of the checkpoint ``path`` (a file or a converted / trained folder), in eval mode.

    * a ``detector`` checkpoint: rebuilt alone (its config, RPN and text tower); ``rpn`` replaces its
      proposals by another RPN checkpoint's (preset ``rpn_preset`` or ``transfer``); without ``rpn`` its own
      RPN runs with ``rpn_preset`` or the recorded preset;
    * a ``clip`` checkpoint or an OpenAI ``.pt`` (``clip_preset`` names its preset): zero-shot, with the
      zero-shot recipe of ``recipe`` (:func:`~regionclip.detect.config.zero_shot_config`) and the RPN
      ``rpn`` (else a folder's ``rpn.safetensors``; preset ``rpn_preset`` or ``zero_shot``), or boxes given
      with each image when there is none.

    gt_boxes: the regions are boxes given with each image (GT boxes in evaluation): no RPN, no box deltas and
    no RPN-score fusion (official). text_weights: a CLIP file whose text tower is attached (e.g. the OpenAI
    ``.pt`` when the checkpoint has none); text_from_folder: a detector checkpoint without a text tower takes
    that of a ``clip.safetensors`` beside it. ensemble: ``frozen`` attaches the frozen-classifier score
    ensemble (detector checkpoints only). max_proposals: keep the best N RPN proposals per image.
    overrides: :class:`DetectorConfig` fields (e.g. ``{"nms": "hard", "score_thresh": 0.0}``).
    """
    file, sibling_rpn = resolve_checkpoint(path)
    kind = checkpoint_kind(file)
    if ensemble is not None and ensemble.ensemble not in ("none", "frozen"):
        raise RegionCLIPError(f"ensemble: expected 'none' or 'frozen', got {ensemble.ensemble!r}")
    frozen = ensemble is not None and ensemble.ensemble == "frozen"
    if kind != "detector" and frozen:
        raise RegionCLIPError(
            f"{file}: ensemble=frozen needs a detector checkpoint (the frozen classifier is the model it was "
            f"fine-tuned from); this '{kind}' checkpoint is already the frozen model"
        )
    overrides = dict(overrides or {})
    rpn_path = Path(rpn) if rpn is not None else None
    if kind == "detector":
        if gt_boxes:  # official: GT boxes are used as they are, without RPN-score fusion
            overrides = {"apply_box_deltas": False, "score_fusion": "none", **overrides}
        model = _read_detector(file, rpn_preset, overrides)
        if rpn_path is not None and not gt_boxes:
            model.detector.proposal_generator = load_rpn(rpn_path, rpn_preset or "transfer")[0]
            model.proposal_preset, model.box_source, model.rpn_path = (
                rpn_preset or "transfer",
                "rpn",
                rpn_path,
            )
        if frozen:
            model.detector.ensemble = build_frozen_classifier(
                ensemble, model.detector.backbone, model.config, file
            )
    elif kind in ("clip", "openai"):
        rpn_path = None if gt_boxes else (rpn_path or sibling_rpn)
        model = _zero_shot(file, kind, rpn_path, rpn_preset, clip_preset, recipe, overrides)
    else:
        raise CheckpointError(f"{file}: is a '{kind}' checkpoint, expected a 'detector' or 'clip' checkpoint")
    if gt_boxes:
        model.detector.proposal_generator = GivenBoxes()
        model.box_source = "gt"
    if text_weights:
        text_file = check_file(text_weights, "text_weights")
        model.has_text = attach_text_tower(model.clip, text_file) or model.has_text
    elif text_from_folder and kind == "detector" and not model.has_text:
        beside = file.parent / "clip.safetensors"
        if beside.is_file():
            model.has_text = attach_text_tower(model.clip, beside)
    if max_proposals is not None and model.box_source == "rpn":
        model.detector.proposal_generator = TopProposals(model.detector.proposal_generator, max_proposals)
    if kind != "openai":
        model.preprocess = read_preprocess(file, DETECTION_TEST)
    model.preprocess.check_normalisation(str(file))
    model.detector.eval()
    model.clip.eval()
    return model


def _read_detector(file: Path, rpn_preset: str | None, overrides: dict[str, Any]) -> InferenceModel:
    """A ``detector`` checkpoint rebuilt alone (the format of :mod:`regionclip.detect.api`)."""
    ckpt = load_checkpoint(file, kind="detector")
    config = ckpt.config
    try:
        cfg = config_from_dict(DetectorConfig, {**config["detector"], **overrides})
        clip = CLIP(ModelPreset.from_dict(config["clip_preset"]))
        pconf = config["proposals"]
    except KeyError as err:
        raise CheckpointError(f"{file}: detector checkpoint config lacks {err}") from None
    if pconf.get("kind") == "rpn":
        generator = build_rpn_from_config(pconf["rpn"], rpn_preset or pconf.get("preset"))
        source, preset = "rpn", rpn_preset or pconf.get("preset")
    else:
        generator, source, preset = GivenBoxes(), "gt", None
    state = {k: v for k, v in ckpt.state_dict.items() if not k.startswith(TEXT_KEY)}
    text = {k[len(TEXT_KEY) :]: v for k, v in ckpt.state_dict.items() if k.startswith(TEXT_KEY)}
    detector = build_detector(cfg, RegionEncoder(clip.visual), generator, state["train_class_embeddings"])
    load_state_dict_strict(detector, state, str(file))
    if text:
        copy_text_tower(clip, text, str(file))
    return InferenceModel(detector, clip, bool(text), config, "detector", "transfer", source, preset, file)


def _zero_shot(
    file: Path,
    kind: str,
    rpn_path: Path | None,
    rpn_preset: str | None,
    clip_preset: str | None,
    recipe: Literal["coco", "lvis"],
    overrides: dict[str, Any],
) -> InferenceModel:
    """A CLIP model wrapped as a zero-shot detector (the recipe of :func:`zero_shot_config`)."""
    clip = load_clip(file, clip_preset, what="preset")
    config = json.loads(read_checkpoint_metadata(file).get("config", "{}")) if kind == "clip" else {}
    if rpn_path is not None:
        preset: str | None = rpn_preset or "zero_shot"
        generator, _ = load_rpn(rpn_path, preset)
        source: Literal["rpn", "gt"] = "rpn"
    else:
        preset, generator, source = None, GivenBoxes(), "gt"
    cfg = zero_shot_config(recipe, source, **overrides)
    placeholder = torch.zeros(1, clip.embed_dim)  # no training classes: the vocabulary is given at inference
    detector = build_detector(cfg, RegionEncoder(clip.visual), generator, placeholder)
    has_text = has_text_tower(file)
    return InferenceModel(detector, clip, has_text, config, kind, "zero-shot", source, preset, file, rpn_path)

"""The user-facing detector: ``Detector.from_pretrained(path)`` and ``det(images, vocabulary=[...])``.

It wraps :class:`~regionclip.detect.detector.OpenVocabDetector` with what a user needs: reading images
(paths, PIL images, numpy arrays, tensors), resizing them to the test size (shorter side ``min_size``,
longer side at most ``max_size``, PIL bilinear with detectron2's rounding, method reference §11 item 9),
embedding the vocabulary with the CLIP text tower (81-template mean; cached on disk, keyed by the text
weights, names and templates, under ``$REGIONCLIP_CACHE`` or ``~/.cache/regionclip``), and mapping boxes back
to the original image. Results plot themselves and export COCO results.

The detector checkpoint (kind ``detector``) is defined here (:func:`write_detector_checkpoint`, the one writer;
its one reader is :func:`regionclip.detect.loading.load_for_inference`, behind :func:`load_detector` and
:meth:`Detector.from_pretrained`):
the detector's state dict (``backbone.visual.*``, ``proposal_generator.*``, ``classifier.*``,
``box_regressor.*``, ``train_class_embeddings``, optional ``mask_head.*``) plus, optionally, the CLIP text
tower under ``text_encoder.*``; its config holds ``detector`` (a :class:`DetectorConfig`), ``clip_preset``,
``proposals`` (``{"kind": "rpn", "rpn": <the rpn checkpoint's config>, "preset": ...}`` or
``{"kind": "gt"}``), ``train_classes`` and optional ``templates``; its manifest records the test-time
:class:`~regionclip.preprocess.Preprocess` (files written before it: ``input.min_size`` / ``max_size``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from regionclip.checkpoint import save_checkpoint
from regionclip.concepts import OFFICIAL_TEMPLATES, ConceptBank, build_concept_bank
from regionclip.config import config_to_dict
from regionclip.data.images import open_image
from regionclip.detect.config import DetectorConfig
from regionclip.detect.detector import OpenVocabDetector
from regionclip.detect.ensemble import EnsembleConfig
from regionclip.detect.loading import (
    TEXT_KEY,
    InferenceModel,
    checkpoint_kind,
    load_for_inference,
    resolve_checkpoint,
)
from regionclip.detect.postprocess import Detections
from regionclip.detect.visualize import DEFAULT_SHOW_SCORE, DEFAULT_SHOW_TOP, draw_detections
from regionclip.errors import CheckpointError, RegionCLIPError
from regionclip.preprocess import DETECTION_TEST, Preprocess, legacy_preprocess
from regionclip.proposals.base import GivenBoxes
from regionclip.proposals.loading import (  # noqa: F401 - the one RPN loader, by its old name
    load_rpn as load_rpn_checkpoint,
)
from regionclip.structures import ImageBatch, xyxy_to_xywh

PIL_RESAMPLING = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def default_cache_dir() -> Path:
    """``$REGIONCLIP_CACHE`` or ``~/.cache/regionclip``: where vocabulary embeddings are cached."""
    return Path(os.environ.get("REGIONCLIP_CACHE") or Path.home() / ".cache" / "regionclip")


# ------------------------------------------------------------------------------------ detector files


def save_detector(
    path: str | Path,
    detector: OpenVocabDetector,
    cfg: DetectorConfig,
    clip_preset: Any,
    proposals: dict,
    train_classes: Sequence[str] | None = None,
    text_state: dict[str, Tensor] | None = None,
    extra: dict | None = None,
    preprocess: Preprocess | None = None,
) -> Path:
    """Write a ``detector`` checkpoint that :func:`load_detector` rebuilds alone (see the module doc).

    clip_preset: the :class:`~regionclip.clip.presets.ModelPreset` of the backbone; proposals: ``{"kind":
    "rpn", "rpn": <rpn checkpoint config>, "preset": "transfer"}`` or ``{"kind": "gt"}``; text_state: the
    CLIP text-tower tensors (keys as in the CLIP model) to make vocabularies encodable from this file alone.
    """
    state = {k: v for k, v in detector.state_dict().items() if not k.startswith("ensemble.")}
    return write_detector_checkpoint(
        path, state, cfg, clip_preset, proposals, train_classes, text_state, extra, preprocess
    )


def write_detector_checkpoint(
    path: str | Path,
    state: dict[str, Tensor],
    cfg: DetectorConfig,
    clip_preset: Any,
    proposals: dict,
    train_classes: Sequence[str] | None = None,
    text_state: dict[str, Tensor] | None = None,
    extra: dict | None = None,
    preprocess: Preprocess | None = None,
) -> Path:
    """The one writer of ``detector`` checkpoints (:func:`save_detector` from a model, ``regionclip convert``
    from a converted state dict): ``state`` (detector keys) plus the text tower under ``text_encoder.*``, and
    the config of the module doc, and the test-time ``preprocess`` in the manifest (None: the legacy
    ``extra["input"]`` sizes when given, else the official 800 / 1333); its reader is
    :func:`~regionclip.detect.loading.load_for_inference`."""
    state = dict(state)
    for key, value in (text_state or {}).items():
        state[TEXT_KEY + key] = value
    config = {
        "detector": config_to_dict(cfg),
        "clip_preset": clip_preset.to_dict(),
        "proposals": proposals,
        "train_classes": list(train_classes) if train_classes is not None else None,
        "has_text_encoder": bool(text_state),
        **(extra or {}),
    }
    preprocess = preprocess or legacy_preprocess("detector", config) or DETECTION_TEST
    return save_checkpoint(path, state, "detector", config, preprocess)


LoadedDetector = InferenceModel  # the old name of what the reader returns


def load_detector(
    path: str | Path,
    proposal_preset: str | None = None,
    *,
    ensemble: EnsembleConfig | None = None,
    **overrides: Any,
) -> InferenceModel:
    """Rebuild a detector from a ``detector`` checkpoint alone; ``overrides`` change DetectorConfig fields.

    ensemble: with ``ensemble.ensemble == "frozen"``, the frozen-classifier score ensemble is attached
    (:mod:`regionclip.detect.ensemble`; its checkpoint is the recorded initial one unless the config names one).
    The reading is :func:`~regionclip.detect.loading.load_for_inference`'s (nothing taken from beside the file).
    """
    file, _ = resolve_checkpoint(path)
    kind = checkpoint_kind(file)
    if kind != "detector":
        raise CheckpointError(f"{file}: is a '{kind}' checkpoint, expected 'detector'")
    return load_for_inference(
        file, rpn_preset=proposal_preset, ensemble=ensemble, text_from_folder=False, overrides=overrides
    )


# --------------------------------------------------------------------------------------------- images


def read_image(source: Any) -> Image.Image:
    """An RGB PIL image from a path, PIL image, numpy array (HxW or HxWx3/4; uint8 or float in [0, 1]) or
    tensor (``[3, H, W]``, uint8 or float in [0, 1])."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise RegionCLIPError(f"image not found: {path}")
        return open_image(path)
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, Tensor):
        t = source.detach().cpu()
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise RegionCLIPError(f"image tensor: expected [3, H, W], got {tuple(t.shape)}")
        source = t.permute(1, 2, 0).numpy()
    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise RegionCLIPError(f"image array: expected HxW or HxWx3, got shape {arr.shape}")
        if arr.dtype != np.uint8:
            arr = (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    raise RegionCLIPError(
        f"image: expected a path, PIL image, numpy array or tensor, got {type(source).__name__}"
    )


def resized_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """detectron2 ``ResizeShortestEdge`` target ``(H', W')``: shorter side ``min_size``, longer <= ``max_size``."""
    scale = min_size / min(height, width)
    new_h, new_w = height * scale, width * scale
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def to_tensor(image: Image.Image) -> Tensor:
    """``[3, H, W]`` float RGB in [0, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0


# -------------------------------------------------------------------------------------------- results


@dataclass
class DetectionResult:
    """Detections of one image in ORIGINAL image pixels.

    boxes ``[M, 4]`` xyxy; scores ``[M]``; labels ``[M]`` (indices into ``names``); region_embeddings
    ``[M, D]``; names: the vocabulary; image: the original RGB image (for :meth:`plot`).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    region_embeddings: Tensor
    names: list[str]
    image: Image.Image | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def label_names(self) -> list[str]:
        return [self.names[int(i)] for i in self.labels]

    def as_detections(self) -> Detections:
        return Detections(self.boxes, self.scores, self.labels, self.region_embeddings)

    def plot(
        self,
        image: Image.Image | None = None,
        min_score: float = DEFAULT_SHOW_SCORE,
        max_boxes: int | None = DEFAULT_SHOW_TOP,
        legend: bool = True,
    ) -> Image.Image:
        """The image with the detections worth seeing drawn: score >= ``min_score`` (default 0.3), the best
        ``max_boxes`` (default 10; None: all), labels outside their boxes, a legend of the drawn classes
        (:func:`~regionclip.detect.visualize.draw_detections`). The result itself keeps every detection."""
        base = image if image is not None else self.image
        if base is None:
            raise RegionCLIPError("plot: this result has no image; pass one: result.plot(image)")
        return draw_detections(
            base,
            self.boxes.tolist(),
            self.labels.tolist(),
            self.scores.tolist(),
            self.names,
            min_score=min_score,
            max_boxes=max_boxes,
            legend=legend,
        )

    def to_coco(self, image_id: int, category_ids: Sequence[int] | None = None) -> list[dict]:
        """COCO results entries ``{image_id, category_id, bbox [x, y, w, h], score}``.

        category_ids: the COCO id of each vocabulary entry (default 1..K in vocabulary order).
        """
        ids = list(category_ids) if category_ids is not None else list(range(1, len(self.names) + 1))
        if len(ids) != len(self.names):
            raise RegionCLIPError(f"to_coco: {len(ids)} category ids for a vocabulary of {len(self.names)}")
        xywh = xyxy_to_xywh(self.boxes).tolist()
        return [
            {"image_id": int(image_id), "category_id": int(ids[int(lab)]), "bbox": [round(v, 2) for v in box],
             "score": round(float(s), 5)}
            for box, lab, s in zip(xywh, self.labels.tolist(), self.scores.tolist(), strict=True)
        ]  # fmt: skip


# ------------------------------------------------------------------------------------------- Detector


class Detector:
    """Open-vocabulary detection on images: ``Detector.from_pretrained(path)(images, vocabulary=[...])``."""

    def __init__(
        self,
        detector: OpenVocabDetector,
        clip: Any,
        has_text: bool,
        min_size: int = 800,
        max_size: int = 1333,
        templates: Sequence[str] = OFFICIAL_TEMPLATES,
        cache_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        source: str = "",
        clean_class_names: bool = True,
        interpolation: str = "bilinear",
    ):
        self.device = torch.device(device)
        self.model = detector.to(self.device).eval()
        self.clip = clip.to(self.device).eval()
        self.has_text = has_text
        self.min_size = min_size
        self.max_size = max_size
        if interpolation not in PIL_RESAMPLING:
            raise RegionCLIPError(
                f"interpolation: expected one of {list(PIL_RESAMPLING)}, got {interpolation!r}"
            )
        self.interpolation = interpolation  # PIL resampling of the test resize (the checkpoint's)
        self.templates = tuple(templates)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.source = source
        self.clean_class_names = clean_class_names  # prompt names cleaned as the official get_cls_names
        self._banks: dict[tuple[str, ...], ConceptBank] = {}

    # ---------------------------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        rpn: str | Path | None = None,
        device: str | torch.device = "cpu",
        min_size: int | None = None,
        max_size: int | None = None,
        cache_dir: str | Path | None = None,
        templates: Sequence[str] | None = None,
        ensemble: str | EnsembleConfig | None = None,
        **detector_overrides: Any,
    ) -> Detector:
        """Load a detector from:

        * a ``detector`` checkpoint (``regionclip train-detector`` or ``regionclip convert`` of a finetuned
          official checkpoint);
        * a ``clip`` checkpoint (e.g. the pretrained RegionCLIP student) for zero-shot detection, with an
          ``rpn`` checkpoint given as ``rpn`` (without one, boxes must be given to each call);
        * a folder written by ``regionclip convert`` (``detector.safetensors`` or ``clip.safetensors`` +
          ``rpn.safetensors``).

        Reading is :func:`~regionclip.detect.loading.load_for_inference`'s (as for ``regionclip eval``); an
        ``rpn`` given with a detector checkpoint replaces the detector's own RPN. A clip checkpoint gets the
        one zero-shot recipe (:func:`~regionclip.detect.config.zero_shot_config`, COCO: score > 0.001, hard
        NMS 0.5, 100 detections, boxes as proposed), the settings ``regionclip eval`` scores with: results
        keep every detection above that threshold; what a picture shows is chosen when drawing
        (:meth:`DetectionResult.plot`'s ``min_score``, default 0.3; ``regionclip detect --show-score``).

        ensemble: ``"frozen"`` (or an :class:`~regionclip.detect.ensemble.EnsembleConfig` with weights, τ and
        the frozen checkpoint) ensembles a detector checkpoint's scores with its frozen initial region
        classifier (F-VLM; :mod:`regionclip.detect.ensemble`); ``None`` / ``"none"``: the detector alone.
        detector_overrides: :class:`DetectorConfig` fields (e.g. ``nms="hard"``, ``score_fusion="none"``).
        """
        if ensemble is None or isinstance(ensemble, str):
            ensemble = EnsembleConfig(ensemble=ensemble or "none")  # type: ignore[arg-type]
        loaded = load_for_inference(path, rpn=rpn, ensemble=ensemble, overrides=detector_overrides)
        detector, clip, has_text, config = loaded.detector, loaded.clip, loaded.has_text, loaded.config
        pre = loaded.preprocess  # the checkpoint's recorded test size and interpolation
        test_short, test_max = pre.test_size(min_size, max_size)
        return cls(
            detector,
            clip,
            has_text,
            min_size=test_short,
            max_size=test_max,
            interpolation=pre.interpolation,
            templates=templates or tuple(config.get("templates") or OFFICIAL_TEMPLATES),
            cache_dir=cache_dir,
            device=device,
            source=str(path),
            clean_class_names=bool(config.get("clean_class_names", True)),
        )

    # ---------------------------------------------------------------------------------- vocabulary
    def vocabulary_bank(self, vocabulary: Sequence[str] | str | ConceptBank) -> ConceptBank:
        """The concept bank of ``vocabulary`` (names, a comma-separated string, or a ready bank)."""
        if isinstance(vocabulary, ConceptBank):
            bank = vocabulary
        else:
            from regionclip.vocab import parse_vocabulary

            names = tuple(parse_vocabulary(vocabulary))
            if names in self._banks:
                return self._banks[names]
            if not self.has_text:
                raise RegionCLIPError(
                    f"{self.source}: this checkpoint has no text encoder, so names cannot be embedded; pass a "
                    "ConceptBank as vocabulary, or convert the checkpoint with --text-weights (OpenAI CLIP .pt)"
                )
            clean = self.clean_class_names
            bank = build_concept_bank(
                self.clip, list(names), self.templates, self.cache_dir, clean_class_names=clean
            )
            self._banks[names] = bank
        bank.check_dim(self.model.embed_dim, "this detector")
        return bank

    # ---------------------------------------------------------------------------------- inference
    def _prepare(
        self, images: Sequence[Any]
    ) -> tuple[list[Image.Image], ImageBatch, list[tuple[float, float]]]:
        originals = [read_image(img) for img in images]
        tensors, scales = [], []
        for img in originals:
            w, h = img.size
            new_h, new_w = resized_size(h, w, self.min_size, self.max_size)
            resample = PIL_RESAMPLING[self.interpolation]
            resized = img if (new_h, new_w) == (h, w) else img.resize((new_w, new_h), resample)
            tensors.append(to_tensor(resized))
            scales.append((w / new_w, h / new_h))
        return originals, ImageBatch.from_images(tensors).to(self.device), scales

    def __call__(
        self,
        images: Any,
        vocabulary: Sequence[str] | str | ConceptBank,
        boxes: Sequence[Tensor] | None = None,
        batch_size: int = 1,
        **predict_kwargs: Any,
    ) -> list[DetectionResult]:
        """Detect ``vocabulary`` in ``images`` (one image or a list); one :class:`DetectionResult` each.

        boxes: per-image candidate boxes (original pixels, xyxy) for a detector without an RPN.
        predict_kwargs: ``score_thresh``, ``nms``, ``max_dets``, ``apply_box_deltas``, ``score_fusion``
        (one call's changes to the detector's :class:`~regionclip.detect.postprocess.InferenceSettings`).
        """
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        bank = self.vocabulary_bank(vocabulary)
        class_embeddings = bank.embeddings.to(self.device)
        if boxes is not None and len(boxes) != len(images):
            raise RegionCLIPError(f"boxes: {len(boxes)} box tensors for {len(images)} images")
        if boxes is None and isinstance(self.model.proposal_generator, GivenBoxes):
            raise RegionCLIPError(f"{self.source}: no RPN: give an RPN checkpoint or boxes for each image")
        results = []
        for start in range(0, len(images), max(1, batch_size)):
            chunk = images[start : start + max(1, batch_size)]
            originals, batch, scales = self._prepare(chunk)
            given = None
            if boxes is not None:
                given = [
                    self._scale(torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4), s, inverse=True)
                    for b, s in zip(boxes[start : start + len(chunk)], scales, strict=True)
                ]
            dets = self.model.predict(
                batch, class_embeddings, given, class_names=list(bank.names), **predict_kwargs
            )
            for det, img, s in zip(dets, originals, scales, strict=True):
                det = det.to("cpu")
                results.append(
                    DetectionResult(
                        self._scale(det.boxes, s),
                        det.scores,
                        det.labels,
                        det.region_embeddings,
                        list(bank.names),
                        img,
                    )
                )
        return results

    @staticmethod
    def _scale(boxes: Tensor, scale: tuple[float, float], inverse: bool = False) -> Tensor:
        sx, sy = scale
        factors = torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype, device=boxes.device)
        return boxes / factors if inverse else boxes * factors

    @torch.no_grad()
    def encode_regions(self, image: Any, boxes: Tensor | Sequence[Sequence[float]]) -> Tensor:
        """Unnormalised region embeddings ``[N, D]`` of ``boxes`` (xyxy, original pixels) in ``image``."""
        _, batch, scales = self._prepare([image])
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        scaled = self._scale(boxes, scales[0], inverse=True).to(self.device)
        return self.model.backbone(batch.tensor, [scaled]).cpu()

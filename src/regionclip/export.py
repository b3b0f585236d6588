"""ONNX export of the detector's image side with the vocabulary as a run-time input (users.md: "export with
the class-embedding matrix as a runtime input").

The exported graph takes

* ``image``: ``[1, 3, H, W]`` CLIP-normalised RGB (dynamic H, W),
* ``proposals``: ``[R, 4]`` xyxy boxes in ``image`` pixels (dynamic R), e.g. the RPN's output,
* ``class_embeddings``: ``[K, D]`` text embeddings of the vocabulary (dynamic K; normalised in the graph),

and returns ``scores`` ``[R, K+1]`` (softmax over the K classes + background, background last), ``boxes``
``[R, 4]`` (proposals moved by the class-agnostic deltas, or unchanged for a zero-shot detector; not
clipped) and ``region_embeddings`` ``[R, D]``. So the vocabulary changes without re-export.

With the frozen-classifier ensemble attached (``Detector.from_pretrained(..., ensemble="frozen")``, ``regionclip
export --ensemble frozen``; :mod:`regionclip.detect.ensemble`), the graph also holds the frozen region encoder
(a second trunk unless it is shared, a second layer4 + attention pool on the reported boxes, clipped to the
image) and takes a fourth input ``ensemble_weights`` ``[K]`` (w per class: the seen weight for the names among
the detector's training classes, stored in the ONNX metadata ``training_classes``, else the unseen
one; :meth:`~regionclip.detect.ensemble.FrozenRegionClassifier.class_weights`); ``scores`` are then the
ensembled ``[R, K+1]`` scores (background: the detector's; rows no longer sum to 1).

Not in the graph: the proposal generator (run it in PyTorch, or export it separately) and the per-class
NMS / score threshold / top-k (a few lines of numpy or ``torchvision.ops.batched_nms`` on the outputs).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from regionclip.detect.detector import OpenVocabDetector
from regionclip.detect.ensemble import ensemble_scores
from regionclip.errors import RegionCLIPError

OPSET = 17


class ImageSide(nn.Module):
    """trunk -> RoIAlign -> layer4 -> attention pool -> (cosine classifier, box deltas) for ONE image."""

    def __init__(self, detector: OpenVocabDetector):
        super().__init__()
        self.backbone = detector.backbone
        self.classifier = detector.classifier
        self.box_regressor = detector.box_regressor
        self.box_transform = detector.box_transform
        self.apply_box_deltas = detector.inference.apply_box_deltas
        self.ensemble = detector.ensemble  # FrozenRegionClassifier or None

    def forward(
        self,
        image: Tensor,
        proposals: Tensor,
        class_embeddings: Tensor,
        ensemble_weights: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        res4 = self.backbone.trunk(image)
        roi = self.backbone.pool(res4, [proposals])
        embeddings = self.backbone.embed_res5(self.backbone.res5(roi))
        logits = self.classifier(embeddings, class_embeddings)
        boxes = proposals
        if self.apply_box_deltas:
            boxes = self.box_transform.decode(self.box_regressor(embeddings), proposals)
        if self.ensemble is None:
            return F.softmax(logits, dim=1), boxes, embeddings
        if ensemble_weights is None:
            raise RegionCLIPError("ImageSide with an ensemble: give ensemble_weights [K]")
        frozen = self.ensemble
        size = torch._shape_as_tensor(image)[2:].to(boxes.dtype)  # (H, W), dynamic in the graph
        upper = torch.stack([size[1], size[0], size[1], size[0]])[None, :]
        reported = torch.minimum(torch.clamp(boxes, min=0.0), upper)
        features = res4 if frozen.share_trunk else frozen.encoder.trunk(image)
        roi = frozen.encoder.pool(features, [reported])
        frozen_emb = frozen.encoder.embed_res5(frozen.encoder.res5(roi))
        x = F.normalize(frozen_emb, dim=-1)
        t = F.normalize(class_embeddings, dim=-1)
        scores = ensemble_scores(logits, x @ t.t() / frozen.temperature, ensemble_weights)
        return scores, boxes, embeddings


def export_onnx(
    detector: OpenVocabDetector, path: str | Path, image_size: tuple[int, int] = (224, 224)
) -> Path:
    """Export ``detector``'s image side to ONNX at opset 17 (see the module doc); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = ImageSide(detector).eval()
    d = detector.embed_dim
    h, w = image_size
    image = torch.zeros(1, 3, h, w)
    proposals = torch.tensor([[0.0, 0.0, w / 2, h / 2], [w / 4, h / 4, w - 1.0, h - 1.0]])
    class_embeddings = torch.randn(3, d)
    inputs: tuple[Tensor, ...] = (image, proposals, class_embeddings)
    names = ["image", "proposals", "class_embeddings"]
    dynamic = {
        "image": {2: "height", 3: "width"},
        "proposals": {0: "num_regions"},
        "class_embeddings": {0: "num_classes"},
        "scores": {0: "num_regions", 1: "num_classes_plus_bg"},
        "boxes": {0: "num_regions"},
        "region_embeddings": {0: "num_regions"},
    }
    if module.ensemble is not None:
        inputs += (torch.full((3,), 0.5),)
        names.append("ensemble_weights")
        dynamic["ensemble_weights"] = {0: "num_classes"}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with torch.no_grad():
            torch.onnx.export(
                module,
                inputs,
                str(tmp),
                input_names=names,
                output_names=["scores", "boxes", "region_embeddings"],
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
            )
        if module.ensemble is not None:
            _add_metadata(tmp, module.ensemble)
        tmp.replace(path)
    except Exception as err:  # noqa: BLE001 - reported as a one-line user error
        tmp.unlink(missing_ok=True)
        raise RegionCLIPError(f"ONNX export failed: {str(err).splitlines()[0]}") from None
    return path


def _add_metadata(path: Path, ensemble: nn.Module) -> None:
    """Record the ensemble's training classes and weights in the ONNX file's metadata (to build
    ``ensemble_weights`` for any vocabulary without the checkpoint)."""
    import onnx

    model = onnx.load(str(path))
    entries = {
        "training_classes": json.dumps(ensemble.seen_classes),
        "ensemble_weight_seen": str(ensemble.weight_seen),
        "ensemble_weight_unseen": str(ensemble.weight_unseen),
    }
    for key, value in entries.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(model, str(path))

"""ONNX export of the detector's image side with the vocabulary as a run-time input (users.md: "export with
the class-embedding matrix as a runtime input").

The exported graph takes

* ``image``: ``[1, 3, H, W]`` CLIP-normalised RGB (dynamic H, W),
* ``proposals``: ``[R, 4]`` xyxy boxes in ``image`` pixels (dynamic R), e.g. the RPN's output,
* ``class_embeddings``: ``[K, D]`` text embeddings of the vocabulary (dynamic K; normalised in the graph),

and returns ``scores`` ``[R, K+1]`` (softmax over the K classes + background, background last), ``boxes``
``[R, 4]`` (proposals moved by the class-agnostic deltas, or unchanged for a zero-shot detector; not
clipped) and ``region_embeddings`` ``[R, D]``. So the vocabulary changes without re-export.

Not in the graph: the proposal generator (run it in PyTorch, or export it separately) and the per-class
NMS / score threshold / top-k (a few lines of numpy or ``torchvision.ops.batched_nms`` on the outputs).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from regionclip.detect.detector import OpenVocabDetector
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
        self.apply_box_deltas = detector.apply_box_deltas

    def forward(
        self, image: Tensor, proposals: Tensor, class_embeddings: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        from regionclip.regions import attention_pool

        res4 = self.backbone.trunk(image)
        roi = self.backbone.pool(res4, [proposals])
        embeddings = attention_pool(self.backbone.visual.attnpool, self.backbone.visual.layer4(roi))
        logits = self.classifier(embeddings, class_embeddings)
        scores = F.softmax(logits, dim=1)
        boxes = proposals
        if self.apply_box_deltas:
            boxes = self.box_transform.decode(self.box_regressor(embeddings), proposals)
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
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with torch.no_grad():
            torch.onnx.export(
                module,
                (image, proposals, class_embeddings),
                str(tmp),
                input_names=["image", "proposals", "class_embeddings"],
                output_names=["scores", "boxes", "region_embeddings"],
                dynamic_axes={
                    "image": {2: "height", 3: "width"},
                    "proposals": {0: "num_regions"},
                    "class_embeddings": {0: "num_classes"},
                    "scores": {0: "num_regions", 1: "num_classes_plus_bg"},
                    "boxes": {0: "num_regions"},
                    "region_embeddings": {0: "num_regions"},
                },
                opset_version=OPSET,
                dynamo=False,
            )
        tmp.replace(path)
    except Exception as err:  # noqa: BLE001 - reported as a one-line user error
        tmp.unlink(missing_ok=True)
        raise RegionCLIPError(f"ONNX export failed: {str(err).splitlines()[0]}") from None
    return path

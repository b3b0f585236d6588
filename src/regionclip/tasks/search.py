"""What ``regionclip search`` and the page of ``regionclip serve`` share: :func:`load_text_side`, the detector
whose text tower embeds the queries of a region index (:mod:`regionclip.region_index`)."""

from __future__ import annotations

from regionclip.detect.api import Detector
from regionclip.region_index import check_same_model, model_identity


def load_text_side(index, checkpoint: str | None = None) -> Detector:
    """The :class:`Detector` whose text tower embeds queries for ``index`` (its backbone is never run);
    a clear error if the checkpoint is not the model that built the index."""
    model = index.model
    path = checkpoint or model["checkpoint"]
    rpn = model.get("rpn") if checkpoint is None else None
    det = Detector.from_pretrained(path, rpn=rpn, min_size=model["min_size"], max_size=model["max_size"])
    check_same_model(model, model_identity(det, path, rpn), index.folder / "index.json")
    return det
